#include "kernel_cache.h"

#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <functional>
#include <sstream>
#include <string_view>

#include "core/settings.h"

namespace mb::cuda {
namespace {

// magic, format version, kind (0 cubin, 1 PTX), key size, payload size, checksum;
// then the key, then the payload. The checksum covers key and payload. It is
// std::hash, not a cryptographic hash: it guards against damage, not malice, and
// the stored key (compared in full) is what makes a hit a hit. std::hash may differ
// between standard libraries; a mismatch then costs one recompile, nothing more.
constexpr char kMagic[8] = {'M', 'B', 'K', 'C', 'A', 'C', 'H', 'E'};
constexpr uint32_t kFormat = 2;
constexpr size_t kHeader = 8 + 4 + 4 + 8 + 8 + 8;

uint64_t checksum(std::string_view key, std::string_view payload) {
  std::hash<std::string_view> h;
  return static_cast<uint64_t>(h(key)) * 0x9e3779b97f4a7c15ull ^ static_cast<uint64_t>(h(payload));
}

bool make_dirs(const std::string& path) {
  std::string sofar;
  std::stringstream parts(path);
  std::string part;
  if (!path.empty() && path[0] == '/') sofar = "/";
  while (std::getline(parts, part, '/')) {
    if (part.empty()) continue;
    sofar += part + "/";
    if (mkdir(sofar.c_str(), 0755) != 0 && errno != EEXIST) return false;
  }
  return true;
}

std::string folder() {
  std::string root = mb::cache_dir();
  return root.empty() ? root : root + "/cuda";
}

}  // namespace

std::string cache_path(const std::string& key) {
  std::string dir = folder();
  if (dir.empty()) return dir;
  char name[32];
  std::snprintf(name, sizeof name, "%016llx.bin", static_cast<unsigned long long>(std::hash<std::string>{}(key)));
  return dir + "/" + name;
}

CacheLookup cache_read(const std::string& key, Image& out) {
  std::string path = cache_path(key);
  if (path.empty()) return CacheLookup::miss;
  std::ifstream f(path, std::ios::binary);
  if (!f) return CacheLookup::miss;
  std::string blob((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
  bool ok = blob.size() >= kHeader && std::memcmp(blob.data(), kMagic, 8) == 0;
  uint32_t format = 0, kind = 0;
  uint64_t key_size = 0, size = 0, sum = 0;
  if (ok) {
    std::memcpy(&format, blob.data() + 8, 4);
    std::memcpy(&kind, blob.data() + 12, 4);
    std::memcpy(&key_size, blob.data() + 16, 8);
    std::memcpy(&size, blob.data() + 24, 8);
    std::memcpy(&sum, blob.data() + 32, 8);
    ok = format == kFormat && kind <= 1 && key_size <= blob.size() - kHeader &&
         size == blob.size() - kHeader - key_size;
  }
  std::string_view stored_key, payload;
  if (ok) {
    stored_key = std::string_view(blob).substr(kHeader, key_size);
    payload = std::string_view(blob).substr(kHeader + key_size);
    ok = checksum(stored_key, payload) == sum && stored_key == key;
  }
  if (!ok) {
    std::remove(path.c_str());
    return CacheLookup::damaged;
  }
  out.ptx = kind == 1;
  out.data = std::string(payload);
  return CacheLookup::hit;
}

void cache_write(const std::string& key, const Image& image) {
  std::string dir = folder();
  if (dir.empty() || !make_dirs(dir)) return;
  std::string path = cache_path(key);
  // Written under a name of its own, then renamed: readers see all of it or nothing.
  static std::atomic<unsigned> serial{0};
  std::string tmp = path + ".tmp" + std::to_string(getpid()) + "." + std::to_string(serial++);
  {
    std::ofstream f(tmp, std::ios::binary | std::ios::trunc);
    if (!f) return;
    uint32_t format = kFormat, kind = image.ptx ? 1 : 0;
    uint64_t key_size = key.size(), size = image.data.size(), sum = checksum(key, image.data);
    f.write(kMagic, 8);
    f.write(reinterpret_cast<const char*>(&format), 4);
    f.write(reinterpret_cast<const char*>(&kind), 4);
    f.write(reinterpret_cast<const char*>(&key_size), 8);
    f.write(reinterpret_cast<const char*>(&size), 8);
    f.write(reinterpret_cast<const char*>(&sum), 8);
    f.write(key.data(), static_cast<std::streamsize>(key.size()));
    f.write(image.data.data(), static_cast<std::streamsize>(image.data.size()));
    if (!f) {
      f.close();
      std::remove(tmp.c_str());
      return;
    }
  }
  if (std::rename(tmp.c_str(), path.c_str()) != 0) std::remove(tmp.c_str());
}

}  // namespace mb::cuda
