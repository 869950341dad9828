// Torch-free building blocks of the CPU (.cpp) and CUDA (.cu) kernels: layouts, the focal terms, the
// triplet RNG and path argmax (both backends), and ftm_pixel, the per-pixel focal tree-min passes the CUDA
// kernel runs (the CPU kernel runs the same steps over [C][tile] blocks, focal_tree_min_cpu.cpp).
// tests/test_kernel_header.py compiles ftm_pixel as plain C++ and checks it against the reference.
// Everything here is exactly the semantics of hssn_kernels/reference.py (ties go to the lowest channel;
// math in float32, float64 for float64).
#pragma once

#include <cmath>
#include <cstdint>

#ifdef __CUDACC__
#define HSSN_HD __host__ __device__ __forceinline__
#else
#define HSSN_HD inline
#endif

namespace hssn {

// Pixel p of a (B, [C,] H, W) or (N, [C]) tensor: p = (b * H + h) * W + w; offset = b*sb + h*sh + w*sw.
struct PixelLayout {
  int64_t h = 1, w = 1;
  int64_t sb = 0, sh = 0, sw = 0;
  HSSN_HD int64_t offset(int64_t p) const {
    const int64_t hw = h * w;
    const int64_t b = p / hw;
    const int64_t r = p - b * hw;
    const int64_t y = r / w;
    return b * sb + y * sh + (r - y * w) * sw;
  }
};

template <class T> HSSN_HD T fexp(T x) { if constexpr (sizeof(T) == 4) return expf(x); else return exp(x); }
template <class T> HSSN_HD T flog(T x) { if constexpr (sizeof(T) == 4) return logf(x); else return log(x); }
template <class T> HSSN_HD T fabs_(T x) { return x < T(0) ? -x : x; }

// The focal weight x^gamma from log x (gamma 0 and 2 take exact shortcuts).
template <class T> HSSN_HD T focal_pow(T x, T log_x, T gamma) {
  if (gamma == T(2)) return x * x;
  if (gamma == T(0)) return T(1);
  return fexp(gamma * log_x);
}

template <class T> struct Term { T loss; T dz; };

// -l (1-p)^g log p  (positive = true) or  -(1-l) p^g log(1-p)  (positive = false) at p = sigmoid(z),
// and its derivative with respect to z.
template <class T> HSSN_HD Term<T> focal_term(T z, bool positive, T gamma) {
  const T e = fexp(-fabs_(z));
  const T u = T(1) + e;
  const T inv = T(1) / u;
  // log1p(e) = log(u) + log(1 + (e - (u - 1)) / u): u - 1 is exact, the rounding error of u is
  // restored to first order (log1p itself is several times slower).
  const T log1p_e = flog(u) + (e - (u - T(1))) * inv;
  const T p = z >= T(0) ? inv : e * inv;
  const T q = z >= T(0) ? e * inv : inv;
  const T log_p = (z < T(0) ? z : T(0)) - log1p_e;
  const T log_q = (z > T(0) ? -z : T(0)) - log1p_e;  // not log_p - z: finite limits at z = -inf / +inf
  Term<T> out;
  if (positive) {
    const T wq = focal_pow(q, log_q, gamma);
    out.loss = -wq * log_p;
    out.dz = wq * (gamma * p * log_p - q);
  } else {
    const T wp = focal_pow(p, log_p, gamma);
    out.loss = -wp * log_q;
    out.dz = wp * (p - gamma * q * log_q);
  }
  return out;
}

// Focal tree-min loss of one pixel with target `anc_row[0]` (anc_row = A(target), self first,
// -1 padded, `depth` entries): a leaf, or with `partial_label` = the target an inner node, whose strict
// descendants then get no term (marked w = -2). Column layout: node c of this pixel lives at v[c * st], w[c * st].
// On entry v holds the logits z and w[c] = c. `z_at(c)` re-reads logit c. Returns the pixel's loss;
// with `grad`, v holds d loss / d z on exit (each entry written once, no scatter).
template <class T, class Idx, class ZAt>
HSSN_HD T ftm_pixel(T* v, Idx* w, int64_t st, int num_c, const int32_t* parent, const int32_t* bottom_up,
                    const int32_t* anc_row, int depth, ZAt z_at, T gamma, bool grad, int partial_label = -1) {
  // 1. bottom-up max over Dsc(c) with its winner (lowest channel on ties); branch-free selects.
  for (int i = 0; i < num_c; ++i) {
    const int c = bottom_up[i];
    const int p = parent[c];
    if (p < 0) continue;
    const T vc = v[c * st], vp = v[p * st];
    const Idx wc = w[c * st], wp = w[p * st];
    const bool take = (vc > vp) | ((vc == vp) & (wc < wp));
    v[p * st] = take ? vc : vp;
    w[p * st] = take ? wc : wp;
  }
  // 2. mark the target's path A(y): its nodes take the positive terms.
  int len = 0;
  while (len < depth && anc_row[len] >= 0) {
    w[anc_row[len] * st] = Idx(-1);
    ++len;
  }
  // 3. top-down: negative terms, and the gradient owed to each winner carried down its chain.
  T loss = T(0);
  for (int i = num_c - 1; i >= 0; --i) {
    const int c = bottom_up[i];
    const Idx wc = w[c * st];
    if (wc == Idx(-1)) {
      v[c * st] = T(0);
      continue;
    }
    const int pl = parent[c];
    if (partial_label >= 0 && pl >= 0 && (pl == partial_label || w[pl * st] == Idx(-2))) {
      w[c * st] = Idx(-2);  // a strict descendant of the (inner) label: unknown, no term, no gradient
      v[c * st] = T(0);
      continue;
    }
    const Term<T> t = focal_term(v[c * st], false, gamma);
    loss += t.loss;
    if (grad) {
      const int p = parent[c];
      const int pc = p >= 0 ? p : c;
      const bool carry = (p >= 0) & (w[pc * st] == wc);
      const T from_parent = v[pc * st];
      v[c * st] = t.dz + (carry ? from_parent : T(0));
    }
  }
  // 4. the path, root first: running min over A(v) (lowest channel on ties), positive terms.
  T run_v = T(0);
  int run_i = -1;
  for (int k = len - 1; k >= 0; --k) {
    const int a = anc_row[k];
    const T za = z_at(a);
    if (run_i < 0 || za < run_v || (za == run_v && a < run_i)) {
      run_v = za;
      run_i = a;
    }
    const Term<T> t = focal_term(run_v, true, gamma);
    loss += t.loss;
    if (grad) v[run_i * st] += t.dz;
  }
  // 5. keep the gradient only where it landed: path nodes and the winners of their own chains.
  if (grad) {
    for (int c = 0; c < num_c; ++c) {
      const Idx wc = w[c * st];
      const T g = v[c * st];
      v[c * st] = ((wc != Idx(-1)) & (wc != Idx(c))) ? T(0) : g;
    }
  }
  return loss;
}

// Path inference (Eq. 3) for one pixel: on entry v[c * st] = sigmoid(z_c); returns the leaf with the
// largest root-path sum (summed root first; lowest leaf channel on ties). Overwrites v with the sums.
template <class T>
HSSN_HD int path_argmax_pixel(T* v, int64_t st, int num_c, const int32_t* parent, const int32_t* bottom_up,
                              const int32_t* leaves, int num_leaves) {
  for (int i = num_c - 1; i >= 0; --i) {
    const int c = bottom_up[i];
    const int p = parent[c];
    if (p >= 0) v[c * st] = v[p * st] + v[c * st];
  }
  int best = leaves[0];
  T best_v = v[best * st];
  for (int j = 1; j < num_leaves; ++j) {
    const int c = leaves[j];
    const T s = v[c * st];
    if (s > best_v) {
      best_v = s;
      best = c;
    }
  }
  return best;
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

// Per-triplet sums over the embedding dim: dots a.p, a.n, squared norms, squared differences.
template <class T> struct TripletSums {
  T ap = 0, an = 0, aa = 0, pp = 0, nn = 0, dap = 0, dan = 0;
  HSSN_HD void add(T a, T p, T n) {
    ap += a * p; an += a * n; aa += a * a; pp += p * p; nn += n * n;
    dap += (a - p) * (a - p); dan += (a - n) * (a - n);
  }
};

// Hinge of one triplet and the gradient rows as linear maps of the rows a, p, n:
// ga = ka[0] a + ka[1] p + ka[2] n;  gp = kp[0] a + kp[1] p;  gn = kn[0] a + kn[1] n.
// `scale` (1 / triplet count) multiplies the gradient when the hinge is active. distance 0 cosine, 1 euclidean.
template <class T> struct TripletGrad { T hinge; T ka[3]; T kp[2]; T kn[2]; };

template <class T> HSSN_HD T fsqrt(T x) { if constexpr (sizeof(T) == 4) return sqrtf(x); else return sqrt(x); }

template <class T>
HSSN_HD TripletGrad<T> triplet_grad(const TripletSums<T>& s, T margin, int distance, T scale, T eps) {
  TripletGrad<T> g;
  if (distance == 0) {
    const T na = fsqrt(s.aa), np = fsqrt(s.pp), nn = fsqrt(s.nn);
    const T den_p = na * np > eps ? na * np : eps;
    const T den_n = na * nn > eps ? na * nn : eps;
    const T d_p = (T(1) - s.ap / den_p) / T(2);
    const T d_n = (T(1) - s.an / den_n) / T(2);
    const T h = d_p - d_n + margin;
    g.hinge = (h > T(0) || h != h) ? h : T(0);  // a NaN distance keeps the loss NaN (NaN policy)
    const T half = h > T(0) ? T(0.5) * scale : T(0);
    const T on_p = na * np >= eps ? T(1) : T(0);
    const T on_n = na * nn >= eps ? T(1) : T(0);
    const T inv_na = na > T(0) ? T(1) / na : T(0);
    const T inv_np = np > T(0) ? T(1) / np : T(0);
    const T inv_nn = nn > T(0) ? T(1) / nn : T(0);
    const T ca_p = -s.ap * np * inv_na / (den_p * den_p) * on_p;
    const T ca_n = -s.an * nn * inv_na / (den_n * den_n) * on_n;
    const T cp = -s.ap * na * inv_np / (den_p * den_p) * on_p;
    const T cn = -s.an * na * inv_nn / (den_n * den_n) * on_n;
    g.ka[0] = half * (ca_n - ca_p); g.ka[1] = -half / den_p; g.ka[2] = half / den_n;
    g.kp[0] = -half / den_p; g.kp[1] = -half * cp;
    g.kn[0] = half / den_n; g.kn[1] = half * cn;
  } else {
    const T d_p = fsqrt(s.dap), d_n = fsqrt(s.dan);
    const T h = d_p - d_n + margin;
    g.hinge = (h > T(0) || h != h) ? h : T(0);  // a NaN distance keeps the loss NaN (NaN policy)
    const T k = h > T(0) ? scale : T(0);
    const T ip = d_p > T(0) ? k / d_p : T(0);
    const T in = d_n > T(0) ? k / d_n : T(0);
    g.ka[0] = ip - in; g.ka[1] = -ip; g.ka[2] = in;
    g.kp[0] = -ip; g.kp[1] = ip;
    g.kn[0] = in; g.kn[1] = -in;
  }
  return g;
}

constexpr int kAttemptsPerTriplet = 16;  // reference.ATTEMPTS_PER_TRIPLET
constexpr double kCosineEps = 1e-8;      // reference.COSINE_EPS

}  // namespace hssn
