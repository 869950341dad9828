// The CPU kernels compiled for AVX2 + FMA (8 fp32 lanes); chosen at run time by cpu_kernels().
#include "cpu_kernels.h"

#if HSSN_X86_ISA_BUILDS
#pragma GCC target("avx2,fma,f16c")
#define HSSN_ISA isa_avx2
#include "tile_kernels.h"
namespace hssn {
constexpr CpuKernels kCpuAvx2 = isa_avx2::kernels("avx2");
}
#endif
