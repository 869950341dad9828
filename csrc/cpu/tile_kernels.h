// The CPU kernels of hssn::ftm_forward / ftm_backward and hssn::path_argmax, compiled once per instruction
// set: isa_<name>.cpp includes cpu_kernels.h, sets `#pragma GCC target(...)`, defines HSSN_ISA (the
// namespace that keeps each compilation's symbols apart) and includes this file.
//
// Both kernels run tiles of kCpuTile pixels as channel-major [C][kCpuTile] blocks (fp32 math, fp64 for
// fp64 logits): every pass is a loop over the tile's pixels, one pixel per vector lane, written so that
// GCC vectorises it (exp / log from vec_math.h, bit-mask selects instead of branches, no gathers: GCC's
// generic tuning emulates them with scalar loads); per-pixel bookkeeping (offsets, labels, their DFS
// position) is scalar and once per pixel. No instruction of these builds reaches shared code: everything
// they define lives in namespace HSSN_ISA, and templates defined before the target pragma (std::, ATen)
// keep the baseline target. Deterministic: loss partial sums per fixed tile, added in tile order.
#pragma once

// GCC if-converts (and so vectorises) the tile loops only when float operations may be speculated: the
// kernels are compiled as with -fno-trapping-math (no code here reads floating-point exception flags);
// without unroll-and-jam, which fuses two rows' loops over the pixels into one it then leaves scalar; and
// without turning the tiles' zero / copy loops into memset / memcpy calls (`rep stos` / `rep movs`, whose
// start-up costs more than the few vector stores of a 64-pixel row).
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC optimize("no-trapping-math", "no-loop-unroll-and-jam", "no-tree-loop-distribute-patterns")
#endif

#include "vec_math.h"

