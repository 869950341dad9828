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

// Element i of a target of type t as int64 (a uniform switch: for kernels that read one label per pixel, in
// place of an instantiation per target type).
__device__ __forceinline__ int64_t load_target(const void* t, TargetType type, int64_t i) {
  switch (type) {
    case TargetType::kLong: return static_cast<const int64_t*>(t)[i];
    case TargetType::kInt: return static_cast<const int32_t*>(t)[i];
    default: return static_cast<const uint8_t*>(t)[i];
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

constexpr int kMaxBlocks = 8192;  // grid-stride beyond this (fixed, so sums are reproducible)

}  // namespace cuda
}  // namespace hssn
