// int8 (quant/int8.h): every code through the codec, a golden table of rounding cases, the fast path equal to the
// scalar reference, and the error it promises (at most half a step per weight).
#include <gtest/gtest.h>

#include <cmath>

#include "quant/int8.h"
#include "tests/quant_test_helpers.h"

namespace hx {
namespace {

// A row holding q·s for one q and the row maximum 127·s, s a power of two: every quotient is exact, so each of the
// 255 codes must come back, and decode to q·s.
TEST(Int8Codec, EveryCodeRoundTripsAndCodesAreUnique) {
  const float s = 0x1p-7f;
  std::vector<int> seen(256, 0);
  for (int q = -127; q <= 127; ++q) {
    const float row[2] = {static_cast<float>(q) * s, 127.0f * s};
    FloatRows w(DType::kF32, row, 1, 2);
    int8_t codes[2], ref[2];
    float scale = 0, ref_scale = 0;
    int8_quantize_rows_reference(w, 0, 1, ref, &ref_scale);
    EXPECT_EQ(ref[0], q);
    EXPECT_EQ(ref_scale, s);
    quant_test::for_each_isa([&] {
      int8_quantize_rows(w, 0, 1, codes, &scale);
      EXPECT_EQ(codes[0], q);
    });
    EXPECT_EQ(int8_decode(codes[0], scale), row[0]);
    ++seen[static_cast<size_t>(codes[0] + 128)];
  }
  EXPECT_EQ(seen[0], 0) << "-128 is never written";
  for (int q = -127; q <= 127; ++q) EXPECT_EQ(seen[static_cast<size_t>(q + 128)], 1) << q;
}

TEST(Int8Codec, GoldenRoundingCases) {
  // Scale 1/127 · 127 = 1 is not what a row gives; use the element rule directly with s = 0.5 (exact quotients).
  struct Case {
    float w;
    int8_t q;
    const char* why;
  };
  const float s = 0.5f;
  const Case cases[] = {
      {0.0f, 0, "zero"},
      {0.25f, 0, "w/s = 0.5: a tie, to the even 0"},
      {0.75f, 2, "w/s = 1.5: a tie, to the even 2"},
      {1.25f, 2, "w/s = 2.5: a tie, to the even 2"},
      {-0.25f, 0, "w/s = −0.5: to the even 0"},
      {-0.75f, -2, "w/s = −1.5: to the even −2"},
      {0.2499999f, 0, "just below a tie: down"},
      {0.2500001f, 1, "just above a tie: up"},
      {63.5f, 127, "w/s = 127: the largest code"},
      {63.75f, 127, "w/s = 127.5: would round to 128; clamped to 127"},
      {-64.0f, -127, "w/s = −128: clamped to −127 (−128 is never written)"},
      {1e30f, 127, "far beyond the row maximum (cannot happen with the row's own scale): clamped"},
  };
  for (const Case& c : cases) EXPECT_EQ(int8_encode_reference(c.w, s), c.q) << c.w << ": " << c.why;
  // Scales: amax/127, and the floor for an all-zero row.
  const float row[3] = {0.5f, -254.0f, 3.0f};
  EXPECT_EQ(int8_row_scale_reference(row, 3), 2.0f);
  const float zeros[3] = {0, 0, 0};
  EXPECT_EQ(int8_row_scale_reference(zeros, 3), kAmaxFloor / 127.0f);
}

TEST(Int8Codec, FastPathEqualsReferenceOnHardMatrices) {
  const int64_t rows = 24, cols = 1000;  // not a multiple of the vector width: the loops' tails run too
  const std::vector<float> w = quant_test::hard_matrix(rows, cols, 5);
  const std::vector<uint16_t> w16 = quant_test::to_bf16(w);
  for (DType dtype : {DType::kF32, DType::kBF16}) {
    FloatRows m(dtype, dtype == DType::kF32 ? static_cast<const void*>(w.data()) : w16.data(), rows, cols);
    std::vector<int8_t> ref(static_cast<size_t>(rows * cols)), fast(ref.size());
    std::vector<float> ref_scales(static_cast<size_t>(rows)), fast_scales(ref_scales.size());
    int8_quantize_rows_reference(m, 0, rows, ref.data(), ref_scales.data());
    quant_test::for_each_isa([&] {
      const ErrorStats stats = int8_quantize_rows(m, 0, rows, fast.data(), fast_scales.data());
      EXPECT_EQ(fast, ref);
      EXPECT_EQ(fast_scales, ref_scales);
      // The statistics are of exactly the dequantized values.
      std::vector<float> x(static_cast<size_t>(cols)), deq(x.size());
      ErrorStats expected;
      for (int64_t r = 0; r < rows; ++r) {
        m.read_row(r, x.data());
        for (int64_t c = 0; c < cols; ++c)
          deq[static_cast<size_t>(c)] = int8_decode(fast[static_cast<size_t>(r * cols + c)], fast_scales[static_cast<size_t>(r)]);
        expected.merge(row_error(x.data(), deq.data(), cols));
      }
      EXPECT_EQ(stats.sum_abs_error, expected.sum_abs_error);
      EXPECT_EQ(stats.max_abs_error, expected.max_abs_error);
    });
  }
}

TEST(Int8Codec, ErrorIsAtMostHalfAStep) {
  const int64_t rows = 16, cols = 512;
  const std::vector<float> w = quant_test::hard_matrix(rows, cols, 9);
  FloatRows m(DType::kF32, w.data(), rows, cols);
  std::vector<int8_t> codes(static_cast<size_t>(rows * cols));
  std::vector<float> scales(static_cast<size_t>(rows));
  int8_quantize_rows(m, 0, rows, codes.data(), scales.data());
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t c = 0; c < cols; ++c) {
      const size_t i = static_cast<size_t>(r * cols + c);
      const float err = std::fabs(int8_decode(codes[i], scales[static_cast<size_t>(r)]) - w[i]);
      // Half a step, plus the f32 roundings of the quotient and of the product (a few ulps of the step).
      ASSERT_LE(err, 0.5f * scales[static_cast<size_t>(r)] * (1 + 1e-5f) + std::fabs(w[i]) * 1e-6f) << r << ", " << c;
    }
  }
}

}  // namespace
}  // namespace hx
