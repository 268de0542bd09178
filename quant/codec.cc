#include "quant/codec.h"

#include <algorithm>
#include <cstring>
#include <limits>

#include "formats/errors.h"
#include "formats/cpu_isa.h"

namespace hx {

std::string_view scheme_name(QuantScheme s) {
  switch (s) {
    case QuantScheme::kInt8: return "int8";
    case QuantScheme::kFp8: return "fp8";
    case QuantScheme::kFp6: return "fp6";
    case QuantScheme::kFp5: return "fp5";
    case QuantScheme::kInt4: return "int4";
  }
  return "?";
}

std::optional<QuantScheme> scheme_from_name(std::string_view name) {
  for (QuantScheme s : kAllQuantSchemes)
    if (scheme_name(s) == name) return s;
  return std::nullopt;
}

std::string_view layout_name(QuantLayout l) {
  switch (l) {
    case QuantLayout::kPortable: return "portable";
    case QuantLayout::kTorchaoTc: return "torchao-tc";
    case QuantLayout::kGemlite: return "gemlite";
  }
  return "?";
}

std::optional<QuantLayout> layout_from_name(std::string_view name) {
  for (QuantLayout l : {QuantLayout::kPortable, QuantLayout::kTorchaoTc, QuantLayout::kGemlite})
    if (layout_name(l) == name) return l;
  return std::nullopt;
}

// ---- FloatRows ----

FloatRows::FloatRows(DType dtype, const void* data, int64_t rows, int64_t cols, int64_t row_stride_bytes,
                     std::string label)
    : dtype_(dtype), data_(static_cast<const std::byte*>(data)), rows_(rows), cols_(cols), label_(std::move(label)) {
  if (dtype != DType::kF32 && dtype != DType::kBF16 && dtype != DType::kF16)
    throw UnsupportedError(label_ + " is " + std::string(dtype_name(dtype)) +
                           "; only F32, BF16 and F16 weights can be quantized");
  if (rows < 0 || cols < 0) throw UsageError(label_ + " has a negative shape");
  const int64_t packed = cols * dtype_element_size(dtype);
  row_stride_ = row_stride_bytes == 0 ? packed : row_stride_bytes;
  if (row_stride_ < packed) throw UsageError(label_ + ": row stride is shorter than a row");
}

FloatRows FloatRows::from_view(const TensorView& view, std::string label) {
  if (view.shape.size() != 2 || (view.shape[1] > 1 && view.strides[1] != 1))
    throw UnsupportedError(label + " must be a 2-D [out, in] matrix with contiguous rows to be quantized, got shape " +
                           shape_to_string(view.shape));
  check_view_in_bounds(view, label);
  const int64_t element = dtype_element_size(view.dtype);
  if (element == 0) throw UnsupportedError(label + " is " + std::string(dtype_name(view.dtype)) + ", not a float");
  const std::byte* base = view.storage.bytes.data() + view.storage_offset * element;
  return FloatRows(view.dtype, base, view.shape[0], view.shape[1], view.strides[0] * element, std::move(label));
}

namespace {

HX_QUANT_INLINE void widen_bf16_kernel(const std::byte* src, int64_t n, float* out) {
  for (int64_t i = 0; i < n; ++i) {
    uint16_t h;
    std::memcpy(&h, src + 2 * i, 2);
    out[i] = std::bit_cast<float>(static_cast<uint32_t>(h) << 16);
  }
}
void widen_bf16_generic(const std::byte* src, int64_t n, float* out) { widen_bf16_kernel(src, n, out); }
HX_QUANT_AVX512 void widen_bf16_avx512(const std::byte* src, int64_t n, float* out) { widen_bf16_kernel(src, n, out); }

// On the bit patterns with the sign cleared, integer order is float order for finite values and every inf/NaN is
// above every finite value; an integer max vectorises where a float max (NaN rules) does not.
HX_QUANT_INLINE uint32_t max_abs_bits_kernel(const float* x, int64_t n) {
  uint32_t max_bits = 0;
  for (int64_t i = 0; i < n; ++i) {
    const uint32_t a = std::bit_cast<uint32_t>(x[i]) & 0x7fffffffu;
    max_bits = a > max_bits ? a : max_bits;
  }
  return max_bits;
}
uint32_t max_abs_bits_generic(const float* x, int64_t n) { return max_abs_bits_kernel(x, n); }
HX_QUANT_AVX512 uint32_t max_abs_bits_avx512(const float* x, int64_t n) { return max_abs_bits_kernel(x, n); }

}  // namespace

void FloatRows::read(int64_t r, int64_t col_begin, int64_t n, float* out) const {
  const std::byte* src = data_ + r * row_stride_ + col_begin * static_cast<int64_t>(dtype_element_size(dtype_));
  if (dtype_ == DType::kBF16) {  // the common case, vectorised
    (quant_use_avx512() ? widen_bf16_avx512 : widen_bf16_generic)(src, n, out);
    return;
  }
  convert_to_f32(dtype_, src, out, static_cast<size_t>(n));
}

float finite_abs_max(const float* x, int64_t n, const FloatRows& rows, int64_t row) {
  const uint32_t max_bits = (quant_use_avx512() ? max_abs_bits_avx512 : max_abs_bits_generic)(x, n);
  if (max_bits >= 0x7f800000u) {
    for (int64_t i = 0; i < n; ++i) {
      if (!std::isfinite(x[i]))
        throw FormatError(rows.label() + " holds " + (std::isnan(x[i]) ? "NaN" : "inf") + " at row " +
                          std::to_string(row) + ", column " + std::to_string(i) + "; only finite weights can be quantized");
    }
  }
  return std::bit_cast<float>(max_bits);
}

// ---- ErrorStats ----

void ErrorStats::merge(const ErrorStats& other) {
  count += other.count;
  sum_abs_error += other.sum_abs_error;
  sum_squared_error += other.sum_squared_error;
  sum_squared_reference += other.sum_squared_reference;
  max_abs_error = std::max(max_abs_error, other.max_abs_error);
}

double ErrorStats::nmse() const {
  if (sum_squared_error == 0) return 0.0;
  if (sum_squared_reference == 0) return std::numeric_limits<double>::infinity();
  return sum_squared_error / sum_squared_reference;
}

double ErrorStats::snr_db() const {
  const double e = nmse();
  if (e == 0) return std::numeric_limits<double>::infinity();
  return -10.0 * std::log10(e);
}

namespace {

// 16 lanes of float partial sums per quantity (one zmm each), folded into doubles once per row: vectorises, and the
// order is fixed by the lane structure, so both compilations give the same figures.
constexpr int kLanes = 16;

HX_QUANT_INLINE ErrorStats row_error_kernel(const float* reference, const float* approx, int64_t n) {
  float abs_sum[kLanes] = {}, sq_err[kLanes] = {}, sq_ref[kLanes] = {}, max_err[kLanes] = {};
  int64_t i = 0;
  for (; i + kLanes <= n; i += kLanes) {
    for (int l = 0; l < kLanes; ++l) {
      const float e = approx[i + l] - reference[i + l];
      const float a = std::fabs(e);
      abs_sum[l] += a;
      sq_err[l] += e * e;
      sq_ref[l] += reference[i + l] * reference[i + l];
      max_err[l] = max_err[l] > a ? max_err[l] : a;
    }
  }
  for (int l = 0; i < n; ++i, ++l) {
    const float e = approx[i] - reference[i];
    const float a = std::fabs(e);
    abs_sum[l] += a;
    sq_err[l] += e * e;
    sq_ref[l] += reference[i] * reference[i];
    max_err[l] = max_err[l] > a ? max_err[l] : a;
  }
  ErrorStats s;
  s.count = static_cast<uint64_t>(n);
  for (int l = 0; l < kLanes; ++l) {
    s.sum_abs_error += abs_sum[l];
    s.sum_squared_error += sq_err[l];
    s.sum_squared_reference += sq_ref[l];
    s.max_abs_error = std::max(s.max_abs_error, static_cast<double>(max_err[l]));
  }
  return s;
}

ErrorStats row_error_generic(const float* reference, const float* approx, int64_t n) {
  return row_error_kernel(reference, approx, n);
}
HX_QUANT_AVX512 ErrorStats row_error_avx512(const float* reference, const float* approx, int64_t n) {
  return row_error_kernel(reference, approx, n);
}

}  // namespace

ErrorStats row_error(const float* reference, const float* approx, int64_t n) {
  return quant_use_avx512() ? row_error_avx512(reference, approx, n) : row_error_generic(reference, approx, n);
}

bool quant_use_avx512() {
  return active_cpu_isa() == CpuIsa::kAvx512;
}

}  // namespace hx
