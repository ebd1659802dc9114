#include "nvml.h"

#include <dlfcn.h>

namespace mb::cuda {
namespace {

// From NVML's documentation (nvml.h): return codes, clock types and the bits of
// nvmlDeviceGetCurrentClocksEventReasons.
using nvmlReturn_t = int;
using nvmlDevice_t = void*;
constexpr nvmlReturn_t NVML_SUCCESS = 0;
constexpr int NVML_CLOCK_SM = 1;
constexpr int NVML_CLOCK_MEM = 2;
// Thermal slowdowns, hardware slowdown and the power brake lower the clock below what
// the load asks for. Software power capping is left out: it is how a GPU normally
// runs under heavy load, and the clock-fraction rule of the core catches a deep cap.
constexpr unsigned long long kThrottleBits = 0x8ull /* HW slowdown */ | 0x20ull /* SW thermal */ |
                                             0x40ull /* HW thermal */ | 0x80ull /* HW power brake */;

struct Api {
  nvmlReturn_t (*init)() = nullptr;
  nvmlReturn_t (*by_pci)(const char*, nvmlDevice_t*) = nullptr;
  nvmlReturn_t (*clock)(nvmlDevice_t, int, unsigned*) = nullptr;
  nvmlReturn_t (*max_clock)(nvmlDevice_t, int, unsigned*) = nullptr;
  nvmlReturn_t (*reasons)(nvmlDevice_t, unsigned long long*) = nullptr;
  nvmlReturn_t (*bus_width)(nvmlDevice_t, unsigned*) = nullptr;
  std::string error;
};

const Api& api() {
  static const Api loaded = [] {
    Api a;
    void* h = dlopen("libnvidia-ml.so.1", RTLD_NOW | RTLD_LOCAL);
    if (!h) {
      a.error = "NVML (libnvidia-ml.so.1) could not be loaded";
      return a;
    }
    auto sym = [&](const char* name) { return dlsym(h, name); };
    a.init = reinterpret_cast<decltype(a.init)>(sym("nvmlInit_v2"));
    a.by_pci = reinterpret_cast<decltype(a.by_pci)>(sym("nvmlDeviceGetHandleByPciBusId_v2"));
    a.clock = reinterpret_cast<decltype(a.clock)>(sym("nvmlDeviceGetClockInfo"));
    a.max_clock = reinterpret_cast<decltype(a.max_clock)>(sym("nvmlDeviceGetMaxClockInfo"));
    // Renamed in CUDA 12.2's NVML; the older name stays exported.
    a.reasons = reinterpret_cast<decltype(a.reasons)>(sym("nvmlDeviceGetCurrentClocksEventReasons"));
    if (!a.reasons) a.reasons = reinterpret_cast<decltype(a.reasons)>(sym("nvmlDeviceGetCurrentClocksThrottleReasons"));
    a.bus_width = reinterpret_cast<decltype(a.bus_width)>(sym("nvmlDeviceGetMemoryBusWidth"));
    if (!a.init || !a.by_pci || !a.clock || !a.max_clock) a.error = "libnvidia-ml.so.1 lacks the clock functions";
    else if (a.init() != NVML_SUCCESS) a.error = "nvmlInit failed";
    return a;
  }();
  return loaded;
}

}  // namespace

Nvml::Nvml(const std::string& pci_bus_id) {
  const Api& a = api();
  if (!a.error.empty()) {
    source_ = "none: " + a.error;
    return;
  }
  nvmlDevice_t d = nullptr;
  if (a.by_pci(pci_bus_id.c_str(), &d) != NVML_SUCCESS) {
    source_ = "none: NVML does not know the device at PCI " + pci_bus_id;
    return;
  }
  if (a.max_clock(d, NVML_CLOCK_SM, &max_mhz_) != NVML_SUCCESS || max_mhz_ == 0) {
    source_ = "none: NVML gives no maximum SM clock for the device at PCI " + pci_bus_id;
    return;
  }
  device_ = d;
  source_ = "NVML SM clock before and after each round of samples";
}

ClockReading Nvml::read() const {
  ClockReading r;
  if (!device_) return r;
  const Api& a = api();
  unsigned now = 0;
  if (a.clock(device_, NVML_CLOCK_SM, &now) != NVML_SUCCESS) return r;
  r.known = true;
  r.mhz = now;
  r.max_mhz = max_mhz_;
  unsigned long long reasons = 0;
  if (a.reasons && a.reasons(device_, &reasons) == NVML_SUCCESS) r.throttled = (reasons & kThrottleBits) != 0;
  return r;
}

double Nvml::peak_bandwidth() const {
  const Api& a = api();
  unsigned mhz = 0, bits = 0;
  if (!device_ || !a.bus_width || a.max_clock(device_, NVML_CLOCK_MEM, &mhz) != NVML_SUCCESS ||
      a.bus_width(device_, &bits) != NVML_SUCCESS)
    return 0;
  // Two transfers per memory clock (double data rate), bus width in bits.
  return 2.0 * mhz * 1e6 * bits / 8.0;
}

}  // namespace mb::cuda
