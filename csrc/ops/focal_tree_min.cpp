// hssn::ftm_forward / hssn::ftm_backward: the schemas, the argument checks, the CPU kernels and their
// registration, and in CUDA builds the ATen glue around the launchers of cuda/focal_tree_min.cu.
// The CPU kernel itself: cpu/tile_kernels.h (one build per instruction set, picked by cpu_kernels()).
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/zeros.h>
#include <torch/library.h>
#ifdef HSSN_WITH_CUDA
#include <ATen/ops/clamp_min.h>
#include <ATen/ops/div.h>
#include <ATen/ops/ne.h>
#include <ATen/ops/sum.h>
#endif

#include <limits>
#include <vector>

#include "../ops_common.h"
#include "../cpu/cpu_kernels.h"

namespace hssn {
namespace {

// The focal tree-min tables: parent (C,), bottom_up (C,), ancestors (C, D), dfs (4, C) int32.
int check_ftm_tables(const at::Tensor& logits, const at::Tensor& parent, const at::Tensor& bottom_up,
                     const at::Tensor& ancestors, const at::Tensor& dfs, const char* op) {
  const int64_t c = logits.size(1);
  TORCH_CHECK(c >= 1 && c <= kMaxChannels, op, ": logits have ", c, " channels; supported: 1 to ", kMaxChannels);
  check_table(parent, logits, op, "parent", {c});
  check_table(bottom_up, logits, op, "bottom_up", {c});
  check_table(ancestors, logits, op, "ancestors", {c, -1});
  check_table(dfs, logits, op, "dfs", {4, c});
  TORCH_CHECK(ancestors.size(1) >= 1 && ancestors.size(1) <= kMaxDepth, op, ": ancestors table depth ",
              ancestors.size(1), " outside [1, ", kMaxDepth, "]");
  return static_cast<int>(ancestors.size(1));
}

void check_reduction(int64_t reduction, const char* op) {
  TORCH_CHECK(reduction >= 0 && reduction <= 2, op, ": reduction must be 0 (none), 1 (sum) or 2 (mean), got ",
              reduction);
}

void check_grad_loss(const at::Tensor& grad_loss, const at::Tensor& logits, const char* op) {
  TORCH_CHECK(grad_loss.scalar_type() == loss_dtype(logits), op, ": grad_loss must be ", loss_dtype(logits),
              " for ", logits.scalar_type(), " logits, got ", grad_loss.scalar_type());
  TORCH_CHECK(grad_loss.device() == logits.device(), op, ": grad_loss is on ", grad_loss.device(), " but logits are on ",
              logits.device());
  TORCH_CHECK(grad_loss.sizes() == at::IntArrayRef(pixel_shape(logits)), op, ": grad_loss shape ", grad_loss.sizes(),
              " does not match the pixel shape of logits ", logits.sizes());
}

// hssn::ftm_forward / ftm_backward: returns the tree depth (the ancestors table's width).
int check_ftm_args(const at::Tensor& logits, const at::Tensor& target, const at::Tensor& parent,
                   const at::Tensor& bottom_up, const at::Tensor& ancestors, const at::Tensor& dfs, double gamma,
                   int64_t reduction, const at::Tensor* grad_loss, const char* op) {
  check_scores(logits, op, "logits");
  check_target(target, logits, op, "logits");
  const int depth = check_ftm_tables(logits, parent, bottom_up, ancestors, dfs, op);
  check_reduction(reduction, op);
  TORCH_CHECK(gamma >= 0 && std::isfinite(gamma), op, ": gamma must be a finite number >= 0, got ", gamma);
  if (grad_loss) check_grad_loss(*grad_loss, logits, op);
  return depth;
}

// Shared driver of the forward (grad_loss undefined) and the backward (grad_loss defined, reduction none).
std::tuple<at::Tensor, at::Tensor> ftm_cpu(const at::Tensor& logits, const at::Tensor& target, const at::Tensor& parent,
                                           const at::Tensor& bottom_up, const at::Tensor& ancestors,
                                           const at::Tensor& dfs, double gamma, int64_t ignore_index,
                                           int64_t reduction, bool compute_grad, bool partial,
                                           const at::Tensor* grad_loss, const char* op) {
  const int depth = check_ftm_args(logits, target, parent, bottom_up, ancestors, dfs, gamma, reduction, grad_loss,
                                   op);
  TORCH_CHECK(logits.device().is_cpu(), op, ": the CPU kernel got ", logits.device(), " tensors");

  const int num_c = static_cast<int>(logits.size(1));
  const int64_t num_p = logits.numel() / std::max<int64_t>(num_c, 1);
  const bool want_grad = grad_loss != nullptr || (compute_grad && reduction != 0);
  at::Tensor loss, grad;
  at::Tensor tile_sums;
  if (reduction == 0 && !grad_loss) {
    loss = at::empty(pixel_shape(logits), logits.options().dtype(at::kDouble));  // handed back in loss_dtype
  } else if (reduction != 0) {
    tile_sums = at::empty({(num_p + kCpuTile - 1) / kCpuTile}, logits.options().dtype(at::kDouble));
  }
  grad = want_grad ? at::empty(logits.sizes(), logits.options()) : at::empty({0}, logits.options());
  if (want_grad) advise_huge_pages(grad.data_ptr(), grad.nbytes());

  int64_t count = 0;
  dispatch_target(target.scalar_type(), [&](auto tag) {
    using tgt_t = decltype(tag);
    count = count_valid(target.data_ptr<tgt_t>(), pixel_layout(target, false), num_p, ignore_index);
  });
  const at::Tensor grad_loss64 = grad_loss ? grad_loss->to(at::kDouble) : at::Tensor();
  FtmLaunch l{};
  l.dtype = logits.scalar_type(); l.target_dtype = target.scalar_type();
  l.z = logits.data_ptr(); l.zl = pixel_layout(logits, true); l.zsc = logits.stride(1);
  l.t = target.data_ptr(); l.tl = pixel_layout(target, false);
  if (want_grad) { l.g = grad.data_ptr(); l.gl = pixel_layout(grad, true); l.gsc = grad.stride(1); }
  l.loss_pix = (reduction == 0 && !grad_loss) ? loss.data_ptr<double>() : nullptr;
  l.tile_sums = reduction != 0 ? tile_sums.data_ptr<double>() : nullptr;
  l.num_p = num_p; l.num_c = num_c; l.depth = depth;
  l.parent = parent.data_ptr<int32_t>(); l.bottom_up = bottom_up.data_ptr<int32_t>();
  l.dfs = dfs.data_ptr<int32_t>();
  l.partial = partial; l.gamma = gamma; l.ignore_index = ignore_index;
  l.grad_scale = reduction == 2 ? 1.0 / static_cast<double>(std::max<int64_t>(count, 1)) : 1.0;
  if (grad_loss) { l.grad_loss = grad_loss64.data_ptr<double>(); l.gll = pixel_layout(grad_loss64, false); }
  cpu_kernels().ftm(l);

  if (reduction != 0) {
    double total = 0.0;
    const double* ps = tile_sums.data_ptr<double>();
    for (int64_t i = 0; i < tile_sums.numel(); ++i) total += ps[i];
    if (reduction == 2) total /= static_cast<double>(std::max<int64_t>(count, 1));
    loss = at::zeros({}, logits.options().dtype(loss_dtype(logits)));
    loss.fill_(total);
  } else if (loss.defined()) {
    loss = loss.to(loss_dtype(logits));
  }
  return {loss, grad};
}

#ifdef HSSN_WITH_CUDA
std::tuple<at::Tensor, at::Tensor> ftm_cuda(const at::Tensor& logits, const at::Tensor& target,
                                            const at::Tensor& parent, const at::Tensor& bottom_up,
                                            const at::Tensor& ancestors, const at::Tensor& dfs, double gamma,
                                            int64_t ignore_index, int64_t reduction, bool compute_grad,
                                            bool partial_labels, const at::Tensor* grad_loss, const char* op) {
  const int depth = check_ftm_args(logits, target, parent, bottom_up, ancestors, dfs, gamma, reduction, grad_loss,
                                   op);
  check_on_cuda(logits, op);
  const c10::cuda::CUDAGuard guard(logits.device());
  const int num_c = static_cast<int>(logits.size(1));
  const int64_t num_p = logits.numel() / num_c;
  const bool want_grad = grad_loss != nullptr || (compute_grad && reduction != 0);
  const int64_t red = grad_loss ? 0 : reduction;
  const int blocks = cuda::pixel_blocks(num_p, cuda::kFtmPixels);
  at::Tensor count = at::ne(target, ignore_index).sum(at::kLong);
  at::Tensor loss = (red == 0 && !grad_loss) ? at::empty(pixel_shape(logits), logits.options().dtype(at::kFloat))
                                             : at::Tensor();
  at::Tensor partial = red != 0 ? at::zeros({blocks}, logits.options().dtype(at::kFloat)) : at::Tensor();
  at::Tensor grad = want_grad ? at::empty(logits.sizes(), logits.options()) : at::empty({0}, logits.options());
  cuda::FtmParams p{};
  p.z = logits.data_ptr(); p.zl = pixel_layout(logits, true); p.zsc = logits.stride(1);
  p.dtype = cuda_dtype(logits, op, "logits");
  p.t = target.data_ptr(); p.tl = pixel_layout(target, false); p.ttype = target_type(target);
  if (want_grad) { p.g = grad.data_ptr(); p.gl = pixel_layout(grad, true); p.gsc = grad.stride(1); }
  // fp32 math on CUDA: fp64 weights are read as fp32 and the loss handed back in loss_dtype(logits)
  const at::Tensor grad_loss32 = grad_loss ? grad_loss->to(at::kFloat) : at::Tensor();
  if (grad_loss) { p.grad_loss = grad_loss32.data_ptr<float>(); p.gll = pixel_layout(grad_loss32, false); }
  p.count = (!grad_loss && reduction == 2) ? count.data_ptr<int64_t>() : nullptr;
  p.loss_pix = loss.defined() ? loss.data_ptr<float>() : nullptr;
  p.partial = partial.defined() ? partial.data_ptr<float>() : nullptr;
  p.ancestors = ancestors.data_ptr<int32_t>();
  p.dfs = dfs.data_ptr<int32_t>();
  p.num_c = num_c; p.depth = depth; p.num_p = num_p; p.gamma = static_cast<float>(gamma);
  p.ignore_index = ignore_index;
  p.partial_labels = partial_labels;
  p.offsets32 = offsets_fit_int32(logits) && offsets_fit_int32(grad);
  if (num_p > 0) check_cuda(cuda::launch_ftm(p, blocks, c10::cuda::getCurrentCUDAStream()), op);
  if (red != 0) {
    loss = partial.sum();
    if (reduction == 2) loss = at::div(loss, count.clamp_min(1));
  }
  if (loss.defined()) loss = loss.to(loss_dtype(logits));
  return {loss, grad};
}
#endif  // HSSN_WITH_CUDA

// The two ops on a driver (ftm_cpu or ftm_cuda): the forward (no grad_loss) and the backward (grad_loss,
// reduction none, the gradient only).
using FtmDriver = std::tuple<at::Tensor, at::Tensor> (*)(const at::Tensor&, const at::Tensor&, const at::Tensor&,
                                                         const at::Tensor&, const at::Tensor&, const at::Tensor&,
                                                         double, int64_t, int64_t, bool, bool, const at::Tensor*,
                                                         const char*);

template <FtmDriver driver>
std::tuple<at::Tensor, at::Tensor> ftm_forward(const at::Tensor& logits, const at::Tensor& target,
                                               const at::Tensor& parent, const at::Tensor& bottom_up,
                                               const at::Tensor& ancestors, const at::Tensor& dfs, double gamma,
                                               int64_t ignore_index, int64_t reduction, bool compute_grad,
                                               bool partial) {
  return driver(logits, target, parent, bottom_up, ancestors, dfs, gamma, ignore_index, reduction, compute_grad,
                partial, nullptr, "hssn::ftm_forward");
}

template <FtmDriver driver>
at::Tensor ftm_backward(const at::Tensor& grad_loss, const at::Tensor& logits, const at::Tensor& target,
                        const at::Tensor& parent, const at::Tensor& bottom_up, const at::Tensor& ancestors,
                        const at::Tensor& dfs, double gamma, int64_t ignore_index, bool partial) {
  return std::get<1>(driver(logits, target, parent, bottom_up, ancestors, dfs, gamma, ignore_index, 0, true, partial,
                            &grad_loss, "hssn::ftm_backward"));
}

}  // namespace

TORCH_LIBRARY_FRAGMENT(hssn, m) {
  m.def("ftm_forward(Tensor logits, Tensor target, Tensor parent, Tensor bottom_up, Tensor ancestors, Tensor dfs, "
        "float gamma, int ignore_index, int reduction, bool compute_grad, bool partial=False) -> (Tensor loss, "
        "Tensor grad)");
  m.def("ftm_backward(Tensor grad_loss, Tensor logits, Tensor target, Tensor parent, Tensor bottom_up, "
        "Tensor ancestors, Tensor dfs, float gamma, int ignore_index, bool partial=False) -> Tensor");
}

TORCH_LIBRARY_IMPL(hssn, CPU, m) {
  m.impl("ftm_forward", &ftm_forward<ftm_cpu>);
  m.impl("ftm_backward", &ftm_backward<ftm_cpu>);
}

#ifdef HSSN_WITH_CUDA
TORCH_LIBRARY_IMPL(hssn, CUDA, m) {
  m.impl("ftm_forward", &ftm_forward<ftm_cuda>);
  m.impl("ftm_backward", &ftm_backward<ftm_cuda>);
}
#endif

}  // namespace hssn
