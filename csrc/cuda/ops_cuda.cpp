// Thin CUDA launchers: checks, output allocation and the ATen glue (valid counts, prefix sums, final
// sums) around the torch-free kernels of *.cu; registered for the CUDA dispatch key.
#include <ATen/core/Tensor.h>
#include <ATen/ops/clamp_min.h>
#include <ATen/ops/cumsum.h>
#include <ATen/ops/div.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/full.h>
#include <ATen/ops/ne.h>
#include <ATen/ops/sum.h>
#include <ATen/ops/zeros.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include "../ops_common.h"
#include "launch.h"

namespace hssn {
namespace {

cuda::Dtype cuda_dtype(const at::Tensor& x, const char* op, const char* name) {
  switch (x.scalar_type()) {
    case at::kFloat: return cuda::Dtype::kFloat;
    case at::kHalf: return cuda::Dtype::kHalf;
    case at::kBFloat16: return cuda::Dtype::kBFloat16;
    default: TORCH_CHECK(false, op, ": the CUDA kernels take float32, float16 or bfloat16 ", name, ", got ",
                         x.scalar_type(), " (use the 'cpu' or 'reference' backend for float64)");
  }
}

cuda::TargetType target_type(const at::Tensor& t) {
  switch (t.scalar_type()) {
    case at::kLong: return cuda::TargetType::kLong;
    case at::kInt: return cuda::TargetType::kInt;
    default: return cuda::TargetType::kByte;
  }
}

void check_cuda(cudaError_t err, const char* op) {
  TORCH_CHECK(err == cudaSuccess, op, ": CUDA error ", cudaGetErrorString(err));
}

void check_on_cuda(const at::Tensor& x, const char* op) {
  TORCH_CHECK(x.is_cuda(), op, ": the CUDA kernel got ", x.device(), " tensors");
}

std::tuple<at::Tensor, at::Tensor> ftm_cuda(const at::Tensor& logits, const at::Tensor& target,
                                            const at::Tensor& parent, const at::Tensor& bottom_up,
                                            const at::Tensor& ancestors, double gamma, int64_t ignore_index,
                                            int64_t reduction, bool compute_grad, bool partial_labels,
                                            const at::Tensor* grad_loss, const char* op) {
  const int depth = check_ftm_args(logits, target, parent, bottom_up, ancestors, gamma, reduction, grad_loss, op);
  check_on_cuda(logits, op);
  const c10::cuda::CUDAGuard guard(logits.device());
  const int num_c = static_cast<int>(logits.size(1));
  const int64_t num_p = logits.numel() / num_c;
  const bool want_grad = grad_loss != nullptr || (compute_grad && reduction != 0);
  const int64_t red = grad_loss ? 0 : reduction;
  const int blocks = cuda::pixel_blocks(num_p);
  at::Tensor count = at::ne(target, ignore_index).sum(at::kLong);
  at::Tensor loss = (red == 0 && !grad_loss) ? at::empty(pixel_shape(logits), logits.options().dtype(at::kFloat))
                                             : at::Tensor();
  at::Tensor partial = red != 0 ? at::zeros({blocks}, logits.options().dtype(at::kFloat)) : at::Tensor();
  at::Tensor grad = want_grad ? at::empty(logits.sizes(), logits.options()) : at::empty({0}, logits.options());
  at::Tensor dfs = at::empty({6 * num_c}, logits.options().dtype(at::kInt));
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
  p.parent = parent.data_ptr<int32_t>(); p.bottom_up = bottom_up.data_ptr<int32_t>();
  p.ancestors = ancestors.data_ptr<int32_t>();
  p.num_c = num_c; p.depth = depth; p.num_p = num_p; p.gamma = static_cast<float>(gamma);
  p.ignore_index = ignore_index;
  p.partial_labels = partial_labels;
  p.dfs = dfs.data_ptr<int32_t>();
  if (num_p > 0) check_cuda(cuda::launch_ftm(p, blocks, c10::cuda::getCurrentCUDAStream()), op);
  if (red != 0) {
    loss = partial.sum();
    if (reduction == 2) loss = at::div(loss, count.clamp_min(1));
  }
  if (loss.defined()) loss = loss.to(loss_dtype(logits));
  return {loss, grad};
}

std::tuple<at::Tensor, at::Tensor> ftm_forward_cuda(const at::Tensor& logits, const at::Tensor& target,
                                                    const at::Tensor& parent, const at::Tensor& bottom_up,
                                                    const at::Tensor& ancestors, double gamma, int64_t ignore_index,
                                                    int64_t reduction, bool compute_grad, bool partial) {
  return ftm_cuda(logits, target, parent, bottom_up, ancestors, gamma, ignore_index, reduction, compute_grad, partial,
                  nullptr, "hssn::ftm_forward");
}

at::Tensor ftm_backward_cuda(const at::Tensor& grad_loss, const at::Tensor& logits, const at::Tensor& target,
                             const at::Tensor& parent, const at::Tensor& bottom_up, const at::Tensor& ancestors,
                             double gamma, int64_t ignore_index, bool partial) {
  return std::get<1>(ftm_cuda(logits, target, parent, bottom_up, ancestors, gamma, ignore_index, 0, true, partial,
                              &grad_loss,
                              "hssn::ftm_backward"));
}

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

std::tuple<at::Tensor, at::Tensor> sample_triplets_cuda(const at::Tensor& target, const at::Tensor& leaf_index,
                                                        const at::Tensor& tree_distance, int64_t num_triplets,
                                                        int64_t seed, int64_t ignore_index, int64_t mode) {
  const char* op = "hssn::sample_triplets";
  check_sample_args(target, leaf_index, tree_distance, num_triplets, seed, mode, op);
  check_on_cuda(target, op);
  const c10::cuda::CUDAGuard guard(target.device());
  at::Tensor out = at::full({num_triplets, 3}, -1, target.options().dtype(at::kLong));
  at::Tensor count = at::zeros({}, target.options().dtype(at::kLong));
  const at::Tensor flat = target.reshape({-1}).contiguous();
  if (flat.numel() == 0 || num_triplets == 0) return {out, count};
  const at::Tensor csum = at::cumsum(at::ne(flat, ignore_index), 0, at::kLong);
  cuda::SampleParams p{};
  p.t = flat.data_ptr(); p.ttype = target_type(flat); p.csum = csum.data_ptr<int64_t>(); p.num_p = flat.numel();
  p.leaf_index = leaf_index.data_ptr<int32_t>(); p.num_c = static_cast<int>(leaf_index.numel());
  p.dist = tree_distance.data_ptr<int32_t>(); p.num_l = static_cast<int>(tree_distance.size(0));
  p.out = out.data_ptr<int64_t>(); p.count = count.data_ptr<int64_t>(); p.num_triplets = num_triplets;
  p.seed = static_cast<uint32_t>(seed); p.mode = static_cast<int>(mode);
  check_cuda(cuda::launch_sample_triplets(p, c10::cuda::getCurrentCUDAStream()), op);
  return {out, count};
}

std::tuple<at::Tensor, at::Tensor> triplet_forward_cuda(const at::Tensor& embeddings, const at::Tensor& target,
                                                        const at::Tensor& triplets, const at::Tensor& count,
                                                        const at::Tensor& leaf_index, const at::Tensor& tree_distance,
                                                        double margin_eps, double margin_scale, int64_t height,
                                                        bool hierarchy_margin, int64_t distance, bool compute_grad) {
  const char* op = "hssn::triplet_forward";
  check_triplet_args(embeddings, target, triplets, count, leaf_index, tree_distance, height, distance, op);
  check_on_cuda(embeddings, op);
  const c10::cuda::CUDAGuard guard(embeddings.device());
  const int64_t num_t = triplets.size(0);
  const int64_t num_e = embeddings.size(1);
  at::Tensor grad = compute_grad ? at::zeros(embeddings.sizes(), embeddings.options()) : at::empty({0}, embeddings.options());
  at::Tensor hinge = at::zeros({num_t}, embeddings.options().dtype(at::kFloat));
  at::Tensor coef = compute_grad ? at::empty({num_t, 8}, embeddings.options().dtype(at::kFloat)) : at::Tensor();
  const at::Tensor trip = triplets.contiguous();
  cuda::TripletParams p{};
  p.e = embeddings.data_ptr(); p.el = pixel_layout(embeddings, true); p.esc = embeddings.stride(1);
  p.dtype = cuda_dtype(embeddings, op, "embeddings"); p.num_e = num_e;
  p.num_p = num_e > 0 ? embeddings.numel() / num_e : 0;
  p.t = target.data_ptr(); p.tl = pixel_layout(target, false); p.ttype = target_type(target);
  p.triplets = trip.data_ptr<int64_t>(); p.count = count.data_ptr<int64_t>(); p.num_t = num_t;
  p.leaf_index = leaf_index.data_ptr<int32_t>(); p.num_c = static_cast<int>(leaf_index.numel());
  p.dist = tree_distance.data_ptr<int32_t>(); p.num_l = static_cast<int>(tree_distance.size(0));
  p.margin_eps = static_cast<float>(margin_eps); p.margin_scale = static_cast<float>(margin_scale);
  p.height = static_cast<int>(height); p.hierarchy_margin = hierarchy_margin; p.distance = static_cast<int>(distance);
  p.hinge = hinge.data_ptr<float>();
  p.coef = compute_grad ? coef.data_ptr<float>() : nullptr;
  if (compute_grad) { p.g = grad.data_ptr(); p.gl = pixel_layout(grad, true); p.gsc = grad.stride(1); }
  if (p.num_p > 0) check_cuda(cuda::launch_triplet_forward(p, c10::cuda::getCurrentCUDAStream()), op);
  at::Tensor loss = at::div(hinge.sum(), count.clamp_min(1)).to(loss_dtype(embeddings));
  return {loss, grad};
}

}  // namespace

TORCH_LIBRARY_IMPL(hssn, CUDA, m) {
  m.impl("ftm_forward", &ftm_forward_cuda);
  m.impl("ftm_backward", &ftm_backward_cuda);
  m.impl("path_argmax", &path_argmax_cuda);
  m.impl("sample_triplets", &sample_triplets_cuda);
  m.impl("triplet_forward", &triplet_forward_cuda);
}

}  // namespace hssn
