// The CPU kernels' interface: what the ops (csrc/ops/*.cpp) hand a kernel (plain-data launch records) and
// the table of kernels for the instruction set this machine runs (cpu_kernels()). tile_kernels.h holds the
// kernels themselves, compiled once per instruction set by isa_default.cpp, isa_avx2.cpp, isa_avx512.cpp;
// every header those files need is included here, before their `#pragma GCC target`, so that what is
// shared between them is compiled for the baseline target alone (one definition for the linker to keep).
#pragma once

#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <c10/core/ScalarType.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <type_traits>
#include <vector>

#include "../kernels/common.h"
#include "cpu_common.h"

namespace hssn {

constexpr int64_t kCpuTile = 64;  // pixels per tile of every CPU kernel (chosen by measurement, docs/native.md)

// The focal tree-min tile kernel's arguments (one call covers all pixels).
struct FtmLaunch {
  at::ScalarType dtype, target_dtype;
  const void* z; PixelLayout zl; int64_t zsc;  // logits, their pixel layout and channel stride
  const void* t; PixelLayout tl;               // targets
  void* g; PixelLayout gl; int64_t gsc;        // gradient (null: none)
  double* loss_pix;   // per-pixel loss (reduction none) or null
  double* tile_sums;  // per-tile loss sums (reduction sum / mean) or null
  int64_t num_p;
  int num_c, depth;
  const int32_t *parent, *bottom_up;
  const int32_t* dfs;  // (4, C): HierarchyTables.dfs (perm, size and depth by position, position by channel)
  bool partial;  // labels may be any node (strict descendants of the label get no term)
  double gamma;
  int64_t ignore_index;
  double grad_scale;        // sum / mean scale when grad_loss is null
  const double* grad_loss;  // per-pixel weights (backward of reduction none) or null
  PixelLayout gll;
};

// The path argmax tile kernel's arguments.
struct PathLaunch {
  at::ScalarType dtype;
  const void* z; PixelLayout zl; int64_t zsc;
  int64_t* out;  // leaf id per pixel, contiguous
  int64_t num_p;
  int num_c;
  const int32_t* dfs;  // (4, C): HierarchyTables.dfs (perm, size and depth by position, position by channel)
};

struct CpuKernels {
  const char* isa;  // "default", "avx2" or "avx512"
  void (*ftm)(const FtmLaunch&);
  void (*path_argmax)(const PathLaunch&);
};

extern const CpuKernels kCpuDefault, kCpuAvx2, kCpuAvx512;  // isa_*.cpp (null entries where not built)

// Whether isa_avx2.cpp / isa_avx512.cpp build their kernels (GCC's target pragmas on x86-64); elsewhere
// isa_default.cpp defines their tables with null entries.
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define HSSN_X86_ISA_BUILDS 1
#else
#define HSSN_X86_ISA_BUILDS 0
#endif

// The kernels for the instruction set torch's own CPU kernels use (at::get_cpu_capability(): the best
// this CPU has, or what ATEN_CPU_CAPABILITY=default|avx2|avx512 asks for), chosen once.
const CpuKernels& cpu_kernels();

}  // namespace hssn
