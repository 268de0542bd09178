// Causal (optionally sliding-window) softmax attention with GQA over a KV cache, on the GPU.
//
// The simple correct kernel: one block per (query, q head), 128 threads. Keys are taken in chunks of 128: each warp
// computes the scores of a quarter of the chunk (lanes over head_dim, coalesced, shuffle-reduced), then the block
// updates an online softmax (running max and sum, rescaling the output) and every thread accumulates its own output
// dims over the chunk's values (coalesced along head_dim). The output stays in registers (head_dim ≤ 512).
// Prefill (≥ kTiledMinTokens queries, head_dim 64/128/256) takes a tiled kernel instead: K/V tiles in shared memory
// shared by 32 queries, f32 on the CUDA cores (the CPU reference computes attention in f32 in both compute modes).
// Decode (few queries) takes a GQA-aware kernel that splits long key ranges over several blocks and merges them
// after (the per-head kernel splits too, for groups of more than 16 q heads).
// In kBF16 mode prefill takes attention_tc.cu's tensor-core kernel (head sizes 32 to 512); the kernels here are the
// f32 reference it is tested against, and serve kF32 mode and decode.
#include <algorithm>
#include <cfloat>
#include <stdexcept>
#include <string>

#include "verify/cuda/cuda_kernels.h"

