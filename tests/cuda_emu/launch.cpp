/* The launch of tests/cuda_emu: appended to prelude.h, common.h and a kernel body, with
 * EMU_ENTRY defined as the kernel's name. Reads one launch from argv[1]:
 *   MBParams, int groups[3], int threads[3], int cluster[3] (the cluster's dims),
 *   int64 elements of a, b, c, bias, floats of ws, then a, b, c, bias as float16 bits;
 * runs it a cluster at a time (one std::thread per CUDA thread) and writes C's bits to
 * argv[2]. Exits 3 if the kernel left the workspace other than zero. */
#include <thread>

int main(int argc, char** argv) {
  if (argc != 3) return 2;
  FILE* in = std::fopen(argv[1], "rb");
  if (!in) return 2;
  MBParams p;
  int groups[3], threads[3], cdim[3];
  int64_t count[5];
  bool ok = std::fread(&p, sizeof p, 1, in) == 1 && std::fread(groups, 4, 3, in) == 3 &&
            std::fread(threads, 4, 3, in) == 3 && std::fread(cdim, 4, 3, in) == 3 && std::fread(count, 8, 5, in) == 5;
  std::vector<uint16_t> a(count[0]), b(count[1]), c(count[2]), bias(count[3]);
  std::vector<float> ws(count[4], 0.0f);
  for (auto* v : {&a, &b, &c, &bias}) ok = ok && std::fread(v->data(), 2, v->size(), in) == v->size();
  std::fclose(in);
  if (!ok || threads[1] != 1 || threads[2] != 1 || threads[0] % 32 || groups[0] % cdim[0] || groups[1] % cdim[1] ||
      groups[2] % cdim[2])
    return 2;
  const int cl = cdim[0] * cdim[1] * cdim[2];
  emu_buffers = {{(const char*)a.data(), a.size() * 2}, {(const char*)b.data(), b.size() * 2},
                 {(const char*)c.data(), c.size() * 2}, {(const char*)bias.data(), bias.size() * 2},
                 {(const char*)ws.data(), ws.size() * 4}};
  const int nt = threads[0];
  for (int z0 = 0; z0 < groups[2]; z0 += cdim[2])
    for (int y0 = 0; y0 < groups[1]; y0 += cdim[1])
      for (int x0 = 0; x0 < groups[0]; x0 += cdim[0]) {
        EmuCluster cluster;
        cluster.blocks = cl;
        cluster.threads = nt;
        cluster.shared.assign(cl, std::vector<char>(EMU_SHARED, (char)0xff)); /* NaN until written */
        for (int r = 0; r < cl; ++r) cluster.block_sync.push_back(new std::barrier<>(nt));
        cluster.cluster_sync = new std::barrier<>(nt * cl);
        cluster.warps.resize(cl * (nt / 32));
        for (EmuWarp& w : cluster.warps) w.sync = new std::barrier<>(32);
        std::vector<std::thread> running;
        for (int r = 0; r < cl; ++r)
          for (int t = 0; t < nt; ++t)
            running.emplace_back([&, r, t] {
              /* rank r is block (x, y, z) of the cluster with r = x + cx (y + cy z), as %cluster_ctarank */
              const int bx = r % cdim[0], by = r / cdim[0] % cdim[1], bz = r / (cdim[0] * cdim[1]);
              emu_self = EmuThread{{t, 0, 0}, {x0 + bx, y0 + by, z0 + bz}, {nt, 1, 1},
                                   {groups[0], groups[1], groups[2]}, r, 0, &cluster};
              EMU_ENTRY((const T*)a.data(), (const T*)b.data(), (T*)c.data(), (const T*)bias.data(), ws.data(), p);
            });
        for (std::thread& th : running) th.join();
        for (auto* s : cluster.block_sync) delete s;
        delete cluster.cluster_sync;
        for (EmuWarp& w : cluster.warps) delete w.sync;
      }
  FILE* out = std::fopen(argv[2], "wb");
  if (!out || std::fwrite(c.data(), 2, c.size(), out) != c.size()) return 2;
  std::fclose(out);
  for (float w : ws)
    if (w != 0.0f) return 3;
  return 0;
}
