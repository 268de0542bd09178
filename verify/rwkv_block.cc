// The RWKV-7 time mix of the hybrids (hybrid-arch.md §1.2 for hxa079, ../shared/spec/hxa07i.md for hxa07i):
//
//   r = Wr·x, k = Wk·x, v = Wv·x (+biases)           r [T,H,N], k and v [T,Hk,N]
//   qk-norm: per-head RMSNorm of r (r_norm) and k (k_norm)
//   RoPE on r and k (hxa079, teacher θ; hxa07i: none)
//   first RWKV layer: v_first = v, k_first = k (post-RoPE, before repeat_kv)
//   later layers:     v += (v_first − v)·σ(v0 + x@v1@v2),  k += (k_first − k)·σ(k0 + x@k1@k2)
//   k, v = repeat_kv(k), repeat_kv(v)                 query head j reads kv head ⌊j/G⌋
//   a = σ(a0 + x@a1@a2);  z = w0 + tanh(x@w1)@w2;  ω = −softplus(−z) − 0.5;  d = exp(−exp(ω))
//   kk = k / max(‖k‖, 1e-12) per head (before the scaling below)
//   k = k·(1 − ω + a)   (hxa079: ω, NOT the decay)    or   k·(1 − d + a)   (hxa07i: the decay)
//   WKV: S = diag(d)·S + (−kk)ᵀS·(kk·a) + k vᵀ per head, y = rᵀS      (verify/kernels.h rwkv7_recurrence)
//   o = y/√N + (Σ_i r_i k_i r_k[h,i])·v   (bonus: hxa079 only; scaled k, rotated r, mixed v)
//   out = Wo·(o ⊙ σ(x@g1)@g2)
// Every switch comes from the plan (value_residual, key_residual, bonus, qk-norm, RoPE, k_scale_by_decay).
#include <cmath>
#include <cstring>
#include <string>
#include <vector>

#include "formats/errors.h"
#include "verify/forward_internal.h"

