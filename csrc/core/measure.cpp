#include "measure.h"

#include "checks.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <string>

namespace mb {
namespace {

using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point since) {
  return std::chrono::duration<double>(Clock::now() - since).count();
}

// The share of StopRule::max_time each clock may spend: the ranking clock is the one
// whose noise must come down, the two others only need their minimum.
constexpr double kRankShare = 0.5;
constexpr double kOtherShare = 0.25;
// The share of max_time the untimed final round may take, on top of the clocks'.
constexpr double kFinalShare = 0.5;
// Launches a batch sample takes at least (where they fit in its time). A batch's first
// launch starts on an idle GPU, and a batch of few launches is not back to back for
// long: with the brief lap's 0.1 ms, the LM head's batches (64 us launches on an
// H200) were 2 launches, and the brief laps raced out a variant that the full
// measurements, 8 launches a batch, put in the best's tie group. With at least 8, a
// brief lap's batches are a full one's for launches from 60 to 300 us (default
// settings; longer ones get fewer, as many as leave time for the samples).
constexpr size_t kMinBatch = 8;
// Upper bounds that catch a mistyped setting before it allocates or waits for ever.
constexpr double kMaxSeconds = 24 * 3600.0;
constexpr int kMaxSamples = 10'000'000;

void require(bool ok, const std::string& what) {
  if (!ok) throw UsageError("[core::measure] " + what);
}

std::string shown(double v) {
  if (std::isnan(v)) return "nan";
  if (std::isinf(v)) return v > 0 ? "inf" : "-inf";
  char text[32];
  std::snprintf(text, sizeof text, "%g", v);
  return text;
}

// Samples of one clock and the rule that says when there are enough.
class Sampler {
 public:
  Sampler(const StopRule& rule, bool ranking)
      : rule_(rule), ranking_(ranking), budget_(rule.max_time * (ranking ? kRankShare : kOtherShare)),
        start_(Clock::now()) {}

  // `covered_ns` is the device (or host) time the samples span; `keep` is false when
  // the clock was low or throttled while they were taken.
  void add(const std::vector<uint64_t>& per_launch, double covered_ns, bool keep) {
    if (!keep) {
      discarded_.insert(discarded_.end(), per_launch.begin(), per_launch.end());
      return;
    }
    for (uint64_t x : per_launch) {
      if (kept_.size() >= size_t(rule_.max_samples)) break;
      kept_.push_back(x);
      // Welford's running mean and variance: the noise after every round costs O(1).
      double d = double(x) - mean_;
      mean_ += d / double(kept_.size());
      m2_ += d * (double(x) - mean_);
    }
    covered_ns_ += covered_ns;
  }

  double noise() const {
    if (kept_.size() < 2 || mean_ <= 0) return 0;
    return std::sqrt(m2_ / double(kept_.size() - 1)) / mean_;
  }

  // Why to stop now, or "" to take another round.
  std::string verdict() const {
    const size_t n = kept_.size();
    if (!ranking_ && n >= size_t(rule_.min_samples)) return "enough";
    if (n >= size_t(rule_.min_samples) && covered_ns_ >= rule_.min_time * 1e9 && noise() <= rule_.max_noise)
      return "converged";
    if (n >= size_t(rule_.max_samples)) return "sample-cap";
    if (seconds_since(start_) >= budget_ && (n > 0 || !discarded_.empty())) return n > 0 ? "time-cap" : "throttled";
    return "";
  }

  ClockResult finish(const std::string& why) {
    ClockResult r;
    r.stop = why;
    r.discarded = discarded_.size();
    // Every sample was taken at a low clock: keep them rather than report nothing,
    // and say so.
    r.ns = kept_.empty() ? discarded_ : kept_;
    r.stats = summarize(r.ns);
    return r;
  }

 private:
  const StopRule& rule_;
  bool ranking_;
  double budget_;
  Clock::time_point start_;
  std::vector<uint64_t> kept_, discarded_;
  double mean_ = 0, m2_ = 0, covered_ns_ = 0;
};

class Loop {
 public:
  Loop(Device& device, const std::vector<Launch>& slots, const std::vector<Reset>& resets,
       const MeasureConfig& config)
      : device_(device), slots_(slots), resets_(resets), config_(config) {}

