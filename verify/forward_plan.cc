// ModelConfig → ModelPlan: the architecture rules of the forward pass, written once as data.
#include "verify/forward_plan.h"

#include <cmath>
#include <string_view>
#include <utility>

#include "arch/arch.h"
#include "arch/model_config.h"
#include "formats/errors.h"

namespace hx {
namespace {

bool starts_with(std::string_view s, std::string_view prefix) { return s.substr(0, prefix.size()) == prefix; }

// A table row's key: its HF-style pattern without the "{P}" / "{P}layers.{L}." prefix. Both naming schemes of a
// row share it, so "self_attn.w1" finds blocks.3.att.w1 in a .pth and model.layers.3.self_attn.w1 in safetensors.
std::string_view row_key(const TensorRow& row) {
  std::string_view n = row.name;
  for (std::string_view prefix : {std::string_view("{P}layers.{L}."), std::string_view("{P}")}) {
    if (starts_with(n, prefix)) return n.substr(prefix.size());
  }
  return n;
}

// The expected tensors of a config, per layer (-1 = model level), looked up by role or by row key.
class TensorIndex {
 public:
  TensorIndex(const ModelConfig& cfg, const Checkpoint& checkpoint)
      : expected_(expected_tensors(cfg)), checkpoint_(checkpoint), by_layer_(static_cast<size_t>(cfg.num_layers()) + 1) {
    for (const ExpectedTensor& e : expected_) by_layer_[static_cast<size_t>(e.layer + 1)].push_back(&e);
  }

  // The tensor of `layer` with this role, which must be the only one of its role there (else a table bug).
  TensorRef by_role(int layer, TensorRole role) const {
    const ExpectedTensor* found = nullptr;
    for (const ExpectedTensor* e : bucket(layer)) {
      if (e->role != role) continue;
      if (found) {
        throw FormatError("tensor table of layer " + std::to_string(layer) + " has two tensors of role " +
                          std::string(role_name(role)) + " ('" + found->name + "', '" + e->name +
                          "'); expected one");
      }
      found = e;
    }
    return ref(found);
  }

  TensorRef by_key(int layer, std::string_view key) const {
    for (const ExpectedTensor* e : bucket(layer)) {
      if (e->row && row_key(*e->row) == key) return ref(e);
    }
    return {};
  }

 private:
  const std::vector<const ExpectedTensor*>& bucket(int layer) const { return by_layer_.at(static_cast<size_t>(layer + 1)); }

  // Required tensors are always planned (loading reports them missing); optional ones only when the file has them.
  TensorRef ref(const ExpectedTensor* e) const {
    if (!e) return {};
    if (!e->required && !checkpoint_.find(e->name)) return {};
    return {e->name, e->shape};
  }

