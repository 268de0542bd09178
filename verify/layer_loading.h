// One layer's weights filled from its plan, for both engines: the CPU reference (verify/model.cc: WeightMatrix and
// std::vector<float>) and the GPU (verify/cuda/cuda_model.cc: device matrices and vectors). Their weight structs
// differ in types but not in field names, so one walk over the plan serves both and they cannot drift apart.
//
// A Loader provides matrix(ref[, layout]) (null when the plan does not use the tensor), vector(ref) (empty when
// unused) and scalar(ref) (a one-element tensor's value).
#pragma once

#include <vector>

#include "verify/forward_plan.h"
#include "verify/kernels.h"
#include "verify/model_weights.h"

namespace hx {

// The inverse frequencies of a plan's RoPE (empty when the layer has none).
inline std::vector<float> rope_inv_freq_of(const RopePlan& rope) {
  if (!rope.enabled) return {};
  RopeParams params;
  params.type = rope.proportional ? RopeType::kProportional : RopeType::kDefault;
  params.theta = rope.theta;
  params.head_dim = rope.head_dim;
  params.partial_rotary_factor = rope.partial_rotary_factor;
  return rope_inv_freq(params);
}

template <typename Loader, typename Weights>
void load_attention_weights(Loader& load, const AttentionPlan& p, Weights& w) {
  w.q = load.matrix(p.q), w.k = load.matrix(p.k), w.v = load.matrix(p.v), w.o = load.matrix(p.o);
  w.gate_down = load.matrix(p.gate_down, WeightLayout::kInOut);
  w.gate_up = load.matrix(p.gate_up, WeightLayout::kInOut);
  w.q_norm = load.vector(p.q_norm), w.k_norm = load.vector(p.k_norm);
  w.q_bias = load.vector(p.q_bias), w.k_bias = load.vector(p.k_bias), w.v_bias = load.vector(p.v_bias);
  w.o_bias = load.vector(p.o_bias);
  w.rope_inv_freq = rope_inv_freq_of(p.rope);
}

template <typename Loader, typename Weights>
void load_rwkv_weights(Loader& load, const RwkvPlan& p, Weights& w) {
  w.r = load.matrix(p.r), w.k = load.matrix(p.k), w.v = load.matrix(p.v), w.o = load.matrix(p.o);
  const auto lora = [&](const TensorRef& ref) { return load.matrix(ref, WeightLayout::kInOut); };
  w.w1 = lora(p.w1), w.w2 = lora(p.w2), w.a1 = lora(p.a1), w.a2 = lora(p.a2);
  w.v1 = lora(p.v1), w.v2 = lora(p.v2), w.k1 = lora(p.k1), w.k2 = lora(p.k2);
  w.g1 = lora(p.g1), w.g2 = lora(p.g2);
  w.r_bias = load.vector(p.r_bias), w.k_bias = load.vector(p.k_bias), w.v_bias = load.vector(p.v_bias);
  w.r_norm = load.vector(p.r_norm), w.k_norm = load.vector(p.k_norm);
  w.w0 = load.vector(p.w0), w.a0 = load.vector(p.a0), w.v0 = load.vector(p.v0), w.k0 = load.vector(p.k0);
  w.r_k = load.vector(p.r_k);
  w.rope_inv_freq = rope_inv_freq_of(p.rope);
}

template <typename Loader, typename Layer>
void load_layer_weights(Loader& load, const LayerPlan& lp, Layer& w) {
  if (lp.mixer != MixerKind::kRwkv) load_attention_weights(load, lp.attention, w.attention);
  if (lp.mixer != MixerKind::kAttention) load_rwkv_weights(load, lp.rwkv, w.rwkv);
  w.input_norm = load.vector(lp.input_norm);
  w.attention_out_norm = load.vector(lp.attention_out_norm);
  w.ffn_in_norm = load.vector(lp.ffn_in_norm);
  w.ffn_out_norm = load.vector(lp.ffn_out_norm);
  w.mlp_gate = load.matrix(lp.mlp_gate), w.mlp_up = load.matrix(lp.mlp_up), w.mlp_down = load.matrix(lp.mlp_down);
  w.ple_gate = load.matrix(lp.ple_gate), w.ple_projection = load.matrix(lp.ple_projection);
  w.ple_norm = load.vector(lp.ple_norm);
  if (lp.layer_scalar.used()) {
    w.layer_scalar = load.scalar(lp.layer_scalar);
    w.has_layer_scalar = true;
  }
}

}  // namespace hx
