// hssn::sample_triplets / hssn::triplet_forward: the schemas, the argument checks, the CPU kernels and their
// registration, and in CUDA builds the ATen glue around the launchers of cuda/tree_triplet.cu.
// CPU kernels: the sampler is the reference's counter-based one, bit for bit; the loss is the hinge with its
// gradient (repeated pixels summed in slot order).
#include <ATen/Dispatch.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/full.h>
#include <ATen/ops/zeros.h>
#include <torch/library.h>
#ifdef HSSN_WITH_CUDA
#include <ATen/ops/cumsum.h>
#include <ATen/ops/div.h>
#include <ATen/ops/ne.h>
#include <ATen/ops/sum.h>
#include <ATen/ops/clamp_min.h>
#endif

#include <algorithm>
#include <numeric>
#include <vector>

#include "../ops_common.h"
#include "../cpu/cpu_common.h"

namespace hssn {
namespace {

// hssn::sample_triplets.
void check_sample_args(const at::Tensor& target, const at::Tensor& leaf_index, const at::Tensor& tree_distance,
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
void check_triplet_args(const at::Tensor& embeddings, const at::Tensor& target, const at::Tensor& triplets,
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
        acc_t mx[3] = {0, 0, 0}, rs[3];
        for (int64_t d = 0; d < num_e; ++d)
          for (int j = 0; j < 3; ++j) mx[j] = max_abs(mx[j], static_cast<acc_t>(e[off[3 * k + j] + d * esc]));
        row_scales(mx[0], mx[1], mx[2], static_cast<int>(distance), rs);
        TripletSums<acc_t> s;
        for (int64_t d = 0; d < num_e; ++d)
          s.add(static_cast<acc_t>(e[off[3 * k] + d * esc]) * rs[0],
                static_cast<acc_t>(e[off[3 * k + 1] + d * esc]) * rs[1],
                static_cast<acc_t>(e[off[3 * k + 2] + d * esc]) * rs[2]);
        acc_t margin = static_cast<acc_t>(margin_eps);
        if (hierarchy_margin) {
          int64_t lf[3];
          for (int j = 0; j < 3; ++j) lf[j] = leaf_pos(static_cast<int64_t>(t[tl.offset(tr[3 * k + j])]), li, num_c, op);
          TORCH_CHECK(std::max({lf[0], lf[1], lf[2]}) < num_l, op, ": leaf_index and tree_distance disagree");
          const int32_t gap = dist[lf[0] * num_l + lf[2]] - dist[lf[0] * num_l + lf[1]];
          margin += static_cast<acc_t>(margin_scale) * static_cast<acc_t>(gap) / static_cast<acc_t>(2 * height);
        }
        coef[k] = triplet_grad<acc_t>(s, margin, static_cast<int>(distance), scale, static_cast<acc_t>(kCosineEps), rs);
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
          const acc_t a = static_cast<acc_t>(e[oa + d * esc]) * c.rs[0];
          const acc_t p = static_cast<acc_t>(e[op_ + d * esc]) * c.rs[1];
          const acc_t n = static_cast<acc_t>(e[on + d * esc]) * c.rs[2];
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

#ifdef HSSN_WITH_CUDA
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
  at::Tensor coef = compute_grad ? at::empty({num_t, cuda::kTripletCoef}, embeddings.options().dtype(at::kFloat)) : at::Tensor();
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
#endif  // HSSN_WITH_CUDA

}  // namespace

TORCH_LIBRARY_FRAGMENT(hssn, m) {
  m.def("sample_triplets(Tensor target, Tensor leaf_index, Tensor tree_distance, int num_triplets, int seed, "
        "int ignore_index, int mode) -> (Tensor triplets, Tensor count)");
  m.def("triplet_forward(Tensor embeddings, Tensor target, Tensor triplets, Tensor count, Tensor leaf_index, "
        "Tensor tree_distance, float margin_eps, float margin_scale, int height, bool hierarchy_margin, "
        "int distance, bool compute_grad) -> (Tensor loss, Tensor grad)");
}

TORCH_LIBRARY_IMPL(hssn, CPU, m) {
  m.impl("sample_triplets", &sample_triplets_cpu);
  m.impl("triplet_forward", &triplet_forward_cpu);
}

#ifdef HSSN_WITH_CUDA
TORCH_LIBRARY_IMPL(hssn, CUDA, m) {
  m.impl("sample_triplets", &sample_triplets_cuda);
  m.impl("triplet_forward", &triplet_forward_cuda);
}
#endif

}  // namespace hssn