namespace hx {
namespace {

enum class Squash : uint8_t { kNone, kTanh, kSigmoid };

// out [T, second.rows()] = squash(x@first)@second, the LoRA shape x @ w1 @ w2 (factors viewed transposed).
void low_rank(const StepContext& ctx, const float* x, const WeightMatrix& first, const WeightMatrix& second,
              Squash squash, float* out) {
  const int64_t rank = first.rows();
  Buffer mid = ctx.take(ctx.tokens * rank);
  project(ctx, x, first, mid.data());
  if (squash != Squash::kNone) {
    for_each_token(ctx, [&](int64_t t) {
      float* row = mid.data() + t * rank;
      for (int64_t i = 0; i < rank; ++i) row[i] = squash == Squash::kTanh ? std::tanh(row[i]) : sigmoid(row[i]);
    });
  }
  project(ctx, mid.data(), second, out);
}

// gate[t][c] = σ(bias[c] + gate[t][c]): the "x0 + LoRA" gates (a, the v/k mix).
void sigmoid_with_bias(const StepContext& ctx, float* gate, const std::vector<float>& bias) {
  const int64_t width = static_cast<int64_t>(bias.size());
  for_each_token(ctx, [&](int64_t t) {
    float* row = gate + t * width;
    for (int64_t c = 0; c < width; ++c) row[c] = sigmoid(bias[static_cast<size_t>(c)] + row[c]);
  });
}

// [T, kv_heads, N] → [T, heads, N]: query head j takes kv head j / (heads / kv_heads) (repeat_kv).
Buffer repeat_kv(const StepContext& ctx, Buffer&& x, int64_t heads, int64_t kv_heads, int64_t n) {
  if (heads == kv_heads) return std::move(x);
  const int64_t tokens = ctx.tokens, group = heads / kv_heads;
  Buffer out = ctx.take(tokens * heads * n);
  for (int64_t t = 0; t < tokens; ++t) {
    for (int64_t h = 0; h < heads; ++h) {
      std::memcpy(out.data() + (t * heads + h) * n, x.data() + (t * kv_heads + h / group) * n,
                  static_cast<size_t>(n) * sizeof(float));
    }
  }
  return out;
}

}  // namespace

void rwkv_mixer(const RwkvPlan& plan, const RwkvWeights& w, StepContext& ctx, const float* x, const RopeTable* rope,
                LayerState& state, float* out) {
  const int64_t T = ctx.tokens, H = plan.heads, Hk = plan.kv_heads, N = plan.head_dim;
  const int64_t C = H * N, Ck = Hk * N;
  if (static_cast<int64_t>(state.wkv.size()) != H * N * N) {
    throw UsageError("RWKV layer: the state holds " + std::to_string(state.wkv.size()) + " values; expected " +
                     std::to_string(H * N * N) + " (a state made for another model)");
  }

  Buffer r = ctx.take(T * C), k = ctx.take(T * Ck), v = ctx.take(T * Ck);
  project(ctx, x, *w.r, r.data(), &w.r_bias);
  project(ctx, x, *w.k, k.data(), &w.k_bias);
  project(ctx, x, *w.v, v.data(), &w.v_bias);
  if (!w.r_norm.empty()) rms_norm_rows(ctx, r.data(), r.data(), T * H, N, w.r_norm);
  if (!w.k_norm.empty()) rms_norm_rows(ctx, k.data(), k.data(), T * Hk, N, w.k_norm);
  if (rope) {
    apply_rope(r.data(), T, H, *rope);
    apply_rope(k.data(), T, Hk, *rope);
  }

  // v_first / k_first: stored by the first RWKV layer, mixed in by the later ones.
  if (plan.first_rwkv_layer) {
    if (plan.value_residual) ctx.v_first.assign(v.begin(), v.end());
    if (plan.key_residual) ctx.k_first.assign(k.begin(), k.end());
  } else {
    const auto mix_toward_first = [&](Buffer& target, const std::vector<float>& first, const std::vector<float>& x0,
                                      const WeightMatrix& m1, const WeightMatrix& m2) {
      if (first.size() != target.size()) {
        throw UsageError("RWKV layer: v_first/k_first of this call are missing (no first RWKV layer ran)");
      }
      Buffer gate = ctx.take(static_cast<int64_t>(target.size()));
      low_rank(ctx, x, m1, m2, Squash::kNone, gate.data());
      sigmoid_with_bias(ctx, gate.data(), x0);
      lerp_toward(target.data(), first.data(), gate.data(), static_cast<int64_t>(target.size()));
    };
    if (plan.value_residual) mix_toward_first(v, ctx.v_first, w.v0, *w.v1, *w.v2);
    if (plan.key_residual) mix_toward_first(k, ctx.k_first, w.k0, *w.k1, *w.k2);
  }
  Buffer keys = repeat_kv(ctx, std::move(k), H, Hk, N);
  const Buffer values = repeat_kv(ctx, std::move(v), H, Hk, N);

  Buffer a = ctx.take(T * C), z = ctx.take(T * C), omega = ctx.take(T * C), decay = ctx.take(T * C);
  Buffer kk = ctx.take(T * C), remove = ctx.take(T * C), replace = ctx.take(T * C);
  low_rank(ctx, x, *w.a1, *w.a2, Squash::kNone, a.data());
  sigmoid_with_bias(ctx, a.data(), w.a0);
  low_rank(ctx, x, *w.w1, *w.w2, Squash::kTanh, z.data());
  for_each_token(ctx, [&](int64_t t) {
    float* row = z.data() + t * C;
    for (int64_t c = 0; c < C; ++c) row[c] = w.w0[static_cast<size_t>(c)] + row[c];
  });
  rwkv7_decay_from_logits(z.data(), omega.data(), decay.data(), T * C);
  rwkv7_normalize_keys(keys.data(), kk.data(), T * H, N);
  rwkv7_removal_terms(kk.data(), a.data(), remove.data(), replace.data(), T * C);
  rwkv7_scale_keys(keys.data(), plan.k_scale_by_decay ? decay.data() : omega.data(), a.data(), T * C);

  Buffer y = ctx.take(T * C);
  Rwkv7Inputs in;
  in.r = r.data();
  in.decay = decay.data();
  in.k = keys.data();
  in.v = values.data();
  in.remove = remove.data();
  in.replace = replace.data();
  rwkv7_recurrence(in, T, H, N, state.wkv.data(), y.data());

  const float y_scale = static_cast<float>(1.0 / std::sqrt(static_cast<double>(N)));
  rwkv7_output(y.data(), r.data(), keys.data(), values.data(), w.r_k.empty() ? nullptr : w.r_k.data(), y_scale, T, H,
               N, y.data());
  Buffer& gate = z;  // z is spent: reuse it for the output gate σ(x@g1)@g2
  low_rank(ctx, x, *w.g1, *w.g2, Squash::kSigmoid, gate.data());
  for_each_token(ctx, [&](int64_t t) {
    for (int64_t c = t * C; c < (t + 1) * C; ++c) y[static_cast<size_t>(c)] = y[static_cast<size_t>(c)] * gate[static_cast<size_t>(c)];
  });
  project(ctx, y.data(), *w.o, out);
}

}  // namespace hx
