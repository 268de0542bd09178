// Tests of the CPU kernels in verify/kernels.h.
//
//  * Matrix product: against a double-precision reference for every dense weight dtype and both compute modes, on
//    odd shapes (K = 352 and 301, N not a multiple of any block, T = 1 and 37), under every kernel family and thread
//    count; generic against AVX-512; 1 against 2 threads and T = 1 against T = 37 bit for bit; a quantised
//    WeightMatrix written here to prove the plug-in interface; the AVX-512 row decoders on every code.
//  * Small ops: against PyTorch computed at test time (tests/python/verify_kernels_reference.py through Debian's
//    /usr/bin/python3; skipped when torch is missing): Gemma and Llama RMSNorm in f32 and bf16, RoPE default and
//    proportional, windowed causal GQA attention, activations, the RWKV-7 recurrence against a float64 token loop.
//
// Error bounds are written relative to Σ|x·w| (or the analogous sum of magnitudes): a rounding-error bound for a
// sum holds relative to that, not to the result, which can cancel to anything.
#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <bit>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <optional>
#include <ostream>
#include <random>
#include <string>
#include <utility>
#include <vector>

#ifdef _OPENMP
#include <omp.h>
#endif

#include "formats/errors.h"
#include "formats/float_convert.h"
#include "tests/support/test_support.h"
#include "verify/kernels.h"
#include "verify/vector_exp.h"

namespace hx {

// How gtest (and so CTest's test list) prints a kernel family parameter; found by argument-dependent lookup.
void PrintTo(CpuIsa isa, std::ostream* os) { *os << cpu_isa_name(isa); }

namespace {

// ---- tolerances --------------------------------------------------------------------------------------------------

// f32 unit roundoff. A left-to-right sum of K products has |error| ≤ γ_K·Σ|x_k·w_k|, γ_K = K·u/(1 − K·u) (Higham,
// "Accuracy and Stability of Numerical Algorithms", §3.1); rounding each product first (the generic path, no FMA)
// costs one more u per term. (K + 2)·u·1.001 covers both for every K used here.
constexpr double kF32Unit = 0x1p-24;
double f32_sum_bound(int64_t k) { return static_cast<double>(k + 2) * kF32Unit * 1.001; }

// bf16 keeps 8 significant bits: rounding x and w to bf16 moves each by ≤ 2^-8 relative, so a product by
// ≤ 2·2^-8 + 2^-16; on top of that each of the two f32 sums has its own γ_K. Bound for |y_bf16 − y_f32|.
constexpr double kBf16Unit = 0x1p-8;
double bf16_vs_f32_bound(int64_t k) { return (2 * kBf16Unit + kBf16Unit * kBf16Unit) * 1.01 + 2 * f32_sum_bound(k); }

// Generic (multiply, round, add) vs AVX-512 (FMA) f32 products: each is within f32_sum_bound of the exact sum, so
// they differ by at most twice that; in ulps of Σ|x·w| this is 2·(K + 2) ulps (u·v ≤ ulp(v)).
double generic_vs_simd_bound(int64_t k) { return 2 * f32_sum_bound(k); }

// RMSNorm in f32: torch sums x² in f32 (error ≲ log2(dim)·u with its pairwise/vectorised sum, ≤ dim·u worst case)
// where we sum in double; through the square root that halves, plus ≤ 3 roundings of our own and torch's: for
// dim = 96, ≤ (48 + 3)·u ≈ 3e-6 relative in the worst case.
constexpr double kRmsNormF32Rel = 3.1e-6;
// bf16 outputs: the f32 values before the final rounding differ by ≤ kRmsNormF32Rel, which flips a rounding
// (1 bf16 ulp) only when a value sits within that distance of a rounding midpoint; Llama's second rounding (after
// × weight) can carry such a flip into one more ulp.
constexpr int kRmsNormBf16MaxUlps = 2;
// ... and flips must be rare: at most 1 % of elements (a systematic error would flip about half).
constexpr double kMaxFlippedFraction = 0.01;

// RoPE, f32: inv_freq is 1/powf: torch's pow and glibc's powf are each within 1 ulp, so ≤ 2 ulps apart.
constexpr int kInvFreqMaxUlps = 2;
// cos/sin of the same f32 angle: ours is correctly rounded (computed in double), torch's within 1 ulp; absolute
// error of values in [-1, 1] ≤ 2^-24.
constexpr double kCosSinAbs = 0x1p-24;
// Rotated values: two products and a sum of f32 values, plus the cos/sin difference: ≤ 4·u·(|x1| + |x2|).
constexpr double kRopeRel = 4 * kF32Unit;

// Attention in f32 against a float64 reference: dot products of d = 32 terms (≤ 34·u relative to Σ|q·k|), scaled
// by 1/sqrt(d); scores of magnitude ≤ ~6 → ≤ 6·34·u ≈ 1.2e-5 absolute into exp (relative error of the weights), sum
// of ≤ 12 weights, then a weighted sum of values: |Δout| ≤ ~2e-5·Σ_j p_j|v_j|. 1e-4 absolute for |v| ≤ 4 leaves
// margin for the exp/division roundings.
constexpr double kAttentionF32Abs = 1e-4;
// bf16 emulation vs torch's bf16 eager run: both round scores, weights and outputs to bf16; a score whose f32
// value sits near a bf16 midpoint can round differently, which moves one weight by 2^-8 relative, and the output
// by ~2^-8·max|v| at worst: allow 2 bf16 ulps of max|v| (4) = 2 · 2^-8 · 4.
constexpr double kAttentionBf16Abs = 2 * 0x1p-8 * 4;

// Activations: exp/tanh/log1p from glibc vs torch's Sleef (≤ 1 ulp each) and ≤ 5 roundings: ≤ 8 ulps relative,
// plus an absolute floor for results near zero (silu(x) → 0 for x → −∞).
constexpr double kActivationRel = 8 * kF32Unit;
constexpr double kActivationAbs = 1e-7;
// gelu_tanh(x) = 0.5·x·(1 + tanh(·)) cancels for x ≪ 0: one ulp of tanh near −1 (2^-24) in each implementation
// becomes an absolute error of 0.5·|x|·2·2^-24 = |x|·2^-24 (times |up| after the GeGLU product).
constexpr double kGeluCancellation = 0x1p-24;

// RWKV-7 recurrence, f32 vs float64 over T tokens: each token adds ≤ (N + 3)·u relative to Σ_i|r_i|·max|S| (the
// sums over i and the three-term update) and the transition diag(d) − kk(kk·a)ᵀ (0 < d < 1, ||kk|| = 1, 0 < a < 1)
// does not amplify earlier errors: ≤ (N + 3·T)·u·Σ|r|·max|S| ≈ 100·u for N = 32, T = 24; 4× margin.
constexpr double kRwkvRel = 400 * kF32Unit;
// The element-wise RWKV pieces: exp/softplus/sqrt/division roundings, as for activations.
constexpr double kRwkvPiecesRel = 8 * kF32Unit;
// The bonus Σ_i r_i·k_i·r_k[i] (N = 32 terms) can cancel, so its error is relative to Σ|r·k·r_k| (≈ 1.6 for the test
// data) times |v| (≲ 4): (N + 2)·u·1.6·4 ≈ 1.3e-5 absolute.
constexpr double kRwkvBonusAbs = 2e-5;

// ---- helpers -----------------------------------------------------------------------------------------------------

int current_threads() {
#ifdef _OPENMP
  return omp_get_max_threads();
#else
  return 1;
#endif
}

void set_threads(int n) {
#ifdef _OPENMP
  omp_set_num_threads(n);
#else
  (void)n;
#endif
}

// Forces a kernel family and a thread count for the scope of a test.
class KernelScope {
 public:
  KernelScope(CpuIsa isa, int threads) : saved_threads_(current_threads()) {
    force_cpu_isa(isa);
    set_threads(threads);
  }
  ~KernelScope() {
    force_cpu_isa(std::nullopt);
    set_threads(saved_threads_);
  }
  KernelScope(const KernelScope&) = delete;
  KernelScope& operator=(const KernelScope&) = delete;

 private:
  int saved_threads_;
};

std::vector<float> normal_floats(size_t n, uint32_t seed, float stddev = 1.0f, float mean = 0.0f) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> dist(mean, stddev);
  std::vector<float> v(n);
  for (float& x : v) x = dist(rng);
  return v;
}

std::vector<float> uniform_floats(size_t n, uint32_t seed, float lo, float hi) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> dist(lo, hi);
  std::vector<float> v(n);
  for (float& x : v) x = dist(rng);
  return v;
}

std::vector<float> rounded_to(std::vector<float> v, DType activation) {
  round_to_activation(v, activation);
  return v;
}

bool same_bits(const std::vector<float>& a, const std::vector<float>& b) {
  return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0;
}

// Distance in representable values between two floats of the same sign class (bit patterns as a number line).
int64_t ulp_distance(float a, float b) {
  const auto key = [](float f) {
    const int32_t i = std::bit_cast<int32_t>(f);
    return i < 0 ? int64_t{INT32_MIN} - i : int64_t{i};
  };
  return std::llabs(key(a) - key(b));
}

int64_t bf16_ulp_distance(float a, float b) { return ulp_distance(a, b) >> 16; }

