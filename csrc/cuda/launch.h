// Torch-free interface between the CUDA kernels (cuda/<op>.cu) and their ATen glue (ops/<op>.cpp).
#pragma once

#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>

#include "../kernels/common.h"

namespace hssn {
namespace cuda {

enum class Dtype { kFloat, kHalf, kBFloat16 };
enum class TargetType { kLong, kInt, kByte };

struct FtmParams {
  const void* z; PixelLayout zl; int64_t zsc; Dtype dtype;
  const void* t; PixelLayout tl; TargetType ttype;
  void* g; PixelLayout gl; int64_t gsc;         // gradient (logits' dtype) or null
  const float* grad_loss; PixelLayout gll;      // per-pixel weights (backward of reduction none) or null
  const int64_t* count;                         // valid pixels: the gradient is divided by it (mean) or null
  float* loss_pix;                              // per-pixel loss (reduction none) or null
  float* partial;                               // per-block loss sums (one per block) or null
  const int32_t* ancestors;                     // (C, depth): A(c), self first, -1 padded
  const int32_t* dfs;                           // (4, C): HierarchyTables.dfs (perm, size, depth, pos)
  int num_c, depth;
  int64_t num_p;
  float gamma;
  int64_t ignore_index;
  bool partial_labels;                          // labels may be inner nodes (no term for their descendants)
  bool offsets32;                               // every logits and gradient offset is below 2^31
};

constexpr int kPixelThreads = 256;              // threads per block of the per-pixel walk kernels
constexpr int kFtmPixels = 4;                   // pixels per thread of ftm_kernel
constexpr int kArgmaxPixels = 8;                // pixels per thread of path_argmax_kernel
int pixel_blocks(int64_t num_p, int pixels_per_thread);  // their grid (fixed beyond kMaxBlocks: reproducible sums)
cudaError_t launch_ftm(const FtmParams& p, int blocks, cudaStream_t stream);

struct PathParams {
  const void* z; PixelLayout zl; int64_t zsc; Dtype dtype;
  const int32_t* dfs;                           // (4, C): HierarchyTables.dfs (perm, size, depth, pos)
  int64_t* leaf_map;                            // (P,)
  int num_c;
  int64_t num_p;
  bool offsets32;                               // every logits offset is below 2^31
};
cudaError_t launch_path_argmax(const PathParams& p, int blocks, cudaStream_t stream);

struct SampleParams {
  const void* t; TargetType ttype;              // flat contiguous target
  const int64_t* csum;                          // inclusive prefix count of valid pixels (P,)
  int64_t num_p;
  const int32_t* leaf_index; int num_c;
  const int32_t* dist; int num_l;
  int64_t* out; int64_t* count;                 // (T, 3) pre-filled with -1; 0-d
  int64_t num_triplets;
  uint32_t seed;
  int mode;
};
cudaError_t launch_sample_triplets(const SampleParams& p, cudaStream_t stream);

constexpr int kTripletCoef = 11;  // per triplet: hinge, ka[3], kp[2], kn[2], rs[3] (kernels/common.h TripletGrad)

struct TripletParams {
  const void* e; PixelLayout el; int64_t esc; Dtype dtype; int64_t num_e; int64_t num_p;
  const void* t; PixelLayout tl; TargetType ttype;
  const int64_t* triplets; const int64_t* count; int64_t num_t;
  const int32_t* leaf_index; int num_c;
  const int32_t* dist; int num_l;
  float margin_eps, margin_scale; int height; bool hierarchy_margin; int distance;
  float* hinge;                                 // (T,)
  float* coef;                                  // (T, kTripletCoef) gradient coefficients or null
  void* g; PixelLayout gl; int64_t gsc;         // zero-filled gradient or null
};
cudaError_t launch_triplet_forward(const TripletParams& p, cudaStream_t stream);

}  // namespace cuda
}  // namespace hssn
