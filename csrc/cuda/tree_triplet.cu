// CUDA kernels of hssn::sample_triplets and hssn::triplet_forward.
// Sampling: one block walks the attempts 256 at a time with the reference's counter-based RNG; a
// candidate's pixel is found by binary search in the prefix count of valid pixels (no compaction, no
// host sync); accepted attempts get their slot from a block scan, so the triplets are the reference's,
// bit for bit. Loss: one block per triplet reduces the dot products in a fixed order and stores the
// hinge and the gradient coefficients; a second kernel gives each pixel the sum of its slots' rows in
// slot order (deterministic, no float atomics). Labels that are not leaves reject the candidate.
#include "dtypes.cuh"

namespace hssn {
namespace cuda {
namespace {

constexpr int kSampleThreads = 256;
constexpr int kTripletThreads = 128;

__device__ int64_t valid_pixel(const int64_t* csum, int64_t num_p, int64_t rank) {
  int64_t lo = 0, hi = num_p - 1;  // first i with csum[i] > rank
  while (lo < hi) {
    const int64_t mid = (lo + hi) / 2;
    if (csum[mid] <= rank) lo = mid + 1;
    else hi = mid;
  }
  return lo;
}

template <class tgt_t>
__device__ int leaf_of(const tgt_t* t, int64_t pix, const int32_t* leaf_index, int num_c, int num_l) {
  const int64_t y = static_cast<int64_t>(t[pix]);
  if (y < 0 || y >= num_c) return -1;
  const int l = leaf_index[y];
  return l < num_l ? l : -1;
}

template <class tgt_t>
__global__ void __launch_bounds__(kSampleThreads) sample_kernel(SampleParams p) {
  __shared__ int64_t s_scan[kSampleThreads];
  __shared__ int64_t s_total;
  const int tid = threadIdx.x;
  const tgt_t* t = static_cast<const tgt_t*>(p.t);
  const int64_t nv = p.num_p > 0 ? p.csum[p.num_p - 1] : 0;
  const uint32_t key = hash32(p.seed);
  const int64_t attempts = kAttemptsPerTriplet * p.num_triplets;
  if (tid == 0) s_total = 0;
  __syncthreads();
  for (int64_t start = 0; start < attempts; start += kSampleThreads) {
    if (s_total >= p.num_triplets || nv == 0) break;  // uniform: read after the barrier below
    const int64_t k = start + tid;
    int64_t cand[3] = {0, 0, 0};
    bool ok = false, x_pos = false;
    if (k < attempts) {
      int lf[3];
      bool labels_ok = true;
      for (int j = 0; j < 3; ++j) {
        const int64_t rank = draw_rank(triplet_rand(key, static_cast<uint64_t>(3 * k + j)), nv);
        cand[j] = valid_pixel(p.csum, p.num_p, rank);
        lf[j] = leaf_of(t, cand[j], p.leaf_index, p.num_c, p.num_l);
        labels_ok &= lf[j] >= 0;
      }
      if (labels_ok)
        ok = accept_triplet(cand[0], cand[1], cand[2], p.dist[lf[0] * p.num_l + lf[1]],
                            p.dist[lf[0] * p.num_l + lf[2]], p.mode, &x_pos);
    }
    // inclusive scan of the accept flags (Hillis-Steele, fixed order)
    s_scan[tid] = ok ? 1 : 0;
    __syncthreads();
    for (int off = 1; off < kSampleThreads; off <<= 1) {
      const int64_t add = tid >= off ? s_scan[tid - off] : 0;
      __syncthreads();
      s_scan[tid] += add;
      __syncthreads();
    }
    const int64_t slot = s_total + s_scan[tid] - 1;
    if (ok && slot < p.num_triplets) {
      p.out[3 * slot] = cand[0];
      p.out[3 * slot + 1] = x_pos ? cand[1] : cand[2];
      p.out[3 * slot + 2] = x_pos ? cand[2] : cand[1];
    }
    __syncthreads();
    if (tid == 0) s_total += s_scan[kSampleThreads - 1];
    __syncthreads();
  }
  if (tid == 0) *p.count = s_total < p.num_triplets ? s_total : p.num_triplets;
}

// Fixed-order block reduction of N values (warp shuffles, then warps in order): sums, or maxima with MAX;
// every thread gets the results. Ends with a barrier, so `buf` can be reused at once.
template <int N, bool MAX>
__device__ void block_reduce(float* vals, float (*buf)[kTripletThreads / 32]) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
#pragma unroll
  for (int i = 0; i < N; ++i) {
    float x = vals[i];
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) {
      const float y = __shfl_down_sync(0xffffffffu, x, o);
      x = MAX ? (y > x ? y : x) : x + y;
    }
    if (lane == 0) buf[i][warp] = x;
  }
  __syncthreads();
#pragma unroll
  for (int i = 0; i < N; ++i) {
    float x = 0.f;
    for (int wi = 0; wi < kTripletThreads / 32; ++wi) x = MAX ? (buf[i][wi] > x ? buf[i][wi] : x) : x + buf[i][wi];
    vals[i] = x;
  }
  __syncthreads();
}

template <class scalar_t, class tgt_t>
__global__ void __launch_bounds__(kTripletThreads) triplet_kernel(TripletParams p) {
  __shared__ float buf[7][kTripletThreads / 32];
  const int64_t k = blockIdx.x;
  const int64_t count = *p.count;
  if (k >= count) {
    if (threadIdx.x == 0) p.hinge[k] = 0.f;
    return;
  }
  const float nan = __int_as_float(0x7fc00000);
  int64_t q[3];
  bool in_range = true;
  for (int j = 0; j < 3; ++j) {
    q[j] = p.triplets[3 * k + j];
    in_range &= q[j] >= 0 && q[j] < p.num_p;
  }
  if (!in_range) {
    if (threadIdx.x == 0) {
      p.hinge[k] = nan;
      if (p.coef)
        for (int i = 0; i < kTripletCoef; ++i) p.coef[k * kTripletCoef + i] = 0.f;
    }
    return;
  }
  const scalar_t* e = static_cast<const scalar_t*>(p.e);
  const int64_t oa = p.el.offset(q[0]), op = p.el.offset(q[1]), on = p.el.offset(q[2]);
  float mx[3] = {0.f, 0.f, 0.f}, rs[3];
  for (int64_t d = threadIdx.x; d < p.num_e; d += kTripletThreads) {
    mx[0] = max_abs(mx[0], to_float(e[oa + d * p.esc]));
    mx[1] = max_abs(mx[1], to_float(e[op + d * p.esc]));
    mx[2] = max_abs(mx[2], to_float(e[on + d * p.esc]));
  }
  block_reduce<3, true>(mx, buf);
  row_scales(mx[0], mx[1], mx[2], p.distance, rs);
  TripletSums<float> s;
  for (int64_t d = threadIdx.x; d < p.num_e; d += kTripletThreads)
    s.add(to_float(e[oa + d * p.esc]) * rs[0], to_float(e[op + d * p.esc]) * rs[1], to_float(e[on + d * p.esc]) * rs[2]);
  float vals[7] = {s.ap, s.an, s.aa, s.pp, s.nn, s.dap, s.dan};
  block_reduce<7, false>(vals, buf);
  if (threadIdx.x != 0) return;
  s.ap = vals[0]; s.an = vals[1]; s.aa = vals[2]; s.pp = vals[3]; s.nn = vals[4]; s.dap = vals[5]; s.dan = vals[6];
  float margin = p.margin_eps;
  bool labels_ok = true;
  if (p.hierarchy_margin) {
    const tgt_t* t = static_cast<const tgt_t*>(p.t);
    int lf[3];
    for (int j = 0; j < 3; ++j) {
      const int64_t y = static_cast<int64_t>(t[p.tl.offset(q[j])]);
      lf[j] = (y >= 0 && y < p.num_c) ? p.leaf_index[y] : -1;
      labels_ok &= lf[j] >= 0 && lf[j] < p.num_l;
    }
    if (labels_ok) {
      const int gap = p.dist[lf[0] * p.num_l + lf[2]] - p.dist[lf[0] * p.num_l + lf[1]];
      margin += p.margin_scale * static_cast<float>(gap) / static_cast<float>(2 * p.height);
    }
  }
  const float scale = 1.f / static_cast<float>(count > 1 ? count : 1);
  const TripletGrad<float> gr = triplet_grad<float>(s, margin, p.distance, scale, static_cast<float>(kCosineEps), rs);
  p.hinge[k] = labels_ok ? gr.hinge : nan;
  if (p.coef) {
    float* c = p.coef + k * kTripletCoef;
    c[0] = gr.hinge;
    c[1] = gr.ka[0]; c[2] = gr.ka[1]; c[3] = gr.ka[2];
    c[4] = gr.kp[0]; c[5] = gr.kp[1];
    c[6] = gr.kn[0]; c[7] = gr.kn[1];
    c[8] = gr.rs[0]; c[9] = gr.rs[1]; c[10] = gr.rs[2];
  }
}

// Block = one slot (triplet k, role r). If its pixel has no earlier slot, the block writes that pixel's
// gradient row: the rows of all its slots, in slot order.
template <class scalar_t>
__global__ void __launch_bounds__(kTripletThreads) triplet_grad_kernel(TripletParams p) {
  const int64_t slot = blockIdx.x;
  const int64_t n_slots = 3 * *p.count;
  if (slot >= n_slots) return;
  const int64_t pix = p.triplets[slot];
  if (pix < 0 || pix >= p.num_p) return;
  int earlier = 0;
  for (int64_t j = threadIdx.x; j < slot; j += kTripletThreads) earlier |= p.triplets[j] == pix;
  if (__syncthreads_or(earlier)) return;
  const scalar_t* e = static_cast<const scalar_t*>(p.e);
  scalar_t* g = static_cast<scalar_t*>(p.g);
  const int64_t go = p.gl.offset(pix);
  for (int64_t d = threadIdx.x; d < p.num_e; d += kTripletThreads) {
    float acc = 0.f;
    for (int64_t j = slot; j < n_slots; ++j) {
      if (p.triplets[j] != pix) continue;
      const int64_t k = j / 3;
      const int role = static_cast<int>(j - 3 * k);
      const float* c = p.coef + k * kTripletCoef;
      const float a = to_float(e[p.el.offset(p.triplets[3 * k]) + d * p.esc]) * c[8];
      if (role == 0) {
        const float pp = to_float(e[p.el.offset(p.triplets[3 * k + 1]) + d * p.esc]) * c[9];
        const float nn = to_float(e[p.el.offset(p.triplets[3 * k + 2]) + d * p.esc]) * c[10];
        acc += c[1] * a + c[2] * pp + c[3] * nn;
      } else if (role == 1) {
        acc += c[4] * a + c[5] * to_float(e[p.el.offset(p.triplets[3 * k + 1]) + d * p.esc]) * c[9];
      } else {
        acc += c[6] * a + c[7] * to_float(e[p.el.offset(p.triplets[3 * k + 2]) + d * p.esc]) * c[10];
      }
    }
    g[go + d * p.gsc] = from_float<scalar_t>(acc);
  }
}

}  // namespace

