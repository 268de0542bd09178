// Prefill attention on the tensor cores, flash-attention-2 style: causal, sliding window, GQA.
//
// One block per (tile of 64 queries, q head), 4 warps of 16 queries each. The warp's queries live in registers as
// mma A fragments; K and V come in tiles of 64 keys through shared memory (V transposed, so each B fragment is one
// 32-bit load), shared by the 4 warps. Scores S = Q·Kᵀ and the output O += P·V are bf16 mma.sync m16n8k16 products
// with f32 accumulators; the online softmax (running max and sum per query row) stays in registers, and P goes from
// the S accumulators to A fragments without leaving them.
//
// Accuracy: the CPU reference computes attention in f32 in both compute modes, so every operand is split into
// hi = bf16(x) and lo = bf16(x − hi) and each product is taken as hi·hi + hi·lo + lo·hi (the "bf16×3" scheme):
// ~16 significant bits per operand instead of 8, three times the mma work, still far faster than the CUDA cores.
// Measured against the f32 kernels in tests/verify_cuda_test.cc (CudaAttentionKernels).
//
// Non-goals: head sizes above 128 (Q fragments and the output accumulators of 16 rows × D would not fit in the
// registers: those take attention.cu's f32 kernels); decode (few queries: attention.cu's split kernel); Hopper's
// wgmma/TMA (mma.sync is portable to sm_80 and already makes attention a small part of prefill).
#include <cuda_bf16.h>

#include <cfloat>
#include <cstdint>

#include "verify/cuda/cuda_kernels.h"

