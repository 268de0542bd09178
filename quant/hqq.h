// int4 HQQ: asymmetric 4-bit with a scale and a zero per group of the input axis, the zero refined by HQQ's
// half-quadratic proximal solver (mobiusml/hqq e0b1d00, the CPU float32 path; RWKV-Infer's hqq4 with axis=1).
//
// Definition, per group g = r·(in/G) + k covering W[r][kG, (k+1)G) (G = group size, 64 by default):
//   denom  = max − min                                   (f32)
//   s'     = reciprocal(denom) · 15                       (torch evaluates 15/denom so: two roundings)
//            1 when |denom| ≤ 1e-4, then min(s', 2e4)
//   z0     = round_half_even(−min · s')                   (round_zero=True)
//   solver (optimize=True): p = 0.7, β = 10, κ = 1.01, at most 20 iterations over the whole tensor:
//     W_q = clamp(round(W·s' + z), 0, 15);  W_r = (W_q − z) / s';  W_e = sign(d)·relu(|d| − |d|^(p−1)/β), d = W − W_r
//     z  ← mean over the group of (W_q − (W − W_e)·s');   β ← β·κ
//     err = mean over the tensor of |W − W_r| (before the update); stop at the first err that does not improve —
//     after its update (hqq's legacy solver updates before it tests, and returns that zero)
//   codes  q = clamp(round_half_even(W·s' + z), 0, 15);  stored scale s = 1 / s' (f32 reciprocal), zero z (f32)
//   Ŵ      = (q − z) · s                                  (f32; hqq's Quantizer.dequantize on the uncast meta)
// Float32 details hxforge fixes where torch leaves them open (so that reference and fast path agree bit for bit):
//  * |d|^(p−1) is hqq_pow(), a float implementation within kHqqMaxPowUlp ulp of the exact power (torch uses Sleef's
//    1-ulp powf); a group mean sums 16 float lanes (element j into lane j % 16, in order) and folds the lanes in
//    double by a fixed tree; the stop test's error sums each row in 16 float lanes (lane = column % 16), folds them
//    the same way and adds the rows in double in row order. These move an optimised zero by a few float ulps
//    against hqq's own run (quant_hqq_test states the tolerance); the non-optimised path is exact.
//  * Speed without changing a bit (hqq.cc): W_r takes 16 values per group, so it is divided once per group and
//    looked up by code; a group whose |d| all lie clearly below the shrink threshold skips pow (relu is 0 there);
//    BF16 rows are read directly by the solver instead of being converted again in every iteration.
//  * −0 is never stored: min, max and z0 are normalised to +0 (torch keeps whichever zero its reduction met first).
// Packed layouts (X.weight.scale / X.weight.zero are siblings of X.weight):
//  * portable — X.weight U8 [out, in/2]: byte r·in/2 + j holds code (r, 2j) in bits 0-3 (low nibble) and code
//    (r, 2j+1) in bits 4-7; scale and zero F32 [out, in/G], row-major (group k of row r at r·in/G + k).
//  * gemlite — what RWKV-Infer hands GemLite (W_group_mode 4, W = q·scale + zero'): X.weight I32 [in/8, out], word
//    (j, r) = Σ_{i<8} q[r][8j+i] << 4i (8 nibbles along `in`, least significant first), little-endian; scale F16
//    [in/G, out] = f16(s) transposed; zero F16 [in/G, out] = f16(−z·s) transposed (an additive offset, not hqq's
//    zero); Ŵ = q·f32(scale) + f32(zero). Needs in % 32 == 0. The fp16 rounding of scale and offset makes this
//    layout slightly lossier than the portable one.
// Non-goals: other bit widths, axis=0 groups, hqq's scale grid search, quantized scales/zeros (hqq's quant_scale).
#pragma once

#include <cstdint>
#include <vector>

#include "quant/codec.h"