// A weight matrix of `dtype` from f32 values: the stored bytes, and the exact values they decode to.
struct EncodedWeights {
  std::vector<uint8_t> bytes;
  std::vector<float> values;
};

EncodedWeights encode_weights(DType dtype, const std::vector<float>& source) {
  EncodedWeights w;
  w.bytes.resize(source.size() * dtype_element_size(dtype));
  convert_from_f32(dtype, source.data(), w.bytes.data(), source.size());
  w.values.resize(source.size());
  convert_to_f32(dtype, w.bytes.data(), w.values.data(), source.size());
  return w;
}

// Exact-ish reference of y = x·Wᵀ: sums of double products (exact for f32 inputs) and Σ|x·w| for the bounds.
struct Reference {
  std::vector<double> y;
  std::vector<double> magnitude;
};

Reference reference_matmul(const std::vector<float>& x, const std::vector<float>& w, int64_t tokens, int64_t k_in,
                           int64_t n_out) {
  Reference ref;
  ref.y.resize(static_cast<size_t>(tokens * n_out));
  ref.magnitude.resize(ref.y.size());
  for (int64_t t = 0; t < tokens; ++t) {
    for (int64_t n = 0; n < n_out; ++n) {
      double sum = 0, magnitude = 0;
      for (int64_t k = 0; k < k_in; ++k) {
        const double product = static_cast<double>(x[t * k_in + k]) * w[n * k_in + k];
        sum += product;
        magnitude += std::fabs(product);
      }
      ref.y[t * n_out + n] = sum;
      ref.magnitude[t * n_out + n] = magnitude;
    }
  }
  return ref;
}

// Checks |y − ref| ≤ factor·Σ|x·w| elementwise; reports the first few offenders.
void expect_within(const std::vector<float>& y, const Reference& ref, double factor, const std::string& what) {
  ASSERT_EQ(y.size(), ref.y.size()) << what;
  int failures = 0;
  double worst = 0;
  for (size_t i = 0; i < y.size(); ++i) {
    const double error = std::fabs(y[i] - ref.y[i]);
    const double allowed = factor * ref.magnitude[i];
    if (ref.magnitude[i] > 0) worst = std::max(worst, error / ref.magnitude[i]);
    if (!(error <= allowed) && ++failures <= 5) {
      ADD_FAILURE() << what << ": element " << i << " is " << y[i] << ", reference " << ref.y[i] << " (error " << error
                    << " > " << allowed << ")";
    }
  }
  EXPECT_EQ(failures, 0) << what << ": worst error " << worst << "·Σ|x·w|, bound " << factor;
}

std::vector<float> run_matmul(const std::vector<float>& x, int64_t tokens, const WeightMatrix& w,
                              MatmulCompute compute) {
  std::vector<float> y(static_cast<size_t>(tokens * w.rows()), NAN);
  matmul(x.data(), tokens, w, y.data(), MatmulOptions{compute, false});
  return y;
}

const DType kWeightDtypes[] = {DType::kF32, DType::kBF16, DType::kF16, DType::kF8_E4M3, DType::kF8_E5M2};

struct GemmShape {
  int64_t tokens, k_in, n_out;
};
// K = 352 (11 × 32, not a multiple of the 128/256 k chunks), K = 301 (odd: a half-empty last bf16 pair), N not a
// multiple of 16, 48 or 96, T = 1 (decode) and 37 (not a multiple of the 4/8-row micro-tiles).
const GemmShape kGemmShapes[] = {{1, 352, 1000}, {37, 352, 1000}, {37, 301, 53}, {3, 600, 150}};

std::string shape_name(const GemmShape& s) {
  return "T=" + std::to_string(s.tokens) + " K=" + std::to_string(s.k_in) + " N=" + std::to_string(s.n_out);
}

// ---- fixtures ----------------------------------------------------------------------------------------------------

struct KernelConfig {
  CpuIsa isa;
  int threads;
};

// How gtest (and so CTest) prints the parameters.
void PrintTo(const KernelConfig& config, std::ostream* os) {
  *os << cpu_isa_name(config.isa) << ", " << config.threads << " threads";
}

std::string config_name(const testing::TestParamInfo<KernelConfig>& info) {
  return std::string(cpu_isa_name(info.param.isa)) + "_" + std::to_string(info.param.threads) + "threads";
}

// Every test of this fixture runs under each kernel family × thread count.
class VerifyKernels : public testing::TestWithParam<KernelConfig> {
 protected:
  void SetUp() override {
    if (!cpu_supports(GetParam().isa))
      GTEST_SKIP() << "this CPU cannot run the " << cpu_isa_name(GetParam().isa) << " kernels";
    scope_.emplace(GetParam().isa, GetParam().threads);
  }
  void TearDown() override { scope_.reset(); }

 private:
  std::optional<KernelScope> scope_;
};

INSTANTIATE_TEST_SUITE_P(IsaThreads, VerifyKernels,
                         testing::Values(KernelConfig{CpuIsa::kGeneric, 1}, KernelConfig{CpuIsa::kGeneric, 2},
                                         KernelConfig{CpuIsa::kAvx512, 1}, KernelConfig{CpuIsa::kAvx512, 2}),
                         config_name);

// Tests that compare thread counts themselves run once per kernel family.
class VerifyKernelsPerIsa : public testing::TestWithParam<CpuIsa> {
 protected:
  void SetUp() override {
    if (!cpu_supports(GetParam())) GTEST_SKIP() << "this CPU cannot run the " << cpu_isa_name(GetParam()) << " kernels";
  }
};

INSTANTIATE_TEST_SUITE_P(Isa, VerifyKernelsPerIsa, testing::Values(CpuIsa::kGeneric, CpuIsa::kAvx512),
                         [](const testing::TestParamInfo<CpuIsa>& param) {
                           return std::string(cpu_isa_name(param.param));
                         });

// ---- matrix product: accuracy ------------------------------------------------------------------------------------

TEST_P(VerifyKernels, MatmulMatchesDoubleReferenceForEveryWeightDtype) {
  for (const GemmShape& shape : kGemmShapes) {
    const auto x = normal_floats(static_cast<size_t>(shape.tokens * shape.k_in), 1);
    for (DType dtype : kWeightDtypes) {
      const auto w = encode_weights(dtype, normal_floats(static_cast<size_t>(shape.n_out * shape.k_in), 2, 0.5f));
      const DenseWeights weights(dtype, w.bytes.data(), shape.n_out, shape.k_in);
      const std::string what = shape_name(shape) + " " + weights.describe();

      const Reference exact = reference_matmul(x, w.values, shape.tokens, shape.k_in, shape.n_out);
      const auto y = run_matmul(x, shape.tokens, weights, MatmulCompute::kF32);
      expect_within(y, exact, f32_sum_bound(shape.k_in), what + " f32");

      // bf16 mode: exactly the f32 sum of the bf16-rounded operands' exact products.
      const auto y_bf16 = run_matmul(x, shape.tokens, weights, MatmulCompute::kBF16);
      expect_within(y_bf16,
                    reference_matmul(rounded_to(x, DType::kBF16), rounded_to(w.values, DType::kBF16), shape.tokens,
                                     shape.k_in, shape.n_out),
                    f32_sum_bound(shape.k_in), what + " bf16 mode");
      // ... and within bf16 rounding of the f32 mode's result.
      Reference f32_mode = exact;
      f32_mode.y.assign(y.begin(), y.end());
      expect_within(y_bf16, f32_mode, bf16_vs_f32_bound(shape.k_in), what + " bf16 mode vs f32 mode");
    }
  }
}

TEST_P(VerifyKernels, MatmulAccumulateAddsTheFinishedProductOnce) {
  const GemmShape s{37, 352, 1000};
  const auto x = normal_floats(static_cast<size_t>(s.tokens * s.k_in), 3);
  const auto w = encode_weights(DType::kBF16, normal_floats(static_cast<size_t>(s.n_out * s.k_in), 4));
  const DenseWeights weights(DType::kBF16, w.bytes.data(), s.n_out, s.k_in);
  for (MatmulCompute compute : {MatmulCompute::kF32, MatmulCompute::kBF16}) {
    const auto residual = normal_floats(static_cast<size_t>(s.tokens * s.n_out), 5, 10.0f);
    const auto product = run_matmul(x, s.tokens, weights, compute);
    auto y = residual;
    matmul(x.data(), s.tokens, weights, y.data(), MatmulOptions{compute, true});
    std::vector<float> expected(residual.size());
    for (size_t i = 0; i < expected.size(); ++i) expected[i] = residual[i] + product[i];
    EXPECT_TRUE(same_bits(y, expected)) << "accumulate must equal residual + (x·Wᵀ) with one rounding";
  }
}

