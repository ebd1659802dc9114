// How the Metal backend orders, encodes and times launches.
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
// (MTLCounterSamplingPointAtStageBoundary), a compute pass gets a sample at its start
// and at its end (MTLComputePassDescriptor.sampleBufferAttachments), so a launch's
// time covers its own pass and nothing of its command buffer. An MPS launch is timed
// from the end of the join pass before it to the start of the one after it. The
// samples are GPU counter ticks; they become nanoseconds through a rate calibrated
// against the host's clock (Counters::ns_per_tick). Elsewhere each launch gets a
// command buffer of its own, timed by its GPUStartTime and GPUEndTime
// (metal_backend.mm).
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

id<MTLComputeCommandEncoder> open_pass(id<MTLCommandBuffer> cb, const Span& span) {
  id<MTLComputeCommandEncoder> enc = nil;
  if (span.samples) {
    MTLComputePassDescriptor* pass = [MTLComputePassDescriptor computePassDescriptor];
    // Serial is the default; said here because timed_batch relies on it: "command
    // encoder dispatches are executed in dispatched order" (MTLCommandBuffer.h), and
    // a memory barrier on a serial encoder "is allowed, but ignored"
    // (MTLComputeCommandEncoder.h), so each dispatch sees the one before it done.
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

// A join pass over `resources` (see the top of this file).
void join_pass(const Context& ctx, id<MTLCommandBuffer> cb, const std::vector<id<MTLBuffer>>& resources,
               const Span& span) {
  id<MTLComputeCommandEncoder> enc = open_pass(cb, span);
  if (!resources.empty()) {
    [enc setComputePipelineState:ctx.join];
    const uint32_t never = 0;
    [enc setBytes:&never length:sizeof never atIndex:kJoinSlots];
    for (size_t first = 0; first < resources.size(); first += kJoinSlots) {
      for (NSUInteger i = 0; i < kJoinSlots; ++i) {
        // Every slot is bound: the spare ones to the first buffer of this dispatch again.
        size_t at = first + i < resources.size() ? first + i : first;
        [enc setBuffer:resources[at] offset:0 atIndex:i];
      }
      [enc dispatchThreadgroups:MTLSizeMake(1, 1, 1) threadsPerThreadgroup:MTLSizeMake(1, 1, 1)];
    }
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

void encode_each(const Context& ctx, id<MTLCommandBuffer> cb, const std::vector<const PreparedLaunch*>& launches,
                 const std::vector<Span>& spans, const PreparedLaunch* prev) {
  for (size_t i = 0; i < launches.size(); ++i) {
    const PreparedLaunch& l = *launches[i];
    const Span& span = spans[i];
    if (l.single_dispatch()) {
      if (needs_join(prev, l)) encode_join(ctx, cb, prev, &l, Span{});
      id<MTLComputeCommandEncoder> enc = open_pass(cb, span);
      l.dispatch(enc);
      [enc endEncoding];
    } else {
      // Its start is the end of a join before it, its end the start of one after it.
      if (span.samples)
        encode_join(ctx, cb, prev, &l, Span{span.samples, MTLCounterDontSample, span.start});
      else if (needs_join(prev, l))
        encode_join(ctx, cb, prev, &l, Span{});
      l.encode(cb);
      if (span.samples) encode_join(ctx, cb, &l, nullptr, Span{span.samples, span.end, MTLCounterDontSample});
    }
    prev = &l;
  }
}

void encode_all(const Context& ctx, id<MTLCommandBuffer> cb, const std::vector<const PreparedLaunch*>& launches,
                const Span& span) {
  const size_t n = launches.size();
  const PreparedLaunch* prev = nullptr;
  for (size_t i = 0; i < n;) {
    const PreparedLaunch& l = *launches[i];
    if (l.single_dispatch()) {
      // Every dispatch up to the next MPS launch goes into one serial pass.
      size_t j = i;
      while (j < n && launches[j]->single_dispatch()) ++j;
      if (needs_join(prev, l)) encode_join(ctx, cb, prev, &l, Span{});
      Span pass{span.samples, i == 0 ? span.start : MTLCounterDontSample, j == n ? span.end : MTLCounterDontSample};
      id<MTLComputeCommandEncoder> enc = open_pass(cb, pass);
      for (size_t k = i; k < j; ++k) launches[k]->dispatch(enc);
      [enc endEncoding];
      prev = launches[j - 1];
      i = j;
      continue;
    }
    if (i == 0 && span.samples)
      encode_join(ctx, cb, nullptr, &l, Span{span.samples, MTLCounterDontSample, span.start});
    else if (needs_join(prev, l))
      encode_join(ctx, cb, prev, &l, Span{});
    l.encode(cb);
    if (i + 1 == n && span.samples) encode_join(ctx, cb, &l, nullptr, Span{span.samples, span.end, MTLCounterDontSample});
    prev = &l;
    ++i;
  }
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
  // The probe: two passes that bind one buffer, so that the second waits for the
  // first, each sampled at its start and end. The samples must exist and come in
  // order; macOS 26 has been reported to write zeros here (gfx-rs/wgpu issue 9414).
  try {
    @autoreleasepool {
      const std::string who = where("timing", "counter probe");
      id<MTLBuffer> scratch = [device newBufferWithLength:16 options:MTLResourceStorageModeShared];
      if (!scratch) throw DeviceError(who + "the device gave no scratch buffer");
      id<MTLCounterSampleBuffer> samples = c->buffer(0);
      id<MTLCommandBuffer> cb = new_command_buffer(ctx, who);
      join_pass(ctx, cb, {scratch}, Span{samples, 0, 1});
      join_pass(ctx, cb, {scratch}, Span{samples, 2, 3});
      submit_and_wait(cb, who);
      std::vector<uint64_t> t = c->resolve(samples, 4, who);
      if (!(t[0] <= t[1] && t[1] <= t[2] && t[2] <= t[3])) {
        *why = "the probe's samples came out of order (" + std::to_string(t[0]) + ", " + std::to_string(t[1]) +
               ", " + std::to_string(t[2]) + ", " + std::to_string(t[3]) + ")";
        return nullptr;
      }
    }
    // Calibrate once now, over at least kCalibrationNs.
    double waited = c->stamp().host_ns - c->anchor_.host_ns;
    if (waited < kCalibrationNs)
      std::this_thread::sleep_for(std::chrono::nanoseconds(static_cast<int64_t>(kCalibrationNs - waited) + 1000));
    c->ns_per_tick(where("timing", "counter probe"));
  } catch (const std::exception& e) {
    *why = std::string("the counter probe failed: ") + e.what();
    return nullptr;
  }
  return c;
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
