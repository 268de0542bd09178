// Row decoders of quantized tensors: any rectangle of rows × columns of a packed matrix (its codes plus its scale
// and zero tensors) decoded to f32, read where the bytes lie. verify/quantized_matrix.h wraps them as the forward
// pass's WeightMatrix, so the matrix product dequantizes tile by tile and no dequantized copy is ever made.
//
// Design goals: produce exactly the codec's dequantized values (int8.h, fp8.h, fpx.h, hqq.h define them), so tests
// compare decode_f32 with the codecs bit for bit; read the mapped checkpoint in place (unaligned reads go through
// memcpy, since safetensors does not align tensors); accept any rectangle (the matrix product's tiles, columns from
// multiples of 128, start on whole packed blocks and groups; other ranges decode the enclosing block and copy the
// part asked for); const and thread-safe, so several threads may decode disjoint tiles at once.
// Non-goals: integer-domain products (consumers multiply decoded f32/bf16 tiles); a fast decoder of the torchao-tc
// layout (GPU-only in practice; decoded element by element). No verify/ type appears here: quant sits below verify.
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include "formats/checkpoint.h"
#include "quant/codec.h"
#include "quant/fp8.h"
#include "quant/fpx.h"

namespace hx {

struct QuantizedTensorEntry;

// One described quantized matrix [rows = out, cols = in]:
//   int8   W = q · scale[r]                    codes I8 [rows, cols], scales F32 [rows]
//   fp8    W = value(q) · scale (row / tensor) codes F8_E4M3 [rows, cols], scales F32 [rows] or [1]
//   fp6/5  W = value(q) · float(scale[r])      packed portable or torchao-tc, scales [rows] of the original dtype
//   int4   portable W = (q − zero) · scale     F32 [rows, cols/G] scale and zero, codes U8 [rows, cols/2]
//          gemlite  W = q · scale + offset     F16 [cols/G, rows] scale and offset, codes I32 [cols/8, rows]
class QuantizedRows {
 public:
  // The parts of `entry` in `checkpoint` (validated by read_quantization, checked again here): throws FormatError
  // naming the file and the tensor when a part is missing or does not have the dtype and shape the entry implies.
  // The storages' owners are kept, so the checkpoint object may go away.
  QuantizedRows(const Checkpoint& checkpoint, const QuantizedTensorEntry& entry);

  int64_t rows() const { return rows_; }
  int64_t cols() const { return cols_; }
  QuantScheme scheme() const { return scheme_; }
  // W[row_begin, row_end) × [col_begin, col_end) row-major into dst (row r at dst + (r - row_begin) * dst_stride).
  void decode_f32(int64_t row_begin, int64_t row_end, int64_t col_begin, int64_t col_end, float* dst,
                  int64_t dst_stride) const;
  // Bytes stored for the matrix (codes, scales, zeros): what one pass over it reads.
  uint64_t stored_bytes() const { return stored_bytes_; }
  // "int8 (row scales) [512, 256]", "int4 hqq g64 (portable) [512, 256]" — starts with the scheme name.
  std::string describe() const;

 private:
  void decode_int8(int64_t r0, int64_t r1, int64_t c0, int64_t c1, float* dst, int64_t stride) const;
  void decode_fp8(int64_t r0, int64_t r1, int64_t c0, int64_t c1, float* dst, int64_t stride) const;
  void decode_fpx(int64_t r0, int64_t r1, int64_t c0, int64_t c1, float* dst, int64_t stride) const;
  void decode_int4(int64_t r0, int64_t r1, int64_t c0, int64_t c1, float* dst, int64_t stride) const;
  float fpx_row_scale(int64_t r) const;

  QuantScheme scheme_;
  QuantLayout layout_;
  Fp8ScaleMode fp8_scale_;
  int group_size_;
  DType scale_dtype_;
  int64_t rows_, cols_;
  const std::byte* packed_ = nullptr;
  const std::byte* scales_ = nullptr;
  const std::byte* zeros_ = nullptr;
  uint64_t stored_bytes_ = 0;
  std::shared_ptr<const void> owner_;  // keeps the mapped file alive
};

}  // namespace hx
