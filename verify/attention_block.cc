// Softmax attention mixers: Gemma-4 sliding/full attention (q/k norm, weightless v norm, RoPE default or
// proportional, scale 1, KV sharing), Llama (RoPE, 1/√d), hxa079's NoPE GQA layers and hxa07i's TICA (QK-norm, NoPE,
// 1/√d, sigmoid LoRA gate). One routine, switched by the plan:
//   q = Wq·x (+b) → per-head RMSNorm(q_norm) → RoPE
//   k = Wk·x (+b) → per-head RMSNorm(k_norm) → RoPE;  v = Wv·x (+b) → weightless RMSNorm (Gemma)   [own K/V only]
//   append k, v to the cache; attend causally (window, GQA, scale) over the cache (the source layer's when shared)
//   TICA: att ⊙= σ(x@g1)@g2;  out (=|+=) Wo·att (+b)
#include <cmath>
#include <string>
#include <vector>

#include "formats/errors.h"
#include "verify/forward_internal.h"

namespace hx {
namespace {

void append_rows(std::vector<float>& cache, const Buffer& rows) {
  cache.insert(cache.end(), rows.begin(), rows.end());
}

}  // namespace

void attention_mixer(const AttentionPlan& plan, const AttentionWeights& w, const StepContext& ctx, const float* x,
                     const RopeTable* rope, LayerState& own, const LayerState& cache, float* out, bool add_to_out) {
  const int64_t T = ctx.tokens, d = plan.head_dim;
  const int64_t q_width = plan.heads * d, kv_width = plan.kv_heads * d;

  Buffer q = ctx.take(T * q_width);
  Buffer k, v;
  if (w.k) {  // this layer computes K/V (else it reads its source layer's, already holding this call's tokens)
    k = ctx.take(T * kv_width);
    v = ctx.take(T * kv_width);
    const MatmulOutput qkv[] = {{w.q.get(), q.data(), q_width}, {w.k.get(), k.data(), kv_width},
                                {w.v.get(), v.data(), kv_width}};
    matmul_many(x, T, w.q->cols(), qkv, ctx.matmul);  // x packed once for the three
    if (!w.k_bias.empty()) add_bias(k.data(), T, kv_width, w.k_bias.data());
    if (!w.v_bias.empty()) add_bias(v.data(), T, kv_width, w.v_bias.data());
  } else {
    project(ctx, x, *w.q, q.data());
  }
  if (!w.q_bias.empty()) add_bias(q.data(), T, q_width, w.q_bias.data());
  if (!w.q_norm.empty()) rms_norm_rows(ctx, q.data(), q.data(), T * plan.heads, d, w.q_norm);
  if (rope) apply_rope(q.data(), T, plan.heads, *rope);

  if (w.k) {
    if (!w.k_norm.empty()) rms_norm_rows(ctx, k.data(), k.data(), T * plan.kv_heads, d, w.k_norm);
    if (plan.v_norm) rms_norm_rows(ctx, v.data(), v.data(), T * plan.kv_heads, d, {});
    if (rope) apply_rope(k.data(), T, plan.kv_heads, *rope);
    append_rows(own.keys, k);
    append_rows(own.values, v);
  }
  const int64_t cache_len = static_cast<int64_t>(cache.keys.size()) / kv_width;
  if (cache_len != ctx.position + T || cache.values.size() != cache.keys.size()) {
    throw UsageError("attention: the KV cache holds " + std::to_string(cache_len) + " positions after position " +
                     std::to_string(ctx.position + T - 1) + "; expected " + std::to_string(ctx.position + T) +
                     " (a state used with another model, or a KV-sharing source that has not run)");
  }

  AttentionParams params;
  params.q_heads = plan.heads;
  params.kv_heads = plan.kv_heads;
  params.head_dim = d;
  params.scale = plan.scale;
  params.sliding_window = plan.sliding_window;
  Buffer attended = ctx.take(T * q_width);
  causal_attention(params, q.data(), T, cache.keys.data(), cache.values.data(), cache_len, attended.data());

  if (w.gate_down) {  // TICA: att · (σ(x@g1)@g2)
    const int64_t rank = w.gate_down->rows();
    Buffer low = ctx.take(T * rank), gate = ctx.take(T * q_width);
    project(ctx, x, *w.gate_down, low.data());
    for (float& value : low) value = sigmoid(value);
    project(ctx, low.data(), *w.gate_up, gate.data());
    for (size_t i = 0; i < attended.size(); ++i) attended[i] = attended[i] * gate[i];
  }
  project(ctx, attended.data(), *w.o, out, &w.o_bias, add_to_out);
}

}  // namespace hx
