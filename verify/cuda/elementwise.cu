// Element-wise and row-wise kernels of the CUDA forward pass: conversions, gathers, RMSNorm, RoPE, activations,
// softcap and the Gemma PLE pieces. Each mirrors its CPU formula in verify/kernels.h / verify/elementwise.cc
// (1/sqrt for the inverse RMS, x / (1 + exp(-x)) for SiLU, the tanh-GELU polynomial); plain grid-stride loops,
// since these ops are a few % of a forward pass next to the GEMMs.
#include <cuda_bf16.h>

#include <cstdint>

#include "verify/cuda/cuda_kernels.h"

namespace hx::cuda {
namespace {

constexpr int kThreads = 256;

unsigned blocks_for(int64_t n) {
  const int64_t b = (n + kThreads - 1) / kThreads;
  return static_cast<unsigned>(b < 1 ? 1 : (b > 65535 * 8 ? 65535 * 8 : b));
}

#define HX_GRID_STRIDE(i, n) \
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < (n); i += int64_t(gridDim.x) * blockDim.x)

__device__ float bf16_bits_to_f32(uint16_t h) { return __uint_as_float(static_cast<uint32_t>(h) << 16); }
__device__ uint16_t f32_to_bf16_bits(float x) { return __bfloat16_as_ushort(__float2bfloat16_rn(x)); }

__device__ float gelu_tanh_f(float x) {
  const float kBeta = 0.7978845608028654f, kKappa = 0.044715f;
  const float cube = x * x * x;
  const float inner = kBeta * (x + kKappa * cube);
  return 0.5f * x * (1.0f + tanhf(inner));
}
__device__ float silu_f(float x) { return x / (1.0f + expf(-x)); }
__device__ float sigmoid_f(float x) { return 1.0f / (1.0f + expf(-x)); }
// act(gate) · up: GeGLU-tanh or SwiGLU.
__device__ float glu_f(bool gelu, float gate, float up) { return (gelu ? gelu_tanh_f(gate) : silu_f(gate)) * up; }
// One RMSNorm output: x · (1/rms) · w (w may be null: weightless).
__device__ float rms_scaled(float x, float inverse_rms, const float* weight, int64_t i) {
  const float normalized = x * inverse_rms;
  return weight ? normalized * weight[i] : normalized;
}

__global__ void f32_to_bf16_kernel(const float* x, uint16_t* out, int64_t n) {
  HX_GRID_STRIDE(i, n) { out[i] = f32_to_bf16_bits(x[i]); }
}
__global__ void bf16_to_f32_kernel(const uint16_t* x, float* out, int64_t n) {
  HX_GRID_STRIDE(i, n) { out[i] = bf16_bits_to_f32(x[i]); }
}

__global__ void gather_rows_kernel(const void* table, bool table_bf16, int64_t width, const int64_t* ids,
                                   int64_t tokens, float factor, float* out) {
  HX_GRID_STRIDE(i, tokens * width) {
    const int64_t t = i / width, c = i % width, row = ids[t];
    const float value = table_bf16 ? bf16_bits_to_f32(static_cast<const uint16_t*>(table)[row * width + c])
                                   : static_cast<const float*>(table)[row * width + c];
    out[i] = factor != 1.0f ? value * factor : value;
  }
}

// One block per row: Σx² in double (as the CPU), then y = x · (1/sqrt(mean + eps)) · w. kBlockThreads is 1024 for
// the few rows of a decode step: a block of 256 threads spent ~23 µs on one 6144-wide row (its loop of 24 loads per
// thread was latency, not bandwidth), 1024 threads with 16-byte loads ~6.5 µs. Rows of a multiple of 4 floats
// (`quads`) take 16-byte loads.
template <int kBlockThreads>
__global__ void __launch_bounds__(kBlockThreads)
    rms_norm_kernel(const float* x, float* y, int64_t dim, const float* weight, float eps, uint16_t* y_bf16,
                    bool quads) {
  const float* in = x + blockIdx.x * dim;
  float* out = y + blockIdx.x * dim;
  uint16_t* out_bf16 = y_bf16 ? y_bf16 + blockIdx.x * dim : nullptr;
  double sum = 0.0;
  if (quads) {
    for (int64_t i = threadIdx.x; i < dim / 4; i += kBlockThreads) {
      const float4 v = reinterpret_cast<const float4*>(in)[i];
      sum += static_cast<double>(v.x) * v.x + static_cast<double>(v.y) * v.y + static_cast<double>(v.z) * v.z +
             static_cast<double>(v.w) * v.w;
    }
  } else {
    for (int64_t i = threadIdx.x; i < dim; i += kBlockThreads) sum += static_cast<double>(in[i]) * in[i];
  }
  __shared__ double partial[kBlockThreads / 32];
  for (int offset = 16; offset > 0; offset /= 2) sum += __shfl_down_sync(0xffffffffu, sum, offset);
  if (threadIdx.x % 32 == 0) partial[threadIdx.x / 32] = sum;
  __syncthreads();
  if (threadIdx.x == 0) {
    double total = 0.0;
    for (int w = 0; w < kBlockThreads / 32; ++w) total += partial[w];
    partial[0] = total;
  }
  __syncthreads();
  const float mean = static_cast<float>(partial[0] / static_cast<double>(dim));
  const float inverse_rms = 1.0f / sqrtf(mean + eps);
  if (quads) {
    for (int64_t i = threadIdx.x; i < dim / 4; i += kBlockThreads) {
      const float4 v = reinterpret_cast<const float4*>(in)[i];
      const float4 r = make_float4(rms_scaled(v.x, inverse_rms, weight, 4 * i),
                                   rms_scaled(v.y, inverse_rms, weight, 4 * i + 1),
                                   rms_scaled(v.z, inverse_rms, weight, 4 * i + 2),
                                   rms_scaled(v.w, inverse_rms, weight, 4 * i + 3));
      reinterpret_cast<float4*>(out)[i] = r;
      if (out_bf16) {
        reinterpret_cast<uint2*>(out_bf16)[i] =
            make_uint2(f32_to_bf16_bits(r.x) | uint32_t(f32_to_bf16_bits(r.y)) << 16,
                       f32_to_bf16_bits(r.z) | uint32_t(f32_to_bf16_bits(r.w)) << 16);
      }
    }
  } else {
    for (int64_t i = threadIdx.x; i < dim; i += kBlockThreads) {
      const float value = rms_scaled(in[i], inverse_rms, weight, i);
      out[i] = value;
      if (out_bf16) out_bf16[i] = f32_to_bf16_bits(value);
    }
  }
}

// Short rows (Gemma's per-head q/k/v norms: 16k rows of 256 in a 2k-token prefill): one warp per row, the same
// sums in double; a block per row left most of its 256 threads idle.
constexpr int kWarpRowsMaxDim = 1024;
__global__ void rms_norm_warp_kernel(const float* x, float* y, int64_t rows, int64_t dim, const float* weight,
                                     float eps, uint16_t* y_bf16) {
  const int64_t row = int64_t(blockIdx.x) * (kThreads / 32) + threadIdx.x / 32;
  const int lane = threadIdx.x % 32;
  if (row >= rows) return;
  const float* in = x + row * dim;
  float* out = y + row * dim;
  double sum = 0.0;
  for (int64_t i = lane; i < dim; i += 32) sum += static_cast<double>(in[i]) * in[i];
  for (int offset = 16; offset > 0; offset /= 2) sum += __shfl_xor_sync(0xffffffffu, sum, offset);
  const float mean = static_cast<float>(sum / static_cast<double>(dim));
  const float inverse_rms = 1.0f / sqrtf(mean + eps);
  for (int64_t i = lane; i < dim; i += 32) {
    const float value = rms_scaled(in[i], inverse_rms, weight, i);
    out[i] = value;
    if (y_bf16) y_bf16[row * dim + i] = f32_to_bf16_bits(value);
  }
}

__global__ void rope_kernel(float* x, int64_t tokens, int64_t heads, int64_t d, const float* cos, const float* sin) {
  const int64_t half = d / 2;
  HX_GRID_STRIDE(idx, tokens * heads * half) {
    const int64_t row = idx / half, i = idx % half, t = row / heads;
    float* head = x + row * d;
    const float* c = cos + t * d;
    const float* s = sin + t * d;
    const float x1 = head[i], x2 = head[i + half];
    head[i] = x1 * c[i] + (-x2 * s[i]);
    head[i + half] = x2 * c[i + half] + x1 * s[i + half];
  }
}

__global__ void add_bias_kernel(float* y, int64_t rows, int64_t width, const float* bias) {
  HX_GRID_STRIDE(i, rows * width) { y[i] = y[i] + bias[i % width]; }
}
__global__ void add_kernel(float* y, const float* delta, int64_t n) {
  HX_GRID_STRIDE(i, n) { y[i] = y[i] + delta[i]; }
}
__global__ void scale_kernel(float* x, int64_t n, float factor) {
  HX_GRID_STRIDE(i, n) { x[i] = x[i] * factor; }
}
__global__ void multiply_kernel(float* x, const float* g, int64_t n) {
  HX_GRID_STRIDE(i, n) { x[i] = x[i] * g[i]; }
}
__global__ void unary_kernel(float* x, int64_t n, Unary op) {
  HX_GRID_STRIDE(i, n) { x[i] = op == Unary::kSigmoid ? sigmoid_f(x[i]) : tanhf(x[i]); }
}
__global__ void sigmoid_with_bias_kernel(float* gate, int64_t rows, int64_t width, const float* bias) {
  HX_GRID_STRIDE(i, rows * width) { gate[i] = sigmoid_f(bias[i % width] + gate[i]); }
}
__global__ void glu_kernel(bool gelu, const float* gate, const float* up, float* out, int64_t n) {
  HX_GRID_STRIDE(i, n) { out[i] = glu_f(gelu, gate[i], up[i]); }
}
__global__ void glu_to_bf16_kernel(bool gelu, const float* gate, const float* up, uint16_t* out, int64_t n) {
  HX_GRID_STRIDE(i, n) { out[i] = f32_to_bf16_bits(glu_f(gelu, gate[i], up[i])); }
}
__global__ void softcap_kernel(float* x, int64_t n, float cap) {
  HX_GRID_STRIDE(i, n) { x[i] = tanhf(x[i] / cap) * cap; }
}
__global__ void ple_combine_kernel(float* out, const float* projected, int64_t n, float token_scale,
                                   float combine_scale) {
  HX_GRID_STRIDE(i, n) { out[i] = (projected[i] + out[i] * token_scale) * combine_scale; }
}
__global__ void ple_gate_kernel(float* gate, const float* inputs, int64_t tokens, int64_t layers, int64_t layer,
                                int64_t p, bool gelu) {
  HX_GRID_STRIDE(i, tokens * p) {
    const int64_t t = i / p, c = i % p;
    gate[i] = glu_f(gelu, gate[i], inputs[(t * layers + layer) * p + c]);
  }
}

}  // namespace

