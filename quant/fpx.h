// FP6 e3m2 and FP5 e2m2 with one scale per output row: torchao's FPx (to_scaled_tc_floatx), as RWKV-Infer uses it.
//
// Element formats (torchao custom_fp_utils; formats/float_convert.h kFormatFP6E3M2 / kFormatFP5E2M2):
//   e3m2: code 00SEEEMM (6 bits), bias 3, max 28, min normal 0.25, min subnormal 0.0625
//   e2m2: code 000SEEMM (5 bits), bias 1, max 7,  min normal 1,    min subnormal 0.25
//   round to nearest even, subnormals kept, |x| ≥ max saturates to ±max, −0 keeps its sign bit; no inf/NaN codes.
// Definition (torchao to_scaled_tc_floatx on W [out, in]; oracle fpx.safetensors):
//   s32[r]  = max(amax_r, 1e-12) / max_normal        (f32 division; max_normal 28 or 7)
//   code    = fpx(W[r][c] / s32[r])                  (f32 division by the *f32* scale)
//   s[r]    = s32[r] rounded to W's dtype            (F16 / BF16 / F32: torchao's scale.to(dtype)); this is stored
//   Ŵ[r][c] = value(code) · float(s[r])              (so decoding does not exactly invert the encoding)
// Packed layouts of X.weight (U8 [out, in·bits/8] in both); X.weight.scale is [out] in W's dtype in both:
//  * portable — each row packed on its own, in % 4 == 0 (FP6) / in % 8 == 0 (FP5); any CPU decodes it with shifts,
//    and a column range starting at a multiple of 8 starts on a whole byte:
//      FP6: the codes c0..c3 of columns 4j..4j+3 form the 24-bit word v = c0 | c1<<6 | c2<<12 | c3<<18, stored as
//           bytes 3j, 3j+1, 3j+2 = bits 0-7, 8-15, 16-23 of v (little-endian);
//      FP5: the codes c0..c7 of columns 8j..8j+7 form the 40-bit word v = Σ c_i << 5i, stored as bytes 5j..5j+4 =
//           bits 0-7, …, 32-39 of v (little-endian).
//  * torchao-tc — torchao's pack_tc_floatx (FP6-LLM's ahead-of-time packing for its tensor-core kernel), bit for bit;
//    out % 64 == 0 and in % 64 == 0. The bytes are bit planes one after the other: FP6 the 2-bit plane (code bits
//    5-4, out·in/4 bytes) then the 4-bit plane (bits 3-0, out·in/2 bytes); FP5 the 1-bit plane (bit 4, out·in/8
//    bytes) then the 4-bit plane. Within a plane the elements are permuted in three passes (64×16 tiles of 32
//    strips, then 4-byte words with reversed bytes, then a fixed permutation of the bit fields of each word);
//    fpx.cc derives every element's byte and bit from those passes (fpx_tc_location).
// Non-goals: e2m3/e3m1 and other FPx formats (torchao has them; RWKV-Infer uses these two), decoding the tc layout
// quickly (it is for GPUs; the CPU decodes it element by element).
#pragma once

#include <cstdint>
#include <vector>

#include "quant/codec.h"

