// WeightMatrix's default bf16 decoding and the dense float-dtype decoder.
#include <algorithm>
#include <cstring>

#include "formats/errors.h"
#include "formats/float_convert.h"
#include "verify/gemm_internal.h"
#include "verify/kernels.h"

namespace hx {
namespace {

bool is_dense_weight_dtype(DType t) {
  switch (t) {
    case DType::kF32:
    case DType::kBF16:
    case DType::kF16:
    case DType::kF8_E4M3:
    case DType::kF8_E5M2:
    case DType::kF8_E4M3FNUZ:
    case DType::kF8_E5M2FNUZ:
      return true;
    default:
      return false;
  }
}

}  // namespace

WeightMatrix::WeightMatrix(int64_t rows, int64_t cols) : rows_(rows), cols_(cols) {
  if (rows < 0 || cols < 0) {
    throw UsageError("weight matrix shape [" + std::to_string(rows) + ", " + std::to_string(cols) + "] is negative");
  }
}

void WeightMatrix::decode_bf16(int64_t row_begin, int64_t row_end, int64_t col_begin, int64_t col_end, uint16_t* dst,
                               int64_t dst_stride) const {
  // One row at a time through a small f32 buffer, so a subclass only has to know f32.
  thread_local std::vector<float> row;
  row.resize(static_cast<size_t>(col_end - col_begin));
  for (int64_t r = row_begin; r < row_end; ++r) {
    decode_f32(r, r + 1, col_begin, col_end, row.data(), col_end - col_begin);
    uint16_t* out = dst + (r - row_begin) * dst_stride;
    for (size_t i = 0; i < row.size(); ++i) out[i] = f32_to_bf16(row[i]);
  }
}

void WeightMatrix::prefetch(int64_t, int64_t, int64_t, int64_t) const {}

const std::byte* WeightMatrix::stored_rows(DType, int64_t, int64_t, int64_t*) const { return nullptr; }

DenseWeights::DenseWeights(DType dtype, const void* data, int64_t rows, int64_t cols, int64_t row_stride_bytes)
    : WeightMatrix(rows, cols), dtype_(dtype), data_(static_cast<const std::byte*>(data)) {
  if (!is_dense_weight_dtype(dtype)) {
    throw UnsupportedError("dense weights cannot be " + std::string(dtype_name(dtype)) +
                           " (supported: F32, BF16, F16, F8_E4M3, F8_E5M2, F8_E4M3FNUZ, F8_E5M2FNUZ)");
  }
  const int64_t packed_stride = cols * dtype_element_size(dtype);
  row_stride_ = row_stride_bytes == 0 ? packed_stride : row_stride_bytes;
  if (row_stride_ < packed_stride) {
    throw UsageError("weight row stride " + std::to_string(row_stride_) + " bytes is shorter than a row of " +
                     std::to_string(cols) + " " + std::string(dtype_name(dtype)) + " values");
  }
  if (dtype_element_size(dtype) == 1) {
    code_table_.resize(256);
    for (uint32_t code = 0; code < 256; ++code)
      code_table_[code] = minifloat8_decode(code, *minifloat_format_of(dtype));
  }
}

DenseWeights DenseWeights::from_view(const TensorView& view) {
  if (view.shape.size() != 2 || view.strides.size() != 2 || (view.shape[1] > 1 && view.strides[1] != 1)) {
    throw UnsupportedError("a weight matrix must be a 2-D [out, in] tensor with contiguous rows, got shape " +
                           shape_to_string(view.shape));
  }
  const int64_t element = dtype_element_size(view.dtype);
  if (element == 0) throw UnsupportedError("dense weights cannot be " + std::string(dtype_name(view.dtype)));
  check_view_in_bounds(view, "weight matrix");
  const std::byte* base = view.storage.bytes.data() + view.storage_offset * element;
  return DenseWeights(view.dtype, base, view.shape[0], view.shape[1], view.strides[0] * element);
}

void DenseWeights::decode_f32(int64_t row_begin, int64_t row_end, int64_t col_begin, int64_t col_end, float* dst,
                              int64_t dst_stride) const {
  const int64_t n = col_end - col_begin;
  const int64_t element = dtype_element_size(dtype_);
  const bool simd = active_cpu_isa() == CpuIsa::kAvx512;
  for (int64_t r = row_begin; r < row_end; ++r) {
    const std::byte* src = row(r) + col_begin * element;
    float* out = dst + (r - row_begin) * dst_stride;
    if (simd && gemm::avx512_decode_row_f32(dtype_, src, n, out)) continue;
    if (!code_table_.empty()) {
      const auto* codes = reinterpret_cast<const uint8_t*>(src);
      for (int64_t i = 0; i < n; ++i) out[i] = code_table_[codes[i]];
    } else {
      convert_to_f32(dtype_, src, out, static_cast<size_t>(n));
    }
  }
}

void DenseWeights::decode_bf16(int64_t row_begin, int64_t row_end, int64_t col_begin, int64_t col_end, uint16_t* dst,
                               int64_t dst_stride) const {
  const int64_t n = col_end - col_begin;
  const int64_t element = dtype_element_size(dtype_);
  const bool simd = active_cpu_isa() == CpuIsa::kAvx512;
  for (int64_t r = row_begin; r < row_end; ++r) {
    const std::byte* src = row(r) + col_begin * element;
    uint16_t* out = dst + (r - row_begin) * dst_stride;
    if (dtype_ == DType::kBF16) {
      std::memcpy(out, src, static_cast<size_t>(n) * 2);
    } else if (simd && gemm::avx512_decode_row_bf16(dtype_, src, n, out)) {
      continue;
    } else if (!code_table_.empty()) {
      const auto* codes = reinterpret_cast<const uint8_t*>(src);
      for (int64_t i = 0; i < n; ++i) out[i] = f32_to_bf16(code_table_[codes[i]]);
    } else {
      WeightMatrix::decode_bf16(r, r + 1, col_begin, col_end, out, dst_stride);
    }
  }
}

void DenseWeights::prefetch(int64_t row_begin, int64_t row_end, int64_t col_begin, int64_t col_end) const {
  constexpr int64_t kCacheLine = 64;
  const int64_t element = dtype_element_size(dtype_);
  for (int64_t r = row_begin; r < row_end; ++r) {
    const std::byte* begin = row(r) + col_begin * element;
    const std::byte* end = row(r) + col_end * element;
    for (const std::byte* line = begin; line < end; line += kCacheLine) __builtin_prefetch(line, 0, 3);
  }
}

const std::byte* DenseWeights::stored_rows(DType format, int64_t r, int64_t col, int64_t* row_stride_bytes) const {
  if (format != dtype_) return nullptr;
  *row_stride_bytes = row_stride_;
  return row(r) + col * dtype_element_size(dtype_);
}

std::string DenseWeights::describe() const {
  return std::string(dtype_name(dtype_)) + " [" + std::to_string(rows()) + ", " + std::to_string(cols()) + "]";
}

}  // namespace hx
