// hssn::ftm_forward / hssn::ftm_backward: the schemas, the argument checks, the CPU kernels and their
// registration, and in CUDA builds the ATen glue around the launchers of cuda/focal_tree_min.cu.
// CPU kernels: tiles of kTile pixels, each tile loaded
// channel by channel (contiguous runs of pixels) into a channel-major [C][kTile] scratch block (fp32
// math, fp64 for fp64 logits); a bottom-up max pass, then the top-down terms and carries, node by node with inner
// loops over the tile's pixels (auto-vectorised; exp / log from vec_math.h); the gradient is written
// once per element. Deterministic: loss partial sums per fixed tile, added in tile order.
// GCC if-converts (and so vectorises) the tile loops only when float operations may be speculated:
// this file is compiled as with -fno-trapping-math (no code here reads floating-point exception flags).
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC optimize("no-trapping-math")
#endif
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
#include "../cpu/cpu_common.h"
#include "../cpu/vec_math.h"

namespace hssn {
namespace {

// The focal tree-min tables: parent (C,), bottom_up (C,), ancestors (C, D) int32.
int check_ftm_tables(const at::Tensor& logits, const at::Tensor& parent, const at::Tensor& bottom_up,
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

constexpr int64_t kTile = 64;  // pixels per tile; the [C][kTile] passes run over the pixels (vectorised)

struct FtmArgs {
  int num_c, depth;
  const int32_t *parent, *bottom_up, *ancestors;
  const uint8_t* leaf;
  bool partial;  // labels may be any node (strict descendants of the label get no term)
  double gamma;
  int64_t ignore_index;
  bool grad;
  int64_t reduction;       // 0: per-pixel loss into loss_pix, else partial sums per tile
  double grad_scale;       // sum / mean scale when grad_loss is null
  const double* grad_loss;  // per-pixel weights (backward of reduction none) or null
  PixelLayout gll;
};

// The focal tree-min passes, run node by node over a channel-major [C][kTile] tile
// (v: values, w: winners) so that every inner loop runs over kTile pixels.
// 1. bottom-up max over Dsc(c) with its winner (lowest channel on ties).
template <class T>
void tile_bottom_up(T* v, int32_t* w, int num_c, const int32_t* parent, const int32_t* bottom_up) {
  for (int k = 0; k < num_c; ++k) {
    const int c = bottom_up[k];
    const int p = parent[c];
    if (p < 0) continue;
    const T* vc = v + c * kTile;
    const int32_t* wc = w + c * kTile;
    T* vp = v + p * kTile;
    int32_t* wp = w + p * kTile;
#pragma omp simd
    for (int i = 0; i < kTile; ++i) {
      const bool take = (vc[i] > vp[i]) | ((vc[i] == vp[i]) & (wc[i] < wp[i]));
      vp[i] = take ? vc[i] : vp[i];
      wp[i] = take ? wc[i] : wp[i];
    }
  }
}

// 3. top-down: negative terms of the off-path nodes (w = -1 marks the path) into loss, and (grad) the
// gradient owed to each winner carried down its chain, in place of v. kPartial: a node whose parent is the
// pixel's label y (or is itself below it, w = -2) is a strict descendant of y: marked w = -2, no term.
template <int kGamma, bool kGrad, bool kPartial, class T>
void tile_top_down(T* v, int32_t* w, int num_c, const int32_t* parent, const int32_t* bottom_up, T gamma,
                   const int32_t* label, T* loss) {
  for (int k = num_c - 1; k >= 0; --k) {
    const int c = bottom_up[k];
    const int p = parent[c];
    T* vc = v + c * kTile;
    int32_t* wc = w + c * kTile;
    const T* vp = v + (p >= 0 ? p : c) * kTile;
    const int32_t* wp = w + (p >= 0 ? p : c) * kTile;
    const bool root = p < 0;
#pragma omp simd
    for (int i = 0; i < kTile; ++i) {
      T l, dz;
      vneg_term<kGamma>(vc[i], gamma, &l, &dz);
      bool off_path = wc[i] != -1;
      if constexpr (kPartial) {
        const bool below = !root & ((p == label[i]) | (wp[i] == -2));
        wc[i] = below ? -2 : wc[i];
        off_path = off_path & !below;
      }
      loss[i] += keep_if(l, off_path);
      if constexpr (kGrad) {
        const bool carry = !root & (wp[i] == wc[i]);
        vc[i] = keep_if(dz + keep_if(vp[i], carry), off_path);
      }
    }
  }
}

// 5. keep the gradient only where it landed: path nodes and the winners of their own chains.
template <class T>
void tile_keep(T* v, const int32_t* w, int num_c) {
  for (int c = 0; c < num_c; ++c) {
    T* vc = v + c * kTile;
    const int32_t* wc = w + c * kTile;
#pragma omp simd
    for (int i = 0; i < kTile; ++i) vc[i] = ((wc[i] != -1) & (wc[i] != c)) ? T(0) : vc[i];
  }
}

// Whether a full tile's pixel offsets are consecutive (one contiguous run per channel).
inline bool unit_stride(const int64_t* off, int64_t n) {
  bool ok = n == kTile;
  for (int i = 1; i < kTile; ++i) ok &= off[i] == off[0] + i;
  return ok;
}

// The step-3 instantiation for this gamma (exact shortcuts for 0 and 2), gradient flag and label kind.
template <class T>
auto top_down_kernel(double gamma, bool grad, bool partial) {
  using Fn = void (*)(T*, int32_t*, int, const int32_t*, const int32_t*, T, const int32_t*, T*);
  static constexpr Fn kFns[2][2][3] = {
      {{tile_top_down<0, false, false, T>, tile_top_down<1, false, false, T>, tile_top_down<2, false, false, T>},
       {tile_top_down<0, true, false, T>, tile_top_down<1, true, false, T>, tile_top_down<2, true, false, T>}},
      {{tile_top_down<0, false, true, T>, tile_top_down<1, false, true, T>, tile_top_down<2, false, true, T>},
       {tile_top_down<0, true, true, T>, tile_top_down<1, true, true, T>, tile_top_down<2, true, true, T>}}};
  return kFns[partial ? 1 : 0][grad ? 1 : 0][gamma == 2.0 ? 2 : (gamma == 0.0 ? 0 : 1)];
}

template <class scalar_t, class acc_t, class tgt_t>
void ftm_tiles(const scalar_t* z, PixelLayout zl, int64_t zsc, const tgt_t* t, PixelLayout tl, scalar_t* g,
               PixelLayout gl, int64_t gsc, double* loss_pix, double* tile_sums, int64_t num_p, const FtmArgs& a) {
  const int64_t tiles = (num_p + kTile - 1) / kTile;
  const int num_c = a.num_c;
  const acc_t gamma = static_cast<acc_t>(a.gamma);
  const auto top_down = top_down_kernel<acc_t>(a.gamma, a.grad, a.partial);
  at::parallel_for(0, tiles, 16, [&](int64_t tb, int64_t te) {
    std::vector<acc_t> v(static_cast<size_t>(num_c) * kTile);
    std::vector<int32_t> w(static_cast<size_t>(num_c) * kTile);
    int64_t zoff[kTile], goff[kTile], y[kTile];
    int32_t label[kTile];  // y as int32 for the partial-label test of step 3
    acc_t loss[kTile];
    int32_t valid[kTile];
    bool bad_label[kTile];  // neither ignore_index nor a leaf (validation skipped): NaN loss, zero gradient
    for (int64_t tile = tb; tile < te; ++tile) {
      const int64_t p0 = tile * kTile;
      const int64_t n = std::min<int64_t>(kTile, num_p - p0);
      bool any = false;
      for (int64_t i = 0; i < kTile; ++i) {
        const bool in = i < n;
        zoff[i] = in ? zl.offset(p0 + i) : 0;
        goff[i] = (in && g) ? gl.offset(p0 + i) : 0;
        const int64_t yi = in ? static_cast<int64_t>(t[tl.offset(p0 + i)]) : -1;
        y[i] = (yi >= 0 && yi < num_c && (a.partial || a.leaf[yi])) ? yi : -1;  // ignored or invalid
        label[i] = static_cast<int32_t>(y[i]);
        bad_label[i] = in && yi != a.ignore_index && y[i] < 0;
        valid[i] = y[i] >= 0;
        any |= y[i] >= 0;
        loss[i] = acc_t(0);
      }
      bool nan[kTile] = {};
      if (any) {
        const bool dense = unit_stride(zoff, n);
        for (int c = 0; c < num_c; ++c) {
          acc_t* vc = v.data() + c * kTile;
          int32_t* wc = w.data() + c * kTile;
          if (dense) {
            const scalar_t* zc = z + zoff[0] + c * zsc;
            for (int i = 0; i < kTile; ++i) {
              const acc_t x = static_cast<acc_t>(zc[i]);
              vc[i] = valid[i] ? x : acc_t(0);
            }
          } else {
            for (int i = 0; i < kTile; ++i) {  // zoff is 0 past the end: a readable element
              const acc_t x = static_cast<acc_t>(z[zoff[i] + c * zsc]);
              vc[i] = valid[i] ? x : acc_t(0);
            }
          }
          for (int i = 0; i < kTile; ++i) {
            wc[i] = c;
            nan[i] |= vc[i] != vc[i];
          }
        }
        tile_bottom_up(v.data(), w.data(), num_c, a.parent, a.bottom_up);
        for (int64_t i = 0; i < n; ++i) {  // 2. mark the target's path A(y)
          if (y[i] < 0) continue;
          const int32_t* anc = a.ancestors + y[i] * a.depth;
          for (int k = 0; k < a.depth && anc[k] >= 0; ++k) w[anc[k] * kTile + i] = -1;
        }
        top_down(v.data(), w.data(), num_c, a.parent, a.bottom_up, gamma, label, loss);
        for (int64_t i = 0; i < n; ++i) {  // 4. the path, root first: running min over A(v), positive terms
          if (y[i] < 0) continue;
          const int32_t* anc = a.ancestors + y[i] * a.depth;
          int len = 0;
          while (len < a.depth && anc[len] >= 0) ++len;
          acc_t run_v = acc_t(0);
          int run_i = -1;
          for (int k = len - 1; k >= 0; --k) {
            const int c = anc[k];
            const acc_t zc = static_cast<acc_t>(z[zoff[i] + c * zsc]);
            if (run_i < 0 || zc < run_v || (zc == run_v && c < run_i)) {
              run_v = zc;
              run_i = c;
            }
            const Term<acc_t> tp = focal_term(run_v, true, gamma);
            loss[i] += tp.loss;
            if (a.grad) v[run_i * kTile + i] += tp.dz;
          }
        }
        if (a.grad) tile_keep(v.data(), w.data(), num_c);
      }
      double tile_sum = 0.0;
      for (int64_t i = 0; i < n; ++i) {
        double l = 0.0;
        if (y[i] >= 0) l = nan[i] ? std::numeric_limits<double>::quiet_NaN() : static_cast<double>(loss[i]);
        if (bad_label[i]) l = std::numeric_limits<double>::quiet_NaN();
        if (a.reduction == 0 && loss_pix) loss_pix[p0 + i] = l;
        tile_sum += l;
      }
      if (a.reduction != 0) tile_sums[tile] = tile_sum;
      if (!g) continue;
      acc_t scale[kTile];
      for (int64_t i = 0; i < n; ++i) {
        const double s = a.grad_loss ? static_cast<double>(a.grad_loss[a.gll.offset(p0 + i)]) : a.grad_scale;
        scale[i] = y[i] >= 0 ? static_cast<acc_t>(s) : acc_t(0);
      }
      const bool dense = unit_stride(goff, n);
      for (int c = 0; c < num_c; ++c) {
        const acc_t* vc = v.data() + c * kTile;
        if (dense) {
          scalar_t* gc = g + goff[0] + c * gsc;
          for (int i = 0; i < kTile; ++i) {
            const acc_t r = vc[i] * scale[i];
            gc[i] = static_cast<scalar_t>(valid[i] ? r : acc_t(0));
          }
        } else {
          for (int64_t i = 0; i < n; ++i) g[goff[i] + c * gsc] = static_cast<scalar_t>(y[i] >= 0 ? vc[i] * scale[i] : acc_t(0));
        }
      }
    }
  });
}

// Shared driver of the forward (grad_loss undefined) and the backward (grad_loss defined, reduction none).
std::tuple<at::Tensor, at::Tensor> ftm_cpu(const at::Tensor& logits, const at::Tensor& target, const at::Tensor& parent,
                                           const at::Tensor& bottom_up, const at::Tensor& ancestors, double gamma,
                                           int64_t ignore_index, int64_t reduction, bool compute_grad,
                                           bool partial, const at::Tensor* grad_loss, const char* op) {
  const int depth = check_ftm_args(logits, target, parent, bottom_up, ancestors, gamma, reduction, grad_loss, op);
  TORCH_CHECK(logits.device().is_cpu(), op, ": the CPU kernel got ", logits.device(), " tensors");

  const int num_c = static_cast<int>(logits.size(1));
  const int64_t num_p = logits.numel() / std::max<int64_t>(num_c, 1);
  const auto leaf = leaf_flags(parent.data_ptr<int32_t>(), num_c);
  const bool want_grad = grad_loss != nullptr || (compute_grad && reduction != 0);
  at::Tensor loss, grad;
  at::Tensor tile_sums;
  if (reduction == 0 && !grad_loss) {
    loss = at::empty(pixel_shape(logits), logits.options().dtype(at::kDouble));  // handed back in loss_dtype
  } else if (reduction != 0) {
    tile_sums = at::empty({(num_p + kTile - 1) / kTile}, logits.options().dtype(at::kDouble));
  }
  grad = want_grad ? at::empty(logits.sizes(), logits.options()) : at::empty({0}, logits.options());

  int64_t count = 0;
  dispatch_target(target.scalar_type(), [&](auto tag) {
    using tgt_t = decltype(tag);
    count = count_valid(target.data_ptr<tgt_t>(), pixel_layout(target, false), num_p, leaf, ignore_index, op);
  });
  const at::Tensor grad_loss64 = grad_loss ? grad_loss->to(at::kDouble) : at::Tensor();
  FtmArgs a{num_c, depth, parent.data_ptr<int32_t>(), bottom_up.data_ptr<int32_t>(), ancestors.data_ptr<int32_t>(),
            leaf.data(), partial, gamma, ignore_index, want_grad, grad_loss ? 0 : reduction,
            reduction == 2 ? 1.0 / static_cast<double>(std::max<int64_t>(count, 1)) : 1.0,
            grad_loss ? grad_loss64.data_ptr<double>() : nullptr,
            grad_loss ? pixel_layout(grad_loss64, false) : PixelLayout{}};
  if (grad_loss) a.reduction = 0;

  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, logits.scalar_type(), "hssn_ftm_cpu", [&] {
    using acc_t = std::conditional_t<std::is_same_v<scalar_t, double>, double, float>;
    dispatch_target(target.scalar_type(), [&](auto tag) {
      using tgt_t = decltype(tag);
      ftm_tiles<scalar_t, acc_t, tgt_t>(
          logits.data_ptr<scalar_t>(), pixel_layout(logits, true), logits.stride(1), target.data_ptr<tgt_t>(),
          pixel_layout(target, false), want_grad ? grad.data_ptr<scalar_t>() : nullptr,
          want_grad ? pixel_layout(grad, true) : PixelLayout{}, want_grad ? grad.stride(1) : 0,
          (reduction == 0 && !grad_loss) ? loss.data_ptr<double>() : nullptr,
          reduction != 0 ? tile_sums.data_ptr<double>() : nullptr, num_p, a);
    });
  });

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
#endif  // HSSN_WITH_CUDA

// The two ops on a driver (ftm_cpu or ftm_cuda): the forward (no grad_loss) and the backward (grad_loss,
// reduction none, the gradient only).
using FtmDriver = std::tuple<at::Tensor, at::Tensor> (*)(const at::Tensor&, const at::Tensor&, const at::Tensor&,
                                                         const at::Tensor&, const at::Tensor&, double, int64_t, int64_t,
                                                         bool, bool, const at::Tensor*, const char*);

template <FtmDriver driver>
std::tuple<at::Tensor, at::Tensor> ftm_forward(const at::Tensor& logits, const at::Tensor& target,
                                               const at::Tensor& parent, const at::Tensor& bottom_up,
                                               const at::Tensor& ancestors, double gamma, int64_t ignore_index,
                                               int64_t reduction, bool compute_grad, bool partial) {
  return driver(logits, target, parent, bottom_up, ancestors, gamma, ignore_index, reduction, compute_grad, partial,
                nullptr, "hssn::ftm_forward");
}

template <FtmDriver driver>
at::Tensor ftm_backward(const at::Tensor& grad_loss, const at::Tensor& logits, const at::Tensor& target,
                        const at::Tensor& parent, const at::Tensor& bottom_up, const at::Tensor& ancestors,
                        double gamma, int64_t ignore_index, bool partial) {
  return std::get<1>(driver(logits, target, parent, bottom_up, ancestors, gamma, ignore_index, 0, true, partial,
                            &grad_loss, "hssn::ftm_backward"));
}

}  // namespace

TORCH_LIBRARY_FRAGMENT(hssn, m) {
  m.def("ftm_forward(Tensor logits, Tensor target, Tensor parent, Tensor bottom_up, Tensor ancestors, float gamma, "
        "int ignore_index, int reduction, bool compute_grad, bool partial=False) -> (Tensor loss, Tensor grad)");
  m.def("ftm_backward(Tensor grad_loss, Tensor logits, Tensor target, Tensor parent, Tensor bottom_up, "
        "Tensor ancestors, float gamma, int ignore_index, bool partial=False) -> Tensor");
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