// bf16 weights whose rows are read in place (stride 136 values, 4-byte aligned) and ones that must be copied first
// (stride 135: rows not 4-byte aligned; offset 1: the matrix itself starts off alignment), in both compute modes.
TEST_P(VerifyKernels, MatmulHonoursStridesAndLeavesPaddingAlone) {
  const int64_t tokens = 5, k_in = 130, n_out = 70, x_stride = 141, y_stride = 83;
  const auto x = normal_floats(static_cast<size_t>(tokens * x_stride), 6);
  for (auto [w_stride, w_offset] : {std::pair<int64_t, int64_t>{136, 0}, {135, 0}, {136, 1}}) {
    const auto w = encode_weights(DType::kBF16, normal_floats(static_cast<size_t>(n_out * w_stride + 1), 7));
    const DenseWeights weights(DType::kBF16, w.bytes.data() + 2 * w_offset, n_out, k_in, 2 * w_stride);
    std::vector<float> x_packed, w_packed;
    for (int64_t t = 0; t < tokens; ++t) x_packed.insert(x_packed.end(), &x[t * x_stride], &x[t * x_stride + k_in]);
    for (int64_t n = 0; n < n_out; ++n) {
      const float* row = &w.values[static_cast<size_t>(n * w_stride + w_offset)];
      w_packed.insert(w_packed.end(), row, row + k_in);
    }
    for (MatmulCompute compute : {MatmulCompute::kF32, MatmulCompute::kBF16}) {
      const std::string what = "W stride " + std::to_string(w_stride) + " offset " + std::to_string(w_offset) +
                               (compute == MatmulCompute::kBF16 ? " bf16 mode" : " f32 mode");
      constexpr float kSentinel = 12345.0f;
      std::vector<float> y(static_cast<size_t>(tokens * y_stride), kSentinel);
      matmul(x.data(), tokens, x_stride, weights, y.data(), y_stride, MatmulOptions{compute, false});
      std::vector<float> y_packed;
      for (int64_t t = 0; t < tokens; ++t) {
        y_packed.insert(y_packed.end(), &y[t * y_stride], &y[t * y_stride + n_out]);
        for (int64_t n = n_out; n < y_stride; ++n) {
          EXPECT_EQ(y[t * y_stride + n], kSentinel) << what << ": row " << t << " col " << n;
        }
      }
      const bool bf16 = compute == MatmulCompute::kBF16;
      expect_within(
          y_packed,
          reference_matmul(bf16 ? rounded_to(x_packed, DType::kBF16) : x_packed, w_packed, tokens, k_in, n_out),
          f32_sum_bound(k_in), what);
    }
  }
}

TEST_P(VerifyKernels, MatmulOfEmptySumsAndEmptyShapes) {
  const std::vector<float> x(3, 1.0f);
  const DenseWeights no_inputs(DType::kF32, x.data(), 4, 0);
  std::vector<float> y(12, 7.0f);
  matmul(x.data(), 3, 0, no_inputs, y.data(), 4);
  EXPECT_EQ(y, std::vector<float>(12, 0.0f)) << "an empty sum is 0";
  y.assign(12, 7.0f);
  matmul(x.data(), 3, 0, no_inputs, y.data(), 4, MatmulOptions{MatmulCompute::kF32, true});
  EXPECT_EQ(y, std::vector<float>(12, 7.0f)) << "adding an empty sum changes nothing";
  matmul(x.data(), 0, 0, no_inputs, nullptr, 4);  // no tokens: nothing touched
  EXPECT_THROW(matmul(x.data(), 1, 0, no_inputs, y.data(), 3), UsageError) << "y stride shorter than a row";
}

// A quantised encoding plugged in through WeightMatrix only: int8 codes with one f32 scale per row. It also checks
// the tile contract the GEMM promises to decoders.
class ScaledInt8Rows final : public WeightMatrix {
 public:
  ScaledInt8Rows(std::vector<int8_t> codes, std::vector<float> scales, int64_t rows, int64_t cols)
      : WeightMatrix(rows, cols), codes_(std::move(codes)), scales_(std::move(scales)) {}
  void decode_f32(int64_t row_begin, int64_t row_end, int64_t col_begin, int64_t col_end, float* dst,
                  int64_t dst_stride) const override {
    const bool aligned =
        col_begin % kWeightTileColAlign == 0 && (col_end % kWeightTileColAlign == 0 || col_end == cols());
    if (row_end - row_begin > kWeightTileRows || !aligned || row_end > rows() || col_end > cols())
      contract_broken_ = true;
    for (int64_t r = row_begin; r < row_end; ++r) {
      for (int64_t c = col_begin; c < col_end; ++c) {
        dst[(r - row_begin) * dst_stride + (c - col_begin)] = codes_[r * cols() + c] * scales_[r];
      }
    }
  }
  std::string describe() const override {
    return "int8 row-scaled [" + std::to_string(rows()) + ", " + std::to_string(cols()) + "]";
  }
  bool contract_broken() const { return contract_broken_; }

 private:
  std::vector<int8_t> codes_;
  std::vector<float> scales_;
  mutable std::atomic<bool> contract_broken_{false};
};

TEST_P(VerifyKernels, QuantisedWeightsPlugInAsARowDecoder) {
  const int64_t tokens = 37, k_in = 352, n_out = 211;
  std::mt19937 rng(8);
  std::uniform_int_distribution<int> code(-127, 127);
  std::vector<int8_t> codes(static_cast<size_t>(n_out * k_in));
  for (auto& c : codes) c = static_cast<int8_t>(code(rng));
  const auto scales = uniform_floats(static_cast<size_t>(n_out), 9, 1e-3f, 2e-2f);
  std::vector<float> values(codes.size());
  for (int64_t r = 0; r < n_out; ++r) {
    for (int64_t c = 0; c < k_in; ++c) values[r * k_in + c] = codes[r * k_in + c] * scales[r];
  }
  const ScaledInt8Rows weights(codes, scales, n_out, k_in);
  const auto x = normal_floats(static_cast<size_t>(tokens * k_in), 10);
  expect_within(run_matmul(x, tokens, weights, MatmulCompute::kF32), reference_matmul(x, values, tokens, k_in, n_out),
                f32_sum_bound(k_in), "int8 f32 mode");
  // bf16 mode goes through WeightMatrix's default decode_bf16 (decode_f32, then round).
  expect_within(run_matmul(x, tokens, weights, MatmulCompute::kBF16),
                reference_matmul(rounded_to(x, DType::kBF16), rounded_to(values, DType::kBF16), tokens, k_in, n_out),
                f32_sum_bound(k_in), "int8 bf16 mode");
  EXPECT_FALSE(weights.contract_broken()) << "the GEMM asked for a tile outside the documented contract";
}

// A decoder that fails on one tile: matmul must hand the exception to its caller (not terminate in a thread).
class FailingWeights final : public WeightMatrix {
 public:
  FailingWeights(int64_t rows, int64_t cols) : WeightMatrix(rows, cols) {}
  void decode_f32(int64_t row_begin, int64_t row_end, int64_t col_begin, int64_t col_end, float* dst,
                  int64_t dst_stride) const override {
    if (row_end > rows() / 2) throw FormatError("tensor 'w': corrupt block at row " + std::to_string(row_begin));
    for (int64_t r = row_begin; r < row_end; ++r)
      std::fill_n(dst + (r - row_begin) * dst_stride, col_end - col_begin, 1.0f);
  }
  std::string describe() const override { return "failing"; }
};

// matmul_many (Q/K/V, gate/up) shares the packed x and one parallel loop; each output must be exactly what its own
// matmul writes, for every width (1000 and 53 are not multiples of the 48-wide panels), in both compute modes and
// with accumulate; weights of another input width are refused.
TEST_P(VerifyKernels, MatmulManyEqualsSeparateProducts) {
  const int64_t tokens = 37, k_in = 301;
  const auto x = normal_floats(static_cast<size_t>(tokens * k_in), 95);
  const auto w1 = encode_weights(DType::kBF16, normal_floats(static_cast<size_t>(1000 * k_in), 96));
  const auto w2 = encode_weights(DType::kBF16, normal_floats(static_cast<size_t>(53 * k_in), 97));
  const auto w3 = encode_weights(DType::kF32, normal_floats(static_cast<size_t>(160 * k_in), 98));
  const DenseWeights a(DType::kBF16, w1.bytes.data(), 1000, k_in), b(DType::kBF16, w2.bytes.data(), 53, k_in),
      c(DType::kF32, w3.bytes.data(), 160, k_in);
  for (MatmulCompute compute : {MatmulCompute::kF32, MatmulCompute::kBF16}) {
    for (bool accumulate : {false, true}) {
      const MatmulOptions options{compute, accumulate};
      std::vector<std::vector<float>> separate, together;
      for (const DenseWeights* w : {&a, &b, &c}) {
        const auto start = normal_floats(static_cast<size_t>(tokens * w->rows()), 99);  // what += adds to
        separate.push_back(start);
        together.push_back(start);
        matmul(x.data(), tokens, *w, separate.back().data(), options);
      }
      const MatmulOutput outputs[] = {{&a, together[0].data(), a.rows()},
                                      {&b, together[1].data(), b.rows()},
                                      {&c, together[2].data(), c.rows()}};
      matmul_many(x.data(), tokens, k_in, outputs, options);
      for (size_t i = 0; i < 3; ++i) {
        EXPECT_TRUE(same_bits(separate[i], together[i]))
            << "output " << i << " compute " << static_cast<int>(compute) << " accumulate " << accumulate;
      }
    }
  }
  const DenseWeights narrower(DType::kBF16, w2.bytes.data(), 1, k_in - 1);
  std::vector<float> y(static_cast<size_t>(tokens * 1000)), z(static_cast<size_t>(tokens));
  const MatmulOutput mixed[] = {{&a, y.data(), 1000}, {&narrower, z.data(), 1}};
  EXPECT_THROW(matmul_many(x.data(), tokens, k_in, mixed), UsageError);
}

