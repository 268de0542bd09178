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

#include <algorithm>
#include <cstdint>

#include "verify/cuda/cuda_kernels.h"

namespace hx::cuda {
namespace {

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

// Eight or sixteen activations of token t from column `col` on, as f32: read as bf16 (kBF16 mode: rounded once per
// call by the caller, widened here with a shift) or f32.
template <bool kXBf16, int kCount>
__device__ __forceinline__ void load_x(const GemvInput& x, int64_t cols, int t, int64_t col, float (&out)[kCount]) {
  if constexpr (kXBf16) {
    const uint4* p = reinterpret_cast<const uint4*>(x.bf16 + t * cols + col);
#pragma unroll
    for (int u = 0; u < kCount / 8; ++u) {
      const uint4 v = __ldg(p + u);
      const uint32_t words[4] = {v.x, v.y, v.z, v.w};
#pragma unroll
      for (int i = 0; i < 4; ++i) {
        out[8 * u + 2 * i] = __uint_as_float(words[i] << 16);
        out[8 * u + 2 * i + 1] = __uint_as_float(words[i] & 0xffff0000u);
      }
    }
  } else {
    const float4* p = reinterpret_cast<const float4*>(x.f32 + t * cols + col);
#pragma unroll
    for (int u = 0; u < kCount / 4; ++u) {
      const float4 v = __ldg(p + u);
      out[4 * u] = v.x, out[4 * u + 1] = v.y, out[4 * u + 2] = v.z, out[4 * u + 3] = v.w;
    }
  }
}

// The 16 byte codes of `words` (little-endian: code i in byte i) as their values, before the scale. int8 goes through
// the exponent trick (2^23 + (q + 128) as float bits, minus 2^23 + 128: exact) instead of the slower int→float
// conversion; fp8 through the paired e4m3 → f16 conversion (exact, then exact to f32).
template <WeightCoding kCoding>
__device__ __forceinline__ void byte_code_values(const uint32_t (&words)[4], const float* table, float (&out)[16]) {
#pragma unroll
  for (int w = 0; w < 4; ++w) {
    if constexpr (kCoding == WeightCoding::kInt8) {
      const uint32_t biased = words[w] ^ 0x80808080u;  // q + 128 in each byte
#pragma unroll
      for (int b = 0; b < 4; ++b) {
        out[4 * w + b] = __uint_as_float(__byte_perm(biased, 0x4b00u, 0x5440u | b)) - 8388736.0f;
      }
    } else if constexpr (kCoding == WeightCoding::kFp8) {
#pragma unroll
      for (int h = 0; h < 2; ++h) {
        const __half2_raw pair = __nv_cvt_fp8x2_to_halfraw2(
            static_cast<__nv_fp8x2_storage_t>((words[w] >> (16 * h)) & 0xffffu), __NV_E4M3);
        const float2 f = __half22float2(__half2(pair));
        out[4 * w + 2 * h] = f.x, out[4 * w + 2 * h + 1] = f.y;
      }
    } else {
#pragma unroll
      for (int b = 0; b < 4; ++b) out[4 * w + b] = table[(words[w] >> (8 * b)) & 0xffu];
    }
  }
}

// Rounds pairs to bf16 (nearest even, one paired conversion per two values) and widens them back.
template <int kCount>
__device__ __forceinline__ void round_to_bf16(float (&values)[kCount]) {
#pragma unroll
  for (int i = 0; i < kCount; i += 2) {
    const __nv_bfloat162 r = __floats2bfloat162_rn(values[i], values[i + 1]);
    const uint32_t bits = *reinterpret_cast<const uint32_t*>(&r);
    values[i] = __uint_as_float(bits << 16);
    values[i + 1] = __uint_as_float(bits & 0xffff0000u);
  }
}

// y[t][row] (=|+=) Σ_c x[t][c]·W[row][c], one warp per row: each lane loads 16 bytes of codes at a time (16 byte
// codes, or 32 int4 codes — one group, since groups are ≥ 32 columns and loads start at multiples of 32), decodes
// them in registers and applies them to every token. In kBF16 mode (x given as bf16) the decoded weights are rounded
// to bf16 too, so the products are the CPU's exact bf16 products.
template <WeightCoding kCoding, int kTokens, bool kXBf16>
__global__ void __launch_bounds__(kWarpsPerBlock * 32)
    gemv_quantized_kernel(QuantizedView w, GemvInput x, float* y, bool accumulate) {
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
      for (int i = 0; i < 32; ++i) {  // byte b: low nibble = column 2b; q as float by the exponent trick
        const float q = __uint_as_float(((words[i / 8] >> (4 * (i % 8))) & 0x0fu) | 0x4b000000u) - 8388608.0f;
        weights[i] = __fmul_rn(__fsub_rn(q, zero), scale);
      }
    } else {
      byte_code_values<kCoding>(words, table, weights);
#pragma unroll
      for (int i = 0; i < 16; ++i) weights[i] = __fmul_rn(weights[i], row_scale);
    }
    if constexpr (kXBf16) round_to_bf16(weights);
#pragma unroll
    for (int t = 0; t < kTokens; ++t) {
      float xs[kCodesPerLoad];
      load_x<kXBf16>(x, w.cols, t, l * kCodesPerLoad, xs);
#pragma unroll
      for (int i = 0; i < kCodesPerLoad; ++i) sums[t] += xs[i] * weights[i];
    }
  }
#pragma unroll
  for (int t = 0; t < kTokens; ++t) {
    float s = sums[t];
    for (int offset = 16; offset > 0; offset /= 2) s += __shfl_xor_sync(0xffffffffu, s, offset);
    if (lane == 0) y[t * w.rows + row] = accumulate ? y[t * w.rows + row] + s : s;
  }
}

