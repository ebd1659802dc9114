// Summary statistics of timing samples. Medians and quartiles rather than means
// lead, because GPU timings are skewed by rare preemptions and clock changes.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

namespace mb {

struct Stats {
  size_t count = 0;
  double median = 0, mean = 0, stdev = 0, min = 0, max = 0;
  double q1 = 0, q3 = 0;  // 25th and 75th percentiles (linear interpolation)
  // stdev / mean: nvbench calls this the noise of a measurement.
  double rel_stdev = 0;
  // A 95% confidence interval of the median from order statistics: distribution-free
  // (it assumes only independent samples) and the same on every run of the same data.
  // [min, max] when there are too few samples for a narrower one.
  double ci_lo = 0, ci_hi = 0;
};

Stats summarize(const std::vector<uint64_t>& samples_ns);

}  // namespace mb
