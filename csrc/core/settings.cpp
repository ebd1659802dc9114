#include "settings.h"

#include <cstdlib>
#include <mutex>

namespace mb {
namespace {

std::mutex& lock() {
  static std::mutex m;
  return m;
}

struct Setting {
  bool set = false;
  std::string path;
};

Setting& setting() {
  static Setting s;
  return s;
}

std::string env(const char* name) {
  const char* v = std::getenv(name);
  return v ? std::string(v) : std::string();
}

std::string default_dir() {
  std::string root = env("METALBENCH_CACHE_DIR");
  if (!root.empty()) return root + "/kernels";
  std::string xdg = env("XDG_CACHE_HOME");
  if (!xdg.empty()) return xdg + "/metalbench/kernels";
  std::string home = env("HOME");
  if (!home.empty()) return home + "/.cache/metalbench/kernels";
  return "";
}

}  // namespace

void set_cache_dir(const std::string& path) {
  std::lock_guard<std::mutex> guard(lock());
  setting().set = true;
  setting().path = path;
}

std::string cache_dir() {
  std::lock_guard<std::mutex> guard(lock());
  return setting().set ? setting().path : default_dir();
}

}  // namespace mb