cudaError_t launch_sample_triplets(const SampleParams& p, cudaStream_t stream) {
  cudaError_t err = cudaSuccess;
  dispatch_target(p.ttype, [&](auto tt) {
    using tgt_t = decltype(tt);
    sample_kernel<tgt_t><<<1, kSampleThreads, 0, stream>>>(p);
    err = cudaGetLastError();
  });
  return err;
}

cudaError_t launch_triplet_forward(const TripletParams& p, cudaStream_t stream) {
  if (p.num_t == 0) return cudaSuccess;
  cudaError_t err = cudaSuccess;
  dispatch_dtype(p.dtype, [&](auto st) {
    using scalar_t = decltype(st);
    dispatch_target(p.ttype, [&](auto tt) {
      using tgt_t = decltype(tt);
      triplet_kernel<scalar_t, tgt_t><<<static_cast<unsigned>(p.num_t), kTripletThreads, 0, stream>>>(p);
    });
    err = cudaGetLastError();
    if (err != cudaSuccess || p.g == nullptr) return;
    triplet_grad_kernel<scalar_t><<<static_cast<unsigned>(3 * p.num_t), kTripletThreads, 0, stream>>>(p);
    err = cudaGetLastError();
  });
  return err;
}

}  // namespace cuda
}  // namespace hssn
