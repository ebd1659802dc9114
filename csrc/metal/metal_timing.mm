// How the Metal backend orders and encodes launches, and its timestamp counters.
//
// Order. Metal may run two compute passes (of one command buffer, or of two) at the
// same time unless one depends on the other. Buffers made by the device are
// hazard-tracked by default (MTLResourceHazardTrackingModeTracked: "command encoder
// dependencies for this resource are tracked automatically", MTLResource.h), so a
// pass that binds a buffer an earlier pass may write waits for it. Consecutive
// launches that bind the same allocations are ordered by that alone: each writes its
// output, which the next one writes too. Where they bind different allocations (a
// round over several slots, each with its own copies), a join pass goes between
// them: one dispatch of a kernel that binds every allocation of both launches as
// writable (and writes none of them), so that it waits for the first launch and the
// second waits for it. MPS encodes passes of its own, which nothing else can be
// put into; join passes around an MPS launch order it the same way.
//
// Timestamps. Where the device samples counters at stage boundaries
// (MTLCounterSamplingPointAtStageBoundary), a compute pass can be sampled at its start
// and at its end (MTLComputePassDescriptor.sampleBufferAttachments). MPS's passes
// cannot be (it makes its own), so an MPS launch is timed from the end of a join pass
// before it to the start of one after it; and so is every other launch (encode_timed),
// so that a kernel's time and MPS's both hold the same two pass transitions. The
// samples are GPU counter ticks; they become nanoseconds through a rate calibrated
// against the host's clock (Counters::ns_per_tick). Without counters each launch gets
// a command buffer of its own, timed by its GPUStartTime and GPUEndTime
// (metal_held.mm).
#import <Foundation/Foundation.h>
#import <Metal/Metal.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <string>
#include <thread>
#include <vector>

#include "metal/metal_internal.h"

