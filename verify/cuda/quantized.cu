// Quantized weights on the GPU: packed codes stay packed in GPU memory and are dequantized where they are used —
// fused into a memory-bound GEMV for decode (few tokens), or a slice of rows at a time into bf16/f32 scratch for
// cuBLAS (prefill).
//
// Design goals: every element is the value the CPU decodes (quant/quantized_rows.cc): int8 q·s, fp8 e4m3(q)·s,
// fp6/fp5 table[q]·s, int4 (q − z)·s, each one f32 multiply (and one subtraction) rounded as on the CPU, then rounded
// to bf16 in kBF16 mode (WeightMatrix::decode_bf16's round-to-nearest-even). Decode reads 1 byte (int8/fp8/fp6/fp5)
// or ½ byte (int4) per weight instead of bf16's 2, which is what makes quantized decode faster.
// Non-goals: integer or fp8 tensor-core products (prefill multiplies dequantized bf16 tiles through cuBLAS); fp6/fp5
// packed tighter than a byte per code on the GPU (their codes are unpacked at load by quant's own unpackers).
#include <cuda_bf16.h>
#include <cuda_fp8.h>

#include <cstdint>

#include "verify/cuda/cuda_kernels.h"

namespace hx::cuda {
namespace {

__device__ __forceinline__ float round_bf16(float x) { return __bfloat162float(__float2bfloat16_rn(x)); }

// The value of one byte code, before the scale.
template <WeightCoding kCoding>
__device__ __forceinline__ float code_value(uint32_t code, const float* table) {
  if constexpr (kCoding == WeightCoding::kInt8) {
    return static_cast<float>(static_cast<int8_t>(code));
  } else if constexpr (kCoding == WeightCoding::kFp8) {
    const __half_raw h = __nv_cvt_fp8_to_halfraw(static_cast<__nv_fp8_storage_t>(code), __NV_E4M3);
    return __half2float(__half(h));  // e4m3 → f16 and f16 → f32 are both exact
  } else {
    return table[code];
  }
}

// ---- dequantization into scratch (prefill) ----

// Rows [row_begin, row_begin + rows) of a byte-coded matrix, one code per thread.
template <WeightCoding kCoding>
__global__ void dequantize_bytes_kernel(QuantizedView w, int64_t row_begin, int64_t count, bool to_bf16, void* out) {
  __shared__ float table[kCodeTableSize];
  if constexpr (kCoding == WeightCoding::kCodeTable) {
    for (int i = threadIdx.x; i < kCodeTableSize; i += blockDim.x) table[i] = w.table[i];
    __syncthreads();
  }
  const int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= count) return;
  const int64_t r = row_begin + i / w.cols, c = i % w.cols;
  const float value = __fmul_rn(code_value<kCoding>(w.codes[r * w.cols + c], table), w.scales[r]);
  if (to_bf16) {
    static_cast<__nv_bfloat16*>(out)[i] = __float2bfloat16_rn(value);
  } else {
    static_cast<float*>(out)[i] = value;
  }
}

// int4: two codes per byte (low nibble first: quant/hqq.cc int4_unpack_row), scale and zero per group.
__global__ void dequantize_int4_kernel(QuantizedView w, int64_t row_begin, int64_t count, bool to_bf16, void* out) {
  const int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= count) return;
  const int64_t r = row_begin + i / w.cols, c = i % w.cols;
  const uint32_t byte = w.codes[r * (w.cols / 2) + c / 2];
  const uint32_t q = c % 2 ? byte >> 4 : byte & 0x0fu;
  const int64_t g = r * (w.cols / w.group) + c / w.group;
  const float value = __fmul_rn(__fsub_rn(static_cast<float>(q), w.zeros[g]), w.scales[g]);
  if (to_bf16) {
    static_cast<__nv_bfloat16*>(out)[i] = __float2bfloat16_rn(value);
  } else {
    static_cast<float*>(out)[i] = value;
  }
}

