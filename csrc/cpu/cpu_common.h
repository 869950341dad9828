// Helpers of the CPU kernels: target dtype dispatch and the valid-pixel count.
#pragma once

#include <ATen/Parallel.h>
#include <c10/util/Exception.h>

#include <atomic>
#include <cstdint>
#include <functional>
#include <limits>
#include <vector>

#include "../kernels/common.h"

#if defined(__linux__)
#include <sys/mman.h>
#endif

namespace hssn {

// Calls f(tag) with a value of the C++ type of the target dtype (int64, int32 or uint8; checked upstream).
template <class F>
void dispatch_target(at::ScalarType st, F&& f) {
  switch (st) {
    case at::kLong: f(int64_t{}); break;
    case at::kInt: f(int32_t{}); break;
    default: f(uint8_t{}); break;
  }
}

// Pixels whose label is not ignore_index (a label that is no leaf counts: the kernel gives it a NaN loss).
template <class tgt_t>
int64_t count_valid(const tgt_t* t, PixelLayout tl, int64_t num_p, int64_t ignore_index) {
  const bool dense = tl.sw == 1 && tl.sh == tl.w && tl.sb == tl.h * tl.w;  // one run: no divisions
  return at::parallel_reduce(
      0, num_p, 4096, int64_t{0},
      [&](int64_t b, int64_t e, int64_t acc) {
        if (dense) {
          for (int64_t p = b; p < e; ++p) acc += static_cast<int64_t>(t[p]) != ignore_index;
        } else {
          for (int64_t p = b; p < e; ++p) acc += static_cast<int64_t>(t[tl.offset(p)]) != ignore_index;
        }
        return acc;
      },
      std::plus<int64_t>());
}

// Asks Linux for transparent huge pages over a freshly allocated buffer the kernel is about to write once (the
// gradient): its first touch then faults 2 MiB pages instead of 4 KiB ones. glibc maps every large allocation
// anew, so at 177 channels those faults were a third of the loss's time. Advice only: without THP (or off
// Linux) nothing changes, and errors are ignored.
inline void advise_huge_pages(void* ptr, int64_t bytes) {
#if defined(__linux__) && defined(MADV_HUGEPAGE)
  constexpr uintptr_t kHuge = uintptr_t{2} << 20;
  const uintptr_t start = reinterpret_cast<uintptr_t>(ptr);
  const uintptr_t begin = (start + kHuge - 1) & ~(kHuge - 1);
  const uintptr_t end = (start + static_cast<uintptr_t>(bytes)) & ~(kHuge - 1);
  if (bytes > 0 && end > begin) madvise(reinterpret_cast<void*>(begin), end - begin, MADV_HUGEPAGE);
#else
  (void)ptr;
  (void)bytes;
#endif
}

}  // namespace hssn
