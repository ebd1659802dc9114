// Buffers of the Metal backend, in one of two storage modes:
//
// - shared (MTLResourceStorageModeShared) on GPUs with unified memory (Apple
//   silicon): the CPU reads and writes the buffer's memory directly. Metal keeps CPU
//   and GPU coherent at command-buffer boundaries, and every submission here is
//   waited for, so a host copy never races the GPU.
// - private (MTLResourceStorageModePrivate) on GPUs without it (the AMD and Intel
//   GPUs of Intel Macs), where shared buffers would sit in system memory across the
//   bus: the CPU never touches them, and every write or read goes through a shared
//   staging buffer and a blit copy that is waited for.
//
// On macOS a blit's offsets and sizes must be whole 4-byte words, so allocations are
// rounded up to words and a write that does not start and end on one first reads
// the words it touches back (read, patch, write). A view is the same allocation at
// an offset (a multiple of DeviceInfo::view_alignment, 256 bytes: what
// setBuffer:offset:atIndex: needs for any address space on macOS).
#import <Foundation/Foundation.h>
#import <Metal/Metal.h>

#include <algorithm>
#include <cstring>
#include <string>
#include <vector>

#include "metal/metal_internal.h"

namespace mb::metal {
namespace {

// A staging buffer holds at most this much, so that uploading a large buffer does
// not also need a copy of its size in shared memory.
constexpr size_t kStagingBytes = 64ull << 20;

size_t words_down(size_t n) { return n & ~size_t(3); }
size_t words_up(size_t n) { return (n + 3) & ~size_t(3); }

id<MTLBlitCommandEncoder> blit_encoder(id<MTLCommandBuffer> cb, const std::string& who) {
  // Encoders are nullable in Metal's headers: a nil one would drop the copy silently.
  id<MTLBlitCommandEncoder> blit = [cb blitCommandEncoder];
  if (!blit) throw DeviceError(who + "the command buffer gave no blit encoder");
  return blit;
}

id<MTLBuffer> new_staging(const Context& ctx, size_t bytes, const std::string& who) {
  id<MTLBuffer> staging = [ctx.device newBufferWithLength:bytes options:MTLResourceStorageModeShared];
  if (!staging) throw DeviceError(who + "cannot allocate a " + std::to_string(bytes) + "-byte staging buffer");
  return staging;
}

// One blit copy between two allocations, submitted and waited for; every offset and
// the size are whole words.
void blit_copy(const Context& ctx, id<MTLBuffer> from, size_t from_offset, id<MTLBuffer> to, size_t to_offset,
               size_t bytes, const std::string& who) {
  id<MTLCommandBuffer> cb = new_command_buffer(ctx, who);
  id<MTLBlitCommandEncoder> blit = blit_encoder(cb, who);
  [blit copyFromBuffer:from sourceOffset:from_offset toBuffer:to destinationOffset:to_offset size:bytes];
  [blit endEncoding];
  submit_and_wait(cb, who);
}

// Bytes [at, at + n) of a private allocation into `dst`, through staging.
void download(Context& ctx, id<MTLBuffer> buffer, size_t at, uint8_t* dst, size_t n, const std::string& who) {
  const size_t lo = words_down(at), hi = words_up(at + n);
  for (size_t chunk = lo; chunk < hi; chunk += kStagingBytes) {
    const size_t len = std::min(kStagingBytes, hi - chunk);
    pooled([&] {
      id<MTLBuffer> staging = new_staging(ctx, len, who);
      blit_copy(ctx, buffer, chunk, staging, 0, len, who);
      const size_t from = std::max(chunk, at), to = std::min(chunk + len, at + n);
      std::memcpy(dst + (from - at), static_cast<const uint8_t*>(staging.contents) + (from - chunk), to - from);
    });
  }
}

// `src` into bytes [at, at + n) of a private allocation, through staging; a chunk
// that covers its words only in part is read back first, so that the bytes around
// the range keep their values.
void upload(Context& ctx, id<MTLBuffer> buffer, size_t at, const uint8_t* src, size_t n, const std::string& who) {
  const size_t lo = words_down(at), hi = words_up(at + n);
  for (size_t chunk = lo; chunk < hi; chunk += kStagingBytes) {
    const size_t len = std::min(kStagingBytes, hi - chunk);
    pooled([&] {
      id<MTLBuffer> staging = new_staging(ctx, len, who);
      const size_t from = std::max(chunk, at), to = std::min(chunk + len, at + n);
      if (from != chunk || to != chunk + len) blit_copy(ctx, buffer, chunk, staging, 0, len, who);
      std::memcpy(static_cast<uint8_t*>(staging.contents) + (from - chunk), src + (from - at), to - from);
      blit_copy(ctx, staging, 0, buffer, chunk, len, who);
    });
  }
}

void check_range(const char* operation, size_t offset, size_t n, size_t bytes) {
  if (offset > bytes || n > bytes - offset)
    throw UsageError(where(operation, "buffer") + std::to_string(n) + " bytes at offset " + std::to_string(offset) +
                     " run past the end of a " + std::to_string(bytes) + "-byte buffer");
}

}  // namespace

MetalBuffer::MetalBuffer(std::shared_ptr<Context> ctx, size_t bytes) : ctx_(std::move(ctx)), bytes_(bytes) {
  const MTLResourceOptions storage = ctx_->private_storage ? MTLResourceStorageModePrivate
                                                           : MTLResourceStorageModeShared;
  // Buffers made by the device are hazard-tracked by default, which metal_timing.mm
  // relies on to order launches.
  buffer_ = [ctx_->device newBufferWithLength:words_up(bytes) options:storage];
  if (!buffer_)
    throw DeviceError(where("allocate", ctx_->name) + "cannot allocate " + std::to_string(bytes) +
                      " bytes (the device's largest buffer is " + std::to_string(ctx_->device.maxBufferLength) +
                      " bytes)");
}

MetalBuffer::MetalBuffer(std::shared_ptr<MetalBuffer> root, size_t offset, size_t bytes)
    : ctx_(root->ctx_), root_(std::move(root)), buffer_(root_->buffer_), offset_(offset), bytes_(bytes) {}

void MetalBuffer::write(const void* src, size_t n, size_t offset) {
  check_range("write", offset, n, bytes_);
  if (n == 0) return;
  if (!ctx_->private_storage) {
    std::memcpy(static_cast<uint8_t*>(buffer_.contents) + offset_ + offset, src, n);
    return;
  }
  std::lock_guard<std::mutex> hold(ctx_->mutex);
  upload(*ctx_, buffer_, offset_ + offset, static_cast<const uint8_t*>(src), n, where("write", ctx_->name));
}

void MetalBuffer::read(void* dst, size_t n, size_t offset) const {
  check_range("read", offset, n, bytes_);
  if (n == 0) return;
  if (!ctx_->private_storage) {
    std::memcpy(dst, static_cast<const uint8_t*>(buffer_.contents) + offset_ + offset, n);
    return;
  }
  std::lock_guard<std::mutex> hold(ctx_->mutex);
  download(*ctx_, buffer_, offset_ + offset, static_cast<uint8_t*>(dst), n, where("read", ctx_->name));
}

void MetalBuffer::fill(uint8_t value) {
  if (!ctx_->private_storage) {
    std::memset(static_cast<uint8_t*>(buffer_.contents) + offset_, value, bytes_);
    return;
  }
  if (offset_ % 4 != 0 || bytes_ % 4 != 0) {  // not whole words: through staging
    std::vector<uint8_t> bytes(bytes_, value);
    write(bytes.data(), bytes.size(), 0);
    return;
  }
  const std::string who = where("fill", ctx_->name);
  std::lock_guard<std::mutex> hold(ctx_->mutex);
  pooled([&] {
    id<MTLCommandBuffer> cb = new_command_buffer(*ctx_, who);
    id<MTLBlitCommandEncoder> blit = blit_encoder(cb, who);
    [blit fillBuffer:buffer_ range:NSMakeRange(offset_, bytes_) value:value];
    [blit endEncoding];
    submit_and_wait(cb, who);
  });
}

// A blit on the GPU for both storage modes: whole words, then the last one to three
// bytes through the host.
void MetalBuffer::copy_from(const Buffer& source) {
  const std::string who = where("copy", ctx_->name);
  auto* src = dynamic_cast<const MetalBuffer*>(&source);
  if (!src) throw UsageError(who + "the source is not a Metal buffer");
  if (src->ctx_ != ctx_) throw UsageError(who + "the source belongs to another device");
  if (src->bytes_ != bytes_)
    throw UsageError(who + "cannot copy a " + std::to_string(src->bytes_) + "-byte buffer into a " +
                     std::to_string(bytes_) + "-byte one");
  if (src->buffer_ == buffer_ && src->offset_ < offset_ + bytes_ && offset_ < src->offset_ + bytes_) {
    if (src->offset_ == offset_) return;  // the same bytes
    throw UsageError(who + "source and target overlap in one allocation");
  }
  const size_t words = words_down(bytes_);
  if (words > 0) {
    std::lock_guard<std::mutex> hold(ctx_->mutex);
    pooled([&] { blit_copy(*ctx_, src->buffer_, src->offset_, buffer_, offset_, words, who); });
  }
  if (words < bytes_) {
    uint8_t tail[4];
    src->read(tail, bytes_ - words, words);
    write(tail, bytes_ - words, words);
  }
}

std::shared_ptr<Buffer> MetalBuffer::view(size_t offset, size_t n) {
  check_range("view", offset, n, bytes_);
  constexpr size_t kAlignment = 256;  // DeviceInfo::view_alignment (metal_backend.mm)
  if (offset % kAlignment != 0)
    throw UsageError(where("view", ctx_->name) + "offset " + std::to_string(offset) + " is not a multiple of " +
                     std::to_string(kAlignment) + " bytes, the device's view_alignment");
  std::shared_ptr<MetalBuffer> root = root_ ? root_ : shared_from_this();
  return std::make_shared<MetalBuffer>(root, offset_ + offset, n);
}

MetalBuffer& buffer_arg(const Context& ctx, const Launch& launch, size_t index) {
  const std::string who = where("launch", launch.kernel->label());
  if (index >= launch.args.size())
    throw UsageError(who + "argument " + std::to_string(index) + " is missing (" +
                     std::to_string(launch.args.size()) + " given)");
  const auto* held = std::get_if<std::shared_ptr<Buffer>>(&launch.args[index]);
  if (!held) throw UsageError(who + "argument " + std::to_string(index) + " must be a buffer, not bytes");
  auto* buffer = dynamic_cast<MetalBuffer*>(held->get());
  if (!buffer) throw UsageError(who + "argument " + std::to_string(index) + " is not a Metal buffer");
  if (&buffer->context() != &ctx)
    throw UsageError(who + "argument " + std::to_string(index) + " belongs to another device");
  return *buffer;
}

}  // namespace mb::metal