TEST_P(VerifyKernels, MatmulPassesADecoderFailureToTheCaller) {
  const FailingWeights weights(1000, 352);
  const auto x = normal_floats(37 * 352, 18);
  std::vector<float> y(37 * 1000);
  for (MatmulCompute compute : {MatmulCompute::kF32, MatmulCompute::kBF16}) {
    EXPECT_THROW(matmul(x.data(), 37, weights, y.data(), MatmulOptions{compute, false}), FormatError);
  }
}

// ---- matrix product: determinism ---------------------------------------------------------------------------------

// N = 100 (generic f32, 8-wide panels), 200 (generic bf16, 16-wide) and 600 (AVX-512, 48-wide) are 13 panels: two
// per work item with 1 thread, one with 2 threads — different blocking, same bits.
TEST_P(VerifyKernelsPerIsa, MatmulIsBitIdenticalForOneAndTwoThreads) {
  for (int64_t n_out : {100, 200, 600, 1000}) {
    const GemmShape s{37, 352, n_out};
    const auto x = normal_floats(static_cast<size_t>(s.tokens * s.k_in), 11);
    const auto w = encode_weights(DType::kF16, normal_floats(static_cast<size_t>(s.n_out * s.k_in), 12));
    const DenseWeights weights(DType::kF16, w.bytes.data(), s.n_out, s.k_in);
    for (MatmulCompute compute : {MatmulCompute::kF32, MatmulCompute::kBF16}) {
      std::vector<float> one, two;
      {
        KernelScope scope(GetParam(), 1);
        one = run_matmul(x, s.tokens, weights, compute);
      }
      {
        KernelScope scope(GetParam(), 2);
        two = run_matmul(x, s.tokens, weights, compute);
      }
      EXPECT_TRUE(same_bits(one, two)) << shape_name(s) << " compute mode " << static_cast<int>(compute);
    }
  }
}

// T = 300 spans two blocks of packed token rows (256 + 44).
TEST_P(VerifyKernelsPerIsa, MatmulRowDoesNotDependOnTheTokenCount) {
  const GemmShape s{300, 352, 200};
  const auto x = normal_floats(static_cast<size_t>(s.tokens * s.k_in), 13);
  const auto w = encode_weights(DType::kBF16, normal_floats(static_cast<size_t>(s.n_out * s.k_in), 14));
  const DenseWeights weights(DType::kBF16, w.bytes.data(), s.n_out, s.k_in);
  KernelScope scope(GetParam(), 2);
  for (MatmulCompute compute : {MatmulCompute::kF32, MatmulCompute::kBF16}) {
    const auto all = run_matmul(x, s.tokens, weights, compute);
    for (int64_t t : {0, 17, 255, 256, 299}) {
      const std::vector<float> row_x(x.begin() + t * s.k_in, x.begin() + (t + 1) * s.k_in);
      const std::vector<float> row_all(all.begin() + t * s.n_out, all.begin() + (t + 1) * s.n_out);
      EXPECT_TRUE(same_bits(run_matmul(row_x, 1, weights, compute), row_all)) << "token " << t;
    }
  }
}

TEST(VerifyKernelsSimd, MatmulGenericAndAvx512Agree) {
  if (!cpu_supports(CpuIsa::kAvx512)) GTEST_SKIP() << "no AVX-512";
  for (const GemmShape& s : kGemmShapes) {
    const auto x = normal_floats(static_cast<size_t>(s.tokens * s.k_in), 15);
    const auto w = encode_weights(DType::kBF16, normal_floats(static_cast<size_t>(s.n_out * s.k_in), 16));
    const DenseWeights weights(DType::kBF16, w.bytes.data(), s.n_out, s.k_in);
    std::vector<float> generic[2], simd[2];
    for (int mode = 0; mode < 2; ++mode) {
      const auto compute = mode == 0 ? MatmulCompute::kF32 : MatmulCompute::kBF16;
      {
        KernelScope scope(CpuIsa::kGeneric, 2);
        generic[mode] = run_matmul(x, s.tokens, weights, compute);
      }
      {
        KernelScope scope(CpuIsa::kAvx512, 2);
        simd[mode] = run_matmul(x, s.tokens, weights, compute);
      }
    }
    // f32: FMA vs multiply-then-add, within the bound (in ulps of Σ|x·w|) of generic_vs_simd_bound.
    Reference between;
    between.y.assign(generic[0].begin(), generic[0].end());
    between.magnitude = reference_matmul(x, w.values, s.tokens, s.k_in, s.n_out).magnitude;
    expect_within(simd[0], between, generic_vs_simd_bound(s.k_in), shape_name(s) + " f32 generic vs avx512");
    EXPECT_FALSE(same_bits(generic[0], simd[0]) && s.k_in > 1)
        << "FMA and separate roundings should differ somewhere (else the two paths are not both being run)";
    // bf16 mode: the products are exact, the order is the same: identical bits (no denormals in this data).
    if (cpu_supports_bf16_dot()) {
      EXPECT_TRUE(same_bits(generic[1], simd[1])) << shape_name(s) << " bf16 mode";
    }
  }
}

// ---- dense row decoders ------------------------------------------------------------------------------------------

// Decodes every code of `dtype` (a row of all 2^bits patterns) with both families, in f32 and bf16, and checks them
// against formats/float_convert.h bit for bit (NaN: any NaN).
void check_decoder_on_every_code(DType dtype) {
  const int bits = dtype_info(dtype).bits;
  const int64_t codes = int64_t{1} << bits;
  std::vector<uint8_t> bytes(static_cast<size_t>(codes * bits / 8));
  for (int64_t c = 0; c < codes; ++c) {
    if (bits == 8)
      bytes[static_cast<size_t>(c)] = static_cast<uint8_t>(c);
    else
      std::memcpy(&bytes[static_cast<size_t>(2 * c)], &c, 2);  // little-endian 16-bit code
  }
  std::vector<float> expected(static_cast<size_t>(codes));
  convert_to_f32(dtype, bytes.data(), expected.data(), expected.size());
  const DenseWeights row(dtype, bytes.data(), 1, codes);
  for (CpuIsa isa : {CpuIsa::kGeneric, CpuIsa::kAvx512}) {
    if (!cpu_supports(isa)) continue;
    KernelScope scope(isa, 1);
    // An unaligned, odd-length range too, to exercise the masked tails.
    for (auto [begin, end] : {std::pair<int64_t, int64_t>{0, codes}, {3, codes - 2}}) {
      std::vector<float> f32(static_cast<size_t>(end - begin));
      std::vector<uint16_t> bf16(f32.size());
      row.decode_f32(0, 1, begin, end, f32.data(), end - begin);
      row.decode_bf16(0, 1, begin, end, bf16.data(), end - begin);
      int mismatches = 0;
      for (int64_t i = 0; i < end - begin; ++i) {
        const float want = expected[static_cast<size_t>(begin + i)];
        const float got = f32[static_cast<size_t>(i)];
        const float got_bf16 = bf16_to_f32(bf16[static_cast<size_t>(i)]);
        const float want_bf16 = bf16_to_f32(f32_to_bf16(want));
        const bool f32_ok =
            std::isnan(want) ? std::isnan(got) : std::bit_cast<uint32_t>(got) == std::bit_cast<uint32_t>(want);
        const bool bf16_ok = std::isnan(want) ? std::isnan(got_bf16)
                                              : std::bit_cast<uint32_t>(got_bf16) == std::bit_cast<uint32_t>(want_bf16);
        if ((!f32_ok || !bf16_ok) && ++mismatches <= 5) {
          ADD_FAILURE() << dtype_name(dtype) << " " << cpu_isa_name(isa) << " code " << begin + i << ": f32 " << got
                        << " (want " << want << "), bf16 " << got_bf16 << " (want " << want_bf16 << ")";
        }
      }
      EXPECT_EQ(mismatches, 0) << dtype_name(dtype) << " " << cpu_isa_name(isa);
    }
  }
}

TEST(VerifyKernelsDecoders, EveryCodeOfEveryDtypeDecodesExactly) {
  for (DType dtype :
       {DType::kBF16, DType::kF16, DType::kF8_E4M3, DType::kF8_E5M2, DType::kF8_E4M3FNUZ, DType::kF8_E5M2FNUZ}) {
    check_decoder_on_every_code(dtype);
  }
}

TEST(VerifyKernelsDecoders, F32RowsRoundToBf16AsTheScalarCodec) {
  auto values = normal_floats(4099, 17, 3.0f);
  // Specials and rounding ties: ±0, ±inf, NaN, a subnormal, exact bf16 midpoints with even and odd neighbours.
  const float specials[] = {0.0f,
                            -0.0f,
                            INFINITY,
                            -INFINITY,
                            NAN,
                            1e-40f,
                            std::bit_cast<float>(0x3f808000u),
                            std::bit_cast<float>(0x3f818000u),
                            std::bit_cast<float>(0x7f7fffffu)};
  std::copy(std::begin(specials), std::end(specials), values.begin());
  const DenseWeights row(DType::kF32, values.data(), 1, static_cast<int64_t>(values.size()));
  for (CpuIsa isa : {CpuIsa::kGeneric, CpuIsa::kAvx512}) {
    if (!cpu_supports(isa)) continue;
    KernelScope scope(isa, 1);
    std::vector<uint16_t> bf16(values.size());
    row.decode_bf16(0, 1, 0, static_cast<int64_t>(values.size()), bf16.data(), 0);
    for (size_t i = 0; i < values.size(); ++i) {
      ASSERT_EQ(bf16[i], f32_to_bf16(values[i])) << cpu_isa_name(isa) << " value " << values[i] << " at " << i;
    }
  }
}

