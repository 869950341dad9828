// CUDA kernel of hssn::path_argmax: kArgmaxPixels pixels per thread, kPixelThreads apart (consecutive threads
// read consecutive pixels of each channel row: coalesced), through kernels/common.h: path_walk over the
// hierarchy's cached DFS tables (HierarchyTables.dfs), whose table loads, loop control and stack indexing
// the thread's pixels share; no shared-memory tile, so occupancy is set by registers at any C. Offsets into
// the logits are idx_t: 32-bit when the tensor spans fewer than 2^31 elements (PathParams::offsets32).
#include "dtypes.cuh"

namespace hssn {
namespace cuda {
namespace {

template <class scalar_t, class idx_t>
__global__ void __launch_bounds__(kPixelThreads) path_argmax_kernel(PathParams p) {
  const int num_c = p.num_c;
  const int32_t *perm = p.dfs, *size = p.dfs + num_c, *node_depth = p.dfs + 2 * num_c;
  const scalar_t* z = static_cast<const scalar_t*>(p.z);
  constexpr int64_t kSpan = static_cast<int64_t>(kArgmaxPixels) * kPixelThreads;  // pixels per block and step
  for (int64_t base = static_cast<int64_t>(blockIdx.x) * kSpan; base < p.num_p;
       base += static_cast<int64_t>(gridDim.x) * kSpan) {
    // pixel k of this thread: base + k * kPixelThreads + threadIdx.x (coalesced); one past the end reads
    // pixel 0 (no branch per load) and is not stored
    idx_t zo[kArgmaxPixels];
#pragma unroll
    for (int k = 0; k < kArgmaxPixels; ++k) {
      const int64_t pix = base + k * kPixelThreads + threadIdx.x;
      zo[k] = static_cast<idx_t>(p.zl.offset(pix < p.num_p ? pix : 0));
    }
    auto z_at = [&](int c, int k) { return to_float(z[zo[k] + static_cast<idx_t>(c) * static_cast<idx_t>(p.zsc)]); };
    int leaf[kArgmaxPixels];
    path_walk<float, kMaxDepth, kArgmaxPixels>(num_c, perm, size, node_depth, z_at, leaf);
#pragma unroll
    for (int k = 0; k < kArgmaxPixels; ++k) {
      const int64_t pix = base + k * kPixelThreads + threadIdx.x;
      if (pix < p.num_p) p.leaf_map[pix] = leaf[k];
    }
  }
}

}  // namespace

cudaError_t launch_path_argmax(const PathParams& p, int blocks, cudaStream_t stream) {
  cudaError_t err = cudaSuccess;
  dispatch_dtype(p.dtype, [&](auto st) {
    using scalar_t = decltype(st);
    if (p.offsets32) path_argmax_kernel<scalar_t, int32_t><<<blocks, kPixelThreads, 0, stream>>>(p);
    else path_argmax_kernel<scalar_t, int64_t><<<blocks, kPixelThreads, 0, stream>>>(p);
    err = cudaGetLastError();
  });
  return err;
}

}  // namespace cuda
}  // namespace hssn
