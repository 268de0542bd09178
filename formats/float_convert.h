// Conversions between f32 and the small float formats (bf16, f16, the float8 family, the FPx family).
//
// Design goals: one *scalar reference* codec, written from the format definition (sign, exponent bits, mantissa
// bits, bias, which codes are special) and obviously correct, plus *fast* conversions that must equal it bit for bit
// on every code (tests walk all 65,536 / 256 / 64 / 32 codes and the rounding boundaries between them).
// Rounding is round-to-nearest-even. Overflow follows the format unless saturation is asked for:
//   IEEE-style (bf16, f16, e5m2): to ±inf;  "fn" (e4m3fn): to NaN, as torch's cast does (|x| > 464 → NaN);
//   "fnuz": to the single NaN code 0x80;     FPx (e3m2, e2m2, e2m3, e2m1): no inf/NaN, always saturate to ±max.
// A NaN input gives the NaN code torch's cast gives, with the input's sign: bf16 0x7fc0, f16 0x7e00, e4m3fn and
// e5m2 0x7f (fnuz: 0x80); NaN payloads are not kept. Non-goals: rounding modes other than nearest-even, stochastic rounding.
#pragma once

#include <bit>
#include <cstddef>
#include <cstdint>

#include "formats/dtype.h"

namespace hx {

enum class FloatSpecials : uint8_t {
  kIeee,        // all-ones exponent is inf (mantissa 0) or NaN
  kFiniteNan,   // "fn": no inf; only S.1111.111 is NaN (e4m3fn)
  kFnuz,        // "fnuz": no inf, no -0; 0x80 is the only NaN
  kNone,        // FPx: every code is a finite number
};

struct MinifloatFormat {
  int exp_bits;
  int man_bits;
  int bias;
  FloatSpecials specials;
  constexpr int total_bits() const { return 1 + exp_bits + man_bits; }
};

inline constexpr MinifloatFormat kFormatBF16{8, 7, 127, FloatSpecials::kIeee};
inline constexpr MinifloatFormat kFormatF16{5, 10, 15, FloatSpecials::kIeee};
inline constexpr MinifloatFormat kFormatE4M3FN{4, 3, 7, FloatSpecials::kFiniteNan};
inline constexpr MinifloatFormat kFormatE5M2{5, 2, 15, FloatSpecials::kIeee};
inline constexpr MinifloatFormat kFormatE4M3FNUZ{4, 3, 8, FloatSpecials::kFnuz};
inline constexpr MinifloatFormat kFormatE5M2FNUZ{5, 2, 16, FloatSpecials::kFnuz};
inline constexpr MinifloatFormat kFormatFP6E3M2{3, 2, 3, FloatSpecials::kNone};  // torchao fp6 e3m2, max 28
inline constexpr MinifloatFormat kFormatFP6E2M3{2, 3, 1, FloatSpecials::kNone};  // MX fp6 e2m3, max 7.5
inline constexpr MinifloatFormat kFormatFP5E2M2{2, 2, 1, FloatSpecials::kNone};  // torchao fp5 e2m2, max 7
inline constexpr MinifloatFormat kFormatFP4E2M1{2, 1, 1, FloatSpecials::kNone};  // MX fp4 e2m1, max 6

enum class Overflow : uint8_t { kFormatDefault, kSaturate };

// ---- scalar reference (slow, from the definition) ----
double minifloat_decode_reference(uint32_t code, const MinifloatFormat& f);
uint32_t minifloat_encode_reference(float x, const MinifloatFormat& f, Overflow overflow = Overflow::kFormatDefault);
double minifloat_max_finite(const MinifloatFormat& f);

// ---- fast scalar conversions (must equal the reference bit for bit) ----
inline float bf16_to_f32(uint16_t h) { return std::bit_cast<float>(static_cast<uint32_t>(h) << 16); }

inline uint16_t f32_to_bf16(float x) {
  const uint32_t u = std::bit_cast<uint32_t>(x);
  if ((u & 0x7fffffffu) > 0x7f800000u) return static_cast<uint16_t>(((u >> 16) & 0x8000u) | 0x7fc0u);
  const uint32_t rounding_bias = 0x7fffu + ((u >> 16) & 1u);
  return static_cast<uint16_t>((u + rounding_bias) >> 16);
}

float f16_to_f32(uint16_t h);
uint16_t f32_to_f16(float x);

// Any format of at most 8 bits: decode through a 256-entry table, encode with float bit arithmetic.
float minifloat8_decode(uint32_t code, const MinifloatFormat& f);
uint32_t minifloat_encode_fast(float x, const MinifloatFormat& f, Overflow overflow = Overflow::kFormatDefault);

// F8_E8M0 (MX scale): value 2^(code-127), 0xFF is NaN, no sign, no zero. Decode only.
float e8m0_to_f32(uint8_t code);

// The format of a float dtype, or nullptr for F32/F64/F8_E8M0 and non-float dtypes.
const MinifloatFormat* minifloat_format_of(DType t);

// Bulk conversions used by readers and the forward pass: `n` elements of `src` (dtype `t`, contiguous,
// little-endian) to f32. Integer and bool dtypes convert by value. Throws UnsupportedError for complex/quantized.
void convert_to_f32(DType t, const void* src, float* dst, size_t n);
// f32 → `t` for the float dtypes with a minifloat format, plus F32/F64 (RNE, format-default overflow).
void convert_from_f32(DType t, const float* src, void* dst, size_t n);

}  // namespace hx
