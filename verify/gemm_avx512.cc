// AVX-512 kernels of the matrix product and the dense-row decoders, compiled per function with target attributes
// so that the library still runs (on the generic path) on CPUs without AVX-512. Only called after
// cpu_supports(CpuIsa::kAvx512) (and cpu_supports_bf16_dot() for the bf16 micro-kernel).
//
// Micro-tile 8 token rows × 48 output features: 24 zmm accumulators, per k cell 3 panel loads + 8 broadcasts for
// 24 FMAs (or vdpbf16ps), which keeps both FMA pipes of a Zen 4/5 or Sapphire Rapids core busy. k chunk of 128
// cells: the B panel (128 × 48 × 4 B = 24 KiB) stays in L1 while the A panels stream from L2.
// GCC 12 reports the deliberately undefined vectors inside its own intrinsic headers (_mm512_undefined_*) as
// (maybe-)uninitialized once they are inlined here (GCC bug 105593); the pragmas must precede the header.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif
#include <immintrin.h>

#include <algorithm>
#include <cstring>

#include "verify/gemm_internal.h"

#define HX_TARGET_AVX512 __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,fma,f16c")))
#define HX_TARGET_AVX512_BF16 __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,fma,f16c,avx512bf16")))

namespace hx::gemm {
namespace {

constexpr int kMr = 8;
constexpr int kVectors = 3;  // zmm vectors of 16 features per micro-tile row
constexpr int kNr = 16 * kVectors;
constexpr int kKcCells = 128;

// ---- packing: 16×16 transposes of 32-bit cells ----------------------------------------------------------------

HX_TARGET_AVX512 inline void transpose16x16(__m512i r[16]) {
  __m512i t[16];
  for (int i = 0; i < 16; i += 2) {  // interleave 32-bit cells of row pairs
    t[i] = _mm512_unpacklo_epi32(r[i], r[i + 1]);
    t[i + 1] = _mm512_unpackhi_epi32(r[i], r[i + 1]);
  }
  for (int i = 0; i < 16; i += 4) {  // then 64-bit pairs of row quads
    r[i] = _mm512_unpacklo_epi64(t[i], t[i + 2]);
    r[i + 1] = _mm512_unpackhi_epi64(t[i], t[i + 2]);
    r[i + 2] = _mm512_unpacklo_epi64(t[i + 1], t[i + 3]);
    r[i + 3] = _mm512_unpackhi_epi64(t[i + 1], t[i + 3]);
  }
  // Now r[4q + j] holds, in each 128-bit lane L, cell 4L + j of rows 4q..4q+3. Gather the lanes.
  for (int j = 0; j < 4; ++j) {
    const __m512i a = _mm512_shuffle_i32x4(r[j], r[4 + j], 0x88);  // lanes 0,2 of each
    const __m512i b = _mm512_shuffle_i32x4(r[8 + j], r[12 + j], 0x88);
    const __m512i c = _mm512_shuffle_i32x4(r[j], r[4 + j], 0xdd);  // lanes 1,3 of each
    const __m512i d = _mm512_shuffle_i32x4(r[8 + j], r[12 + j], 0xdd);
    t[j] = _mm512_shuffle_i32x4(a, b, 0x88);       // lane 0 → cell j
    t[8 + j] = _mm512_shuffle_i32x4(a, b, 0xdd);   // lane 2 → cell 8 + j
    t[4 + j] = _mm512_shuffle_i32x4(c, d, 0x88);   // lane 1 → cell 4 + j
    t[12 + j] = _mm512_shuffle_i32x4(c, d, 0xdd);  // lane 3 → cell 12 + j
  }
  for (int i = 0; i < 16; ++i) r[i] = t[i];
}

HX_TARGET_AVX512 void pack_b(const void* tile, int64_t tile_stride, int rows, int64_t k_cells, void* panel) {
  const auto* src = static_cast<const uint32_t*>(tile);
  auto* dst = static_cast<uint32_t*>(panel);
  for (int group = 0; group < kVectors; ++group) {
    const int group_rows = std::max(0, std::min(16, rows - 16 * group));
    for (int64_t k0 = 0; k0 < k_cells; k0 += 16) {
      const int64_t valid = std::min<int64_t>(16, k_cells - k0);
      const __mmask16 mask = static_cast<__mmask16>((1u << valid) - 1);
      __m512i r[16];
      for (int i = 0; i < 16; ++i) {
        r[i] = i < group_rows ? _mm512_maskz_loadu_epi32(mask, src + (16 * group + i) * tile_stride + k0)
                              : _mm512_setzero_si512();
      }
      transpose16x16(r);
      for (int64_t j = 0; j < valid; ++j) _mm512_store_si512(dst + (k0 + j) * kNr + 16 * group, r[j]);
    }
  }
}

// ---- micro-kernels ---------------------------------------------------------------------------------------------

template <int Rows>
HX_TARGET_AVX512 void micro_f32(int64_t k_cells, const float* a, const float* b, float* c, int64_t ldc, bool load_c) {
  __m512 acc[Rows][kVectors];
#pragma GCC unroll 8
  for (int m = 0; m < Rows; ++m) {
#pragma GCC unroll 3
    for (int v = 0; v < kVectors; ++v) acc[m][v] = load_c ? _mm512_loadu_ps(c + m * ldc + 16 * v) : _mm512_setzero_ps();
  }
  for (int64_t k = 0; k < k_cells; ++k) {
    const __m512 b0 = _mm512_load_ps(b + k * kNr);
    const __m512 b1 = _mm512_load_ps(b + k * kNr + 16);
    const __m512 b2 = _mm512_load_ps(b + k * kNr + 32);
#pragma GCC unroll 8
    for (int m = 0; m < Rows; ++m) {
      const __m512 x = _mm512_set1_ps(a[k * Rows + m]);
      acc[m][0] = _mm512_fmadd_ps(x, b0, acc[m][0]);
      acc[m][1] = _mm512_fmadd_ps(x, b1, acc[m][1]);
      acc[m][2] = _mm512_fmadd_ps(x, b2, acc[m][2]);
    }
  }
#pragma GCC unroll 8
  for (int m = 0; m < Rows; ++m) {
#pragma GCC unroll 3
    for (int v = 0; v < kVectors; ++v) _mm512_storeu_ps(c + m * ldc + 16 * v, acc[m][v]);
  }
}

template <int Rows>
HX_TARGET_AVX512_BF16 void micro_bf16(int64_t k_cells, const uint16_t* a, const uint16_t* b, float* c, int64_t ldc,
                                      bool load_c) {
  __m512 acc[Rows][kVectors];
#pragma GCC unroll 8
  for (int m = 0; m < Rows; ++m) {
#pragma GCC unroll 3
    for (int v = 0; v < kVectors; ++v) acc[m][v] = load_c ? _mm512_loadu_ps(c + m * ldc + 16 * v) : _mm512_setzero_ps();
  }
  for (int64_t k = 0; k < k_cells; ++k) {
    const __m512bh b0 = (__m512bh)_mm512_load_si512(b + 2 * k * kNr);
    const __m512bh b1 = (__m512bh)_mm512_load_si512(b + 2 * k * kNr + 32);
    const __m512bh b2 = (__m512bh)_mm512_load_si512(b + 2 * k * kNr + 64);
#pragma GCC unroll 8
    for (int m = 0; m < Rows; ++m) {
      int32_t pair;
      std::memcpy(&pair, a + 2 * (k * Rows + m), sizeof(pair));
      const __m512bh x = (__m512bh)_mm512_set1_epi32(pair);
      acc[m][0] = _mm512_dpbf16_ps(acc[m][0], x, b0);
      acc[m][1] = _mm512_dpbf16_ps(acc[m][1], x, b1);
      acc[m][2] = _mm512_dpbf16_ps(acc[m][2], x, b2);
    }
  }
#pragma GCC unroll 8
  for (int m = 0; m < Rows; ++m) {
#pragma GCC unroll 3
    for (int v = 0; v < kVectors; ++v) _mm512_storeu_ps(c + m * ldc + 16 * v, acc[m][v]);
  }
}

HX_TARGET_AVX512 void micro_kernel_f32(int64_t k_cells, const void* a_panel, const void* b_panel, float* c, int64_t ldc,
                                       bool load_c, int rows) {
  const auto* a = static_cast<const float*>(a_panel);
  const auto* b = static_cast<const float*>(b_panel);
  switch (rows) {
    case 1:
      return micro_f32<1>(k_cells, a, b, c, ldc, load_c);
    case 2:
      return micro_f32<2>(k_cells, a, b, c, ldc, load_c);
    case 3:
      return micro_f32<3>(k_cells, a, b, c, ldc, load_c);
    case 4:
      return micro_f32<4>(k_cells, a, b, c, ldc, load_c);
    case 5:
      return micro_f32<5>(k_cells, a, b, c, ldc, load_c);
    case 6:
      return micro_f32<6>(k_cells, a, b, c, ldc, load_c);
    case 7:
      return micro_f32<7>(k_cells, a, b, c, ldc, load_c);
    default:
      return micro_f32<8>(k_cells, a, b, c, ldc, load_c);
  }
}

HX_TARGET_AVX512_BF16 void micro_kernel_bf16(int64_t k_cells, const void* a_panel, const void* b_panel, float* c,
                                             int64_t ldc, bool load_c, int rows) {
  const auto* a = static_cast<const uint16_t*>(a_panel);
  const auto* b = static_cast<const uint16_t*>(b_panel);
  switch (rows) {
    case 1:
      return micro_bf16<1>(k_cells, a, b, c, ldc, load_c);
    case 2:
      return micro_bf16<2>(k_cells, a, b, c, ldc, load_c);
    case 3:
      return micro_bf16<3>(k_cells, a, b, c, ldc, load_c);
    case 4:
      return micro_bf16<4>(k_cells, a, b, c, ldc, load_c);
    case 5:
      return micro_bf16<5>(k_cells, a, b, c, ldc, load_c);
    case 6:
      return micro_bf16<6>(k_cells, a, b, c, ldc, load_c);
    case 7:
      return micro_bf16<7>(k_cells, a, b, c, ldc, load_c);
    default:
      return micro_bf16<8>(k_cells, a, b, c, ldc, load_c);
  }
}

// ---- dense row decoders ----------------------------------------------------------------------------------------

// f32 → bf16 bits, nearest even, NaN → quiet NaN 0x7fc0 with the sign (formats/float_convert.h's f32_to_bf16).
HX_TARGET_AVX512 inline __m256i f32_to_bf16_bits(__m512 x) {
  const __m512i u = _mm512_castps_si512(x);
  const __m512i lsb = _mm512_and_si512(_mm512_srli_epi32(u, 16), _mm512_set1_epi32(1));
  const __m512i rounded = _mm512_srli_epi32(_mm512_add_epi32(u, _mm512_add_epi32(lsb, _mm512_set1_epi32(0x7fff))), 16);
  const __m512i magnitude = _mm512_and_si512(u, _mm512_set1_epi32(0x7fffffff));
  const __mmask16 nan = _mm512_cmpgt_epu32_mask(magnitude, _mm512_set1_epi32(0x7f800000));
  const __m512i quiet =
      _mm512_or_si512(_mm512_and_si512(_mm512_srli_epi32(u, 16), _mm512_set1_epi32(0x8000)), _mm512_set1_epi32(0x7fc0));
  return _mm512_cvtepi32_epi16(_mm512_mask_blend_epi32(nan, rounded, quiet));
}

// 16 float8 codes → f32 through f16: e5m2 is the high byte of an f16; e4m3fn's magnitude shifted into an f16 is
// the value · 2^-8 (exponent bias 15 vs 7, subnormals included), and S.1111.111 is its only NaN.
HX_TARGET_AVX512 inline __m512 f8_to_f32(__m128i codes, DType dtype) {
  const __m256i wide = _mm256_cvtepu8_epi16(codes);
  if (dtype == DType::kF8_E5M2) return _mm512_cvtph_ps(_mm256_slli_epi16(wide, 8));
  const __m256i magnitude = _mm256_and_si256(wide, _mm256_set1_epi16(0x7f));
  __m512 value = _mm512_mul_ps(_mm512_cvtph_ps(_mm256_slli_epi16(magnitude, 7)), _mm512_set1_ps(256.0f));
  const __m512i sign = _mm512_slli_epi32(_mm512_cvtepu16_epi32(_mm256_and_si256(wide, _mm256_set1_epi16(0x80))), 24);
  value = _mm512_castsi512_ps(_mm512_or_si512(_mm512_castps_si512(value), sign));
  const __mmask16 nan = _mm512_cmpeq_epi32_mask(_mm512_cvtepu16_epi32(magnitude), _mm512_set1_epi32(0x7f));
  return _mm512_mask_blend_ps(nan, value, _mm512_set1_ps(__builtin_nanf("")));
}

// 16 values of `dtype` at element offset i (fewer under `mask`, the rest zero).
HX_TARGET_AVX512 inline __m512 load16_as_f32(DType dtype, const std::byte* src, int64_t i, __mmask16 mask) {
  switch (dtype) {
    case DType::kF32:
      return _mm512_maskz_loadu_ps(mask, reinterpret_cast<const float*>(src) + i);
    case DType::kBF16:
      return _mm512_castsi512_ps(
          _mm512_slli_epi32(_mm512_cvtepu16_epi32(_mm256_maskz_loadu_epi16(mask, src + 2 * i)), 16));
    case DType::kF16:
      return _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(mask, src + 2 * i));
    default:  // kF8_E4M3, kF8_E5M2
      return f8_to_f32(_mm_maskz_loadu_epi8(mask, src + i), dtype);
  }
}

bool has_simd_decoder(DType dtype) {
  return dtype == DType::kF32 || dtype == DType::kBF16 || dtype == DType::kF16 || dtype == DType::kF8_E4M3 ||
         dtype == DType::kF8_E5M2;
}

}  // namespace

