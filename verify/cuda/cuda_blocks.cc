// The mixers and Gemma's PLE blocks of the CUDA forward pass: the CPU's attention_block.cc, rwkv_block.cc and
// gemma_block.cc step for step (their header comments give the formulas), on device buffers.
#include <cmath>
#include <string>

#include "formats/errors.h"
#include "verify/cuda/cuda_internal.h"
#include "verify/cuda/cuda_kernels.h"

namespace hx::cuda {
namespace {

// Appends `tokens` rows of `row_floats` to a cache, growing it (doubling) when full.
void append_rows(const CallContext& ctx, DeviceBuffer& cache, DeviceLayerState& state, const float* rows,
                 bool is_keys) {
  const size_t row_bytes = static_cast<size_t>(state.row_floats) * sizeof(float);
  const size_t offset = static_cast<size_t>(state.positions) * row_bytes;
  check(cudaMemcpyAsync(static_cast<char*>(cache.get()) + offset, rows, static_cast<size_t>(ctx.tokens) * row_bytes,
                        cudaMemcpyDeviceToDevice, ctx.stream),
        is_keys ? "appending keys to the KV cache" : "appending values to the KV cache");
}

void reserve_cache(const CallContext& ctx, DeviceLayerState& state, int64_t row_floats) {
  state.row_floats = row_floats;
  const int64_t needed = state.positions + ctx.tokens;
  if (needed <= state.capacity) return;
  const int64_t capacity = std::max<int64_t>(needed, std::max<int64_t>(2 * state.capacity, 256));
  const size_t row_bytes = static_cast<size_t>(row_floats) * sizeof(float);
  for (DeviceBuffer* cache : {&state.keys, &state.values}) {
    DeviceBuffer grown(static_cast<size_t>(capacity) * row_bytes);
    if (state.positions > 0) {
      check(cudaMemcpyAsync(grown.get(), cache->get(), static_cast<size_t>(state.positions) * row_bytes,
                            cudaMemcpyDeviceToDevice, ctx.stream),
            "growing the KV cache");
      check(cudaStreamSynchronize(ctx.stream), "growing the KV cache");
    }
    *cache = std::move(grown);
  }
  state.capacity = capacity;
}

enum class Squash : uint8_t { kNone, kTanh, kSigmoid };

// out [T, second.rows] = squash(x@first)@second (the LoRA shape; factors uploaded as [out, in]).
void low_rank(const CallContext& ctx, const ProductInput& x, const DeviceMatrix& first, const DeviceMatrix& second,
              Squash squash, float* out) {
  DeviceBuffer mid = ctx.take(ctx.tokens * first.rows);
  project(ctx, x, first, mid.f32());
  if (squash != Squash::kNone) {
    unary(mid.f32(), ctx.tokens * first.rows, squash == Squash::kTanh ? Unary::kTanh : Unary::kSigmoid, ctx.stream);
  }
  project(ctx, mid.f32(), second, out);
}

}  // namespace

void attention_mixer(const AttentionPlan& plan, const AttentionWeights& w, CallContext& ctx, const ProductInput& x,
                     const DeviceRope* rope, DeviceLayerState& own, const DeviceLayerState& cache, float* out,
                     bool add_to_out) {
  const int64_t T = ctx.tokens, d = plan.head_dim;
  const int64_t q_width = plan.heads * d, kv_width = plan.kv_heads * d;
  const cudaStream_t s = ctx.stream;

  DeviceBuffer q = ctx.take(T * q_width);
  project(ctx, x, *w.q, q.f32(), &w.q_bias);
  if (!w.q_norm.empty()) rms_norm_rows(ctx, q.f32(), q.f32(), T * plan.heads, d, w.q_norm);
  if (rope) apply_rope(q.f32(), T, plan.heads, d, rope->cos, rope->sin, s);

  if (w.k) {  // this layer computes K/V (else it reads its source layer's, already holding this call's tokens)
    DeviceBuffer k = ctx.take(T * kv_width), v = ctx.take(T * kv_width);
    project(ctx, x, *w.k, k.f32(), &w.k_bias);
    project(ctx, x, *w.v, v.f32(), &w.v_bias);
    if (!w.k_norm.empty()) rms_norm_rows(ctx, k.f32(), k.f32(), T * plan.kv_heads, d, w.k_norm);
    if (plan.v_norm) rms_norm_rows(ctx, v.f32(), v.f32(), T * plan.kv_heads, d, DeviceVector{});
    if (rope) apply_rope(k.f32(), T, plan.kv_heads, d, rope->cos, rope->sin, s);
    reserve_cache(ctx, own, kv_width);
    append_rows(ctx, own.keys, own, k.f32(), true);
    append_rows(ctx, own.values, own, v.f32(), false);
    own.positions += T;
  }
  if (cache.positions != ctx.position + T || cache.row_floats != kv_width) {
    throw UsageError("attention: the KV cache holds " + std::to_string(cache.positions) + " positions after position " +
                     std::to_string(ctx.position + T - 1) + "; expected " + std::to_string(ctx.position + T) +
                     " (a state used with another model, or a KV-sharing source that has not run)");
  }

  AttentionShape shape;
  shape.q_heads = plan.heads;
  shape.kv_heads = plan.kv_heads;
  shape.head_dim = d;
  shape.scale = plan.scale;
  shape.sliding_window = plan.sliding_window;
  shape.tensor_cores = ctx.bf16;  // the bf16×3 kernel is as accurate as the f32 one to ~1e-5; kF32 keeps the reference
  DeviceBuffer attended = ctx.take(T * q_width);
  {
    const OpTimer timer(ctx, "attention");
    causal_attention(shape, q.f32(), T, cache.keys.f32(), cache.values.f32(), cache.positions, attended.f32(), s);
  }

  if (w.gate_down) {  // TICA: att · (σ(x@g1)@g2)
    DeviceBuffer gate = ctx.take(T * q_width);
    low_rank(ctx, x, *w.gate_down, *w.gate_up, Squash::kSigmoid, gate.f32());
    multiply(attended.f32(), gate.f32(), T * q_width, s);
  }
  project(ctx, attended.f32(), *w.o, out, &w.o_bias, add_to_out);
}

void rwkv_mixer(const RwkvPlan& plan, const RwkvWeights& w, CallContext& ctx, const ProductInput& x, const DeviceRope* rope,
                DeviceLayerState& state, float* out) {
  const int64_t T = ctx.tokens, H = plan.heads, Hk = plan.kv_heads, N = plan.head_dim;
  const int64_t C = H * N, Ck = Hk * N;
  const cudaStream_t s = ctx.stream;
  if (state.wkv_floats != H * N * N) {
    throw UsageError("RWKV layer: the state holds " + std::to_string(state.wkv_floats) + " values; expected " +
                     std::to_string(H * N * N) + " (a state made for another model)");
  }

  DeviceBuffer r = ctx.take(T * C), k = ctx.take(T * Ck), v = ctx.take(T * Ck);
  project(ctx, x, *w.r, r.f32(), &w.r_bias);
  project(ctx, x, *w.k, k.f32(), &w.k_bias);
  project(ctx, x, *w.v, v.f32(), &w.v_bias);
  if (!w.r_norm.empty()) rms_norm_rows(ctx, r.f32(), r.f32(), T * H, N, w.r_norm);
  if (!w.k_norm.empty()) rms_norm_rows(ctx, k.f32(), k.f32(), T * Hk, N, w.k_norm);
  if (rope) {
    apply_rope(r.f32(), T, H, N, rope->cos, rope->sin, s);
    apply_rope(k.f32(), T, Hk, N, rope->cos, rope->sin, s);
  }

  // v_first / k_first: stored by the first RWKV layer, mixed in by the later ones.
  if (plan.first_rwkv_layer) {
    ctx.first_size = T * Ck;
    const size_t bytes = static_cast<size_t>(T * Ck) * sizeof(float);
    if (plan.value_residual) {
      ctx.v_first = ctx.take(T * Ck);
      check(cudaMemcpyAsync(ctx.v_first.get(), v.get(), bytes, cudaMemcpyDeviceToDevice, s), "saving v_first");
    }
    if (plan.key_residual) {
      ctx.k_first = ctx.take(T * Ck);
      check(cudaMemcpyAsync(ctx.k_first.get(), k.get(), bytes, cudaMemcpyDeviceToDevice, s), "saving k_first");
    }
  } else {
    const auto mix_toward_first = [&](DeviceBuffer& target, const DeviceBuffer& first, const DeviceVector& x0,
                                      const DeviceMatrix& m1, const DeviceMatrix& m2) {
      if (!first.get() || ctx.first_size != T * Ck) {
        throw UsageError("RWKV layer: v_first/k_first of this call are missing (no first RWKV layer ran)");
      }
      DeviceBuffer gate = ctx.take(T * Ck);
      low_rank(ctx, x, m1, m2, Squash::kNone, gate.f32());
      sigmoid_with_bias(gate.f32(), T, Ck, x0.ptr(), s);
      lerp_toward(target.f32(), first.f32(), gate.f32(), T * Ck, s);
    };
    if (plan.value_residual) mix_toward_first(v, ctx.v_first, w.v0, *w.v1, *w.v2);
    if (plan.key_residual) mix_toward_first(k, ctx.k_first, w.k0, *w.k1, *w.k2);
  }
  DeviceBuffer keys, values;
  if (H != Hk) {
    keys = ctx.take(T * C);
    values = ctx.take(T * C);
    repeat_kv(k.f32(), keys.f32(), T, H, Hk, N, s);
    repeat_kv(v.f32(), values.f32(), T, H, Hk, N, s);
  } else {
    keys = std::move(k);
    values = std::move(v);
  }

  DeviceBuffer a = ctx.take(T * C), z = ctx.take(T * C), omega = ctx.take(T * C), decay = ctx.take(T * C);
  DeviceBuffer kk = ctx.take(T * C), remove = ctx.take(T * C), replace = ctx.take(T * C);
  low_rank(ctx, x, *w.a1, *w.a2, Squash::kNone, a.f32());
  sigmoid_with_bias(a.f32(), T, C, w.a0.ptr(), s);
  low_rank(ctx, x, *w.w1, *w.w2, Squash::kTanh, z.f32());
  add_bias(z.f32(), T, C, w.w0.ptr(), s);  // z = w0 + tanh(x@w1)@w2
  rwkv7_decay_from_logits(z.f32(), omega.f32(), decay.f32(), T * C, s);
  rwkv7_normalize_keys(keys.f32(), kk.f32(), T * H, N, s);
  rwkv7_removal_terms(kk.f32(), a.f32(), remove.f32(), replace.f32(), T * C, s);
  rwkv7_scale_keys(keys.f32(), plan.k_scale_by_decay ? decay.f32() : omega.f32(), a.f32(), T * C, s);

  DeviceBuffer y = ctx.take(T * C);
  {
    const OpTimer timer(ctx, "rwkv recurrence");
    rwkv7_recurrence(r.f32(), decay.f32(), keys.f32(), values.f32(), remove.f32(), replace.f32(), T, H, N,
                     state.wkv.f32(), y.f32(), s);
  }
  const float y_scale = static_cast<float>(1.0 / std::sqrt(static_cast<double>(N)));
  rwkv7_output(y.f32(), r.f32(), keys.f32(), values.f32(), w.r_k.ptr(), y_scale, T, H, N, y.f32(), s);
  DeviceBuffer& gate = z;  // z is spent: reuse it for the output gate σ(x@g1)@g2
  low_rank(ctx, x, *w.g1, *w.g2, Squash::kSigmoid, gate.f32());
  multiply(y.f32(), gate.f32(), T * C, s);
  project(ctx, y.f32(), *w.o, out);
}

void gemma_per_layer_inputs(const CallContext& ctx, const DeviceMatrix& table, const DeviceMatrix& projection,
                            const DeviceVector& projection_norm, const int64_t* ple_ids, const float* embedded,
                            float* per_layer_inputs) {
  const ModelPlan& plan = *ctx.plan;
  const int64_t T = ctx.tokens, P = plan.ple_dim, width = plan.num_layers() * P;
  const float token_scale = static_cast<float>(std::sqrt(static_cast<double>(P)));
  const float projection_scale = static_cast<float>(1.0 / std::sqrt(static_cast<double>(plan.hidden_size)));
  const float combine_scale = static_cast<float>(1.0 / std::sqrt(2.0));

  DeviceBuffer projected = ctx.take(T * width);
  project(ctx, embedded, projection, projected.f32());
  scale(projected.f32(), T * width, projection_scale, ctx.stream);
  rms_norm_rows(ctx, projected.f32(), projected.f32(), T * plan.num_layers(), P, projection_norm);
  gather_rows(table.data.get(), table.bf16, width, ple_ids, T, 1.0f, per_layer_inputs, ctx.stream);
  ple_combine(per_layer_inputs, projected.f32(), T * width, token_scale, combine_scale, ctx.stream);
}

void gemma_per_layer_block(const LayerWeights& w, const CallContext& ctx, int layer, const float* per_layer_inputs,
                           float* h) {
  const ModelPlan& plan = *ctx.plan;
  const int64_t T = ctx.tokens, P = plan.ple_dim, D = plan.hidden_size, L = plan.num_layers();
  DeviceBuffer gate = ctx.take(T * P), delta = ctx.take(T * D);
  project(ctx, h, *w.ple_gate, gate.f32());
  ple_gate(gate.f32(), per_layer_inputs, T, L, layer, P, plan.gelu_tanh, ctx.stream);
  project(ctx, gate.f32(), *w.ple_projection, delta.f32());
  rms_norm_rows(ctx, delta.f32(), delta.f32(), T, D, w.ple_norm);
  add(h, delta.f32(), T * D, ctx.stream);
}

}  // namespace hx::cuda
