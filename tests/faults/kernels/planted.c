/* The planted faults (../README.md): one thread per output element, correct as
 * kernels/portable/naive.c is, plus the one fault that the manifest's grid names
 * (`fault = ["far"]` defines MB_fault_far). Each fault is what a real kernel bug
 * does, in the portable dialect, so that every backend meets the same ones.
 *
 * With the grid parameter `only_k`, a fault is planted only on specs of that k and the
 * kernel is correct on the others: the same kernel, compiled again by the worker that
 * replaced the one a fault broke, must then verify. */
#ifdef MB_only_k
#define PLANTED (p.k == MB_only_k)
#else
#define PLANTED 1
#endif

MB_KERNEL(planted) {
  int j = GROUP_ID(0) * GROUP_SIZE(0) + LOCAL_ID(0), i = GROUP_ID(1), bi = GROUP_ID(2);
#ifdef MB_fault_hang
  /* Every thread waits for a workspace word that nothing writes (the workspace is zero
   * before a launch). volatile: the compiler may not hoist the load out of the loop. */
  volatile GLOBAL_PTR int* flag = (volatile GLOBAL_PTR int*)ws;
  if (PLANTED) while (flag[0] == 0) {}
#endif
  if (j >= p.n) return;
  float acc = 0.0f;
  for (int kk = 0; kk < p.k; ++kk) acc += LOAD(a, A_AT(bi, i, kk)) * LOAD(b, B_AT(bi, kk, j));
  MB_STORE_C(C_AT(bi, i, j), j, acc);
  /* Every other fault is one stray write by the thread of the last output element,
   * after its own correct store. */
  if (!PLANTED || j != p.n - 1 || i != p.m - 1 || bi != p.batch - 1) return;
#if defined(MB_fault_far)
  *((GLOBAL_PTR float*)c + 0x4000000000L) = 1.0f;
#elif defined(MB_fault_null)
  *((GLOBAL_PTR float*)0x10) = 1.0f;
#elif defined(MB_fault_past)
  for (int e = 1; e <= 8; ++e) STORE(c, C_AT(bi, i, j) + e, 0.0f);
#elif defined(MB_fault_before)
  STORE(c, -1, 0.0f);
#elif defined(MB_fault_intob)
  STORE((GLOBAL_PTR T*)b, 0, 7.0f);
#elif defined(MB_fault_wspast)
  ws[-1] = 1.0f;
#elif defined(MB_fault_dirty)
  ws[0] = 1.0f;
#elif defined(MB_fault_stray)
  /* 4096 elements on: past this slot's guard band, into another output slot or its band. */
  STORE(c, C_AT(bi, i, j) + 4096, 0.0f);
#endif
}
