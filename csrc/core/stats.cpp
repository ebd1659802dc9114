#include "stats.h"

#include <algorithm>
#include <cmath>
#include <numeric>

namespace mb {
namespace {

// Percentile of sorted data by linear interpolation between closest ranks
// (numpy's default "linear" method), so Python-side checks agree exactly.
double percentile(const std::vector<double>& sorted, double p) {
  if (sorted.empty()) return 0;
  double pos = p * static_cast<double>(sorted.size() - 1);
  size_t lo = static_cast<size_t>(std::floor(pos));
  size_t hi = std::min(lo + 1, sorted.size() - 1);
  double frac = pos - static_cast<double>(lo);
  return sorted[lo] + (sorted[hi] - sorted[lo]) * frac;
}

}  // namespace

Stats summarize(const std::vector<uint64_t>& samples_ns) {
  Stats s;
  s.count = samples_ns.size();
  if (s.count == 0) return s;
  std::vector<double> v(samples_ns.begin(), samples_ns.end());
  std::sort(v.begin(), v.end());
  s.min = v.front();
  s.max = v.back();
  s.median = percentile(v, 0.5);
  s.q1 = percentile(v, 0.25);
  s.q3 = percentile(v, 0.75);
  s.mean = std::accumulate(v.begin(), v.end(), 0.0) / static_cast<double>(s.count);
  double ss = 0;
  for (double x : v) ss += (x - s.mean) * (x - s.mean);
  s.stdev = s.count > 1 ? std::sqrt(ss / static_cast<double>(s.count - 1)) : 0.0;
  s.rel_stdev = s.mean > 0 ? s.stdev / s.mean : 0.0;
  // The median lies between the j-th and k-th smallest of n samples with probability
  // P(j <= B < k), B ~ Binomial(n, 1/2); the normal approximation of B's quantiles
  // (mean n/2, sd sqrt(n)/2, z = 1.96) picks the ranks, rounded outwards.
  const double n = static_cast<double>(s.count), half_width = 1.96 * std::sqrt(n) / 2.0;
  const double lo_rank = std::floor(n / 2.0 - half_width), hi_rank = std::ceil(n / 2.0 + 1.0 + half_width);
  s.ci_lo = lo_rank >= 1 ? v[static_cast<size_t>(lo_rank) - 1] : s.min;
  s.ci_hi = hi_rank <= n ? v[static_cast<size_t>(hi_rank) - 1] : s.max;
  return s;
}

}  // namespace mb