namespace hx {

inline constexpr int kHqqMaxCode = 15;
inline constexpr int kHqqDefaultGroupSize = 64;
inline constexpr int kHqqMaxPowUlp = 1;  // hqq_pow's largest error against the exact power, in float ulps
static_assert(2 * 4 == 8 && 8 * 4 == 32, "two int4 codes per byte, eight per int32 word");

struct HqqOptions {
  int group_size = kHqqDefaultGroupSize;
  bool optimize = true;
  int max_iterations = 20;
  double lp_norm = 0.7;
  double beta = 10.0;
  double kappa = 1.01;
};

// Group sizes whose groups never straddle a 128-column tile of the matrix product (verify/kernels.h): 32, 64, 128,
// 256.
bool hqq_group_size_ok(int group_size);

// The per-group parameters of one matrix, row-major [rows][cols / group_size].
struct HqqFit {
  int64_t rows = 0, cols = 0;
  int group_size = kHqqDefaultGroupSize;
  std::vector<float> multiplier;  // s' (what quantization multiplies by)
  std::vector<float> zero;        // z, after the solver
  std::vector<float> scale;       // 1 / s' (what is stored and what dequantization multiplies by)
  int iterations = 0;             // solver iterations run (0 without optimisation)
  std::vector<double> mean_abs_error;  // the solver's err per iteration
  int64_t groups_per_row() const { return cols / group_size; }
};

// x^exponent for x ≥ 0 (+inf at 0): the |d|^(p−1) of the solver, within kHqqMaxPowUlp ulp of the exact power.
float hqq_pow(float x, float exponent);

// ---- scalar reference ----
HqqFit hqq_fit_reference(const FloatRows& w, const HqqOptions& options);
uint8_t hqq_encode_reference(float w, float multiplier, float zero);
inline float hqq_decode(uint8_t q, float scale, float zero) { return (static_cast<float>(q) - zero) * scale; }
void hqq_encode_rows_reference(const FloatRows& w, const HqqFit& fit, int64_t row_begin, int64_t row_end,
                               uint8_t* codes);

// ---- fast path (equal to the reference bit for bit; parallel over rows) ----
// Throws UsageError for a group size that does not divide cols or is not hqq_group_size_ok, FormatError on inf/NaN.
HqqFit hqq_fit(const FloatRows& w, const HqqOptions& options);
// Codes of rows [row_begin, row_end), one per byte, and the error statistics of the dequantized rows.
ErrorStats hqq_encode_rows(const FloatRows& w, const HqqFit& fit, int64_t row_begin, int64_t row_end, uint8_t* codes);
// The same, packed straight into the portable layout (cols/2 bytes per row, row-major); equal to int4_pack_row of
// hqq_encode_rows' codes.
ErrorStats hqq_encode_pack_rows(const FloatRows& w, const HqqFit& fit, int64_t row_begin, int64_t row_end,
                                uint8_t* packed);

// ---- packings ----
void int4_pack_row(const uint8_t* codes, int64_t n, uint8_t* packed);  // n even
// Codes of columns [col_begin, col_begin + n) of a portable packed row (col_begin even).
void int4_unpack_row(const uint8_t* packed_row, int64_t col_begin, int64_t n, uint8_t* codes);
// ORs the codes of rows [row_begin, row_end) (one per byte, cols per row) into GemLite words [cols/8][rows]
// (`words` zeroed by the caller before the first call).
void gemlite_pack_rows(const uint8_t* codes, int64_t row_begin, int64_t row_end, int64_t rows, int64_t cols,
                       uint32_t* words);
uint8_t gemlite_code_at(const uint32_t* words, int64_t rows, int64_t r, int64_t c);
// The GemLite scale and additive zero of group k of row r, as stored (f16 bits).
uint16_t gemlite_scale_bits(float scale);
uint16_t gemlite_offset_bits(float scale, float zero);  // f16(−z·s)

}  // namespace hx
