#include "quant/fp8.h"

#include <algorithm>
#include <array>
#include <vector>

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

HX_QUANT_INLINE void fp8_row_kernel(const float* x, int64_t n, float scale, uint8_t* codes, float* dequantized) {
  for (int64_t i = 0; i < n; ++i) {
    float v = x[i] / scale;
    v = v < -kFp8E4M3Max ? -kFp8E4M3Max : (v > kFp8E4M3Max ? kFp8E4M3Max : v);
    float rounded;
    codes[i] = static_cast<uint8_t>(ClampedE4M3::encode(v, &rounded));
    dequantized[i] = rounded * scale;
  }
}

void fp8_row_generic(const float* x, int64_t n, float scale, uint8_t* codes, float* dequantized) {
  fp8_row_kernel(x, n, scale, codes, dequantized);
}
HX_QUANT_AVX512 void fp8_row_avx512(const float* x, int64_t n, float scale, uint8_t* codes, float* dequantized) {
  fp8_row_kernel(x, n, scale, codes, dequantized);
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
  const int64_t n = w.cols();
  return for_each_row(w, row_begin, row_end, [&](int64_t r, const float* x, float* dequantized) {
    const float amax = finite_abs_max(x, n, w, r);
    float scale = tensor_scale;
    if (mode == Fp8ScaleMode::kPerRow) {
      scale = fp8_scale_for_amax(amax);
      scales[r - row_begin] = scale;
    }
    (avx512 ? fp8_row_avx512 : fp8_row_generic)(x, n, scale, codes + (r - row_begin) * n, dequantized);
    return row_error(x, dequantized, n);
  });
}

}  // namespace hx