namespace hx::cuda {
namespace {

constexpr int kWarps = 4;
constexpr int kThreads = 32 * kWarps;
constexpr int kRowsPerWarp = 16;
constexpr int kTileQ = kRowsPerWarp * kWarps;  // 64 queries per block
constexpr int kTileK = 64;                     // keys per shared-memory tile
constexpr int kPad = 8;                        // bf16 of padding per smem row: fragment loads hit 32 distinct banks

// hi = bf16(a, b) (a in the low half: the mma operand order), lo = bf16 of what hi left over.
__device__ __forceinline__ void split_pair(float a, float b, uint32_t& hi, uint32_t& lo) {
  const __nv_bfloat162 h = __floats2bfloat162_rn(a, b);
  const float2 back = __bfloat1622float2(h);
  const __nv_bfloat162 l = __floats2bfloat162_rn(a - back.x, b - back.y);
  hi = *reinterpret_cast<const uint32_t*>(&h);
  lo = *reinterpret_cast<const uint32_t*>(&l);
}

__device__ __forceinline__ void mma(float (&c)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
      "{%0,%1,%2,%3};\n"
      : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

// c += (a_hi + a_lo)·(b_hi + b_lo) without the lo·lo term.
__device__ __forceinline__ void mma3(float (&c)[4], const uint32_t (&a_hi)[4], const uint32_t (&a_lo)[4],
                                     uint32_t bh0, uint32_t bh1, uint32_t bl0, uint32_t bl1) {
  mma(c, a_hi, bh0, bh1);
  mma(c, a_hi, bl0, bl1);
  mma(c, a_lo, bh0, bh1);
}

// Fragment coordinates (PTX ISA, mma.m16n8k16): lane = 4·g + j. A: rows g and g+8, k pairs 2j and 2j+8.
// B: k pairs 2j and 2j+8, column g. C: rows g and g+8, columns 2j and 2j+1.
template <int D>
__global__ void __launch_bounds__(kThreads)
    attention_tc_kernel(AttentionShape shape, const float* q, int64_t tokens, const float* k, const float* v,
                        int64_t cache_len, float* out) {
  static_assert(D % 16 == 0 && D <= 128, "head_dim: a multiple of 16, at most 128");
  constexpr int kChunks = D / 16;  // k chunks of Q·Kᵀ
  constexpr int kDimTiles = D / 8;  // n tiles of P·V
  constexpr int kKeyTiles = kTileK / 8;
  constexpr int kRowK = D + kPad, kRowV = kTileK + kPad;
  extern __shared__ __nv_bfloat16 shared[];
  __nv_bfloat16* k_hi = shared;               // [kTileK][kRowK]
  __nv_bfloat16* k_lo = k_hi + kTileK * kRowK;
  __nv_bfloat16* v_hi = k_lo + kTileK * kRowK;  // transposed: [D][kRowV]
  __nv_bfloat16* v_lo = v_hi + D * kRowV;

  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, g = lane / 4, j = lane % 4;
  const int64_t head = blockIdx.y, kv_head = head / (shape.q_heads / shape.kv_heads);
  const int64_t q_stride = shape.q_heads * D, kv_stride = shape.kv_heads * D;
  const int64_t past = cache_len - tokens, t0 = int64_t(blockIdx.x) * kTileQ;
  const int64_t window = shape.sliding_window;

  // This thread's two query rows (g and g + 8 of the warp's 16).
  int64_t row_t[2], row_pos[2], row_first[2];
  for (int r = 0; r < 2; ++r) {
    row_t[r] = t0 + warp * kRowsPerWarp + g + 8 * r;
    row_pos[r] = past + row_t[r];
    row_first[r] = window > 0 ? max(int64_t(0), row_pos[r] - window + 1) : 0;
  }

  uint32_t q_hi[kChunks][4], q_lo[kChunks][4];
#pragma unroll
  for (int c = 0; c < kChunks; ++c) {
#pragma unroll
    for (int reg = 0; reg < 4; ++reg) {
      const int r = reg % 2, col = c * 16 + 2 * j + 8 * (reg / 2);
      float2 x = make_float2(0.0f, 0.0f);
      if (row_t[r] < tokens) x = *reinterpret_cast<const float2*>(q + row_t[r] * q_stride + head * D + col);
      split_pair(x.x, x.y, q_hi[c][reg], q_lo[c][reg]);
    }
  }

  float o[kDimTiles][4];
#pragma unroll
  for (int n = 0; n < kDimTiles; ++n) o[n][0] = o[n][1] = o[n][2] = o[n][3] = 0.0f;
  float row_max[2] = {-INFINITY, -INFINITY}, row_sum[2] = {0.0f, 0.0f};

  const int64_t last_t = min(tokens, t0 + kTileQ) - 1;
  const int64_t block_last = past + last_t;
  const int64_t block_first = window > 0 ? max(int64_t(0), past + t0 - window + 1) : 0;
  for (int64_t start = block_first; start <= block_last; start += kTileK) {
    __syncthreads();  // the previous tile is consumed
    for (int e = threadIdx.x; e < kTileK * D / 2; e += kThreads) {
      const int key = e / (D / 2), i = 2 * (e % (D / 2));
      const int64_t pos = start + key;
      float2 kx = make_float2(0.0f, 0.0f), vx = kx;
      if (pos <= block_last) {
        kx = *reinterpret_cast<const float2*>(k + pos * kv_stride + kv_head * D + i);
        vx = *reinterpret_cast<const float2*>(v + pos * kv_stride + kv_head * D + i);
      }
      uint32_t hi, lo;
      split_pair(kx.x, kx.y, hi, lo);
      *reinterpret_cast<uint32_t*>(k_hi + key * kRowK + i) = hi;
      *reinterpret_cast<uint32_t*>(k_lo + key * kRowK + i) = lo;
      split_pair(vx.x, vx.y, hi, lo);
      v_hi[i * kRowV + key] = __ushort_as_bfloat16(static_cast<unsigned short>(hi & 0xffffu));
      v_hi[(i + 1) * kRowV + key] = __ushort_as_bfloat16(static_cast<unsigned short>(hi >> 16));
      v_lo[i * kRowV + key] = __ushort_as_bfloat16(static_cast<unsigned short>(lo & 0xffffu));
      v_lo[(i + 1) * kRowV + key] = __ushort_as_bfloat16(static_cast<unsigned short>(lo >> 16));
    }
    __syncthreads();

    // S = Q·Kᵀ for 8 tiles of 8 keys.
    float s[kKeyTiles][4];
#pragma unroll
    for (int n = 0; n < kKeyTiles; ++n) s[n][0] = s[n][1] = s[n][2] = s[n][3] = 0.0f;
#pragma unroll
    for (int c = 0; c < kChunks; ++c) {
#pragma unroll
      for (int n = 0; n < kKeyTiles; ++n) {
        const int at = (n * 8 + g) * kRowK + c * 16 + 2 * j;
        const uint32_t bh0 = *reinterpret_cast<const uint32_t*>(k_hi + at);
        const uint32_t bh1 = *reinterpret_cast<const uint32_t*>(k_hi + at + 8);
        const uint32_t bl0 = *reinterpret_cast<const uint32_t*>(k_lo + at);
        const uint32_t bl1 = *reinterpret_cast<const uint32_t*>(k_lo + at + 8);
        mma3(s[n], q_hi[c], q_lo[c], bh0, bh1, bl0, bl1);
      }
    }

    // Scale, mask, online softmax (rows g and g + 8; a row's 16 keys of each tile are spread over 4 lanes).
    float tile_max[2] = {-INFINITY, -INFINITY};
#pragma unroll
    for (int n = 0; n < kKeyTiles; ++n) {
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const int r = e / 2;
        const int64_t pos = start + n * 8 + 2 * j + e % 2;
        const bool visible = row_t[r] < tokens && pos <= row_pos[r] && pos >= row_first[r];
        s[n][e] = visible ? s[n][e] * shape.scale : -INFINITY;
        tile_max[r] = fmaxf(tile_max[r], s[n][e]);
      }
    }
    float rescale[2], base[2];
#pragma unroll
    for (int r = 0; r < 2; ++r) {
      tile_max[r] = fmaxf(tile_max[r], __shfl_xor_sync(0xffffffffu, tile_max[r], 1));
      tile_max[r] = fmaxf(tile_max[r], __shfl_xor_sync(0xffffffffu, tile_max[r], 2));
      const float new_max = fmaxf(row_max[r], tile_max[r]);
      base[r] = new_max == -INFINITY ? 0.0f : new_max;  // a row with nothing visible yet: all p = 0, no NaN
      rescale[r] = expf(row_max[r] - base[r]);
      row_max[r] = new_max;
      row_sum[r] *= rescale[r];
    }
#pragma unroll
    for (int n = 0; n < kKeyTiles; ++n) {
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        s[n][e] = expf(s[n][e] - base[e / 2]);
        row_sum[e / 2] += s[n][e];
      }
    }
#pragma unroll
    for (int n = 0; n < kDimTiles; ++n) {
      o[n][0] *= rescale[0], o[n][1] *= rescale[0], o[n][2] *= rescale[1], o[n][3] *= rescale[1];
    }

    // O += P·V, 16 keys at a time: the S accumulators of key tiles 2c and 2c+1 are the A fragment.
#pragma unroll
    for (int c = 0; c < kTileK / 16; ++c) {
      uint32_t p_hi[4], p_lo[4];
      split_pair(s[2 * c][0], s[2 * c][1], p_hi[0], p_lo[0]);
      split_pair(s[2 * c][2], s[2 * c][3], p_hi[1], p_lo[1]);
      split_pair(s[2 * c + 1][0], s[2 * c + 1][1], p_hi[2], p_lo[2]);
      split_pair(s[2 * c + 1][2], s[2 * c + 1][3], p_hi[3], p_lo[3]);
#pragma unroll
      for (int n = 0; n < kDimTiles; ++n) {
        const int at = (n * 8 + g) * kRowV + c * 16 + 2 * j;
        const uint32_t bh0 = *reinterpret_cast<const uint32_t*>(v_hi + at);
        const uint32_t bh1 = *reinterpret_cast<const uint32_t*>(v_hi + at + 8);
        const uint32_t bl0 = *reinterpret_cast<const uint32_t*>(v_lo + at);
        const uint32_t bl1 = *reinterpret_cast<const uint32_t*>(v_lo + at + 8);
        mma3(o[n], p_hi, p_lo, bh0, bh1, bl0, bl1);
      }
    }
  }

#pragma unroll
  for (int r = 0; r < 2; ++r) {
    row_sum[r] += __shfl_xor_sync(0xffffffffu, row_sum[r], 1);
    row_sum[r] += __shfl_xor_sync(0xffffffffu, row_sum[r], 2);
  }
#pragma unroll
  for (int r = 0; r < 2; ++r) {
    if (row_t[r] >= tokens) continue;
    float* dst = out + row_t[r] * q_stride + head * D + 2 * j;
#pragma unroll
    for (int n = 0; n < kDimTiles; ++n) {
      *reinterpret_cast<float2*>(dst + n * 8) = make_float2(o[n][2 * r] / row_sum[r], o[n][2 * r + 1] / row_sum[r]);
    }
  }
}

template <int D>
void launch(const AttentionShape& shape, const float* q, int64_t tokens, const float* k, const float* v,
            int64_t cache_len, float* out, cudaStream_t stream) {
  const size_t bytes = sizeof(__nv_bfloat16) * 2 * (size_t{kTileK} * (D + kPad) + size_t{D} * (kTileK + kPad));
  const auto kernel = attention_tc_kernel<D>;
  cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(bytes));
  const dim3 grid(static_cast<unsigned>((tokens + kTileQ - 1) / kTileQ), static_cast<unsigned>(shape.q_heads));
  kernel<<<grid, kThreads, bytes, stream>>>(shape, q, tokens, k, v, cache_len, out);
}

}  // namespace

bool causal_attention_tensor_cores(const AttentionShape& shape, const float* q, int64_t tokens, const float* k,
                                   const float* v, int64_t cache_len, float* out, cudaStream_t stream) {
  switch (shape.head_dim) {
    case 32:
      launch<32>(shape, q, tokens, k, v, cache_len, out, stream);
      return true;
    case 64:
      launch<64>(shape, q, tokens, k, v, cache_len, out, stream);
      return true;
    case 96:
      launch<96>(shape, q, tokens, k, v, cache_len, out, stream);
      return true;
    case 128:
      launch<128>(shape, q, tokens, k, v, cache_len, out, stream);
      return true;
    default:
      return false;
  }
}

}  // namespace hx::cuda