TEST(VerifyKernelsDecoders, DenseWeightsRejectWhatTheyCannotDecode) {
  const std::vector<float> data(16);
  EXPECT_THROW(DenseWeights(DType::kI32, data.data(), 4, 4), UnsupportedError);
  EXPECT_THROW(DenseWeights(DType::kF32, data.data(), 2, 4, 8), UsageError) << "row stride shorter than a row";
  const TensorView not_2d = TensorView::contiguous(DType::kF32, {16}, Storage::owned(std::vector<std::byte>(64)));
  EXPECT_THROW(DenseWeights::from_view(not_2d), UnsupportedError);
  const TensorView matrix = TensorView::contiguous(DType::kF32, {4, 4}, Storage::owned(std::vector<std::byte>(64)));
  const DenseWeights w = DenseWeights::from_view(matrix);
  EXPECT_EQ(w.rows(), 4);
  EXPECT_EQ(w.cols(), 4);
  EXPECT_EQ(w.describe(), "F32 [4, 4]");
}

// ---- ISA selection -----------------------------------------------------------------------------------------------

TEST(VerifyKernelsIsa, NamesRoundTripAndForcingIsReversible) {
  EXPECT_EQ(cpu_isa_from_name("GENERIC"), CpuIsa::kGeneric);
  EXPECT_EQ(cpu_isa_from_name("avx512"), CpuIsa::kAvx512);
  EXPECT_EQ(cpu_isa_from_name("avx2"), std::nullopt);
  EXPECT_TRUE(cpu_supports(CpuIsa::kGeneric));
  {
    KernelScope scope(CpuIsa::kGeneric, 1);
    EXPECT_EQ(active_cpu_isa(), CpuIsa::kGeneric);
  }
  if (cpu_supports(CpuIsa::kAvx512) && std::getenv("HXFORGE_FORCE_ISA") == nullptr) {
    EXPECT_EQ(active_cpu_isa(), CpuIsa::kAvx512) << "detection picks the best family once forcing is lifted";
  }
  if (!cpu_supports(CpuIsa::kAvx512)) {
    EXPECT_THROW(force_cpu_isa(CpuIsa::kAvx512), UnsupportedError);
  }
}

// Run in a child process by the next test, with HXFORGE_FORCE_ISA set.
TEST(VerifyKernelsIsa, ChildReportsTheEnvironmentChoice) {
  const char* forced = std::getenv("HXFORGE_FORCE_ISA");
  if (forced == nullptr)
    GTEST_SKIP() << "only meaningful with HXFORGE_FORCE_ISA set (see EnvironmentVariableForcesFamily)";
  EXPECT_EQ(std::string(cpu_isa_name(active_cpu_isa())), forced);
}

TEST(VerifyKernelsIsa, EnvironmentVariableForcesFamily) {
  const std::string self = std::filesystem::read_symlink("/proc/self/exe").string();
  const std::string child =
      test::shell_quote(self) + " --gtest_filter=VerifyKernelsIsa.ChildReportsTheEnvironmentChoice";
  const auto generic = test::run_command("HXFORGE_FORCE_ISA=generic " + child);
  EXPECT_EQ(generic.exit_code, 0) << generic.output;
  EXPECT_NE(generic.output.find("[  PASSED  ] 1 test"), std::string::npos) << generic.output;
  const auto bogus = test::run_command("HXFORGE_FORCE_ISA=avx3 " + child);
  EXPECT_NE(bogus.exit_code, 0) << "an unknown family must be an error, not a silent fallback";
  EXPECT_NE(bogus.output.find("HXFORGE_FORCE_ISA=avx3 is not one of"), std::string::npos) << bogus.output;
}

// ---- PyTorch references ------------------------------------------------------------------------------------------

// One exchange with tests/python/verify_kernels_reference.py through a temporary folder.
class TorchReference {
 public:
  explicit TorchReference(nlohmann::json params) : params_(std::move(params)) {}
  void put(const std::string& name, const std::vector<float>& values) { write(name, values.data(), values.size() * 4); }
  // Runs OP; false (with the reason in output()) when the script fails.
  bool run(const std::string& op) {
    std::ofstream(dir_.file("params.json")) << params_.dump();
    const auto result = test::run_command(std::string(HXFORGE_PYTHON) + " " +
                                          test::shell_quote(test::tests_dir() + "/python/verify_kernels_reference.py") +
                                          " " + op + " " + test::shell_quote(dir_.path()));
    output_ = result.output;
    return result.exit_code == 0;
  }
  const std::string& output() const { return output_; }
  std::vector<float> get(const std::string& name) const { return read<float>(name); }
  std::vector<double> get_f64(const std::string& name) const { return read<double>(name); }

 private:
  void write(const std::string& name, const void* data, size_t bytes) {
    std::ofstream(dir_.file(name + ".bin"), std::ios::binary)
        .write(static_cast<const char*>(data), static_cast<std::streamsize>(bytes));
  }
  template <typename T>
  std::vector<T> read(const std::string& name) const {
    const auto bytes = test::read_file_bytes(dir_.file(name + ".bin"));
    std::vector<T> out(bytes.size() / sizeof(T));
    std::memcpy(out.data(), bytes.data(), out.size() * sizeof(T));
    return out;
  }

  test::TempDir dir_;
  nlohmann::json params_;
  std::string output_;
};

#define REQUIRE_TORCH()                                                                                \
  do {                                                                                                 \
    if (!test::python_torch_available()) GTEST_SKIP() << "torch is not importable by " HXFORGE_PYTHON; \
  } while (0)

struct RmsNormCase {
  const char* name;
  RmsNormStyle style;
  DType activation;
  bool weighted;
  float eps;
};

TEST(VerifyKernelsTorch, RmsNormGemmaAndLlamaInF32AndBf16) {
  REQUIRE_TORCH();
  const int64_t rows = 24, dim = 96;
  const RmsNormCase cases[] = {
      {"gemma f32", RmsNormStyle::kGemma, DType::kF32, true, 1e-6f},
      {"gemma bf16", RmsNormStyle::kGemma, DType::kBF16, true, 1e-6f},
      {"gemma weightless (v_norm) bf16", RmsNormStyle::kGemma, DType::kBF16, false, 1e-6f},
      {"llama f32", RmsNormStyle::kLlama, DType::kF32, true, 1e-5f},
      {"llama bf16", RmsNormStyle::kLlama, DType::kBF16, true, 1e-5f},
  };
  for (const RmsNormCase& c : cases) {
    // Inputs already representable in the activation dtype, as they would be in that run; weights around 1 ± 0.5.
    const auto x = rounded_to(normal_floats(static_cast<size_t>(rows * dim), 20, 2.0f), c.activation);
    const auto w = rounded_to(normal_floats(static_cast<size_t>(dim), 21, 0.5f, 1.0f), c.activation);
    TorchReference torch({{"style", c.style == RmsNormStyle::kGemma ? "gemma" : "llama"},
                          {"dtype", c.activation == DType::kF32 ? "float32" : "bfloat16"},
                          {"rows", rows},
                          {"dim", dim},
                          {"eps", c.eps},
                          {"weighted", c.weighted}});
    torch.put("x", x);
    torch.put("w", w);
    ASSERT_TRUE(torch.run("rms_norm")) << torch.output();
    const auto expected = torch.get("y");

    std::vector<float> y(x.size());
    rms_norm(x.data(), y.data(), rows, dim,
             RmsNormParams{c.style, c.eps, c.weighted ? w.data() : nullptr, c.activation});
    ASSERT_EQ(expected.size(), y.size());
    int flipped = 0;
    for (size_t i = 0; i < y.size(); ++i) {
      if (c.activation == DType::kF32) {
        ASSERT_NEAR(y[i], expected[i], kRmsNormF32Rel * std::fabs(expected[i])) << c.name << " at " << i;
      } else {
        ASSERT_LE(bf16_ulp_distance(y[i], expected[i]), kRmsNormBf16MaxUlps)
            << c.name << " at " << i << ": " << y[i] << " vs " << expected[i];
        flipped += y[i] != expected[i];
      }
    }
    EXPECT_LE(flipped, kMaxFlippedFraction * static_cast<double>(y.size())) << c.name;
  }
  // The two styles must really differ in bf16 (rounding before vs after the weight), or the test would not tell.
  const auto x = rounded_to(normal_floats(static_cast<size_t>(rows * dim), 20, 2.0f), DType::kBF16);
  const auto w = rounded_to(normal_floats(static_cast<size_t>(dim), 21, 0.5f, 1.0f), DType::kBF16);
  std::vector<float> gemma(x.size()), llama(x.size());
  rms_norm(x.data(), gemma.data(), rows, dim, RmsNormParams{RmsNormStyle::kGemma, 1e-6f, w.data(), DType::kBF16});
  rms_norm(x.data(), llama.data(), rows, dim, RmsNormParams{RmsNormStyle::kLlama, 1e-6f, w.data(), DType::kBF16});
  EXPECT_FALSE(same_bits(gemma, llama));
}

