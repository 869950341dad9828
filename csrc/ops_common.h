// ATen-side helpers shared by the ops (csrc/ops/*.cpp): the argument rules every op checks (scores, targets,
// tables, with readable messages), the pixel layout of a tensor (read in place through its strides, no
// copies), and, in CUDA builds, the glue between ATen and the torch-free launchers of cuda/launch.h.
// Each op's own checks (check_<op>_args) live in its csrc/ops file, used by its CPU and CUDA entry points.
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/util/Exception.h>

#include <cmath>
#include <string>

#include "kernels/common.h"

#ifdef HSSN_WITH_CUDA
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>

#include "cuda/launch.h"
#endif

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

// Whether every element offset of x (its largest: sum of (size - 1) * stride) fits in 31 bits.
inline bool offsets_fit_int32(const at::Tensor& x) {
  int64_t span = 0;
  for (int64_t i = 0; i < x.dim(); ++i) span += (x.size(i) - 1) * x.stride(i);
  return span < (int64_t{1} << 31);
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

// The dtype of a loss (and of its per-pixel weights): float64 for float64 logits, else float32.
inline at::ScalarType loss_dtype(const at::Tensor& logits) {
  return logits.scalar_type() == at::kDouble ? at::kDouble : at::kFloat;
}

#ifdef HSSN_WITH_CUDA
inline cuda::Dtype cuda_dtype(const at::Tensor& x, const char* op, const char* name) {
  switch (x.scalar_type()) {
    case at::kFloat: return cuda::Dtype::kFloat;
    case at::kHalf: return cuda::Dtype::kHalf;
    case at::kBFloat16: return cuda::Dtype::kBFloat16;
    default: TORCH_CHECK(false, op, ": the CUDA kernels take float32, float16 or bfloat16 ", name, ", got ",
                         x.scalar_type(), " (use the 'cpu' or 'reference' backend for float64)");
  }
}

inline cuda::TargetType target_type(const at::Tensor& t) {
  switch (t.scalar_type()) {
    case at::kLong: return cuda::TargetType::kLong;
    case at::kInt: return cuda::TargetType::kInt;
    default: return cuda::TargetType::kByte;
  }
}

inline void check_cuda(cudaError_t err, const char* op) {
  TORCH_CHECK(err == cudaSuccess, op, ": CUDA error ", cudaGetErrorString(err));
}

inline void check_on_cuda(const at::Tensor& x, const char* op) {
  TORCH_CHECK(x.is_cuda(), op, ": the CUDA kernel got ", x.device(), " tensors");
}
#endif  // HSSN_WITH_CUDA

}  // namespace hssn