namespace mb::metal {
namespace {

// Buffers one join dispatch binds; a join of more allocations dispatches again.
constexpr NSUInteger kJoinSlots = 16;
// A calibration needs at least this much host time between its two samples, so that
// the few microseconds a sample takes are small against it.
constexpr double kCalibrationNs = 2e6;

std::string join_source() {
  // A store the kernel never makes (`never` is always 0) keeps every argument
  // writable as far as Metal can tell, which is what makes the pass wait.
  std::string args, stores;
  for (NSUInteger i = 0; i < kJoinSlots; ++i) {
    args += "device uint* b" + std::to_string(i) + " [[buffer(" + std::to_string(i) + ")]], ";
    stores += "    b" + std::to_string(i) + "[0] = 0u;\n";
  }
  return "#include <metal_stdlib>\nusing namespace metal;\nkernel void mb_join(" + args +
         "constant uint& never [[buffer(" + std::to_string(kJoinSlots) + ")]]) {\n  if (never == 1u) {\n" + stores +
         "  }\n}\n";
}

// A serial compute pass; with `span.samples`, one sampled at its start and end as `span` says.
id<MTLComputeCommandEncoder> open_pass(id<MTLCommandBuffer> cb, const Span& span) {
  // Serial, the default, said explicitly because timed_batch relies on it: "command
  // encoder dispatches are executed in dispatched order" (MTLCommandBuffer.h), and a
  // memory barrier on a serial encoder "is allowed, but ignored"
  // (MTLComputeCommandEncoder.h), so each dispatch sees the one before it done.
  id<MTLComputeCommandEncoder> enc = nil;
  if (span.samples) {
    MTLComputePassDescriptor* pass = [MTLComputePassDescriptor computePassDescriptor];
    pass.dispatchType = MTLDispatchTypeSerial;
    MTLComputePassSampleBufferAttachmentDescriptor* at = pass.sampleBufferAttachments[0];
    at.sampleBuffer = span.samples;
    at.startOfEncoderSampleIndex = span.start;
    at.endOfEncoderSampleIndex = span.end;
    enc = [cb computeCommandEncoderWithDescriptor:pass];
  } else {
    enc = [cb computeCommandEncoderWithDispatchType:MTLDispatchTypeSerial];
  }
  if (!enc) throw DeviceError(where("timing", "encode") + "the command buffer gave no compute encoder");
  return enc;
}

bool contains(const std::vector<id<MTLBuffer>>& set, id<MTLBuffer> b) {
  return std::find(set.begin(), set.end(), b) != set.end();
}

// A join pass over `resources` (see the top of this file); one over none binds the
// device's scratch buffer, so that every join dispatches, sampled ones included.
void join_pass(const Context& ctx, id<MTLCommandBuffer> cb, const std::vector<id<MTLBuffer>>& resources,
               const Span& span) {
  const std::vector<id<MTLBuffer>> scratch{ctx.scratch};
  const std::vector<id<MTLBuffer>>& bound = resources.empty() ? scratch : resources;
  id<MTLComputeCommandEncoder> enc = open_pass(cb, span);
  [enc setComputePipelineState:ctx.join];
  const uint32_t never = 0;
  [enc setBytes:&never length:sizeof never atIndex:kJoinSlots];
  for (size_t first = 0; first < bound.size(); first += kJoinSlots) {
    for (NSUInteger i = 0; i < kJoinSlots; ++i) {
      // Every slot is bound: the spare ones to the first buffer of this dispatch again.
      size_t at = first + i < bound.size() ? first + i : first;
      [enc setBuffer:bound[at] offset:0 atIndex:i];
    }
    [enc dispatchThreadgroups:MTLSizeMake(1, 1, 1) threadsPerThreadgroup:MTLSizeMake(1, 1, 1)];
  }
  [enc endEncoding];
}

}  // namespace

void PreparedLaunch::add_resource(id<MTLBuffer> buffer) {
  if (buffer && !contains(resources_, buffer)) resources_.push_back(buffer);
}

id<MTLComputePipelineState> build_join_pipeline(const Context& ctx) {
  return build_pipeline(ctx, join_source(), "mb_join", {}, "metal/join");
}

bool needs_join(const PreparedLaunch* a, const PreparedLaunch& b) {
  if (!a) return false;
  const auto &x = a->resources(), &y = b.resources();
  if (x.size() != y.size()) return true;
  for (id<MTLBuffer> r : x)
    if (!contains(y, r)) return true;
  return false;
}

void encode_join(const Context& ctx, id<MTLCommandBuffer> cb, const PreparedLaunch* a, const PreparedLaunch* b,
                 const Span& span) {
  std::vector<id<MTLBuffer>> all;
  for (const PreparedLaunch* l : {a, b}) {
    if (!l) continue;
    for (id<MTLBuffer> r : l->resources())
      if (!contains(all, r)) all.push_back(r);
  }
  join_pass(ctx, cb, all, span);
}

void encode_launch(id<MTLCommandBuffer> cb, const PreparedLaunch& launch) {
  if (!launch.single_dispatch()) {
    launch.encode(cb);
    return;
  }
  id<MTLComputeCommandEncoder> enc = open_pass(cb, Span{});
  launch.dispatch(enc);
  [enc endEncoding];
}

void encode_timed(const Context& ctx, id<MTLCommandBuffer> cb, const std::vector<const PreparedLaunch*>& launches,
                  id<MTLCounterSampleBuffer> samples, const PreparedLaunch* prev) {
  const size_t n = launches.size();
  // Join j sits between launch j - 1 and launch j: its start is the end of launch
  // j - 1 (sample 2j - 1), its end the start of launch j (sample 2j).
  for (size_t j = 0; j <= n; ++j) {
    const PreparedLaunch* before = j == 0 ? prev : launches[j - 1];
    const PreparedLaunch* after = j < n ? launches[j] : nullptr;
    encode_join(ctx, cb, before, after,
                Span{samples, j > 0 ? 2 * j - 1 : MTLCounterDontSample, j < n ? 2 * j : MTLCounterDontSample});
    if (after) encode_launch(cb, *after);
  }
}

void encode_all(const Context& ctx, id<MTLCommandBuffer> cb, const std::vector<const PreparedLaunch*>& launches,
                const Span& span) {
  const size_t n = launches.size();
  if (span.samples) encode_join(ctx, cb, nullptr, launches.front(), Span{span.samples, MTLCounterDontSample, span.start});
  const PreparedLaunch* prev = nullptr;
  for (size_t i = 0; i < n;) {
    const PreparedLaunch& l = *launches[i];
    if (needs_join(prev, l)) encode_join(ctx, cb, prev, &l, Span{});
    if (!l.single_dispatch()) {
      l.encode(cb);
      prev = &l;
      ++i;
      continue;
    }
    // Every dispatch up to the next MPS launch goes into one serial pass.
    id<MTLComputeCommandEncoder> enc = open_pass(cb, Span{});
    for (; i < n && launches[i]->single_dispatch(); ++i) launches[i]->dispatch(enc);
    [enc endEncoding];
    prev = launches[i - 1];
  }
  if (span.samples) encode_join(ctx, cb, launches.back(), nullptr, Span{span.samples, span.end, MTLCounterDontSample});
}

// ---- counters ---------------------------------------------------------------------------------------

std::unique_ptr<Counters> Counters::open(Context& ctx, std::string* why) {
  id<MTLDevice> device = ctx.device;
  if (![device supportsCounterSampling:MTLCounterSamplingPointAtStageBoundary]) {
    *why = "the GPU does not sample counters at stage boundaries";
    return nullptr;
  }
  id<MTLCounterSet> timestamps = nil;
  for (id<MTLCounterSet> set in device.counterSets) {
    if ([set.name isEqualToString:MTLCommonCounterSetTimestamp]) timestamps = set;
  }
  if (!timestamps) {
    *why = "the GPU has no timestamp counter set";
    return nullptr;
  }
  std::unique_ptr<Counters> c(new Counters(ctx, timestamps));
  c->anchor_ = c->stamp();
  if (c->anchor_.gpu == 0) {
    *why = "sampleTimestamps:gpuTimestamp: gave no GPU timestamp";
    return nullptr;
  }
  try {
    if (!c->probe(why)) return nullptr;
  } catch (const std::exception& e) {
    *why = std::string("the counter probe failed: ") + e.what();
    return nullptr;
  }
  return c;
}

// Two passes that bind one buffer, so that the second waits for the first, each sampled
// at its start and end: the samples must exist and come in order (macOS 26 has been
// reported to write zeros here: gfx-rs/wgpu issue 9414). Then the first calibration, over
// at least kCalibrationNs.
bool Counters::probe(std::string* why) {
  const std::string who = where("timing", "counter probe");
  const bool ordered = pooled([&] {
    id<MTLCounterSampleBuffer> samples = buffer(0);
    id<MTLCommandBuffer> cb = new_command_buffer(ctx_, who);
    join_pass(ctx_, cb, {}, Span{samples, 0, 1});  // both bind the scratch buffer
    join_pass(ctx_, cb, {}, Span{samples, 2, 3});
    submit_and_wait(cb, who);
    std::vector<uint64_t> t = resolve(samples, 4, who);
    if (t[0] <= t[1] && t[1] <= t[2] && t[2] <= t[3]) return true;
    *why = "the probe's samples came out of order (" + std::to_string(t[0]) + ", " + std::to_string(t[1]) + ", " +
           std::to_string(t[2]) + ", " + std::to_string(t[3]) + ")";
    return false;
  });
  if (!ordered) return false;
  double waited = stamp().host_ns - anchor_.host_ns;
  if (waited < kCalibrationNs)
    std::this_thread::sleep_for(std::chrono::nanoseconds(static_cast<int64_t>(kCalibrationNs - waited) + 1000));
  ns_per_tick(who);
  return true;
}

Counters::Stamp Counters::stamp() const {
  using Clock = std::chrono::steady_clock;
  MTLTimestamp cpu = 0, gpu = 0;
  auto before = Clock::now();
  [ctx_.device sampleTimestamps:&cpu gpuTimestamp:&gpu];
  auto after = Clock::now();
  auto ns = [](Clock::time_point t) {
    return double(std::chrono::duration_cast<std::chrono::nanoseconds>(t.time_since_epoch()).count());
  };
  return Stamp{(ns(before) + ns(after)) / 2, static_cast<uint64_t>(gpu)};
}

id<MTLCounterSampleBuffer> Counters::buffer(size_t i) {
  while (pool_.size() <= i) {
    MTLCounterSampleBufferDescriptor* d = [[MTLCounterSampleBufferDescriptor alloc] init];
    d.counterSet = set_;
    d.storageMode = MTLStorageModeShared;  // resolveCounterRange: reads shared ones only
    d.sampleCount = kSamplesPerBuffer;
    NSError* error = nil;
    id<MTLCounterSampleBuffer> b = [ctx_.device newCounterSampleBufferWithDescriptor:d error:&error];
    if (!b)
      throw DeviceError(where("timing", ctx_.name) + "no counter sample buffer of " +
                        std::to_string(kSamplesPerBuffer) + " samples" +
                        (error ? ": " + str(error.localizedDescription) : std::string()));
    pool_.push_back(b);
  }
  return pool_[i];
}

std::vector<uint64_t> Counters::resolve(id<MTLCounterSampleBuffer> buffer, size_t count, const std::string& who) {
  NSData* data = [buffer resolveCounterRange:NSMakeRange(0, count)];
  if (!data || data.length < count * sizeof(MTLCounterResultTimestamp))
    throw DeviceError(who + "resolving " + std::to_string(count) + " counter samples gave " +
                      (data ? std::to_string(data.length) + " bytes" : std::string("nothing")));
  const auto* ts = static_cast<const MTLCounterResultTimestamp*>(data.bytes);
  std::vector<uint64_t> out(count);
  for (size_t i = 0; i < count; ++i) {
    if (ts[i].timestamp == 0 || ts[i].timestamp == MTLCounterErrorValue)
      throw DeviceError(who + "counter sample " + std::to_string(i) + " of " + std::to_string(count) +
                        " is missing (" + (ts[i].timestamp == 0 ? "zero" : "MTLCounterErrorValue") + ")");
    out[i] = ts[i].timestamp;
  }
  return out;
}

// Apple's article "Converting GPU timestamps into CPU time" correlates counter
// values with sampleTimestamps:gpuTimestamp: pairs taken at two moments. The CPU
// half's unit is not documented (nanoseconds and mach ticks have both been
// reported), so the same two moments are read from the host's steady clock, which is
// in nanoseconds: the rate is host nanoseconds over GPU ticks between the device's
// first sample and now, so it sharpens as the span grows. A rate within 1% of 1 is
// taken as exactly 1 (nanosecond ticks, as reported for Apple GPUs). A GPU clock
// that went back (the probe's first sample is later than now) starts over.
double Counters::ns_per_tick(const std::string& who) {
  Stamp now = stamp();
  if (now.gpu <= anchor_.gpu || now.host_ns <= anchor_.host_ns) {
    anchor_ = now;
  } else if (now.host_ns - anchor_.host_ns >= kCalibrationNs) {
    double r = (now.host_ns - anchor_.host_ns) / double(now.gpu - anchor_.gpu);
    rate_ = std::fabs(r - 1.0) < 0.01 ? 1.0 : r;
  }
  if (!(rate_ > 0)) throw DeviceError(who + "the GPU's counter ticks are not calibrated yet");
  return rate_;
}

std::string Counters::describe_rate() {
  if (rate_ == 1.0) return "1 ns per tick";
  char text[48];
  std::snprintf(text, sizeof text, "%.4g ns per tick", rate_);
  return text;
}

}  // namespace mb::metal
