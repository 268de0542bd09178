// int8: symmetric quantization with one scale per output row (torchao int8wo, bitsandbytes' row-wise absmax).
//
// Packed layout (the only one; "portable"), for a weight W [out, in]:
//   X.weight        I8  [out, in]   byte r·in + c is q[r][c], two's complement, −127 ≤ q ≤ 127 (−128 never written,
//                                   so the code range is symmetric and −q never overflows)
//   X.weight.scale  F32 [out]       s[r], little-endian
// Definition:
//   s[r]    = max(amax_r, kAmaxFloor) / 127                  (amax_r = max_c |W[r][c]|; f32 division)
//   q[r][c] = clamp(round_half_even(W[r][c] / s[r]), −127, 127)   (f32 division)
//   Ŵ[r][c] = q[r][c] · s[r]                                 (one f32 multiply; the dequantized value)
// Why per output row and not RWKV-Infer's per input row: a row scale multiplies a whole dot product, so the matrix
// product can apply it once per output (y[n] = s[n] · Σ q[n][k]·x[k]); the error is the same order.
// Non-goals: asymmetric int8, per-group int8, the −128 code.
#pragma once

#include <cstdint>

#include "quant/codec.h"

namespace hx {

inline constexpr int kInt8MaxCode = 127;
static_assert(sizeof(int8_t) == 1 && -kInt8MaxCode >= INT8_MIN + 1, "int8 codes are one byte, symmetric range");

// ---- scalar reference (from the definition above) ----
float int8_row_scale_reference(const float* row, int64_t n);
int8_t int8_encode_reference(float w, float scale);
inline float int8_decode(int8_t q, float scale) { return static_cast<float>(q) * scale; }

// Quantizes rows [row_begin, row_end) of `w` one element at a time: codes (row-major, cols per row) and scales
// (one per row) of those rows.
void int8_quantize_rows_reference(const FloatRows& w, int64_t row_begin, int64_t row_end, int8_t* codes,
                                  float* scales);

// ---- fast path (equal to the reference bit for bit; parallel over rows) ----
// The same outputs, plus the error statistics of the dequantized rows against the originals.
ErrorStats int8_quantize_rows(const FloatRows& w, int64_t row_begin, int64_t row_end, int8_t* codes, float* scales);

}  // namespace hx