struct RopeCase {
  const char* name;
  RopeParams params;
  DType activation;
};

TEST(VerifyKernelsTorch, RopeDefaultAndProportional) {
  REQUIRE_TORCH();
  const int64_t heads = 3;
  const std::vector<int64_t> positions = {0, 1, 2, 5, 17, 63, 100, 511};
  const RopeCase cases[] = {
      {"default f32", {RopeType::kDefault, 10000.0, 64, 1.0}, DType::kF32},
      {"default theta 8e6 d 96 f32", {RopeType::kDefault, 8e6, 96, 1.0}, DType::kF32},
      {"proportional 0.25 f32", {RopeType::kProportional, 1e6, 64, 0.25}, DType::kF32},
      {"proportional 0.25 bf16", {RopeType::kProportional, 1e6, 64, 0.25}, DType::kBF16},
      {"default bf16", {RopeType::kDefault, 10000.0, 64, 1.0}, DType::kBF16},
  };
  for (const RopeCase& c : cases) {
    const int64_t d = c.params.head_dim;
    const auto x = rounded_to(normal_floats(static_cast<size_t>(positions.size()) * heads * d, 30), c.activation);
    TorchReference torch({{"type", c.params.type == RopeType::kDefault ? "default" : "proportional"},
                          {"theta", c.params.theta},
                          {"head_dim", d},
                          {"partial_rotary_factor", c.params.partial_rotary_factor},
                          {"positions", positions},
                          {"heads", heads},
                          {"dtype", c.activation == DType::kF32 ? "float32" : "bfloat16"}});
    torch.put("x", x);
    ASSERT_TRUE(torch.run("rope")) << torch.output();

    const auto inv_freq = rope_inv_freq(c.params);
    const auto torch_inv_freq = torch.get("inv_freq");
    ASSERT_EQ(inv_freq.size(), torch_inv_freq.size()) << c.name;
    for (size_t i = 0; i < inv_freq.size(); ++i) {
      EXPECT_LE(ulp_distance(inv_freq[i], torch_inv_freq[i]), kInvFreqMaxUlps) << c.name << " inv_freq[" << i << "]";
      if (c.params.type == RopeType::kProportional &&
          i >= static_cast<size_t>(c.params.partial_rotary_factor * d / 2)) {
        EXPECT_EQ(inv_freq[i], 0.0f) << c.name << ": pairs beyond the rotated fraction must not rotate";
      }
    }
    // With torch's own inv_freq the table and the rotation are compared without the pow difference.
    const RopeTable table = rope_table(torch_inv_freq, positions, c.activation);
    const auto cos = torch.get("cos"), sin = torch.get("sin");
    ASSERT_EQ(table.cos.size(), cos.size());
    for (size_t i = 0; i < cos.size(); ++i) {
      if (c.activation == DType::kF32) {
        ASSERT_NEAR(table.cos[i], cos[i], kCosSinAbs) << c.name << " cos at " << i;
        ASSERT_NEAR(table.sin[i], sin[i], kCosSinAbs) << c.name << " sin at " << i;
      } else {  // a bf16 rounding of values that differ by ≤ 2^-24 can flip by one bf16 ulp
        ASSERT_LE(bf16_ulp_distance(table.cos[i], cos[i]), 1) << c.name << " cos at " << i;
        ASSERT_LE(bf16_ulp_distance(table.sin[i], sin[i]), 1) << c.name << " sin at " << i;
      }
    }
    // Apply with torch's cos/sin so the rotation itself is compared.
    RopeTable torch_table{d, cos, sin};
    auto y = x;
    apply_rope(y.data(), static_cast<int64_t>(positions.size()), heads, torch_table, c.activation);
    const auto expected = torch.get("y");
    for (size_t row = 0; row < y.size() / static_cast<size_t>(d); ++row) {
      for (int64_t i = 0; i < d; ++i) {
        const size_t at = row * static_cast<size_t>(d) + static_cast<size_t>(i);
        const size_t partner = row * static_cast<size_t>(d) + static_cast<size_t>((i + d / 2) % d);
        if (c.activation == DType::kF32) {
          ASSERT_NEAR(y[at], expected[at], kRopeRel * (std::fabs(x[at]) + std::fabs(x[partner])))
              << c.name << " at " << at;
        } else {  // same bf16 operations in the same order: identical
          ASSERT_EQ(y[at], expected[at]) << c.name << " at " << at;
        }
      }
    }
  }
}

TEST(VerifyKernelsRope, ProportionalRotatesOnlyTheFirstPairsAndBadKindsAreRefused) {
  // Gemma-4 E2B full layers: d = 512, partial 0.25 → 64 rotating pairs with denominator 512 (not 128).
  const auto inv_freq = rope_inv_freq({RopeType::kProportional, 1e6, 512, 0.25});
  ASSERT_EQ(inv_freq.size(), 256u);
  EXPECT_FLOAT_EQ(inv_freq[1], 1.0f / std::pow(1e6f, 2.0f / 512.0f));
  EXPECT_GT(inv_freq[63], 0.0f);
  EXPECT_EQ(inv_freq[64], 0.0f);
  EXPECT_EQ(inv_freq[255], 0.0f);
  // Non-rotating pairs pass through exactly (cos 1, sin 0), also in bf16.
  const int64_t position = 1000;
  const RopeTable table = rope_table(inv_freq, std::span(&position, 1), DType::kBF16);
  auto x = rounded_to(normal_floats(512, 31), DType::kBF16);
  const auto before = x;
  apply_rope(x.data(), 1, 1, table, DType::kBF16);
  for (int64_t i = 64; i < 256; ++i) {
    EXPECT_EQ(x[static_cast<size_t>(i)], before[static_cast<size_t>(i)]) << i;
    EXPECT_EQ(x[static_cast<size_t>(i + 256)], before[static_cast<size_t>(i + 256)]) << i + 256;
  }
  EXPECT_NE(x[0], before[0]);
  EXPECT_THROW(rope_inv_freq({RopeType::kNone, 1e4, 64, 1.0}), UnsupportedError);
  EXPECT_THROW(rope_inv_freq({RopeType::kDefault, 1e4, 64, 0.5}), UnsupportedError);
  EXPECT_THROW(rope_inv_freq({RopeType::kDefault, 1e4, 63, 1.0}), UsageError);
}

struct AttentionCase {
  const char* name;
  AttentionParams params;
  int64_t tokens, cache_len;
};

TEST(VerifyKernelsTorch, WindowedCausalGqaAttention) {
  REQUIRE_TORCH();
  const AttentionCase cases[] = {
      {"gqa 4/2 window 5 scale 1/sqrt(d), past 7", {4, 2, 32, 1.0f / std::sqrt(32.0f), 5, DType::kF32}, 6, 13},
      {"mqa 4/1 no window scale 1 (Gemma), prefill", {4, 1, 32, 1.0f, 0, DType::kF32}, 11, 11},
      {"gqa 6/3 window 4, decode one token", {6, 3, 16, 0.25f, 4, DType::kF32}, 1, 9},
      {"bf16 gqa 4/2 window 5", {4, 2, 32, 1.0f / std::sqrt(32.0f), 5, DType::kBF16}, 6, 13},
  };
  for (const AttentionCase& c : cases) {
    const AttentionParams& p = c.params;
    const DType act = p.activation;
    // Gemma's q/k are RMS-normalised: unit-scale entries keep scores O(1)·sqrt(d) · scale.
    const auto q = rounded_to(normal_floats(static_cast<size_t>(c.tokens * p.q_heads * p.head_dim), 40, 0.4f), act);
    const auto k = rounded_to(normal_floats(static_cast<size_t>(c.cache_len * p.kv_heads * p.head_dim), 41, 0.4f), act);
    const auto v =
        rounded_to(uniform_floats(static_cast<size_t>(c.cache_len * p.kv_heads * p.head_dim), 42, -4, 4), act);
    TorchReference torch({{"q_heads", p.q_heads},
                          {"kv_heads", p.kv_heads},
                          {"head_dim", p.head_dim},
                          {"scale", p.scale},
                          {"window", p.sliding_window},
                          {"tokens", c.tokens},
                          {"cache_len", c.cache_len},
                          {"dtype", act == DType::kF32 ? "float64" : "bfloat16"}});
    torch.put("q", q);
    torch.put("k", k);
    torch.put("v", v);
    ASSERT_TRUE(torch.run("attention")) << torch.output();
    std::vector<float> out(q.size(), NAN);
    causal_attention(p, q.data(), c.tokens, k.data(), v.data(), c.cache_len, out.data());
    if (act == DType::kF32) {
      const auto expected = torch.get_f64("out_f64");
      ASSERT_EQ(expected.size(), out.size());
      for (size_t i = 0; i < out.size(); ++i)
        ASSERT_NEAR(out[i], expected[i], kAttentionF32Abs) << c.name << " at " << i;
    } else {
      const auto expected = torch.get("out");
      ASSERT_EQ(expected.size(), out.size());
      for (size_t i = 0; i < out.size(); ++i)
        ASSERT_NEAR(out[i], expected[i], kAttentionBf16Abs) << c.name << " at " << i;
    }
  }
}

