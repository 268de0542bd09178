#include "formats/float_convert.h"

#include <array>
#include <cmath>
#include <cstring>
#include <limits>

#include "formats/errors.h"

namespace hx {
namespace {

struct CodeLayout {
  uint32_t man_mask, exp_all_ones, sign_bit, max_finite_magnitude;
};

CodeLayout layout_of(const MinifloatFormat& f) {
  CodeLayout l{};
  l.man_mask = (1u << f.man_bits) - 1;
  l.exp_all_ones = (1u << f.exp_bits) - 1;
  l.sign_bit = 1u << (f.exp_bits + f.man_bits);
  switch (f.specials) {
    case FloatSpecials::kIeee:  // largest exponent is reserved for inf/NaN
      l.max_finite_magnitude = ((l.exp_all_ones - 1) << f.man_bits) | l.man_mask;
      break;
    case FloatSpecials::kFiniteNan:  // S.1111.111 is NaN, S.1111.110 is the max
      l.max_finite_magnitude = (l.exp_all_ones << f.man_bits) | (l.man_mask - 1);
      break;
    case FloatSpecials::kFnuz:
    case FloatSpecials::kNone:
      l.max_finite_magnitude = (l.exp_all_ones << f.man_bits) | l.man_mask;
      break;
  }
  return l;
}

uint32_t nan_code(const MinifloatFormat& f, const CodeLayout& l, uint32_t sign) {
  switch (f.specials) {
    case FloatSpecials::kIeee:
      // torch's casts: quiet NaN 0x7fc0 / 0x7e00 for bf16 / f16, but 0x7f (all mantissa bits) for float8_e5m2.
      if (f.total_bits() == 8) return sign | (l.exp_all_ones << f.man_bits) | l.man_mask;
      return sign | (l.exp_all_ones << f.man_bits) | (1u << (f.man_bits - 1));
    case FloatSpecials::kFiniteNan:
      return sign | (l.exp_all_ones << f.man_bits) | l.man_mask;
    case FloatSpecials::kFnuz:
      return l.sign_bit;
    case FloatSpecials::kNone:
      return 0;  // FPx has no NaN; callers reject non-finite weights before encoding
  }
  return 0;
}

// What a value too large for the format becomes.
uint32_t overflow_code(const MinifloatFormat& f, const CodeLayout& l, uint32_t sign, Overflow overflow) {
  if (overflow == Overflow::kSaturate || f.specials == FloatSpecials::kNone) return sign | l.max_finite_magnitude;
  if (f.specials == FloatSpecials::kIeee) return sign | (l.exp_all_ones << f.man_bits);
  return nan_code(f, l, sign);
}

uint32_t apply_sign(const MinifloatFormat& f, uint32_t magnitude, uint32_t sign) {
  if (f.specials == FloatSpecials::kFnuz && magnitude == 0) return 0;  // fnuz has no negative zero
  return magnitude | sign;
}

}  // namespace

double minifloat_decode_reference(uint32_t code, const MinifloatFormat& f) {
  const CodeLayout l = layout_of(f);
  const bool negative = (code & l.sign_bit) != 0;
  const uint32_t e = (code >> f.man_bits) & l.exp_all_ones;
  const uint32_t m = code & l.man_mask;
  const double nan = std::numeric_limits<double>::quiet_NaN();
  switch (f.specials) {
    case FloatSpecials::kIeee:
      if (e == l.exp_all_ones) {
        if (m != 0) return negative ? -nan : nan;
        return negative ? -INFINITY : INFINITY;
      }
      break;
    case FloatSpecials::kFiniteNan:
      if (e == l.exp_all_ones && m == l.man_mask) return negative ? -nan : nan;
      break;
    case FloatSpecials::kFnuz:
      if ((code & ((l.sign_bit << 1) - 1)) == l.sign_bit) return nan;
      break;
    case FloatSpecials::kNone:
      break;
  }
  double magnitude;
  if (e == 0)
    magnitude = std::ldexp(static_cast<double>(m), 1 - f.bias - f.man_bits);
  else
    magnitude = std::ldexp(static_cast<double>((1u << f.man_bits) + m), static_cast<int>(e) - f.bias - f.man_bits);
  return negative ? -magnitude : magnitude;
}

double minifloat_max_finite(const MinifloatFormat& f) {
  return minifloat_decode_reference(layout_of(f).max_finite_magnitude, f);
}

uint32_t minifloat_encode_reference(float x, const MinifloatFormat& f, Overflow overflow) {
  const CodeLayout l = layout_of(f);
  const uint32_t sign = std::signbit(x) ? l.sign_bit : 0;
  if (std::isnan(x)) return nan_code(f, l, sign);
  if (std::isinf(x)) return overflow_code(f, l, sign, overflow);
  const double a = std::fabs(static_cast<double>(x));
  if (a == 0.0) return apply_sign(f, 0, sign);

  const int min_normal_exponent = 1 - f.bias;
  int binary_exponent;
  std::frexp(a, &binary_exponent);  // a = frac · 2^binary_exponent, frac in [0.5, 1)
  int e = std::max(binary_exponent - 1, min_normal_exponent);
  // a / quantum is exact in double (a has 24 significant bits); nearbyint rounds half to even.
  double r = std::nearbyint(std::ldexp(a, f.man_bits - e));
  const double implicit_one = std::ldexp(1.0, f.man_bits);
  if (r >= 2 * implicit_one) {  // rounding carried into the next binade
    r = implicit_one;
    ++e;
  }
  uint32_t magnitude;
  if (r < implicit_one) {  // subnormal (only possible at the minimum exponent) or zero
    magnitude = static_cast<uint32_t>(r);
  } else {
    const int64_t biased = static_cast<int64_t>(e) + f.bias;
    if (biased > static_cast<int64_t>(l.exp_all_ones)) return overflow_code(f, l, sign, overflow);
    magnitude = (static_cast<uint32_t>(biased) << f.man_bits) | static_cast<uint32_t>(r - implicit_one);
  }
  if (magnitude > l.max_finite_magnitude) return overflow_code(f, l, sign, overflow);
  return apply_sign(f, magnitude, sign);
}

uint32_t minifloat_encode_fast(float x, const MinifloatFormat& f, Overflow overflow) {
  const CodeLayout l = layout_of(f);
  const uint32_t u = std::bit_cast<uint32_t>(x);
  const uint32_t sign = (u >> 31) ? l.sign_bit : 0;
  const uint32_t a = u & 0x7fffffffu;
  if (a > 0x7f800000u) return nan_code(f, l, sign);
  if (a == 0x7f800000u) return overflow_code(f, l, sign, overflow);

  const int min_normal_exponent = 1 - f.bias;
  const uint32_t min_normal_bits = static_cast<uint32_t>(min_normal_exponent + 127) << 23;
  uint32_t magnitude;
  if (a < min_normal_bits) {
    // Below the target's smallest normal: add a float whose ulp is the target's subnormal quantum, and let the
    // FPU's round-to-nearest-even do the rounding; the low mantissa bits are then the subnormal code.
    const float magic = std::ldexp(1.0f, min_normal_exponent - f.man_bits + 23);
    const float sum = std::bit_cast<float>(a) + magic;
    magnitude = std::bit_cast<uint32_t>(sum) - std::bit_cast<uint32_t>(magic);
  } else {
    const int shift = 23 - f.man_bits;
    uint32_t v = a - (static_cast<uint32_t>(127 - f.bias) << 23);  // rebias the exponent field
    v += (1u << (shift - 1)) - 1 + ((v >> shift) & 1u);              // round half to even
    magnitude = v >> shift;
  }
  if (magnitude > l.max_finite_magnitude) return overflow_code(f, l, sign, overflow);
  return apply_sign(f, magnitude, sign);
}

float minifloat8_decode(uint32_t code, const MinifloatFormat& f) {
  return static_cast<float>(minifloat_decode_reference(code, f));
}

float f16_to_f32(uint16_t h) {
  const uint32_t sign = static_cast<uint32_t>(h & 0x8000u) << 16;
  const uint32_t e = (h >> 10) & 0x1fu;
  const uint32_t m = h & 0x3ffu;
  if (e == 0x1f) return std::bit_cast<float>(sign | 0x7f800000u | (m << 13));
  if (e == 0) {
    const float magnitude = static_cast<float>(m) * 0x1p-24f;  // exact: m < 2^10
    return std::bit_cast<float>(sign | std::bit_cast<uint32_t>(magnitude));
  }
  return std::bit_cast<float>(sign | ((e + 112) << 23) | (m << 13));
}

uint16_t f32_to_f16(float x) { return static_cast<uint16_t>(minifloat_encode_fast(x, kFormatF16)); }

float e8m0_to_f32(uint8_t code) {
  if (code == 0xff) return std::numeric_limits<float>::quiet_NaN();
  return std::ldexp(1.0f, static_cast<int>(code) - 127);
}

const MinifloatFormat* minifloat_format_of(DType t) {
  switch (t) {
    case DType::kBF16: return &kFormatBF16;
    case DType::kF16: return &kFormatF16;
    case DType::kF8_E4M3: return &kFormatE4M3FN;
    case DType::kF8_E5M2: return &kFormatE5M2;
    case DType::kF8_E4M3FNUZ: return &kFormatE4M3FNUZ;
    case DType::kF8_E5M2FNUZ: return &kFormatE5M2FNUZ;
    default: return nullptr;
  }
}

namespace {

template <typename T>
void widen(const void* src, float* dst, size_t n) {
  const auto* s = static_cast<const unsigned char*>(src);
  for (size_t i = 0; i < n; ++i) {
    T v;
    std::memcpy(&v, s + i * sizeof(T), sizeof(T));
    dst[i] = static_cast<float>(v);
  }
}

std::array<float, 256> decode_table(const MinifloatFormat& f) {
  std::array<float, 256> table{};
  for (uint32_t c = 0; c < 256; ++c) table[c] = minifloat8_decode(c, f);
  return table;
}

}  // namespace

void convert_to_f32(DType t, const void* src, float* dst, size_t n) {
  const auto* bytes = static_cast<const unsigned char*>(src);
  switch (t) {
    case DType::kF32: std::memcpy(dst, src, n * sizeof(float)); return;
    case DType::kF64: widen<double>(src, dst, n); return;
    case DType::kBF16:
      for (size_t i = 0; i < n; ++i) {
        uint16_t h;
        std::memcpy(&h, bytes + 2 * i, 2);
        dst[i] = bf16_to_f32(h);
      }
      return;
    case DType::kF16:
      for (size_t i = 0; i < n; ++i) {
        uint16_t h;
        std::memcpy(&h, bytes + 2 * i, 2);
        dst[i] = f16_to_f32(h);
      }
      return;
    case DType::kF8_E4M3: case DType::kF8_E5M2: case DType::kF8_E4M3FNUZ: case DType::kF8_E5M2FNUZ: {
      const auto table = decode_table(*minifloat_format_of(t));
      for (size_t i = 0; i < n; ++i) dst[i] = table[bytes[i]];
      return;
    }
    case DType::kF8_E8M0:
      for (size_t i = 0; i < n; ++i) dst[i] = e8m0_to_f32(bytes[i]);
      return;
    case DType::kBool:
      for (size_t i = 0; i < n; ++i) dst[i] = bytes[i] ? 1.0f : 0.0f;
      return;
    case DType::kU8: widen<uint8_t>(src, dst, n); return;
    case DType::kI8: widen<int8_t>(src, dst, n); return;
    case DType::kI16: widen<int16_t>(src, dst, n); return;
    case DType::kU16: widen<uint16_t>(src, dst, n); return;
    case DType::kI32: widen<int32_t>(src, dst, n); return;
    case DType::kU32: widen<uint32_t>(src, dst, n); return;
    case DType::kI64: widen<int64_t>(src, dst, n); return;
    case DType::kU64: widen<uint64_t>(src, dst, n); return;
    default:
      throw UnsupportedError("cannot convert dtype " + std::string(dtype_name(t)) + " to F32");
  }
}

void convert_from_f32(DType t, const float* src, void* dst, size_t n) {
  auto* bytes = static_cast<unsigned char*>(dst);
  switch (t) {
    case DType::kF32: std::memcpy(dst, src, n * sizeof(float)); return;
    case DType::kF64:
      for (size_t i = 0; i < n; ++i) {
        const double d = src[i];
        std::memcpy(bytes + 8 * i, &d, 8);
      }
      return;
    case DType::kBF16:
      for (size_t i = 0; i < n; ++i) {
        const uint16_t h = f32_to_bf16(src[i]);
        std::memcpy(bytes + 2 * i, &h, 2);
      }
      return;
    case DType::kF16:
      for (size_t i = 0; i < n; ++i) {
        const uint16_t h = f32_to_f16(src[i]);
        std::memcpy(bytes + 2 * i, &h, 2);
      }
      return;
    case DType::kF8_E4M3: case DType::kF8_E5M2: case DType::kF8_E4M3FNUZ: case DType::kF8_E5M2FNUZ: {
      const MinifloatFormat& f = *minifloat_format_of(t);
      for (size_t i = 0; i < n; ++i) bytes[i] = static_cast<unsigned char>(minifloat_encode_fast(src[i], f));
      return;
    }
    default:
      throw UnsupportedError("cannot convert F32 to dtype " + std::string(dtype_name(t)));
  }
}

}  // namespace hx
