// Gemma-4's per-layer embeddings (PLE), teachers.md §2 steps 1 and 2 (last block):
//
//   tok  = E_ple[id] · √P                         [T, L·P]  (ids ≥ vocab_size_per_layer_input read row 0, as HF)
//   proj = RMSNorm_P((W_plmp · h) · D^-0.5; per_layer_projection_norm)   per P-wide slice
//   P    = (proj + tok) · 2^-0.5                  [T, L, P]; layer l reads P[:, l, :]
//   per layer: h += RMSNorm(W_proj · (gelu_tanh(W_gate · h) ⊙ P_l); post_per_layer_input_norm)
// The constants are f32 values of the Python scalars transformers multiplies by (√P, D^-0.5, 2^-0.5).
#include <cmath>
#include <vector>

#include "verify/forward_internal.h"

namespace hx {

void gemma_per_layer_inputs(const Model::Impl& model, const StepContext& ctx, std::span<const int64_t> tokens,
                            const float* embedded, float* per_layer_inputs) {
  const ModelPlan& plan = model.plan;
  const int64_t T = ctx.tokens, P = plan.ple_dim, width = plan.num_layers() * P;
  const float token_scale = static_cast<float>(std::sqrt(static_cast<double>(P)));
  const float projection_scale = static_cast<float>(1.0 / std::sqrt(static_cast<double>(plan.hidden_size)));
  const float combine_scale = static_cast<float>(1.0 / std::sqrt(2.0));

  Buffer projected = ctx.take(T * width);
  project(ctx, embedded, *model.ple_model_projection, projected.data());
  for (float& value : projected) value = value * projection_scale;
  rms_norm_rows(ctx, projected.data(), projected.data(), T * plan.num_layers(), P, model.ple_projection_norm);

  for_each_token(ctx, [&](int64_t t) {
    const int64_t id = tokens[static_cast<size_t>(t)];
    const int64_t row = (id >= 0 && id < plan.ple_vocab) ? id : 0;
    float* out = per_layer_inputs + t * width;
    model.ple_table->decode_f32(row, row + 1, 0, width, out, width);
    const float* proj = projected.data() + t * width;
    for (int64_t i = 0; i < width; ++i) out[i] = (proj[i] + out[i] * token_scale) * combine_scale;
  });
}

void gemma_per_layer_block(const LayerWeights& w, const StepContext& ctx, int layer, const float* per_layer_inputs,
                           float* h) {
  const ModelPlan& plan = *ctx.plan;
  const int64_t T = ctx.tokens, P = plan.ple_dim, D = plan.hidden_size, L = plan.num_layers();
  Buffer gate = ctx.take(T * P), delta = ctx.take(T * D);
  project(ctx, h, *w.ple_gate, gate.data());
  for (int64_t t = 0; t < T; ++t) {
    const float* p = per_layer_inputs + (t * L + layer) * P;
    for (int64_t i = 0; i < P; ++i) {
      const float activated = plan.gelu_tanh ? gelu_tanh(gate[static_cast<size_t>(t * P + i)])
                                             : silu(gate[static_cast<size_t>(t * P + i)]);
      gate[static_cast<size_t>(t * P + i)] = activated * p[i];
    }
  }
  project(ctx, gate.data(), *w.ple_projection, delta.data());
  rms_norm_rows(ctx, delta.data(), delta.data(), T, D, w.ple_norm);
  for (size_t i = 0; i < delta.size(); ++i) h[i] = h[i] + delta[i];
}

}  // namespace hx
