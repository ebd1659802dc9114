#include "measure.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <string>

namespace mb {
namespace {

using Clock = std::chrono::steady_clock;

uint64_t elapsed_ns(Clock::time_point since) {
  return static_cast<uint64_t>(
      std::chrono::duration_cast<std::chrono::nanoseconds>(Clock::now() - since).count());
}

std::string dims(const std::array<uint32_t, 3>& d) {
  return std::to_string(d[0]) + "x" + std::to_string(d[1]) + "x" + std::to_string(d[2]);
}

}  // namespace

void check_launch(const Device& device, const Launch& launch) {
  if (!launch.kernel) throw UsageError("launch has no kernel");
  const std::string& who = launch.kernel->label();
  for (int d = 0; d < 3; ++d) {
    if (launch.groups[d] == 0 || launch.threads[d] == 0)
      throw UsageError(who + ": launch of " + dims(launch.groups) + " groups of " +
                       dims(launch.threads) + " threads has an empty dimension");
  }
  uint64_t per_group = uint64_t(launch.threads[0]) * launch.threads[1] * launch.threads[2];
  size_t kernel_max = launch.kernel->max_group_size();
  if (kernel_max > 0 && per_group > kernel_max)
    throw UsageError(who + ": group of " + std::to_string(per_group) +
                     " threads exceeds this kernel's limit of " + std::to_string(kernel_max));
  int device_max = device.info().max_group_size;
  if (kernel_max > 0 && device_max > 0 && per_group > uint64_t(device_max))
    throw UsageError(who + ": group of " + std::to_string(per_group) +
                     " threads exceeds the device's limit of " + std::to_string(device_max));
  for (size_t i = 0; i < launch.args.size(); ++i) {
    const auto* buf = std::get_if<std::shared_ptr<Buffer>>(&launch.args[i]);
    if (buf && !*buf) throw UsageError(who + ": argument " + std::to_string(i) + " is a null buffer");
  }
}

Measurement measure(Device& device, const Launch& launch, const MeasureConfig& config) {
  check_launch(device, launch);
  if (config.iterations < 1) throw UsageError("iterations must be at least 1");
  if (config.min_iterations < 1) throw UsageError("min_iterations must be at least 1");

  Measurement m;
  m.cold = config.cold;
  m.warmup = std::max(1, config.warmup);

  std::shared_ptr<Buffer> flush;
  if (config.cold) {
    uint64_t cache = device.info().cache_bytes;
    if (cache == 0)
      throw UsageError("cold mode needs the device's cache size, which " + device.info().name +
                       " does not report");
    // Twice the cache, so that no line of the kernel's data can survive the fill.
    flush = device.allocate(static_cast<size_t>(2 * cache));
  }

  // The slowest warm-up launch sets the budget estimate; the first is usually
  // the slowest (lazy allocation, code upload), which errs towards fewer samples.
  uint64_t slowest = 0;
  for (int i = 0; i < m.warmup; ++i) {
    if (flush) flush->fill(static_cast<uint8_t>(i));
    auto t0 = Clock::now();
    device.run(launch);
    slowest = std::max(slowest, elapsed_ns(t0));
  }
  double budget_ns = config.max_seconds * 1e9;
  double fits = slowest > 0 ? budget_ns / double(slowest) : double(config.iterations);
  size_t count = static_cast<size_t>(
      std::clamp(std::floor(fits), double(std::min(config.min_iterations, config.iterations)),
                 double(config.iterations)));

  m.gpu_ns = device.timed(launch, count, flush.get());
  if (m.gpu_ns.size() != count)
    throw DeviceError(launch.kernel->label() + ": backend returned " +
                      std::to_string(m.gpu_ns.size()) + " GPU samples for " +
                      std::to_string(count) + " launches");

  m.cpu_ns.reserve(count);
  for (size_t i = 0; i < count; ++i) {
    if (flush) flush->fill(static_cast<uint8_t>(i));
    auto t0 = Clock::now();
    device.run(launch);
    m.cpu_ns.push_back(elapsed_ns(t0));
  }
  m.gpu = summarize(m.gpu_ns);
  m.cpu = summarize(m.cpu_ns);
  return m;
}

}  // namespace mb