// ---- fused GEMV (decode) ----

constexpr int kWarpsPerBlock = 8;

// y[t][row] (=|+=) Σ_c x[t][c]·W[row][c], one warp per row: each lane loads 16 bytes of codes at a time (16 byte
// codes, or 32 int4 codes — one group, since groups are ≥ 32 columns and loads start at multiples of 32), decodes
// them in registers and applies them to every token. In kBF16 mode (round) both the decoded weight and x are
// rounded to bf16 first, so the products are the CPU's exact bf16 products.
template <WeightCoding kCoding, int kTokens>
__global__ void __launch_bounds__(kWarpsPerBlock * 32)
    gemv_quantized_kernel(QuantizedView w, const float* x, float* y, bool round, bool accumulate) {
  __shared__ float table[kCodeTableSize];
  if constexpr (kCoding == WeightCoding::kCodeTable) {
    for (int i = threadIdx.x; i < kCodeTableSize; i += blockDim.x) table[i] = w.table[i];
    __syncthreads();
  }
  const int64_t row = int64_t(blockIdx.x) * kWarpsPerBlock + threadIdx.x / 32;
  const int lane = threadIdx.x % 32;
  if (row >= w.rows) return;
  constexpr bool kInt4 = kCoding == WeightCoding::kInt4;
  constexpr int kCodesPerLoad = kInt4 ? 32 : 16;
  const int64_t row_bytes = kInt4 ? w.cols / 2 : w.cols;
  const uint4* codes = reinterpret_cast<const uint4*>(w.codes + row * row_bytes);
  const int64_t loads = row_bytes / 16;
  const float row_scale = kInt4 ? 0.0f : w.scales[row];
  float sums[kTokens];
#pragma unroll
  for (int t = 0; t < kTokens; ++t) sums[t] = 0.0f;
#pragma unroll 2
  for (int64_t l = lane; l < loads; l += 32) {
    const uint4 packed = __ldg(codes + l);
    const uint32_t words[4] = {packed.x, packed.y, packed.z, packed.w};
    float weights[kCodesPerLoad];
    if constexpr (kInt4) {
      const int64_t g = row * (w.cols / w.group) + l * kCodesPerLoad / w.group;
      const float scale = __ldg(w.scales + g), zero = __ldg(w.zeros + g);
#pragma unroll
      for (int i = 0; i < 32; ++i) {
        const uint32_t q = (words[i / 8] >> (4 * (i % 8))) & 0x0fu;  // byte b: low nibble = column 2b
        weights[i] = __fmul_rn(__fsub_rn(static_cast<float>(q), zero), scale);
      }
    } else {
#pragma unroll
      for (int i = 0; i < 16; ++i) {
        weights[i] = __fmul_rn(code_value<kCoding>((words[i / 4] >> (8 * (i % 4))) & 0xffu, table), row_scale);
      }
    }
    if (round) {
#pragma unroll
      for (int i = 0; i < kCodesPerLoad; ++i) weights[i] = round_bf16(weights[i]);
    }
#pragma unroll
    for (int t = 0; t < kTokens; ++t) {
      const float4* xv = reinterpret_cast<const float4*>(x + t * w.cols + l * kCodesPerLoad);
#pragma unroll
      for (int j = 0; j < kCodesPerLoad / 4; ++j) {
        const float4 a = __ldg(xv + j);
        const float xs[4] = {a.x, a.y, a.z, a.w};
#pragma unroll
        for (int u = 0; u < 4; ++u) sums[t] += (round ? round_bf16(xs[u]) : xs[u]) * weights[4 * j + u];
      }
    }
  }
#pragma unroll
  for (int t = 0; t < kTokens; ++t) {
    float s = sums[t];
    for (int offset = 16; offset > 0; offset /= 2) s += __shfl_xor_sync(0xffffffffu, s, offset);
    if (lane == 0) y[t * w.rows + row] = accumulate ? y[t * w.rows + row] + s : s;
  }
}