  Measurement run() {
    Measurement m;
    reset();
    // The fastest warm-up round trip bounds a launch's time from above: rounds are cut
    // to what fits in their clock's budget, so that a slow kernel (a CPU OpenCL driver
    // on a large spec) takes one sample rather than overrunning its budget tenfold.
    // Warm-up stops early once it has taken the other clocks' share of max_time: after
    // one launch of a slow kernel (a CPU driver on the LM head: 0.1 to 0.4 s) the caches
    // and the driver are as warm as they get, and two more were most of a race's brief lap.
    // After an idle spell, the warm-up also lasts ramp_time, past both of those bounds; the
    // caller's launch that launch_hint timed has just run, and counts toward it.
    m.warmup = 0;
    launch_s_ = config_.launch_hint;
    const bool idled = !device_.measured_until || seconds_since(*device_.measured_until) >= config_.ramp_idle;
    const double ramp = idled ? std::max(0.0, config_.ramp_time - config_.launch_hint) : 0.0;
    double warmed = 0;
    for (int i = 0; i < config_.warmup || warmed < ramp; ++i) {
      auto t0 = Clock::now();
      device_.run(slots_[next()]);
      double took = seconds_since(t0);
      launch_s_ = i == 0 && config_.launch_hint <= 0 ? took : std::min(launch_s_, took);
      m.warmup = i + 1;
      warmed += took;
      if (warmed >= config_.stop.max_time * kOtherShare && warmed >= ramp) break;
    }
    const auto runs = [&](ClockKind kind) { return !config_.rank_only || kind == config_.rank_by; };

    if (runs(ClockKind::gpu)) {
      m.gpu = clock(m, ClockKind::gpu, round_size(ClockKind::gpu), [&](size_t size) {
        std::vector<uint64_t> ns = device_.timed(round(size));
        double total = 0;
        for (uint64_t x : ns) total += double(x);
        return std::make_pair(ns, total);
      });
    }

    // The batch spans batch_time by the gpu clock's estimate of one launch (the warm-up's
    // round trip where the gpu clock did not run), and at least kMinBatch launches where
    // min_samples such batches fit in the batch clock's share of max_time (a slow device
    // keeps its samples rather than its batch length).
    if (runs(ClockKind::batch)) {
      double per_launch = std::max(1.0, m.gpu.ns.empty() ? launch_s_ * 1e9 : m.gpu.stats.median);
      size_t n = static_cast<size_t>(std::ceil(config_.batch_time * 1e9 / per_launch));
      const double share = config_.stop.max_time * (config_.rank_by == ClockKind::batch ? kRankShare : kOtherShare);
      const double per_sample = share / std::max(1, config_.stop.min_samples);
      const size_t fit = std::max<size_t>(1, static_cast<size_t>(per_sample * 1e9 / per_launch));
      n = std::max(n, std::min(kMinBatch, fit));
      n = std::clamp<size_t>(n, 1, config_.max_batch);
      if (size_t held = device_.info().max_held_launches) n = std::min(n, held);
      if (!resets_.empty()) n = std::min(n, slots_.size());  // every launch from a reset slot
      m.batch_size = n;
      m.batch = clock(m, ClockKind::batch, n, [&](size_t size) {
        uint64_t total = device_.timed_batch(round(size));
        return std::make_pair(
            std::vector<uint64_t>{static_cast<uint64_t>(std::llround(double(total) / double(size)))}, double(total));
      });
    }

    if (runs(ClockKind::cpu)) {
      m.cpu = clock(m, ClockKind::cpu, round_size(ClockKind::cpu), [&](size_t size) {
        std::vector<Launch> launches = round(size);
        std::vector<uint64_t> ns;
        ns.reserve(launches.size());
        double total = 0;
        for (const Launch& l : launches) {
          auto t0 = Clock::now();
          device_.run(l);
          ns.push_back(static_cast<uint64_t>(std::chrono::duration_cast<std::chrono::nanoseconds>(
                                                 Clock::now() - t0).count()));
          total += double(ns.back());
        }
        return std::make_pair(ns, total);
      });
    }
    if (config_.final_round) final_round(m);
    m.clock_low = low_;
    m.clock_high = high_;
    return m;
  }

