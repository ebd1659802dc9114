// Process-wide settings of the native core that outlive any one device.
#pragma once

#include <string>

namespace mb {

// The folder where backends keep compiled kernels (each under its own subfolder).
// The Python package sets it to paths.cache_dir() / "kernels"; until then it is
// $METALBENCH_CACHE_DIR/kernels, else $XDG_CACHE_HOME/metalbench/kernels, else
// ~/.cache/metalbench/kernels. An empty path turns the on-disk cache off.
void set_cache_dir(const std::string& path);
std::string cache_dir();

}  // namespace mb
