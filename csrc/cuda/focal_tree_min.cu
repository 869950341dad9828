// CUDA kernel of hssn::ftm_forward / hssn::ftm_backward. One thread per pixel, a block of P pixels
// stages its [C][P] tile of logits in shared memory (coalesced: consecutive threads read consecutive
// pixels of one channel), the parent / bottom-up tables sit in shared memory, and each thread runs the
// O(C) tree passes of kernels/common.h (ftm_pixel) over its own column. The gradient is formed in the
// tile and written once per element; the loss is summed per block in a fixed tree (no float atomics).
// A label that is neither a leaf (any node with partial_labels) nor ignore_index gives that pixel a NaN
// loss and a zero gradient.
#include "dtypes.cuh"

namespace hssn {
namespace cuda {
namespace {

template <class scalar_t, class tgt_t>
__global__ void ftm_kernel(FtmParams p) {
  extern __shared__ __align__(16) unsigned char smem[];
  const int num_c = p.num_c;
  const int nt = blockDim.x;
  const int tid = threadIdx.x;
  int32_t* s_parent = reinterpret_cast<int32_t*>(smem);
  int32_t* s_bu = s_parent + num_c;
  unsigned char* s_leaf = reinterpret_cast<unsigned char*>(s_bu + num_c);
  unsigned char* tile = smem + align16(static_cast<size_t>(num_c) * 9);
  if (p.scratch) tile = p.scratch + static_cast<size_t>(blockIdx.x) * num_c * nt * 6;
  float* v = reinterpret_cast<float*>(tile);
  int16_t* w = reinterpret_cast<int16_t*>(v + static_cast<size_t>(num_c) * nt);

  for (int i = tid; i < num_c; i += nt) {
    s_parent[i] = p.parent[i];
    s_bu[i] = p.bottom_up[i];
    s_leaf[i] = 1;
  }
  __syncthreads();
  for (int i = tid; i < num_c; i += nt)
    if (s_parent[i] >= 0) s_leaf[s_parent[i]] = 0;
  __syncthreads();

  const scalar_t* z = static_cast<const scalar_t*>(p.z);
  const tgt_t* t = static_cast<const tgt_t*>(p.t);
  scalar_t* g = static_cast<scalar_t*>(p.g);
  const float nan = __int_as_float(0x7fc00000);
  float acc = 0.f;
  for (int64_t base = static_cast<int64_t>(blockIdx.x) * nt; base < p.num_p; base += static_cast<int64_t>(gridDim.x) * nt) {
    const int64_t pix = base + tid;
    const bool in = pix < p.num_p;
    int y = -1;
    bool bad = false;
    if (in) {
      const int64_t yy = static_cast<int64_t>(t[p.tl.offset(pix)]);
      if (yy != p.ignore_index) {
        if (yy >= 0 && yy < num_c && (s_leaf[yy] || p.partial_labels)) y = static_cast<int>(yy);
        else bad = true;
      }
    }
    const int64_t zo = y >= 0 ? p.zl.offset(pix) : 0;
    float loss = 0.f;
    if (y >= 0) {
      bool has_nan = false;
      for (int c = 0; c < num_c; ++c) {
        const float x = to_float(z[zo + c * p.zsc]);
        v[c * nt + tid] = x;
        w[c * nt + tid] = static_cast<int16_t>(c);
        has_nan |= x != x;
      }
      auto z_at = [&](int c) { return to_float(z[zo + c * p.zsc]); };
      loss = ftm_pixel<float, int16_t>(v + tid, w + tid, nt, num_c, s_parent, s_bu, p.ancestors + y * p.depth,
                                       p.depth, z_at, p.gamma, g != nullptr, p.partial_labels ? y : -1);
      if (has_nan) loss = nan;
    }
    if (bad) loss = nan;
    if (in && p.loss_pix) p.loss_pix[pix] = loss;
    acc += loss;
    if (g && in) {
      float scale = 1.f;
      if (p.grad_loss) scale = p.grad_loss[p.gll.offset(pix)];
      else if (p.count) scale = 1.f / static_cast<float>(*p.count > 1 ? *p.count : 1);
      const int64_t go = p.gl.offset(pix);
      for (int c = 0; c < num_c; ++c)
        g[go + c * p.gsc] = from_float<scalar_t>(y >= 0 ? v[c * nt + tid] * scale : 0.f);
    }
  }
  if (p.partial) {
    __syncthreads();
    const float total = block_sum(acc, v);
    if (tid == 0) p.partial[blockIdx.x] = total;
  }
}

}  // namespace

TileConfig ftm_config(int num_c, int64_t num_p) {
  const size_t fixed = align16(static_cast<size_t>(num_c) * 9);
  const size_t per_thread = static_cast<size_t>(num_c) * 6;
  return make_tile_config(fixed, per_thread, num_p);
}

cudaError_t launch_ftm(const FtmParams& p, const TileConfig& cfg, cudaStream_t stream) {
  cudaError_t err = cudaSuccess;
  dispatch_dtype(p.dtype, [&](auto st) {
    using scalar_t = decltype(st);
    dispatch_target(p.ttype, [&](auto tt) {
      using tgt_t = decltype(tt);
      auto kernel = ftm_kernel<scalar_t, tgt_t>;
      err = cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(cfg.smem));
      if (err != cudaSuccess) return;
      kernel<<<cfg.blocks, cfg.threads, cfg.smem, stream>>>(p);
      err = cudaGetLastError();
    });
  });
  return err;
}

}  // namespace cuda
}  // namespace hssn
