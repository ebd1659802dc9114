/* mb_compare: whether two buffers hold the same bytes, compared on the device so
 * that checking a large input (the LM head's 272 MB) costs microseconds, not a copy
 * to the host. The runner uses it to prove that a kernel left its inputs, its
 * workspace and their guard bands untouched.
 *
 * a and b are read as 16-bit words (every buffer the runner compares holds whole
 * fp16 or fp32 elements); p.n is the number of words, p.m 1. Every thread that finds
 * a difference in its grid-stride share adds one to the int at ws[0], which the
 * caller zeroes first: zero afterwards means equal. Compiled with MB_F16 = 1; T is
 * only the ABI's pointer type here. */

MB_KERNEL(mb_compare) {
  GLOBAL_PTR const unsigned short* x = (GLOBAL_PTR const unsigned short*)a;
  GLOBAL_PTR const unsigned short* y = (GLOBAL_PTR const unsigned short*)b;
  const int stride = GROUP_SIZE(0) * NUM_GROUPS(0);
  int differs = 0;
  for (int i = GROUP_ID(0) * GROUP_SIZE(0) + LOCAL_ID(0); i < p.n; i += stride) differs |= x[i] != y[i];
  if (differs) ATOMIC_INC((GLOBAL_PTR int*)ws);
}