// Prefill's dequantization with whole 16-byte loads (16 byte codes, or 32 int4 codes of one group) per thread,
// decoded exactly as the GEMV decodes them, written as bf16 pairs or f32 quads. (The element-wise kernels above take
// rows whose bytes are not a multiple of 16.)
template <WeightCoding kCoding, bool kBf16Out>
__global__ void dequantize_loads_kernel(QuantizedView w, int64_t row_begin, int64_t rows, void* out) {
  __shared__ float table[kCodeTableSize];
  if constexpr (kCoding == WeightCoding::kCodeTable) {
    for (int i = threadIdx.x; i < kCodeTableSize; i += blockDim.x) table[i] = w.table[i];
    __syncthreads();
  }
  constexpr bool kInt4 = kCoding == WeightCoding::kInt4;
  constexpr int kCodes = kInt4 ? 32 : 16;
  const int64_t row_loads = (kInt4 ? w.cols / 2 : w.cols) / 16;
  const uint4* codes = reinterpret_cast<const uint4*>(w.codes) + row_begin * row_loads;
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < rows * row_loads;
       i += int64_t(gridDim.x) * blockDim.x) {
    const int64_t r = i / row_loads, l = i - r * row_loads;
    const uint4 packed = __ldg(codes + i);
    const uint32_t words[4] = {packed.x, packed.y, packed.z, packed.w};
    float values[kCodes];
    if constexpr (kInt4) {
      const int64_t g = (row_begin + r) * (w.cols / w.group) + l * kCodes / w.group;
      const float scale = __ldg(w.scales + g), zero = __ldg(w.zeros + g);
#pragma unroll
      for (int c = 0; c < 32; ++c) {
        const float q = __uint_as_float(((words[c / 8] >> (4 * (c % 8))) & 0x0fu) | 0x4b000000u) - 8388608.0f;
        values[c] = __fmul_rn(__fsub_rn(q, zero), scale);
      }
    } else {
      byte_code_values<kCoding>(words, table, values);
      const float scale = __ldg(w.scales + row_begin + r);
#pragma unroll
      for (int c = 0; c < 16; ++c) values[c] = __fmul_rn(values[c], scale);
    }
    const int64_t at = r * w.cols + l * kCodes;
    if constexpr (kBf16Out) {
      uint4* dst = reinterpret_cast<uint4*>(static_cast<__nv_bfloat16*>(out) + at);
#pragma unroll
      for (int u = 0; u < kCodes / 8; ++u) {
        uint32_t pairs[4];
#pragma unroll
        for (int p = 0; p < 4; ++p) {
          const __nv_bfloat162 b = __floats2bfloat162_rn(values[8 * u + 2 * p], values[8 * u + 2 * p + 1]);
          pairs[p] = *reinterpret_cast<const uint32_t*>(&b);
        }
        dst[u] = make_uint4(pairs[0], pairs[1], pairs[2], pairs[3]);
      }
    } else {
      float4* dst = reinterpret_cast<float4*>(static_cast<float*>(out) + at);
#pragma unroll
      for (int u = 0; u < kCodes / 4; ++u)
        dst[u] = make_float4(values[4 * u], values[4 * u + 1], values[4 * u + 2], values[4 * u + 3]);
    }
  }
}

template <WeightCoding kCoding>
void launch_dequantize_loads(const QuantizedView& w, int64_t row_begin, int64_t rows, bool to_bf16, void* out,
                             cudaStream_t stream) {
  const int64_t loads = rows * ((w.coding == WeightCoding::kInt4 ? w.cols / 2 : w.cols) / 16);
  constexpr int kThreads = 256;
  const unsigned blocks = static_cast<unsigned>(std::min<int64_t>((loads + kThreads - 1) / kThreads, 1 << 16));
  if (to_bf16) {
    dequantize_loads_kernel<kCoding, true><<<blocks, kThreads, 0, stream>>>(w, row_begin, rows, out);
  } else {
    dequantize_loads_kernel<kCoding, false><<<blocks, kThreads, 0, stream>>>(w, row_begin, rows, out);
  }
}

