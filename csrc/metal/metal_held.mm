// Held runs of a Metal device: Device::timed (each launch's own GPU time) and
// Device::timed_batch (the whole run's), over launches metal_backend.mm prepared. How
// their command buffers are paced, in windows behind gates, is metal_held.h's
// run_in_windows; how launches are ordered and encoded is metal_timing.mm's.
//
// Per launch, one of two ways (the driver string says which):
// - counters: up to kLaunchesPerBuffer launches a command buffer, each timed from the
//   end of the join pass before it to the start of the join pass after it
//   (encode_timed), kernels and MPS alike; each command buffer has a counter sample
//   buffer of the pool, which two windows in flight use up.
// - command buffers: one a launch, timed by GPUEndTime - GPUStartTime; where a launch
//   binds other allocations than the one before it, a join goes into a command buffer
//   of its own before the launch's, outside every sample.
#import <Foundation/Foundation.h>
#import <Metal/Metal.h>

#include <algorithm>
#include <cmath>
#include <deque>
#include <string>
#include <vector>

#include "metal/metal_held.h"
#include "metal/metal_internal.h"

namespace mb::metal {
namespace {

// Launches one command buffer times by counters: two samples each.
constexpr size_t kLaunchesPerBuffer = Counters::kSamplesPerBuffer / 2;
// Command buffers one window commits with counters (kLaunchesPerBuffer launches each),
// and the sample buffers they use: two windows in flight take every one of the pool
// (a driver has only so many), and the first window's are free again when the third
// starts.
constexpr size_t kCounterWindow = 4;
constexpr size_t kCounterPool = 2 * kCounterWindow;
static_assert(2 * (kWindowBuffers + 1) <= kQueueDepth, "two windows and their gates fit in the queue");
static_assert(2 * (kCounterWindow + 1) <= kQueueDepth, "two windows and their gates fit in the queue");

void wait_all(const std::deque<id<MTLCommandBuffer>>& committed) {
  for (id<MTLCommandBuffer> cb : committed) [cb waitUntilCompleted];
}

// The gates of one run's windows (metal_held.h). A gate is a command buffer of its own
// that waits for a new value of the device's shared event, then joins over the
// allocations of its window's first launch, which therefore starts only once the gate
// is open, and in a command buffer of its own: the wait is in no sample, neither a
// counter span nor a command buffer's GPUStartTime to GPUEndTime.
class Gates {
 public:
  Gates(Context& ctx, const std::string& who) : ctx_(ctx), who_(who) {}

  void hold(const PreparedLaunch& first) {
    pooled([&] {
      id<MTLCommandBuffer> cb = new_command_buffer(ctx_, who_);
      const uint64_t value = ctx_.gate_value + 1;
      [cb encodeWaitForEvent:ctx_.gate value:value];  // before any encoder, as the header requires
      encode_join(ctx_, cb, nullptr, &first, Span{});
      ctx_.gate_value = value;
      [cb commit];
      committed_.push_back(cb);
    });
  }
  // Values only rise: opening the latest gate opens every gate before it too.
  void open() { ctx_.gate.signaledValue = ctx_.gate_value; }
  // Waits for the oldest gate, which must have completed.
  void finish() {
    id<MTLCommandBuffer> cb = committed_.front();
    committed_.pop_front();
    [cb waitUntilCompleted];
    check_completed(cb, who_);
  }
  void abandon() {
    open();
    wait_all(committed_);
  }

 private:
  Context& ctx_;
  const std::string& who_;
  std::deque<id<MTLCommandBuffer>> committed_;
};

// What both ways of timing per launch share: the gates, the command buffers committed
// and not finished yet (oldest first), and the samples collected so far.
class Steps {
 public:
  void open() { gates_.open(); }
  void abandon() {
    gates_.abandon();
    wait_all(committed_);
  }
  std::vector<uint64_t> take() { return std::move(out_); }

 protected:
  Steps(Context& ctx, const std::string& who, size_t launches) : ctx_(ctx), who_(who), gates_(ctx, who) {
    out_.reserve(launches);
  }
  void submit(id<MTLCommandBuffer> cb) {
    [cb commit];
    committed_.push_back(cb);
  }
  // The oldest command buffer committed, once it has completed.
  id<MTLCommandBuffer> completed() {
    id<MTLCommandBuffer> cb = committed_.front();
    committed_.pop_front();
    [cb waitUntilCompleted];
    check_completed(cb, who_);
    return cb;
  }

