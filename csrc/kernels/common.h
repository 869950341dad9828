// Torch-free building blocks of the CPU (.cpp) and CUDA (.cu) kernels: layouts, the focal terms, the
// triplet RNG and the per-pixel walks the CUDA kernels run (ftm_walk, path_walk) over the hierarchy's DFS
// pre-order tables (HierarchyTables.dfs, rows perm / size / depth / pos: Dsc(v) is the position range
// [pos[v], pos[v] + size[pos[v]])); the CPU kernels run their own [C][tile] passes (cpu/tile_kernels.h).
// tests/test_kernel_header.py compiles the walks as plain C++ and checks them against the reference.
// Everything here is exactly the semantics of hssn_kernels/reference.py (ties go to the lowest channel;
// math in float32, float64 for float64).
#pragma once

#include <cmath>
#include <cstdint>

#ifdef __CUDACC__
#define HSSN_HD __host__ __device__ __forceinline__
#define HSSN_CUDA_PRAGMA(x) _Pragma(#x)  // a loop pragma nvcc reads (host compilers would warn on it)
#else
#define HSSN_HD inline
#define HSSN_CUDA_PRAGMA(x)
#endif

namespace hssn {

constexpr int kMaxDepth = 16;  // hierarchy.MAX_DEPTH: the deepest tree every kernel takes

// Pixel p = (b * H + y) * W + x of a (B, [C,] H, W) or (N, [C]) tensor.
struct PixelPos {
  int64_t b, y, x;
};

// Its offset under strides: b*sb + y*sh + x*sw.
struct PixelLayout {
  int64_t h = 1, w = 1;
  int64_t sb = 0, sh = 0, sw = 0;
  HSSN_HD int64_t at(const PixelPos& q) const { return q.b * sb + q.y * sh + q.x * sw; }
  HSSN_HD PixelPos pos(int64_t p) const {  // 32-bit divisions below 2^31 pixels (a GPU emulates 64-bit ones)
    if (p < (int64_t{1} << 31) && h * w < (int64_t{1} << 31)) {
      const uint32_t hw = static_cast<uint32_t>(h * w), w32 = static_cast<uint32_t>(w), p32 = static_cast<uint32_t>(p);
      const uint32_t b = p32 / hw, r = p32 - b * hw, y = r / w32;
      return {b, y, r - y * w32};
    }
    const int64_t b = p / (h * w), r = p - b * (h * w), y = r / w;
    return {b, y, r - y * w};
  }
  HSSN_HD int64_t offset(int64_t p) const { return at(pos(p)); }
};

// exp, log2 and x / y for the CUDA walks: in float32 on the GPU the PTX approximations the Triton kernels
// run (_triton_utils.fast_exp, fast_log2, fast_div: ex2 / lg2 / rcp .approx.ftz, one MUFU op each; results
// below 2^-126 flush to 0); elsewhere (float64, the host) the libm functions and exact division.
#ifdef __CUDA_ARCH__
__device__ __forceinline__ float ptx_ex2(float x) { float y; asm("ex2.approx.ftz.f32 %0, %1;" : "=f"(y) : "f"(x)); return y; }
__device__ __forceinline__ float ptx_lg2(float x) { float y; asm("lg2.approx.ftz.f32 %0, %1;" : "=f"(y) : "f"(x)); return y; }
__device__ __forceinline__ float ptx_rcp(float x) { float y; asm("rcp.approx.ftz.f32 %0, %1;" : "=f"(y) : "f"(x)); return y; }
#endif
template <class T> HSSN_HD T fexp(T x) {
#ifdef __CUDA_ARCH__
  if constexpr (sizeof(T) == 4) return ptx_ex2(x * 1.44269504088896341f);
#endif
  if constexpr (sizeof(T) == 4) return expf(x); else return exp(x);
}
template <class T> HSSN_HD T flog2(T x) {
#ifdef __CUDA_ARCH__
  if constexpr (sizeof(T) == 4) return ptx_lg2(x);
#endif
  if constexpr (sizeof(T) == 4) return log2f(x); else return log2(x);
}
template <class T> HSSN_HD T fdiv(T x, T y) {
#ifdef __CUDA_ARCH__
  if constexpr (sizeof(T) == 4) return x * ptx_rcp(y);
#endif
  return x / y;
}
template <class T> HSSN_HD T fabs_(T x) { return x < T(0) ? -x : x; }

// The focal weight x^gamma from log x: kGamma 2 and 0 are exact shortcuts, kGamma 1 means any other gamma
// (ftm_gamma_kind picks it at launch, so no kernel branches on gamma).
template <int kGamma, class T> HSSN_HD T focal_pow(T x, T log_x, T gamma) {
  if constexpr (kGamma == 2) return x * x;
  else if constexpr (kGamma == 0) return T(1);
  else return fexp(gamma * log_x);
}
inline int ftm_gamma_kind(double gamma) { return gamma == 2.0 ? 2 : gamma == 0.0 ? 0 : 1; }

template <class T> struct Term { T loss; T dz; };

// -l (1-p)^g log p  (positive = true) or  -(1-l) p^g log(1-p)  (positive = false) at p = sigmoid(z),
// and its derivative with respect to z.
// log1p(e) of e = exp(-|z|) as the Triton kernels compute it: in float32 a 4-term series below e = 1/64
// (relative error < 2^-26) and log2(1 + e) ln 2 above (one MUFU op on the GPU, relative error < 2^-17); in
// float64 log(u) with the rounding error of u = 1 + e restored to first order (u - 1 is exact).
template <int kGamma, class T> HSSN_HD Term<T> focal_term(T z, bool positive, T gamma) {
  const T e = fexp(-fabs_(z));
  const T u = T(1) + e;
  const T inv = fdiv(T(1), u);  // u in [1, 2]
  T log1p_e;
  if constexpr (sizeof(T) == 4) {
    log1p_e = e < T(0.015625) ? e * (T(1) - e * (T(0.5) - e * (T(0.3333333333) - e * T(0.25))))
                              : flog2(u) * T(0.6931471805599453);
  } else {
    log1p_e = log(u) + (e - (u - T(1))) * inv;
  }
  const T p = z >= T(0) ? inv : e * inv;
  const T q = z >= T(0) ? e * inv : inv;
  const T log_p = (z < T(0) ? z : T(0)) - log1p_e;
  const T log_q = (z > T(0) ? -z : T(0)) - log1p_e;  // not log_p - z: finite limits at z = -inf / +inf
  Term<T> out;
  if (positive) {
    const T wq = focal_pow<kGamma>(q, log_q, gamma);
    out.loss = -wq * log_p;
    out.dz = wq * (gamma * p * log_p - q);
  } else {
    const T wp = focal_pow<kGamma>(p, log_p, gamma);
    out.loss = -wp * log_q;
    out.dz = wp * (p - gamma * q * log_q);
  }
  return out;
}

// Focal tree-min loss of kPix pixels, the walk of hssn_kernels/focal_tree_min.py (one pixel per lane when a
// thread runs them): channels visited once in DFS pre-order (the DFS tables, read once for all kPix pixels);
// M_v of an inner node by a scan of its subtree; the negative terms' gradient carried top-down through a
// per-depth stack of the open ancestors (winner channel, owed sum), so each channel's gradient is final when
// it is visited and handed to store(c, k, d loss_k / d z_c) once per pixel k; then each pixel's positive terms
// (running min root first, lowest channel on ties) stored over its path channels. z_at(c, k): pixel k's logit
// of channel c. y_pos[k] = pixel k's target position, -1 for a pixel without terms (its loss and stored
// gradient are not meaningful: the caller masks them); anc[k] = A(target), self first, -1 padded, `depth`
// entries; partial: a target may be an inner node (no term below it). A NaN logit gives a NaN loss.
// kGamma: focal_pow's. kDepth >= the tree's height. Writes each pixel's loss to loss[k].
template <class T, int kDepth, int kPix, int kGamma, class ZAt, class Store>
HSSN_HD void ftm_walk(int num_c, const int32_t* perm, const int32_t* size, const int32_t* node_depth,
                      const int* y_pos, const int32_t* const* anc, int depth, bool partial, ZAt z_at, Store store,
                      T gamma, bool grad, T* loss) {
  // row d + 1: the open node at depth d (winner, owed); row 0 a winner no channel has (a root's parent).
  // Run-time indexed: local memory on a GPU (L1); no branch on the depth, so no copy of the math
  int st_w[kDepth + 1][kPix];
  T st_o[kDepth + 1][kPix];
  unsigned below_n[kPix];
  bool nan[kPix];
HSSN_CUDA_PRAGMA(unroll)
  for (int k = 0; k < kPix; ++k) {
    st_w[0][k] = -1;
    st_o[0][k] = T(0);
    below_n[k] = (partial && y_pos[k] >= 0) ? static_cast<unsigned>(size[y_pos[k]] - 1) : 0u;
    loss[k] = T(0);
    nan[k] = false;
  }
HSSN_CUDA_PRAGMA(unroll 1)  // one channel per trip: tools/gpu_cost.py counts the walk's trips as channels
  for (int j = 0; j < num_c; ++j) {
    const int c = perm[j], sz = size[j], d = node_depth[j];
    T m[kPix];
    int win[kPix];
HSSN_CUDA_PRAGMA(unroll)
    for (int k = 0; k < kPix; ++k) {
      const T x = z_at(c, k);
      nan[k] |= x != x;
      m[k] = x != x ? T(-INFINITY) : x;
      win[k] = x != x ? 0x7fffffff : c;
    }
    for (int i = j + 1; i < j + sz; ++i) {  // an inner node: the rest of its subtree (NaN never wins)
      const int ci = perm[i];
HSSN_CUDA_PRAGMA(unroll)
      for (int k = 0; k < kPix; ++k) {
        const T zi = z_at(ci, k);
        const bool take = zi > m[k] || (zi == m[k] && ci < win[k]);
        m[k] = take ? zi : m[k];
        win[k] = take ? ci : win[k];
      }
    }
    T owed[kPix];
    bool neg[kPix];
HSSN_CUDA_PRAGMA(unroll)
    for (int k = 0; k < kPix; ++k) {  // every pixel's term, then one branch for all (no copy of the math)
      const bool on_path = static_cast<unsigned>(y_pos[k] - j) < static_cast<unsigned>(sz);  // target or above
      const bool below = static_cast<unsigned>(j - y_pos[k] - 1) < below_n[k];
      neg[k] = !on_path && !below;
      const Term<T> t = focal_term<kGamma>(m[k], false, gamma);
      loss[k] += neg[k] ? t.loss : T(0);
      owed[k] = neg[k] ? t.dz + (st_w[d][k] == win[k] ? st_o[d][k] : T(0)) : T(0);
    }
    if (sz > 1) {  // an inner node opens the slot of its depth
HSSN_CUDA_PRAGMA(unroll)
      for (int k = 0; k < kPix; ++k) {
        st_w[d + 1][k] = neg[k] ? win[k] : -1;
        st_o[d + 1][k] = owed[k];
      }
    }
    if (grad) {
HSSN_CUDA_PRAGMA(unroll)
      for (int k = 0; k < kPix; ++k) store(c, k, win[k] == c ? owed[k] : T(0));
    }
  }
HSSN_CUDA_PRAGMA(unroll)
  for (int k = 0; k < kPix; ++k) {  // the path, pixel by pixel (over the walk's 0 on its channels)
    const int32_t* row = anc[k];
    int len = 0;
    while (y_pos[k] >= 0 && len < depth && row[len] >= 0) ++len;
    T run_v = T(0), g_at[kDepth];
    int run_i = -1, run_k = 0;
    for (int i = len - 1; i >= 0; --i) {  // root first
      const int a = row[i];
      const T za = z_at(a, k);
      if (run_i < 0 || za < run_v || (za == run_v && a < run_i)) { run_v = za; run_i = a; run_k = i; }
      const Term<T> t = focal_term<kGamma>(run_v, true, gamma);
      loss[k] += t.loss;
      g_at[i] = T(0);
      g_at[run_k] += t.dz;  // run_k >= i: filled in
    }
    if (grad)
      for (int i = 0; i < len; ++i) store(row[i], k, g_at[i]);
    if (nan[k]) loss[k] = static_cast<T>(NAN);
  }
}

// Path inference (Eq. 3) for kPix pixels, the walk of hssn_kernels/path_argmax.py: channels in DFS pre-order
// (the DFS tables, read once for all kPix pixels), S_v = S_parent + sigmoid(z_v) with the open ancestors' sums
// in a per-depth stack (summed root first, the reference's order); a NaN logit scores 0 (as -inf); writes
// each pixel's leaf with the largest sum, the lowest leaf channel on ties, to leaf[k]. z_at(c, k): pixel k's
// logit of channel c. kDepth >= the tree's height.
template <class T, int kDepth, int kPix, class ZAt>
HSSN_HD void path_walk(int num_c, const int32_t* perm, const int32_t* size, const int32_t* node_depth, ZAt z_at,
                       int* leaf) {
  T st[kDepth + 1][kPix];  // row d + 1: the open node at depth d; row 0 zeros (a root's parent). Run-time
                           // indexed: local memory on a GPU (L1); no branch on the depth, so no copy of the math
  T best[kPix];
HSSN_CUDA_PRAGMA(unroll)
  for (int k = 0; k < kPix; ++k) {
    st[0][k] = T(0);
    best[k] = -INFINITY;
    leaf[k] = 0x7fffffff;
  }
HSSN_CUDA_PRAGMA(unroll 1)  // one channel per trip: tools/gpu_cost.py counts the walk's trips as channels
  for (int j = 0; j < num_c; ++j) {
    const int c = perm[j], d = node_depth[j];
    T score[kPix];  // every pixel's sum first, then one branch for all (no copy of the math per branch)
HSSN_CUDA_PRAGMA(unroll)
    for (int k = 0; k < kPix; ++k) {
      const T x = z_at(c, k);
      const T s = x != x ? T(0) : fdiv(T(1), T(1) + fexp(-x));
      score[k] = st[d][k] + s;
    }
    if (size[j] > 1) {
HSSN_CUDA_PRAGMA(unroll)
      for (int k = 0; k < kPix; ++k) st[d + 1][k] = score[k];
    } else {
HSSN_CUDA_PRAGMA(unroll)
      for (int k = 0; k < kPix; ++k) {
        const bool take = score[k] > best[k] || (score[k] == best[k] && c < leaf[k]);
        best[k] = take ? score[k] : best[k];
        leaf[k] = take ? c : leaf[k];
      }
    }
  }
}

// ---------------------------------------------------------------------------- triplet RNG
// lowbias32 and the counter-based stream of reference.triplet_rand.
HSSN_HD uint32_t hash32(uint32_t x) {
  x ^= x >> 16;
  x *= 0x7feb352du;
  x ^= x >> 15;
  x *= 0x846ca68bu;
  x ^= x >> 16;
  return x;
}

HSSN_HD uint32_t triplet_rand(uint32_t key, uint64_t counter) {
  return hash32(hash32(static_cast<uint32_t>(counter) ^ key) + key);
}

// Rank of the valid pixel drawn by random number r among num_valid: (r * |V|) >> 32.
HSSN_HD int64_t draw_rank(uint32_t r, int64_t num_valid) {
  return static_cast<int64_t>((static_cast<uint64_t>(r) * static_cast<uint64_t>(num_valid)) >> 32);
}

// Accept/orient one candidate triple; mode 0 tree, 1 vanilla. On accept, *x_is_pos says which is positive.
HSSN_HD bool accept_triplet(int64_t a, int64_t x, int64_t y, int32_t dx, int32_t dy, int mode, bool* x_is_pos) {
  if (a == x || a == y || x == y) return false;
  *x_is_pos = dx < dy;
  if (mode == 0) return dx != dy;
  return (dx == 0) != (dy == 0);
}

// Per-triplet sums over the embedding dim of the scaled rows a * rs[0], p * rs[1], n * rs[2]: dots a.p, a.n,
// squared norms, squared differences.
template <class T> struct TripletSums {
  T ap = 0, an = 0, aa = 0, pp = 0, nn = 0, dap = 0, dan = 0;
  HSSN_HD void add(T a, T p, T n) {
    ap += a * p; an += a * n; aa += a * a; pp += p * p; nn += n * n;
    dap += (a - p) * (a - p); dan += (a - n) * (a - n);
  }
};

// Row scales (reference._row_scale): a row is read as x * rs, rs = 1 / max |x| (1 when that is below the smallest
// normal), so the sums of squares of any finite rows stay finite (norms of 1e25 in float32 would overflow);
// cosine rows are scaled each on its own (the cosine is scale-free), euclidean rows by one common factor
// (the distance is the scaled one divided by it). An inf in a row makes its scale 0 and the sums NaN.
template <class T> HSSN_HD T smallest_normal() { if constexpr (sizeof(T) == 4) return 1.17549435e-38f; else return 2.2250738585072014e-308; }
template <class T> HSSN_HD T inv_scale(T max_abs) { return max_abs > smallest_normal<T>() ? T(1) / max_abs : T(1); }
// rs[3] of one triplet from its rows' largest |values| (NaNs are not maxima: they reach the sums anyway).
template <class T> HSSN_HD void row_scales(T max_a, T max_p, T max_n, int distance, T* rs) {
  if (distance == 0) {
    rs[0] = inv_scale(max_a); rs[1] = inv_scale(max_p); rs[2] = inv_scale(max_n);
  } else {
    T m = max_a > max_p ? max_a : max_p;
    m = m > max_n ? m : max_n;
    rs[0] = rs[1] = rs[2] = inv_scale(m);
  }
}
template <class T> HSSN_HD T max_abs(T m, T x) { const T a = x < T(0) ? -x : x; return a > m ? a : m; }

// Hinge of one triplet and the gradient rows as linear maps of the scaled rows a' = a rs[0], p' = p rs[1],
// n' = n rs[2]: ga = ka[0] a' + ka[1] p' + ka[2] n';  gp = kp[0] a' + kp[1] p';  gn = kn[0] a' + kn[1] n'.
// `scale` (1 / triplet count) multiplies the gradient when the hinge is active. distance 0 cosine, 1 euclidean.
template <class T> struct TripletGrad { T hinge; T ka[3]; T kp[2]; T kn[2]; T rs[3]; };

template <class T> HSSN_HD T fsqrt(T x) { if constexpr (sizeof(T) == 4) return sqrtf(x); else return sqrt(x); }

// `s` summed over the rows scaled by `rs`; the value and gradient are those of the unscaled rows.
template <class T>
HSSN_HD TripletGrad<T> triplet_grad(const TripletSums<T>& s, T margin, int distance, T scale, T eps, const T* rs) {
  TripletGrad<T> g;
  for (int i = 0; i < 3; ++i) g.rs[i] = rs[i];
  if (distance == 0) {
    // cos(a, p) = a.p / max(|a||p|, eps). Not clamped (|a||p| >= eps): a'.p' / (|a'||p'|), d / da = rs_a d / da'.
    // Clamped: a.p / eps = a'.p' ma mp / eps (ma = 1 / rs_a), d / da = p / eps = (mp / eps) p'. The test
    // |a||p| = (|a'| ma)(|p'| mp) < eps multiplies finite factors: it may underflow or overflow, never NaN.
    const T na = fsqrt(s.aa), np = fsqrt(s.pp), nn = fsqrt(s.nn);
    const T ma = T(1) / rs[0], mp = T(1) / rs[1], mn = T(1) / rs[2];
    const bool clamp_p = !((na * ma) * (np * mp) >= eps), clamp_n = !((na * ma) * (nn * mn) >= eps);
    const T den_p = clamp_p ? T(1) : na * np, den_n = clamp_n ? T(1) : na * nn;
    const T cos_p = clamp_p ? s.ap * (ma * mp) / eps : s.ap / den_p;
    const T cos_n = clamp_n ? s.an * (ma * mn) / eps : s.an / den_n;
    const T d_p = (T(1) - cos_p) / T(2);
    const T d_n = (T(1) - cos_n) / T(2);
    const T h = d_p - d_n + margin;
    g.hinge = (h > T(0) || h != h) ? h : T(0);  // a NaN distance keeps the loss NaN (NaN policy)
    const T half = h > T(0) ? T(0.5) * scale : T(0);
    // d cos(a, p) / da = o_ap p' + self_ap a';  d cos(a, p) / dp = o_pa a' + self_pa p'
    const T o_ap = clamp_p ? mp / eps : rs[0] / den_p, o_pa = clamp_p ? ma / eps : rs[1] / den_p;
    const T o_an = clamp_n ? mn / eps : rs[0] / den_n, o_na = clamp_n ? ma / eps : rs[2] / den_n;
    const T inv_na = na > T(0) ? T(1) / na : T(0);
    const T inv_np = np > T(0) ? T(1) / np : T(0);
    const T inv_nn = nn > T(0) ? T(1) / nn : T(0);
    const T self_ap = clamp_p ? T(0) : -rs[0] * s.ap * np * inv_na / (den_p * den_p);
    const T self_an = clamp_n ? T(0) : -rs[0] * s.an * nn * inv_na / (den_n * den_n);
    const T self_pa = clamp_p ? T(0) : -rs[1] * s.ap * na * inv_np / (den_p * den_p);
    const T self_na = clamp_n ? T(0) : -rs[2] * s.an * na * inv_nn / (den_n * den_n);
    // loss = -cos(a, p) / 2 + cos(a, n) / 2 + const
    g.ka[0] = half * (self_an - self_ap); g.ka[1] = -half * o_ap; g.ka[2] = half * o_an;
    g.kp[0] = -half * o_pa; g.kp[1] = -half * self_pa;
    g.kn[0] = half * o_na; g.kn[1] = half * self_na;
  } else {
    // |a - p| = |a' - p'| / rs (one rs for the three rows); d |a - p| / da = (a' - p') / |a' - p'|
    const T sd_p = fsqrt(s.dap), sd_n = fsqrt(s.dan);
    const T h = (sd_p - sd_n) / rs[0] + margin;
    g.hinge = (h > T(0) || h != h) ? h : T(0);  // a NaN distance keeps the loss NaN (NaN policy)
    const T k = h > T(0) ? scale : T(0);
    const T ip = sd_p > T(0) ? k / sd_p : T(0);
    const T in = sd_n > T(0) ? k / sd_n : T(0);
    g.ka[0] = ip - in; g.ka[1] = -ip; g.ka[2] = in;
    g.kp[0] = -ip; g.kp[1] = ip;
    g.kn[0] = in; g.kn[1] = -in;
  }
  return g;
}

constexpr int kAttemptsPerTriplet = 16;  // reference.ATTEMPTS_PER_TRIPLET
constexpr double kCosineEps = 1e-8;      // reference.COSINE_EPS

}  // namespace hssn