template <WeightCoding kCoding, bool kXBf16>
void launch_gemv(const QuantizedView& w, const GemvInput& x, float* y, int64_t tokens, bool accumulate,
                 cudaStream_t stream) {
  const unsigned blocks = static_cast<unsigned>((w.rows + kWarpsPerBlock - 1) / kWarpsPerBlock);
  constexpr unsigned threads = kWarpsPerBlock * 32;
  switch (tokens) {
    case 1:
      return gemv_quantized_kernel<kCoding, 1, kXBf16><<<blocks, threads, 0, stream>>>(w, x, y, accumulate);
    case 2:
      return gemv_quantized_kernel<kCoding, 2, kXBf16><<<blocks, threads, 0, stream>>>(w, x, y, accumulate);
    case 3:
      return gemv_quantized_kernel<kCoding, 3, kXBf16><<<blocks, threads, 0, stream>>>(w, x, y, accumulate);
    default:
      return gemv_quantized_kernel<kCoding, 4, kXBf16><<<blocks, threads, 0, stream>>>(w, x, y, accumulate);
  }
}

template <WeightCoding kCoding>
void launch_gemv(const QuantizedView& w, const GemvInput& x, float* y, int64_t tokens, bool accumulate,
                 cudaStream_t stream) {
  if (x.bf16) {
    launch_gemv<kCoding, true>(w, x, y, tokens, accumulate, stream);
  } else {
    launch_gemv<kCoding, false>(w, x, y, tokens, accumulate, stream);
  }
}

}  // namespace

void dequantize_rows(const QuantizedView& w, int64_t row_begin, int64_t rows, bool to_bf16, void* out,
                     cudaStream_t stream) {
  const int64_t count = rows * w.cols;
  if (count == 0) return;
  const int64_t row_bytes = w.coding == WeightCoding::kInt4 ? w.cols / 2 : w.cols;
  const bool whole_loads = row_bytes % 16 == 0 && reinterpret_cast<uintptr_t>(w.codes) % 16 == 0 &&
                           reinterpret_cast<uintptr_t>(out) % 16 == 0 &&
                           (w.coding != WeightCoding::kInt4 || w.group >= 32);
  if (whole_loads) {
    switch (w.coding) {
      case WeightCoding::kInt8:
        return launch_dequantize_loads<WeightCoding::kInt8>(w, row_begin, rows, to_bf16, out, stream);
      case WeightCoding::kFp8:
        return launch_dequantize_loads<WeightCoding::kFp8>(w, row_begin, rows, to_bf16, out, stream);
      case WeightCoding::kCodeTable:
        return launch_dequantize_loads<WeightCoding::kCodeTable>(w, row_begin, rows, to_bf16, out, stream);
      case WeightCoding::kInt4:
        return launch_dequantize_loads<WeightCoding::kInt4>(w, row_begin, rows, to_bf16, out, stream);
      case WeightCoding::kDense:
        return;
    }
  }
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

bool gemv_quantized(const QuantizedView& w, const GemvInput& x, float* y, int64_t tokens, bool accumulate,
                    cudaStream_t stream) {
  const int64_t row_bytes = w.coding == WeightCoding::kInt4 ? w.cols / 2 : w.cols;
  const void* x_data = x.bf16 ? static_cast<const void*>(x.bf16) : static_cast<const void*>(x.f32);
  const bool aligned = reinterpret_cast<uintptr_t>(w.codes) % 16 == 0 && reinterpret_cast<uintptr_t>(x_data) % 16 == 0;
  if (!aligned || row_bytes % 16 != 0 || tokens < 1 || tokens > kMaxGemvTokens) return false;
  if (w.coding == WeightCoding::kInt4 && w.group < 32) return false;  // one group per 16-byte load
  switch (w.coding) {
    case WeightCoding::kInt8:
      launch_gemv<WeightCoding::kInt8>(w, x, y, tokens, accumulate, stream);
      return true;
    case WeightCoding::kFp8:
      launch_gemv<WeightCoding::kFp8>(w, x, y, tokens, accumulate, stream);
      return true;
    case WeightCoding::kCodeTable:
      launch_gemv<WeightCoding::kCodeTable>(w, x, y, tokens, accumulate, stream);
      return true;
    case WeightCoding::kInt4:
      launch_gemv<WeightCoding::kInt4>(w, x, y, tokens, accumulate, stream);
      return true;
    case WeightCoding::kDense:
      return false;
  }
  return false;
}

}  // namespace hx::cuda
