// Causal (optionally sliding-window) softmax attention with GQA over a KV cache.
//
// One work item = one query head × a block of up to kQueryLanes consecutive queries: the block's scores against all
// the keys any of its queries sees come from one small matrix product (queries in vector lanes, attention_internal.h),
// then a softmax per query, then a second product with the values. Prefill thus runs as batched products instead of
// one dot product per (query, key), and decode (a block of one query) goes through the same code.
// Every output is computed by exactly one work item in a fixed order (scores as one chain over the head dimension,
// softmax sums and P·V over keys in increasing position), so results depend neither on the thread count, nor on how
// many queries a call holds, nor on the kernel family (portable and AVX-512 kernels compute the same chains).
#include <algorithm>
#include <cmath>
#include <cstring>
#include <string>
#include <vector>

#include "formats/cpu_isa.h"
#include "formats/errors.h"
#include "formats/parallel.h"
#include "verify/attention_internal.h"
#include "verify/gemm_internal.h"
#include "verify/kernels.h"
#include "verify/vector_exp.h"

namespace hx {
namespace {

using attention::kQueryLanes;

// ---- portable kernels (the reference of attention_avx512.cc) ------------------------------------------------------

void portable_scores(const float* qt, const float* k, int64_t k_stride, int64_t keys, int64_t d, float* s) {
  for (int64_t j = 0; j < keys; ++j) {
    const float* key = k + j * k_stride;
    for (int lane = 0; lane < kQueryLanes; ++lane) {
      float sum = 0.0f;
      for (int64_t i = 0; i < d; ++i) {
        const float product = qt[i * kQueryLanes + lane] * key[i];
        sum = sum + product;
      }
      s[j * kQueryLanes + lane] = sum;
    }
  }
}

void portable_values(const float* p, int rows, const int64_t* begin, const int64_t* end, const float* v,
                     int64_t v_stride, int64_t d, float* out, int64_t out_stride) {
  for (int lane = 0; lane < rows; ++lane) {
    float* o = out + lane * out_stride;
    std::fill_n(o, d, 0.0f);
    for (int64_t j = begin[lane]; j < end[lane]; ++j) {
      const float weight = p[j * kQueryLanes + lane];
      const float* value = v + j * v_stride;
      for (int64_t i = 0; i < d; ++i) {
        const float product = weight * value[i];
        o[i] = o[i] + product;
      }
    }
  }
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

// Softmax of the f32-activation case (attention_internal.h): a vector of lanes at a time; a lane outside its keys
// keeps its max and adds nothing, so a lane's bits never depend on its neighbours.
void portable_softmax(float* s, int rows, const int64_t* begin, const int64_t* end, float scale) {
  using vexp::F32x4;
  using vexp::I32x4;
  for (int lane0 = 0; lane0 < rows; lane0 += vexp::kLanes) {
    I32x4 lane_begin{}, lane_end{};  // lanes ≥ rows: an empty range
    int64_t j_begin = begin[lane0], j_end = end[lane0];
    for (int l = 0; l < vexp::kLanes && lane0 + l < rows; ++l) {
      lane_begin[l] = static_cast<int32_t>(begin[lane0 + l]);
      lane_end[l] = static_cast<int32_t>(end[lane0 + l]);
      j_begin = std::min(j_begin, begin[lane0 + l]);
      j_end = std::max(j_end, end[lane0 + l]);
    }
    const auto in_range = [&](int64_t j) {
      const I32x4 key = I32x4{} + static_cast<int32_t>(j);
      return (key >= lane_begin) & (key < lane_end);
    };
    float* column = s + lane0;  // row j of these lanes: column + j · kQueryLanes
    F32x4 max_score = vexp::splat(-INFINITY);
    for (int64_t j = j_begin; j < j_end; ++j) {
      F32x4 value;
      std::memcpy(&value, column + j * kQueryLanes, sizeof value);
      value = value * scale;
      std::memcpy(column + j * kQueryLanes, &value, sizeof value);
      max_score = vexp::select(in_range(j) & (max_score < value), value, max_score);  // std::max(max, value)
    }
    F32x4 sum{};
    for (int64_t j = j_begin; j < j_end; ++j) {
      F32x4 value;
      std::memcpy(&value, column + j * kQueryLanes, sizeof value);
      value = vexp::exp4(value - max_score);
      std::memcpy(column + j * kQueryLanes, &value, sizeof value);
      sum = sum + vexp::select(in_range(j), value, F32x4{});
    }
    for (int64_t j = j_begin; j < j_end; ++j) {
      F32x4 value;
      std::memcpy(&value, column + j * kQueryLanes, sizeof value);
      value = value / sum;
      std::memcpy(column + j * kQueryLanes, &value, sizeof value);
    }
  }
}

// Scores → probabilities in place for the block's queries (lanes), query `lane` over its keys [begin, end):
//   s = round(round(raw) · scale); p = round(exp(s - max) / Σ exp(s - max)), the sum in increasing key order.
// f32 activations: the kernel set's softmax; else lane by lane with the roundings (vector_exp.h's exp as well).
void softmax_block(const attention::KernelSet& kernels, float* s, int rows, const int64_t* begin, const int64_t* end,
                   float scale, DType act) {
  if (act == DType::kF32) return kernels.softmax(s, rows, begin, end, scale);
  for (int lane = 0; lane < rows; ++lane) {
    float max_score = -INFINITY;
    for (int64_t j = begin[lane]; j < end[lane]; ++j) {
      float& value = s[j * kQueryLanes + lane];
      value = round_to_activation(round_to_activation(value, act) * scale, act);
      max_score = std::max(max_score, value);
    }
    float sum = 0.0f;
    for (int64_t j = begin[lane]; j < end[lane]; ++j) {
      float& value = s[j * kQueryLanes + lane];
      value = vexp::exp_scalar(value - max_score);
      sum = sum + value;
    }
    for (int64_t j = begin[lane]; j < end[lane]; ++j) {
      float& value = s[j * kQueryLanes + lane];
      value = round_to_activation(value / sum, act);
    }
  }
}

const attention::KernelSet& choose_kernels() {
  static const attention::KernelSet portable{portable_scores, portable_softmax, portable_values};
  return active_cpu_isa() == CpuIsa::kAvx512 ? attention::avx512_kernels() : portable;
}

}  // namespace

void causal_attention(const AttentionParams& p, const float* q, int64_t tokens, const float* k, const float* v,
                      int64_t cache_len, float* out) {
  check_params(p, tokens, cache_len);
  const int64_t d = p.head_dim;
  const int64_t group = p.q_heads / p.kv_heads;
  const int64_t past = cache_len - tokens;
  const int64_t q_stride = p.q_heads * d, kv_stride = p.kv_heads * d;
  const int64_t blocks = (tokens + kQueryLanes - 1) / kQueryLanes;
  const DType act = p.activation;
  const attention::KernelSet& kernels = choose_kernels();
  // The first cache position query t sees.
  const auto first_key = [&](int64_t t) {
    return p.sliding_window > 0 ? std::max<int64_t>(0, past + t - p.sliding_window + 1) : int64_t{0};
  };

  // Dynamic scheduling: causal blocks grow with their position, and on a shared machine a descheduled thread should
  // not hold back a fixed half of the items (which thread computes an item never changes its bits).
  parallel_for_dynamic(0, p.q_heads * blocks, [&](int64_t item) {
    const int64_t head = item / blocks, kv_head = head / group;
    const int64_t t0 = (item % blocks) * kQueryLanes;
    const int rows = static_cast<int>(std::min<int64_t>(kQueryLanes, tokens - t0));
    const int64_t key0 = first_key(t0), keys = past + t0 + rows - key0;  // the block's keys: [key0, key0 + keys)

    thread_local gemm::ScratchBuffer qt_buffer, score_buffer;
    auto* qt = static_cast<float*>(qt_buffer.get(static_cast<size_t>(d * kQueryLanes) * sizeof(float)));
    auto* s = static_cast<float*>(score_buffer.get(static_cast<size_t>(keys * kQueryLanes) * sizeof(float)));
    for (int64_t i = 0; i < d; ++i) {
      for (int lane = 0; lane < kQueryLanes; ++lane) {
        qt[i * kQueryLanes + lane] = lane < rows ? q[(t0 + lane) * q_stride + head * d + i] : 0.0f;
      }
    }
    kernels.scores(qt, k + key0 * kv_stride + kv_head * d, kv_stride, keys, d, s);

    int64_t begin[kQueryLanes], end[kQueryLanes];  // per query, relative to key0
    for (int lane = 0; lane < rows; ++lane) {
      begin[lane] = first_key(t0 + lane) - key0;
      end[lane] = past + t0 + lane + 1 - key0;
    }
    softmax_block(kernels, s, rows, begin, end, p.scale, act);
    float* o = out + t0 * q_stride + head * d;
    kernels.values(s, rows, begin, end, v + key0 * kv_stride + kv_head * d, kv_stride, d, o, q_stride);
    if (act != DType::kF32) {
      for (int lane = 0; lane < rows; ++lane) {
        for (int64_t i = 0; i < d; ++i) o[lane * q_stride + i] = round_to_activation(o[lane * q_stride + i], act);
      }
    }
  });
}

}  // namespace hx
