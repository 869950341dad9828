// CUDA kernel of hssn::path_argmax: one pixel per thread (consecutive threads read consecutive pixels of
// each channel row: coalesced) through kernels/common.h: path_walk over the hierarchy's cached DFS tables
// (HierarchyTables.dfs); no shared-memory tile, so occupancy is set by registers at any C.
#include "dtypes.cuh"

namespace hssn {
namespace cuda {
namespace {

template <class scalar_t>
__global__ void __launch_bounds__(kPixelThreads) path_argmax_kernel(PathParams p) {
  const int num_c = p.num_c;
  const int32_t *perm = p.dfs, *size = p.dfs + num_c, *node_depth = p.dfs + 2 * num_c;
  const scalar_t* z = static_cast<const scalar_t*>(p.z);
  for (int64_t pix = static_cast<int64_t>(blockIdx.x) * kPixelThreads + threadIdx.x; pix < p.num_p;
       pix += static_cast<int64_t>(gridDim.x) * kPixelThreads) {
    const int64_t zo = p.zl.offset(pix);
    auto z_at = [&](int c) { return to_float(z[zo + c * p.zsc]); };
    p.leaf_map[pix] = path_walk<float, kMaxDepth>(num_c, perm, size, node_depth, z_at);
  }
}

}  // namespace

cudaError_t launch_path_argmax(const PathParams& p, int blocks, cudaStream_t stream) {
  cudaError_t err = cudaSuccess;
  dispatch_dtype(p.dtype, [&](auto st) {
    using scalar_t = decltype(st);
    path_argmax_kernel<scalar_t><<<blocks, kPixelThreads, 0, stream>>>(p);
    err = cudaGetLastError();
  });
  return err;
}

}  // namespace cuda
}  // namespace hssn
