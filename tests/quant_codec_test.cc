// The pieces every codec shares (quant/codec.h): the row kernels' minifloat encoder against the scalar reference of
// formats/float_convert.h on every code and every rounding boundary of e4m3fn, e3m2 and e2m2; round half even;
// the f32 view of weight matrices; error statistics.
#include <gtest/gtest.h>

#include <bit>
#include <cmath>
#include <limits>
#include <random>
#include <vector>

#include "formats/errors.h"
#include "quant/codec.h"
#include "quant/fp8.h"
#include "quant/fpx.h"
#include "quant/hqq.h"
#include "quant/int8.h"
#include "quant/row_vectors.h"
#include "tests/quant_test_helpers.h"

#ifdef _OPENMP
#include <omp.h>
#endif

namespace hx {
namespace {

// Every input the row kernels may pass to the encoder: all codes' values, the midpoints between neighbours and the
// floats one ulp either side of them, both signs, plus zeros and values below the smallest subnormal.
std::vector<float> boundary_inputs(const MinifloatFormat& f) {
  std::vector<double> values;
  const uint32_t half = 1u << (f.total_bits() - 1);
  for (uint32_t c = 0; c < half; ++c) {
    const double v = minifloat_decode_reference(c, f);
    if (std::isfinite(v)) values.push_back(v);
  }
  std::vector<float> out;
  for (size_t i = 0; i < values.size(); ++i) {
    out.push_back(static_cast<float>(values[i]));
    if (i + 1 < values.size()) {
      const float mid = static_cast<float>((values[i] + values[i + 1]) / 2);  // exact in f32 for these formats
      out.push_back(mid);
      out.push_back(std::nextafter(mid, 0.0f));
      out.push_back(std::nextafter(mid, INFINITY));
    }
  }
  out.push_back(std::numeric_limits<float>::denorm_min());
  out.push_back(1e-30f);
  const size_t n = out.size();
  for (size_t i = 0; i < n; ++i) out.push_back(-out[i]);
  return out;
}

template <class Encoder>
void expect_encoder_matches_reference(const MinifloatFormat& f, const char* name) {
  const double max = minifloat_max_finite(f);
  for (float x : boundary_inputs(f)) {
    if (std::fabs(x) > max) continue;  // the kernels clamp first
    float rounded = 0;
    const uint32_t code = Encoder::encode(x, &rounded);
    ASSERT_EQ(code, minifloat_encode_reference(x, f)) << name << " x = " << x;
    EXPECT_EQ(std::bit_cast<uint32_t>(rounded), std::bit_cast<uint32_t>(static_cast<float>(minifloat_decode_reference(code, f))))
        << name << " x = " << x << ": the rounded value must be the value of the code, sign of zero included";
  }
  std::mt19937 rng(7);
  std::uniform_real_distribution<float> u(-static_cast<float>(max), static_cast<float>(max));
  for (int i = 0; i < 200000; ++i) {
    const float x = u(rng);
    float rounded;
    ASSERT_EQ(Encoder::encode(x, &rounded), minifloat_encode_reference(x, f)) << name << " x = " << x;
  }
}

TEST(ClampedMinifloat, E4M3MatchesReferenceOnEveryCodeAndBoundary) {
  expect_encoder_matches_reference<ClampedE4M3>(kFormatE4M3FN, "e4m3fn");
}
TEST(ClampedMinifloat, E3M2MatchesReferenceOnEveryCodeAndBoundary) {
  expect_encoder_matches_reference<ClampedE3M2>(kFormatFP6E3M2, "e3m2");
}
TEST(ClampedMinifloat, E2M2MatchesReferenceOnEveryCodeAndBoundary) {
  expect_encoder_matches_reference<ClampedE2M2>(kFormatFP5E2M2, "e2m2");
}

// The 16-lane form the fused row kernels use (quant/row_vectors.h) against the scalar encoder, lane by lane, on
// every boundary input (and so, through the test above, against minifloat_encode_reference).
template <class Encoder>
void expect_vector_encoder_matches_scalar(const MinifloatFormat& f, const char* name) {
  const double max = minifloat_max_finite(f);
  std::vector<float> inputs;
  for (float x : boundary_inputs(f))
    if (std::fabs(x) <= max) inputs.push_back(x);
  for (size_t i = 0; i < inputs.size(); i += rowvec::kLanes) {
    rowvec::F32x16 v{};
    for (int l = 0; l < rowvec::kLanes; ++l) v[l] = inputs[std::min(i + static_cast<size_t>(l), inputs.size() - 1)];
    rowvec::F32x16 rounded;
    const rowvec::U32x16 codes = rowvec::minifloat_encode16<Encoder>(v, &rounded);
    for (int l = 0; l < rowvec::kLanes; ++l) {
      float scalar_rounded;
      ASSERT_EQ(codes[l], Encoder::encode(v[l], &scalar_rounded)) << name << " x = " << v[l];
      ASSERT_EQ(std::bit_cast<uint32_t>(rounded[l]), std::bit_cast<uint32_t>(scalar_rounded)) << name << " x = " << v[l];
    }
  }
}

TEST(ClampedMinifloat, SixteenLaneFormMatchesScalarOnEveryBoundary) {
  expect_vector_encoder_matches_scalar<ClampedE4M3>(kFormatE4M3FN, "e4m3fn");
  expect_vector_encoder_matches_scalar<ClampedE3M2>(kFormatFP6E3M2, "e3m2");
  expect_vector_encoder_matches_scalar<ClampedE2M2>(kFormatFP5E2M2, "e2m2");
}

TEST(ClampedMinifloat, EveryFiniteCodeRoundTrips) {
  auto round_trip = [](auto encoder, const MinifloatFormat& f, const char* name) {
    std::vector<uint32_t> seen;
    for (uint32_t c = 0; c < (1u << f.total_bits()); ++c) {
      const double v = minifloat_decode_reference(c, f);
      if (!std::isfinite(v)) continue;
      float rounded;
      EXPECT_EQ(decltype(encoder)::encode(static_cast<float>(v), &rounded), c) << name << " code " << c;
      seen.push_back(c);
    }
    return seen.size();
  };
  EXPECT_EQ(round_trip(ClampedE4M3{}, kFormatE4M3FN, "e4m3fn"), 254u);  // 256 minus the two NaN codes
  EXPECT_EQ(round_trip(ClampedE3M2{}, kFormatFP6E3M2, "e3m2"), 64u);
  EXPECT_EQ(round_trip(ClampedE2M2{}, kFormatFP5E2M2, "e2m2"), 32u);
}

TEST(RoundHalfEven, SmallFormMatchesNearbyint) {
  // Ties of both parities, both signs, and values near the 2^22 limit of the magic-number form.
  const float cases[] = {0.5f, 1.5f, 2.5f, -0.5f, -1.5f, -2.5f, 0.49999997f, 0.50000006f, 126.5f, 127.5f,
                         -127.5f, 4194303.5f, -4194302.5f, 0.0f, -0.0f, 1e-20f};
  for (float x : cases) {
    EXPECT_EQ(round_half_even_small(x), std::nearbyint(x)) << x;
    EXPECT_EQ(round_half_even(x), std::nearbyint(x)) << x;
  }
  EXPECT_EQ(round_half_even(2.5f), 2.0f);
  EXPECT_EQ(round_half_even(3.5f), 4.0f);
}

TEST(FloatRows, ReadsEveryDtypeExactly) {
  const std::vector<float> values = {0.0f, -1.5f, 3.140625f, 65504.0f, -2.0e-3f, 1.0f};
  std::vector<uint16_t> bf16, f16;
  for (float v : values) {
    bf16.push_back(f32_to_bf16(v));
    f16.push_back(f32_to_f16(v));
  }
  std::vector<float> out(3);
  FloatRows a(DType::kBF16, bf16.data(), 2, 3);
  a.read_row(1, out.data());
  for (int i = 0; i < 3; ++i) EXPECT_EQ(out[static_cast<size_t>(i)], bf16_to_f32(bf16[static_cast<size_t>(3 + i)]));
  FloatRows b(DType::kF16, f16.data(), 2, 3);
  b.read(0, 1, 2, out.data());
  EXPECT_EQ(out[0], f16_to_f32(f16[1]));
  EXPECT_EQ(out[1], f16_to_f32(f16[2]));
  FloatRows c(DType::kF32, values.data(), 3, 2);
  c.read_row(2, out.data());
  EXPECT_EQ(out[0], values[4]);
  EXPECT_EQ(out[1], 1.0f);
  const int8_t ints[4] = {};
  EXPECT_THROW(FloatRows(DType::kI8, ints, 2, 2), UnsupportedError);
}

TEST(FiniteAbsMax, FindsTheMaxAndNamesTheBadElement) {
  std::vector<float> x = {0.5f, -3.0f, 2.0f, -0.0f};
  FloatRows rows(DType::kF32, x.data(), 1, 4, 0, "model.safetensors: tensor 'w'");
  EXPECT_EQ(finite_abs_max(x.data(), 4, rows, 0), 3.0f);
  x[2] = std::numeric_limits<float>::infinity();
  try {
    finite_abs_max(x.data(), 4, rows, 5);
    FAIL() << "inf accepted";
  } catch (const FormatError& e) {
    EXPECT_NE(std::string(e.what()).find("tensor 'w' holds inf at row 5, column 2"), std::string::npos) << e.what();
  }
  x[2] = std::nanf("");
  EXPECT_THROW(finite_abs_max(x.data(), 4, rows, 0), FormatError);
}

TEST(ErrorStats, FiguresAndMergeOrder) {
  const float ref[] = {1.0f, -2.0f, 0.5f, 4.0f};
  const float approx[] = {1.0f, -2.5f, 0.5f, 3.0f};
  const ErrorStats s = row_error(ref, approx, 4);
  EXPECT_EQ(s.count, 4u);
  EXPECT_DOUBLE_EQ(s.max_abs_error, 1.0);
  EXPECT_DOUBLE_EQ(s.mean_abs_error(), 1.5 / 4);
  EXPECT_DOUBLE_EQ(s.nmse(), 1.25 / 21.25);
  EXPECT_NEAR(s.snr_db(), -10 * std::log10(1.25 / 21.25), 1e-12);
  ErrorStats total;
  total.merge(s);
  total.merge(row_error(ref, ref, 4));
  EXPECT_EQ(total.count, 8u);
  EXPECT_DOUBLE_EQ(total.nmse(), 1.25 / 42.5);
  EXPECT_TRUE(std::isinf(row_error(ref, ref, 4).snr_db()));
  const float zeros[] = {0, 0};
  EXPECT_TRUE(std::isinf(row_error(zeros, ref, 2).nmse()));  // error on an all-zero reference
}

// Everything the fused kernels of one matrix produce: codes (or packed bytes), scales/zeros and error statistics.
struct FusedOutputs {
  std::vector<uint8_t> bytes;
  std::vector<float> params;
  ErrorStats stats;
  bool operator==(const FusedOutputs& o) const {
    return bytes == o.bytes && params == o.params && stats.count == o.stats.count &&
           stats.sum_abs_error == o.stats.sum_abs_error && stats.sum_squared_error == o.stats.sum_squared_error &&
           stats.sum_squared_reference == o.stats.sum_squared_reference && stats.max_abs_error == o.stats.max_abs_error;
  }
};

FusedOutputs run_fused(const FloatRows& m, const std::string& scheme) {
  FusedOutputs out;
  const int64_t rows = m.rows(), cols = m.cols();
  out.params.resize(static_cast<size_t>(rows));
  if (scheme == "int8") {
    out.bytes.resize(static_cast<size_t>(rows * cols));
    out.stats = int8_quantize_rows(m, 0, rows, reinterpret_cast<int8_t*>(out.bytes.data()), out.params.data());
  } else if (scheme == "fp8") {
    out.bytes.resize(static_cast<size_t>(rows * cols));
    out.stats = fp8_quantize_rows(m, 0, rows, Fp8ScaleMode::kPerRow, 0, out.bytes.data(), out.params.data());
  } else if (scheme == "fp6" || scheme == "fp5") {
    const FpxFormat f = scheme == "fp6" ? FpxFormat::kE3M2 : FpxFormat::kE2M2;
    out.bytes.resize(static_cast<size_t>(rows * fpx_packed_row_bytes(cols, f)));
    out.stats = fpx_quantize_pack_rows(m, f, 0, rows, m.dtype(), out.bytes.data(), out.params.data());
  } else {
    const HqqFit fit = hqq_fit(m, HqqOptions{});
    out.params = fit.zero;
    out.params.insert(out.params.end(), fit.scale.begin(), fit.scale.end());
    out.bytes.resize(static_cast<size_t>(rows * cols / 2));
    out.stats = hqq_encode_pack_rows(m, fit, 0, rows, out.bytes.data());
  }
  return out;
}

// Rows are handed to threads dynamically (whichever thread is free takes the next rows), so this checks the claim
// of codec.h that results never depend on the thread count: 1 and 2 threads, on a matrix large enough (≥ 2^18
// weights) for the kernels to start a team, give the same bytes, parameters and statistics.
TEST(FusedKernels, ResultsDoNotDependOnTheThreadCount) {
#ifdef _OPENMP
  const int64_t rows = 80, cols = 4096;
  const std::vector<uint16_t> w16 = quant_test::to_bf16(quant_test::hard_matrix(rows, cols, 51));
  FloatRows m(DType::kBF16, w16.data(), rows, cols);
  const int saved = omp_get_max_threads();
  for (const char* scheme : {"int8", "fp8", "fp6", "fp5", "int4"}) {
    omp_set_num_threads(1);
    const FusedOutputs one = run_fused(m, scheme);
    omp_set_num_threads(2);
    const FusedOutputs two = run_fused(m, scheme);
    EXPECT_TRUE(one == two) << scheme;
    EXPECT_EQ(one.stats.count, static_cast<uint64_t>(rows * cols)) << scheme;
  }
  omp_set_num_threads(saved);
#else
  GTEST_SKIP() << "built without OpenMP";
#endif
}

// A NaN or inf in a stored BF16 row (read in place by the fused kernels, not through finite_abs_max's f32 copy) is
// refused with the same message: file and tensor, row, column. 6 rows run serially; 4096 rows (2^19 weights) run in
// the parallel regions, from which the error must come back as the same exception (not std::terminate).
TEST(FusedKernels, RefuseNonFiniteBf16WeightsNamingRowAndColumn) {
  const int64_t cols = 128;
  for (int64_t rows : {int64_t{6}, int64_t{4096}}) {
    const int64_t bad_row = rows - 3;
    std::vector<uint16_t> w16 = quant_test::to_bf16(quant_test::hard_matrix(rows, cols, 61));
    for (uint16_t bad : {uint16_t{0x7fc0}, uint16_t{0xff80}}) {  // NaN, −inf
      w16[static_cast<size_t>(bad_row * cols + 77)] = bad;
      FloatRows m(DType::kBF16, w16.data(), rows, cols, 0, "m.safetensors: tensor 'x'");
      for (const char* scheme : {"int8", "fp8", "fp6", "fp5", "int4"}) {
        try {
          run_fused(m, scheme);
          ADD_FAILURE() << scheme << " accepted a non-finite weight in " << rows << " rows";
        } catch (const FormatError& e) {
          EXPECT_NE(std::string(e.what()).find("tensor 'x' holds " + std::string(bad == 0x7fc0 ? "NaN" : "inf") +
                                               " at row " + std::to_string(bad_row) + ", column 77"),
                    std::string::npos)
              << scheme << ", " << rows << " rows: " << e.what();
        }
      }
    }
  }
}

TEST(SchemeNames, RoundTrip) {
  for (QuantScheme s : kAllQuantSchemes) EXPECT_EQ(scheme_from_name(scheme_name(s)), s);
  EXPECT_FALSE(scheme_from_name("int3"));
  for (QuantLayout l : {QuantLayout::kPortable, QuantLayout::kTorchaoTc, QuantLayout::kGemlite})
    EXPECT_EQ(layout_from_name(layout_name(l)), l);
  EXPECT_FALSE(layout_from_name("marlin"));
}

}  // namespace
}  // namespace hx
