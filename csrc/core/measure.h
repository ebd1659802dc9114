// The one measurement loop every backend shares.
#pragma once

#include <cstdint>
#include <vector>

#include "device.h"
#include "stats.h"

namespace mb {

struct MeasureConfig {
  int warmup = 3;             // untimed launches first; at least one always runs
  int iterations = 100;       // most samples of each kind
  int min_iterations = 5;     // fewest samples, whatever the time budget says
  double max_seconds = 0.5;   // time budget per kind of sample (GPU, CPU)
  bool cold = false;          // evict the device cache before every timed launch
};

struct Measurement {
  std::vector<uint64_t> gpu_ns;  // per launch, from the device's own timestamps
  std::vector<uint64_t> cpu_ns;  // per launch, submit to completion on the host clock
  Stats gpu, cpu;
  int warmup = 0;
  bool cold = false;
};

// Refuses a launch the kernel or device cannot take, naming the offending value.
void check_launch(const Device& device, const Launch& launch);

// Warm-up, then GPU samples from one held batch, then CPU round trips one by one.
// The sample count is chosen from the slowest warm-up launch so that slow
// kernels stay within the time budget.
Measurement measure(Device& device, const Launch& launch, const MeasureConfig& config);

}  // namespace mb
