// WeightMatrix decoders of the quantized encodings (verify/kernels.h): the forward pass multiplies by a quantized
// checkpoint directly, dequantizing tile by tile inside the matrix product, without a dequantized copy.
//
// Design goals: each class reads the packed bytes and scales where they lie (the mapped checkpoint; unaligned reads
// go through memcpy, since safetensors does not align tensors) and produces exactly the codec's dequantized values
// (int8.h, fp8.h, fpx.h, hqq.h define them), so quant_weights_test compares decode_f32 with the codecs bit for bit.
// Any tile is accepted; the matrix product's tiles (columns from multiples of 128) always start on whole packed
// blocks and groups, other ranges decode the enclosing block and copy the part asked for.
// Non-goals: integer-domain matrix products (the GEMM works on decoded f32/bf16 tiles); a fast decoder of the
// torchao-tc layout (GPU-only in practice; decoded element by element).
//
// This header includes verify/kernels.h; like it, it must not meet arch/model_config.h in one translation unit.
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include "formats/checkpoint.h"
#include "quant/codec.h"
#include "quant/fp8.h"
#include "quant/fpx.h"
#include "verify/kernels.h"

namespace hx {

struct QuantizedTensorEntry;

// int8.h: W = q · scale[r]. `codes` I8 [rows, cols], `scales` F32 [rows].
class Int8RowScaled final : public WeightMatrix {
 public:
  Int8RowScaled(const void* codes, const void* scales, int64_t rows, int64_t cols,
                std::shared_ptr<const void> owner = nullptr);
  void decode_f32(int64_t row_begin, int64_t row_end, int64_t col_begin, int64_t col_end, float* dst,
                  int64_t dst_stride) const override;
  std::string describe() const override;

 private:
  const int8_t* codes_;
  const std::byte* scales_;
  std::shared_ptr<const void> owner_;
};

// fp8.h: W = value(code) · scale (per row, or one for the tensor). `codes` F8_E4M3 [rows, cols], `scales` F32.
class Fp8RowScaled final : public WeightMatrix {
 public:
  Fp8RowScaled(const void* codes, const void* scales, Fp8ScaleMode mode, int64_t rows, int64_t cols,
               std::shared_ptr<const void> owner = nullptr);
  void decode_f32(int64_t row_begin, int64_t row_end, int64_t col_begin, int64_t col_end, float* dst,
                  int64_t dst_stride) const override;
  std::string describe() const override;

 private:
  const uint8_t* codes_;
  const std::byte* scales_;
  Fp8ScaleMode mode_;
  std::shared_ptr<const void> owner_;
};

// fpx.h: W = value(code) · float(scale[r]); packed portable or torchao-tc, scales [rows] of `scale_dtype`.
class FpxRowScaled final : public WeightMatrix {
 public:
  FpxRowScaled(FpxFormat format, QuantLayout layout, const void* packed, const void* scales, DType scale_dtype,
               int64_t rows, int64_t cols, std::shared_ptr<const void> owner = nullptr);
  void decode_f32(int64_t row_begin, int64_t row_end, int64_t col_begin, int64_t col_end, float* dst,
                  int64_t dst_stride) const override;
  std::string describe() const override;

 private:
  float row_scale(int64_t r) const;
  FpxFormat format_;
  QuantLayout layout_;
  const uint8_t* packed_;
  const std::byte* scales_;
  DType scale_dtype_;
  std::shared_ptr<const void> owner_;
};

// hqq.h: portable W = (q − zero) · scale with F32 [rows, cols/G] scale and zero; gemlite W = q·scale + offset with
// F16 [cols/G, rows] scale and offset, codes in I32 [cols/8, rows] words.
class Int4Grouped final : public WeightMatrix {
 public:
  Int4Grouped(QuantLayout layout, int group_size, const void* packed, const void* scales, const void* zeros,
              int64_t rows, int64_t cols, std::shared_ptr<const void> owner = nullptr);
  void decode_f32(int64_t row_begin, int64_t row_end, int64_t col_begin, int64_t col_end, float* dst,
                  int64_t dst_stride) const override;
  std::string describe() const override;

 private:
  QuantLayout layout_;
  int group_size_;
  const std::byte* packed_;
  const std::byte* scales_;
  const std::byte* zeros_;
  std::shared_ptr<const void> owner_;
};

// The decoder of one described quantized tensor of `checkpoint` (its parts already validated by
// read_quantization). Throws FormatError naming the tensor when a part is missing.
std::unique_ptr<WeightMatrix> make_quantized_weight(const Checkpoint& checkpoint, const QuantizedTensorEntry& entry);

// Registers quant/'s encodings with the forward pass's weight factory (verify/model_weights.h make_weight): a matrix
// the checkpoint's quantization description lists is decoded by the classes above. Call once at start-up.
void register_quantized_weight_encodings();

}  // namespace hx
