// The weight factory of the forward pass and the transposed view of LoRA factors.
#include "verify/model_weights.h"

#include <algorithm>
#include <utility>

#include "formats/errors.h"
#include "formats/float_convert.h"
#include "verify/quantized_matrix.h"

namespace hx {
namespace {

// The shape without leading 1s: hxa079 stores w0 as [1, 1, C], hxa07i as [C].
Shape squeezed(const Shape& s) {
  size_t first = 0;
  while (first + 1 < s.size() && s[first] == 1) ++first;
  return Shape(s.begin() + static_cast<std::ptrdiff_t>(first), s.end());
}

const NamedTensor& find_tensor(const Checkpoint& checkpoint, const std::string& name) {
  const NamedTensor* t = checkpoint.find(name);
  if (!t) throw FormatError(in_file(checkpoint.path, "tensor '" + name + "' is required but missing"));
  return *t;
}

[[noreturn]] void wrong_shape(const Checkpoint& checkpoint, const std::string& name, const Shape& expected,
                              const Shape& found) {
  throw FormatError(in_file(checkpoint.path, "tensor '" + name + "' has wrong shape; expected " +
                                                 shape_to_string(expected) + ", got " + shape_to_string(found)));
}

bool is_float_weight(DType t) {
  switch (t) {
    case DType::kF32: case DType::kBF16: case DType::kF16:
    case DType::kF8_E4M3: case DType::kF8_E5M2: case DType::kF8_E4M3FNUZ: case DType::kF8_E5M2FNUZ:
      return true;
    default:
      return false;
  }
}

// The stored tensor `name`, checked to have `stored_expected` shape (leading 1s ignored) and a dtype the forward
// pass reads: the float8/16/32 family for matrices (DenseWeights decodes those), any float dtype that
// convert_to_f32 reads for vectors.
const TensorView& checked_view(const Checkpoint& checkpoint, const std::string& name, const Shape& stored_expected,
                               bool matrix) {
  const NamedTensor& t = find_tensor(checkpoint, name);
  if (squeezed(t.view.shape) != squeezed(stored_expected)) wrong_shape(checkpoint, name, stored_expected, t.view.shape);
  const bool readable = matrix ? is_float_weight(t.view.dtype) : (is_float_weight(t.view.dtype) || t.view.dtype == DType::kF64);
  if (!readable) {
    throw UnsupportedError(in_file(checkpoint.path, "tensor '" + name + "' has dtype " +
                                                        std::string(dtype_name(t.view.dtype)) +
                                                        "; expected F32, BF16, F16, F8_E4M3 or F8_E5M2"));
  }
  check_view_in_bounds(t.view, in_file(checkpoint.path, "tensor '" + name + "'"));
  return t.view;
}

std::unique_ptr<WeightMatrix> make_dense(const Checkpoint& checkpoint, const std::string& name, WeightLayout layout,
                                         const Shape& expected) {
  const int64_t rows = expected.at(0), cols = expected.at(1);
  const Shape stored = layout == WeightLayout::kOutIn ? Shape{rows, cols} : Shape{cols, rows};
  const TensorView& view = checked_view(checkpoint, name, stored, /*matrix=*/true);
  if (!view.is_contiguous()) {
    throw UnsupportedError(in_file(checkpoint.path, "tensor '" + name + "' is a strided view (shape " +
                                                        shape_to_string(view.shape) +
                                                        "); the forward pass reads contiguous weights only"));
  }
  const std::byte* data = view.contiguous_bytes().data();
  if (layout == WeightLayout::kOutIn) return std::make_unique<DenseWeights>(view.dtype, data, rows, cols);
  return std::make_unique<TransposedDenseWeights>(view.dtype, data, cols, rows);
}

}  // namespace

std::unique_ptr<WeightMatrix> make_weight(const Checkpoint& checkpoint, const std::string& name, WeightLayout layout,
                                          const Shape& stored_shape) {
  const Shape logical = squeezed(stored_shape);
  if (logical.size() != 2) {
    throw UsageError("make_weight('" + name + "'): expected a matrix shape, got " + shape_to_string(stored_shape));
  }
  const Shape rows_cols = layout == WeightLayout::kOutIn ? logical : Shape{logical[1], logical[0]};
  if (auto w = make_quantized_matrix(checkpoint, name, layout, rows_cols)) return w;
  return make_dense(checkpoint, name, layout, rows_cols);
}

std::vector<float> load_vector_f32(const Checkpoint& checkpoint, const std::string& name, const Shape& expected) {
  const TensorView& view = checked_view(checkpoint, name, expected, /*matrix=*/false);
  const std::vector<std::byte> bytes = to_contiguous_bytes(view);  // small: a norm weight, w0, r_k, a bias
  std::vector<float> out(view.numel());
  convert_to_f32(view.dtype, bytes.data(), out.data(), out.size());
  return out;
}

TransposedDenseWeights::TransposedDenseWeights(DType dtype, const void* data, int64_t stored_rows, int64_t stored_cols)
    : WeightMatrix(stored_cols, stored_rows),
      dtype_(dtype),
      data_(static_cast<const std::byte*>(data)),
      element_size_(dtype_element_size(dtype)) {
  if (!is_float_weight(dtype)) {
    throw UnsupportedError("transposed weights cannot be " + std::string(dtype_name(dtype)));
  }
}

void TransposedDenseWeights::decode_f32(int64_t row_begin, int64_t row_end, int64_t col_begin, int64_t col_end,
                                        float* dst, int64_t dst_stride) const {
  // Output row r is stored column r: read each stored row's run [row_begin, row_end) once, scatter it to a column.
  const int64_t run = row_end - row_begin;
  thread_local std::vector<float> values;
  values.resize(static_cast<size_t>(run));
  const int64_t stored_cols = rows();
  for (int64_t c = col_begin; c < col_end; ++c) {
    convert_to_f32(dtype_, data_ + (c * stored_cols + row_begin) * element_size_, values.data(),
                   static_cast<size_t>(run));
    for (int64_t r = 0; r < run; ++r) dst[r * dst_stride + (c - col_begin)] = values[static_cast<size_t>(r)];
  }
}

void TransposedDenseWeights::decode_bf16(int64_t row_begin, int64_t row_end, int64_t col_begin, int64_t col_end,
                                         uint16_t* dst, int64_t dst_stride) const {
  const int64_t run = row_end - row_begin, width = col_end - col_begin;
  const int64_t stored_cols = rows();
  if (dtype_ == DType::kBF16) {  // the bits are already bf16: a transposing copy
    for (int64_t c = col_begin; c < col_end; ++c) {
      const auto* src = reinterpret_cast<const uint16_t*>(data_ + (c * stored_cols + row_begin) * element_size_);
      for (int64_t r = 0; r < run; ++r) dst[r * dst_stride + (c - col_begin)] = src[r];
    }
    return;
  }
  thread_local std::vector<float> tile;
  tile.resize(static_cast<size_t>(run * width));
  decode_f32(row_begin, row_end, col_begin, col_end, tile.data(), width);
  for (int64_t r = 0; r < run; ++r) {
    for (int64_t c = 0; c < width; ++c) dst[r * dst_stride + c] = f32_to_bf16(tile[static_cast<size_t>(r * width + c)]);
  }
}

std::string TransposedDenseWeights::describe() const {
  return std::string(dtype_name(dtype_)) + " [" + std::to_string(rows()) + ", " + std::to_string(cols()) +
         "] (stored transposed)";
}

}  // namespace hx