TEST(VerifyKernelsTorch, ActivationsAndGluCombine) {
  REQUIRE_TORCH();
  const int64_t n = 4096;
  auto x = normal_floats(static_cast<size_t>(n), 50, 4.0f);
  x[0] = 25.0f;   // softplus threshold: returns x
  x[1] = -90.0f;  // exp(-x) overflows: silu → -0, sigmoid → 0
  x[2] = 0.0f;
  const auto up = normal_floats(static_cast<size_t>(n), 51);
  const float cap = 30.0f;
  TorchReference torch({{"n", n}, {"cap", cap}});
  torch.put("x", x);
  torch.put("up", up);
  ASSERT_TRUE(torch.run("activations")) << torch.output();
  const auto check = [&](const std::string& name, const std::vector<float>& got) {
    const auto expected = torch.get(name);
    ASSERT_EQ(expected.size(), got.size()) << name;
    const bool gelu_based = name == "gelu_tanh" || name == "geglu";
    for (size_t i = 0; i < got.size(); ++i) {
      const double cancellation =
          gelu_based ? kGeluCancellation * std::fabs(x[i]) * (name == "geglu" ? std::fabs(up[i]) : 1.0) : 0.0;
      ASSERT_NEAR(got[i], expected[i], kActivationRel * std::fabs(expected[i]) + kActivationAbs + cancellation)
          << name << "(" << x[i] << ")";
    }
  };
  std::vector<float> gelu(x.size()), sil(x.size()), sig(x.size()), soft(x.size()), capped = x;
  std::transform(x.begin(), x.end(), gelu.begin(), gelu_tanh);
  std::transform(x.begin(), x.end(), sil.begin(), silu);
  std::transform(x.begin(), x.end(), sig.begin(), sigmoid);
  std::transform(x.begin(), x.end(), soft.begin(), softplus);
  softcap(capped, cap);
  check("gelu_tanh", gelu);
  check("silu", sil);
  check("sigmoid", sig);
  check("softplus", soft);
  check("softcap", capped);
  std::vector<float> swiglu(x.size()), geglu(x.size());
  glu(GluActivation::kSilu, x.data(), up.data(), swiglu.data(), n);
  glu(GluActivation::kGeluTanh, x.data(), up.data(), geglu.data(), n);
  check("swiglu", swiglu);
  check("geglu", geglu);
}

// Inputs of the recurrence in the ranges a real layer produces them.
struct RwkvData {
  int64_t tokens, heads, n;
  std::vector<float> r, decay, k, v, kk, a, remove, replace, state;
};

RwkvData make_rwkv_data(int64_t tokens, int64_t heads, int64_t n) {
  RwkvData d{tokens, heads, n, {}, {}, {}, {}, {}, {}, {}, {}, {}};
  const size_t size = static_cast<size_t>(tokens * heads * n);
  d.r = normal_floats(size, 60, 0.5f);
  d.k = normal_floats(size, 61, 0.5f);
  d.v = normal_floats(size, 62);
  d.a = uniform_floats(size, 63, 0.05f, 0.95f);  // sigmoid output
  const auto z = normal_floats(size, 64, 2.0f, -1.0f);
  std::vector<float> omega(size);
  d.decay.resize(size);
  rwkv7_decay_from_logits(z.data(), omega.data(), d.decay.data(), static_cast<int64_t>(size));  // ∈ (0.545, 1)
  d.kk.resize(size);
  rwkv7_normalize_keys(d.k.data(), d.kk.data(), tokens * heads, n);
  d.remove.resize(size);
  d.replace.resize(size);
  rwkv7_removal_terms(d.kk.data(), d.a.data(), d.remove.data(), d.replace.data(), static_cast<int64_t>(size));
  d.state = normal_floats(static_cast<size_t>(heads * n * n), 65, 0.3f);
  return d;
}

Rwkv7Inputs rwkv_inputs(const RwkvData& d, int64_t first_token) {
  const int64_t offset = first_token * d.heads * d.n;
  return {d.r.data() + offset, d.decay.data() + offset,  d.k.data() + offset,
          d.v.data() + offset, d.remove.data() + offset, d.replace.data() + offset};
}

TEST(VerifyKernelsTorch, Rwkv7RecurrenceMatchesAFloat64TokenLoop) {
  REQUIRE_TORCH();
  const RwkvData d = make_rwkv_data(24, 3, 32);
  TorchReference torch({{"tokens", d.tokens}, {"heads", d.heads}, {"head_dim", d.n}});
  for (auto [name, values] : {std::pair<const char*, const std::vector<float>*>{"r", &d.r},
                              {"decay", &d.decay},
                              {"k", &d.k},
                              {"v", &d.v},
                              {"kk", &d.kk},
                              {"a", &d.a},
                              {"state", &d.state}}) {
    torch.put(name, *values);
  }
  ASSERT_TRUE(torch.run("rwkv7")) << torch.output();
  const auto expected_y = torch.get_f64("y_f64");
  const auto expected_state = torch.get_f64("state_out_f64");

  auto state = d.state;
  std::vector<float> y(d.r.size(), NAN);
  rwkv7_recurrence(rwkv_inputs(d, 0), d.tokens, d.heads, d.n, state.data(), y.data());
  ASSERT_EQ(expected_y.size(), y.size());
  double state_scale = 0;
  for (double s : expected_state) state_scale = std::max(state_scale, std::fabs(s));
  for (int64_t t = 0; t < d.tokens; ++t) {
    for (int64_t h = 0; h < d.heads; ++h) {
      double r_magnitude = 0;
      for (int64_t i = 0; i < d.n; ++i) r_magnitude += std::fabs(d.r[static_cast<size_t>((t * d.heads + h) * d.n + i)]);
      for (int64_t j = 0; j < d.n; ++j) {
        const size_t at = static_cast<size_t>((t * d.heads + h) * d.n + j);
        ASSERT_NEAR(y[at], expected_y[at], kRwkvRel * r_magnitude * state_scale)
            << "token " << t << " head " << h << " j " << j;
      }
    }
  }
  for (size_t i = 0; i < state.size(); ++i)
    ASSERT_NEAR(state[i], expected_state[i], kRwkvRel * state_scale) << "state " << i;
}

TEST(VerifyKernelsTorch, Rwkv7PiecesAroundTheRecurrence) {
  REQUIRE_TORCH();
  const int64_t tokens = 5, heads = 4, n = 32;
  const size_t size = static_cast<size_t>(tokens * heads * n);
  const auto z = normal_floats(size, 70, 3.0f);
  const auto k = normal_floats(size, 71);
  const auto a = uniform_floats(size, 72, 0.0f, 1.0f);
  const auto r = normal_floats(size, 73);
  const auto v = normal_floats(size, 74);
  const auto y = normal_floats(size, 75);
  const auto bonus = normal_floats(static_cast<size_t>(heads * n), 76, 0.1f);
  TorchReference torch({{"tokens", tokens}, {"heads", heads}, {"head_dim", n}});
  for (auto [name, values] : {std::pair<const char*, const std::vector<float>*>{"z", &z},
                              {"k", &k},
                              {"a", &a},
                              {"r", &r},
                              {"v", &v},
                              {"y", &y},
                              {"bonus", &bonus}}) {
    torch.put(name, *values);
  }
  ASSERT_TRUE(torch.run("rwkv7_pieces")) << torch.output();
  const auto close = [&](const std::string& name, const std::vector<float>& got, double floor) {
    const auto expected = torch.get(name);
    ASSERT_EQ(expected.size(), got.size()) << name;
    for (size_t i = 0; i < got.size(); ++i) {
      ASSERT_NEAR(got[i], expected[i], kRwkvPiecesRel * std::fabs(expected[i]) + floor) << name << " at " << i;
    }
  };
  std::vector<float> omega(size), decay(size), kk(size), out(size);
  rwkv7_decay_from_logits(z.data(), omega.data(), decay.data(), static_cast<int64_t>(size));
  close("omega", omega, 0);
  close("decay", decay, 0);
  rwkv7_normalize_keys(k.data(), kk.data(), tokens * heads, n);
  close("kk", kk, 0);
  auto k_scaled = k;
  rwkv7_scale_keys(k_scaled.data(), omega.data(), a.data(), static_cast<int64_t>(size));
  close("k_scaled", k_scaled, 0);
  rwkv7_output(y.data(), r.data(), k.data(), v.data(), bonus.data(), 1.0f / std::sqrt(static_cast<float>(n)), tokens,
               heads, n, out.data());
  close("out", out, kRwkvBonusAbs);
}

// ---- determinism of the small ops ----------------------------------------------------------------------------------

TEST_P(VerifyKernelsPerIsa, SmallOpsAreBitIdenticalForOneAndTwoThreads) {
  const RwkvData d = make_rwkv_data(9, 4, 32);
  const AttentionParams attention{8, 2, 32, 0.2f, 6, DType::kF32};
  const int64_t tokens = 40, cache = 52;
  const auto q = normal_floats(static_cast<size_t>(tokens * 8 * 32), 80);
  const auto k = normal_floats(static_cast<size_t>(cache * 2 * 32), 81);
  const auto v = normal_floats(static_cast<size_t>(cache * 2 * 32), 82);
  const auto x = normal_floats(static_cast<size_t>(300 * 64), 83);
  const auto w = normal_floats(64, 84);
  std::vector<float> results[2][4];
  for (int threads : {1, 2}) {
    KernelScope scope(GetParam(), threads);
    auto& r = results[threads - 1];
    r[0].resize(q.size());
    causal_attention(attention, q.data(), tokens, k.data(), v.data(), cache, r[0].data());
    r[1] = d.state;
    r[2].resize(d.r.size());
    rwkv7_recurrence(rwkv_inputs(d, 0), d.tokens, d.heads, d.n, r[1].data(), r[2].data());
    r[3].resize(x.size());
    rms_norm(x.data(), r[3].data(), 300, 64, RmsNormParams{RmsNormStyle::kGemma, 1e-6f, w.data(), DType::kF32});
  }
  for (int i = 0; i < 4; ++i) EXPECT_TRUE(same_bits(results[0][i], results[1][i])) << "result " << i;
}

