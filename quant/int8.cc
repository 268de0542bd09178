#include "quant/int8.h"

#include <algorithm>
#include <type_traits>
#include <vector>

#include "quant/row_vectors.h"

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

// x / scale clamped to ±127 and rounded half to even. Clamping before rounding gives the same integers as rounding
// first (the bounds are integers) and keeps the value in round_half_even_small's range.
struct Int8Chunk {
  float scale;
  HX_QUANT_INLINE rowvec::F32x16 operator()(rowvec::F32x16 v, rowvec::U32x16* codes) const {
    using namespace rowvec;
    constexpr float kMax = static_cast<float>(kInt8MaxCode);
    v = v / scale;
    v = where(v < -kMax, splat(-kMax), where(v > kMax, splat(kMax), v));
    // round_half_even_small's steps, keeping the sum: its bits minus the magic number's are the integer itself
    // (a float→int conversion here would be folded with the byte store into a float→int8 one, which GCC scalarises).
    constexpr float kMagic = 12582912.0f;  // 1.5 · 2^23, as in round_half_even_small
    const F32x16 sum = v + kMagic;
    *codes = std::bit_cast<U32x16>(sum) - std::bit_cast<uint32_t>(kMagic);  // low byte: two's complement int8
    return (sum - kMagic) * scale;
  }
};

// One row, fused (quant/row_vectors.h): the absolute maximum from the stored values, then codes and error
// statistics in one pass.
template <typename In>
HX_QUANT_INLINE ErrorStats int8_row_kernel(const FloatRows& w, int64_t r, const In* x, int8_t* q, float* scale_out) {
  using namespace rowvec;
  const int64_t n = w.cols();
  const float amax = checked_abs_max(max_abs_bits(x, n), w, r);
  const float scale = std::max(amax, kAmaxFloor) / static_cast<float>(kInt8MaxCode);
  *scale_out = scale;
  return encode_row(x, n, Int8Chunk{scale}, StoreCodeBytes{reinterpret_cast<uint8_t*>(q)});
}

template <typename In>
ErrorStats int8_row_generic(const FloatRows& w, int64_t r, const In* x, int8_t* q, float* scale) {
  return int8_row_kernel(w, r, x, q, scale);
}
template <typename In>
HX_QUANT_AVX512 ErrorStats int8_row_avx512(const FloatRows& w, int64_t r, const In* x, int8_t* q, float* scale) {
  return int8_row_kernel(w, r, x, q, scale);
}

}  // namespace

ErrorStats int8_quantize_rows(const FloatRows& w, int64_t row_begin, int64_t row_end, int8_t* codes, float* scales) {
  const bool avx512 = quant_use_avx512();
  return rowvec::for_each_stored_row(w, row_begin, row_end, [&](int64_t r, const auto* x) {
    using In = std::remove_cv_t<std::remove_pointer_t<decltype(x)>>;
    const int64_t i = r - row_begin;
    return (avx512 ? int8_row_avx512<In> : int8_row_generic<In>)(w, r, x, codes + i * w.cols(), scales + i);
  });
}

}  // namespace hx
