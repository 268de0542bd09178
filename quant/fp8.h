// FP8 e4m3fn with one scale per output row (torchao float8 PerRow) or one per tensor (RWKV-Infer's bf16_to_fp8).
//
// Element format (OCP FP8, formats/float_convert.h kFormatE4M3FN): S.EEEE.MMM, bias 7, max 448 = 0x7E, no inf,
// NaN only at 0x7F/0xFF (never written: inputs are clamped), min normal 2^-6, min subnormal 2^-9.
// Packed layout ("portable", the only one), for a weight W [out, in]:
//   X.weight        F8_E4M3 [out, in]   byte r·in + c is the code of W[r][c]
//   X.weight.scale  F32 [out]           per-row mode: s[r]
//                   F32 [1]             per-tensor mode: s, shared by every row
// Definition:
//   s       = max(amax, kAmaxFloor) / 448        (amax of the row, or of the whole tensor; f32 division)
//   code    = e4m3fn(clamp(W / s, −448, 448))    (f32 division, then round to nearest even, subnormals kept)
//   Ŵ       = value(code) · s                    (one f32 multiply)
// The clamp matters: torch's `.to(float8_e4m3fn)` does not saturate (|x| > 464 becomes NaN, oracle fp8.safetensors),
// so "clamp then cast" is what reproduces torch — and with s from amax, W / s can round just above 448.
// Non-goals: e5m2 weights, delayed/amax-history scaling, FP8 activations (the matrix product stays f32/bf16).
#pragma once

#include <cstdint>

#include "quant/codec.h"

namespace hx {

inline constexpr float kFp8E4M3Max = 448.0f;
static_assert(kFormatE4M3FN.total_bits() == 8, "an e4m3fn code is one byte");

enum class Fp8ScaleMode : uint8_t { kPerRow, kPerTensor };
std::string_view fp8_scale_mode_name(Fp8ScaleMode m);  // "row", "tensor"
std::optional<Fp8ScaleMode> fp8_scale_mode_from_name(std::string_view name);

// ---- scalar reference ----
inline float fp8_scale_for_amax(float amax) { return std::max(amax, kAmaxFloor) / kFp8E4M3Max; }
uint8_t fp8_encode_reference(float w, float scale);  // minifloat_encode_reference of the clamped quotient
float fp8_decode(uint8_t code, float scale);         // value(code) · scale
// Rows [row_begin, row_end) one element at a time. Per-row mode writes one scale per row to `scales`; per-tensor
// mode uses `tensor_scale` for every row (and writes nothing to `scales`).
void fp8_quantize_rows_reference(const FloatRows& w, int64_t row_begin, int64_t row_end, Fp8ScaleMode mode,
                                 float tensor_scale, uint8_t* codes, float* scales);

// ---- fast path (equal to the reference bit for bit) ----
// The largest |W| of the whole tensor (parallel over rows); throws FormatError on inf/NaN.
float fp8_tensor_amax(const FloatRows& w);
ErrorStats fp8_quantize_rows(const FloatRows& w, int64_t row_begin, int64_t row_end, Fp8ScaleMode mode,
                             float tensor_scale, uint8_t* codes, float* scales);

}  // namespace hx
