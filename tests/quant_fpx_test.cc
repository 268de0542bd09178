// FP6 e3m2 / FP5 e2m2 (quant/fpx.h): torchao's encoder, per-row scaling and FP6-LLM tensor-core packing reproduced
// bit for bit (oracle fpx.safetensors), every code through the codec, golden rounding cases, both packings, and the
// fast path equal to the scalar reference.
#include <gtest/gtest.h>

#include <cmath>
#include <random>

#include "formats/errors.h"
#include "quant/fpx.h"
#include "tests/quant_test_helpers.h"

namespace hx {
namespace {

using quant_test::load_oracle;
using quant_test::oracle_raw;

struct FpxCase {
  const char* name;  // "e3m2" / "e2m2": the oracle's tensor prefix
  FpxFormat format;
};
const FpxCase kCases[] = {{"e3m2", FpxFormat::kE3M2}, {"e2m2", FpxFormat::kE2M2}};
void PrintTo(const FpxCase& c, std::ostream* os) { *os << c.name; }

const Checkpoint& fpx_oracle() {
  static const Checkpoint c = load_oracle("fpx.safetensors");
  return c;
}

class FpxOracle : public ::testing::TestWithParam<FpxCase> {};

TEST_P(FpxOracle, ElementCodesAndValuesEqualTorchao) {
  const FpxCase& k = GetParam();
  const auto x = oracle_raw<float>(fpx_oracle(), "x");
  const auto codes = oracle_raw<uint8_t>(fpx_oracle(), std::string(k.name) + "_codes");
  const auto decoded = oracle_raw<float>(fpx_oracle(), std::string(k.name) + "_decoded");
  const auto table = oracle_raw<float>(fpx_oracle(), std::string(k.name) + "_table");
  ASSERT_EQ(x.size(), 2464u);
  for (size_t i = 0; i < x.size(); ++i) {
    ASSERT_EQ(fpx_encode_reference(x[i], 1.0f, k.format), codes[i]) << k.name << " x = " << x[i];
    ASSERT_EQ(minifloat_encode_fast(x[i], fpx_minifloat(k.format)), codes[i]) << k.name << " x = " << x[i];
    ASSERT_EQ(fpx_code_value(codes[i], k.format), decoded[i]) << k.name << " code " << int(codes[i]);
  }
  ASSERT_EQ(table.size(), size_t{1} << fpx_bits(k.format));
  for (uint32_t c = 0; c < table.size(); ++c) EXPECT_EQ(fpx_code_value(static_cast<uint8_t>(c), k.format), table[c]) << c;
}

TEST_P(FpxOracle, RowScalesCodesAndDequantizationEqualToScaledTcFloatx) {
  const FpxCase& k = GetParam();
  const TensorView& wv = quant_test::oracle_view(fpx_oracle(), "W");
  ASSERT_EQ(wv.dtype, DType::kF16);
  const int64_t rows = wv.shape[0], cols = wv.shape[1];
  const std::string p = std::string("W_") + k.name;
  const auto want_codes = oracle_raw<uint8_t>(fpx_oracle(), p + "_codes");
  const auto want_scale32 = oracle_raw<float>(fpx_oracle(), p + "_scale_f32");
  const auto want_scale16 = oracle_raw<uint16_t>(fpx_oracle(), p + "_scale");
  const auto want_dequant = oracle_raw<float>(fpx_oracle(), p + "_dequant");
  const FloatRows w = FloatRows::from_view(wv, "W");
  std::vector<uint8_t> ref(static_cast<size_t>(rows * cols)), fast(ref.size());
  std::vector<float> ref_scales(static_cast<size_t>(rows)), fast_scales(ref_scales.size());
  fpx_quantize_rows_reference(w, k.format, 0, rows, ref.data(), ref_scales.data());
  EXPECT_EQ(ref, want_codes);
  EXPECT_EQ(ref_scales, want_scale32);
  quant_test::for_each_isa([&] {
    fpx_quantize_rows(w, k.format, 0, rows, DType::kF16, fast.data(), fast_scales.data());
    EXPECT_EQ(fast, want_codes);
    EXPECT_EQ(fast_scales, want_scale32);
  });
  for (int64_t r = 0; r < rows; ++r) {
    ASSERT_EQ(f32_to_f16(ref_scales[static_cast<size_t>(r)]), want_scale16[static_cast<size_t>(r)]) << "row " << r;
    const float stored = fpx_stored_scale(ref_scales[static_cast<size_t>(r)], DType::kF16);
    for (int64_t c = 0; c < cols; ++c) {
      const size_t i = static_cast<size_t>(r * cols + c);
      ASSERT_EQ(fpx_code_value(ref[i], k.format) * stored, want_dequant[i]) << "row " << r << ", column " << c;
    }
  }
  // Row 0 is all zero: scale 1e-12/max in f32 (0 in fp16) and zero codes.
  EXPECT_EQ(want_scale16[0], 0);
  EXPECT_EQ(ref_scales[0], kAmaxFloor / fpx_max_normal(k.format));
}

TEST_P(FpxOracle, TensorCorePackingEqualsTorchaoBitForBit) {
  const FpxCase& k = GetParam();
  const std::string p = std::string("W_") + k.name;
  const auto codes = oracle_raw<uint8_t>(fpx_oracle(), p + "_codes");
  const TensorView& packed_view = quant_test::oracle_view(fpx_oracle(), p + "_packed");
  const auto want = oracle_raw<uint8_t>(fpx_oracle(), p + "_packed");
  const int64_t rows = 128, cols = 256;
  ASSERT_EQ(packed_view.shape, (Shape{rows, cols * fpx_bits(k.format) / 8}));
  std::vector<uint8_t> fast(want.size());
  fpx_pack_tc(codes.data(), rows, cols, k.format, fast.data());
  size_t differ = 0;
  for (size_t i = 0; i < want.size(); ++i) differ += fast[i] != want[i];
  EXPECT_EQ(differ, 0u) << "of " << want.size() << " packed bytes";
  EXPECT_EQ(fpx_pack_tc_reference(codes.data(), rows, cols, k.format), want);
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t c = 0; c < cols; ++c)
      ASSERT_EQ(fpx_tc_code_at(want.data(), rows, cols, k.format, r, c), codes[static_cast<size_t>(r * cols + c)])
          << r << ", " << c;
}

INSTANTIATE_TEST_SUITE_P(Formats, FpxOracle, ::testing::ValuesIn(kCases),
                         [](const auto& param_info) { return std::string(param_info.param.name); });

class FpxCodec : public ::testing::TestWithParam<FpxCase> {};

// A row holding value(c)·s and the row maximum max·s (s a power of two): every code comes back, −0 included.
TEST_P(FpxCodec, EveryCodeRoundTripsAndCodesAreUnique) {
  const FpxFormat f = GetParam().format;
  const uint32_t n = 1u << fpx_bits(f);
  const float s = 0x1p-6f;
  std::vector<int> seen(n, 0);
  for (uint32_t c = 0; c < n; ++c) {
    const float v = fpx_code_value(static_cast<uint8_t>(c), f);
    const float row[2] = {v * s, fpx_max_normal(f) * s};
    FloatRows w(DType::kF32, row, 1, 2);
    uint8_t codes[2], ref[2];
    float scale, ref_scale;
    fpx_quantize_rows_reference(w, f, 0, 1, ref, &ref_scale);
    ASSERT_EQ(ref_scale, s);
    EXPECT_EQ(ref[0], c) << "code " << c;
    quant_test::for_each_isa([&] {
      fpx_quantize_rows(w, f, 0, 1, DType::kF32, codes, &scale);
      EXPECT_EQ(codes[0], c) << "code " << c;
    });
    ++seen[ref[0]];
  }
  for (uint32_t c = 0; c < n; ++c) EXPECT_EQ(seen[c], 1) << "code " << c;
}

TEST(FpxCodecGolden, RoundingCases) {
  struct Case {
    FpxFormat f;
    float x;
    uint8_t code;
    const char* why;
  };
  const Case cases[] = {
      {FpxFormat::kE3M2, 0.0f, 0x00, "zero"},
      {FpxFormat::kE3M2, -0.0f, 0x20, "negative zero keeps its sign bit (00SEEEMM)"},
      {FpxFormat::kE3M2, 0.0625f, 0x01, "smallest subnormal"},
      {FpxFormat::kE3M2, 0.03125f, 0x00, "half the smallest subnormal: a tie, to the even 0"},
      {FpxFormat::kE3M2, -0.03125f, 0x20, "the same tie, negative: −0"},
      {FpxFormat::kE3M2, 0.09375f, 0x02, "tie between subnormals 1 and 2: to the even 2"},
      {FpxFormat::kE3M2, 0.25f, 0x04, "smallest normal: exponent field 1, mantissa 0"},
      {FpxFormat::kE3M2, 1.0f, 0x0C, "one: exponent field 3 (the bias)"},
      {FpxFormat::kE3M2, 1.125f, 0x0C, "tie between 1.0 (0x0C) and 1.25 (0x0D): to the even 0x0C"},
      {FpxFormat::kE3M2, 1.375f, 0x0E, "tie between 1.25 (0x0D) and 1.5 (0x0E): to the even 0x0E"},
      {FpxFormat::kE3M2, 28.0f, 0x1F, "the largest value"},
      {FpxFormat::kE3M2, 29.0f, 0x1F, "above max: saturates (torchao: |x| ≥ max gives max)"},
      {FpxFormat::kE3M2, 31.0f, 0x1F, "would round to 32: saturates"},
      {FpxFormat::kE3M2, -1e30f, 0x3F, "far below −max: −28"},
      {FpxFormat::kE2M2, 0.25f, 0x01, "e2m2 smallest subnormal"},
      {FpxFormat::kE2M2, 0.125f, 0x00, "half of it: a tie, to the even 0"},
      {FpxFormat::kE2M2, 0.375f, 0x02, "tie between 0.25 and 0.5: to the even 0x02"},
      {FpxFormat::kE2M2, 1.0f, 0x04, "e2m2 smallest normal and one: exponent field 1"},
      {FpxFormat::kE2M2, 7.0f, 0x0F, "e2m2 largest value"},
      {FpxFormat::kE2M2, 7.5f, 0x0F, "above max: saturates"},
      {FpxFormat::kE2M2, -7.0f, 0x1F, "−max: sign bit 0x10 (000SEEMM)"},
      {FpxFormat::kE2M2, -0.0f, 0x10, "e2m2 negative zero"},
  };
  for (const Case& c : cases) EXPECT_EQ(fpx_encode_reference(c.x, 1.0f, c.f), c.code) << c.x << ": " << c.why;
}

TEST_P(FpxCodec, FastPathEqualsReferenceOnHardMatrices) {
  const FpxFormat f = GetParam().format;
  const int64_t rows = 24, cols = 520;  // a multiple of 8, not of the vector width
  const std::vector<float> w = quant_test::hard_matrix(rows, cols, 21);
  const std::vector<uint16_t> w16 = quant_test::to_bf16(w);
  for (DType dtype : {DType::kF32, DType::kBF16}) {
    FloatRows m(dtype, dtype == DType::kF32 ? static_cast<const void*>(w.data()) : w16.data(), rows, cols);
    std::vector<uint8_t> ref(static_cast<size_t>(rows * cols)), fast(ref.size());
    std::vector<float> ref_scales(static_cast<size_t>(rows)), fast_scales(ref_scales.size());
    fpx_quantize_rows_reference(m, f, 0, rows, ref.data(), ref_scales.data());
    quant_test::for_each_isa([&] {
      fpx_quantize_rows(m, f, 0, rows, dtype, fast.data(), fast_scales.data());
      EXPECT_EQ(fast, ref);
      EXPECT_EQ(fast_scales, ref_scales);
    });
  }
}

// The fused encode-and-pack path (what `quantize` runs for the portable layout) against the reference's codes packed
// by fpx_pack_row, on F32, BF16 and F16 rows; FP6 also with a row ending in half a block (in % 8 == 4). Its error
// statistics are those of the dequantized reference codes, summed as row_error() sums them.
TEST_P(FpxCodec, FusedPackingEqualsPackedReferenceCodes) {
  const FpxFormat f = GetParam().format;
  const int64_t rows = 24;
  for (int64_t cols : {int64_t{520}, int64_t{524}}) {
    if (cols % fpx_block_codes(f) != 0) continue;
    const std::vector<float> w = quant_test::hard_matrix(rows, cols, 31);
    const std::vector<uint16_t> w16 = quant_test::to_bf16(w);
    std::vector<uint16_t> h16(w.size());
    for (size_t i = 0; i < w.size(); ++i) h16[i] = f32_to_f16(w[i]);
    for (DType dtype : {DType::kF32, DType::kBF16, DType::kF16}) {
      const void* data = dtype == DType::kF32 ? static_cast<const void*>(w.data())
                                              : (dtype == DType::kBF16 ? w16.data() : h16.data());
      FloatRows m(dtype, data, rows, cols);
      SCOPED_TRACE(std::string(dtype_name(dtype)) + " cols " + std::to_string(cols));
      std::vector<uint8_t> ref(static_cast<size_t>(rows * cols));
      std::vector<float> ref_scales(static_cast<size_t>(rows));
      fpx_quantize_rows_reference(m, f, 0, rows, ref.data(), ref_scales.data());
      const int64_t row_bytes = fpx_packed_row_bytes(cols, f);
      std::vector<uint8_t> ref_packed(static_cast<size_t>(rows * row_bytes));
      ErrorStats expected;
      std::vector<float> x(static_cast<size_t>(cols)), deq(x.size());
      for (int64_t r = 0; r < rows; ++r) {
        fpx_pack_row(ref.data() + r * cols, cols, f, ref_packed.data() + r * row_bytes);
        m.read_row(r, x.data());
        const float stored = fpx_stored_scale(ref_scales[static_cast<size_t>(r)], dtype);
        for (int64_t c = 0; c < cols; ++c)
          deq[static_cast<size_t>(c)] = fpx_code_value(ref[static_cast<size_t>(r * cols + c)], f) * stored;
        expected.merge(row_error(x.data(), deq.data(), cols));
      }
      quant_test::for_each_isa([&] {
        std::vector<uint8_t> packed(ref_packed.size(), 0xAB);
        std::vector<float> scales(static_cast<size_t>(rows));
        const ErrorStats stats = fpx_quantize_pack_rows(m, f, 0, rows, dtype, packed.data(), scales.data());
        EXPECT_EQ(packed, ref_packed);
        EXPECT_EQ(scales, ref_scales);
        EXPECT_EQ(stats.count, expected.count);
        EXPECT_EQ(stats.sum_abs_error, expected.sum_abs_error);
        EXPECT_EQ(stats.sum_squared_error, expected.sum_squared_error);
        EXPECT_EQ(stats.sum_squared_reference, expected.sum_squared_reference);
        EXPECT_EQ(stats.max_abs_error, expected.max_abs_error);
        std::vector<uint8_t> codes(ref.size());
        const ErrorStats unpacked_stats = fpx_quantize_rows(m, f, 0, rows, dtype, codes.data(), scales.data());
        EXPECT_EQ(codes, ref);
        EXPECT_EQ(unpacked_stats.sum_squared_error, expected.sum_squared_error);
      });
    }
  }
}

TEST_P(FpxCodec, PortablePackingLayoutAndRoundTrip) {
  const FpxFormat f = GetParam().format;
  const int bits = fpx_bits(f);
  const int64_t n = 64;
  std::mt19937 rng(4);
  std::vector<uint8_t> codes(static_cast<size_t>(n));
  for (auto& c : codes) c = static_cast<uint8_t>(rng() & ((1u << bits) - 1));
  std::vector<uint8_t> packed(static_cast<size_t>(fpx_packed_row_bytes(n, f)));
  ASSERT_EQ(packed.size(), static_cast<size_t>(n * bits / 8));
  fpx_pack_row(codes.data(), n, f, packed.data());
  // The documented layout: one little-endian bit stream per row, code i in bits [bits·i, bits·i + bits).
  for (int64_t i = 0; i < n; ++i) {
    for (int b = 0; b < bits; ++b) {
      const int64_t bit = i * bits + b;
      ASSERT_EQ((packed[static_cast<size_t>(bit / 8)] >> (bit % 8)) & 1, (codes[static_cast<size_t>(i)] >> b) & 1)
          << "code " << i << " bit " << b;
    }
  }
  std::vector<uint8_t> back(static_cast<size_t>(n));
  fpx_unpack_row(packed.data(), 0, n, f, back.data());
  EXPECT_EQ(back, codes);
  const int64_t block = fpx_block_codes(f) * 2;  // a range that starts on a later block
  fpx_unpack_row(packed.data(), block, n - block, f, back.data());
  EXPECT_TRUE(std::equal(back.begin(), back.begin() + (n - block), codes.begin() + block));
  if (f == FpxFormat::kE3M2) {  // the header's worked example: codes 1, 2, 3, 4 → v = 0x103081
    const uint8_t four[4] = {1, 2, 3, 4};
    uint8_t three[3];
    fpx_pack_row(four, 4, f, three);
    EXPECT_EQ(three[0], 0x81);
    EXPECT_EQ(three[1], 0x30);
    EXPECT_EQ(three[2], 0x10);
  }
}

TEST_P(FpxCodec, TensorCorePackingFastEqualsLiteralPortOnOtherShapes) {
  const FpxFormat f = GetParam().format;
  std::mt19937 rng(12);
  for (auto [rows, cols] : {std::pair<int64_t, int64_t>{64, 64}, {192, 128}, {64, 320}}) {
    std::vector<uint8_t> codes(static_cast<size_t>(rows * cols));
    for (auto& c : codes) c = static_cast<uint8_t>(rng() & ((1u << fpx_bits(f)) - 1));
    std::vector<uint8_t> fast(static_cast<size_t>(rows * cols * fpx_bits(f) / 8));
    fpx_pack_tc(codes.data(), rows, cols, f, fast.data());
    EXPECT_EQ(fast, fpx_pack_tc_reference(codes.data(), rows, cols, f)) << rows << "x" << cols;
    for (int64_t r = 0; r < rows; r += 7)
      for (int64_t c = 0; c < cols; ++c)
        ASSERT_EQ(fpx_tc_code_at(fast.data(), rows, cols, f, r, c), codes[static_cast<size_t>(r * cols + c)]);
  }
  std::vector<uint8_t> codes(64 * 32), out(64 * 32);
  EXPECT_THROW(fpx_pack_tc(codes.data(), 64, 32, f, out.data()), UsageError);
}

INSTANTIATE_TEST_SUITE_P(Formats, FpxCodec, ::testing::ValuesIn(kCases),
                         [](const auto& param_info) { return std::string(param_info.param.name); });

}  // namespace
}  // namespace hx
