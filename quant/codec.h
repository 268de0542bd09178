// What every quantization codec of hxforge shares: the scheme and layout names, the f32 view of a weight matrix the
// codecs read, per-tensor error statistics, and the few element operations (round half even, the minifloat row
// encoder) the row kernels are built from.
//
// Design goals:
//  * Each codec (int8.h, fp8.h, fpx.h, hqq.h) has a *scalar reference* written from the definition of its scheme,
//    one element or one group at a time with plain library calls (std::nearbyint, minifloat_encode_reference), and a
//    *fast path* — row kernels written as plain loops that the compiler vectorises, compiled twice (baseline ISA and
//    AVX-512 through a target attribute, chosen at run time by formats/cpu_isa.h's active_cpu_isa(), so
//    HXFORGE_FORCE_ISA=generic tests the other one) and run over rows with formats/parallel.h. Fast == reference, bit
//    for bit, on every code (tests walk all 256/64/32 codes and the rounding boundaries).
//  * Results never depend on the thread count: every row is computed independently and every sum over rows is
//    taken in row order after the parallel part.
//  * Weights are read where they lie (the mapped checkpoint), converted to f32 a row at a time: nothing
//    model-sized is ever held.
// Non-goals: quantizing activations; schemes other than the five below; calibration data (none of these needs it).
// quant/ headers include arch/ only in policy.h, and nothing of verify/ ever (quant sits below verify, which builds
// its quantized WeightMatrix from quantized_rows.h).
#pragma once

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "formats/dtype.h"
#include "formats/float_convert.h"
#include "formats/parallel.h"
#include "formats/tensor.h"

// Row kernels are plain C++ marked HX_QUANT_INLINE and called from two wrappers each: one compiled for the baseline
// ISA and one with HX_QUANT_AVX512, so each wrapper gets its own vectorised copy. hxforge_quant is built with
// -ffp-contract=off so that neither copy fuses a multiply and an add that the reference does not fuse.
#define HX_QUANT_INLINE [[gnu::always_inline]] inline
#define HX_QUANT_AVX512 __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq")))

namespace hx {

// Little-endian scalars at any address (scale and zero tensors of a safetensors file need not be aligned).
inline float load_f32(const std::byte* p) {
  float v;
  std::memcpy(&v, p, sizeof v);
  return v;
}
inline uint16_t load_u16(const std::byte* p) {
  uint16_t v;
  std::memcpy(&v, p, sizeof v);
  return v;
}

// ---- schemes and layouts ----------------------------------------------------------------------------------------

enum class QuantScheme : uint8_t {
  kInt8,  // symmetric int8, one scale per output row
  kFp8,   // float8 e4m3fn, one scale per output row (or per tensor)
  kFp6,   // torchao FP6 e3m2, one scale per output row
  kFp5,   // torchao FP5 e2m2, one scale per output row
  kInt4,  // HQQ asymmetric 4-bit, scale and zero per group of the input axis
};
inline constexpr QuantScheme kAllQuantSchemes[] = {QuantScheme::kInt8, QuantScheme::kFp8, QuantScheme::kFp6,
                                                   QuantScheme::kFp5, QuantScheme::kInt4};

std::string_view scheme_name(QuantScheme s);  // "int8", "fp8", "fp6", "fp5", "int4" (the `quantize --scheme` names)
std::optional<QuantScheme> scheme_from_name(std::string_view name);

// How the packed codes are laid out on disk (quantized_checkpoint.h has the byte-level description of each).
enum class QuantLayout : uint8_t {
  kPortable,   // row-major codes, whole rows packed independently; every scheme
  kTorchaoTc,  // FP6/FP5 only: torchao's FP6-LLM tensor-core bit planes (out % 64 == 0, in % 64 == 0)
  kGemlite,    // int4 only: int32 [in/8, out] words as RWKV-Infer feeds GemLite, scales/zeros [in/group, out] F16
};
std::string_view layout_name(QuantLayout l);  // "portable", "torchao-tc", "gemlite"
std::optional<QuantLayout> layout_from_name(std::string_view name);

// The smallest row (or tensor) absolute maximum a scale is computed from: torchao's `amax.clamp(min=1e-12)`, used
// by every per-row codec here, so an all-zero row gets a finite non-zero scale and all-zero codes instead of 0/0.
inline constexpr float kAmaxFloor = 1e-12f;

// ---- the f32 view of a weight matrix ----------------------------------------------------------------------------

// A [rows, cols] matrix of F32, BF16 or F16 values with contiguous rows, read as f32 (exact: all three widen
// exactly). `label` names it in error messages ("model.safetensors: tensor 'lm_head.weight'").
class FloatRows {
 public:
  FloatRows(DType dtype, const void* data, int64_t rows, int64_t cols, int64_t row_stride_bytes = 0,
            std::string label = "weight matrix");
  // A 2-D [out, in] view whose rows are contiguous; throws UnsupportedError for other dtypes or layouts.
  static FloatRows from_view(const TensorView& view, std::string label);