template <WeightCoding kCoding>
void launch_gemv(const QuantizedView& w, const float* x, float* y, int64_t tokens, bool round, bool accumulate,
                 cudaStream_t stream) {
  const unsigned blocks = static_cast<unsigned>((w.rows + kWarpsPerBlock - 1) / kWarpsPerBlock);
  constexpr unsigned threads = kWarpsPerBlock * 32;
  switch (tokens) {
    case 1:
      return gemv_quantized_kernel<kCoding, 1><<<blocks, threads, 0, stream>>>(w, x, y, round, accumulate);
    case 2:
      return gemv_quantized_kernel<kCoding, 2><<<blocks, threads, 0, stream>>>(w, x, y, round, accumulate);
    case 3:
      return gemv_quantized_kernel<kCoding, 3><<<blocks, threads, 0, stream>>>(w, x, y, round, accumulate);
    default:
      return gemv_quantized_kernel<kCoding, 4><<<blocks, threads, 0, stream>>>(w, x, y, round, accumulate);
  }
}

}  // namespace

void dequantize_rows(const QuantizedView& w, int64_t row_begin, int64_t rows, bool to_bf16, void* out,
                     cudaStream_t stream) {
  const int64_t count = rows * w.cols;
  if (count == 0) return;
  constexpr int kThreads = 256;
  const unsigned blocks = static_cast<unsigned>((count + kThreads - 1) / kThreads);
  switch (w.coding) {
    case WeightCoding::kInt8:
      return dequantize_bytes_kernel<WeightCoding::kInt8>
          <<<blocks, kThreads, 0, stream>>>(w, row_begin, count, to_bf16, out);
    case WeightCoding::kFp8:
      return dequantize_bytes_kernel<WeightCoding::kFp8>
          <<<blocks, kThreads, 0, stream>>>(w, row_begin, count, to_bf16, out);
    case WeightCoding::kCodeTable:
      return dequantize_bytes_kernel<WeightCoding::kCodeTable>
          <<<blocks, kThreads, 0, stream>>>(w, row_begin, count, to_bf16, out);
    case WeightCoding::kInt4:
      return dequantize_int4_kernel<<<blocks, kThreads, 0, stream>>>(w, row_begin, count, to_bf16, out);
    case WeightCoding::kDense:
      return;
  }
}

bool gemv_quantized(const QuantizedView& w, const float* x, float* y, int64_t tokens, bool round, bool accumulate,
                    cudaStream_t stream) {
  const int64_t row_bytes = w.coding == WeightCoding::kInt4 ? w.cols / 2 : w.cols;
  const bool aligned = reinterpret_cast<uintptr_t>(w.codes) % 16 == 0 && reinterpret_cast<uintptr_t>(x) % 16 == 0;
  if (!aligned || row_bytes % 16 != 0 || tokens < 1 || tokens > kMaxGemvTokens) return false;
  if (w.coding == WeightCoding::kInt4 && w.group < 32) return false;  // one group per 16-byte load
  switch (w.coding) {
    case WeightCoding::kInt8:
      launch_gemv<WeightCoding::kInt8>(w, x, y, tokens, round, accumulate, stream);
      return true;
    case WeightCoding::kFp8:
      launch_gemv<WeightCoding::kFp8>(w, x, y, tokens, round, accumulate, stream);
      return true;
    case WeightCoding::kCodeTable:
      launch_gemv<WeightCoding::kCodeTable>(w, x, y, tokens, round, accumulate, stream);
      return true;
    case WeightCoding::kInt4:
      launch_gemv<WeightCoding::kInt4>(w, x, y, tokens, round, accumulate, stream);
      return true;
    case WeightCoding::kDense:
      return false;
  }
  return false;
}

}  // namespace hx::cuda
