// The CPU kernels compiled for AVX-512 (F, VL, BW, DQ) + FMA (16 fp32 lanes); chosen at run time by
// cpu_kernels().
#include "cpu_kernels.h"

#if HSSN_X86_ISA_BUILDS
#pragma GCC target("avx512f,avx512vl,avx512bw,avx512dq,avx2,fma,f16c,prefer-vector-width=512")
#define HSSN_ISA isa_avx512
#include "tile_kernels.h"
namespace hssn {
constexpr CpuKernels kCpuAvx512 = isa_avx512::kernels("avx512");
}
#endif
