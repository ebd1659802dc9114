/* mb_compare: whether two buffers hold the same bytes, compared on the device so
 * that checking a large input (the LM head's 272 MB) costs a read of both, not a copy
 * to the host. The runner uses it to prove that a kernel left its inputs, its
 * workspace and their guard bands untouched.
 *
 * p.n is the buffers' length in 16-bit words (every buffer the runner compares holds
 * whole fp16 or fp32 elements), p.m 1; both start 16-byte aligned (allocations and
 * views at the device's view alignment). The words are read 8 at a time as uint4s,
 * each thread striding by the whole grid so that neighbouring threads read
 * neighbouring vectors (coalesced on a GPU, vectorised across work-items on a CPU,
 * where the 16-bit loads this kernel used to make ran at a sixth of the bandwidth);
 * the first thread compares the last n % 8 words. Every thread that finds a
 * difference adds one to the int at ws[0], which the caller zeroes first: zero
 * afterwards means equal. Compiled as float16 (MB_DTYPE = 1); T is only the ABI's pointer type. */

MB_KERNEL(mb_compare) {
  GLOBAL_PTR const uint4* xv = (GLOBAL_PTR const uint4*)a;
  GLOBAL_PTR const uint4* yv = (GLOBAL_PTR const uint4*)b;
  const int stride = GROUP_SIZE(0) * NUM_GROUPS(0);
  const int id = GROUP_ID(0) * GROUP_SIZE(0) + LOCAL_ID(0);
  const int vectors = p.n / 8;
  int differs = 0;
  for (int i = id; i < vectors; i += stride) {
    uint4 u = xv[i], v = yv[i];
    differs |= (u.x != v.x) | (u.y != v.y) | (u.z != v.z) | (u.w != v.w);
  }
  if (id == 0) {
    GLOBAL_PTR const unsigned short* x = (GLOBAL_PTR const unsigned short*)a;
    GLOBAL_PTR const unsigned short* y = (GLOBAL_PTR const unsigned short*)b;
    for (int i = 8 * vectors; i < p.n; ++i) differs |= x[i] != y[i];
  }
  if (differs) ATOMIC_INC((GLOBAL_PTR int*)ws);
}