namespace hx {

enum class FpxFormat : uint8_t { kE3M2, kE2M2 };

const MinifloatFormat& fpx_minifloat(FpxFormat f);  // kFormatFP6E3M2 / kFormatFP5E2M2
int fpx_bits(FpxFormat f);                          // 6 / 5
float fpx_max_normal(FpxFormat f);                  // 28 / 7
FpxFormat fpx_format_of(QuantScheme s);             // kFp6 → e3m2, kFp5 → e2m2; UsageError otherwise
// Columns per packed block of the portable layout and the bytes of one block: FP6 4 → 3, FP5 8 → 5.
int fpx_block_codes(FpxFormat f);
int fpx_block_bytes(FpxFormat f);
static_assert(4 * 6 == 3 * 8 && 8 * 5 == 5 * 8, "FPx blocks fill whole bytes");

// ---- scalar reference ----
float fpx_scale_f32_reference(const float* row, int64_t n, FpxFormat f);  // max(amax, 1e-12) / max_normal
uint8_t fpx_encode_reference(float w, float scale_f32, FpxFormat f);       // minifloat_encode_reference(w / s32)
float fpx_code_value(uint8_t code, FpxFormat f);                           // value of a code (table)
// The scale as stored (rounded to `dtype`: F16, BF16 or F32) and read back as f32.
float fpx_stored_scale(float scale_f32, DType dtype);
// Rows [row_begin, row_end): one code per byte (row-major, cols per row) and the f32 scales.
void fpx_quantize_rows_reference(const FloatRows& w, FpxFormat f, int64_t row_begin, int64_t row_end, uint8_t* codes,
                                 float* scales_f32);

// ---- fast path (equal to the reference bit for bit) ----
// The same outputs; the error statistics use the stored scale (rounded to `scale_dtype`), as decoding does.
ErrorStats fpx_quantize_rows(const FloatRows& w, FpxFormat f, int64_t row_begin, int64_t row_end, DType scale_dtype,
                             uint8_t* codes, float* scales_f32);
// The same, packed straight into the portable layout (fpx_packed_row_bytes per row, row-major): each row is encoded
// and packed while its codes are still in cache. Equal to fpx_pack_row of fpx_quantize_rows' codes.
ErrorStats fpx_quantize_pack_rows(const FloatRows& w, FpxFormat f, int64_t row_begin, int64_t row_end,
                                  DType scale_dtype, uint8_t* packed, float* scales_f32);

// ---- portable packing ----
int64_t fpx_packed_row_bytes(int64_t cols, FpxFormat f);  // cols · bits / 8 (cols a multiple of fpx_block_codes)
void fpx_pack_row(const uint8_t* codes, int64_t n, FpxFormat f, uint8_t* packed);
// Codes of columns [col_begin, col_begin + n) of a packed row; col_begin and n multiples of fpx_block_codes (the
// last range may end at the row's end).
void fpx_unpack_row(const uint8_t* packed_row, int64_t col_begin, int64_t n, FpxFormat f, uint8_t* codes);

// ---- torchao tensor-core packing ----
bool fpx_tc_shape_ok(int64_t rows, int64_t cols);  // rows % 64 == 0 && cols % 64 == 0 (and both > 0)
// Where bit plane `plane` (0: the 1- or 2-bit plane, 1: the 4-bit plane) of element (r, c) lies: byte offset into
// the packed tensor and the shift of its lowest bit.
struct TcBitLocation {
  uint64_t byte;
  int shift;
};
TcBitLocation fpx_tc_location(int64_t rows, int64_t cols, FpxFormat f, int plane, int64_t r, int64_t c);
// Fast: every element's bits placed through fpx_tc_location. `packed` receives rows·cols·bits/8 bytes.
void fpx_pack_tc(const uint8_t* codes, int64_t rows, int64_t cols, FpxFormat f, uint8_t* packed);
// Reference: a literal port of torchao's _pack_tc_floatx (view / permute / flip / _pack / _bit_interleave on
// arrays), written independently of fpx_tc_location.
std::vector<uint8_t> fpx_pack_tc_reference(const uint8_t* codes, int64_t rows, int64_t cols, FpxFormat f);
uint8_t fpx_tc_code_at(const uint8_t* packed, int64_t rows, int64_t cols, FpxFormat f, int64_t r, int64_t c);
// The codes of columns [col_begin, col_begin + n) of row r (any range).
void fpx_unpack_tc(const uint8_t* packed, int64_t rows, int64_t cols, FpxFormat f, int64_t r, int64_t col_begin,
                   int64_t n, uint8_t* codes);

}  // namespace hx
