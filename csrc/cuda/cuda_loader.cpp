#include "cuda_loader.h"

#include <dirent.h>
#include <dlfcn.h>
#include <sys/stat.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <set>
#include <sstream>

#include "core/device.h"

namespace mb::cuda {
namespace {

std::string env(const char* name) {
  const char* v = std::getenv(name);
  return v ? std::string(v) : std::string();
}

bool is_dir(const std::string& p) {
  struct stat st{};
  return !p.empty() && stat(p.c_str(), &st) == 0 && S_ISDIR(st.st_mode);
}

bool is_file(const std::string& p) {
  struct stat st{};
  return !p.empty() && stat(p.c_str(), &st) == 0 && S_ISREG(st.st_mode);
}

std::string dirname_of(const std::string& p) {
  auto slash = p.rfind('/');
  return slash == std::string::npos ? std::string(".") : p.substr(0, slash);
}

// Numeric components of a file name's version suffix ("libnvrtc.so.12.4" -> {12, 4}),
// so that newer versions sort first.
std::vector<int> version_of(const std::string& name) {
  std::vector<int> v;
  auto so = name.find(".so");
  if (so == std::string::npos) return v;
  std::stringstream rest(name.substr(so + 3));
  std::string part;
  while (std::getline(rest, part, '.'))
    if (!part.empty() && std::all_of(part.begin(), part.end(), ::isdigit)) v.push_back(std::atoi(part.c_str()));
  return v;
}

// Library files in `dir` named `stem` + ".so" + optional version, newest first;
// `stem` must be followed directly by ".so" (so libcublas does not match libcublasLt).
std::vector<std::string> libraries_in(const std::string& dir, const std::string& stem) {
  std::vector<std::string> found;
  DIR* d = opendir(dir.c_str());
  if (!d) return found;
  const std::string prefix = stem + ".so";
  while (dirent* e = readdir(d)) {
    std::string name = e->d_name;
    if (name.compare(0, prefix.size(), prefix) != 0) continue;
    if (name.size() > prefix.size() && name[prefix.size()] != '.') continue;
    if (is_file(dir + "/" + name)) found.push_back(name);
  }
  closedir(d);
  std::sort(found.begin(), found.end(),
            [](const std::string& a, const std::string& b) { return version_of(a) > version_of(b); });
  for (auto& f : found) f = dir + "/" + f;
  return found;
}

// Folders of libraries this process already has open whose file name starts with `stem`.
std::vector<std::string> loaded_dirs(const std::string& stem) {
  std::vector<std::string> dirs;
  std::ifstream maps("/proc/self/maps");
  std::string line;
  while (std::getline(maps, line)) {
    auto slash = line.find('/');
    if (slash == std::string::npos) continue;
    std::string path = line.substr(slash);
    std::string base = path.substr(path.rfind('/') + 1);
    if (base.compare(0, stem.size() + 3, stem + ".so") != 0) continue;
    std::string dir = dirname_of(path);
    if (std::find(dirs.begin(), dirs.end(), dir) == dirs.end()) dirs.push_back(dir);
  }
  return dirs;
}

// site-packages folders that may hold NVIDIA's wheels: the one this module is
// installed in and every PYTHONPATH entry.
std::vector<std::string> site_dirs() {
  std::vector<std::string> dirs;
  Dl_info info{};
  if (dladdr(reinterpret_cast<void*>(&site_dirs), &info) && info.dli_fname) {
    std::string here = dirname_of(info.dli_fname);  // .../site-packages/metalbench
    dirs.push_back(dirname_of(here));
    dirs.push_back(here);
  }
  std::stringstream pp(env("PYTHONPATH"));
  std::string entry;
  while (std::getline(pp, entry, ':'))
    if (!entry.empty()) dirs.push_back(entry);
  return dirs;
}

std::vector<std::string> toolkit_dirs() {
  std::vector<std::string> roots;
  for (const char* var : {"CUDA_HOME", "CUDA_PATH", "CUDA_ROOT"})
    if (!env(var).empty()) roots.push_back(env(var));
  roots.push_back("/usr/local/cuda");
  std::vector<std::string> versioned;
  if (DIR* d = opendir("/usr/local")) {
    while (dirent* e = readdir(d)) {
      std::string name = e->d_name;
      if (name.compare(0, 5, "cuda-") == 0) versioned.push_back("/usr/local/" + name);
    }
    closedir(d);
  }
  std::sort(versioned.begin(), versioned.end(), [](const std::string& a, const std::string& b) {
    return version_of(".so." + a.substr(a.find('-') + 1)) > version_of(".so." + b.substr(b.find('-') + 1));
  });
  roots.insert(roots.end(), versioned.begin(), versioned.end());
  roots.push_back("/opt/cuda");
  std::vector<std::string> dirs;
  for (const auto& r : roots)
    for (const char* sub : {"/lib64", "/lib", "/targets/x86_64-linux/lib", "/targets/sbsa-linux/lib"})
      dirs.push_back(r + sub);
  return dirs;
}

// Every place a library may be, in search order: full paths and, for the dynamic
// loader's own search, bare file names. `override_var` names a file or folder.
std::vector<std::string> candidates(const std::string& stem, const char* override_var,
                                    const std::vector<std::string>& sonames,
                                    const std::vector<std::string>& wheel_subdirs) {
  std::vector<std::string> out;
  auto add_dir = [&](const std::string& dir) {
    for (auto& f : libraries_in(dir, stem)) out.push_back(f);
  };
  std::string forced = env(override_var);
  if (!forced.empty()) {
    if (is_dir(forced))
      add_dir(forced);
    else
      out.push_back(forced);
  }
  for (const auto& d : loaded_dirs(stem)) add_dir(d);
  for (const auto& s : sonames) out.push_back(s);
  for (const auto& d : toolkit_dirs()) add_dir(d);
  for (const auto& site : site_dirs())
    for (const auto& sub : wheel_subdirs) add_dir(site + "/" + sub);
  // Drop repeats, keeping the first.
  std::vector<std::string> unique;
  std::set<std::string> seen;
  for (auto& c : out)
    if (seen.insert(c).second) unique.push_back(c);
  return unique;
}

std::string join(const std::vector<std::string>& v, const std::string& sep) {
  std::string s;
  for (const auto& x : v) s += (s.empty() ? "" : sep) + x;
  return s;
}

// Resolves the X-macro list into `api`; returns the first required symbol missing.
#define MB_RESOLVE(name, ret, params, ...)                                                      \
  {                                                                                             \
    const char* syms[] = {__VA_ARGS__};                                                         \
    for (const char* s : syms) {                                                                \
      api.name = reinterpret_cast<ret(*) params>(dlsym(handle, s));                             \
      if (api.name) break;                                                                      \
    }                                                                                           \
    if (!api.name && required && missing.empty()) missing = syms[0];                            \
  }

std::string resolve_driver(void* handle, DriverApi& api) {
  std::string missing;
  bool required = true;
  MB_CU_REQUIRED(MB_RESOLVE)
  required = false;
  MB_CU_OPTIONAL(MB_RESOLVE)
  return missing;
}

std::string resolve_nvrtc(void* handle, NvrtcApi& api) {
  std::string missing;
  bool required = true;
  MB_NVRTC_REQUIRED(MB_RESOLVE)
  required = false;
  MB_NVRTC_OPTIONAL(MB_RESOLVE)
  return missing;
}

std::string resolve_cublas(void* handle, CublasApi& api) {
  std::string missing;
  bool required = true;
  MB_CUBLAS_REQUIRED(MB_RESOLVE)
  return missing;
}

std::string resolve_cublaslt(void* handle, CublasApi& api) {
  std::string missing;
  bool required = true;
  MB_CUBLASLT_REQUIRED(MB_RESOLVE)
  return missing;
}

#undef MB_RESOLVE

std::string dl_error(const std::string& fallback) {
  const char* e = dlerror();
  return e ? std::string(e) : fallback;
}

// The driver's major version, or a large number when the driver is unknown (any
// library will do then).
int driver_major() {
  const DriverLoad& d = driver_load();
  return d.error.empty() && d.version > 0 ? d.version / 1000 : 1 << 20;
}

}  // namespace

const DriverLoad& driver_load() {
  static DriverLoad loaded = [] {
    DriverLoad l;
    std::vector<std::string> names;
    if (!env("METALBENCH_LIBCUDA").empty()) names.push_back(env("METALBENCH_LIBCUDA"));
    names.push_back("libcuda.so.1");
    names.push_back("libcuda.so");
    void* handle = nullptr;
    std::vector<std::string> tried;
    for (const auto& n : names) {
      handle = dlopen(n.c_str(), RTLD_NOW | RTLD_LOCAL);
      if (handle) {
        l.path = n;
        break;
      }
      tried.push_back(dl_error(n));
    }
    if (!handle) {
      l.error = "the NVIDIA driver's CUDA library is missing (" + join(tried, "; ") +
                "); install the NVIDIA driver (it provides libcuda.so.1)";
      return l;
    }
    std::string missing = resolve_driver(handle, l.api);
    if (!missing.empty()) {
      l.error = "libcuda has no symbol " + missing + " (driver too old?)";
      return l;
    }
    CUresult rc = l.api.cuInit(0);
    if (rc != CUDA_SUCCESS) {
      const char* name = nullptr;
      l.api.cuGetErrorName(rc, &name);
      l.error = rc == CUDA_ERROR_NO_DEVICE ? std::string("the CUDA driver found no device (cuInit: CUDA_ERROR_NO_DEVICE)")
                                           : "cuInit failed: " + std::string(name ? name : "unknown") + " (" +
                                                 std::to_string(rc) + ")";
      return l;
    }
    l.api.cuDriverGetVersion(&l.version);
    return l;
  }();
  return loaded;
}

const NvrtcLoad& nvrtc_load() {
  static NvrtcLoad loaded = [] {
    NvrtcLoad l;
    auto paths = candidates("libnvrtc", "METALBENCH_NVRTC",
                            {"libnvrtc.so.13", "libnvrtc.so.12", "libnvrtc.so.11.2", "libnvrtc.so"},
                            {"nvidia/cu13/lib", "nvidia/cu12/lib", "nvidia/cuda_nvrtc/lib"});
    std::vector<std::string> tried;
    NvrtcLoad fallback;  // the first that loads, whatever its version
    bool have_fallback = false;
    for (const auto& p : paths) {
      if (p.find("alt.so") != std::string::npos) continue;
      // NVRTC opens its builtins by file name alone; a wheel's copy is not on the
      // loader's path, so it is opened here first, from the same folder.
      if (p.find('/') != std::string::npos)
        for (const auto& b : libraries_in(dirname_of(p), "libnvrtc-builtins"))
          if (dlopen(b.c_str(), RTLD_NOW | RTLD_GLOBAL)) break;
      void* handle = dlopen(p.c_str(), RTLD_NOW | RTLD_LOCAL);
      if (!handle) {
        if (p.find('/') != std::string::npos) tried.push_back(dl_error(p));
        continue;
      }
      NvrtcLoad c;
      std::string missing = resolve_nvrtc(handle, c.api);
      if (!missing.empty()) {
        tried.push_back(p + ": no symbol " + missing);
        continue;
      }
      c.api.nvrtcVersion(&c.major, &c.minor);
      Dl_info info{};
      c.path = p;
      if (dladdr(reinterpret_cast<void*>(c.api.nvrtcVersion), &info) && info.dli_fname) c.path = info.dli_fname;
      if (c.api.nvrtcGetNumSupportedArchs && c.api.nvrtcGetSupportedArchs) {
        int n = 0;
        if (c.api.nvrtcGetNumSupportedArchs(&n) == NVRTC_SUCCESS && n > 0) {
          c.archs.resize(n);
          if (c.api.nvrtcGetSupportedArchs(c.archs.data()) != NVRTC_SUCCESS) c.archs.clear();
        }
      }
      if (c.major <= driver_major()) return c;
      if (!have_fallback) {
        fallback = c;
        have_fallback = true;
      }
    }
    if (have_fallback) return fallback;
    l.error = "NVRTC (libnvrtc.so) was not found";
    if (!tried.empty()) l.error += " (" + join(tried, "; ") + ")";
    l.error +=
        "; install a CUDA toolkit or `pip install nvidia-cuda-nvrtc`, or point METALBENCH_NVRTC at "
        "libnvrtc.so";
    return l;
  }();
  return loaded;
}

const CublasLoad& cublas_load() {
  static CublasLoad loaded = [] {
    CublasLoad l;
    auto paths = candidates("libcublas", "METALBENCH_CUBLAS",
                            {"libcublas.so.13", "libcublas.so.12", "libcublas.so.11", "libcublas.so"},
                            {"nvidia/cu13/lib", "nvidia/cu12/lib", "nvidia/cublas/lib"});
    std::vector<std::string> tried;
    for (const auto& p : paths) {
      // cuBLASLt first, from the same folder, so that libcublas binds to it.
      void* lt = nullptr;
      if (p.find('/') != std::string::npos) {
        auto v = version_of(p.substr(p.rfind('/') + 1));
        for (const auto& cand : libraries_in(dirname_of(p), "libcublasLt")) {
          auto lv = version_of(cand.substr(cand.rfind('/') + 1));
          if (!v.empty() && (lv.empty() || lv[0] != v[0])) continue;
          if ((lt = dlopen(cand.c_str(), RTLD_NOW | RTLD_GLOBAL))) break;
        }
      } else {
        std::string soname = "libcublasLt" + p.substr(std::strlen("libcublas"));
        lt = dlopen(soname.c_str(), RTLD_NOW | RTLD_GLOBAL);
      }
      void* handle = dlopen(p.c_str(), RTLD_NOW | RTLD_LOCAL);
      if (!handle) {
        if (p.find('/') != std::string::npos) tried.push_back(dl_error(p));
        continue;
      }
      if (!lt) {
        // libcublas found its cuBLASLt through its own run path; look it up by name.
        for (const char* n : {"libcublasLt.so.13", "libcublasLt.so.12", "libcublasLt.so.11"})
          if ((lt = dlopen(n, RTLD_NOW | RTLD_NOLOAD))) break;
      }
      CublasLoad c;
      std::string missing = resolve_cublas(handle, c.api);
      if (missing.empty()) missing = lt ? resolve_cublaslt(lt, c.api) : "libcublasLt";
      if (!missing.empty()) {
        tried.push_back(p + ": no " + missing);
        continue;
      }
      c.version = static_cast<int>(c.api.cublasLtGetVersion());
      Dl_info info{};
      c.path = p;
      if (dladdr(reinterpret_cast<void*>(c.api.cublasCreate), &info) && info.dli_fname) c.path = info.dli_fname;
      if (c.version / 10000 <= driver_major()) return c;
      if (l.path.empty()) l = c;
    }
    if (!l.path.empty()) return l;
    l.error = "cuBLAS (libcublas.so and libcublasLt.so) was not found";
    if (!tried.empty()) l.error += " (" + join(tried, "; ") + ")";
    l.error += "; install a CUDA toolkit or `pip install nvidia-cublas`, or point METALBENCH_CUBLAS at its folder";
    return l;
  }();
  return loaded;
}

const DriverApi& driver() {
  const DriverLoad& l = driver_load();
  if (!l.error.empty()) throw UnavailableError("[cuda::load] " + l.error);
  return l.api;
}

const NvrtcApi& nvrtc() {
  const NvrtcLoad& l = nvrtc_load();
  if (!l.error.empty()) throw UnavailableError("[cuda::load] " + l.error);
  return l.api;
}

const CublasApi& cublas() {
  const CublasLoad& l = cublas_load();
  if (!l.error.empty()) throw UnavailableError("[cuda::load] " + l.error);
  return l.api;
}

std::string cu_error(CUresult code) {
  const DriverLoad& l = driver_load();
  const char* name = nullptr;
  const char* text = nullptr;
  if (l.api.cuGetErrorName) l.api.cuGetErrorName(code, &name);
  if (l.api.cuGetErrorString) l.api.cuGetErrorString(code, &text);
  std::string s = std::string(name ? name : "CUDA error") + " (" + std::to_string(code) + ")";
  if (text) s += ": " + std::string(text);
  return s;
}

void check(CUresult code, const char* op, const std::string& what) {
  if (code == CUDA_SUCCESS) return;
  std::string msg = std::string("[cuda::") + op + "] " + what + " failed: " + cu_error(code);
  // A fault inside a kernel poisons the whole context: every later call fails too.
  if (code == 700 || code == 702 || (code >= 714 && code <= 720))
    msg += " (the CUDA context cannot be used after this error; restart the process)";
  throw DeviceError(msg);
}

std::string kernel_driver_version() {
  std::ifstream f("/proc/driver/nvidia/version");
  std::string line;
  if (!std::getline(f, line)) return "";
  // "NVRM version: NVIDIA UNIX x86_64 Kernel Module  580.159.04  Tue ..."
  std::stringstream words(line);
  std::string w;
  while (words >> w) {
    if (std::count(w.begin(), w.end(), '.') >= 1 && std::isdigit(static_cast<unsigned char>(w[0])) &&
        std::all_of(w.begin(), w.end(), [](char ch) { return std::isdigit(static_cast<unsigned char>(ch)) || ch == '.'; }))
      return w;
  }
  return "";
}

}  // namespace mb::cuda
