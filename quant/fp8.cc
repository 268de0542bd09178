#include "quant/fp8.h"

#include <algorithm>
#include <array>
#include <type_traits>
#include <vector>

#include "quant/row_vectors.h"

namespace hx {

std::string_view fp8_scale_mode_name(Fp8ScaleMode m) { return m == Fp8ScaleMode::kPerRow ? "row" : "tensor"; }

std::optional<Fp8ScaleMode> fp8_scale_mode_from_name(std::string_view name) {
  if (name == "row") return Fp8ScaleMode::kPerRow;
  if (name == "tensor") return Fp8ScaleMode::kPerTensor;
  return std::nullopt;
}

uint8_t fp8_encode_reference(float w, float scale) {
  const float v = std::clamp(w / scale, -kFp8E4M3Max, kFp8E4M3Max);
  return static_cast<uint8_t>(minifloat_encode_reference(v, kFormatE4M3FN));
}

float fp8_decode(uint8_t code, float scale) {
  static const std::array<float, 256> table = [] {
    std::array<float, 256> t{};
    for (uint32_t c = 0; c < 256; ++c) t[c] = static_cast<float>(minifloat_decode_reference(c, kFormatE4M3FN));
    return t;
  }();
  return table[code] * scale;
}

void fp8_quantize_rows_reference(const FloatRows& w, int64_t row_begin, int64_t row_end, Fp8ScaleMode mode,
                                 float tensor_scale, uint8_t* codes, float* scales) {
  std::vector<float> x(static_cast<size_t>(w.cols()));
  for (int64_t r = row_begin; r < row_end; ++r) {
    w.read_row(r, x.data());
    float scale = tensor_scale;
    if (mode == Fp8ScaleMode::kPerRow) {
      finite_abs_max(x.data(), w.cols(), w, r);  // the same refusal of inf/NaN as the fast path
      float amax = 0;
      for (float v : x) amax = std::max(amax, std::fabs(v));
      scale = fp8_scale_for_amax(amax);
      scales[r - row_begin] = scale;
    }
    uint8_t* out = codes + (r - row_begin) * w.cols();
    for (int64_t c = 0; c < w.cols(); ++c) out[c] = fp8_encode_reference(x[static_cast<size_t>(c)], scale);
  }
}

namespace {

// One row, fused (quant/row_vectors.h): the absolute maximum from the stored values (per-row mode; per-tensor mode
// checks the row for inf/NaN the same way), then codes and error statistics in one pass.
template <typename In>
HX_QUANT_INLINE ErrorStats fp8_row_kernel(const FloatRows& w, int64_t r, const In* x, Fp8ScaleMode mode,
                                          float tensor_scale, uint8_t* codes, float* scale_out) {
  using namespace rowvec;
  const int64_t n = w.cols();
  const float amax = checked_abs_max(max_abs_bits(x, n), w, r);
  float scale = tensor_scale;
  if (mode == Fp8ScaleMode::kPerRow) {
    scale = fp8_scale_for_amax(amax);
    *scale_out = scale;
  }
  return encode_row(x, n, MinifloatChunk<ClampedE4M3>{scale, scale, kFp8E4M3Max}, StoreCodeBytes{codes});
}

template <typename In>
ErrorStats fp8_row_generic(const FloatRows& w, int64_t r, const In* x, Fp8ScaleMode mode, float tensor_scale,
                           uint8_t* codes, float* scale) {
  return fp8_row_kernel(w, r, x, mode, tensor_scale, codes, scale);
}
template <typename In>
HX_QUANT_AVX512 ErrorStats fp8_row_avx512(const FloatRows& w, int64_t r, const In* x, Fp8ScaleMode mode,
                                          float tensor_scale, uint8_t* codes, float* scale) {
  return fp8_row_kernel(w, r, x, mode, tensor_scale, codes, scale);
}

}  // namespace

float fp8_tensor_amax(const FloatRows& w) {
  std::vector<float> row_max(static_cast<size_t>(w.rows()));
  for_each_row(w, 0, w.rows(), [&](int64_t r, const float* x, float*) {
    row_max[static_cast<size_t>(r)] = finite_abs_max(x, w.cols(), w, r);
    return ErrorStats{};
  });
  float amax = 0;
  for (float m : row_max) amax = std::max(amax, m);
  return amax;
}

ErrorStats fp8_quantize_rows(const FloatRows& w, int64_t row_begin, int64_t row_end, Fp8ScaleMode mode,
                             float tensor_scale, uint8_t* codes, float* scales) {
  const bool avx512 = quant_use_avx512();
  return rowvec::for_each_stored_row(w, row_begin, row_end, [&](int64_t r, const auto* x) {
    using In = std::remove_cv_t<std::remove_pointer_t<decltype(x)>>;
    const int64_t i = r - row_begin;
    float* scale = mode == Fp8ScaleMode::kPerRow ? scales + i : nullptr;
    return (avx512 ? fp8_row_avx512<In> : fp8_row_generic<In>)(w, r, x, mode, tensor_scale, codes + i * w.cols(),
                                                                 scale);
  });
}

}  // namespace hx
