// Element-wise and row-wise ops: rounding to the activation dtype, RMSNorm (Gemma and Llama styles), activations,
// GLU combine, softcap, RoPE. Portable C++ in a fixed order; PyTorch's f32 formulas are copied where they decide
// the last bit (1/sqrt for pow(·,-0.5) and rsqrt, x / (1 + exp(-x)) for SiLU, the tanh-GELU polynomial).
// With f32 activations (the forward pass's case) the hot loops have no per-element rounding calls, so the compiler
// vectorises them, and SiLU takes its exponentials 4 at a time (vector_exp.h, the same bits as one at a time).
#include <algorithm>
#include <cmath>
#include <cstring>
#include <string>

#include "formats/cpu_isa.h"
#include "formats/errors.h"
#include "formats/float_convert.h"
#include "formats/parallel.h"
#include "verify/kernels.h"
#include "verify/vector_exp.h"

namespace hx {

// elementwise_avx512.cc: glu's SiLU loop below on 16 lanes (callable only when the CPU runs AVX-512).
void glu_silu_avx512(const float* gate, const float* up, float* out, int64_t n);

namespace {

void check_activation(DType t) {
  if (t != DType::kF32 && t != DType::kBF16 && t != DType::kF16) {
    throw UsageError("activation dtype must be F32, BF16 or F16, not " + std::string(dtype_name(t)));
  }
}

// Rows per parallel work item of the row-wise ops: enough work to pay for waking the OpenMP team.
constexpr int64_t kRowGrain = 64;

}  // namespace

float round_to_activation(float x, DType activation) {
  switch (activation) {
    case DType::kF32:
      return x;
    case DType::kBF16:
      return bf16_to_f32(f32_to_bf16(x));
    case DType::kF16:
      return f16_to_f32(f32_to_f16(x));
    default:
      check_activation(activation);
      return x;
  }
}

void round_to_activation(std::span<float> x, DType activation) {
  check_activation(activation);
  if (activation == DType::kF32) return;
  for (float& value : x) value = round_to_activation(value, activation);
}

// ---- RMSNorm -------------------------------------------------------------------------------------------------------

void rms_norm(const float* x, float* y, int64_t rows, int64_t dim, const RmsNormParams& params) {
  check_activation(params.activation);
  if (dim <= 0) throw UsageError("rms_norm over rows of length " + std::to_string(dim));
  const DType act = params.activation;
  parallel_for(0, rows, kRowGrain, [&](int64_t r) {
    const float* in = x + r * dim;
    float* out = y + r * dim;
    // Squares of f32 values are exact in double; the sum is all but exact. kSumLanes interleaved partial sums
    // (i mod kSumLanes, added in lane order) break the chain of dependent adds.
    constexpr int kSumLanes = 8;
    double lanes[kSumLanes] = {};
    int64_t i0 = 0;
    for (; i0 + kSumLanes <= dim; i0 += kSumLanes) {
      for (int l = 0; l < kSumLanes; ++l) lanes[l] += static_cast<double>(in[i0 + l]) * in[i0 + l];
    }
    for (int l = 0; i0 < dim; ++i0, ++l) lanes[l] += static_cast<double>(in[i0]) * in[i0];
    double sum_squares = 0.0;
    for (int l = 0; l < kSumLanes; ++l) sum_squares += lanes[l];
    const float mean = static_cast<float>(sum_squares / static_cast<double>(dim));
    const float inverse_rms = 1.0f / std::sqrt(mean + params.eps);
    if (act == DType::kF32) {  // no roundings: both styles are normalized · weight (× commutes exactly)
      if (params.weight) {
        for (int64_t i = 0; i < dim; ++i) out[i] = (in[i] * inverse_rms) * params.weight[i];
      } else {
        for (int64_t i = 0; i < dim; ++i) out[i] = in[i] * inverse_rms;
      }
      return;
    }
    for (int64_t i = 0; i < dim; ++i) {
      const float normalized = in[i] * inverse_rms;
      if (params.style == RmsNormStyle::kGemma) {
        out[i] = round_to_activation(params.weight ? normalized * params.weight[i] : normalized, act);
      } else {  // Llama: hidden.to(input_dtype) first, then weight * hidden in the activation dtype
        const float rounded = round_to_activation(normalized, act);
        out[i] = params.weight ? round_to_activation(params.weight[i] * rounded, act) : rounded;
      }
    }
  });
}

// ---- activations ---------------------------------------------------------------------------------------------------

float gelu_tanh(float x) {
  constexpr float kBeta = 0.7978845608028654f;  // sqrt(2 / pi)
  constexpr float kKappa = 0.044715f;
  const float cube = x * x * x;
  const float inner = kBeta * (x + kKappa * cube);
  return 0.5f * x * (1.0f + std::tanh(inner));
}

float silu(float x) { return x / (1.0f + vexp::exp_scalar(-x)); }

float sigmoid(float x) { return 1.0f / (1.0f + std::exp(-x)); }

float softplus(float x) { return x > 20.0f ? x : std::log1p(std::exp(x)); }

void softcap(std::span<float> x, float cap, DType activation) {
  check_activation(activation);
  for (float& value : x) {
    const float scaled = round_to_activation(value / cap, activation);
    value = round_to_activation(round_to_activation(std::tanh(scaled), activation) * cap, activation);
  }
}

void glu(GluActivation act, const float* gate, const float* up, float* out, int64_t n, DType activation) {
  check_activation(activation);
  if (act == GluActivation::kSilu && activation == DType::kF32 && active_cpu_isa() == CpuIsa::kAvx512) {
    return glu_silu_avx512(gate, up, out, n);  // the same bits, 16 values at a time
  }
  if (act == GluActivation::kSilu && activation == DType::kF32) {  // silu() a vector at a time, same bits
    const auto combine = [](vexp::F32x4 g, vexp::F32x4 u) { return (g / (1.0f + vexp::exp4(-g))) * u; };
    int64_t i0 = 0;
    for (; i0 + vexp::kLanes <= n; i0 += vexp::kLanes) {  // whole vectors: fixed-size copies are plain moves
      vexp::F32x4 g, u;
      std::memcpy(&g, gate + i0, sizeof g);
      std::memcpy(&u, up + i0, sizeof u);
      const vexp::F32x4 product = combine(g, u);
      std::memcpy(out + i0, &product, sizeof product);
    }
    if (i0 < n) {  // the tail, zero-padded
      vexp::F32x4 g{}, u{};
      for (int64_t i = i0; i < n; ++i) g[i - i0] = gate[i], u[i - i0] = up[i];
      const vexp::F32x4 product = combine(g, u);
      for (int64_t i = i0; i < n; ++i) out[i] = product[i - i0];
    }
    return;
  }
  for (int64_t i = 0; i < n; ++i) {
    const float activated = act == GluActivation::kSilu ? silu(gate[i]) : gelu_tanh(gate[i]);
    out[i] = round_to_activation(round_to_activation(activated, activation) * up[i], activation);
  }
}

// ---- RoPE ----------------------------------------------------------------------------------------------------------

std::vector<float> rope_inv_freq(const RopeParams& params) {
  const int64_t d = params.head_dim;
  if (d <= 0 || d % 2 != 0) throw UsageError("RoPE head_dim must be even and positive, got " + std::to_string(d));
  if (!(params.theta > 0.0)) throw UsageError("RoPE theta must be positive");
  if (params.type == RopeType::kNone) throw UnsupportedError("rope_inv_freq: RoPE type 'none' has no frequencies");
  if (params.type == RopeType::kDefault && params.partial_rotary_factor != 1.0) {
    throw UnsupportedError(
        "rope_inv_freq: partial rotary with the default RoPE type (rotating only the first dims) "
        "is not implemented");
  }
  int64_t rotated = d / 2;
  if (params.type == RopeType::kProportional) {
    if (!(params.partial_rotary_factor > 0.0 && params.partial_rotary_factor <= 1.0)) {
      throw UsageError("RoPE partial_rotary_factor must be in (0, 1]");
    }
    rotated = static_cast<int64_t>(std::floor(params.partial_rotary_factor * static_cast<double>(d) / 2.0));
  }
  std::vector<float> inv_freq(static_cast<size_t>(d / 2), 0.0f);  // pairs beyond `rotated` do not rotate
  const float base = static_cast<float>(params.theta);
  for (int64_t i = 0; i < rotated; ++i) {
    const float exponent = static_cast<float>(2 * i) / static_cast<float>(d);  // denominator: the full head dim
    inv_freq[static_cast<size_t>(i)] = 1.0f / std::pow(base, exponent);
  }
  return inv_freq;
}

RopeTable rope_table(std::span<const float> inv_freq, std::span<const int64_t> positions, DType round_to) {
  check_activation(round_to);
  RopeTable table;
  const int64_t half = static_cast<int64_t>(inv_freq.size());
  table.head_dim = 2 * half;
  table.cos.resize(positions.size() * static_cast<size_t>(table.head_dim));
  table.sin.resize(table.cos.size());
  for (size_t t = 0; t < positions.size(); ++t) {
    for (int64_t i = 0; i < half; ++i) {
      const float angle = static_cast<float>(positions[t]) * inv_freq[static_cast<size_t>(i)];  // f32, as HF
      const float c = round_to_activation(static_cast<float>(std::cos(static_cast<double>(angle))), round_to);
      const float s = round_to_activation(static_cast<float>(std::sin(static_cast<double>(angle))), round_to);
      const size_t row = t * static_cast<size_t>(table.head_dim);
      table.cos[row + static_cast<size_t>(i)] = table.cos[row + static_cast<size_t>(i + half)] = c;
      table.sin[row + static_cast<size_t>(i)] = table.sin[row + static_cast<size_t>(i + half)] = s;
    }
  }
  return table;
}

void apply_rope(float* x, int64_t tokens, int64_t heads, const RopeTable& table, DType activation) {
  check_activation(activation);
  const int64_t d = table.head_dim, half = d / 2;
  if (static_cast<int64_t>(table.cos.size()) < tokens * d) {
    throw UsageError("RoPE table has " + std::to_string(table.cos.size() / static_cast<size_t>(d ? d : 1)) +
                     " positions for " + std::to_string(tokens) + " tokens");
  }
  const auto round = [activation](float v) { return round_to_activation(v, activation); };
  if (activation == DType::kF32) {  // the same sums without the (identity) roundings, so that they vectorise
    parallel_for(0, tokens * heads, kRowGrain, [&](int64_t row) {
      const int64_t t = row / heads;
      float* head = x + row * d;
      const float* cos = table.cos.data() + t * d;
      const float* sin = table.sin.data() + t * d;
      for (int64_t i = 0; i < half; ++i) {
        const float x1 = head[i], x2 = head[i + half];
        head[i] = x1 * cos[i] + -x2 * sin[i];
        head[i + half] = x2 * cos[i + half] + x1 * sin[i + half];
      }
    });
    return;
  }
  parallel_for(0, tokens * heads, kRowGrain, [&](int64_t row) {
    const int64_t t = row / heads;
    float* head = x + row * d;
    const float* cos = table.cos.data() + t * d;
    const float* sin = table.sin.data() + t * d;
    for (int64_t i = 0; i < half; ++i) {
      const float x1 = head[i], x2 = head[i + half];
      head[i] = round(round(x1 * cos[i]) + round(-x2 * sin[i]));
      head[i + half] = round(round(x2 * cos[i + half]) + round(x1 * sin[i + half]));
    }
  });
}

}  // namespace hx
