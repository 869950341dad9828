// CUDA kernel of hssn::ftm_forward / hssn::ftm_backward, over the hierarchy's cached DFS pre-order tables
// (HierarchyTables.dfs). ftm_kernel runs one pixel per thread (consecutive threads read
// consecutive pixels of each channel row: coalesced) through kernels/common.h: ftm_walk, which keeps only a
// per-depth stack per thread: no shared-memory tile, so occupancy is set by registers alone at any C. The
// gradient is written once per element (the path's entries twice, by the same thread, in order); the loss
// is summed per block in a fixed tree (no float atomics). A label that is neither a leaf (any node with
// partial_labels) nor ignore_index gives that pixel a NaN loss and a zero gradient.
#include "dtypes.cuh"

namespace hssn {
namespace cuda {
namespace {

template <class scalar_t, class tgt_t>
__global__ void __launch_bounds__(kPixelThreads) ftm_kernel(FtmParams p) {
  __shared__ float buf[kPixelThreads];
  const int num_c = p.num_c;
  const int32_t *perm = p.dfs, *size = p.dfs + num_c, *node_depth = p.dfs + 2 * num_c, *pos = p.dfs + 3 * num_c;
  const scalar_t* z = static_cast<const scalar_t*>(p.z);
  const tgt_t* t = static_cast<const tgt_t*>(p.t);
  scalar_t* g = static_cast<scalar_t*>(p.g);
  const float nan = __int_as_float(0x7fc00000);
  float acc = 0.f;
  for (int64_t base = static_cast<int64_t>(blockIdx.x) * kPixelThreads; base < p.num_p;
       base += static_cast<int64_t>(gridDim.x) * kPixelThreads) {
    const int64_t pix = base + threadIdx.x;
    const bool in = pix < p.num_p;
    int y = -1;
    bool bad = false;
    const PixelPos q = p.zl.pos(in ? pix : 0);  // one decomposition for every layout (same pixel shape)
    if (in) {
      const int64_t yy = static_cast<int64_t>(t[p.tl.at(q)]);
      if (yy != p.ignore_index) {
        const bool leaf = yy >= 0 && yy < num_c && size[pos[yy]] == 1;
        if (yy >= 0 && yy < num_c && (leaf || p.partial_labels)) y = static_cast<int>(yy);
        else bad = true;
      }
    }
    float loss = 0.f;
    const int64_t go = (g && in) ? p.gl.at(q) : 0;
    if (y >= 0) {
      float scale = 1.f;
      if (p.grad_loss) scale = p.grad_loss[p.gll.at(q)];
      else if (p.count) scale = 1.f / static_cast<float>(*p.count > 1 ? *p.count : 1);
      const int64_t zo = p.zl.at(q);
      auto z_at = [&](int c) { return to_float(z[zo + c * p.zsc]); };
      auto store = [&](int c, float v) { g[go + c * p.gsc] = from_float<scalar_t>(v * scale); };
      loss = ftm_walk<float, kMaxDepth>(num_c, perm, size, node_depth, pos[y], p.ancestors + y * p.depth, p.depth,
                                        p.partial_labels, z_at, store, p.gamma, g != nullptr);
    } else if (g && in) {
      for (int c = 0; c < num_c; ++c) g[go + c * p.gsc] = from_float<scalar_t>(0.f);
    }
    if (bad) loss = nan;
    if (in && p.loss_pix) p.loss_pix[pix] = loss;
    acc += loss;
  }
  if (p.partial) {
    const float total = block_sum(acc, buf);
    if (threadIdx.x == 0) p.partial[blockIdx.x] = total;
  }
}

}  // namespace

int pixel_blocks(int64_t num_p) {
  const int64_t tiles = (num_p + kPixelThreads - 1) / kPixelThreads;
  return static_cast<int>(tiles < kMaxBlocks ? (tiles > 0 ? tiles : 1) : kMaxBlocks);
}

cudaError_t launch_ftm(const FtmParams& p, int blocks, cudaStream_t stream) {
  cudaError_t err = cudaSuccess;
  dispatch_dtype(p.dtype, [&](auto st) {
    using scalar_t = decltype(st);
    dispatch_target(p.ttype, [&](auto tt) {
      using tgt_t = decltype(tt);
      ftm_kernel<scalar_t, tgt_t><<<blocks, kPixelThreads, 0, stream>>>(p);
      err = cudaGetLastError();
    });
  });
  return err;
}

}  // namespace cuda
}  // namespace hssn
