// CUDA kernel of hssn::path_argmax: one thread per pixel, the block's [C][P] tile of sigmoid scores in
// shared memory (coalesced channel-by-channel loads), root-path sums top-down over the thread's column,
// argmax over the leaves (lowest channel on ties).
#include "dtypes.cuh"

namespace hssn {
namespace cuda {
namespace {

template <class scalar_t>
__global__ void path_argmax_kernel(PathParams p) {
  extern __shared__ __align__(16) unsigned char smem[];
  const int num_c = p.num_c;
  const int nt = blockDim.x;
  const int tid = threadIdx.x;
  int32_t* s_parent = reinterpret_cast<int32_t*>(smem);
  int32_t* s_bu = s_parent + num_c;
  int32_t* s_leaves = s_bu + num_c;
  float* v = reinterpret_cast<float*>(smem + align16(sizeof(int32_t) * (2 * num_c + p.num_leaves)));
  if (p.scratch) v = p.scratch + static_cast<size_t>(blockIdx.x) * num_c * nt;
  for (int i = tid; i < num_c; i += nt) {
    s_parent[i] = p.parent[i];
    s_bu[i] = p.bottom_up[i];
  }
  for (int i = tid; i < p.num_leaves; i += nt) s_leaves[i] = p.leaves[i];
  __syncthreads();
  const scalar_t* z = static_cast<const scalar_t*>(p.z);
  for (int64_t base = static_cast<int64_t>(blockIdx.x) * nt; base < p.num_p; base += static_cast<int64_t>(gridDim.x) * nt) {
    const int64_t pix = base + tid;
    if (pix >= p.num_p) continue;
    const int64_t zo = p.zl.offset(pix);
    for (int c = 0; c < num_c; ++c) {
      const float x = to_float(z[zo + c * p.zsc]);
      v[c * nt + tid] = x != x ? 0.f : 1.f / (1.f + expf(-x));  // a NaN logit scores 0 (as -inf)
    }
    p.leaf_map[pix] = path_argmax_pixel<float>(v + tid, nt, num_c, s_parent, s_bu, s_leaves, p.num_leaves);
  }
}

}  // namespace

TileConfig path_config(int num_c, int num_leaves, int64_t num_p) {
  const size_t fixed = align16(sizeof(int32_t) * (2 * static_cast<size_t>(num_c) + num_leaves));
  const size_t per_thread = static_cast<size_t>(num_c) * sizeof(float);
  return make_tile_config(fixed, per_thread, num_p);
}

cudaError_t launch_path_argmax(const PathParams& p, const TileConfig& cfg, cudaStream_t stream) {
  cudaError_t err = cudaSuccess;
  dispatch_dtype(p.dtype, [&](auto st) {
    using scalar_t = decltype(st);
    auto kernel = path_argmax_kernel<scalar_t>;
    err = cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(cfg.smem));
    if (err != cudaSuccess) return;
    kernel<<<cfg.blocks, cfg.threads, cfg.smem, stream>>>(p);
    err = cudaGetLastError();
  });
  return err;
}

}  // namespace cuda
}  // namespace hssn
