// CPU kernels of hssn::ftm_forward / hssn::ftm_backward: tiles of kTile pixels, each tile loaded
// channel by channel (contiguous runs of pixels) into a pixel-major [kTile][C] scratch block (fp32 math, fp64 for fp64 logits), one O(C) pass per pixel
// (kernels/common.h: ftm_pixel), the gradient written once per element. Deterministic: loss partial
// sums per fixed tile, added in tile order.
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/zeros.h>
#include <torch/library.h>

#include <limits>
#include <vector>

#include "../ops_common.h"
#include "cpu_common.h"

namespace hssn {
namespace {

constexpr int64_t kTile = 64;

struct FtmArgs {
  int num_c, depth;
  const int32_t *parent, *bottom_up, *ancestors;
  const uint8_t* leaf;
  double gamma;
  int64_t ignore_index;
  bool grad;
  int64_t reduction;       // 0: per-pixel loss into loss_pix, else partial sums per tile
  double grad_scale;       // sum / mean scale when grad_loss is null
  const float* grad_loss;  // per-pixel weights (backward of reduction none) or null
  PixelLayout gll;
};

template <class scalar_t, class acc_t, class tgt_t>
void ftm_tiles(const scalar_t* z, PixelLayout zl, int64_t zsc, const tgt_t* t, PixelLayout tl, scalar_t* g,
               PixelLayout gl, int64_t gsc, float* loss_pix, double* partial, int64_t num_p, const FtmArgs& a) {
  const int64_t tiles = (num_p + kTile - 1) / kTile;
  const int num_c = a.num_c;
  at::parallel_for(0, tiles, 16, [&](int64_t tb, int64_t te) {
    std::vector<acc_t> v(static_cast<size_t>(num_c) * kTile);
    std::vector<int16_t> w(static_cast<size_t>(num_c) * kTile);
    int64_t zoff[kTile], goff[kTile], y[kTile];
    for (int64_t tile = tb; tile < te; ++tile) {
      const int64_t p0 = tile * kTile;
      const int64_t n = std::min<int64_t>(kTile, num_p - p0);
      for (int64_t i = 0; i < n; ++i) {
        zoff[i] = zl.offset(p0 + i);
        goff[i] = g ? gl.offset(p0 + i) : 0;
        const int64_t yi = static_cast<int64_t>(t[tl.offset(p0 + i)]);
        y[i] = (yi >= 0 && yi < num_c && a.leaf[yi]) ? yi : -1;  // ignored (or, defensively, invalid)
      }
      bool nan[kTile] = {};
      for (int c = 0; c < num_c; ++c) {
        for (int64_t i = 0; i < n; ++i) {
          const acc_t x = y[i] >= 0 ? static_cast<acc_t>(z[zoff[i] + c * zsc]) : acc_t(0);
          v[i * num_c + c] = x;
          w[i * num_c + c] = static_cast<int16_t>(c);
          nan[i] |= x != x;
        }
      }
      double tile_sum = 0.0;
      for (int64_t i = 0; i < n; ++i) {
        double loss = 0.0;
        if (y[i] >= 0) {
          const int64_t zo = zoff[i];
          auto z_at = [&](int c) { return static_cast<acc_t>(z[zo + c * zsc]); };
          loss = static_cast<double>(ftm_pixel<acc_t, int16_t>(v.data() + i * num_c, w.data() + i * num_c, 1, num_c, a.parent,
                                                               a.bottom_up, a.ancestors + y[i] * a.depth, a.depth,
                                                               z_at, static_cast<acc_t>(a.gamma), a.grad));
          if (nan[i]) loss = std::numeric_limits<double>::quiet_NaN();
        }
        if (a.reduction == 0 && loss_pix) loss_pix[p0 + i] = static_cast<float>(loss);
        tile_sum += loss;
      }
      if (a.reduction != 0) partial[tile] = tile_sum;
      if (!g) continue;
      acc_t scale[kTile];
      for (int64_t i = 0; i < n; ++i) {
        const double s = a.grad_loss ? static_cast<double>(a.grad_loss[a.gll.offset(p0 + i)]) : a.grad_scale;
        scale[i] = static_cast<acc_t>(s);
      }
      for (int c = 0; c < num_c; ++c)
        for (int64_t i = 0; i < n; ++i)
          g[goff[i] + c * gsc] = static_cast<scalar_t>(y[i] >= 0 ? v[i * num_c + c] * scale[i] : acc_t(0));
    }
  });
}

// Shared driver of the forward (grad_loss undefined) and the backward (grad_loss defined, reduction none).
std::tuple<at::Tensor, at::Tensor> ftm_cpu(const at::Tensor& logits, const at::Tensor& target, const at::Tensor& parent,
                                           const at::Tensor& bottom_up, const at::Tensor& ancestors, double gamma,
                                           int64_t ignore_index, int64_t reduction, bool compute_grad,
                                           const at::Tensor* grad_loss, const char* op) {
  check_scores(logits, op, "logits");
  check_target(target, logits, op, "logits");
  const int depth = check_ftm_tables(logits, parent, bottom_up, ancestors, op);
  check_reduction(reduction, op);
  TORCH_CHECK(gamma >= 0 && std::isfinite(gamma), op, ": gamma must be a finite number >= 0, got ", gamma);
  if (grad_loss) check_grad_loss(*grad_loss, logits, op);
  TORCH_CHECK(logits.device().is_cpu(), op, ": the CPU kernel got ", logits.device(), " tensors");

  const int num_c = static_cast<int>(logits.size(1));
  const int64_t num_p = logits.numel() / std::max<int64_t>(num_c, 1);
  const auto leaf = leaf_flags(parent.data_ptr<int32_t>(), num_c);
  const bool want_grad = grad_loss != nullptr || (compute_grad && reduction != 0);
  at::Tensor loss, grad;
  at::Tensor partial;
  if (reduction == 0 && !grad_loss) {
    loss = at::empty(pixel_shape(logits), logits.options().dtype(at::kFloat));
  } else if (reduction != 0) {
    partial = at::empty({(num_p + kTile - 1) / kTile}, logits.options().dtype(at::kDouble));
  }
  grad = want_grad ? at::empty(logits.sizes(), logits.options()) : at::empty({0}, logits.options());

  int64_t count = 0;
  dispatch_target(target.scalar_type(), [&](auto tag) {
    using tgt_t = decltype(tag);
    count = count_valid(target.data_ptr<tgt_t>(), pixel_layout(target, false), num_p, leaf, ignore_index, op);
  });
  FtmArgs a{num_c, depth, parent.data_ptr<int32_t>(), bottom_up.data_ptr<int32_t>(), ancestors.data_ptr<int32_t>(),
            leaf.data(), gamma, ignore_index, want_grad, grad_loss ? 0 : reduction,
            reduction == 2 ? 1.0 / static_cast<double>(std::max<int64_t>(count, 1)) : 1.0,
            grad_loss ? grad_loss->data_ptr<float>() : nullptr,
            grad_loss ? pixel_layout(*grad_loss, false) : PixelLayout{}};
  if (grad_loss) a.reduction = 0;

  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, logits.scalar_type(), "hssn_ftm_cpu", [&] {
    using acc_t = std::conditional_t<std::is_same_v<scalar_t, double>, double, float>;
    dispatch_target(target.scalar_type(), [&](auto tag) {
      using tgt_t = decltype(tag);
      ftm_tiles<scalar_t, acc_t, tgt_t>(
          logits.data_ptr<scalar_t>(), pixel_layout(logits, true), logits.stride(1), target.data_ptr<tgt_t>(),
          pixel_layout(target, false), want_grad ? grad.data_ptr<scalar_t>() : nullptr,
          want_grad ? pixel_layout(grad, true) : PixelLayout{}, want_grad ? grad.stride(1) : 0,
          (reduction == 0 && !grad_loss) ? loss.data_ptr<float>() : nullptr,
          reduction != 0 ? partial.data_ptr<double>() : nullptr, num_p, a);
    });
  });