 private:
  // Launches per round of the gpu or cpu clock. The ranking clock takes every slot per
  // round (at least min_samples where slots may repeat); the others need only
  // min_samples in all.
  size_t round_size(ClockKind kind) const {
    const size_t least = size_t(config_.stop.min_samples);
    size_t size = kind == config_.rank_by ? (resets_.empty() ? std::max(slots_.size(), least) : slots_.size())
                                          : (resets_.empty() ? least : std::min(slots_.size(), least));
    if (launch_s_ > 0) {
      double share = config_.stop.max_time * (kind == config_.rank_by ? kRankShare : kOtherShare);
      size = std::min(size, std::max<size_t>(1, static_cast<size_t>(share / launch_s_)));
    }
    return size;
  }

  // The untimed final round (MeasureConfig::final_round), from slot 0, in batches of at
  // most what one timed batch may hold: every slot where they fit in kFinalShare of
  // max_time at the back-to-back time of a launch (the warm-up's round trip where no
  // clock measured one), and at least two, so that a launch follows one on another slot.
  void final_round(Measurement& m) {
    size_t count = slots_.size();
    const double per_launch = !m.batch.ns.empty() ? m.batch.stats.median * 1e-9
                              : !m.gpu.ns.empty() ? m.gpu.stats.median * 1e-9 : launch_s_;
    const size_t least = std::min<size_t>(slots_.size(), 2);
    if (per_launch > 0)
      count = std::min(count, std::max(least, static_cast<size_t>(config_.stop.max_time * kFinalShare / per_launch)));
    size_t chunk = config_.max_batch;
    if (size_t held = device_.info().max_held_launches) chunk = std::min(chunk, held);
    reset();
    cursor_ = 0;
    for (size_t done = 0; done < count;) {
      const size_t size = std::min(chunk, count - done);
      device_.timed_batch(round(size));
      done += size;
    }
    m.first_slot = 0;
    m.last_round = count;
    m.final_round = true;
  }

  size_t next() { return cursor_++ % slots_.size(); }

  std::vector<Launch> round(size_t count) {
    std::vector<Launch> out;
    out.reserve(count);
    for (size_t i = 0; i < count; ++i) out.push_back(slots_[next()]);
    return out;
  }

  void reset() {
    for (const Reset& r : resets_) r.target->copy_from(*r.source);
  }

  bool low(const ClockReading& r) const {
    return r.known && (r.throttled || r.mhz < config_.min_clock_fraction * r.max_mhz);
  }

  void note(const ClockReading& r) {
    if (!r.known) return;
    if (!low_.known || r.mhz < low_.mhz) low_ = r;
    if (!high_.known || r.mhz > high_.mhz) high_ = r;
  }

  template <typename Take>
  ClockResult clock(Measurement& m, ClockKind kind, size_t size, Take take) {
    Sampler sampler(config_.stop, kind == config_.rank_by);
    for (;;) {
      reset();
      m.first_slot = cursor_ % slots_.size();
      m.last_round = size;
      // A round's reading before is the previous round's after: only a reset lies between
      // them, and a reading can cost as much as several launches (NVML: about 10 us).
      ClockReading before = read_ ? last_ : device_.clock();
      auto [samples, covered] = take(size);
      ClockReading after = device_.clock();
      last_ = after;
      read_ = true;
      note(before);
      note(after);
      // The cpu clock runs the GPU too: a throttled GPU slows what a caller sees.
      sampler.add(samples, covered, !low(before) && !low(after));
      std::string why = sampler.verdict();
      if (!why.empty()) {
        ClockResult r = sampler.finish(why);
        r.round = size;
        return r;
      }
    }
  }

