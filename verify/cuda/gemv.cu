// Matrix products with few rows of activations (decode: 1 token) on bf16 weights, memory-bound: one warp (or a few,
// for matrices with few rows) per output feature streams its weight row once in 16-byte loads and applies it to
// every token of the call.
//
// Why not cuBLAS here: a cuBLAS call with one column has more host-side overhead per call than the product itself
// for most decode matrices. In kBF16 mode the caller hands x already rounded to bf16 (once per call, not once per
// weight row: the per-element f32→bf16 conversion was what bounded this kernel), so the products are exact
// bf16 × bf16 products with f32 sums — the values the CPU's kBF16 mode multiplies; in kF32 mode x stays f32 and the
// bf16 weights are widened to f32.
#include <cuda_bf16.h>

#include <cstdint>

#include "verify/cuda/cuda_kernels.h"

namespace hx::cuda {
namespace {

constexpr int kWarpsPerBlock = 8;
// Warps in flight that keep an H100's HBM busy (132 SMs × 64 resident warps ≈ 8.4k, and half as many again so the
// tail of the grid overlaps): a matrix with fewer rows gives each row several warps. Reka's K/V projections (768
// rows of 6144) took 11.8 µs with one warp per row and take 7.2 µs with eight (ncu on an H100); products this small
// stay bounded by the grid's ramp and tail.
constexpr int64_t kTargetWarps = 12288;

// Warps `warps_per_row` (1, 2, 4 or 8) of a block share a row: warp p takes 16-byte chunks p·32 + lane, then every
// 32·warps_per_row; their sums meet in shared memory in a fixed order (deterministic).
template <int kTokens, bool kXBf16>
__global__ void __launch_bounds__(kWarpsPerBlock * 32)
    gemv_bf16_kernel(const uint16_t* w, GemvInput x, float* y, int64_t rows, int64_t cols, bool accumulate,
                     int warps_per_row) {
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, part = warp % warps_per_row;
  const int64_t row = int64_t(blockIdx.x) * (kWarpsPerBlock / warps_per_row) + warp / warps_per_row;
  const bool valid = row < rows;  // no early return: the block meets at __syncthreads below
  const uint4* w_row = reinterpret_cast<const uint4*>(w + (valid ? row : 0) * cols);
  float sums[kTokens];
#pragma unroll
  for (int t = 0; t < kTokens; ++t) sums[t] = 0.0f;
  const int64_t chunks = valid ? cols / 8 : 0;  // 8 bf16 values per 16-byte load
  const int stride = 32 * warps_per_row;
#pragma unroll 4
  for (int64_t c = part * 32 + lane; c < chunks; c += stride) {
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
      float xs[8];
      if constexpr (kXBf16) {
        const uint4 xv = __ldg(reinterpret_cast<const uint4*>(x.bf16 + t * cols) + c);
        const uint32_t xw[4] = {xv.x, xv.y, xv.z, xv.w};
#pragma unroll
        for (int i = 0; i < 4; ++i) {
          xs[2 * i] = __uint_as_float(xw[i] << 16);
          xs[2 * i + 1] = __uint_as_float(xw[i] & 0xffff0000u);
        }
      } else {
        const float4* xv = reinterpret_cast<const float4*>(x.f32 + t * cols + c * 8);
        const float4 a = __ldg(xv), b = __ldg(xv + 1);
        xs[0] = a.x, xs[1] = a.y, xs[2] = a.z, xs[3] = a.w, xs[4] = b.x, xs[5] = b.y, xs[6] = b.z, xs[7] = b.w;
      }
#pragma unroll
      for (int i = 0; i < 8; ++i) sums[t] += xs[i] * weights[i];
    }
  }
  __shared__ float warp_sums[kWarpsPerBlock][kTokens];
#pragma unroll
  for (int t = 0; t < kTokens; ++t) {
    float s = sums[t];
    for (int offset = 16; offset > 0; offset /= 2) s += __shfl_xor_sync(0xffffffffu, s, offset);
    if (lane == 0) warp_sums[warp][t] = s;
  }
  if (warps_per_row > 1) __syncthreads();
  if (part != 0 || lane != 0 || !valid) return;
#pragma unroll
  for (int t = 0; t < kTokens; ++t) {
    float s = warp_sums[warp][t];
    for (int p = 1; p < warps_per_row; ++p) s += warp_sums[warp + p][t];
    y[t * rows + row] = accumulate ? y[t * rows + row] + s : s;
  }
}

int warps_per_row_for(int64_t rows, int64_t cols) {
  int warps = 1;  // double while the grid is short of kTargetWarps and each warp keeps ≥ 2 loads per lane
  while (warps < kWarpsPerBlock && rows * warps < kTargetWarps && cols / 8 >= int64_t(64) * warps * 2) warps *= 2;
  return warps;
}

template <int kTokens>
void launch(const uint16_t* w, const GemvInput& x, float* y, int64_t rows, int64_t cols, bool accumulate,
            cudaStream_t stream) {
  const int warps_per_row = warps_per_row_for(rows, cols);
  const int64_t rows_per_block = kWarpsPerBlock / warps_per_row;
  const unsigned blocks = static_cast<unsigned>((rows + rows_per_block - 1) / rows_per_block);
  if (x.bf16) {
    gemv_bf16_kernel<kTokens, true>
        <<<blocks, kWarpsPerBlock * 32, 0, stream>>>(w, x, y, rows, cols, accumulate, warps_per_row);
  } else {
    gemv_bf16_kernel<kTokens, false>
        <<<blocks, kWarpsPerBlock * 32, 0, stream>>>(w, x, y, rows, cols, accumulate, warps_per_row);
  }
}

}  // namespace

bool gemv_bf16(const uint16_t* w, const GemvInput& x, float* y, int64_t tokens, int64_t rows, int64_t cols,
               bool accumulate, cudaStream_t stream) {
  const void* x_data = x.bf16 ? static_cast<const void*>(x.bf16) : static_cast<const void*>(x.f32);
  const bool aligned = reinterpret_cast<uintptr_t>(w) % 16 == 0 && reinterpret_cast<uintptr_t>(x_data) % 16 == 0;
  if (!aligned || cols % 8 != 0 || tokens < 1 || tokens > kMaxGemvTokens) return false;  // 16-byte loads only
  switch (tokens) {
    case 1:
      launch<1>(w, x, y, rows, cols, accumulate, stream);
      return true;
    case 2:
      launch<2>(w, x, y, rows, cols, accumulate, stream);
      return true;
    case 3:
      launch<3>(w, x, y, rows, cols, accumulate, stream);
      return true;
    default:
      launch<4>(w, x, y, rows, cols, accumulate, stream);
      return true;
  }
}

}  // namespace hx::cuda
