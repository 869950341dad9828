// ATen-side helpers shared by the CPU kernels and the CUDA launchers: the argument checks of every op
// (one function per op: check_ftm_args, check_path_argmax_args, check_sample_args, check_triplet_args),
// with readable messages, and the pixel layout of a tensor (read in place through its strides, no copies).
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/util/Exception.h>

#include <cmath>
#include <string>

#include "kernels/common.h"

namespace hssn {

constexpr int64_t kMaxChannels = 4096;  // hierarchy.MAX_CHANNELS (kMaxDepth: kernels/common.h)

// Pixel layout of (B, C, H, W) / (N, C) (channel_dim) or (B, H, W) / (N,) tensors.
inline PixelLayout pixel_layout(const at::Tensor& x, bool channel_dim) {
  PixelLayout l;
  const int64_t d = x.dim();
  if ((channel_dim && d == 2) || (!channel_dim && d == 1)) {
    l.sb = x.stride(0);
  } else if (channel_dim) {
    l.h = x.size(2); l.w = x.size(3); l.sb = x.stride(0); l.sh = x.stride(2); l.sw = x.stride(3);
  } else {
    l.h = x.size(1); l.w = x.size(2); l.sb = x.stride(0); l.sh = x.stride(1); l.sw = x.stride(2);
  }
  return l;
}

inline std::vector<int64_t> pixel_shape(const at::Tensor& x) {
  std::vector<int64_t> s{x.size(0)};
  for (int64_t i = 2; i < x.dim(); ++i) s.push_back(x.size(i));
  return s;
}

inline void check_scores(const at::Tensor& x, const char* op, const char* name) {
  TORCH_CHECK(x.is_floating_point(), op, ": ", name, " must be a floating-point tensor, got ", x.scalar_type());
  TORCH_CHECK(x.dim() == 2 || x.dim() == 4, op, ": ", name, " must be (B, C, H, W) or (N, C), got shape ", x.sizes());
}

inline void check_target(const at::Tensor& target, const at::Tensor& like, const char* op, const char* name) {
  const auto st = target.scalar_type();
  TORCH_CHECK(st == at::kLong || st == at::kInt || st == at::kByte, op,
              ": target must be int64, int32 or uint8 leaf ids, got ", st);
  TORCH_CHECK(target.device() == like.device(), op, ": target is on ", target.device(), " but ", name,
              " are on ", like.device());
  TORCH_CHECK(target.sizes() == at::IntArrayRef(pixel_shape(like)), op, ": target shape ", target.sizes(),
              " does not match ", name, " shape ", like.sizes(), " without its channel dim");
}

inline void check_table(const at::Tensor& t, const at::Tensor& like, const char* op, const char* name,
                        std::initializer_list<int64_t> shape, at::ScalarType dtype = at::kInt) {
  TORCH_CHECK(t.scalar_type() == dtype, op, ": table ", name, " must be ", dtype, " (from hierarchy.tables(device)), got ",
              t.scalar_type());
  TORCH_CHECK(t.device() == like.device(), op, ": table ", name, " is on ", t.device(), " but the inputs are on ",
              like.device(), "; use hierarchy.tables(device)");
  TORCH_CHECK(t.dim() == static_cast<int64_t>(shape.size()), op, ": table ", name, " must have ", shape.size(),
              " dims, got shape ", t.sizes());
  int i = 0;
  for (int64_t s : shape) {
    TORCH_CHECK(s < 0 || t.size(i) == s, op, ": table ", name, " has shape ", t.sizes(), ", expected size ", s,
                " in dim ", i);
    ++i;
  }
  TORCH_CHECK(t.is_contiguous(), op, ": table ", name, " must be contiguous");
}

// The focal tree-min tables: parent (C,), bottom_up (C,), ancestors (C, D) int32.
inline int check_ftm_tables(const at::Tensor& logits, const at::Tensor& parent, const at::Tensor& bottom_up,
                            const at::Tensor& ancestors, const char* op) {
  const int64_t c = logits.size(1);
  TORCH_CHECK(c >= 1 && c <= kMaxChannels, op, ": logits have ", c, " channels; supported: 1 to ", kMaxChannels);
  check_table(parent, logits, op, "parent", {c});
  check_table(bottom_up, logits, op, "bottom_up", {c});
  check_table(ancestors, logits, op, "ancestors", {c, -1});
  TORCH_CHECK(ancestors.size(1) >= 1 && ancestors.size(1) <= kMaxDepth, op, ": ancestors table depth ",
              ancestors.size(1), " outside [1, ", kMaxDepth, "]");
  return static_cast<int>(ancestors.size(1));
}

inline void check_reduction(int64_t reduction, const char* op) {
  TORCH_CHECK(reduction >= 0 && reduction <= 2, op, ": reduction must be 0 (none), 1 (sum) or 2 (mean), got ",
              reduction);
}

// The dtype of a loss (and of its per-pixel weights): float64 for float64 logits, else float32.
inline at::ScalarType loss_dtype(const at::Tensor& logits) {
  return logits.scalar_type() == at::kDouble ? at::kDouble : at::kFloat;
}

inline void check_grad_loss(const at::Tensor& grad_loss, const at::Tensor& logits, const char* op) {
  TORCH_CHECK(grad_loss.scalar_type() == loss_dtype(logits), op, ": grad_loss must be ", loss_dtype(logits),
              " for ", logits.scalar_type(), " logits, got ", grad_loss.scalar_type());
  TORCH_CHECK(grad_loss.device() == logits.device(), op, ": grad_loss is on ", grad_loss.device(), " but logits are on ",
              logits.device());
  TORCH_CHECK(grad_loss.sizes() == at::IntArrayRef(pixel_shape(logits)), op, ": grad_loss shape ", grad_loss.sizes(),
              " does not match the pixel shape of logits ", logits.sizes());
}

// hssn::ftm_forward / ftm_backward: returns the tree depth (the ancestors table's width).
inline int check_ftm_args(const at::Tensor& logits, const at::Tensor& target, const at::Tensor& parent,
                          const at::Tensor& bottom_up, const at::Tensor& ancestors, double gamma, int64_t reduction,
                          const at::Tensor* grad_loss, const char* op) {
  check_scores(logits, op, "logits");
  check_target(target, logits, op, "logits");
  const int depth = check_ftm_tables(logits, parent, bottom_up, ancestors, op);
  check_reduction(reduction, op);
  TORCH_CHECK(gamma >= 0 && std::isfinite(gamma), op, ": gamma must be a finite number >= 0, got ", gamma);
  if (grad_loss) check_grad_loss(*grad_loss, logits, op);
  return depth;
}

// hssn::path_argmax.
inline void check_path_argmax_args(const at::Tensor& logits, const at::Tensor& parent, const at::Tensor& bottom_up,
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

// hssn::sample_triplets.
inline void check_sample_args(const at::Tensor& target, const at::Tensor& leaf_index, const at::Tensor& tree_distance,
                              int64_t num_triplets, int64_t seed, int64_t mode, const char* op) {
  const auto st = target.scalar_type();
  TORCH_CHECK(st == at::kLong || st == at::kInt || st == at::kByte, op,
              ": target must be int64, int32 or uint8 leaf ids, got ", st);
  check_table(leaf_index, target, op, "leaf_index", {-1});
  check_table(tree_distance, target, op, "tree_distance", {-1, -1});
  TORCH_CHECK(num_triplets >= 0, op, ": num_triplets must be >= 0, got ", num_triplets);
  TORCH_CHECK(seed >= 0 && seed < (int64_t{1} << 32), op, ": seed must be in [0, 2**32), got ", seed);
  TORCH_CHECK(mode == 0 || mode == 1, op, ": mode must be 0 (tree) or 1 (vanilla), got ", mode);
}

// hssn::triplet_forward.
inline void check_triplet_args(const at::Tensor& embeddings, const at::Tensor& target, const at::Tensor& triplets,
                               const at::Tensor& count, const at::Tensor& leaf_index, const at::Tensor& tree_distance,
                               int64_t height, int64_t distance, const char* op) {
  check_scores(embeddings, op, "embeddings");
  check_target(target, embeddings, op, "embeddings");
  TORCH_CHECK(triplets.scalar_type() == at::kLong && triplets.dim() == 2 && triplets.size(1) == 3, op,
              ": triplets must be a (T, 3) int64 table, got ", triplets.scalar_type(), " ", triplets.sizes());
  TORCH_CHECK(triplets.device() == embeddings.device(), op, ": triplets are on ", triplets.device(),
              " but embeddings are on ", embeddings.device());
  TORCH_CHECK(count.scalar_type() == at::kLong && count.dim() == 0 && count.device() == embeddings.device(), op,
              ": count must be a 0-d int64 tensor on ", embeddings.device());
  check_table(leaf_index, embeddings, op, "leaf_index", {-1});
  check_table(tree_distance, embeddings, op, "tree_distance", {-1, -1});
  TORCH_CHECK(height >= 1 && height <= kMaxDepth, op, ": height must be in [1, ", kMaxDepth, "], got ", height);
  TORCH_CHECK(distance == 0 || distance == 1, op, ": distance must be 0 (cosine) or 1 (euclidean), got ", distance);
}

}  // namespace hssn