HX_TARGET_AVX512 bool avx512_decode_row_f32(DType dtype, const std::byte* src, int64_t n, float* dst) {
  if (!has_simd_decoder(dtype)) return false;
  for (int64_t i = 0; i < n; i += 16) {
    const __mmask16 mask = n - i >= 16 ? __mmask16{0xffff} : static_cast<__mmask16>((1u << (n - i)) - 1);
    _mm512_mask_storeu_ps(dst + i, mask, load16_as_f32(dtype, src, i, mask));
  }
  return true;
}

HX_TARGET_AVX512 bool avx512_decode_row_bf16(DType dtype, const std::byte* src, int64_t n, uint16_t* dst) {
  if (!has_simd_decoder(dtype)) return false;
  for (int64_t i = 0; i < n; i += 16) {
    const __mmask16 mask = n - i >= 16 ? __mmask16{0xffff} : static_cast<__mmask16>((1u << (n - i)) - 1);
    _mm256_mask_storeu_epi16(dst + i, mask, f32_to_bf16_bits(load16_as_f32(dtype, src, i, mask)));
  }
  return true;
}

// KernelSet::pack_a_tile for kMr = 8 rows: per 8 cells, each row's next 8 cells (8 floats, or 16 floats rounded to
// 8 bf16 pairs; masked loads past n read zeros, which also zero the odd-n high half), then the 8×8 block of 32-bit
// cells transposed (unpack 32, unpack 64, swap 128-bit halves) into 8 panel cells of 8 rows.
static_assert(kMr == 8, "pack_a_tile transposes 8-row tiles");
template <bool kBf16>
HX_TARGET_AVX512 void pack_a_tile(const float* x, int64_t x_stride, int64_t n, uint32_t* panel) {
  const int64_t cells = kBf16 ? (n + 1) / 2 : n;
  for (int64_t c0 = 0; c0 < cells; c0 += 8) {
    __m256i r[8];
    if constexpr (kBf16) {
      const int64_t k0 = 2 * c0, left = n - k0;
      const __mmask16 mask = left >= 16 ? __mmask16{0xffff} : static_cast<__mmask16>((1u << left) - 1);
      for (int m = 0; m < 8; ++m) r[m] = f32_to_bf16_bits(_mm512_maskz_loadu_ps(mask, x + m * x_stride + k0));
    } else {
      const int64_t left = n - c0;
      const __mmask8 mask = left >= 8 ? __mmask8{0xff} : static_cast<__mmask8>((1u << left) - 1);
      for (int m = 0; m < 8; ++m) r[m] = _mm256_castps_si256(_mm256_maskz_loadu_ps(mask, x + m * x_stride + c0));
    }
    __m256i t[8], u[8];
    for (int i = 0; i < 4; ++i) {
      t[2 * i] = _mm256_unpacklo_epi32(r[2 * i], r[2 * i + 1]);
      t[2 * i + 1] = _mm256_unpackhi_epi32(r[2 * i], r[2 * i + 1]);
    }
    for (int i = 0; i < 2; ++i) {
      u[4 * i + 0] = _mm256_unpacklo_epi64(t[4 * i + 0], t[4 * i + 2]);
      u[4 * i + 1] = _mm256_unpackhi_epi64(t[4 * i + 0], t[4 * i + 2]);
      u[4 * i + 2] = _mm256_unpacklo_epi64(t[4 * i + 1], t[4 * i + 3]);
      u[4 * i + 3] = _mm256_unpackhi_epi64(t[4 * i + 1], t[4 * i + 3]);
    }
    __m256i columns[8];  // literal immediates: an unoptimised (sanitizer) build does not fold a computed one
    for (int j = 0; j < 4; ++j) {
      columns[j] = _mm256_permute2x128_si256(u[j], u[4 + j], 0x20);
      columns[4 + j] = _mm256_permute2x128_si256(u[j], u[4 + j], 0x31);
    }
    const int64_t block = std::min<int64_t>(8, cells - c0);
    for (int j = 0; j < block; ++j) _mm256_storeu_si256(reinterpret_cast<__m256i*>(panel + (c0 + j) * 8), columns[j]);
  }
}

const KernelSet& avx512_kernels(bool bf16) {
  static const KernelSet f32{"avx512-f32", kMr, kNr, kKcCells, false, pack_b, micro_kernel_f32, pack_a_tile<false>};
  static const KernelSet bf{"avx512-bf16", kMr, kNr, kKcCells, true, pack_b, micro_kernel_bf16, pack_a_tile<true>};
  return bf16 ? bf : f32;
}

}  // namespace hx::gemm
