// Quantized weights in the forward pass: the WeightMatrix of a matrix that a quantized checkpoint (quant/
// quantized_checkpoint.h) stores packed, decoded tile by tile inside the matrix product by quant's row decoders
// (quant/quantized_rows.h). No dequantized copy of a matrix, let alone of the model, is ever made.
//
// Design goals: verify builds on quant (formats ← arch ← quant ← verify), never the other way round; make_weight
// (verify/model_weights.h) asks make_quantized_matrix first, so every scheme and layout runs without registration.
// Non-goals: integer-domain products; quantized [in, out] LoRA factors (the policy never quantizes them, and a file
// that claims one is refused).
//
// Includes verify/kernels.h; like it, it must not meet arch/model_config.h's twin declarations in one translation
// unit (it includes that header itself).
#pragma once

#include <memory>
#include <string>

#include "formats/checkpoint.h"
#include "quant/quantized_rows.h"
#include "verify/kernels.h"
#include "verify/model_weights.h"

namespace hx {

class QuantizedWeightMatrix final : public WeightMatrix {
 public:
  explicit QuantizedWeightMatrix(QuantizedRows rows);
  void decode_f32(int64_t row_begin, int64_t row_end, int64_t col_begin, int64_t col_end, float* dst,
                  int64_t dst_stride) const override;
  std::string describe() const override { return rows_.describe(); }
  const QuantizedRows& quantized_rows() const { return rows_; }

 private:
  QuantizedRows rows_;
};

// The matrix `name` of `checkpoint` when the checkpoint's quantization description lists it, else nullptr (a plain
// tensor, or an ordinary checkpoint). `rows_cols` is the logical [out, in] the architecture table expects.
// Throws FormatError / UnsupportedError naming the file and the tensor when the description or the tensor's parts
// are invalid (read_quantization checks every described tensor), when the entry's shape differs from `rows_cols`,
// or when a quantized tensor would be read as an [in, out] matrix.
std::unique_ptr<WeightMatrix> make_quantized_matrix(const Checkpoint& checkpoint, const std::string& name,
                                                    WeightLayout layout, const Shape& rows_cols);

}  // namespace hx
