// Matrix products with few rows of activations (decode: 1 token) on bf16 weights, memory-bound: one warp per
// output feature streams its weight row once in 16-byte loads and applies it to every token of the call.
//
// Why not cuBLAS here: a cuBLAS call with one column needs the activations converted to bf16 first (a second
// launch), and its host-side overhead per call is larger than the product itself for most decode matrices; this
// kernel reads x in f32 and rounds it to bf16 in registers when the call is in kBF16 mode (exact bf16 products,
// f32 sums: the same values the CPU's kBF16 mode multiplies), or not at all in kF32 mode (bf16 weights widened to
// f32, f32 products).
#include <cuda_bf16.h>

#include <cstdint>

#include "verify/cuda/cuda_kernels.h"

namespace hx::cuda {
namespace {

constexpr int kWarpsPerBlock = 8;

__device__ float round_bf16(float x) { return __bfloat162float(__float2bfloat16_rn(x)); }

template <int kTokens>
__global__ void __launch_bounds__(kWarpsPerBlock * 32)
    gemv_bf16_kernel(const uint16_t* w, const float* x, float* y, int64_t rows, int64_t cols, bool round_x,
                     bool accumulate) {
  const int64_t row = int64_t(blockIdx.x) * kWarpsPerBlock + threadIdx.x / 32;
  const int lane = threadIdx.x % 32;
  if (row >= rows) return;
  const uint4* w_row = reinterpret_cast<const uint4*>(w + row * cols);
  float sums[kTokens];
#pragma unroll
  for (int t = 0; t < kTokens; ++t) sums[t] = 0.0f;
  const int64_t chunks = cols / 8;  // 8 bf16 values per 16-byte load
#pragma unroll 4
  for (int64_t c = lane; c < chunks; c += 32) {
    const uint4 packed = __ldg(w_row + c);
    const uint32_t words[4] = {packed.x, packed.y, packed.z, packed.w};
    float weights[8];
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      weights[2 * i] = __uint_as_float(words[i] << 16);
      weights[2 * i + 1] = __uint_as_float(words[i] & 0xffff0000u);
    }
#pragma unroll
    for (int t = 0; t < kTokens; ++t) {
      const float4* xv = reinterpret_cast<const float4*>(x + t * cols + c * 8);
      const float4 a = __ldg(xv), b = __ldg(xv + 1);
      float xs[8] = {a.x, a.y, a.z, a.w, b.x, b.y, b.z, b.w};
#pragma unroll
      for (int i = 0; i < 8; ++i) {
        const float xi = round_x ? round_bf16(xs[i]) : xs[i];
        sums[t] += xi * weights[i];
      }
    }
  }
#pragma unroll
  for (int t = 0; t < kTokens; ++t) {
    float s = sums[t];
    for (int offset = 16; offset > 0; offset /= 2) s += __shfl_xor_sync(0xffffffffu, s, offset);
    if (lane == 0) y[t * rows + row] = accumulate ? y[t * rows + row] + s : s;
  }
}

template <int kTokens>
void launch(const uint16_t* w, const float* x, float* y, int64_t rows, int64_t cols, bool round_x, bool accumulate,
            cudaStream_t stream) {
  const unsigned blocks = static_cast<unsigned>((rows + kWarpsPerBlock - 1) / kWarpsPerBlock);
  gemv_bf16_kernel<kTokens><<<blocks, kWarpsPerBlock * 32, 0, stream>>>(w, x, y, rows, cols, round_x, accumulate);
}

}  // namespace

bool gemv_bf16(const uint16_t* w, const float* x, float* y, int64_t tokens, int64_t rows, int64_t cols, bool round_x,
               bool accumulate, cudaStream_t stream) {
  const bool aligned = reinterpret_cast<uintptr_t>(w) % 16 == 0 && reinterpret_cast<uintptr_t>(x) % 16 == 0;
  if (!aligned || cols % 8 != 0 || tokens < 1 || tokens > kMaxGemvTokens) return false;  // 16-byte loads only
  switch (tokens) {
    case 1:
      launch<1>(w, x, y, rows, cols, round_x, accumulate, stream);
      return true;
    case 2:
      launch<2>(w, x, y, rows, cols, round_x, accumulate, stream);
      return true;
    case 3:
      launch<3>(w, x, y, rows, cols, round_x, accumulate, stream);
      return true;
    default:
      launch<4>(w, x, y, rows, cols, round_x, accumulate, stream);
      return true;
  }
}

}  // namespace hx::cuda
