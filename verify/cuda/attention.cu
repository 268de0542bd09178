// Causal (optionally sliding-window) softmax attention with GQA over a KV cache, on the GPU.
//
// The simple correct kernel: one block per (query, q head), 128 threads. Keys are taken in chunks of 128: each warp
// computes the scores of a quarter of the chunk (lanes over head_dim, coalesced, shuffle-reduced), then the block
// updates an online softmax (running max and sum, rescaling the output) and every thread accumulates its own output
// dims over the chunk's values (coalesced along head_dim). The output stays in registers (head_dim ≤ 512).
// Non-goals for now: tensor cores and shared K/V tiles across queries (flash-style tiling); splitting long caches
// over several blocks for decode.
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

__global__ void attention_kernel(AttentionShape shape, const float* q, int64_t tokens, const float* k, const float* v,
                                 int64_t cache_len, float* out) {
  const int64_t t = blockIdx.x, head = blockIdx.y;
  const int64_t d = shape.head_dim, group = shape.q_heads / shape.kv_heads, kv_head = head / group;
  const int64_t kv_stride = shape.kv_heads * d;
  const int64_t position = cache_len - tokens + t;
  const int64_t first = shape.sliding_window > 0 ? max(int64_t(0), position - shape.sliding_window + 1) : 0;

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
      for (int64_t jj = 0; jj < count; ++jj) {
        sum += probs[jj] * v[(start + jj) * kv_stride + kv_head * d + i];
      }
      acc[u] = sum;
    }
    __syncthreads();  // probs is rewritten by the next chunk
  }
  for (int u = 0; u < kDimsPerThread; ++u) {
    const int64_t i = threadIdx.x + int64_t(u) * kThreads;
    if (i < d) out[(t * shape.q_heads + head) * d + i] = acc[u] / running_sum;
  }
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
  const dim3 grid(static_cast<unsigned>(tokens), static_cast<unsigned>(shape.q_heads));
  attention_kernel<<<grid, kThreads, static_cast<size_t>(shape.head_dim) * sizeof(float), stream>>>(
      shape, q, tokens, k, v, cache_len, out);
}

}  // namespace hx::cuda
