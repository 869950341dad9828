// CPU kernels of hssn::sample_triplets (the reference's counter-based sampler, bit for bit) and
// hssn::triplet_forward (hinge loss with its gradient; repeated pixels summed in slot order).
#include <ATen/Dispatch.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/full.h>
#include <ATen/ops/zeros.h>
#include <torch/library.h>

#include <algorithm>
#include <numeric>
#include <vector>

#include "../ops_common.h"
#include "cpu_common.h"

namespace hssn {
namespace {

// Leaf position of label y; raises for a label that is not a leaf.
inline int64_t leaf_pos(int64_t y, const int32_t* leaf_index, int64_t num_c, const char* op) {
  TORCH_CHECK(y >= 0 && y < num_c && leaf_index[y] >= 0, op, ": target holds ", y,
              ", which is neither a leaf channel of the hierarchy (", num_c, " channels) nor ignore_index");
  return leaf_index[y];
}

std::tuple<at::Tensor, at::Tensor> sample_triplets_cpu(const at::Tensor& target, const at::Tensor& leaf_index,
                                                       const at::Tensor& tree_distance, int64_t num_triplets,
                                                       int64_t seed, int64_t ignore_index, int64_t mode) {
  const char* op = "hssn::sample_triplets";
  check_sample_args(target, leaf_index, tree_distance, num_triplets, seed, mode, op);
  TORCH_CHECK(target.device().is_cpu(), op, ": the CPU kernel got ", target.device(), " tensors");
  at::Tensor out = at::full({num_triplets, 3}, -1, target.options().dtype(at::kLong));
  const int64_t num_c = leaf_index.numel();
  const int64_t num_l = tree_distance.size(0);
  const int32_t* li = leaf_index.data_ptr<int32_t>();
  const int32_t* dist = tree_distance.data_ptr<int32_t>();
  int64_t accepted = 0;
  dispatch_target(target.scalar_type(), [&](auto tag) {
    using tgt_t = decltype(tag);
    const at::Tensor flat = target.reshape({-1});
    const tgt_t* t = flat.data_ptr<tgt_t>();
    const int64_t num_p = flat.numel();
    std::vector<int64_t> valid;
    for (int64_t p = 0; p < num_p; ++p)
      if (static_cast<int64_t>(t[p]) != ignore_index) valid.push_back(p);
    const int64_t nv = static_cast<int64_t>(valid.size());
    TORCH_CHECK(nv < (int64_t{1} << 31), op, ": ", nv, " valid pixels; sampling supports fewer than 2**31");
    if (nv == 0 || num_triplets == 0) return;
    const uint32_t key = hash32(static_cast<uint32_t>(seed));
    int64_t* o = out.data_ptr<int64_t>();
    const int64_t attempts = kAttemptsPerTriplet * num_triplets;
    for (int64_t k = 0; k < attempts && accepted < num_triplets; ++k) {
      int64_t cand[3], lf[3];
      for (int j = 0; j < 3; ++j) {
        cand[j] = valid[draw_rank(triplet_rand(key, static_cast<uint64_t>(3 * k + j)), nv)];
        const int64_t y = static_cast<int64_t>(t[cand[j]]);
        lf[j] = (y >= 0 && y < num_c) ? li[y] : -1;  // -1: no leaf (validation skipped): attempt rejected
        TORCH_CHECK(lf[j] < num_l, op, ": leaf_index and tree_distance disagree");
      }
      bool x_pos = false;
      if (lf[0] < 0 || lf[1] < 0 || lf[2] < 0) continue;
      if (!accept_triplet(cand[0], cand[1], cand[2], dist[lf[0] * num_l + lf[1]], dist[lf[0] * num_l + lf[2]],
                          static_cast<int>(mode), &x_pos))
        continue;
      o[3 * accepted] = cand[0];
      o[3 * accepted + 1] = x_pos ? cand[1] : cand[2];
      o[3 * accepted + 2] = x_pos ? cand[2] : cand[1];
      ++accepted;
    }
  });
  at::Tensor count = at::full({}, accepted, target.options().dtype(at::kLong));
  return {out, count};
}

std::tuple<at::Tensor, at::Tensor> triplet_forward_cpu(const at::Tensor& embeddings, const at::Tensor& target,
                                                       const at::Tensor& triplets, const at::Tensor& count_t,
                                                       const at::Tensor& leaf_index, const at::Tensor& tree_distance,
                                                       double margin_eps, double margin_scale, int64_t height,
                                                       bool hierarchy_margin, int64_t distance, bool compute_grad) {
  const char* op = "hssn::triplet_forward";
  check_triplet_args(embeddings, target, triplets, count_t, leaf_index, tree_distance, height, distance, op);
  TORCH_CHECK(embeddings.device().is_cpu(), op, ": the CPU kernel got ", embeddings.device(), " tensors");
  const int64_t num_e = embeddings.size(1);
  const int64_t num_p = embeddings.numel() / std::max<int64_t>(num_e, 1);
  const int64_t count = count_t.item<int64_t>();
  TORCH_CHECK(count >= 0 && count <= triplets.size(0), op, ": count ", count, " outside [0, ", triplets.size(0), "]");
  at::Tensor grad = compute_grad ? at::zeros(embeddings.sizes(), embeddings.options()) : at::empty({0}, embeddings.options());
  const at::Tensor trip = triplets.contiguous();
  const int64_t* tr = trip.data_ptr<int64_t>();
  for (int64_t i = 0; i < 3 * count; ++i)
    TORCH_CHECK(tr[i] >= 0 && tr[i] < num_p, op, ": triplet pixel index ", tr[i], " outside [0, ", num_p, ")");
  const int64_t num_c = leaf_index.numel();
  const int64_t num_l = tree_distance.size(0);
  const int32_t* li = leaf_index.data_ptr<int32_t>();
  const int32_t* dist = tree_distance.data_ptr<int32_t>();
  const PixelLayout el = pixel_layout(embeddings, true);
  const PixelLayout tl = pixel_layout(target, false);
  const int64_t esc = embeddings.stride(1);
  double loss = 0.0;

  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, embeddings.scalar_type(), "hssn_triplet_cpu", [&] {
    using acc_t = std::conditional_t<std::is_same_v<scalar_t, double>, double, float>;
    const scalar_t* e = embeddings.data_ptr<scalar_t>();
    std::vector<TripletGrad<acc_t>> coef(count);
    std::vector<int64_t> off(3 * count);
    acc_t hinge_sum = 0;
    const acc_t scale = acc_t(1) / static_cast<acc_t>(std::max<int64_t>(count, 1));
    dispatch_target(target.scalar_type(), [&](auto tag) {
      using tgt_t = decltype(tag);
      const tgt_t* t = target.data_ptr<tgt_t>();
      for (int64_t k = 0; k < count; ++k) {
        for (int j = 0; j < 3; ++j) off[3 * k + j] = el.offset(tr[3 * k + j]);
        TripletSums<acc_t> s;
        for (int64_t d = 0; d < num_e; ++d)
          s.add(static_cast<acc_t>(e[off[3 * k] + d * esc]), static_cast<acc_t>(e[off[3 * k + 1] + d * esc]),
                static_cast<acc_t>(e[off[3 * k + 2] + d * esc]));
        acc_t margin = static_cast<acc_t>(margin_eps);
        if (hierarchy_margin) {
          int64_t lf[3];
          for (int j = 0; j < 3; ++j) lf[j] = leaf_pos(static_cast<int64_t>(t[tl.offset(tr[3 * k + j])]), li, num_c, op);
          TORCH_CHECK(std::max({lf[0], lf[1], lf[2]}) < num_l, op, ": leaf_index and tree_distance disagree");
          const int32_t gap = dist[lf[0] * num_l + lf[2]] - dist[lf[0] * num_l + lf[1]];
          margin += static_cast<acc_t>(margin_scale) * static_cast<acc_t>(gap) / static_cast<acc_t>(2 * height);
        }
        coef[k] = triplet_grad<acc_t>(s, margin, static_cast<int>(distance), scale, static_cast<acc_t>(kCosineEps));
        hinge_sum += coef[k].hinge;
      }
    });
    loss = static_cast<double>(hinge_sum) / static_cast<double>(std::max<int64_t>(count, 1));
    if (!compute_grad || count == 0) return;
    // Slots sorted by pixel (stable): each pixel's row is the sum of its slots' rows in slot order.
    std::vector<int64_t> order(3 * count);
    std::iota(order.begin(), order.end(), 0);
    std::stable_sort(order.begin(), order.end(), [&](int64_t x, int64_t y) { return tr[x] < tr[y]; });
    scalar_t* g = grad.data_ptr<scalar_t>();
    const PixelLayout gl = pixel_layout(grad, true);
    const int64_t gsc = grad.stride(1);
    std::vector<acc_t> row(num_e);
    for (int64_t i = 0; i < 3 * count;) {
      int64_t j = i;
      std::fill(row.begin(), row.end(), acc_t(0));
      while (j < 3 * count && tr[order[j]] == tr[order[i]]) {
        const int64_t slot = order[j], k = slot / 3, role = slot % 3;
        const TripletGrad<acc_t>& c = coef[k];
        const int64_t oa = off[3 * k], op_ = off[3 * k + 1], on = off[3 * k + 2];
        for (int64_t d = 0; d < num_e; ++d) {
          const acc_t a = static_cast<acc_t>(e[oa + d * esc]);
          const acc_t p = static_cast<acc_t>(e[op_ + d * esc]);
          const acc_t n = static_cast<acc_t>(e[on + d * esc]);
          row[d] += role == 0 ? c.ka[0] * a + c.ka[1] * p + c.ka[2] * n
                              : (role == 1 ? c.kp[0] * a + c.kp[1] * p : c.kn[0] * a + c.kn[1] * n);
        }
        ++j;
      }
      const int64_t go = gl.offset(tr[order[i]]);
      for (int64_t d = 0; d < num_e; ++d) g[go + d * gsc] = static_cast<scalar_t>(row[d]);
      i = j;
    }
  });
  return {at::full({}, loss, embeddings.options().dtype(loss_dtype(embeddings))), grad};
}

}  // namespace

TORCH_LIBRARY_IMPL(hssn, CPU, m) {
  m.impl("sample_triplets", &sample_triplets_cpu);
  m.impl("triplet_forward", &triplet_forward_cpu);
}

}  // namespace hssn
