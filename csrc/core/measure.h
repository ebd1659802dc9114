// The one measurement loop every backend shares.
//
// Three clocks, each defined in one sentence:
// - gpu:   each launch between its own device timestamps, the launches of a round
//          enqueued behind a gate, so the GPU never waits for the host between them.
// - batch: N launches back to back between one pair of device timestamps, divided
//          by N; what a decode loop pays per launch.
// - cpu:   submit one launch and wait for it, on the host's clock; what a caller sees.
//
// Launches go to `slots`: one Launch per set of buffers, taken in turn from a cursor
// that runs on across rounds and clocks, so that with enough slots no launch finds
// the buffers of the launches just before it in cache (cold mode rotates copies of
// the inputs this way). Before every round `resets` restore buffers untimed; with
// resets a round launches each slot at most once, so every launch starts from the
// same state however many there are, and the runner verifies what the last round
// left behind. Without resets a round may reuse slots.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "device.h"
#include "stats.h"

namespace mb {

enum class ClockKind { gpu, batch, cpu };

const char* clock_name(ClockKind kind);

// When a clock has enough samples (nvbench's stopping criteria are the model). The
// ranking clock stops once it has `min_samples` samples spanning `min_time` and their
// noise is at most `max_noise`. The other clocks rank nothing and stop at
// `min_samples`. Every clock stops at its share of `max_time` or at `max_samples`,
// whichever comes first, and always has at least one sample.
//
// These defaults, with MeasureConfig's, are the only ones: they reach Python as
// _core.MeasureConfig, whose values Device.measure's keywords, metalbench's Settings and
// the CLI's options take. They are part of every stored result's key, so changing one
// measures everything again.
struct StopRule {
  double max_noise = 0.005;  // relative standard deviation of the samples
  int min_samples = 10;
  double min_time = 0.005;   // seconds of sampled GPU (or CPU) time
  double max_time = 0.1;     // seconds of wall time for the whole measurement
  int max_samples = 1000;    // per clock
};

// The version of what measure() does with these settings: part of every stored result's
// key, so that a change to the loop measures again what it would now measure otherwise.
// 2: the warm-up after an idle spell (ramp_idle, ramp_time).
constexpr int kMeasureVersion = 2;

struct MeasureConfig {
  int warmup = 3;            // untimed launches first (fewer once they take a quarter of max_time)
  // Where the device sat idle for ramp_idle seconds or more before this measurement
  // (since the last one on it ended, or ever), the warm-up goes on until it has taken
  // ramp_time seconds (less the caller's launch_hint, a launch that just ran), whatever
  // `warmup` and max_time say: a GPU that idled runs its first milliseconds of work at a
  // lower clock, and not every backend can read the clock to discard those samples. On
  // an H100 under NVIDIA's OpenCL (2026-12-06) the first pair of each smoke spec,
  // measured after the host prepared the spec's inputs, took its first batch samples at
  // 2 to 5 times the median (19 to 38 us against 5.5 to 8.7); after 25 ms of warm-up
  // launches its samples were even (3 to 8% relative standard deviation where it had
  // been up to 100%) and its median 11 to 17% lower, while the pairs that followed it on
  // the same spec were even already (benchmarks/results/warmup_ramp_opencl_h100.txt).
  double ramp_idle = 0.02;
  double ramp_time = 0.025;
  StopRule stop;
  ClockKind rank_by = ClockKind::batch;
  // A batch sample spans at least this much GPU time (as estimated from the gpu
  // clock's median), so that the timestamps' resolution and the per-sample costs
  // are small against it: 0.5 ms is 1000 times CUDA events' 0.5 us resolution. It
  // also takes at least 8 launches where min_samples such samples fit in the clock's
  // time (measure.cpp).
  double batch_time = 5e-4;
  size_t max_batch = 4096;   // launches in one batch sample at most
  // Samples taken while the clock ran below this fraction of its maximum, or while
  // the backend reported power or thermal throttling, are discarded and counted.
  double min_clock_fraction = 0.85;
  // Time the ranking clock alone: a race's brief lap ranks by it and keeps nothing else,
  // and on a slow device the two other clocks were two thirds of its launches.
  bool rank_only = false;
  // After the clocks, an untimed round for the caller to verify: a reset, then launches
  // back to back over slots 0, 1, ... once each, every slot where they fit in half of
  // max_time (by the batch clock's time of a launch), and at least two. With inputs that
  // differ from slot to slot, this round shows whether each launch computed its own
  // slot's answer.
  bool final_round = false;
  // A launch's round trip, in seconds, as the caller measured it (0: unknown): what the
  // warm-up's fastest round trip would tell, for a caller whose own launch just warmed
  // the kernel, its inputs and the driver (warmup 0). Rounds are sized by it.
  double launch_hint = 0;
};

struct ClockResult {
  std::vector<uint64_t> ns;  // kept samples, per launch
  Stats stats;
  std::string stop;          // converged, enough, time-cap, sample-cap or throttled
  size_t round = 0;          // launches per round (per batch sample for the batch clock)
  size_t discarded = 0;      // samples dropped for a low or throttled clock
};

struct Measurement {
  ClockResult gpu, batch, cpu;
  int warmup = 0;            // warm-up launches made
  size_t batch_size = 0;     // launches per batch sample
  // The last round launched slots first_slot, first_slot + 1, ... (modulo the slot
  // count), last_round of them: the final round where one was asked for, else the last
  // clock's last round. Every round starts from a reset, so those slots hold its outputs.
  size_t first_slot = 0, last_round = 0;
  bool final_round = false;  // whether that round was the untimed final round
  ClockReading clock_low, clock_high;  // lowest and highest clock seen (known = false: none)
};

// Refuses settings that are not finite or out of range, naming the setting: the one
// place their ranges are written (Python asks it through MeasureConfig.check()).
void check_config(const MeasureConfig& config);

struct Reset {
  std::shared_ptr<Buffer> target, source;  // target.copy_from(source) before each round
};

// Warm-up, then the gpu, batch and cpu clocks in that order, each until its stop rule
// holds. Holds device.measuring throughout.
Measurement measure(Device& device, const std::vector<Launch>& slots, const std::vector<Reset>& resets,
                    const MeasureConfig& config);

}  // namespace mb
