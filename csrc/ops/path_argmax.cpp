// hssn::path_argmax: the schema, the argument checks, the CPU kernel and its registration, and in CUDA builds
// the ATen glue around the launcher of cuda/path_argmax.cu.
// CPU kernel: tiles of kTile pixels as [C][kTile] columns of sigmoid scores,
// root-path sums top-down, argmax over the leaves (lowest channel on ties).
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <ATen/ops/empty.h>
#include <torch/library.h>

#include <vector>

#include "../ops_common.h"

namespace hssn {
namespace {

// hssn::path_argmax.
void check_path_argmax_args(const at::Tensor& logits, const at::Tensor& parent, const at::Tensor& bottom_up,
                            const at::Tensor& leaves, const char* op) {
  check_scores(logits, op, "logits");
  const int64_t num_c = logits.size(1);
  TORCH_CHECK(num_c >= 1 && num_c <= kMaxChannels, op, ": logits have ", num_c, " channels; supported: 1 to ",
              kMaxChannels);
  check_table(parent, logits, op, "parent", {num_c});
  check_table(bottom_up, logits, op, "bottom_up", {num_c});
  check_table(leaves, logits, op, "leaves", {-1});
  TORCH_CHECK(leaves.numel() >= 1 && leaves.numel() <= num_c, op, ": bad leaves table of ", leaves.numel(), " entries");
}

constexpr int64_t kTile = 32;

at::Tensor path_argmax_cpu(const at::Tensor& logits, const at::Tensor& parent, const at::Tensor& bottom_up,
                           const at::Tensor& leaves) {
  const char* op = "hssn::path_argmax";
  check_path_argmax_args(logits, parent, bottom_up, leaves, op);
  const int64_t num_c = logits.size(1);
  TORCH_CHECK(logits.device().is_cpu(), op, ": the CPU kernel got ", logits.device(), " tensors");
  const int64_t num_p = logits.numel() / num_c;
  at::Tensor leaf_map = at::empty(pixel_shape(logits), logits.options().dtype(at::kLong));
  const int32_t* par = parent.data_ptr<int32_t>();
  const int32_t* bu = bottom_up.data_ptr<int32_t>();
  const int32_t* lv = leaves.data_ptr<int32_t>();
  const int num_leaves = static_cast<int>(leaves.numel());
  int64_t* out = leaf_map.data_ptr<int64_t>();
  const PixelLayout zl = pixel_layout(logits, true);
  const int64_t zsc = logits.stride(1);

  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, logits.scalar_type(), "hssn_path_argmax_cpu", [&] {
    using acc_t = std::conditional_t<std::is_same_v<scalar_t, double>, double, float>;
    const scalar_t* z = logits.data_ptr<scalar_t>();
    const int64_t tiles = (num_p + kTile - 1) / kTile;
    at::parallel_for(0, tiles, 16, [&](int64_t tb, int64_t te) {
      std::vector<acc_t> v(static_cast<size_t>(num_c) * kTile);
      int64_t zoff[kTile];
      for (int64_t tile = tb; tile < te; ++tile) {
        const int64_t p0 = tile * kTile;
        const int64_t n = std::min<int64_t>(kTile, num_p - p0);
        for (int64_t i = 0; i < n; ++i) zoff[i] = zl.offset(p0 + i);
        for (int64_t c = 0; c < num_c; ++c)
          for (int64_t i = 0; i < n; ++i) {
            const acc_t x = static_cast<acc_t>(z[zoff[i] + c * zsc]);
            v[c * kTile + i] = x != x ? acc_t(0) : acc_t(1) / (acc_t(1) + fexp(-x));  // NaN scores 0
          }
        for (int64_t i = 0; i < n; ++i) {
          out[p0 + i] = path_argmax_pixel<acc_t>(v.data() + i, kTile, static_cast<int>(num_c), par, bu, lv, num_leaves);
        }
      }
    });
  });
  return leaf_map;
}

#ifdef HSSN_WITH_CUDA
at::Tensor path_argmax_cuda(const at::Tensor& logits, const at::Tensor& parent, const at::Tensor& bottom_up,
                            const at::Tensor& leaves) {
  const char* op = "hssn::path_argmax";
  check_path_argmax_args(logits, parent, bottom_up, leaves, op);
  check_on_cuda(logits, op);
  const int64_t num_c = logits.size(1);
  const c10::cuda::CUDAGuard guard(logits.device());
  const int64_t num_p = logits.numel() / num_c;
  at::Tensor leaf_map = at::empty(pixel_shape(logits), logits.options().dtype(at::kLong));
  at::Tensor dfs = at::empty({6 * num_c}, logits.options().dtype(at::kInt));
  cuda::PathParams p{};
  p.z = logits.data_ptr(); p.zl = pixel_layout(logits, true); p.zsc = logits.stride(1);
  p.dtype = cuda_dtype(logits, op, "logits");
  p.parent = parent.data_ptr<int32_t>(); p.bottom_up = bottom_up.data_ptr<int32_t>();
  p.leaf_map = leaf_map.data_ptr<int64_t>();
  p.num_c = static_cast<int>(num_c);
  p.num_p = num_p;
  p.dfs = dfs.data_ptr<int32_t>();
  if (num_p > 0) check_cuda(cuda::launch_path_argmax(p, cuda::pixel_blocks(num_p), c10::cuda::getCurrentCUDAStream()), op);
  return leaf_map;
}
#endif  // HSSN_WITH_CUDA

}  // namespace

TORCH_LIBRARY_FRAGMENT(hssn, m) {
  m.def("path_argmax(Tensor logits, Tensor parent, Tensor bottom_up, Tensor leaves) -> Tensor leaf_map");
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
