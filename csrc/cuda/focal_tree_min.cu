// CUDA kernel of hssn::ftm_forward / hssn::ftm_backward, over the hierarchy's cached DFS pre-order tables
// (HierarchyTables.dfs). ftm_kernel runs kFtmPixels pixels per thread, kPixelThreads apart (consecutive
// threads read consecutive pixels of each channel row: coalesced), through kernels/common.h: ftm_walk, whose
// table loads, loop control and stack indexing the thread's pixels share; only a per-depth stack per thread,
// no shared-memory tile, so occupancy is set by registers alone at any C. The gradient is written once per
// element (the path's entries twice, by the same thread, in order); the loss is summed per block in a fixed
// tree (no float atomics). Offsets into the logits and the gradient are idx_t: 32-bit when both tensors span
// fewer than 2^31 elements (FtmParams::offsets32; one add per pixel and channel), else 64-bit. A label that is neither a leaf (any node with partial_labels) nor ignore_index
// gives that pixel a NaN loss and a zero gradient; an ignored pixel a zero loss and gradient.
#include "dtypes.cuh"

namespace hssn {
namespace cuda {
namespace {

template <class scalar_t, int kGamma, class idx_t>
__global__ void __launch_bounds__(kPixelThreads) ftm_kernel(FtmParams p) {
  __shared__ float buf[kPixelThreads];
  const int num_c = p.num_c;
  const int32_t *perm = p.dfs, *size = p.dfs + num_c, *node_depth = p.dfs + 2 * num_c, *pos = p.dfs + 3 * num_c;
  const scalar_t* z = static_cast<const scalar_t*>(p.z);
  scalar_t* g = static_cast<scalar_t*>(p.g);
  const float nan = __int_as_float(0x7fc00000);
  const float mean_scale = p.count ? 1.f / static_cast<float>(*p.count > 1 ? *p.count : 1) : 1.f;
  constexpr int64_t kSpan = static_cast<int64_t>(kFtmPixels) * kPixelThreads;  // pixels per block and step
  float acc = 0.f;
  for (int64_t base = static_cast<int64_t>(blockIdx.x) * kSpan; base < p.num_p;
       base += static_cast<int64_t>(gridDim.x) * kSpan) {
    // pixel k of this thread: base + k * kPixelThreads + threadIdx.x (coalesced); one past the end reads
    // pixel 0 (no branch per load) and is neither stored nor summed
    int y_pos[kFtmPixels];
    const int32_t* anc[kFtmPixels];
    idx_t zo[kFtmPixels], go[kFtmPixels];
    float scale[kFtmPixels];
    bool in[kFtmPixels], bad[kFtmPixels];
#pragma unroll
    for (int k = 0; k < kFtmPixels; ++k) {
      const int64_t pix = base + k * kPixelThreads + threadIdx.x;
      in[k] = pix < p.num_p;
      const PixelPos q = p.zl.pos(in[k] ? pix : 0);  // one decomposition for every layout (same pixel shape)
      int y = -1;
      bad[k] = false;
      if (in[k]) {
        const int64_t yy = load_target(p.t, p.ttype, p.tl.at(q));
        if (yy != p.ignore_index) {
          const bool node = yy >= 0 && yy < num_c;
          if (node && (p.partial_labels || size[pos[yy]] == 1)) y = static_cast<int>(yy);
          else bad[k] = true;
        }
      }
      y_pos[k] = y >= 0 ? pos[y] : -1;
      anc[k] = p.ancestors + (y >= 0 ? y : 0) * p.depth;
      zo[k] = static_cast<idx_t>(p.zl.at(q));
      go[k] = static_cast<idx_t>(p.gl.at(q));
      scale[k] = y < 0 ? 0.f : p.grad_loss ? p.grad_loss[p.gll.at(q)] : mean_scale;
    }
    auto z_at = [&](int c, int k) { return to_float(z[zo[k] + static_cast<idx_t>(c) * static_cast<idx_t>(p.zsc)]); };
    auto store = [&](int c, int k, float v) {
      if (in[k]) g[go[k] + static_cast<idx_t>(c) * static_cast<idx_t>(p.gsc)] = from_float<scalar_t>(y_pos[k] >= 0 ? v * scale[k] : 0.f);
    };
    float loss[kFtmPixels];
    ftm_walk<float, kMaxDepth, kFtmPixels, kGamma>(num_c, perm, size, node_depth, y_pos, anc, p.depth,
                                                   p.partial_labels, z_at, store, p.gamma, g != nullptr, loss);
#pragma unroll
    for (int k = 0; k < kFtmPixels; ++k) {
      const float l = bad[k] ? nan : y_pos[k] >= 0 ? loss[k] : 0.f;
      if (in[k] && p.loss_pix) p.loss_pix[base + k * kPixelThreads + threadIdx.x] = l;
      acc += in[k] ? l : 0.f;
    }
  }
  if (p.partial) {
    const float total = block_sum(acc, buf);
    if (threadIdx.x == 0) p.partial[blockIdx.x] = total;
  }
}

}  // namespace

int pixel_blocks(int64_t num_p, int pixels_per_thread) {
  const int64_t span = static_cast<int64_t>(kPixelThreads) * pixels_per_thread;
  const int64_t tiles = (num_p + span - 1) / span;
  return static_cast<int>(tiles < kMaxBlocks ? (tiles > 0 ? tiles : 1) : kMaxBlocks);
}

cudaError_t launch_ftm(const FtmParams& p, int blocks, cudaStream_t stream) {
  cudaError_t err = cudaSuccess;
  dispatch_dtype(p.dtype, [&](auto st) {
    using scalar_t = decltype(st);
    auto launch = [&](auto idx) {
      using idx_t = decltype(idx);
      switch (ftm_gamma_kind(p.gamma)) {
        case 2: ftm_kernel<scalar_t, 2, idx_t><<<blocks, kPixelThreads, 0, stream>>>(p); break;
        case 0: ftm_kernel<scalar_t, 0, idx_t><<<blocks, kPixelThreads, 0, stream>>>(p); break;
        default: ftm_kernel<scalar_t, 1, idx_t><<<blocks, kPixelThreads, 0, stream>>>(p); break;
      }
    };
    if (p.offsets32) launch(int32_t{});
    else launch(int64_t{});
    err = cudaGetLastError();
  });
  return err;
}

}  // namespace cuda
}  // namespace hssn
