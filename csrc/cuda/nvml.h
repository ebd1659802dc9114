// The GPU's clocks through NVML (libnvidia-ml.so.1, which comes with the NVIDIA
// driver), opened at run time like the driver itself, so building needs no SDK.
#pragma once

#include <string>

#include "core/device.h"

namespace mb::cuda {

class Nvml {
 public:
  // `pci_bus_id` as cuDeviceGetPCIBusId gives it: NVML numbers devices its own way.
  explicit Nvml(const std::string& pci_bus_id);
  // The SM clock now, its maximum and whether power or thermal limits slow it.
  ClockReading read() const;
  // Peak DRAM bandwidth from the maximum memory clock and bus width, 0 if unknown.
  double peak_bandwidth() const;
  // How clocks are read, or why they are not: for DeviceInfo::clock_source.
  const std::string& source() const { return source_; }

 private:
  void* device_ = nullptr;
  unsigned max_mhz_ = 0;  // fixed for the device: read once
  std::string source_;
};

}  // namespace mb::cuda
