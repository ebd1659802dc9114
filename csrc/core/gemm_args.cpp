#include "gemm_args.h"

#include <cstdint>
#include <cstring>
#include <variant>
#include <vector>

#include "abi.h"

namespace mb {
namespace {

constexpr size_t kArguments = 6;
const char* const kArgumentNames = "a, b, c, bias, ws, params";

size_t buffer_bytes(const Launch& launch, size_t index) {
  return std::get<std::shared_ptr<Buffer>>(launch.args[index])->bytes();
}

// Elements from the first of a stored matrix's batch entries to the end of its last.
// Every factor is below 2^31, so the sum stays below 2^63.
uint64_t elements(const StoredMatrix& s, size_t batch) {
  return uint64_t(batch - 1) * s.stride + uint64_t(s.rows - 1) * s.pitch + s.columns;
}

std::string short_of(const char* name, uint64_t need, size_t element, size_t has) {
  return std::string("the buffers are smaller than the params address: ") + name + " needs " +
         std::to_string(need) + " elements of " + std::to_string(element) + " bytes, its buffer has " +
         std::to_string(has) + " bytes";
}

}  // namespace

MBParams gemm_params(const Launch& launch, const std::string& who) {
  if (launch.args.size() != kArguments)
    throw UsageError(who + "takes the " + std::to_string(kArguments) + " GEMM arguments (" + kArgumentNames +
                     "), got " + std::to_string(launch.args.size()));
  for (size_t i = 0; i + 1 < kArguments; ++i) {
    const auto* held = std::get_if<std::shared_ptr<Buffer>>(&launch.args[i]);
    if (!held || !*held) throw UsageError(who + "argument " + std::to_string(i) + " must be a buffer");
  }
  const auto* bytes = std::get_if<std::vector<uint8_t>>(&launch.args[kArguments - 1]);
  if (!bytes || bytes->size() != sizeof(MBParams))
    throw UsageError(who + "argument " + std::to_string(kArguments - 1) + " must be the " +
                     std::to_string(sizeof(MBParams)) + " bytes of MBParams (kernels/include/common.h)");
  MBParams p;
  std::memcpy(&p, bytes->data(), sizeof p);
  if (p.batch < 1 || p.m < 1 || p.n < 1 || p.k < 1)
    throw UsageError(who + "empty problem: batch, m, n and k must be positive, got " + std::to_string(p.batch) +
                     ", " + std::to_string(p.m) + ", " + std::to_string(p.n) + ", " + std::to_string(p.k));
  if (!known_op(p.op)) throw UsageError(who + "unknown op " + std::to_string(p.op));
  if (p.lda < 0 || p.ldb < 0 || p.ldc < 0 || p.stride_a < 0 || p.stride_b < 0 || p.stride_c < 0)
    throw UsageError(who + "row pitches and batch strides must not be negative");
  if (p.qbits != 0) {
    // MLX's affine format as quant.py's BITS and GROUPS have it (tests/test_gemm_args.py ties them).
    const bool bits_ok = p.qbits == 2 || p.qbits == 3 || p.qbits == 4 || p.qbits == 5 || p.qbits == 6 || p.qbits == 8;
    const bool group_ok = p.qgroup == 32 || p.qgroup == 64 || p.qgroup == 128;
    if (!bits_ok || !group_ok)
      throw UsageError(who + "quantized B: bits " + std::to_string(p.qbits) + " and group " + std::to_string(p.qgroup) +
                       " are not MLX's affine format (bits 2, 3, 4, 5, 6 or 8; group 32, 64 or 128)");
    if (p.k % p.qgroup != 0)
      throw UsageError(who + "quantized B: group " + std::to_string(p.qgroup) + " does not divide k = " +
                       std::to_string(p.k));
    if (!p.trans_b) throw UsageError(who + "quantized B must be stored n x k (trans_b)");
    if (p.qscales < 0 || p.qbiases < 0) throw UsageError(who + "quantized B: scale and bias offsets must not be negative");
  }
  for (const StoredMatrix& s : stored_matrices(p))
    if (s.pitch < s.columns)
      throw UsageError(who + s.name + " has a row pitch of " + std::to_string(s.pitch) + " elements for " +
                       std::to_string(s.columns) + " columns");
  return p;
}

std::array<StoredMatrix, 3> stored_matrices(const MBParams& p) {
  const size_t m = size_t(p.m), n = size_t(p.n), k = size_t(p.k);
  const size_t b_columns = p.qbits ? k * size_t(p.qbits) / 32 : k;  // a quantized row in words
  return {StoredMatrix{"A", p.trans_a ? k : m, p.trans_a ? m : k, size_t(p.lda), size_t(p.stride_a)},
          StoredMatrix{"B", p.trans_b ? n : k, p.trans_b ? b_columns : n, size_t(p.ldb), size_t(p.stride_b)},
          StoredMatrix{"C", m, n, size_t(p.ldc), size_t(p.stride_c)}};
}

std::string gemm_buffers_short(const Launch& launch, const MBParams& p, size_t element) {
  const std::array<StoredMatrix, 3> stored = stored_matrices(p);
  for (size_t i = 0; i < stored.size(); ++i) {
    const size_t es = i == 1 && p.qbits ? 4 : element;  // a quantized B's codes are uint32 words
    const uint64_t need = elements(stored[i], size_t(p.batch));
    const size_t has = buffer_bytes(launch, i);
    if (need > has / es) return short_of(stored[i].name, need, es, has);
  }
  if (p.qbits) {
    // Scales and biases: (batch, n, k / qgroup) elements each, from their offsets in B's buffer.
    const uint64_t per = uint64_t(p.batch) * uint64_t(p.n) * uint64_t(p.k / p.qgroup);
    const size_t has = buffer_bytes(launch, 1);
    if (uint64_t(p.qscales) + per > has / element)
      return short_of("B's scales", uint64_t(p.qscales) + per, element, has);
    if (uint64_t(p.qbiases) + per > has / element)
      return short_of("B's biases", uint64_t(p.qbiases) + per, element, has);
  }
  if (p.op == MB_OP_BIAS_ADD && uint64_t(p.n) > buffer_bytes(launch, 3) / element)
    return short_of("bias", uint64_t(p.n), element, buffer_bytes(launch, 3));
  return "";
}

}  // namespace mb