  std::vector<ExpectedTensor> expected_;
  const Checkpoint& checkpoint_;
  std::vector<std::vector<const ExpectedTensor*>> by_layer_;
};

RopePlan plan_rope(const RopeConfig& rope, int64_t head_dim, const std::string& where) {
  RopePlan plan;
  plan.head_dim = head_dim;
  switch (rope.type) {
    case RopeType::kNone:
      return plan;
    case RopeType::kDefault:
      if (rope.partial_rotary_factor != 1.0) {
        throw UnsupportedError(where + ": default RoPE over part of the head (partial_rotary_factor " +
                               std::to_string(rope.partial_rotary_factor) +
                               ") is not implemented; expected 1.0 or the proportional type");
      }
      break;
    case RopeType::kProportional:
      plan.proportional = true;
      break;
  }
  if (head_dim % 2 != 0) throw FormatError(where + ": RoPE needs an even head_dim, found " + std::to_string(head_dim));
  plan.enabled = true;
  plan.theta = rope.theta;
  plan.partial_rotary_factor = rope.partial_rotary_factor;
  return plan;
}

float inverse_sqrt(int64_t n) { return static_cast<float>(1.0 / std::sqrt(static_cast<double>(n))); }

AttentionPlan plan_attention(const ModelConfig& cfg, const TensorIndex& index, int i, const std::string& where) {
  const LayerConfig& l = cfg.layers[static_cast<size_t>(i)];
  AttentionPlan a;
  a.heads = l.num_heads;
  a.kv_heads = l.num_kv_heads;
  a.head_dim = l.head_dim;
  a.sliding_window = l.sliding_window;
  a.scale = cfg.attention_scaling == AttentionScaling::kOne ? 1.0f : inverse_sqrt(l.head_dim);
  a.rope = plan_rope(l.rope, l.head_dim, where);
  a.kv_source = l.kv_shared_from;
  a.v_norm = cfg.arch == Arch::kGemma4 || cfg.arch == Arch::kHxa07i;  // Gemma-4's weightless v_norm
  a.q = index.by_role(i, TensorRole::kAttentionQ);
  a.o = index.by_role(i, TensorRole::kAttentionO);
  a.q_norm = index.by_key(i, "self_attn.q_norm.weight");
  a.q_bias = index.by_key(i, "self_attn.q_proj.bias");
  a.o_bias = index.by_key(i, "self_attn.o_proj.bias");
  if (l.has_own_kv()) {  // a KV-shared layer's own k/v weights, if the file has them, are unused (teachers.md §3)
    a.k = index.by_role(i, TensorRole::kAttentionK);
    a.v = index.by_role(i, TensorRole::kAttentionV);
    a.k_norm = index.by_key(i, "self_attn.k_norm.weight");
    a.k_bias = index.by_key(i, "self_attn.k_proj.bias");
    a.v_bias = index.by_key(i, "self_attn.v_proj.bias");
  }
  return a;
}

// TICA (hxa07i.md): NoPE, QK-norm, GQA, causal over every token, scale 1/sqrt(head_dim), sigmoid LoRA gate.
AttentionPlan plan_tica(const ModelConfig& cfg, const TensorIndex& index, int i) {
  AttentionPlan a;
  a.heads = cfg.tica.num_heads;
  a.kv_heads = cfg.tica.num_kv_heads;
  a.head_dim = cfg.tica.head_dim;
  a.scale = inverse_sqrt(cfg.tica.head_dim);
  a.q = index.by_role(i, TensorRole::kTicaQ);
  a.k = index.by_role(i, TensorRole::kTicaK);
  a.v = index.by_role(i, TensorRole::kTicaV);
  a.o = index.by_role(i, TensorRole::kTicaO);
  a.q_norm = index.by_key(i, "self_attn.tica.q_norm.weight");
  a.k_norm = index.by_key(i, "self_attn.tica.k_norm.weight");
  a.gate_down = index.by_key(i, "self_attn.tica.g1");
  a.gate_up = index.by_key(i, "self_attn.tica.g2");
  return a;
}

RwkvPlan plan_rwkv(const ModelConfig& cfg, const TensorIndex& index, int i, bool first, const std::string& where) {
  const LayerConfig& l = cfg.layers[static_cast<size_t>(i)];
  const RwkvConfig& c = cfg.rwkv;
  RwkvPlan p;
  p.heads = l.num_heads;
  p.kv_heads = l.num_kv_heads;
  p.head_dim = l.head_dim;
  p.rope = plan_rope(l.rope, l.head_dim, where);
  p.k_scale_by_decay = c.k_scaling == KScaling::kDecay;
  p.first_rwkv_layer = first;
  p.value_residual = c.value_residual;
  p.key_residual = c.key_residual;
  p.bonus = c.bonus;
  p.r = index.by_role(i, TensorRole::kRwkvR);
  p.k = index.by_role(i, TensorRole::kRwkvK);
  p.v = index.by_role(i, TensorRole::kRwkvV);
  p.o = index.by_role(i, TensorRole::kRwkvO);
  p.r_bias = index.by_key(i, "self_attn.receptance.bias");
  p.k_bias = index.by_key(i, "self_attn.key.bias");
  p.v_bias = index.by_key(i, "self_attn.value.bias");
  p.r_norm = index.by_key(i, "self_attn.r_norm.weight");
  p.k_norm = index.by_key(i, "self_attn.k_norm.weight");
  p.w0 = index.by_role(i, TensorRole::kDecayVector);
  p.w1 = index.by_key(i, "self_attn.w1");
  p.w2 = index.by_key(i, "self_attn.w2");
  p.a0 = index.by_role(i, TensorRole::kIclrVector);
  p.a1 = index.by_key(i, "self_attn.a1");
  p.a2 = index.by_key(i, "self_attn.a2");
  p.g1 = index.by_key(i, "self_attn.g1");
  p.g2 = index.by_key(i, "self_attn.g2");
  // The first RWKV layer only stores v_first / k_first; its mix gates, if the file has them, are unused.
  if (p.value_residual && !first) {
    p.v0 = index.by_key(i, "self_attn.v0");
    p.v1 = index.by_key(i, "self_attn.v1");
    p.v2 = index.by_key(i, "self_attn.v2");
  }
  if (p.key_residual && !first) {
    p.k0 = index.by_key(i, "self_attn.k0");
    p.k1 = index.by_key(i, "self_attn.k1");
    p.k2 = index.by_key(i, "self_attn.k2");
  }
  if (p.bonus) p.r_k = index.by_role(i, TensorRole::kBonus);
  for (const TensorRef* needed : {&p.w1, &p.w2, &p.a1, &p.a2, &p.g1, &p.g2}) {
    if (!needed->used()) throw FormatError(where + ": the tensor table lists no RWKV LoRA factor it needs");
  }
  return p;
}

}  // namespace

ModelPlan plan_model(const Checkpoint& checkpoint, const ModelConfig& cfg) {
  validate_model_config(cfg, checkpoint.path);
  const TensorIndex index(cfg, checkpoint);
  ModelPlan plan;
  plan.architecture = std::string(arch_name(cfg.arch));
  plan.source = checkpoint.path;
  plan.vocab_size = cfg.vocab_size;
  plan.hidden_size = cfg.hidden_size;
  plan.rms_norm_eps = cfg.rms_norm_eps;
  plan.norm_weight_after_downcast = cfg.norm_style == NormStyle::kWeightAfterDowncast;
  plan.embed_scale = cfg.embed_scale;
  plan.final_logit_softcap = cfg.final_logit_softcapping;
  plan.gelu_tanh = cfg.activation == Activation::kGeluTanh;
  plan.embedding = index.by_role(-1, TensorRole::kEmbedding);
  plan.head = cfg.tie_word_embeddings ? plan.embedding : index.by_role(-1, TensorRole::kHead);
  plan.final_norm = index.by_key(-1, "norm.weight");
  if (cfg.has_ple()) {
    plan.ple_dim = cfg.hidden_size_per_layer_input;
    plan.ple_vocab = cfg.vocab_size_per_layer_input;
    plan.ple_table = index.by_role(-1, TensorRole::kPerLayerEmbedding);
    plan.ple_model_projection = index.by_key(-1, "per_layer_model_projection.weight");
    plan.ple_projection_norm = index.by_key(-1, "per_layer_projection_norm.weight");
  }

  bool seen_rwkv = false;
  for (int i = 0; i < cfg.num_layers(); ++i) {
    const LayerConfig& l = cfg.layers[static_cast<size_t>(i)];
    const std::string where = in_file(checkpoint.path, "layer " + std::to_string(i));
    LayerPlan lp;
    switch (l.kind) {
      case LayerKind::kSlidingAttention:
      case LayerKind::kFullAttention:
      case LayerKind::kNoPEAttention:
        lp.mixer = MixerKind::kAttention;
        lp.attention = plan_attention(cfg, index, i, where);
        break;
      case LayerKind::kRwkv7:
      case LayerKind::kRwkv7Tica:
        lp.mixer = l.kind == LayerKind::kRwkv7 ? MixerKind::kRwkv : MixerKind::kRwkvTica;
        lp.rwkv = plan_rwkv(cfg, index, i, !seen_rwkv, where);
        seen_rwkv = true;
        if (lp.mixer == MixerKind::kRwkvTica) lp.attention = plan_tica(cfg, index, i);
        break;
    }
    lp.input_norm = index.by_key(i, "input_layernorm.weight");
    const TensorRef pre_ffn = index.by_key(i, "pre_feedforward_layernorm.weight");
    if (pre_ffn.used()) {  // Gemma's sandwich: norms on the attention output and around the MLP
      lp.attention_out_norm = index.by_key(i, "post_attention_layernorm.weight");
      lp.ffn_in_norm = pre_ffn;
      lp.ffn_out_norm = index.by_key(i, "post_feedforward_layernorm.weight");
    } else {  // Llama convention: post_attention_layernorm is the MLP's input norm
      lp.ffn_in_norm = index.by_key(i, "post_attention_layernorm.weight");
    }
    lp.intermediate_size = l.intermediate_size;
    lp.mlp_gate = index.by_role(i, TensorRole::kMlpGate);
    lp.mlp_up = index.by_role(i, TensorRole::kMlpUp);
    lp.mlp_down = index.by_role(i, TensorRole::kMlpDown);
    if (cfg.has_ple()) {
      lp.ple_gate = index.by_key(i, "per_layer_input_gate.weight");
      lp.ple_projection = index.by_key(i, "per_layer_projection.weight");
      lp.ple_norm = index.by_key(i, "post_per_layer_input_norm.weight");
    }
    lp.layer_scalar = index.by_role(i, TensorRole::kLayerScalar);
    if (!lp.input_norm.used() || !lp.ffn_in_norm.used() || !lp.mlp_gate.used()) {
      throw FormatError(where + ": the tensor table lists no input norm, MLP norm or MLP for this layer");
    }
    plan.layers.push_back(std::move(lp));
  }
  return plan;
}

ModelPlan plan_model(const Checkpoint& checkpoint) { return plan_model(checkpoint, config_for_checkpoint(checkpoint)); }

}  // namespace hx
