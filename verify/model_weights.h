// Where the forward pass gets its weights: one factory for matrices, whatever their encoding, and f32 copies of the
// small vectors.
//
// Design goals: a matrix is a WeightMatrix viewing the mapped checkpoint (no copy); the encoding of a tensor is
// decided in one place, make_weight(): a tensor the checkpoint's quantization description lists is decoded by
// quant's row decoders (verify/quantized_matrix.h), any other is a plain float tensor (DenseWeights). LoRA
// factors, stored [in, out] (h @ w1), are viewed transposed instead of copied.
// Non-goals: writing or converting weights; deciding which tensors may be quantized (arch/ tables do).
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "formats/checkpoint.h"
#include "formats/tensor.h"
#include "verify/kernels.h"

namespace hx {

// How the stored tensor maps onto y = x · Wᵀ.
enum class WeightLayout : uint8_t {
  kOutIn,  // PyTorch Linear [out, in] (every projection)
  kInOut,  // [in, out], used as x @ W (RWKV/TICA LoRA factors w1, w2, …, g2)
};

// The matrix named `name`, whose stored shape the architecture table gives as `stored_shape` ([out, in] for
// kOutIn, [in, out] for kInOut; leading 1s are ignored). A plain float tensor must have exactly that shape. Errors
// name the checkpoint and the tensor: FormatError (missing, wrong shape, an invalid quantization description or
// quantized part), UnsupportedError (a dtype no encoding reads).
std::unique_ptr<WeightMatrix> make_weight(const Checkpoint& checkpoint, const std::string& name, WeightLayout layout,
                                          const Shape& stored_shape);

// A small tensor (norm weight, w0, r_k, layer_scalar, bias) converted to f32, checked to have `expected` shape
// (leading 1s ignored, so hxa079's [1, 1, C] vectors and hxa07i's [C] read alike).
std::vector<float> load_vector_f32(const Checkpoint& checkpoint, const std::string& name, const Shape& expected);

// A stored [in, out] float tensor seen as the [out, in] matrix of y = x·Wᵀ, decoded tile by tile (no copy).
class TransposedDenseWeights final : public WeightMatrix {
 public:
  // `data` holds `stored_rows` = cols() rows of `stored_cols` = rows() values of `dtype`, row-major, packed.
  TransposedDenseWeights(DType dtype, const void* data, int64_t stored_rows, int64_t stored_cols);

  void decode_f32(int64_t row_begin, int64_t row_end, int64_t col_begin, int64_t col_end, float* dst,
                  int64_t dst_stride) const override;
  void decode_bf16(int64_t row_begin, int64_t row_end, int64_t col_begin, int64_t col_end, uint16_t* dst,
                   int64_t dst_stride) const override;
  std::string describe() const override;

 private:
  DType dtype_;
  const std::byte* data_;
  int64_t element_size_;
};

}  // namespace hx
