#include "quant/int8.h"

#include <algorithm>
#include <vector>

namespace hx {

float int8_row_scale_reference(const float* row, int64_t n) {
  float amax = 0;
  for (int64_t i = 0; i < n; ++i) amax = std::max(amax, std::fabs(row[i]));
  return std::max(amax, kAmaxFloor) / static_cast<float>(kInt8MaxCode);
}

int8_t int8_encode_reference(float w, float scale) {
  const float q = round_half_even(w / scale);
  return static_cast<int8_t>(std::clamp(q, static_cast<float>(-kInt8MaxCode), static_cast<float>(kInt8MaxCode)));
}

void int8_quantize_rows_reference(const FloatRows& w, int64_t row_begin, int64_t row_end, int8_t* codes,
                                  float* scales) {
  std::vector<float> x(static_cast<size_t>(w.cols()));
  for (int64_t r = row_begin; r < row_end; ++r) {
    w.read_row(r, x.data());
    finite_abs_max(x.data(), w.cols(), w, r);  // the same refusal of inf/NaN as the fast path
    const float scale = int8_row_scale_reference(x.data(), w.cols());
    scales[r - row_begin] = scale;
    int8_t* out = codes + (r - row_begin) * w.cols();
    for (int64_t c = 0; c < w.cols(); ++c) out[c] = int8_encode_reference(x[static_cast<size_t>(c)], scale);
  }
}

namespace {

// Encodes one row and writes its dequantized values. Clamping before rounding gives the same integers as rounding
// first (the bounds are integers) and keeps the value in round_half_even_small's range.
HX_QUANT_INLINE void int8_row_kernel(const float* x, int64_t n, float scale, int8_t* q, float* dequantized) {
  constexpr float kMax = static_cast<float>(kInt8MaxCode);
  for (int64_t i = 0; i < n; ++i) {
    float v = x[i] / scale;
    v = v < -kMax ? -kMax : (v > kMax ? kMax : v);
    const float r = round_half_even_small(v);
    q[i] = static_cast<int8_t>(static_cast<int32_t>(r));
    dequantized[i] = r * scale;
  }
}

void int8_row_generic(const float* x, int64_t n, float scale, int8_t* q, float* dequantized) {
  int8_row_kernel(x, n, scale, q, dequantized);
}
HX_QUANT_AVX512 void int8_row_avx512(const float* x, int64_t n, float scale, int8_t* q, float* dequantized) {
  int8_row_kernel(x, n, scale, q, dequantized);
}

}  // namespace

ErrorStats int8_quantize_rows(const FloatRows& w, int64_t row_begin, int64_t row_end, int8_t* codes, float* scales) {
  const bool avx512 = quant_use_avx512();
  const int64_t n = w.cols();
  return for_each_row(w, row_begin, row_end, [&](int64_t r, const float* x, float* dequantized) {
    const float amax = finite_abs_max(x, n, w, r);
    const float scale = std::max(amax, kAmaxFloor) / static_cast<float>(kInt8MaxCode);
    scales[r - row_begin] = scale;
    int8_t* q = codes + (r - row_begin) * n;
    (avx512 ? int8_row_avx512 : int8_row_generic)(x, n, scale, q, dequantized);
    return row_error(x, dequantized, n);
  });
}

}  // namespace hx