  Device& device_;
  const std::vector<Launch>& slots_;
  const std::vector<Reset>& resets_;
  const MeasureConfig& config_;
  size_t cursor_ = 0;
  double launch_s_ = 0;  // the fastest warm-up round trip, in seconds (0: none taken)
  ClockReading low_, high_;
  ClockReading last_;  // the latest reading, taken after the latest round
  bool read_ = false;  // whether last_ was taken yet
};

}  // namespace

const char* clock_name(ClockKind kind) {
  switch (kind) {
    case ClockKind::gpu: return "gpu";
    case ClockKind::batch: return "batch";
    case ClockKind::cpu: return "cpu";
  }
  return "?";
}

void check_config(const MeasureConfig& c) {
  const StopRule& s = c.stop;
  auto seconds = [](double v, bool zero_ok) {
    return std::isfinite(v) && (zero_ok ? v >= 0 : v > 0) && v <= kMaxSeconds;
  };
  require(c.warmup >= 0 && c.warmup <= 1'000'000, "warmup must be from 0 to 1000000, got " +
                                                      std::to_string(c.warmup));
  require(s.min_samples >= 1 && s.min_samples <= kMaxSamples,
          "min_samples must be from 1 to " + std::to_string(kMaxSamples) + ", got " + std::to_string(s.min_samples));
  require(s.max_samples >= s.min_samples && s.max_samples <= kMaxSamples,
          "max_samples must be from min_samples (" + std::to_string(s.min_samples) + ") to " +
              std::to_string(kMaxSamples) + ", got " + std::to_string(s.max_samples));
  require(seconds(s.min_time, true), "min_time must be a finite number of seconds from 0 to 86400, got " +
                                         shown(s.min_time));
  require(seconds(s.max_time, false), "max_time must be a finite number of seconds above 0 and at most 86400, got " +
                                          shown(s.max_time));
  require(std::isfinite(s.max_noise) && s.max_noise >= 0 && s.max_noise <= 1,
          "max_noise must be a fraction from 0 to 1 (0.005 is 0.5%), got " + shown(s.max_noise));
  require(std::isfinite(c.batch_time) && c.batch_time > 0 && c.batch_time <= 10,
          "batch_time must be a finite number of seconds above 0 and at most 10, got " + shown(c.batch_time));
  require(c.max_batch >= 1 && c.max_batch <= 1'000'000, "max_batch must be from 1 to 1000000, got " +
                                                            std::to_string(c.max_batch));
  require(std::isfinite(c.min_clock_fraction) && c.min_clock_fraction >= 0 && c.min_clock_fraction <= 1,
          "min_clock_fraction must be from 0 to 1, got " + shown(c.min_clock_fraction));
  require(std::isfinite(c.launch_hint) && c.launch_hint >= 0 && c.launch_hint <= kMaxSeconds,
          "launch_hint must be a finite number of seconds from 0 to 86400, got " + shown(c.launch_hint));
  require(seconds(c.ramp_idle, true), "ramp_idle must be a finite number of seconds from 0 to 86400, got " +
                                          shown(c.ramp_idle));
  require(std::isfinite(c.ramp_time) && c.ramp_time >= 0 && c.ramp_time <= 10,
          "ramp_time must be a finite number of seconds from 0 to 10, got " + shown(c.ramp_time));
}

Measurement measure(Device& device, const std::vector<Launch>& slots, const std::vector<Reset>& resets,
                    const MeasureConfig& config) {
  check_config(config);
  if (slots.empty()) throw UsageError("[core::measure] nothing to launch");
  for (const Launch& l : slots) check_launch(device, l);
  for (const Reset& r : resets) {
    if (!r.target || !r.source) throw UsageError("[core::measure] a reset names a null buffer");
    if (r.target->bytes() != r.source->bytes())
      throw UsageError("[core::measure] a reset copies " + std::to_string(r.source->bytes()) + " bytes into " +
                       std::to_string(r.target->bytes()));
  }
  std::lock_guard<std::mutex> hold(device.measuring);
  Measurement m = Loop(device, slots, resets, config).run();
  device.measured_until = std::chrono::steady_clock::now();
  return m;
}

}  // namespace mb
