/* The first step of the two-step baseline on quantized weights (kernels/cublas_dequant.toml):
 * B (common.h, QB_*) dequantized into `ws` (there, a scratch buffer of the builtin's, not the
 * ABI's zeroed workspace) as T, row-major n x k per batch entry at element bi * n * k, for
 * the vendor library to multiply, as an app without a
 * fused kernel does. Each weight is scale * code + bias in fp32, rounded once to T (for
 * float16, exactly what the fused kernels multiply by, rounded: an 11-bit scale times an
 * 8-bit code is exact in fp32). One thread per weight, along k so
 * that a group's stores are contiguous. Groups: (ceil(n * k / TG), batch). */
MB_KERNEL(qdequant) {
  int e = GROUP_ID(0) * GROUP_SIZE(0) + LOCAL_ID(0);
  int bi = GROUP_ID(1);
  if (e >= p.n * p.k) return;
  int j = e / p.k;
  int kk = e - j * p.k;
  int g = kk / p.qgroup;
  float w = QB_SCALE(bi, j, g) * (float)QB_CODE(QB_WORDS(bi, j), kk) + QB_BIAS(bi, j, g);
  GLOBAL_PTR T* out = (GLOBAL_PTR T*)ws;
  STORE(out, bi * p.n * p.k + e, w);
}
