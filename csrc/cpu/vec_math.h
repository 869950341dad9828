// exp / log written as plain arithmetic (Cephes polynomials, about 1 ulp in float32) so that loops over
// the pixels of a tile auto-vectorise at -O3 without -ffast-math; float64 uses std::exp / std::log.
// Included by tile_kernels.h only, after an instruction-set pragma: namespace hssn::HSSN_ISA.
#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>
#include <type_traits>

namespace hssn {
namespace HSSN_ISA {

inline float bits_to_float(int32_t b) { float f; std::memcpy(&f, &b, 4); return f; }
inline int32_t float_to_bits(float f) { int32_t b; std::memcpy(&b, &f, 4); return b; }

// exp(x) for x <= 0 (NaN propagates; 0 below -87.3 instead of a denormal). Selects of values only, no
// branch holding arithmetic, so that GCC if-converts the loops (it does not speculate float ops).
inline float vexp_nonpos(float x) {
  const bool tiny = x < -87.3f;
  x = tiny ? 0.0f : x;
  const float magic = 12582912.0f;               // 1.5 * 2^23: adding it rounds to an integer
  const float n = (x * 1.44269504088896341f + magic) - magic;
  const float r = (x - n * 0.693359375f) + n * 2.12194440e-4f;  // Cody-Waite: ln2 = 0.693359375 - 2.12e-4
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = p * r * r + r + 1.0f;
  const float r2 = p * bits_to_float((static_cast<int32_t>(n) + 127) << 23);
  return tiny ? 0.0f : r2;
}

// log(x) for a positive normal x (Cephes' range reduction and polynomial; a NaN x gives a finite value: the
// kernels flag NaN logits themselves). x = (1 + m) 2^e with 1 + m in [sqrt(1/2), sqrt(2)) by integer
// arithmetic on the bits, offset by those of sqrt(1/2): no select, which GCC if-converted by computing the
// polynomial for both of Cephes' cases (m < sqrt(1/2) or not) and blending the two results.
inline float vlog_pos(float x) {
  constexpr int32_t kSqrtHalf = 0x3f3504f3;  // bits of sqrt(1/2) in float32
  const int32_t b = float_to_bits(x) - kSqrtHalf;
  const float e = static_cast<float>(b >> 23);
  const float m = bits_to_float((b & 0x007fffff) + kSqrtHalf) - 1.0f;
  const float z = m * m;
  float y = 7.0376836292e-2f;
  y = y * m - 1.1514610310e-1f;
  y = y * m + 1.1676998740e-1f;
  y = y * m - 1.2420140846e-1f;
  y = y * m + 1.4249322787e-1f;
  y = y * m - 1.6668057665e-1f;
  y = y * m + 2.0000714765e-1f;
  y = y * m - 2.4999993993e-1f;
  y = y * m + 3.3333331174e-1f;
  y = y * m * z;
  y += -2.12194440e-4f * e;
  y += -0.5f * z;
  return (m + y) + 0.693359375f * e;
}

// x where keep, else +0: a bit mask, not a select (GCC turns some selects feeding stores into branches).
template <class T> inline T keep_if(T x, bool keep) {
  using I = std::conditional_t<sizeof(T) == 4, int32_t, int64_t>;
  I b;
  std::memcpy(&b, &x, sizeof(T));
  b &= -static_cast<I>(keep);
  std::memcpy(&x, &b, sizeof(T));
  return x;
}

// take ? a : b as bit masks (the ?: form feeding a store can become a branch).
template <class T> inline T blend(bool take, T a, T b) {
  using I = std::conditional_t<sizeof(T) == 4, int32_t, int64_t>;
  I ia, ib;
  std::memcpy(&ia, &a, sizeof(T));
  std::memcpy(&ib, &b, sizeof(T));
  const I m = -static_cast<I>(take);
  ia = (ia & m) | (ib & ~m);
  std::memcpy(&a, &ia, sizeof(T));
  return a;
}

inline double vexp_nonpos(double x) { return std::exp(x); }
inline double vlog_pos(double x) { return std::log(x); }

// x^gamma from log x: kGamma 0 and 2 are exact shortcuts, kGamma 1 means any other gamma.
template <int kGamma, class T> inline T vfocal_pow(T x, T log_x, T gamma) {
  if constexpr (kGamma == 2) return x * x;
  else if constexpr (kGamma == 0) return T(1);
  else return vexp_nonpos(gamma * log_x);
}

// p = sigmoid(z), q = 1 - p and their logs, without cancellation (finite limits at z = -inf / +inf).
template <class T> inline void vsigmoid_logs(T z, T* p, T* q, T* log_p, T* log_q) {
  const T e = vexp_nonpos(z < T(0) ? z : -z);
  const T u = T(1) + e;
  const T inv = T(1) / u;
  // log1p(e) = log(u) + (e - (u - 1)) / u: u - 1 is exact, the rounding error of u restored to first order
  const T log1p_e = vlog_pos(u) + (e - (u - T(1))) * inv;
  *p = z >= T(0) ? inv : e * inv;
  *q = z >= T(0) ? e * inv : inv;
  *log_p = (z < T(0) ? z : T(0)) - log1p_e;
  *log_q = (z > T(0) ? -z : T(0)) - log1p_e;  // not log_p - z
}

// Focal terms at p = sigmoid(z) and their derivatives (kernels/common.h: focal_term, same formulas):
// negative -p^g log(1-p) (kPositive false) or positive -(1-p)^g log p (kPositive true).
template <bool kPositive, int kGamma, class T> inline void vfocal_term(T z, T gamma, T* loss, T* dz) {
  T p, q, log_p, log_q;
  vsigmoid_logs(z, &p, &q, &log_p, &log_q);
  if constexpr (kPositive) {
    const T wq = vfocal_pow<kGamma>(q, log_q, gamma);
    *loss = -wq * log_p;
    *dz = wq * (gamma * p * log_p - q);
  } else {
    const T wp = vfocal_pow<kGamma>(p, log_p, gamma);
    *loss = -wp * log_q;
    *dz = wp * (p - gamma * q * log_q);
  }
}

// sigmoid(z), 0 for a NaN z (path inference scores a NaN logit as -inf would).
template <class T> inline T vsigmoid_or_0(T z) {
  const T e = vexp_nonpos(z < T(0) ? z : -z);
  const T inv = T(1) / (T(1) + e);
  const T s = z >= T(0) ? inv : e * inv;
  return z != z ? T(0) : s;
}

}  // namespace HSSN_ISA
}  // namespace hssn
