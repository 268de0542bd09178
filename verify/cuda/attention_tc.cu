// Prefill attention on the tensor cores, flash-attention-2 style: causal, sliding window, GQA.
//
// A first pass splits the cache's K and V once per call into bf16 hi/lo planes, per kv head, V transposed
// ([kv_head][d][position]), so that the main kernel's tiles are contiguous rows it copies with cp.async, double
// buffered (the next tile loads while this one is multiplied), instead of converting f32 rows once per q head.
// Main kernel: one block per (tile of 64 queries, q head), 4 warps of 16 queries each. The warp's queries live in
// registers as mma A fragments; K and V come in tiles of 64 keys through shared memory (V transposed, so each B
// fragment is one 32-bit load), shared by the 4 warps. Scores S = Q·Kᵀ and the output O += P·V are bf16 mma.sync
// m16n8k16 products with f32 accumulators; the online softmax (running max and sum per query row) stays in
// registers, and P goes from the S accumulators to A fragments without leaving them.
//
// Accuracy: the CPU reference computes attention in f32 in both compute modes, so every operand is split into
// hi = bf16(x) and lo = bf16(x − hi) and each product is taken as hi·hi + hi·lo + lo·hi (the "bf16×3" scheme):
// ~16 significant bits per operand instead of 8, three times the mma work, still far faster than the CUDA cores.
// Measured against the f32 kernels in tests/verify_cuda_test.cc (CudaAttentionKernels).
//
// Heads of 256 and 512 take a variant with Q in shared memory and the output dims split over blocks (below).
// Non-goals: other head sizes (attention.cu's f32 kernels take them); decode (few queries: attention.cu's split
// kernel); Hopper's wgmma/TMA (mma.sync is portable to sm_80 and already makes attention a small part of prefill).
#include <cuda_bf16.h>

#include <algorithm>
#include <cfloat>
#include <cstdint>
#include <string>

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

__device__ __forceinline__ void copy_async_16(void* shared_dst, const void* global_src) {
  const unsigned dst = static_cast<unsigned>(__cvta_generic_to_shared(shared_dst));
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16;\n" ::"r"(dst), "l"(global_src));
}
__device__ __forceinline__ void copy_async_commit() { asm volatile("cp.async.commit_group;\n" ::); }
template <int kPending>
__device__ __forceinline__ void copy_async_wait() {
  asm volatile("cp.async.wait_group %0;\n" ::"n"(kPending));
}

// The planes of one call: positions [0, padded) of each kv head, zero past cache_len (whole tiles, no bounds checks).
struct SplitKv {
  __nv_bfloat16 *k_hi, *k_lo;  // [kv_heads][padded][D]
  __nv_bfloat16 *v_hi, *v_lo;  // [kv_heads][D][padded]
  int64_t padded;
};

// One thread per pair of (position, dim) values of one kv head.
__global__ void split_kv_kernel(const float* k, const float* v, int64_t cache_len, int64_t kv_heads, int64_t d,
                                SplitKv out) {
  const int64_t pairs = kv_heads * out.padded * d / 2;
  for (int64_t e = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; e < pairs; e += int64_t(gridDim.x) * blockDim.x) {
    const int64_t i = 2 * (e % (d / 2)), pos = (e / (d / 2)) % out.padded, h = e / (d / 2) / out.padded;
    float2 kx = make_float2(0.0f, 0.0f), vx = kx;
    if (pos < cache_len) {
      kx = *reinterpret_cast<const float2*>(k + (pos * kv_heads + h) * d + i);
      vx = *reinterpret_cast<const float2*>(v + (pos * kv_heads + h) * d + i);
    }
    uint32_t hi, lo;
    split_pair(kx.x, kx.y, hi, lo);
    const int64_t at = (h * out.padded + pos) * d + i;
    *reinterpret_cast<uint32_t*>(out.k_hi + at) = hi;
    *reinterpret_cast<uint32_t*>(out.k_lo + at) = lo;
    split_pair(vx.x, vx.y, hi, lo);
    const int64_t vt = (h * d + i) * out.padded + pos;
    out.v_hi[vt] = __ushort_as_bfloat16(static_cast<unsigned short>(hi & 0xffffu));
    out.v_hi[vt + out.padded] = __ushort_as_bfloat16(static_cast<unsigned short>(hi >> 16));
    out.v_lo[vt] = __ushort_as_bfloat16(static_cast<unsigned short>(lo & 0xffffu));
    out.v_lo[vt + out.padded] = __ushort_as_bfloat16(static_cast<unsigned short>(lo >> 16));
  }
}

