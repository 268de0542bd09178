// Exhaustive tests of the float codecs: every code of every format, the rounding boundaries between codes, and a
// golden table of rounding cases. The reference codec is checked against the format definitions; the fast
// conversions are checked against the reference bit for bit.
#include <gtest/gtest.h>

#include <bit>
#include <cmath>
#include <cstring>
#include <limits>
#include <random>
#include <vector>

#include "formats/float_convert.h"

namespace hx {
namespace {

struct NamedFormat {
  const char* name;
  MinifloatFormat format;
  double max_finite;  // from the format's definition (OCP FP8, IEEE 754, torchao FPx)
};

const NamedFormat kFormats[] = {
    {"bf16", kFormatBF16, 3.3895313892515355e38}, {"f16", kFormatF16, 65504.0},
    {"e4m3fn", kFormatE4M3FN, 448.0},             {"e5m2", kFormatE5M2, 57344.0},
    {"e4m3fnuz", kFormatE4M3FNUZ, 240.0},         {"e5m2fnuz", kFormatE5M2FNUZ, 57344.0},
    {"fp6_e3m2", kFormatFP6E3M2, 28.0},           {"fp6_e2m3", kFormatFP6E2M3, 7.5},
    {"fp5_e2m2", kFormatFP5E2M2, 7.0},            {"fp4_e2m1", kFormatFP4E2M1, 6.0},
};

void PrintTo(const NamedFormat& f, std::ostream* os) { *os << f.name; }

bool same_code(uint32_t a, uint32_t b, const MinifloatFormat& f) {
  // NaN payloads are not part of the contract: two NaN codes of the same sign are the same.
  const double da = minifloat_decode_reference(a, f), db = minifloat_decode_reference(b, f);
  if (std::isnan(da) || std::isnan(db)) return std::isnan(da) && std::isnan(db) && std::signbit(da) == std::signbit(db);
  return a == b;
}

class FloatFormatTest : public ::testing::TestWithParam<NamedFormat> {};

TEST_P(FloatFormatTest, MaxFiniteMatchesDefinition) {
  EXPECT_EQ(minifloat_max_finite(GetParam().format), GetParam().max_finite);
}

TEST_P(FloatFormatTest, EveryCodeRoundTripsThroughF32) {
  const auto& f = GetParam().format;
  const uint32_t codes = 1u << f.total_bits();
  for (uint32_t c = 0; c < codes; ++c) {
    const double v = minifloat_decode_reference(c, f);
    const float x = static_cast<float>(v);
    ASSERT_TRUE(std::isnan(v) || static_cast<double>(x) == v) << "code " << c << " is not exact in f32";
    const uint32_t ref = minifloat_encode_reference(x, f);
    const uint32_t fast = minifloat_encode_fast(x, f);
    if (std::isnan(v)) {
      EXPECT_TRUE(std::isnan(minifloat_decode_reference(ref, f))) << GetParam().name << " code " << c;
      EXPECT_TRUE(same_code(ref, fast, f)) << GetParam().name << " code " << c;
      continue;
    }
    // fnuz has no -0: both zero codes of other formats round-trip, fnuz maps -0.0 to +0.
    EXPECT_EQ(ref, c) << GetParam().name << " code " << c << " value " << v;
    EXPECT_EQ(fast, c) << GetParam().name << " code " << c << " value " << v;
  }
}

TEST_P(FloatFormatTest, CodesAreUniqueAndOrdered) {
  const auto& f = GetParam().format;
  const uint32_t half = 1u << (f.total_bits() - 1);
  double previous = -1;
  for (uint32_t c = 0; c < half; ++c) {  // positive codes increase with the code
    const double v = minifloat_decode_reference(c, f);
    if (std::isnan(v) || std::isinf(v)) continue;
    EXPECT_GT(v, previous) << GetParam().name << " code " << c;
    previous = v;
  }
}

// Between every two neighbouring finite values: the midpoint (a tie: goes to the even code), and the floats just
// below and above it (go to the nearer code). Beyond the max: the format's overflow rule, and saturation on request.
TEST_P(FloatFormatTest, RoundingBoundariesMatchReferenceAndAreNearestEven) {
  const auto& f = GetParam().format;
  const uint32_t half = 1u << (f.total_bits() - 1);
  std::vector<std::pair<uint32_t, double>> finite;
  for (uint32_t c = 0; c < half; ++c) {
    const double v = minifloat_decode_reference(c, f);
    if (std::isfinite(v)) finite.emplace_back(c, v);
  }
  for (size_t i = 0; i + 1 < finite.size(); ++i) {
    const auto [lo_code, lo] = finite[i];
    const auto [hi_code, hi] = finite[i + 1];
    const double mid = (lo + hi) / 2;
    const float mid_f = static_cast<float>(mid);
    if (static_cast<double>(mid_f) != mid) continue;  // tie not representable in f32 (only for bf16 near FLT_MAX)
    const uint32_t even = (lo_code % 2 == 0) ? lo_code : hi_code;
    for (float sign : {1.0f, -1.0f}) {
      const uint32_t s = sign < 0 ? (1u << (f.total_bits() - 1)) : 0;
      auto expect = [&](float x, uint32_t magnitude_code, const char* what) {
        uint32_t want = magnitude_code | s;
        if (f.specials == FloatSpecials::kFnuz && magnitude_code == 0) want = 0;
        EXPECT_EQ(minifloat_encode_reference(x, f), want) << GetParam().name << " " << what << " x=" << x;
        EXPECT_EQ(minifloat_encode_fast(x, f), want) << GetParam().name << " fast " << what << " x=" << x;
      };
      expect(sign * mid_f, even, "tie");
      expect(sign * std::nextafter(mid_f, 0.0f), lo_code, "below tie");
      expect(sign * std::nextafter(mid_f, INFINITY), hi_code, "above tie");
    }
  }
}

TEST_P(FloatFormatTest, RandomF32InputsFastEqualsReference) {
  const auto& f = GetParam().format;
  std::mt19937 rng(1234);
  for (int i = 0; i < 200000; ++i) {
    const float x = std::bit_cast<float>(static_cast<uint32_t>(rng()));
    for (Overflow o : {Overflow::kFormatDefault, Overflow::kSaturate}) {
      const uint32_t ref = minifloat_encode_reference(x, f, o), fast = minifloat_encode_fast(x, f, o);
      ASSERT_TRUE(same_code(ref, fast, f)) << GetParam().name << " x=" << x << " ref " << ref << " fast " << fast;
    }
  }
}

INSTANTIATE_TEST_SUITE_P(AllFormats, FloatFormatTest, ::testing::ValuesIn(kFormats),
                         [](const auto& param_info) { return std::string(param_info.param.name); });

// Golden rounding cases, one comment each.
struct Golden {
  const MinifloatFormat* format;
  float input;
  Overflow overflow;
  uint32_t code;
  const char* why;
};

TEST(FloatConvertGolden, Table) {
  const Golden rows[] = {
      {&kFormatE4M3FN, 448.0f, Overflow::kFormatDefault, 0x7e, "max normal S.1111.110"},
      {&kFormatE4M3FN, 464.0f, Overflow::kFormatDefault, 0x7e, "tie between 448 and the NaN slot: even (448)"},
      {&kFormatE4M3FN, 464.0001f, Overflow::kFormatDefault, 0x7f, "past the tie: NaN, as torch's cast (no saturation)"},
      {&kFormatE4M3FN, 1e6f, Overflow::kSaturate, 0x7e, "saturating cast clamps to 448"},
      {&kFormatE4M3FN, -1e6f, Overflow::kSaturate, 0xfe, "negative saturation to -448"},
      {&kFormatE4M3FN, INFINITY, Overflow::kFormatDefault, 0x7f, "e4m3fn has no inf: NaN"},
      {&kFormatE4M3FN, 0x1p-9f, Overflow::kFormatDefault, 0x01, "min subnormal 2^-9"},
      {&kFormatE4M3FN, 0x1p-10f, Overflow::kFormatDefault, 0x00, "half the min subnormal: tie to even zero"},
      {&kFormatE4M3FN, 0x1.8p-10f, Overflow::kFormatDefault, 0x01, "three quarters of it: up"},
      {&kFormatE4M3FN, -0.0f, Overflow::kFormatDefault, 0x80, "negative zero kept"},
      {&kFormatE5M2, 57344.0f, Overflow::kFormatDefault, 0x7b, "max normal"},
      {&kFormatE5M2, 61440.0f, Overflow::kFormatDefault, 0x7c, "tie above max: to even, which is inf"},
      {&kFormatE5M2, 61439.0f, Overflow::kFormatDefault, 0x7b, "just below the tie: max"},
      {&kFormatE5M2, 1e9f, Overflow::kSaturate, 0x7b, "saturating cast clamps to 57344"},
      {&kFormatE4M3FNUZ, -0.0f, Overflow::kFormatDefault, 0x00, "fnuz has no negative zero"},
      {&kFormatE4M3FNUZ, NAN, Overflow::kFormatDefault, 0x80, "fnuz NaN is 0x80"},
      {&kFormatBF16, 1.00390625f, Overflow::kFormatDefault, 0x3f80, "1 + 2^-8: tie, to even (1.0)"},
      {&kFormatBF16, 1.01171875f, Overflow::kFormatDefault, 0x3f82, "1 + 3·2^-8: tie, to even (1 + 2^-6)"},
      {&kFormatF16, 65520.0f, Overflow::kFormatDefault, 0x7c00, "f16 overflow threshold: inf"},
      {&kFormatF16, 65519.0f, Overflow::kFormatDefault, 0x7bff, "just below: 65504"},
      {&kFormatF16, 0x1p-25f, Overflow::kFormatDefault, 0x0000, "half the min subnormal: tie to zero"},
      {&kFormatF16, 0x1.000002p-25f, Overflow::kFormatDefault, 0x0001, "just above: min subnormal"},
      {&kFormatFP6E3M2, 30.0f, Overflow::kFormatDefault, 0x1f, "fp6 e3m2 saturates to 28 (00 0 111 11)"},
      {&kFormatFP6E3M2, 0.0625f, Overflow::kFormatDefault, 0x01, "fp6 e3m2 min subnormal"},
      {&kFormatFP6E3M2, INFINITY, Overflow::kFormatDefault, 0x1f, "fp6 has no inf: saturate"},
      {&kFormatFP5E2M2, -100.0f, Overflow::kFormatDefault, 0x1f, "fp5 e2m2 saturates to -7 (000 1 11 11)"},
      {&kFormatFP5E2M2, 0.375f, Overflow::kFormatDefault, 0x02, "0.375 = 1.5 quanta of 0.25: tie to even (0.5)"},
  };
  for (const auto& r : rows) {
    EXPECT_EQ(minifloat_encode_reference(r.input, *r.format, r.overflow), r.code) << r.why;
    EXPECT_EQ(minifloat_encode_fast(r.input, *r.format, r.overflow), r.code) << "fast: " << r.why;
  }
}

TEST(FloatConvertFast, Bf16AndF16EveryCode) {
  for (uint32_t c = 0; c < 65536; ++c) {
    const auto h = static_cast<uint16_t>(c);
    const double ref_bf = minifloat_decode_reference(c, kFormatBF16);
    const double ref_h = minifloat_decode_reference(c, kFormatF16);
    const float bf = bf16_to_f32(h), hf = f16_to_f32(h);
    if (std::isnan(ref_bf)) {
      EXPECT_TRUE(std::isnan(bf)) << c;
    } else {
      EXPECT_EQ(static_cast<double>(bf), ref_bf) << c;
      EXPECT_EQ(f32_to_bf16(bf), h) << c;
    }
    if (std::isnan(ref_h)) {
      EXPECT_TRUE(std::isnan(hf)) << c;
    } else {
      EXPECT_EQ(static_cast<double>(hf), ref_h) << c;
      EXPECT_EQ(f32_to_f16(hf), h) << c;
    }
  }
  EXPECT_EQ(f32_to_bf16(std::numeric_limits<float>::quiet_NaN()) & 0x7fc0, 0x7fc0);
}

TEST(FloatConvertFast, Bf16RandomInputsEqualReference) {
  std::mt19937 rng(99);
  for (int i = 0; i < 1000000; ++i) {
    const float x = std::bit_cast<float>(static_cast<uint32_t>(rng()));
    if (std::isnan(x)) continue;
    ASSERT_EQ(f32_to_bf16(x), minifloat_encode_reference(x, kFormatBF16)) << x;
  }
}

TEST(FloatConvertBulk, RoundTripsEveryFloatDtype) {
  for (DType t : {DType::kBF16, DType::kF16, DType::kF8_E4M3, DType::kF8_E5M2, DType::kF8_E4M3FNUZ,
                  DType::kF8_E5M2FNUZ}) {
    const auto* f = minifloat_format_of(t);
    ASSERT_NE(f, nullptr);
    const uint32_t codes = 1u << f->total_bits();
    std::vector<float> decoded(codes);
    std::vector<std::byte> raw(codes * dtype_element_size(t));
    for (uint32_t c = 0; c < codes; ++c) std::memcpy(raw.data() + c * dtype_element_size(t), &c, dtype_element_size(t));
    convert_to_f32(t, raw.data(), decoded.data(), codes);
    std::vector<std::byte> back(raw.size());
    convert_from_f32(t, decoded.data(), back.data(), codes);
    for (uint32_t c = 0; c < codes; ++c) {
      const double v = minifloat_decode_reference(c, *f);
      if (std::isnan(v)) continue;
      if (f->specials == FloatSpecials::kFnuz && v == 0) continue;
      ASSERT_EQ(std::memcmp(raw.data() + c * dtype_element_size(t), back.data() + c * dtype_element_size(t),
                            dtype_element_size(t)),
                0)
          << dtype_name(t) << " code " << c;
    }
  }
}

TEST(FloatConvertBulk, E8M0) {
  EXPECT_EQ(e8m0_to_f32(127), 1.0f);
  EXPECT_EQ(e8m0_to_f32(0), 0x1p-127f);
  EXPECT_EQ(e8m0_to_f32(254), 0x1p127f);
  EXPECT_TRUE(std::isnan(e8m0_to_f32(255)));
}

}  // namespace
}  // namespace hx
