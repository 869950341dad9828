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
  return at::parallel_reduce(
      0, num_p, 4096, int64_t{0},
      [&](int64_t b, int64_t e, int64_t acc) {
        for (int64_t p = b; p < e; ++p) acc += static_cast<int64_t>(t[tl.offset(p)]) != ignore_index;
        return acc;
      },
      std::plus<int64_t>());
}

}  // namespace hssn
