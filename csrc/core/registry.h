// Backends register themselves at static-initialisation time, so adding one is
// adding its folder to the build: nothing in the core or the bindings changes.
#pragma once

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "device.h"

namespace mb {

using BackendFactory = std::function<std::unique_ptr<Backend>()>;

// `priority` orders `--backend auto`: lower is preferred (Metal, then CUDA, then OpenCL).
struct BackendRegistration {
  BackendRegistration(const char* name, int priority, BackendFactory factory);
};

// Every backend compiled into this build, in preference order.
std::vector<std::string> backend_names();

// The backend object for `name`, created once; throws UsageError for an unknown name.
Backend& backend(const std::string& name);

}  // namespace mb
