/* One thread per output element over quantized weights (B stored n x k in MLX's affine
 * format: common.h, QB_*): each weight is unpacked and dequantized where it is used,
 * with the bit width and group size read from p at run time, so one build takes every
 * format. The fused kernel every quantized family is checked against, fast for none.
 * Groups: (ceil(n / TG), m, batch). */
MB_KERNEL(qnaive) {
  int j = GROUP_ID(0) * GROUP_SIZE(0) + LOCAL_ID(0);
  int i = GROUP_ID(1);
  int bi = GROUP_ID(2);
  if (j >= p.n) return;
  GLOBAL_PTR const unsigned int* row = QB_WORDS(bi, j);
  float acc = 0.0f;
  for (int g = 0; g < p.k / p.qgroup; ++g) {
    float scale = QB_SCALE(bi, j, g);
    float bias = QB_BIAS(bi, j, g);
    for (int kk = g * p.qgroup; kk < (g + 1) * p.qgroup; ++kk)
      acc += LOAD(a, A_AT(bi, i, kk)) * (scale * (float)QB_CODE(row, kk) + bias);
  }
  MB_STORE_C(C_AT(bi, i, j), j, acc);
}
