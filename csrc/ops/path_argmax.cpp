// hssn::path_argmax: the schema, the argument checks, the CPU kernel and its registration, and in CUDA builds
// the ATen glue around the launcher of cuda/path_argmax.cu.
// The CPU kernel itself: cpu/tile_kernels.h (one build per instruction set, picked by cpu_kernels()).
#include <ATen/ops/empty.h>
#include <torch/library.h>

#include "../ops_common.h"
#include "../cpu/cpu_kernels.h"

namespace hssn {
namespace {

// hssn::path_argmax.
void check_path_argmax_args(const at::Tensor& logits, const at::Tensor& dfs, const char* op) {
  check_scores(logits, op, "logits");
  const int64_t num_c = logits.size(1);
  TORCH_CHECK(num_c >= 1 && num_c <= kMaxChannels, op, ": logits have ", num_c, " channels; supported: 1 to ",
              kMaxChannels);
  check_table(dfs, logits, op, "dfs", {4, num_c});
}

at::Tensor path_argmax_cpu(const at::Tensor& logits, const at::Tensor& dfs) {
  const char* op = "hssn::path_argmax";
  check_path_argmax_args(logits, dfs, op);
  const int64_t num_c = logits.size(1);
  TORCH_CHECK(logits.device().is_cpu(), op, ": the CPU kernel got ", logits.device(), " tensors");
  const int64_t num_p = logits.numel() / num_c;
  at::Tensor leaf_map = at::empty(pixel_shape(logits), logits.options().dtype(at::kLong));
  PathLaunch l{};
  l.dtype = logits.scalar_type();
  l.z = logits.data_ptr(); l.zl = pixel_layout(logits, true); l.zsc = logits.stride(1);
  l.out = leaf_map.data_ptr<int64_t>();
  l.num_p = num_p; l.num_c = static_cast<int>(num_c);
  l.dfs = dfs.data_ptr<int32_t>();
  if (num_p > 0) cpu_kernels().path_argmax(l);
  return leaf_map;
}

#ifdef HSSN_WITH_CUDA
at::Tensor path_argmax_cuda(const at::Tensor& logits, const at::Tensor& dfs) {
  const char* op = "hssn::path_argmax";
  check_path_argmax_args(logits, dfs, op);
  check_on_cuda(logits, op);
  const int64_t num_c = logits.size(1);
  const c10::cuda::CUDAGuard guard(logits.device());
  const int64_t num_p = logits.numel() / num_c;
  at::Tensor leaf_map = at::empty(pixel_shape(logits), logits.options().dtype(at::kLong));
  cuda::PathParams p{};
  p.z = logits.data_ptr(); p.zl = pixel_layout(logits, true); p.zsc = logits.stride(1);
  p.dtype = cuda_dtype(logits, op, "logits");
  p.leaf_map = leaf_map.data_ptr<int64_t>();
  p.num_c = static_cast<int>(num_c);
  p.num_p = num_p;
  p.dfs = dfs.data_ptr<int32_t>();
  p.offsets32 = offsets_fit_int32(logits);
  const int blocks = cuda::pixel_blocks(num_p, cuda::kArgmaxPixels);
  if (num_p > 0) check_cuda(cuda::launch_path_argmax(p, blocks, c10::cuda::getCurrentCUDAStream()), op);
  return leaf_map;
}
#endif  // HSSN_WITH_CUDA

}  // namespace

TORCH_LIBRARY_FRAGMENT(hssn, m) {
  m.def("path_argmax(Tensor logits, Tensor dfs) -> Tensor leaf_map");
}

TORCH_LIBRARY_IMPL(hssn, CPU, m) {
  m.impl("path_argmax", &path_argmax_cpu);
}

#ifdef HSSN_WITH_CUDA
TORCH_LIBRARY_IMPL(hssn, CUDA, m) {
  m.impl("path_argmax", &path_argmax_cuda);
}
#endif

}  // namespace hssn
