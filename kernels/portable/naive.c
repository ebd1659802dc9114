/* One thread per output element. Handles every op, layout and batch through the
 * generic A_AT/B_AT indexing, so it is the reference point where the backend has
 * no vendor library. Groups: (ceil(n / TG), m, batch). */
MB_KERNEL(naive) {
  int j = GROUP_ID(0) * GROUP_SIZE(0) + LOCAL_ID(0);
  int i = GROUP_ID(1);
  int bi = GROUP_ID(2);
  if (j >= p.n) return;
  float acc = 0.0f;
  for (int kk = 0; kk < p.k; ++kk) acc += LOAD(a, A_AT(bi, i, kk)) * LOAD(b, B_AT(bi, kk, j));
  MB_STORE_C(C_AT(bi, i, j), j, acc);
}
