// Causal (optionally sliding-window) softmax attention with GQA over a KV cache.
//
// One work item = one query head × a block of kQueryBlock queries; each output is computed by exactly one work item
// in a fixed order (dot products in 16 interleaved lanes reduced by a fixed tree, softmax sums and P·V over keys in
// increasing position), so results do not depend on the thread count.
#include <algorithm>
#include <cmath>
#include <string>
#include <vector>

#include "formats/errors.h"
#include "formats/parallel.h"
#include "verify/kernels.h"

namespace hx {
namespace {

constexpr int64_t kQueryBlock = 16;
constexpr int kLanes = 16;

// Σ a[i]·b[i] in kLanes interleaved partial sums (i mod kLanes), then a pairwise tree: a fixed order that the
// compiler can still vectorise.
float dot(const float* a, const float* b, int64_t n) {
  float lanes[kLanes] = {};
  int64_t i = 0;
  for (; i + kLanes <= n; i += kLanes) {
    for (int l = 0; l < kLanes; ++l) {
      const float product = a[i + l] * b[i + l];
      lanes[l] = lanes[l] + product;
    }
  }
  for (int l = 0; i < n; ++i, ++l) {
    const float product = a[i] * b[i];
    lanes[l] = lanes[l] + product;
  }
  for (int width = kLanes / 2; width > 0; width /= 2) {
    for (int l = 0; l < width; ++l) lanes[l] = lanes[l] + lanes[l + width];
  }
  return lanes[0];
}

void check_params(const AttentionParams& p, int64_t tokens, int64_t cache_len) {
  const bool heads_ok = p.q_heads > 0 && p.kv_heads > 0 && p.q_heads % p.kv_heads == 0;
  if (!heads_ok || p.head_dim <= 0 || tokens < 0 || cache_len < tokens || p.sliding_window < 0) {
    throw UsageError("attention: bad shape (q_heads " + std::to_string(p.q_heads) + ", kv_heads " +
                     std::to_string(p.kv_heads) + ", head_dim " + std::to_string(p.head_dim) + ", tokens " +
                     std::to_string(tokens) + ", cache_len " + std::to_string(cache_len) + ", window " +
                     std::to_string(p.sliding_window) + ")");
  }
  if (p.activation != DType::kF32 && p.activation != DType::kBF16 && p.activation != DType::kF16) {
    throw UsageError("attention: activation dtype must be F32, BF16 or F16");
  }
}

}  // namespace

void causal_attention(const AttentionParams& p, const float* q, int64_t tokens, const float* k, const float* v,
                      int64_t cache_len, float* out) {
  check_params(p, tokens, cache_len);
  const int64_t d = p.head_dim;
  const int64_t group = p.q_heads / p.kv_heads;
  const int64_t past = cache_len - tokens;
  const int64_t q_stride = p.q_heads * d, kv_stride = p.kv_heads * d;
  const int64_t blocks = (tokens + kQueryBlock - 1) / kQueryBlock;
  const DType act = p.activation;

  parallel_for(0, p.q_heads * blocks, 1, [&](int64_t item) {
    const int64_t head = item / blocks, kv_head = head / group;
    const int64_t t_end = std::min(tokens, (item % blocks + 1) * kQueryBlock);
    thread_local std::vector<float> probs;
    thread_local std::vector<float> accumulator;
    probs.resize(static_cast<size_t>(cache_len));
    accumulator.resize(static_cast<size_t>(d));
    for (int64_t t = (item % blocks) * kQueryBlock; t < t_end; ++t) {
      const int64_t position = past + t;
      const int64_t first = p.sliding_window > 0 ? std::max<int64_t>(0, position - p.sliding_window + 1) : 0;
      const float* query = q + t * q_stride + head * d;
      float max_score = -INFINITY;
      for (int64_t j = first; j <= position; ++j) {
        const float raw = round_to_activation(dot(query, k + j * kv_stride + kv_head * d, d), act);
        const float score = round_to_activation(raw * p.scale, act);
        probs[static_cast<size_t>(j)] = score;
        max_score = std::max(max_score, score);
      }
      float sum = 0.0f;
      for (int64_t j = first; j <= position; ++j) {
        const float e = std::exp(probs[static_cast<size_t>(j)] - max_score);
        probs[static_cast<size_t>(j)] = e;
        sum = sum + e;
      }
      std::fill(accumulator.begin(), accumulator.end(), 0.0f);
      for (int64_t j = first; j <= position; ++j) {
        const float weight = round_to_activation(probs[static_cast<size_t>(j)] / sum, act);
        const float* value = v + j * kv_stride + kv_head * d;
        for (int64_t i = 0; i < d; ++i) {
          const float product = weight * value[i];
          accumulator[static_cast<size_t>(i)] = accumulator[static_cast<size_t>(i)] + product;
        }
      }
      float* o = out + t * q_stride + head * d;
      for (int64_t i = 0; i < d; ++i) o[i] = round_to_activation(accumulator[static_cast<size_t>(i)], act);
    }
  });
}

}  // namespace hx