// Fragment coordinates (PTX ISA, mma.m16n8k16): lane = 4·g + j. A: rows g and g+8, k pairs 2j and 2j+8.
// B: k pairs 2j and 2j+8, column g. C: rows g and g+8, columns 2j and 2j+1.
template <int D>
__global__ void __launch_bounds__(kThreads)
    attention_tc_kernel(AttentionShape shape, const float* q, int64_t tokens, SplitKv kv, int64_t cache_len,
                        float* out) {
  static_assert(D % 16 == 0 && D <= 128, "head_dim: a multiple of 16, at most 128");
  constexpr int kChunks = D / 16;  // k chunks of Q·Kᵀ
  constexpr int kDimTiles = D / 8;  // n tiles of P·V
  constexpr int kKeyTiles = kTileK / 8;
  constexpr int kRowK = D + kPad, kRowV = kTileK + kPad;
  constexpr int kStage = 2 * (kTileK * kRowK + D * kRowV);  // bf16 per pipeline stage
  extern __shared__ __align__(16) __nv_bfloat16 shared[];
  // Stage b: k_hi [kTileK][kRowK], k_lo, then v_hi transposed [D][kRowV], v_lo.
  const auto k_hi_of = [&](int b) { return shared + b * kStage; };
  const auto k_lo_of = [&](int b) { return shared + b * kStage + kTileK * kRowK; };
  const auto v_hi_of = [&](int b) { return shared + b * kStage + 2 * kTileK * kRowK; };
  const auto v_lo_of = [&](int b) { return shared + b * kStage + 2 * kTileK * kRowK + D * kRowV; };

  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, g = lane / 4, j = lane % 4;
  const int64_t head = blockIdx.y, kv_head = head / (shape.q_heads / shape.kv_heads);
  const int64_t q_stride = shape.q_heads * D;
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
  // Tiles start on multiples of kTileK (the planes are padded to whole tiles): tile `start` → stage b.
  const int64_t first_tile = block_first / kTileK * kTileK;
  const auto load_tile = [&](int64_t start, int b) {
    const __nv_bfloat16* kh = kv.k_hi + (kv_head * kv.padded + start) * D;
    const __nv_bfloat16* kl = kv.k_lo + (kv_head * kv.padded + start) * D;
    constexpr int kKChunks = kTileK * D / 8;  // 16-byte pieces of one K plane's tile
    for (int c = threadIdx.x; c < kKChunks; c += kThreads) {
      const int key = c / (D / 8), i = 8 * (c % (D / 8));
      copy_async_16(k_hi_of(b) + key * kRowK + i, kh + key * D + i);
      copy_async_16(k_lo_of(b) + key * kRowK + i, kl + key * D + i);
    }
    const __nv_bfloat16* vh = kv.v_hi + kv_head * D * kv.padded + start;
    const __nv_bfloat16* vl = kv.v_lo + kv_head * D * kv.padded + start;
    constexpr int kVChunks = D * kTileK / 8;
    for (int c = threadIdx.x; c < kVChunks; c += kThreads) {
      const int dim = c / (kTileK / 8), key = 8 * (c % (kTileK / 8));
      copy_async_16(v_hi_of(b) + dim * kRowV + key, vh + dim * kv.padded + key);
      copy_async_16(v_lo_of(b) + dim * kRowV + key, vl + dim * kv.padded + key);
    }
    copy_async_commit();
  };
  load_tile(first_tile, 0);
  int stage = 0;
  for (int64_t start = first_tile; start <= block_last; start += kTileK, stage ^= 1) {
    if (start + kTileK <= block_last) {  // the next tile loads into the other stage while this one is used
      load_tile(start + kTileK, stage ^ 1);
      copy_async_wait<1>();
    } else {
      copy_async_wait<0>();
    }
    __syncthreads();
    const __nv_bfloat16 *k_hi = k_hi_of(stage), *k_lo = k_lo_of(stage);
    const __nv_bfloat16 *v_hi = v_hi_of(stage), *v_lo = v_lo_of(stage);

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
    __syncthreads();  // this stage is consumed: the next iteration's load may overwrite it
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

// Heads of 256 and 512 (Gemma-4): the same scheme with the queries' hi/lo in shared memory instead of registers,
// key tiles of kWideTileK, and the output dims split over gridDim.z blocks of kDv each (16 × kDv accumulators per
// warp fit the registers; each block recomputes the scores of its queries). Single-buffered. Measured on the E2B
// shape (2048-token prefill, H100): kDv 256 with 16-key tiles made the whole prefill 1.14× faster than kDv 128
// with 32-key tiles (54.4k vs 47.6k tokens/s): for 256 the scores are computed once, not twice, and two blocks fit
// an SM; for 512, twice instead of four times.
template <int D, int kDv, int kWideTileK>
__global__ void __launch_bounds__(kThreads)
    attention_tc_wide_kernel(AttentionShape shape, const float* q, int64_t tokens, SplitKv kv, int64_t cache_len,
                             float* out) {
  static_assert(D % 16 == 0 && kDv % 8 == 0 && D % kDv == 0 && kWideTileK % 16 == 0 && kTileK % kWideTileK == 0,
                "head_dim, output slice and key tile");
  constexpr int kRow = D + kPad, kRowV = kWideTileK + kPad;
  constexpr int kChunks = D / 16, kDimTiles = kDv / 8, kKeyTiles = kWideTileK / 8;
  extern __shared__ __align__(16) __nv_bfloat16 shared[];
  __nv_bfloat16* q_hi = shared;  // [kTileQ][kRow]
  __nv_bfloat16* q_lo = q_hi + kTileQ * kRow;
  __nv_bfloat16* k_hi = q_lo + kTileQ * kRow;  // [kWideTileK][kRow]
  __nv_bfloat16* k_lo = k_hi + kWideTileK * kRow;
  __nv_bfloat16* v_hi = k_lo + kWideTileK * kRow;  // transposed: [kDv][kRowV]
  __nv_bfloat16* v_lo = v_hi + kDv * kRowV;

  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, g = lane / 4, j = lane % 4;
  const int64_t head = blockIdx.y, kv_head = head / (shape.q_heads / shape.kv_heads);
  const int64_t q_stride = shape.q_heads * D, dv0 = int64_t(blockIdx.z) * kDv;
  const int64_t past = cache_len - tokens, t0 = int64_t(blockIdx.x) * kTileQ;
  const int64_t window = shape.sliding_window;
  int64_t row_t[2], row_pos[2], row_first[2];
  for (int r = 0; r < 2; ++r) {
    row_t[r] = t0 + warp * kRowsPerWarp + g + 8 * r;
    row_pos[r] = past + row_t[r];
    row_first[r] = window > 0 ? max(int64_t(0), row_pos[r] - window + 1) : 0;
  }
  for (int e = threadIdx.x; e < kTileQ * D / 2; e += kThreads) {
    const int row = e / (D / 2), i = 2 * (e % (D / 2));
    float2 x = make_float2(0.0f, 0.0f);
    if (t0 + row < tokens) x = *reinterpret_cast<const float2*>(q + (t0 + row) * q_stride + head * D + i);
    uint32_t hi, lo;
    split_pair(x.x, x.y, hi, lo);
    *reinterpret_cast<uint32_t*>(q_hi + row * kRow + i) = hi;
    *reinterpret_cast<uint32_t*>(q_lo + row * kRow + i) = lo;
  }

  float o[kDimTiles][4];
#pragma unroll
  for (int n = 0; n < kDimTiles; ++n) o[n][0] = o[n][1] = o[n][2] = o[n][3] = 0.0f;
  float row_max[2] = {-INFINITY, -INFINITY}, row_sum[2] = {0.0f, 0.0f};
  const int64_t block_last = past + min(tokens, t0 + kTileQ) - 1;
  const int64_t block_first = window > 0 ? max(int64_t(0), past + t0 - window + 1) : 0;
  const __nv_bfloat16* my_q_hi = q_hi + (warp * kRowsPerWarp + g) * kRow + 2 * j;
  const __nv_bfloat16* my_q_lo = q_lo + (warp * kRowsPerWarp + g) * kRow + 2 * j;

  for (int64_t start = block_first / kWideTileK * kWideTileK; start <= block_last; start += kWideTileK) {
    __syncthreads();  // the previous tile is consumed (and Q is written, on the first pass)
    const __nv_bfloat16* kh = kv.k_hi + (kv_head * kv.padded + start) * D;
    const __nv_bfloat16* kl = kv.k_lo + (kv_head * kv.padded + start) * D;
    for (int c = threadIdx.x; c < kWideTileK * D / 8; c += kThreads) {
      const int key = c / (D / 8), i = 8 * (c % (D / 8));
      copy_async_16(k_hi + key * kRow + i, kh + key * D + i);
      copy_async_16(k_lo + key * kRow + i, kl + key * D + i);
    }
    const __nv_bfloat16* vh = kv.v_hi + (kv_head * D + dv0) * kv.padded + start;
    const __nv_bfloat16* vl = kv.v_lo + (kv_head * D + dv0) * kv.padded + start;
    for (int c = threadIdx.x; c < kDv * kWideTileK / 8; c += kThreads) {
      const int dim = c / (kWideTileK / 8), key = 8 * (c % (kWideTileK / 8));
      copy_async_16(v_hi + dim * kRowV + key, vh + dim * kv.padded + key);
      copy_async_16(v_lo + dim * kRowV + key, vl + dim * kv.padded + key);
    }
    copy_async_commit();
    copy_async_wait<0>();
    __syncthreads();

    float s[kKeyTiles][4];
#pragma unroll
    for (int n = 0; n < kKeyTiles; ++n) s[n][0] = s[n][1] = s[n][2] = s[n][3] = 0.0f;
#pragma unroll 4
    for (int c = 0; c < kChunks; ++c) {
      uint32_t a_hi[4], a_lo[4];
#pragma unroll
      for (int reg = 0; reg < 4; ++reg) {
        const int at = (reg % 2) * 8 * kRow + c * 16 + 8 * (reg / 2);
        a_hi[reg] = *reinterpret_cast<const uint32_t*>(my_q_hi + at);
        a_lo[reg] = *reinterpret_cast<const uint32_t*>(my_q_lo + at);
      }
#pragma unroll
      for (int n = 0; n < kKeyTiles; ++n) {
        const int at = (n * 8 + g) * kRow + c * 16 + 2 * j;
        mma3(s[n], a_hi, a_lo, *reinterpret_cast<const uint32_t*>(k_hi + at),
             *reinterpret_cast<const uint32_t*>(k_hi + at + 8), *reinterpret_cast<const uint32_t*>(k_lo + at),
             *reinterpret_cast<const uint32_t*>(k_lo + at + 8));
      }
    }

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
      base[r] = new_max == -INFINITY ? 0.0f : new_max;
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
#pragma unroll
    for (int c = 0; c < kWideTileK / 16; ++c) {
      uint32_t p_hi[4], p_lo[4];
      split_pair(s[2 * c][0], s[2 * c][1], p_hi[0], p_lo[0]);
      split_pair(s[2 * c][2], s[2 * c][3], p_hi[1], p_lo[1]);
      split_pair(s[2 * c + 1][0], s[2 * c + 1][1], p_hi[2], p_lo[2]);
      split_pair(s[2 * c + 1][2], s[2 * c + 1][3], p_hi[3], p_lo[3]);
#pragma unroll
      for (int n = 0; n < kDimTiles; ++n) {
        const int at = (n * 8 + g) * kRowV + c * 16 + 2 * j;
        mma3(o[n], p_hi, p_lo, *reinterpret_cast<const uint32_t*>(v_hi + at),
             *reinterpret_cast<const uint32_t*>(v_hi + at + 8), *reinterpret_cast<const uint32_t*>(v_lo + at),
             *reinterpret_cast<const uint32_t*>(v_lo + at + 8));
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
    float* dst = out + row_t[r] * q_stride + head * D + dv0 + 2 * j;
#pragma unroll
    for (int n = 0; n < kDimTiles; ++n) {
      *reinterpret_cast<float2*>(dst + n * 8) = make_float2(o[n][2 * r] / row_sum[r], o[n][2 * r + 1] / row_sum[r]);
    }
  }
}

// The planes of K and V for this call (split_kv_kernel), in stream-ordered scratch the caller frees.
template <int D>
SplitKv split_kv(const AttentionShape& shape, const float* k, const float* v, int64_t cache_len,
                 cudaStream_t stream) {
  SplitKv kv;
  kv.padded = (cache_len + kTileK - 1) / kTileK * kTileK;  // whole tiles of either kernel (kTileK % kWideTileK == 0)
  const size_t plane = static_cast<size_t>(shape.kv_heads * kv.padded * D);
  void* planes = nullptr;
  if (const cudaError_t e = cudaMallocAsync(&planes, 4 * plane * sizeof(__nv_bfloat16), stream); e != cudaSuccess)
    fail("CUDA attention: allocating " + std::to_string(4 * plane * 2) + " bytes of scratch", e);
  kv.k_hi = static_cast<__nv_bfloat16*>(planes);
  kv.k_lo = kv.k_hi + plane, kv.v_hi = kv.k_lo + plane, kv.v_lo = kv.v_hi + plane;
  const int64_t pairs = static_cast<int64_t>(plane / 2);
  split_kv_kernel<<<static_cast<unsigned>(std::min<int64_t>((pairs + 255) / 256, 65535)), 256, 0, stream>>>(
      k, v, cache_len, shape.kv_heads, D, kv);
  return kv;
}

template <int D>
void launch(const AttentionShape& shape, const float* q, int64_t tokens, const float* k, const float* v,
            int64_t cache_len, float* out, cudaStream_t stream) {
  const SplitKv kv = split_kv<D>(shape, k, v, cache_len, stream);
  const size_t bytes = sizeof(__nv_bfloat16) * 2 * 2 * (size_t{kTileK} * (D + kPad) + size_t{D} * (kTileK + kPad));
  const auto kernel = attention_tc_kernel<D>;
  allow_shared_memory(kernel, bytes);
  const dim3 grid(static_cast<unsigned>((tokens + kTileQ - 1) / kTileQ), static_cast<unsigned>(shape.q_heads));
  kernel<<<grid, kThreads, bytes, stream>>>(shape, q, tokens, kv, cache_len, out);
  cudaFreeAsync(kv.k_hi, stream);
}

template <int D, int kDv, int kWideTileK>
void launch_wide(const AttentionShape& shape, const float* q, int64_t tokens, const float* k, const float* v,
                 int64_t cache_len, float* out, cudaStream_t stream) {
  const SplitKv kv = split_kv<D>(shape, k, v, cache_len, stream);
  const size_t bytes =
      sizeof(__nv_bfloat16) * 2 * (size_t{kTileQ + kWideTileK} * (D + kPad) + size_t{kDv} * (kWideTileK + kPad));
  const auto kernel = attention_tc_wide_kernel<D, kDv, kWideTileK>;
  allow_shared_memory(kernel, bytes);
  const dim3 grid(static_cast<unsigned>((tokens + kTileQ - 1) / kTileQ), static_cast<unsigned>(shape.q_heads),
                  static_cast<unsigned>(D / kDv));
  kernel<<<grid, kThreads, bytes, stream>>>(shape, q, tokens, kv, cache_len, out);
  cudaFreeAsync(kv.k_hi, stream);
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
    case 256:  // all 256 output dims in one block (109 KB: two blocks per SM), so the scores are computed once
      launch_wide<256, 256, 16>(shape, q, tokens, k, v, cache_len, out, stream);
      return true;
    case 512:  // two blocks of 256 dims, each computing the scores (191 KB: one block per SM)
      launch_wide<512, 256, 16>(shape, q, tokens, k, v, cache_len, out, stream);
      return true;
    default:
      return false;
  }
}

}  // namespace hx::cuda
