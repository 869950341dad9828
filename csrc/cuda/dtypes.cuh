// Element loads/stores in fp32 for float / half / bfloat16 tensors, and the dtype dispatch.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include "launch.h"

namespace hssn {
namespace cuda {

__device__ __forceinline__ float to_float(float x) { return x; }
__device__ __forceinline__ float to_float(__half x) { return __half2float(x); }
__device__ __forceinline__ float to_float(__nv_bfloat16 x) { return __bfloat162float(x); }

template <class T> __device__ __forceinline__ T from_float(float x);
template <> __device__ __forceinline__ float from_float<float>(float x) { return x; }
template <> __device__ __forceinline__ __half from_float<__half>(float x) { return __float2half_rn(x); }
template <> __device__ __forceinline__ __nv_bfloat16 from_float<__nv_bfloat16>(float x) { return __float2bfloat16_rn(x); }

template <class F>
void dispatch_dtype(Dtype d, F&& f) {
  switch (d) {
    case Dtype::kFloat: f(float{}); break;
    case Dtype::kHalf: f(__half{}); break;
    default: f(__nv_bfloat16{}); break;
  }
}

template <class F>
void dispatch_target(TargetType t, F&& f) {
  switch (t) {
    case TargetType::kLong: f(int64_t{}); break;
    case TargetType::kInt: f(int32_t{}); break;
    default: f(uint8_t{}); break;
  }
}

// Deterministic block sum (fixed tree over a power-of-two block; buf holds blockDim.x floats).
__device__ __forceinline__ float block_sum(float x, float* buf) {
  const int tid = threadIdx.x;
  __syncthreads();
  buf[tid] = x;
  __syncthreads();
  for (int s = blockDim.x / 2; s > 0; s >>= 1) {
    if (tid < s) buf[tid] += buf[tid + s];
    __syncthreads();
  }
  return buf[0];
}

// Channels c with size bytes per pixel column of a [C][threads] tile: the threads per block (128, 64
// or 32) that keep the tile under `limit` bytes of shared memory, or 0 when even 32 does not fit.
inline int tile_threads(size_t fixed, size_t per_thread, size_t limit) {
  for (int t = 128; t >= 32; t /= 2)
    if (fixed + per_thread * t <= limit) return t;
  return 0;
}

constexpr size_t kSmemLimit = 96 * 1024;  // two blocks per SM on A100 / H100
constexpr int kMaxBlocks = 8192;          // grid-stride beyond this (fixed, so sums are reproducible)
constexpr int kMaxScratchBlocks = 256;    // blocks when the tile lives in global scratch

__host__ __device__ inline size_t align16(size_t x) { return (x + 15) / 16 * 16; }

// Launch shape for a kernel with `fixed` shared bytes of tables and `per_thread` bytes per pixel column:
// the tile in shared memory when it fits, else (very wide trees) 32 threads over a global scratch.
inline TileConfig make_tile_config(size_t fixed, size_t per_thread, int64_t num_p) {
  TileConfig cfg{};
  cfg.threads = tile_threads(fixed, per_thread, kSmemLimit);
  const bool scratch = cfg.threads == 0;
  if (scratch) cfg.threads = 32;
  cfg.smem = scratch ? fixed : fixed + per_thread * cfg.threads;
  const int max_blocks = scratch ? kMaxScratchBlocks : kMaxBlocks;
  const int64_t tiles = (num_p + cfg.threads - 1) / cfg.threads;
  cfg.blocks = static_cast<int>(tiles < max_blocks ? (tiles > 0 ? tiles : 1) : max_blocks);
  cfg.scratch_bytes = scratch ? per_thread * cfg.threads * cfg.blocks : 0;
  return cfg;
}

}  // namespace cuda
}  // namespace hssn
