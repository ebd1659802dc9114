/* mb_readbw: reads p.n FLOAT4s of `a` once, so that a timed batch of launches over a
 * buffer several times the last-level cache measures the device's sustained read
 * bandwidth, the roof of the roofline where no API gives the peak (metalbench's
 * roofline.py). Compiled as float32 (MB_DTYPE = 0): `a` holds floats; p.n counts FLOAT4s.
 *
 * Each thread strides over the buffer by the whole grid, so consecutive threads read
 * consecutive FLOAT4s (coalesced on a GPU, vectorised across work-items on a CPU). The
 * sum is stored only when it equals a value the zero-filled buffer can never give: the
 * compiler cannot drop the loads, and the kernel writes nothing, so every byte it moves
 * is a read. */

MB_KERNEL(mb_readbw) {
  const int stride = GROUP_SIZE(0) * NUM_GROUPS(0);
  FLOAT4 acc = MAKE_FLOAT4(0.0f, 0.0f, 0.0f, 0.0f);
  for (int i = GROUP_ID(0) * GROUP_SIZE(0) + LOCAL_ID(0); i < p.n; i += stride) {
    FLOAT4 v = LOAD4(a, 4 * i);
    acc.x += v.x;
    acc.y += v.y;
    acc.z += v.z;
    acc.w += v.w;
  }
  const float sum = acc.x + acc.y + acc.z + acc.w;
  if (sum == 1234.5f) ws[0] = sum;
}
