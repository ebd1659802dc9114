// The arguments of a vendor-library builtin (cuBLAS, MPS), which takes a GEMM kernel's
// six (a, b, c, bias, ws, p) in place of a kernel. A library asserts, or reads out of
// bounds, on a problem its buffers cannot hold, so every builtin checks them here first,
// in the same words.
#pragma once

#include <array>
#include <cstddef>
#include <string>

#include "kernel_abi.h"
#include "device.h"

namespace mb {

// One operand as the params store it: rows x columns with a row pitch, batch entries
// `stride` elements apart (all in elements).
struct StoredMatrix {
  const char* name;  // "A", "B" or "C"
  size_t rows, columns, pitch, stride;
};

// The launch's MBParams, once the launch is checked: six arguments, the first five
// buffers, the sixth the bytes of an MBParams; a problem with no empty dimension, a
// known op, no negative pitch or stride and no row pitch shorter than its row; for a
// quantized B (p.qbits != 0) a bit width and group size of MLX's affine format
// (python/metalbench/quant.py), a group size dividing k, B stored n x k and the scales and
// biases at offsets that are not negative. `who`
// starts each error ("[cuda::launch] cublas/baseline: ").
MBParams gemm_params(const Launch& launch, const std::string& who);

// A, B and C as `p` stores them (A k x m when trans_a, B n x k when trans_b). A quantized
// B (p.qbits != 0) is its codes: n rows of k * qbits / 32 uint32 words, pitch and stride in
// words (its scales and biases are checked by gemm_buffers_short).
std::array<StoredMatrix, 3> stored_matrices(const MBParams& p);

// Why the launch's buffers cannot hold what `p` addresses at `element` bytes an
// element (the first of A, B, C and, for MB_OP_BIAS_ADD, the bias that is too small; a
// quantized B's codes at 4 bytes a word, its scales and biases at `element`), or "" when
// they can. `launch` has passed gemm_params.
std::string gemm_buffers_short(const Launch& launch, const MBParams& p, size_t element);

}  // namespace mb