  if (reduction != 0) {
    double total = 0.0;
    const double* ps = partial.data_ptr<double>();
    for (int64_t i = 0; i < partial.numel(); ++i) total += ps[i];
    if (reduction == 2) total /= static_cast<double>(std::max<int64_t>(count, 1));
    loss = at::zeros({}, logits.options().dtype(at::kFloat));
    loss.fill_(total);
  }
  return {loss, grad};
}

std::tuple<at::Tensor, at::Tensor> ftm_forward_cpu(const at::Tensor& logits, const at::Tensor& target,
                                                   const at::Tensor& parent, const at::Tensor& bottom_up,
                                                   const at::Tensor& ancestors, double gamma, int64_t ignore_index,
                                                   int64_t reduction, bool compute_grad) {
  return ftm_cpu(logits, target, parent, bottom_up, ancestors, gamma, ignore_index, reduction, compute_grad, nullptr,
                 "hssn::ftm_forward");
}

at::Tensor ftm_backward_cpu(const at::Tensor& grad_loss, const at::Tensor& logits, const at::Tensor& target,
                            const at::Tensor& parent, const at::Tensor& bottom_up, const at::Tensor& ancestors,
                            double gamma, int64_t ignore_index) {
  return std::get<1>(ftm_cpu(logits, target, parent, bottom_up, ancestors, gamma, ignore_index, 0, true, &grad_loss,
                             "hssn::ftm_backward"));
}

}  // namespace

TORCH_LIBRARY_IMPL(hssn, CPU, m) {
  m.impl("ftm_forward", &ftm_forward_cpu);
  m.impl("ftm_backward", &ftm_backward_cpu);
}

}  // namespace hssn