  Context& ctx_;
  const std::string& who_;
  Gates gates_;
  std::deque<id<MTLCommandBuffer>> committed_;
  std::vector<uint64_t> out_;
};

// Per launch by counters: unit u is a command buffer of launches [u * kLaunchesPerBuffer,
// ...) with sample buffer u % kCounterPool.
class PassSteps final : public Steps {
 public:
  PassSteps(Context& ctx, Counters& counters, const std::vector<const PreparedLaunch*>& run, const std::string& who)
      : Steps(ctx, who, run.size()), counters_(counters), run_(run), timeline_(who, "counter sample") {}
  size_t units() const { return (run_.size() + kLaunchesPerBuffer - 1) / kLaunchesPerBuffer; }
  size_t buffers(size_t) const { return 1; }
  void gate(size_t unit) { gates_.hold(*run_[unit * kLaunchesPerBuffer]); }
  void commit(size_t unit) {
    pooled([&] {
      const size_t first = unit * kLaunchesPerBuffer;
      std::vector<const PreparedLaunch*> part(run_.begin() + first, run_.begin() + first + count(unit));
      id<MTLCommandBuffer> cb = new_command_buffer(ctx_, who_);
      encode_timed(ctx_, cb, part, counters_.buffer(unit % kCounterPool), first ? run_[first - 1] : nullptr);
      submit(cb);
    });
  }
  void finish(size_t first, size_t end) {
    gates_.finish();
    for (size_t unit = first; unit < end; ++unit) {
      completed();
      if (rate_ == 0) rate_ = counters_.ns_per_tick(who_);
      std::vector<uint64_t> t = counters_.resolve(counters_.buffer(unit % kCounterPool), 2 * count(unit), who_);
      for (size_t j = 0; j < count(unit); ++j)
        out_.push_back(timeline_.add(unit * kLaunchesPerBuffer + j, t[2 * j], t[2 * j + 1], rate_));
    }
  }

 private:
  size_t count(size_t unit) const { return std::min(kLaunchesPerBuffer, run_.size() - unit * kLaunchesPerBuffer); }

  Counters& counters_;
  const std::vector<const PreparedLaunch*>& run_;
  Timeline<uint64_t> timeline_;
  double rate_ = 0;
};

// Per launch by command buffers: unit i is launch i, in a command buffer of its own,
// after a join in another where launch i binds other allocations than launch i - 1.
class BufferSteps final : public Steps {
 public:
  BufferSteps(Context& ctx, const std::vector<const PreparedLaunch*>& run, const std::string& who)
      : Steps(ctx, who, run.size()), run_(run), timeline_(who, "GPU time") {}
  size_t units() const { return run_.size(); }
  size_t buffers(size_t i) const { return joined(i) ? 2 : 1; }
  void gate(size_t i) { gates_.hold(*run_[i]); }
  void commit(size_t i) {
    pooled([&] {
      if (joined(i)) {
        id<MTLCommandBuffer> join = new_command_buffer(ctx_, who_);
        encode_join(ctx_, join, run_[i - 1], run_[i], Span{});
        submit(join);
      }
      id<MTLCommandBuffer> cb = new_command_buffer(ctx_, who_);
      encode_launch(cb, *run_[i]);
      submit(cb);
    });
  }
  void finish(size_t first, size_t end) {
    gates_.finish();
    for (size_t i = first; i < end; ++i) {
      if (joined(i)) completed();
      id<MTLCommandBuffer> cb = completed();
      out_.push_back(timeline_.add(i, cb.GPUStartTime, cb.GPUEndTime, 1e9));
    }
  }

 private:
  bool joined(size_t i) const { return i > 0 && needs_join(run_[i - 1], *run_[i]); }

  const std::vector<const PreparedLaunch*>& run_;
  Timeline<CFTimeInterval> timeline_;
};

}  // namespace

std::vector<uint64_t> timed_run(Context& ctx, Counters* counters, const std::vector<const PreparedLaunch*>& run,
                                const std::string& who) {
  if (counters) {
    PassSteps steps(ctx, *counters, run, who);
    run_in_windows(steps.units(), kCounterWindow, steps);
    return steps.take();
  }
  BufferSteps steps(ctx, run, who);
  run_in_windows(steps.units(), kWindowBuffers, steps);
  return steps.take();
}

uint64_t timed_batch_run(Context& ctx, Counters* counters, const std::vector<const PreparedLaunch*>& run,
                         const std::string& who) {
  // One command buffer, so the GPU never waits for the host inside it; no gate.
  id<MTLCommandBuffer> cb = new_command_buffer(ctx, who);
  if (counters) {
    id<MTLCounterSampleBuffer> samples = counters->buffer(0);
    encode_all(ctx, cb, run, Span{samples, 0, 1});
    submit_and_wait(cb, who);
    std::vector<uint64_t> t = counters->resolve(samples, 2, who);
    return Timeline<uint64_t>(who, "counter sample").add(0, t[0], t[1], counters->ns_per_tick(who));
  }
  encode_all(ctx, cb, run, Span{});
  submit_and_wait(cb, who);
  return Timeline<CFTimeInterval>(who, "GPU time").add(0, cb.GPUStartTime, cb.GPUEndTime, 1e9);
}

}  // namespace mb::metal