void f32_to_bf16(const float* x, uint16_t* out, int64_t n, cudaStream_t s) {
  f32_to_bf16_kernel<<<blocks_for(n), kThreads, 0, s>>>(x, out, n);
}
void bf16_to_f32(const uint16_t* x, float* out, int64_t n, cudaStream_t s) {
  bf16_to_f32_kernel<<<blocks_for(n), kThreads, 0, s>>>(x, out, n);
}
void gather_rows(const void* table, bool table_bf16, int64_t width, const int64_t* ids, int64_t tokens, float factor,
                 float* out, cudaStream_t s) {
  gather_rows_kernel<<<blocks_for(tokens * width), kThreads, 0, s>>>(table, table_bf16, width, ids, tokens, factor,
                                                                     out);
}
void rms_norm(const float* x, float* y, int64_t rows, int64_t dim, const float* weight, float eps, cudaStream_t s,
              uint16_t* y_bf16) {
  if (rows <= 0) return;
  if (dim <= kWarpRowsMaxDim) {
    constexpr int64_t kRowsPerBlock = kThreads / 32;
    const auto blocks = static_cast<unsigned>((rows + kRowsPerBlock - 1) / kRowsPerBlock);
    rms_norm_warp_kernel<<<blocks, kThreads, 0, s>>>(x, y, rows, dim, weight, eps, y_bf16);
    return;
  }
  const auto aligned = [](const void* p, uintptr_t bytes) { return reinterpret_cast<uintptr_t>(p) % bytes == 0; };
  const bool quads = dim % 4 == 0 && aligned(x, 16) && aligned(y, 16) && (!y_bf16 || aligned(y_bf16, 8));
  constexpr int64_t kFewRows = 64;  // decode-sized calls: one long row per block, latency-bound
  if (rows <= kFewRows) {
    rms_norm_kernel<1024><<<static_cast<unsigned>(rows), 1024, 0, s>>>(x, y, dim, weight, eps, y_bf16, quads);
  } else {
    rms_norm_kernel<kThreads><<<static_cast<unsigned>(rows), kThreads, 0, s>>>(x, y, dim, weight, eps, y_bf16, quads);
  }
}
void apply_rope(float* x, int64_t tokens, int64_t heads, int64_t d, const float* cos, const float* sin,
                cudaStream_t s) {
  rope_kernel<<<blocks_for(tokens * heads * d / 2), kThreads, 0, s>>>(x, tokens, heads, d, cos, sin);
}
void add_bias(float* y, int64_t rows, int64_t width, const float* bias, cudaStream_t s) {
  add_bias_kernel<<<blocks_for(rows * width), kThreads, 0, s>>>(y, rows, width, bias);
}
void add(float* y, const float* delta, int64_t n, cudaStream_t s) {
  add_kernel<<<blocks_for(n), kThreads, 0, s>>>(y, delta, n);
}
void scale(float* x, int64_t n, float factor, cudaStream_t s) {
  scale_kernel<<<blocks_for(n), kThreads, 0, s>>>(x, n, factor);
}
void multiply(float* x, const float* g, int64_t n, cudaStream_t s) {
  multiply_kernel<<<blocks_for(n), kThreads, 0, s>>>(x, g, n);
}
void unary(float* x, int64_t n, Unary op, cudaStream_t s) { unary_kernel<<<blocks_for(n), kThreads, 0, s>>>(x, n, op); }
void sigmoid_with_bias(float* gate, int64_t rows, int64_t width, const float* bias, cudaStream_t s) {
  sigmoid_with_bias_kernel<<<blocks_for(rows * width), kThreads, 0, s>>>(gate, rows, width, bias);
}
void glu(bool gelu_tanh, const float* gate, const float* up, float* out, int64_t n, cudaStream_t s) {
  glu_kernel<<<blocks_for(n), kThreads, 0, s>>>(gelu_tanh, gate, up, out, n);
}
void glu_to_bf16(bool gelu_tanh, const float* gate, const float* up, uint16_t* out, int64_t n, cudaStream_t s) {
  glu_to_bf16_kernel<<<blocks_for(n), kThreads, 0, s>>>(gelu_tanh, gate, up, out, n);
}
void softcap(float* x, int64_t n, float cap, cudaStream_t s) {
  softcap_kernel<<<blocks_for(n), kThreads, 0, s>>>(x, n, cap);
}
void ple_combine(float* out, const float* projected, int64_t n, float token_scale, float combine_scale,
                 cudaStream_t s) {
  ple_combine_kernel<<<blocks_for(n), kThreads, 0, s>>>(out, projected, n, token_scale, combine_scale);
}
void ple_gate(float* gate, const float* per_layer_inputs, int64_t tokens, int64_t layers, int64_t layer, int64_t p,
              bool gelu_tanh, cudaStream_t s) {
  ple_gate_kernel<<<blocks_for(tokens * p), kThreads, 0, s>>>(gate, per_layer_inputs, tokens, layers, layer, p,
                                                              gelu_tanh);
}

}  // namespace hx::cuda