  DType dtype() const { return dtype_; }
  int64_t rows() const { return rows_; }
  int64_t cols() const { return cols_; }
  const std::string& label() const { return label_; }
  // Columns [col_begin, col_begin + n) of row r as f32.
  void read(int64_t r, int64_t col_begin, int64_t n, float* out) const;
  void read_row(int64_t r, float* out) const { read(r, 0, cols_, out); }
  // The stored bytes of row r (for kernels that read BF16 directly).
  const std::byte* row_bytes(int64_t r) const { return data_ + r * row_stride_; }

 private:
  DType dtype_;
  const std::byte* data_;
  int64_t rows_, cols_, row_stride_;
  std::string label_;
};

// The largest |x| of n values, exactly; throws FormatError naming `rows.label()`, the row and the column when a
// value is inf or NaN (no scheme can represent them, and one would poison the row's scale).
float finite_abs_max(const float* x, int64_t n, const FloatRows& rows, int64_t row);

// ---- error statistics -------------------------------------------------------------------------------------------

// Distortion of a reconstruction against the original weights, summed row by row and merged in row order (so the
// figures do not depend on the thread count). NMSE = Σ(ŵ-w)² / Σw² (ggml's nmse); SNR = -10·log10(NMSE).
struct ErrorStats {
  uint64_t count = 0;
  double sum_abs_error = 0;
  double sum_squared_error = 0;
  double sum_squared_reference = 0;
  double max_abs_error = 0;

