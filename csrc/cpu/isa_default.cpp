// The CPU kernels for the baseline instruction set of the build (SSE2 on x86-64), and cpu_kernels(): the
// table for the instruction set torch picked for its own kernels, falling back to this one.
#include <ATen/Version.h>
#include <torch/library.h>

#include "cpu_kernels.h"

#define HSSN_ISA isa_default
#include "tile_kernels.h"

namespace hssn {

constexpr CpuKernels kCpuDefault = isa_default::kernels("default");
#if !HSSN_X86_ISA_BUILDS
constexpr CpuKernels kCpuAvx2{"avx2", nullptr, nullptr}, kCpuAvx512{"avx512", nullptr, nullptr};  // not built
#endif

const CpuKernels& cpu_kernels() {
  static const CpuKernels& chosen = [] () -> const CpuKernels& {
    const std::string cap = at::get_cpu_capability();  // "DEFAULT", "AVX2", "AVX512" (others off x86)
    if (cap == "AVX512" && kCpuAvx512.ftm) return kCpuAvx512;
    if ((cap == "AVX512" || cap == "AVX2") && kCpuAvx2.ftm) return kCpuAvx2;
    return kCpuDefault;
  }();
  return chosen;
}

TORCH_LIBRARY_FRAGMENT(hssn, m) {
  m.def("cpu_isa() -> str", [] { return std::string(cpu_kernels().isa); });
}

}  // namespace hssn
