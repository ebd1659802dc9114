// The on-disk cache of compiled kernels: one file per key under
// mb::cache_dir()/cuda/. An entry holds its whole key and a checksum of its
// contents, so that neither a damaged entry nor one whose file name collides
// with another key's is ever loaded: such an entry is removed and compiled again.
#pragma once

#include <string>

namespace mb::cuda {

struct Image {
  bool ptx = false;  // PTX text for the driver to finish, else a cubin
  std::string data;
};

// The file the entry for `key` is stored in, or "" when the cache is off. `key`
// is everything that changes the compiled code, spelt out (source included).
std::string cache_path(const std::string& key);

enum class CacheLookup { hit, miss, damaged };

// Reads the entry for `key`; a damaged or foreign one is deleted and reported as such.
CacheLookup cache_read(const std::string& key, Image& out);

// Stores `image` under `key` (best effort: a cache that cannot be written is skipped).
void cache_write(const std::string& key, const Image& image);

}  // namespace mb::cuda