namespace hssn {
namespace HSSN_ISA {

constexpr int kTile = static_cast<int>(kCpuTile);

// Offsets of pixels p0 .. p0 + n - 1 under layout l. Returns whether they are one contiguous run (a full
// tile at unit pixel stride, within a row or across rows / images laid out back to back): then only off[0]
// is written. Else every off[i] (one division per tile, then a row / image carry), past n off[0] (readable).
inline bool tile_offsets(const PixelLayout& l, int64_t p0, int64_t n, int64_t* off) {
  const int64_t hw = l.h * l.w;
  int64_t b = p0 / hw;
  const int64_t r = p0 - b * hw;
  int64_t y = r / l.w;
  int64_t x = r - y * l.w;
  off[0] = b * l.sb + y * l.sh + x * l.sw;
  const bool in_row = x + kTile <= l.w;
  const bool rows_run = l.sh == l.w && (r + kTile <= hw || l.sb == hw);
  if (n == kTile && l.sw == 1 && (in_row || rows_run)) return true;
  for (int64_t i = 0; i < n; ++i) {
    off[i] = b * l.sb + y * l.sh + x * l.sw;
    if (++x == l.w) {
      x = 0;
      if (++y == l.h) { y = 0; ++b; }
    }
  }
  for (int64_t i = n; i < kTile; ++i) off[i] = off[0];
  return false;
}

// Prefetch (kWrite: for writing) the kTile elements from p on: the next tile's run of a channel, which the
// hardware prefetchers miss when C runs are read at once (one stream per channel).
template <bool kWrite, class S>
inline void prefetch_run(const S* p) {
  for (size_t b = 0; b < kTile * sizeof(S); b += 64) __builtin_prefetch(reinterpret_cast<const char*>(p) + b, kWrite, 3);
}

// Channel c of a tile: f(i, x) for each pixel i and its logit x (as acc_t); one contiguous run when dense,
// else a gather through off.
template <class acc_t, class scalar_t, class F>
inline void load_channel(const scalar_t* z, const int64_t* off, bool dense, int64_t c_off, F&& f) {
  if (dense) {
    const scalar_t* zc = z + off[0] + c_off;
    prefetch_run<false>(zc + kTile);
#pragma omp simd
    for (int i = 0; i < kTile; ++i) f(i, static_cast<acc_t>(zc[i]));
  } else {
    for (int i = 0; i < kTile; ++i) f(i, static_cast<acc_t>(z[off[i] + c_off]));
  }
}

// ------------------------------------------------------------------------------------------ focal tree-min
// The passes over a tile (v: values, w: winners, r: the raw logits, all [C][kTile]).
// 1b. bottom-up max over Dsc(c) with its winner (lowest channel on ties).
template <class T>
void ftm_bottom_up(T* v, int32_t* w, int num_c, const int32_t* parent, const int32_t* bottom_up) {
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

// The tree as the tile passes read it: parent and bottom-up order, and per channel its DFS interval
// [pos, pos + size) (on the label's path <=> the label's position lies in it; size 1: a leaf), its depth
// (0 = a root) and, as a label, pos | path length << 16 (0 where it cannot be one: an inner node without
// partial labels).
struct TileTree {
  int num_c, depth;  // channels; rows of the path tables (the deepest path's length)
  const int32_t *parent, *bottom_up;
  std::vector<int32_t> pos, size, level, as_label;

  TileTree(const FtmLaunch& L) : num_c(L.num_c), depth(L.depth), parent(L.parent), bottom_up(L.bottom_up),
                                 pos(L.num_c), size(L.num_c), level(L.num_c), as_label(L.num_c) {
    const int32_t* dfs = L.dfs;
    for (int c = 0; c < num_c; ++c) {
      pos[c] = dfs[3 * num_c + c];
      size[c] = dfs[num_c + pos[c]];
      level[c] = dfs[2 * num_c + pos[c]];
      as_label[c] = (L.partial || size[c] == 1) ? pos[c] | (level[c] + 1) << 16 : 0;
    }
  }
};

// 2. top-down, parents first: the negative terms of the off-path nodes into loss and (kGrad) the gradient
// owed to each winner carried down its chain, in place of v; w = -1 marks the path (the lanes whose label
// position lpos lies in the node's interval). kPartial: a node whose parent is the label (or is itself
// below it, w = -2) is a strict descendant of the label: marked -2, no term.
template <int kGamma, bool kGrad, bool kPartial, class T>
void ftm_top_down(T* v, int32_t* w, const TileTree& tr, T gamma, const int32_t* label, const int32_t* lpos,
                  T* loss) {
  for (int k = tr.num_c - 1; k >= 0; --k) {
    const int c = tr.bottom_up[k];
    const int p = tr.parent[c];
    const bool root = p < 0;
    const int32_t pos = tr.pos[c];
    const uint32_t size = static_cast<uint32_t>(tr.size[c]);
    T* vc = v + c * kTile;
    int32_t* wc = w + c * kTile;
    const T* vp = v + (root ? c : p) * kTile;
    const int32_t* wp = w + (root ? c : p) * kTile;
#pragma omp simd
    for (int i = 0; i < kTile; ++i) {
      T l, dz;
      vfocal_term<false, kGamma>(vc[i], gamma, &l, &dz);
      const bool on = static_cast<uint32_t>(lpos[i] - pos) < size;
      bool off_path = !on;
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
      wc[i] = on ? -1 : wc[i];
    }
  }
}

// 3. the path, root first: pm / pw (the path's raw logits and channels by level) become the running min
// from the root and where it sits (lowest channel on ties); one positive term per level below the lane's
// path length len, its gradient into pdz (0 past the path), owed to the channel pw.
template <int kGamma, class T>
void ftm_path(T* pm, int32_t* pw, T* pdz, const int32_t* len, int depth, T gamma, T* loss) {
  for (int k = 0; k < depth; ++k) {
    T* pm_k = pm + k * kTile;
    int32_t* pw_k = pw + k * kTile;
    const T* pm_up = pm + (k > 0 ? k - 1 : 0) * kTile;
    const int32_t* pw_up = pw + (k > 0 ? k - 1 : 0) * kTile;
    T* pdz_k = pdz + k * kTile;
#pragma omp simd
    for (int i = 0; i < kTile; ++i) {
      const bool keep_up = (k > 0) & ((pm_up[i] < pm_k[i]) | ((pm_up[i] == pm_k[i]) & (pw_up[i] < pw_k[i])));
      const T m = keep_up ? pm_up[i] : pm_k[i];
      pw_k[i] = keep_up ? pw_up[i] : pw_k[i];
      pm_k[i] = m;
      T l, d;
      vfocal_term<true, kGamma>(m, gamma, &l, &d);
      const bool act = k < len[i];
      loss[i] += keep_if(l, act);
      pdz_k[i] = keep_if(d, act);
    }
  }
}

// The step-2 and step-3 instantiations for this gamma (exact shortcuts for 0 and 2), gradient flag and
// label kind.
template <class T>
struct FtmPasses {
  using TopDown = void (*)(T*, int32_t*, const TileTree&, T, const int32_t*, const int32_t*, T*);
  using Path = void (*)(T*, int32_t*, T*, const int32_t*, int, T, T*);
  TopDown top_down;
  Path path;
};

template <int kGamma, bool kGrad, class T>
FtmPasses<T> ftm_passes_g(bool partial) {
  return {partial ? ftm_top_down<kGamma, kGrad, true, T> : ftm_top_down<kGamma, kGrad, false, T>,
          ftm_path<kGamma, T>};
}

template <class T>
FtmPasses<T> ftm_passes(double gamma, bool grad, bool partial) {
  if (gamma == 2.0) return grad ? ftm_passes_g<2, true, T>(partial) : ftm_passes_g<2, false, T>(partial);
  if (gamma == 0.0) return grad ? ftm_passes_g<0, true, T>(partial) : ftm_passes_g<0, false, T>(partial);
  return grad ? ftm_passes_g<1, true, T>(partial) : ftm_passes_g<1, false, T>(partial);
}

template <class scalar_t, class acc_t, class tgt_t>
void ftm_tiles(const FtmLaunch& L) {
  const auto* z = static_cast<const scalar_t*>(L.z);
  const auto* t = static_cast<const tgt_t*>(L.t);
  auto* g = static_cast<scalar_t*>(L.g);
  const TileTree tr(L);
  const int num_c = L.num_c, depth = L.depth;
  const int64_t tiles = (L.num_p + kTile - 1) / kTile;
  const acc_t gamma = static_cast<acc_t>(L.gamma);
  const FtmPasses<acc_t> passes = ftm_passes<acc_t>(L.gamma, g != nullptr, L.partial);
  at::parallel_for(0, tiles, 16, [&](int64_t tb, int64_t te) {
    const size_t rows = static_cast<size_t>(num_c) * kTile, path_rows = static_cast<size_t>(depth) * kTile;
    std::vector<acc_t> v_buf(rows), pm_buf(path_rows), pdz_buf(path_rows);
    std::vector<int32_t> w_buf(rows), pw_buf(path_rows);
    acc_t *v = v_buf.data(), *pm = pm_buf.data(), *pdz = pdz_buf.data();
    int32_t *w = w_buf.data(), *pw = pw_buf.data();
    int64_t zoff[kTile], toff[kTile], goff[kTile];
    alignas(64) int32_t label[kTile];  // the pixel's label, -1 where ignored or invalid
    alignas(64) int32_t lpos[kTile];   // its DFS position (-1: none)
    alignas(64) int32_t len[kTile];    // its path length (0: none)
    alignas(64) acc_t loss[kTile];
    alignas(64) acc_t scale[kTile];    // gradient weight, 0 where ignored
    alignas(64) int32_t nan[kTile];    // a NaN logit that enters no term (partial labels): NaN loss
    alignas(64) int32_t bad_label[kTile];  // neither ignore_index nor a leaf: NaN loss, zero gradient
    for (int64_t tile = tb; tile < te; ++tile) {
      const int64_t p0 = tile * kTile;
      const int64_t n = std::min<int64_t>(kTile, L.num_p - p0);
      const bool zdense = tile_offsets(L.zl, p0, n, zoff);
      // 0. labels (ignore_index past n): read in place when the tile's targets are one run
      const bool tdense = tile_offsets(L.tl, p0, n, toff);
      const tgt_t* tt = t + toff[0];
      int32_t any = 0;
      for (int i = 0; i < kTile; ++i) {  // scalar (a table load per pixel), no branch but the uniform tdense
        const int64_t yi = tdense ? static_cast<int64_t>(tt[i]) : i < n ? static_cast<int64_t>(t[toff[i]])
                                                                          : L.ignore_index;
        const bool in = static_cast<uint64_t>(yi) < static_cast<uint64_t>(num_c);
        const int32_t info = tr.as_label[in ? yi : 0] & -static_cast<int32_t>(in);
        const bool ok = info != 0;
        label[i] = ok ? static_cast<int32_t>(yi) : -1;
        lpos[i] = ok ? (info & 0xffff) : -1;
        len[i] = info >> 16;
        bad_label[i] = (i < n) & (yi != L.ignore_index) & !ok;
        any |= ok;
      }
#pragma omp simd
      for (int i = 0; i < kTile; ++i) {
        loss[i] = acc_t(0);
        nan[i] = 0;
      }
      if (any) {
        // 1. the logits into v (0 where ignored), winners w = c; on the label's path, the logit and the
        // channel into row level(c) of pm and pw
        for (int c = 0; c < num_c; ++c) {
          acc_t* vc = v + c * kTile;
          int32_t* wc = w + c * kTile;
          const int32_t pos = tr.pos[c];
          const uint32_t size = static_cast<uint32_t>(tr.size[c]);
          acc_t* pm_d = pm + tr.level[c] * kTile;
          int32_t* pw_d = pw + tr.level[c] * kTile;
          load_channel<acc_t>(z, zoff, zdense, c * L.zsc, [&](int i, acc_t x) {
            x = label[i] >= 0 ? x : acc_t(0);
            vc[i] = x;
            wc[i] = c;
            const bool on = static_cast<uint32_t>(lpos[i] - pos) < size;
            pm_d[i] = blend(on, x, pm_d[i]);  // not ?: (a masked store behind a branch per vector)
            pw_d[i] = blend(on, c, pw_d[i]);
          });
        }
        // NaN logits: every logit of a labelled pixel enters a term (a NaN is never the max or the min of a
        // comparison, so it stays in its own node's v and the path's running min), so the pixel's loss is NaN
        // by itself; with partial labels the strict descendants of the label enter none: flagged here
        if (L.partial) {
          for (int c = 0; c < num_c; ++c) {
            const acc_t* vc = v + c * kTile;
#pragma omp simd
            for (int i = 0; i < kTile; ++i) nan[i] |= static_cast<int32_t>(vc[i] != vc[i]);
          }
        }
        ftm_bottom_up(v, w, num_c, L.parent, L.bottom_up);
        passes.top_down(v, w, tr, gamma, label, lpos, loss);
        passes.path(pm, pw, pdz, len, depth, gamma, loss);
      }
      // the pixels' losses: NaN for a NaN logit or a bad label, 0 where ignored (and past the end)
      alignas(64) double lpix[kTile];
      double tile_sum = 0.0;
#pragma omp simd reduction(+ : tile_sum)
      for (int i = 0; i < kTile; ++i) {
        const double l = label[i] >= 0 ? static_cast<double>(loss[i]) : 0.0;
        lpix[i] = (nan[i] | bad_label[i]) ? std::numeric_limits<double>::quiet_NaN() : l;
        tile_sum += lpix[i];
      }
      if (L.loss_pix) std::memcpy(L.loss_pix + p0, lpix, static_cast<size_t>(n) * sizeof(double));
      if (L.tile_sums) L.tile_sums[tile] = tile_sum;
      if (!g) continue;
      if (L.grad_loss) {
        const bool wdense = tile_offsets(L.gll, p0, n, toff);
        for (int i = 0; i < kTile; ++i)
          scale[i] = label[i] >= 0 ? static_cast<acc_t>(L.grad_loss[wdense ? toff[0] + i : toff[i]]) : acc_t(0);
      } else {
        const acc_t s = static_cast<acc_t>(L.grad_scale);
#pragma omp simd
        for (int i = 0; i < kTile; ++i) scale[i] = label[i] >= 0 ? s : acc_t(0);
      }
      // 4. the gradient: each channel's own chain (w = c) plus the positive terms whose running min it is
      const bool dense = tile_offsets(L.gl, p0, n, goff);
      for (int c = 0; c < num_c; ++c) {
        acc_t* vc = v + c * kTile;
        const int32_t* wc = w + c * kTile;
#pragma omp simd
        for (int i = 0; i < kTile; ++i) vc[i] = keep_if(vc[i], wc[i] == c);
        for (int k = tr.level[c]; k < depth; ++k) {
          const acc_t* pdz_k = pdz + k * kTile;
          const int32_t* pw_k = pw + k * kTile;
#pragma omp simd
          for (int i = 0; i < kTile; ++i) vc[i] += keep_if(pdz_k[i], pw_k[i] == c);
        }
        if (dense) {
          scalar_t* gc = g + goff[0] + c * L.gsc;
          prefetch_run<true>(gc + kTile);
#pragma omp simd
          for (int i = 0; i < kTile; ++i) gc[i] = static_cast<scalar_t>(keep_if(vc[i] * scale[i], label[i] >= 0));
        } else {
          for (int64_t i = 0; i < n; ++i)
            g[goff[i] + c * L.gsc] = static_cast<scalar_t>(keep_if(vc[i] * scale[i], label[i] >= 0));
        }
      }
    }
  });
}

void ftm(const FtmLaunch& L) {
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, L.dtype, "hssn_ftm_cpu", [&] {
    using acc_t = std::conditional_t<std::is_same_v<scalar_t, double>, double, float>;
    dispatch_target(L.target_dtype, [&](auto tag) { ftm_tiles<scalar_t, acc_t, decltype(tag)>(L); });
  });
}

// ------------------------------------------------------------------------------------------ path argmax
// Path inference (Eq. 3) per tile: sigmoid scores (channels in ascending order: each channel's run streams
// in the order of the planes), root-path sums in DFS pre-order (parent's sum + own score, root first as the
// reference sums), then the leaf with the largest sum (leaves in ascending channel order, so the lowest
// channel wins ties).
template <class scalar_t, class acc_t>
void path_tiles(const PathLaunch& L) {
  const auto* z = static_cast<const scalar_t*>(L.z);
  const int num_c = L.num_c;
  const int32_t *perm = L.dfs, *size = L.dfs + num_c, *node_depth = L.dfs + 2 * num_c, *pos = L.dfs + 3 * num_c;
  std::vector<int32_t> leaves, sum_to, sum_from;  // leaves ascending; the sums pass: row sum_to += row sum_from
  int32_t open[kMaxDepth];                          // the channel open at each depth of the DFS walk
  for (int j = 0; j < num_c; ++j) {
    open[node_depth[j]] = perm[j];
    if (node_depth[j] > 0) {
      sum_to.push_back(perm[j]);
      sum_from.push_back(open[node_depth[j] - 1]);
    }
  }
  for (int c = 0; c < num_c; ++c)
    if (size[pos[c]] == 1) leaves.push_back(c);
  const int64_t tiles = (L.num_p + kTile - 1) / kTile;
  at::parallel_for(0, tiles, 16, [&](int64_t tb, int64_t te) {
    std::vector<acc_t> v_buf(static_cast<size_t>(num_c) * kTile);
    acc_t* v = v_buf.data();
    int64_t zoff[kTile];
    alignas(64) acc_t best_v[kTile];
    alignas(64) int32_t best[kTile];
    for (int64_t tile = tb; tile < te; ++tile) {
      const int64_t p0 = tile * kTile;
      const int64_t n = std::min<int64_t>(kTile, L.num_p - p0);
      const bool dense = tile_offsets(L.zl, p0, n, zoff);
      for (int c = 0; c < num_c; ++c) {
        acc_t* vc = v + c * kTile;
        load_channel<acc_t>(z, zoff, dense, c * L.zsc, [&](int i, acc_t x) { vc[i] = vsigmoid_or_0(x); });
      }
      for (size_t k = 0; k < sum_to.size(); ++k) {
        acc_t* vc = v + sum_to[k] * kTile;
        const acc_t* vp = v + sum_from[k] * kTile;
#pragma omp simd
        for (int i = 0; i < kTile; ++i) vc[i] = vp[i] + vc[i];
      }
      const int32_t first = leaves[0];
      for (int i = 0; i < kTile; ++i) { best_v[i] = v[first * kTile + i]; best[i] = first; }
      for (size_t r = 1; r < leaves.size(); ++r) {
        const int32_t c = leaves[r];
        const acc_t* vc = v + c * kTile;
#pragma omp simd
        for (int i = 0; i < kTile; ++i) {
          const bool take = vc[i] > best_v[i];
          best_v[i] = blend(take, vc[i], best_v[i]);
          best[i] = blend(take, c, best[i]);
        }
      }
      for (int64_t i = 0; i < n; ++i) L.out[p0 + i] = best[i];
    }
  });
}

void path_argmax(const PathLaunch& L) {
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, L.dtype, "hssn_path_argmax_cpu", [&] {
    using acc_t = std::conditional_t<std::is_same_v<scalar_t, double>, double, float>;
    path_tiles<scalar_t, acc_t>(L);
  });
}

// This build's table (cpu_kernels.h: CpuKernels), named isa.
constexpr CpuKernels kernels(const char* isa) { return {isa, &ftm, &path_argmax}; }

}  // namespace HSSN_ISA
}  // namespace hssn
