// Portable C++ kernels of the matrix product: the reference the AVX-512 kernels are tested against, and the path
// for CPUs without AVX-512. Same summation order as the SIMD kernels (the micro-tile shapes differ, which never
// changes a sum); the only difference is that f32 products are rounded before the add (no FMA), written as two
// statements so that no compiler fuses them (-ffp-contract=on contracts within one expression only).
// Micro-tiles are sized for the baseline x86-64 target (16 SSE registers): 4 × 8 f32 accumulators (measured 5×
// faster than 4 × 16, which spills), 4 × 16 for bf16.
#include <algorithm>
#include <cstring>

#include "formats/float_convert.h"
#include "verify/gemm_internal.h"

namespace hx::gemm {
namespace {

constexpr int kMr = 4;
constexpr int kF32Nr = 8;
constexpr int kBf16Nr = 16;
constexpr int kKcCells = 128;

void pack_b_f32(const void* tile, int64_t tile_stride, int rows, int64_t k_cells, void* panel) {
  const auto* src = static_cast<const float*>(tile);
  auto* dst = static_cast<float*>(panel);
  for (int64_t k = 0; k < k_cells; ++k) {
    for (int n = 0; n < kF32Nr; ++n) dst[k * kF32Nr + n] = n < rows ? src[n * tile_stride + k] : 0.0f;
  }
}

// The generic bf16 B panel splits each cell into its halves, [k_cells][2][kBf16Nr] (even k of the features, then
// odd k), rather than vdpbf16ps's interleaved pairs: GCC 12.2 at -O3 miscompiles the loop over interleaved pairs
// (its loop vectoriser counts one product twice; the generic bf16 GEMM tests against the double reference
// would catch a relapse).
void pack_b_bf16(const void* tile, int64_t tile_stride, int rows, int64_t k_cells, void* panel) {
  const auto* src = static_cast<const uint16_t*>(tile);
  auto* dst = static_cast<uint16_t*>(panel);
  for (int64_t cell = 0; cell < k_cells; ++cell) {
    for (int n = 0; n < kBf16Nr; ++n) {
      const bool valid = n < rows;
      dst[cell * 2 * kBf16Nr + n] = valid ? src[n * 2 * tile_stride + 2 * cell] : uint16_t{0};
      dst[cell * 2 * kBf16Nr + kBf16Nr + n] = valid ? src[n * 2 * tile_stride + 2 * cell + 1] : uint16_t{0};
    }
  }
}

template <int Rows>
void micro_f32(int64_t k_cells, const float* a, const float* b, float* c, int64_t ldc, bool load_c) {
  float acc[Rows][kF32Nr];
  for (int m = 0; m < Rows; ++m) {
    for (int n = 0; n < kF32Nr; ++n) acc[m][n] = load_c ? c[m * ldc + n] : 0.0f;
  }
  for (int64_t k = 0; k < k_cells; ++k) {
    for (int m = 0; m < Rows; ++m) {
      const float x = a[k * Rows + m];
      for (int n = 0; n < kF32Nr; ++n) {
        const float product = x * b[k * kF32Nr + n];
        acc[m][n] = acc[m][n] + product;
      }
    }
  }
  for (int m = 0; m < Rows; ++m) std::memcpy(c + m * ldc, acc[m], sizeof(acc[m]));
}

// vdpbf16ps semantics: s = (s + x_hi·w_hi) + x_lo·w_lo, products of two bf16 values being exact in f32.
template <int Rows>
void micro_bf16(int64_t k_cells, const uint16_t* a, const uint16_t* b, float* c, int64_t ldc, bool load_c) {
  float acc[Rows][kBf16Nr];
  for (int m = 0; m < Rows; ++m) {
    for (int n = 0; n < kBf16Nr; ++n) acc[m][n] = load_c ? c[m * ldc + n] : 0.0f;
  }
  for (int64_t cell = 0; cell < k_cells; ++cell) {
    for (int m = 0; m < Rows; ++m) {
      const float x_lo = bf16_to_f32(a[2 * (cell * Rows + m)]);
      const float x_hi = bf16_to_f32(a[2 * (cell * Rows + m) + 1]);
      for (int n = 0; n < kBf16Nr; ++n) {
        const float product_hi = x_hi * bf16_to_f32(b[cell * 2 * kBf16Nr + kBf16Nr + n]);
        const float product_lo = x_lo * bf16_to_f32(b[cell * 2 * kBf16Nr + n]);
        acc[m][n] = acc[m][n] + product_hi;
        acc[m][n] = acc[m][n] + product_lo;
      }
    }
  }
  for (int m = 0; m < Rows; ++m) std::memcpy(c + m * ldc, acc[m], sizeof(acc[m]));
}

void micro_kernel_f32(int64_t k_cells, const void* a_panel, const void* b_panel, float* c, int64_t ldc, bool load_c,
                      int rows) {
  const auto* a = static_cast<const float*>(a_panel);
  const auto* b = static_cast<const float*>(b_panel);
  switch (rows) {
    case 1:
      return micro_f32<1>(k_cells, a, b, c, ldc, load_c);
    case 2:
      return micro_f32<2>(k_cells, a, b, c, ldc, load_c);
    case 3:
      return micro_f32<3>(k_cells, a, b, c, ldc, load_c);
    default:
      return micro_f32<4>(k_cells, a, b, c, ldc, load_c);
  }
}

void micro_kernel_bf16(int64_t k_cells, const void* a_panel, const void* b_panel, float* c, int64_t ldc, bool load_c,
                       int rows) {
  const auto* a = static_cast<const uint16_t*>(a_panel);
  const auto* b = static_cast<const uint16_t*>(b_panel);
  switch (rows) {
    case 1:
      return micro_bf16<1>(k_cells, a, b, c, ldc, load_c);
    case 2:
      return micro_bf16<2>(k_cells, a, b, c, ldc, load_c);
    case 3:
      return micro_bf16<3>(k_cells, a, b, c, ldc, load_c);
    default:
      return micro_bf16<4>(k_cells, a, b, c, ldc, load_c);
  }
}

}  // namespace

const KernelSet& generic_kernels(bool bf16) {
  static const KernelSet f32{"generic-f32", kMr, kF32Nr, kKcCells, false, pack_b_f32, micro_kernel_f32, nullptr};
  static const KernelSet bf{"generic-bf16", kMr, kBf16Nr, kKcCells, true, pack_b_bf16, micro_kernel_bf16, nullptr};
  return bf16 ? bf : f32;
}

}  // namespace hx::gemm