TEST(VerifyKernelsRwkv, PrefillThenDecodeEqualsOneCallBitForBit) {
  const RwkvData d = make_rwkv_data(13, 4, 64);
  auto state_once = d.state;
  std::vector<float> y_once(d.r.size());
  rwkv7_recurrence(rwkv_inputs(d, 0), d.tokens, d.heads, d.n, state_once.data(), y_once.data());

  auto state = d.state;
  std::vector<float> y(d.r.size());
  const int64_t per_token = d.heads * d.n;
  rwkv7_recurrence(rwkv_inputs(d, 0), 8, d.heads, d.n, state.data(), y.data());  // prefill 8 tokens
  for (int64_t t = 8; t < d.tokens; ++t) {                                       // then one at a time
    rwkv7_recurrence(rwkv_inputs(d, t), 1, d.heads, d.n, state.data(), y.data() + t * per_token);
  }
  EXPECT_TRUE(same_bits(y, y_once));
  EXPECT_TRUE(same_bits(state, state_once));
  EXPECT_FALSE(same_bits(state, d.state)) << "the state must have moved";
}

TEST(VerifyKernelsAttention, SlidingWindowSeesExactlyTheLastWPositions) {
  // One head, d = 1, k = 0 (all scores equal), v = position: the output is the mean of the visible positions.
  const int64_t cache = 10, tokens = 4, window = 3;
  const std::vector<float> q(static_cast<size_t>(tokens), 1.0f), k(static_cast<size_t>(cache), 0.0f);
  std::vector<float> v(static_cast<size_t>(cache));
  for (int64_t j = 0; j < cache; ++j) v[static_cast<size_t>(j)] = static_cast<float>(j);
  std::vector<float> out(static_cast<size_t>(tokens));
  causal_attention(AttentionParams{1, 1, 1, 1.0f, window, DType::kF32}, q.data(), tokens, k.data(), v.data(), cache,
                   out.data());
  for (int64_t t = 0; t < tokens; ++t) {
    const int64_t p = cache - tokens + t;  // positions p-2, p-1, p
    EXPECT_FLOAT_EQ(out[static_cast<size_t>(t)], static_cast<float>(p - 1)) << "query at position " << p;
  }
  causal_attention(AttentionParams{1, 1, 1, 1.0f, 0, DType::kF32}, q.data(), tokens, k.data(), v.data(), cache,
                   out.data());
  for (int64_t t = 0; t < tokens; ++t) {
    const int64_t p = cache - tokens + t;  // positions 0..p
    EXPECT_FLOAT_EQ(out[static_cast<size_t>(t)], static_cast<float>(p) / 2.0f) << "query at position " << p;
  }
  EXPECT_THROW(
      causal_attention(AttentionParams{3, 2, 1, 1.0f, 0, DType::kF32}, q.data(), 1, k.data(), v.data(), 1, out.data()),
      UsageError)
      << "q heads must be a multiple of kv heads";
}


// Attention's prefill blocks (16 queries in vector lanes) and decode (one query) must compute each query alike, and
// the portable and AVX-512 kernels the same chains: a query's output may depend on nothing but its own inputs.
TEST(VerifyKernelsAttention, QueryOutputDoesNotDependOnTheBlockOrTheKernelFamily) {
  const struct {
    AttentionParams params;
    int64_t tokens, past;
  } cases[] = {
      {{8, 2, 64, 0.125f, 0, DType::kF32}, 37, 5},     // Llama-like GQA, full causal, 3 blocks
      {{4, 1, 40, 1.0f, 11, DType::kF32}, 29, 20},     // window, head_dim not a multiple of 16
      {{4, 2, 256, 1.0f, 0, DType::kBF16}, 18, 3},     // Gemma-sized heads, bf16 roundings
  };
  for (const auto& c : cases) {
    const AttentionParams& p = c.params;
    const int64_t cache = c.past + c.tokens, width = p.q_heads * p.head_dim;
    const auto q = normal_floats(static_cast<size_t>(c.tokens * width), 90, 0.5f);
    const auto k = normal_floats(static_cast<size_t>(cache * p.kv_heads * p.head_dim), 91, 0.5f);
    const auto v = normal_floats(static_cast<size_t>(cache * p.kv_heads * p.head_dim), 92);
    std::vector<std::vector<float>> results;
    for (CpuIsa isa : {CpuIsa::kGeneric, CpuIsa::kAvx512}) {
      if (!cpu_supports(isa)) continue;
      KernelScope scope(isa, 2);
      std::vector<float> whole(q.size(), NAN), stepwise(q.size(), NAN);
      causal_attention(p, q.data(), c.tokens, k.data(), v.data(), cache, whole.data());
      for (int64_t t = 0; t < c.tokens; ++t) {  // decode: one query over the cache up to its own position
        causal_attention(p, q.data() + t * width, 1, k.data(), v.data(), c.past + t + 1, stepwise.data() + t * width);
      }
      EXPECT_TRUE(same_bits(whole, stepwise)) << cpu_isa_name(isa) << " head_dim " << p.head_dim;
      results.push_back(whole);
    }
    if (results.size() == 2) {
      EXPECT_TRUE(same_bits(results[0], results[1])) << "generic vs avx512, head_dim " << p.head_dim;
    }
  }
}

// vector_exp.h against the correctly rounded exp (double exp, rounded once to f32).
constexpr int64_t kVectorExpMaxUlps = 2;  // the header's stated accuracy (measured 1 ulp; 2 leaves room for no-FMA)

TEST(VerifyKernelsVectorExp, WithinTwoUlpsAndSpecialValuesAsExpf) {
  int64_t worst = 0;
  float worst_x = 0.0f;
  const int64_t steps = 1 << 20;
  for (int64_t i = 0; i <= steps; i += vexp::kLanes) {
    vexp::F32x4 x;
    for (int l = 0; l < vexp::kLanes; ++l) {
      x[l] = -104.0f + 192.72f * static_cast<float>(std::min(i + l, steps)) / static_cast<float>(steps);
    }
    const vexp::F32x4 y = vexp::exp4(x);
    for (int l = 0; l < vexp::kLanes; ++l) {
      const float expected = static_cast<float>(std::exp(static_cast<double>(x[l])));
      const int64_t ulps = ulp_distance(y[l], expected);
      if (ulps > worst) {
        worst = ulps;
        worst_x = x[l];
      }
      ASSERT_EQ(std::bit_cast<uint32_t>(vexp::exp_scalar(x[l])), std::bit_cast<uint32_t>(y[l])) << "lane " << l;
    }
  }
  std::printf("  vector exp: worst %lld ulps at x = %.9g\n", static_cast<long long>(worst), worst_x);
  EXPECT_LE(worst, kVectorExpMaxUlps) << "at x = " << worst_x;
  EXPECT_EQ(vexp::exp_scalar(0.0f), 1.0f);
  EXPECT_EQ(vexp::exp_scalar(-INFINITY), 0.0f);
  EXPECT_EQ(vexp::exp_scalar(-200.0f), 0.0f);
  EXPECT_EQ(vexp::exp_scalar(INFINITY), INFINITY);
  EXPECT_EQ(vexp::exp_scalar(89.0f), INFINITY);
  EXPECT_TRUE(std::isnan(vexp::exp_scalar(NAN)));
  EXPECT_GT(vexp::exp_scalar(-100.0f), 0.0f) << "subnormal results are kept, not flushed";
}

// glu's vector SiLU paths (4 lanes portable, 16 lanes AVX-512) must give exactly silu(gate) · up, value by value
// (tails, huge gates and specials included).
TEST_P(VerifyKernelsPerIsa, GluSiluEqualsTheScalarComposition) {
  const int64_t n = 1001;  // not a multiple of either vector width
  auto gate = normal_floats(static_cast<size_t>(n), 93, 6.0f);
  const auto up = normal_floats(static_cast<size_t>(n), 94);
  const float specials[] = {0.0f, -0.0f, 95.0f, -95.0f, 200.0f, -200.0f, INFINITY, -INFINITY, 1e-30f, -88.5f};
  std::copy(std::begin(specials), std::end(specials), gate.begin() + 500);
  KernelScope scope(GetParam(), 1);
  std::vector<float> out(static_cast<size_t>(n));
  glu(GluActivation::kSilu, gate.data(), up.data(), out.data(), n);
  for (size_t i = 0; i < out.size(); ++i) {
    ASSERT_EQ(std::bit_cast<uint32_t>(out[i]), std::bit_cast<uint32_t>(silu(gate[i]) * up[i]))
        << "at " << i << ", gate " << gate[i];
  }
}

}  // namespace
}  // namespace hx
