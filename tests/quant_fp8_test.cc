// FP8 e4m3fn (quant/fp8.h): PyTorch's float8 casts reproduced byte for byte (oracle fp8.safetensors, e4m3fn and
// e5m2, with and without saturation), every code round-tripped through the codec, a golden table of rounding cases,
// and the fast path equal to the scalar reference on matrices with the rows that break codecs.
#include <gtest/gtest.h>

#include <cmath>
#include <limits>

#include "formats/errors.h"
#include "quant/fp8.h"
#include "tests/quant_test_helpers.h"

namespace hx {
namespace {

using quant_test::load_oracle;
using quant_test::oracle_raw;

bool is_nan_code(uint32_t code, const MinifloatFormat& f) { return std::isnan(minifloat_decode_reference(code, f)); }

struct CastOracle {
  std::vector<float> x;
  std::vector<uint8_t> x_class, e4m3, e5m2;
  std::vector<float> e4m3_table, e5m2_table;
};

const CastOracle& cast_oracle() {
  static const CastOracle o = [] {
    const Checkpoint c = load_oracle("fp8.safetensors");
    return CastOracle{oracle_raw<float>(c, "x"), oracle_raw<uint8_t>(c, "x_class"), oracle_raw<uint8_t>(c, "e4m3fn_bytes"),
                      oracle_raw<uint8_t>(c, "e5m2_bytes"), oracle_raw<float>(c, "e4m3fn_table"),
                      oracle_raw<float>(c, "e5m2_table")};
  }();
  return o;
}

// torch's x.to(float8) does not saturate; formats/float_convert.h's default overflow is the same rule.
TEST(Fp8Oracle, UnsaturatedCastsEqualTorchByteForByte) {
  const CastOracle& o = cast_oracle();
  ASSERT_EQ(o.x.size(), 4117u);
  size_t checked = 0;
  for (size_t i = 0; i < o.x.size(); ++i) {
    const float x = o.x[i];
    ASSERT_EQ(minifloat_encode_reference(x, kFormatE4M3FN), o.e4m3[i]) << "e4m3fn x = " << x << " class " << int(o.x_class[i]);
    ASSERT_EQ(minifloat_encode_fast(x, kFormatE4M3FN), o.e4m3[i]) << "e4m3fn x = " << x;
    ASSERT_EQ(minifloat_encode_reference(x, kFormatE5M2), o.e5m2[i]) << "e5m2 x = " << x << " class " << int(o.x_class[i]);
    ASSERT_EQ(minifloat_encode_fast(x, kFormatE5M2), o.e5m2[i]) << "e5m2 x = " << x;
    ++checked;
  }
  EXPECT_EQ(checked, 4117u);
}

// With saturation (clamp to ±max, then cast): what torch gives for clamp(x, −max, max).to(float8) — its own byte
// for |x| ≤ max, the max code beyond (inf included), NaN stays NaN.
TEST(Fp8Oracle, SaturatedCastsEqualTorchOfTheClampedInput) {
  const CastOracle& o = cast_oracle();
  auto expected = [](float x, uint8_t torch_byte, double max, uint8_t max_code) -> uint8_t {
    if (std::isnan(x) || std::fabs(x) <= max) return torch_byte;
    return static_cast<uint8_t>(max_code | (std::signbit(x) ? 0x80 : 0x00));
  };
  int beyond = 0;
  for (size_t i = 0; i < o.x.size(); ++i) {
    const float x = o.x[i];
    const uint8_t want_e4m3 = expected(x, o.e4m3[i], 448.0, 0x7E);
    const uint8_t want_e5m2 = expected(x, o.e5m2[i], 57344.0, 0x7B);
    beyond += std::fabs(x) > 448.0f;
    ASSERT_EQ(minifloat_encode_reference(x, kFormatE4M3FN, Overflow::kSaturate), want_e4m3) << "x = " << x;
    ASSERT_EQ(minifloat_encode_fast(x, kFormatE4M3FN, Overflow::kSaturate), want_e4m3) << "x = " << x;
    ASSERT_EQ(minifloat_encode_reference(x, kFormatE5M2, Overflow::kSaturate), want_e5m2) << "x = " << x;
    ASSERT_EQ(minifloat_encode_fast(x, kFormatE5M2, Overflow::kSaturate), want_e5m2) << "x = " << x;
    // The codec's element rule, clamp then cast, at scale 1.
    const uint8_t codec = fp8_encode_reference(x, 1.0f);
    if (std::isnan(x))
      ASSERT_TRUE(is_nan_code(codec, kFormatE4M3FN)) << "x = " << x;
    else
      ASSERT_EQ(codec, want_e4m3) << "x = " << x;
  }
  EXPECT_GT(beyond, 100) << "the oracle should exercise overflow";
}

TEST(Fp8Oracle, NativeFloat8TensorsHoldTheSameBytes) {
  const Checkpoint native = load_oracle("fp8_native.safetensors");
  ASSERT_EQ(native.find("e4m3fn")->view.dtype, DType::kF8_E4M3);
  ASSERT_EQ(native.find("e5m2")->view.dtype, DType::kF8_E5M2);
  EXPECT_EQ(oracle_raw<uint8_t>(native, "e4m3fn"), cast_oracle().e4m3);
  EXPECT_EQ(oracle_raw<uint8_t>(native, "e5m2"), cast_oracle().e5m2);
}

TEST(Fp8Oracle, DecodeTablesEqualTorch) {
  const CastOracle& o = cast_oracle();
  for (uint32_t c = 0; c < 256; ++c) {
    const double mine = minifloat_decode_reference(c, kFormatE4M3FN);
    if (std::isnan(o.e4m3_table[c])) {
      EXPECT_TRUE(std::isnan(mine)) << c;
    } else {
      EXPECT_EQ(mine, o.e4m3_table[c]) << "code " << c;
      EXPECT_EQ(fp8_decode(static_cast<uint8_t>(c), 1.0f), o.e4m3_table[c]) << "code " << c;
    }
    const double mine5 = minifloat_decode_reference(c, kFormatE5M2);
    if (std::isnan(o.e5m2_table[c]))
      EXPECT_TRUE(std::isnan(mine5)) << c;
    else
      EXPECT_EQ(mine5, o.e5m2_table[c]) << "code " << c;
  }
}

// Every finite code through the whole codec: a row holding value(c)·s and the row maximum 448·s (s a power of two,
// so every product and quotient is exact) quantizes back to c, and decodes to value(c)·s.
TEST(Fp8Codec, EveryCodeRoundTripsAndCodesAreUnique) {
  const float s = 0x1p-4f;
  std::vector<uint32_t> seen(256, 0);
  for (uint32_t c = 0; c < 256; ++c) {
    const double v = minifloat_decode_reference(c, kFormatE4M3FN);
    if (std::isnan(v)) continue;
    const float row[2] = {static_cast<float>(v) * s, 448.0f * s};
    FloatRows w(DType::kF32, row, 1, 2);
    uint8_t codes[2], ref_codes[2];
    float scale = 0, ref_scale = 0;
    quant_test::for_each_isa([&] {
      fp8_quantize_rows(w, 0, 1, Fp8ScaleMode::kPerRow, 0, codes, &scale);
      EXPECT_EQ(codes[0], c) << "code " << c;
      EXPECT_EQ(scale, s);
    });
    fp8_quantize_rows_reference(w, 0, 1, Fp8ScaleMode::kPerRow, 0, ref_codes, &ref_scale);
    EXPECT_EQ(ref_codes[0], c);
    EXPECT_EQ(fp8_decode(codes[0], scale), row[0]);
    ++seen[codes[0]];
  }
  int distinct = 0;
  for (uint32_t n : seen) {
    EXPECT_LE(n, 1u) << "two values share a code";
    distinct += n == 1;
  }
  EXPECT_EQ(distinct, 254);
}

// Golden rounding cases at scale 1 (W / s = W): each row says why the code is what it is.
TEST(Fp8Codec, GoldenRoundingCases) {
  struct Case {
    float w;
    uint8_t code;
    const char* why;
  };
  const Case cases[] = {
      {0.0f, 0x00, "zero"},
      {-0.0f, 0x80, "negative zero keeps its sign bit, as torch's cast"},
      {0x1p-9f, 0x01, "smallest subnormal"},
      {0x1p-10f, 0x00, "half the smallest subnormal: a tie, to the even code 0"},
      {0x1.8p-10f, 0x01, "above that tie: up to the smallest subnormal"},
      {0x1.8p-9f, 0x02, "tie between subnormals 1 and 2: to the even 2"},
      {0x1p-6f, 0x08, "smallest normal"},
      {0x1.ep-7f, 0x08, "tie between the largest subnormal 0x07 and the smallest normal 0x08: to the even 0x08"},
      {1.0625f, 0x38, "tie between 1.0 (0x38) and 1.125 (0x39): to the even 0x38"},
      {1.1875f, 0x3A, "tie between 1.125 (0x39) and 1.25 (0x3A): to the even 0x3A"},
      {1.0624999f, 0x38, "just below a tie: down"},
      {1.0625001f, 0x39, "just above a tie: up"},
      {-3.25f, 0xC5, "negative: 3.25 is 1.625·2^1, code 0x45 with the sign bit"},
      {448.0f, 0x7E, "the largest finite value"},
      {449.0f, 0x7E, "above max: clamped to 448"},
      {464.0f, 0x7E, "torch's own cast also gives 448 here (a tie to even)"},
      {500.0f, 0x7E, "torch's cast gives NaN (0x7F); the codec clamps first"},
      {1e30f, 0x7E, "far beyond max: clamped"},
      {-1e30f, 0xFE, "far beyond −max: clamped to −448"},
  };
  for (const Case& c : cases) EXPECT_EQ(fp8_encode_reference(c.w, 1.0f), c.code) << c.w << ": " << c.why;
  // The fast path agrees on the same rows (one value per row, each with 448 so that the scale is exactly 1).
  for (const Case& c : cases) {
    const float row[2] = {c.w, 448.0f};
    uint8_t codes[2];
    float scale;
    FloatRows w(DType::kF32, row, 1, 2);
    quant_test::for_each_isa([&] {
      fp8_quantize_rows(w, 0, 1, Fp8ScaleMode::kPerTensor, 1.0f, codes, &scale);
      EXPECT_EQ(codes[0], c.code) << c.w << ": " << c.why;
    });
  }
}

TEST(Fp8Codec, FastPathEqualsReferenceOnHardMatrices) {
  const int64_t rows = 24, cols = 640;
  const std::vector<float> w = quant_test::hard_matrix(rows, cols, 11);
  const std::vector<uint16_t> w16 = quant_test::to_bf16(w);
  for (DType dtype : {DType::kF32, DType::kBF16}) {
    FloatRows m(dtype, dtype == DType::kF32 ? static_cast<const void*>(w.data()) : w16.data(), rows, cols);
    for (Fp8ScaleMode mode : {Fp8ScaleMode::kPerRow, Fp8ScaleMode::kPerTensor}) {
      const float tensor_scale = fp8_scale_for_amax(fp8_tensor_amax(m));
      std::vector<uint8_t> ref(static_cast<size_t>(rows * cols)), fast(ref.size());
      std::vector<float> ref_scales(static_cast<size_t>(rows), -1), fast_scales(ref_scales);
      fp8_quantize_rows_reference(m, 0, rows, mode, tensor_scale, ref.data(), ref_scales.data());
      quant_test::for_each_isa([&] {
        const ErrorStats stats = fp8_quantize_rows(m, 0, rows, mode, tensor_scale, fast.data(), fast_scales.data());
        EXPECT_EQ(fast, ref);
        EXPECT_EQ(fast_scales, ref_scales);
        EXPECT_EQ(stats.count, static_cast<uint64_t>(rows * cols));
      });
      if (mode == Fp8ScaleMode::kPerRow) {
        EXPECT_EQ(ref_scales[0], kAmaxFloor / 448.0f) << "an all-zero row gets the floor's scale";
        for (int64_t c = 0; c < cols; ++c) EXPECT_EQ(ref[static_cast<size_t>(c)], 0) << "all-zero row, column " << c;
      }
    }
  }
}

TEST(Fp8Codec, RowsAreQuantizedIndependentlyOfTheRange) {
  // Quantizing rows [5, 17) alone gives the same codes as those rows of a whole-matrix run.
  const int64_t rows = 24, cols = 256;
  const std::vector<float> w = quant_test::hard_matrix(rows, cols, 3);
  FloatRows m(DType::kF32, w.data(), rows, cols);
  std::vector<uint8_t> all(static_cast<size_t>(rows * cols)), part(static_cast<size_t>(12 * cols));
  std::vector<float> s_all(static_cast<size_t>(rows)), s_part(12);
  fp8_quantize_rows(m, 0, rows, Fp8ScaleMode::kPerRow, 0, all.data(), s_all.data());
  fp8_quantize_rows(m, 5, 17, Fp8ScaleMode::kPerRow, 0, part.data(), s_part.data());
  EXPECT_TRUE(std::equal(part.begin(), part.end(), all.begin() + 5 * cols));
  EXPECT_TRUE(std::equal(s_part.begin(), s_part.end(), s_all.begin() + 5));
}

TEST(Fp8Codec, RefusesNonFiniteWeights) {
  std::vector<float> w = {1.0f, std::numeric_limits<float>::infinity()};
  FloatRows m(DType::kF32, w.data(), 1, 2, 0, "m.safetensors: tensor 'x'");
  uint8_t codes[2];
  float scale;
  EXPECT_THROW(fp8_quantize_rows(m, 0, 1, Fp8ScaleMode::kPerRow, 0, codes, &scale), FormatError);
  EXPECT_THROW(fp8_quantize_rows_reference(m, 0, 1, Fp8ScaleMode::kPerRow, 0, codes, &scale), FormatError);
}

}  // namespace
}  // namespace hx