  void merge(const ErrorStats& other);
  double mean_abs_error() const { return count ? sum_abs_error / static_cast<double>(count) : 0.0; }
  double nmse() const;    // 0 when both sums are 0; +inf when only the reference is all zero
  double snr_db() const;  // +inf for an exact reconstruction
};

// Statistics of one row: `reference` and `approx` hold n values each.
ErrorStats row_error(const float* reference, const float* approx, int64_t n);

// Runs row_fn(r, x, scratch) for every r in [row_begin, row_end) on the OpenMP team, where x holds row r of `w` as
// f32 and scratch has room for cols floats (both thread-local); merges the ErrorStats row_fn returns in row order.
template <typename RowFn>
ErrorStats for_each_row(const FloatRows& w, int64_t row_begin, int64_t row_end, RowFn&& row_fn) {
  std::vector<ErrorStats> per_row(static_cast<size_t>(std::max<int64_t>(row_end - row_begin, 0)));
  // Rows are cheap: thread only when a range holds at least ~256 K weights.
  const int64_t grain = std::max<int64_t>(1, (int64_t{1} << 18) / std::max<int64_t>(w.cols(), 1));
  parallel_for(row_begin, row_end, grain, [&](int64_t r) {
    thread_local std::vector<float> x, scratch;
    x.resize(static_cast<size_t>(w.cols()));
    scratch.resize(static_cast<size_t>(w.cols()));
    w.read_row(r, x.data());
    per_row[static_cast<size_t>(r - row_begin)] = row_fn(r, x.data(), scratch.data());
  });
  ErrorStats total;
  for (const ErrorStats& s : per_row) total.merge(s);
  return total;
}

// ---- element operations ------------------------------------------------------------------------------------------

// Round half to even, as torch.round and numpy.round do (the default FP rounding mode, kept by hxforge).
inline float round_half_even(float x) { return std::nearbyint(x); }
// The same for |x| < 2^22 without a rounding instruction (SSE2 has none): adding 1.5·2^23 leaves no fraction bits,
// so the FPU's round-to-nearest-even does the rounding, and subtracting it back is exact.
// (Also for GCC float vectors: the kernels of hqq.cc.)
template <typename F>
HX_QUANT_INLINE F round_half_even_small(F x) {
  constexpr float kMagic = 12582912.0f;  // 1.5 · 2^23
  return (x + kMagic) - kMagic;
}

// The row kernels' form of formats/float_convert's minifloat encoder, for inputs the caller has already clamped to
// [-max_finite, max_finite] and checked finite (every codec does both): the same bit arithmetic as
// minifloat_encode_fast without its special-value branches, so a loop over it vectorises. Also returns the value of
// the code (the rounded input), which the codecs need for their error statistics. Equal to
// minifloat_encode_reference on every such input (quant_codec_test walks every code and rounding boundary).
template <int kExpBits, int kManBits, int kBias>
struct ClampedMinifloat {
  static constexpr int kShift = 23 - kManBits;
  static constexpr uint32_t kMinNormalBits = static_cast<uint32_t>(1 - kBias + 127) << 23;
  static constexpr uint32_t kRebias = static_cast<uint32_t>(127 - kBias) << 23;
  // 2^(min normal exponent − man bits + 23): a float whose ulp is the format's subnormal quantum.
  static constexpr float kSubnormalMagic = std::bit_cast<float>(static_cast<uint32_t>(1 - kBias - kManBits + 23 + 127) << 23);

  // Code of x (|x| ≤ max finite, x finite), and the value it decodes to in *rounded.
  HX_QUANT_INLINE static uint32_t encode(float x, float* rounded) {
    const uint32_t u = std::bit_cast<uint32_t>(x);
    const uint32_t sign = u & 0x80000000u;
    const uint32_t a = u & 0x7fffffffu;
    // Subnormal range: the FPU's round-to-nearest-even of a + magic leaves the code in the low mantissa bits.
    const float sum = std::bit_cast<float>(a) + kSubnormalMagic;
    const uint32_t sub_code = std::bit_cast<uint32_t>(sum) - std::bit_cast<uint32_t>(kSubnormalMagic);
    const float sub_value = sum - kSubnormalMagic;  // exact
    // Normal range: rebias the exponent, round the mantissa half to even, truncate.
    uint32_t v = a - kRebias;
    v += (1u << (kShift - 1)) - 1 + ((v >> kShift) & 1u);
    const uint32_t normal_code = v >> kShift;
    const float normal_value = std::bit_cast<float>((normal_code << kShift) + kRebias);
    const bool subnormal = a < kMinNormalBits;
    const uint32_t magnitude = subnormal ? sub_code : normal_code;
    const float value = subnormal ? sub_value : normal_value;
    *rounded = std::bit_cast<float>(std::bit_cast<uint32_t>(value) | sign);
    return magnitude | (sign >> (31 - kExpBits - kManBits));  // the f32 sign bit moved to the code's
  }
};
using ClampedE4M3 = ClampedMinifloat<4, 3, 7>;   // kFormatE4M3FN
using ClampedE3M2 = ClampedMinifloat<3, 2, 3>;   // kFormatFP6E3M2
using ClampedE2M2 = ClampedMinifloat<2, 2, 1>;   // kFormatFP5E2M2

// True when the AVX-512 compilation of the row kernels is to be used (formats/cpu_isa.h's active ISA).
bool quant_use_avx512();

}  // namespace hx
