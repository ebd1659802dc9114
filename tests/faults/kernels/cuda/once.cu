/* A planted fault (../../README.md), native CUDA: correct on its first launch, then
 * skipping its work. A __device__ global is program-scope state that survives from
 * launch to launch of the module: blocks count themselves done after their stores
 * (behind a barrier, so that no thread of the first launch can see the count
 * complete), and every later launch sees it complete and returns at once. The
 * portable dialect has no program-scope state, so this fault is CUDA's alone. */
__device__ unsigned int mb_blocks_done;

MB_KERNEL(once) {
  int j = GROUP_ID(0) * GROUP_SIZE(0) + LOCAL_ID(0), i = GROUP_ID(1), bi = GROUP_ID(2);
  if (*(volatile unsigned int*)&mb_blocks_done >= gridDim.x * gridDim.y * gridDim.z) return;
  if (j < p.n) {
    float acc = 0.0f;
    for (int kk = 0; kk < p.k; ++kk) acc += LOAD(a, A_AT(bi, i, kk)) * LOAD(b, B_AT(bi, kk, j));
    MB_STORE_C(C_AT(bi, i, j), j, acc);
  }
  __syncthreads();
  if (threadIdx.x == 0) atomicAdd(&mb_blocks_done, 1u);
}