namespace hx::cuda {
namespace {

constexpr int kThreads = 128;
constexpr int kWarps = kThreads / 32;
constexpr int kChunk = kThreads;  // keys per online-softmax step: one probability per thread
constexpr int kDimsPerThread = static_cast<int>(kMaxAttentionHeadDim / kThreads);

// With splits > 1 (decode: few queries, long caches), block z covers keys [first + z·split_keys, …) of its query
// only and writes its unnormalised output, running max and sum to `partial` [T, heads, splits, d + 2] for
// combine_kernel; with one split it writes the output itself.
constexpr int64_t kSplitKeys = 64;  // the shortest split: Gemma-4 E2B has 8 heads, so short splits fill the GPU

__global__ void attention_kernel(AttentionShape shape, const float* q, int64_t tokens, const float* k, const float* v,
                                 int64_t cache_len, float* out, float* partial, int64_t split_keys) {
  const int64_t t = blockIdx.x, head = blockIdx.y, split = blockIdx.z, splits = gridDim.z;
  const int64_t d = shape.head_dim, group = shape.q_heads / shape.kv_heads, kv_head = head / group;
  const int64_t kv_stride = shape.kv_heads * d;
  const int64_t query_position = cache_len - tokens + t;
  const int64_t query_first = shape.sliding_window > 0 ? max(int64_t(0), query_position - shape.sliding_window + 1) : 0;
  const int64_t first = splits > 1 ? query_first + split * split_keys : query_first;
  const int64_t position = splits > 1 ? min(query_position, first + split_keys - 1) : query_position;

  extern __shared__ float query[];  // [d]
  __shared__ float probs[kChunk];
  __shared__ float chunk_max_of_warp[kWarps];
  for (int64_t i = threadIdx.x; i < d; i += kThreads) query[i] = q[(t * shape.q_heads + head) * d + i];
  __syncthreads();

  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  float acc[kDimsPerThread];
  for (int u = 0; u < kDimsPerThread; ++u) acc[u] = 0.0f;
  float running_max = -FLT_MAX, running_sum = 0.0f;

  for (int64_t start = first; start <= position; start += kChunk) {
    const int64_t count = min(int64_t(kChunk), position - start + 1);
    float warp_max = -FLT_MAX;
#pragma unroll 4
    for (int64_t jj = warp; jj < count; jj += kWarps) {
      const float* key = k + (start + jj) * kv_stride + kv_head * d;
      float partial = 0.0f;
      for (int64_t i = lane; i < d; i += 32) partial += query[i] * key[i];
      for (int offset = 16; offset > 0; offset /= 2) partial += __shfl_xor_sync(0xffffffffu, partial, offset);
      const float score = partial * shape.scale;
      if (lane == 0) probs[jj] = score;
      warp_max = fmaxf(warp_max, score);
    }
    if (lane == 0) chunk_max_of_warp[warp] = warp_max;
    __syncthreads();
    float chunk_max = chunk_max_of_warp[0];
    for (int w = 1; w < kWarps; ++w) chunk_max = fmaxf(chunk_max, chunk_max_of_warp[w]);
    const float new_max = fmaxf(running_max, chunk_max);
    const float rescale = expf(running_max - new_max);  // 0 on the first chunk (running_max = -FLT_MAX)
    if (threadIdx.x < count) probs[threadIdx.x] = expf(probs[threadIdx.x] - new_max);
    __syncthreads();
    float chunk_sum = 0.0f;
    for (int64_t jj = 0; jj < count; ++jj) chunk_sum += probs[jj];  // every thread, same order
    running_sum = running_sum * rescale + chunk_sum;
    running_max = new_max;
    for (int u = 0; u < kDimsPerThread; ++u) {
      const int64_t i = threadIdx.x + int64_t(u) * kThreads;
      if (i >= d) break;
      float sum = acc[u] * rescale;
#pragma unroll 8
      for (int64_t jj = 0; jj < count; ++jj) {  // unrolled: the V loads of several keys in flight at once
        sum += probs[jj] * v[(start + jj) * kv_stride + kv_head * d + i];
      }
      acc[u] = sum;
    }
    __syncthreads();  // probs is rewritten by the next chunk
  }
  if (splits > 1) {
    float* mine = partial + ((t * shape.q_heads + head) * splits + split) * (d + 2);
    for (int u = 0; u < kDimsPerThread; ++u) {
      const int64_t i = threadIdx.x + int64_t(u) * kThreads;
      if (i < d) mine[i] = acc[u];
    }
    if (threadIdx.x == 0) mine[d] = running_max, mine[d + 1] = running_sum;  // sum 0: an empty split
    return;
  }
  for (int u = 0; u < kDimsPerThread; ++u) {
    const int64_t i = threadIdx.x + int64_t(u) * kThreads;
    if (i < d) out[(t * shape.q_heads + head) * d + i] = acc[u] / running_sum;
  }
}

// Merges the splits of one (query, head): out = Σ_s acc_s·e^(m_s − m) / Σ_s sum_s·e^(m_s − m), m = max_s m_s.
// Warp 0 computes each split's weight e^(m_s − m) into shared memory (0 for an empty split); then warp w sums splits
// w, w + kCombineWarps, … over every output dim (lane i: dims i, i + 32, …, several splits' loads in flight) and the
// warps' sums meet in shared memory. (A thread per dim looping over all 65 splits of Reka's 2k-token decode step
// took ~16 µs per layer, a chain of dependent loads; this takes 9.7 µs, ncu on an H100.)
constexpr int kCombineWarps = 8;

template <int kDimsPerLane>
__global__ void __launch_bounds__(kCombineWarps * 32)
    combine_kernel(const float* partial, int64_t splits, int64_t d, float* out) {
  extern __shared__ float combine_shared[];
  float* split_weight = combine_shared;        // [splits]
  float* warp_sums = combine_shared + splits;  // [kCombineWarps][d]
  __shared__ float total_weight;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int64_t row = blockIdx.x;  // t · heads + head
  const float* parts = partial + row * splits * (d + 2);
  if (warp == 0) {
    float m = -FLT_MAX;
#pragma unroll 4
    for (int64_t s = lane; s < splits; s += 32) {
      if (parts[s * (d + 2) + d + 1] > 0.0f) m = fmaxf(m, parts[s * (d + 2) + d]);
    }
    for (int offset = 16; offset > 0; offset /= 2) m = fmaxf(m, __shfl_xor_sync(0xffffffffu, m, offset));
    float total = 0.0f;
#pragma unroll 4
    for (int64_t s = lane; s < splits; s += 32) {
      const float sum = parts[s * (d + 2) + d + 1];
      const float weight = sum > 0.0f ? expf(parts[s * (d + 2) + d] - m) : 0.0f;
      split_weight[s] = weight;
      total += sum * weight;
    }
    for (int offset = 16; offset > 0; offset /= 2) total += __shfl_xor_sync(0xffffffffu, total, offset);
    if (lane == 0) total_weight = total;
  }
  __syncthreads();
  float acc[kDimsPerLane];
#pragma unroll
  for (int u = 0; u < kDimsPerLane; ++u) acc[u] = 0.0f;
#pragma unroll 2
  for (int64_t s = warp; s < splits; s += kCombineWarps) {
    const float weight = split_weight[s];
    const float* part = parts + s * (d + 2);
#pragma unroll
    for (int u = 0; u < kDimsPerLane; ++u) {
      if (lane + 32 * u < d) acc[u] += part[lane + 32 * u] * weight;
    }
  }
#pragma unroll
  for (int u = 0; u < kDimsPerLane; ++u) {
    if (lane + 32 * u < d) warp_sums[warp * d + lane + 32 * u] = acc[u];
  }
  __syncthreads();
  for (int64_t i = threadIdx.x; i < d; i += blockDim.x) {
    float value = 0.0f;
#pragma unroll
    for (int w = 0; w < kCombineWarps; ++w) value += warp_sums[w * d + i];
    out[row * d + i] = value / total_weight;
  }
}

// Stream-ordered scratch for the splits' partial rows [rows, splits, d + 2] (combine_splits frees it).
float* allocate_partials(int64_t rows, int64_t splits, int64_t d, cudaStream_t stream) {
  float* partial = nullptr;
  const size_t bytes = static_cast<size_t>(rows * splits * (d + 2)) * sizeof(float);
  if (const cudaError_t e = cudaMallocAsync(reinterpret_cast<void**>(&partial), bytes, stream); e != cudaSuccess)
    fail("CUDA attention: allocating " + std::to_string(bytes) + " bytes of scratch", e);
  return partial;
}

// Launches combine_kernel for `rows` (query, head) rows, then frees `partial` (stream-ordered).
void combine_splits(float* partial, int64_t rows, int64_t splits, int64_t d, float* out, cudaStream_t stream) {
  const auto blocks = static_cast<unsigned>(rows);
  const size_t bytes = static_cast<size_t>(splits + kCombineWarps * d) * sizeof(float);
  if (d <= 128) {
    combine_kernel<4><<<blocks, kCombineWarps * 32, bytes, stream>>>(partial, splits, d, out);
  } else if (d <= 256) {
    combine_kernel<8><<<blocks, kCombineWarps * 32, bytes, stream>>>(partial, splits, d, out);
  } else {
    combine_kernel<16><<<blocks, kCombineWarps * 32, bytes, stream>>>(partial, splits, d, out);
  }
  cudaFreeAsync(partial, stream);
}

// Decode (few queries, long caches), GQA-aware: one block per (kv head, split of the keys, query token), so each
// K/V row is read once per kv head instead of once per q head (reka-flash-3 has 8 q heads per kv head; the per-head
// kernel above spent ~94 µs per decode step of its 2k-token cache re-reading them). The block's 4 warps share
// tiles of 32 keys and values in shared memory (key rows padded by one float: lane j reads key j, conflict-free)
// and own the group's q heads (warp w: heads w, w + 4, …). Lane j scores key j; the online softmax of a head lives
// in its warp (shuffles); for P·V lane i owns output dims i, i + 32, … and reads each V row once for all its heads.
constexpr int kDecodeWarps = 4;
constexpr int kDecodeTile = 32;        // keys per tile: one per lane
constexpr int kDecodeMaxHeadsPerWarp = 4;  // groups of up to 16 q heads per kv head; larger ones take the kernel above
constexpr int kDecodeLoadBatch = 8;  // float4 loads of K and of V in flight per thread: a 32×128 tile in one batch

template <int kDimsPerLane>
__global__ void __launch_bounds__(kDecodeWarps * 32)
    attention_decode_kernel(AttentionShape shape, const float* q, int64_t tokens, const float* k, const float* v,
                            int64_t cache_len, float* out, float* partial, int64_t split_keys) {
  const int64_t kv_head = blockIdx.x, split = blockIdx.y, splits = gridDim.y, t = blockIdx.z;
  const int d = static_cast<int>(shape.head_dim), group = static_cast<int>(shape.q_heads / shape.kv_heads);
  const int64_t kv_stride = shape.kv_heads * d;
  const int64_t query_position = cache_len - tokens + t;
  const int64_t query_first = shape.sliding_window > 0 ? max(int64_t(0), query_position - shape.sliding_window + 1) : 0;
  const int64_t first = query_first + split * split_keys;
  const int64_t last = min(query_position, first + split_keys - 1);
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;

  extern __shared__ float decode_shared[];
  float* queries = decode_shared;                // [group][d]
  float* keys = queries + group * d;             // [kDecodeTile][d + 1]
  float* values = keys + kDecodeTile * (d + 1);  // [kDecodeTile][d]
  const float4* group_queries = reinterpret_cast<const float4*>(q + (t * shape.q_heads + kv_head * group) * d);
#pragma unroll 4
  for (int e = threadIdx.x; e < group * d / 4; e += blockDim.x) {
    reinterpret_cast<float4*>(queries)[e] = group_queries[e];
  }

  float acc[kDecodeMaxHeadsPerWarp][kDimsPerLane];
  float running_max[kDecodeMaxHeadsPerWarp], running_sum[kDecodeMaxHeadsPerWarp];
#pragma unroll
  for (int r = 0; r < kDecodeMaxHeadsPerWarp; ++r) {
    running_max[r] = -FLT_MAX, running_sum[r] = 0.0f;
#pragma unroll
    for (int u = 0; u < kDimsPerLane; ++u) acc[r][u] = 0.0f;
  }
  for (int64_t start = first; start <= last; start += kDecodeTile) {
    const int count = static_cast<int>(min(int64_t(kDecodeTile), last - start + 1));
    __syncthreads();  // the previous tile is consumed (and the queries are written, on the first pass)
    // The tile's K and V rows: kDecodeLoadBatch loads of each per thread issued before any is stored, so one memory
    // latency covers a tile of ≤ 128-wide heads (Reka's 2k-token decode step: 18.2 µs per layer, 20 µs when each
    // load was stored before the next was issued; ncu, H100).
    const int quads = d / 4;  // d % 4 == 0 (causal_attention sends other heads elsewhere)
    const int tile_quads = kDecodeTile * quads;
    for (int base = 0; base < tile_quads; base += kDecodeLoadBatch * kDecodeWarps * 32) {
      float4 kx[kDecodeLoadBatch], vx[kDecodeLoadBatch];
#pragma unroll
      for (int j = 0; j < kDecodeLoadBatch; ++j) {
        const int e = base + j * kDecodeWarps * 32 + threadIdx.x, key = e / quads, i = 4 * (e % quads);
        kx[j] = vx[j] = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
        if (e < tile_quads && key < count) {
          kx[j] = *reinterpret_cast<const float4*>(k + (start + key) * kv_stride + kv_head * d + i);
          vx[j] = *reinterpret_cast<const float4*>(v + (start + key) * kv_stride + kv_head * d + i);
        }
      }
#pragma unroll
      for (int j = 0; j < kDecodeLoadBatch; ++j) {
        const int e = base + j * kDecodeWarps * 32 + threadIdx.x, key = e / quads, i = 4 * (e % quads);
        if (e >= tile_quads) break;
        float* key_row = keys + key * (d + 1) + i;
        key_row[0] = kx[j].x, key_row[1] = kx[j].y, key_row[2] = kx[j].z, key_row[3] = kx[j].w;
        *reinterpret_cast<float4*>(values + key * d + i) = vx[j];
      }
    }
    __syncthreads();
    float p[kDecodeMaxHeadsPerWarp];
#pragma unroll
    for (int r = 0; r < kDecodeMaxHeadsPerWarp; ++r) {
      const int head = warp + kDecodeWarps * r;
      p[r] = 0.0f;
      if (head >= group) continue;  // warp-uniform
      const float* query = queries + head * d;
      const float* key = keys + lane * (d + 1);
      float dot = 0.0f;
#pragma unroll 8
      for (int i = 0; i < d; ++i) dot += query[i] * key[i];
      const float score = lane < count ? dot * shape.scale : -FLT_MAX;
      float tile_max = score;
      for (int offset = 16; offset > 0; offset /= 2) tile_max = fmaxf(tile_max, __shfl_xor_sync(0xffffffffu, tile_max, offset));
      const float new_max = fmaxf(running_max[r], tile_max);
      const float rescale = expf(running_max[r] - new_max);  // 0 on the first tile (running_max = -FLT_MAX)
      p[r] = lane < count ? expf(score - new_max) : 0.0f;
      float tile_sum = p[r];
      for (int offset = 16; offset > 0; offset /= 2) tile_sum += __shfl_xor_sync(0xffffffffu, tile_sum, offset);
      running_sum[r] = running_sum[r] * rescale + tile_sum;
      running_max[r] = new_max;
#pragma unroll
      for (int u = 0; u < kDimsPerLane; ++u) acc[r][u] *= rescale;
    }
    for (int j = 0; j < count; ++j) {
      const float* value = values + j * d;
      float dims[kDimsPerLane];
#pragma unroll
      for (int u = 0; u < kDimsPerLane; ++u) dims[u] = lane + 32 * u < d ? value[lane + 32 * u] : 0.0f;
#pragma unroll
      for (int r = 0; r < kDecodeMaxHeadsPerWarp; ++r) {
        const float pj = __shfl_sync(0xffffffffu, p[r], j);
#pragma unroll
        for (int u = 0; u < kDimsPerLane; ++u) acc[r][u] += pj * dims[u];
      }
    }
  }
#pragma unroll
  for (int r = 0; r < kDecodeMaxHeadsPerWarp; ++r) {
    const int head_in_group = warp + kDecodeWarps * r;
    if (head_in_group >= group) continue;
    const int64_t head = kv_head * group + head_in_group;
    if (splits > 1) {
      float* mine = partial + ((t * shape.q_heads + head) * splits + split) * (d + 2);
#pragma unroll
      for (int u = 0; u < kDimsPerLane; ++u) {
        if (lane + 32 * u < d) mine[lane + 32 * u] = acc[r][u];
      }
      if (lane == 0) mine[d] = running_max[r], mine[d + 1] = running_sum[r];  // sum 0: an empty split
    } else {
#pragma unroll
      for (int u = 0; u < kDimsPerLane; ++u) {
        if (lane + 32 * u < d) out[(t * shape.q_heads + head) * d + lane + 32 * u] = acc[r][u] / running_sum[r];
      }
    }
  }
}

// The tiled kernel for prefill: one block per (tile of kTileQ queries, q head), 128 threads, kThreadsPerQuery (4)
// per query. K/V come in tiles of kTileK keys through shared memory, shared by the tile's queries (the simple kernel
// re-reads them per query). Thread `sub` of query qi scores keys sub, sub+4, …, keeps an online softmax per query
// (max and sum shuffled among its threads) and owns the output dims sub, sub+4, … of its query, in registers. Rows
// of Q and K are padded by one float so that neither the queries nor the key rows a warp reads at once share a bank.
constexpr int kTileK = 32;

template <int D, int kThreadsPerQuery>
__global__ void __launch_bounds__(kThreads)
    attention_tiled_kernel(AttentionShape shape, const float* q, int64_t tokens, const float* k, const float* v,
                           int64_t cache_len, float* out) {
  constexpr int kTileQ = kThreads / kThreadsPerQuery;
  constexpr int kKeysPerThread = kTileK / kThreadsPerQuery, kDims = D / kThreadsPerQuery, kPad = D + 1;
  extern __shared__ float shared[];
  float* qs = shared;              // [kTileQ][D + 1]
  float* ks = qs + kTileQ * kPad;  // [kTileK][D + 1]
  float* vs = ks + kTileK * kPad;  // [kTileK][D]
  float* ps = vs + kTileK * D;     // [kTileQ][kTileK + 1]

  const int64_t head = blockIdx.y, kv_head = head / (shape.q_heads / shape.kv_heads);
  const int64_t q_stride = shape.q_heads * D, kv_stride = shape.kv_heads * D;
  const int64_t t0 = int64_t(blockIdx.x) * kTileQ, past = cache_len - tokens;
  const int qi = threadIdx.x / kThreadsPerQuery, sub = threadIdx.x % kThreadsPerQuery;
  const int64_t t = t0 + qi, position = past + t;
  const bool live = t < tokens;
  const int64_t first = shape.sliding_window > 0 ? max(int64_t(0), position - shape.sliding_window + 1) : 0;

  for (int e = threadIdx.x; e < kTileQ * D; e += kThreads) {
    const int row = e / D, i = e % D;
    qs[row * kPad + i] = t0 + row < tokens ? q[(t0 + row) * q_stride + head * D + i] : 0.0f;
  }
  const int64_t last_t = min(tokens, t0 + kTileQ) - 1;
  const int64_t block_last = past + last_t;
  const int64_t block_first = shape.sliding_window > 0 ? max(int64_t(0), past + t0 - shape.sliding_window + 1) : 0;

  float acc[kDims];
#pragma unroll
  for (int u = 0; u < kDims; ++u) acc[u] = 0.0f;
  float running_max = -FLT_MAX, running_sum = 0.0f;

  for (int64_t start = block_first; start <= block_last; start += kTileK) {
    __syncthreads();  // the previous tile is consumed (and qs written, on the first pass)
    for (int e = threadIdx.x; e < kTileK * D; e += kThreads) {
      const int row = e / D, i = e % D;
      const int64_t j = start + row;
      const bool in_cache = j <= block_last;
      ks[row * kPad + i] = in_cache ? k[j * kv_stride + kv_head * D + i] : 0.0f;
      vs[row * D + i] = in_cache ? v[j * kv_stride + kv_head * D + i] : 0.0f;
    }
    __syncthreads();
    float scores[kKeysPerThread];
    float tile_max = -INFINITY;
#pragma unroll
    for (int u = 0; u < kKeysPerThread; ++u) {
      const int kj = sub + kThreadsPerQuery * u;
      const int64_t j = start + kj;
      float dot = 0.0f;
#pragma unroll 8
      for (int i = 0; i < D; ++i) dot += qs[qi * kPad + i] * ks[kj * kPad + i];
      scores[u] = live && j >= first && j <= position ? dot * shape.scale : -INFINITY;
      tile_max = fmaxf(tile_max, scores[u]);
    }
#pragma unroll
    for (int lane_mask = 1; lane_mask < kThreadsPerQuery; lane_mask *= 2) {
      tile_max = fmaxf(tile_max, __shfl_xor_sync(0xffffffffu, tile_max, lane_mask));
    }
    const float new_max = fmaxf(running_max, tile_max);
    const float rescale = expf(running_max - new_max);
    float tile_sum = 0.0f;
#pragma unroll
    for (int u = 0; u < kKeysPerThread; ++u) {
      const float p = expf(scores[u] - new_max);  // 0 for masked keys
      ps[qi * (kTileK + 1) + sub + kThreadsPerQuery * u] = p;
      tile_sum += p;
    }
#pragma unroll
    for (int lane_mask = 1; lane_mask < kThreadsPerQuery; lane_mask *= 2) {
      tile_sum += __shfl_xor_sync(0xffffffffu, tile_sum, lane_mask);
    }
    running_sum = running_sum * rescale + tile_sum;
    running_max = new_max;
    __syncwarp();  // a query's threads share a warp: its probabilities are visible to them now
#pragma unroll
    for (int u = 0; u < kDims; ++u) acc[u] *= rescale;
    for (int kj = 0; kj < kTileK; ++kj) {
      const float p = ps[qi * (kTileK + 1) + kj];
#pragma unroll
      for (int u = 0; u < kDims; ++u) acc[u] += p * vs[kj * D + sub + kThreadsPerQuery * u];
    }
  }
  if (!live) return;
#pragma unroll
  for (int u = 0; u < kDims; ++u) out[t * q_stride + head * D + sub + kThreadsPerQuery * u] = acc[u] / running_sum;
}

template <int D, int kThreadsPerQuery = 4>
void launch_tiled(const AttentionShape& shape, const float* q, int64_t tokens, const float* k, const float* v,
                  int64_t cache_len, float* out, cudaStream_t stream) {
  constexpr int kTileQ = kThreads / kThreadsPerQuery;
  const size_t bytes =
      sizeof(float) * static_cast<size_t>((kTileQ + kTileK) * (D + 1) + kTileK * D + kTileQ * (kTileK + 1));
  const auto kernel = attention_tiled_kernel<D, kThreadsPerQuery>;
  allow_shared_memory(kernel, bytes);
  const dim3 grid(static_cast<unsigned>((tokens + kTileQ - 1) / kTileQ), static_cast<unsigned>(shape.q_heads));
  kernel<<<grid, kThreads, bytes, stream>>>(shape, q, tokens, k, v, cache_len, out);
}

// Below this many queries the simple kernel's one block per query fills the GPU better than tiles of 32.
constexpr int64_t kTiledMinTokens = 64;

// Splits of the keys: about kDecodeBlocks blocks in all, each of whole tiles and at least kDecodeMinSplit keys (a
// split's fixed cost is its queries and its partial row).
void launch_decode(const AttentionShape& shape, const float* q, int64_t tokens, const float* k, const float* v,
                   int64_t cache_len, int64_t keys, float* out, cudaStream_t stream) {
  constexpr int64_t kDecodeBlocks = 528;  // 4 per SM of an H100
  constexpr int64_t kDecodeMinSplit = kDecodeTile;  // Gemma's single kv head needs many splits to fill the GPU
  const int64_t per_split = shape.kv_heads * tokens;
  const int64_t wanted = std::max<int64_t>(1, (kDecodeBlocks + per_split - 1) / per_split);
  int64_t splits = std::max<int64_t>(1, std::min(wanted, (keys + kDecodeMinSplit - 1) / kDecodeMinSplit));
  const int64_t split_keys = ((keys + splits - 1) / splits + kDecodeTile - 1) / kDecodeTile * kDecodeTile;
  splits = (keys + split_keys - 1) / split_keys;
  const int64_t d = shape.head_dim, group = shape.q_heads / shape.kv_heads;
  const size_t bytes = sizeof(float) * static_cast<size_t>(group * d + kDecodeTile * (2 * d + 1));
  const dim3 grid(static_cast<unsigned>(shape.kv_heads), static_cast<unsigned>(splits), static_cast<unsigned>(tokens));
  float* partial = splits > 1 ? allocate_partials(tokens * shape.q_heads, splits, d, stream) : nullptr;
  const auto run = [&](auto kernel) {
    allow_shared_memory(kernel, bytes);  // Gemma-4's 512-wide heads need more than the default
    kernel<<<grid, kDecodeWarps * 32, bytes, stream>>>(shape, q, tokens, k, v, cache_len, out, partial, split_keys);
  };
  if (d <= 128) {
    run(attention_decode_kernel<4>);
  } else if (d <= 256) {
    run(attention_decode_kernel<8>);
  } else {
    run(attention_decode_kernel<16>);
  }
  if (splits > 1) combine_splits(partial, tokens * shape.q_heads, splits, d, out, stream);
}

}  // namespace

void causal_attention(const AttentionShape& shape, const float* q, int64_t tokens, const float* k, const float* v,
                      int64_t cache_len, float* out, cudaStream_t stream) {
  if (shape.head_dim <= 0 || shape.head_dim > kMaxAttentionHeadDim || shape.kv_heads <= 0 ||
      shape.q_heads % shape.kv_heads != 0 || cache_len < tokens) {
    throw std::invalid_argument("CUDA attention: unsupported shape (head_dim " + std::to_string(shape.head_dim) +
                                ", at most " + std::to_string(kMaxAttentionHeadDim) + "; q_heads " +
                                std::to_string(shape.q_heads) + ", kv_heads " + std::to_string(shape.kv_heads) + ")");
  }
  if (tokens == 0) return;
  if (tokens >= kTiledMinTokens) {
    if (shape.tensor_cores && causal_attention_tensor_cores(shape, q, tokens, k, v, cache_len, out, stream)) return;
    switch (shape.head_dim) {
      case 32:
        return launch_tiled<32>(shape, q, tokens, k, v, cache_len, out, stream);
      case 64:
        return launch_tiled<64>(shape, q, tokens, k, v, cache_len, out, stream);
      case 96:
        return launch_tiled<96>(shape, q, tokens, k, v, cache_len, out, stream);
      case 128:
        return launch_tiled<128>(shape, q, tokens, k, v, cache_len, out, stream);
      case 256:
        return launch_tiled<256>(shape, q, tokens, k, v, cache_len, out, stream);
      default:
        // Other head sizes take the simple kernel. For 512 (Gemma-4's full layers) the tiled kernel with 8 threads
        // per query (launch_tiled<512, 8>) measured slower on the E2B shape: 14.4k vs 16.3k tokens/s (2048 tokens).
        break;
    }
  }
  // Split long key ranges over several blocks when the (query, head) blocks alone would leave most SMs idle.
  constexpr int64_t kBusyBlocks = 264;  // 2 per SM of an H100
  const int64_t keys = shape.sliding_window > 0 ? std::min(shape.sliding_window, cache_len) : cache_len;
  const int64_t group = shape.q_heads / shape.kv_heads;
  if (tokens < kTiledMinTokens && group <= kDecodeWarps * kDecodeMaxHeadsPerWarp && shape.head_dim % 4 == 0) {
    return launch_decode(shape, q, tokens, k, v, cache_len, keys, out, stream);
  }
  // Splits of ≥ kSplitKeys keys, about 8 blocks per SM and no more: each split has a fixed cost (its query, its
  // partial row), so Llama's 64 heads take splits of ~one 128-key chunk and Gemma's 8 heads many of 64 keys.
  constexpr int64_t kSplitBlocks = 4 * kBusyBlocks;
  const int64_t wanted = (kSplitBlocks + tokens * shape.q_heads - 1) / (tokens * shape.q_heads);
  const int64_t splits =
      tokens * shape.q_heads >= kBusyBlocks ? 1 : std::min((keys + kSplitKeys - 1) / kSplitKeys, wanted);
  const int64_t split_keys = (keys + splits - 1) / std::max<int64_t>(splits, 1);
  const size_t query_bytes = static_cast<size_t>(shape.head_dim) * sizeof(float);
  const dim3 grid(static_cast<unsigned>(tokens), static_cast<unsigned>(shape.q_heads), static_cast<unsigned>(splits));
  if (splits <= 1) {
    attention_kernel<<<grid, kThreads, query_bytes, stream>>>(shape, q, tokens, k, v, cache_len, out, nullptr,
                                                              split_keys);
    return;
  }
  float* partial = allocate_partials(tokens * shape.q_heads, splits, shape.head_dim, stream);
  attention_kernel<<<grid, kThreads, query_bytes, stream>>>(shape, q, tokens, k, v, cache_len, out, partial,
                                                            split_keys);
  combine_splits(partial, tokens * shape.q_heads, splits, shape.head_dim, out, stream);
}

}  // namespace hx::cuda
