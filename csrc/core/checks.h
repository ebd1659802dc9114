// What the core refuses before anything reaches a backend, with a message that
// names the offending value.
#pragma once

#include <string>
#include <vector>

#include "device.h"

namespace mb {

// A launch the kernel or device cannot take (empty dimensions, groups too large,
// null buffers).
void check_launch(const Device& device, const Launch& launch);

// Defines reach a compiler as `-DNAME=VALUE` or as preprocessor macros: a name must
// be a C identifier and a value an identifier or a numeric literal, so that no value
// can smuggle extra compiler options or text into the source.
void check_defines(const std::vector<Define>& defines, const std::string& label);

}  // namespace mb
