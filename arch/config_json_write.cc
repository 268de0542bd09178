// ModelConfig → config.json: transformers 5.17 style for gemma4/llama (per_layer_config with keys padded to the
// largest index, rope_parameters per layer type, dtype), checked against transformers itself by building models
// from what this writes; RWKV-Infer's keys plus the teacher's for the hybrids. parse_model_config reads it back
// to an equal ModelConfig.
#include "arch/model_config.h"

namespace hx {
namespace {

using json = nlohmann::json;

std::string_view activation_name(Activation a) { return a == Activation::kSilu ? "silu" : "gelu_pytorch_tanh"; }

json rope_json(const RopeConfig& rope) {
  json j = {{"rope_type", rope_type_name(rope.type)}, {"rope_theta", rope.theta}};
  if (rope.type == RopeType::kProportional || rope.partial_rotary_factor != 1.0)
    j["partial_rotary_factor"] = rope.partial_rotary_factor;
  return j;
}

void write_rwkv_switches(const RwkvConfig& rwkv, json& j) {
  j["lora_rank_decay"] = rwkv.ranks.decay;
  j["lora_rank_iclr"] = rwkv.ranks.iclr;
  if (rwkv.value_residual) j["lora_rank_value_residual_mix"] = rwkv.ranks.value_mix;
  if (rwkv.key_residual) j["lora_rank_key_residual_mix"] = rwkv.ranks.key_mix;
  j["lora_rank_gate"] = rwkv.ranks.gate;
  j["enable_qk_norm"] = rwkv.qk_norm;
  j["nope_in_rwkv"] = !rwkv.rope;
  j["rwkv_value_residual"] = rwkv.value_residual;
  j["rwkv_key_residual"] = rwkv.key_residual;
  j["rwkv_bonus"] = rwkv.bonus;
  j["rwkv_k_scaling"] = rwkv.k_scaling == KScaling::kOmega ? "omega" : "decay";
}

const LayerConfig* first_of(const ModelConfig& cfg, LayerKind kind) {
  for (const LayerConfig& l : cfg.layers)
    if (l.kind == kind) return &l;
  return nullptr;
}

void write_common(const ModelConfig& cfg, json& j) {
  j["vocab_size"] = cfg.vocab_size;
  j["hidden_size"] = cfg.hidden_size;
  j["intermediate_size"] = cfg.intermediate_size;
  j["num_hidden_layers"] = cfg.num_layers();
  j["rms_norm_eps"] = cfg.rms_norm_eps;
  j["tie_word_embeddings"] = cfg.tie_word_embeddings;
  j["max_position_embeddings"] = cfg.max_position_embeddings;
  j["dtype"] = dtype_info(cfg.dtype).torch_name;
  j["bos_token_id"] = cfg.bos_token_id;
  j["eos_token_id"] = cfg.eos_token_id;
  j["pad_token_id"] = cfg.pad_token_id;
}

json gemma4_text_json(const ModelConfig& cfg) {
  const LayerConfig* sliding = first_of(cfg, LayerKind::kSlidingAttention);
  const LayerConfig* full = first_of(cfg, LayerKind::kFullAttention);
  const LayerConfig& base = sliding ? *sliding : full ? *full : cfg.layers.front();
  json j;
  write_common(cfg, j);
  j["num_attention_heads"] = base.num_heads;
  j["num_key_value_heads"] = base.num_kv_heads;
  j["head_dim"] = base.head_dim;
  if (full && full->num_kv_heads != base.num_kv_heads) j["num_global_key_value_heads"] = full->num_kv_heads;
  json types = json::array();
  json per_layer = json::object();
  const size_t width = std::to_string(cfg.num_layers() - 1).size();  // transformers pads to the largest index
  for (int i = 0; i < cfg.num_layers(); ++i) {
    const LayerConfig& l = cfg.layers[i];
    types.push_back(l.kind == LayerKind::kSlidingAttention ? "sliding_attention" : "full_attention");
    if (!l.is_rwkv() && l.head_dim != base.head_dim) {
      std::string key = std::to_string(i);
      key.insert(0, width - key.size(), '0');
      per_layer[key] = {{"head_dim", l.head_dim}};
    }
  }
  j["layer_types"] = types;
  if (!per_layer.empty()) j["per_layer_config"] = per_layer;
  j["rope_parameters"] = {{"sliding_attention", rope_json(sliding ? sliding->rope : kGemma4SlidingRope)},
                          {"full_attention", rope_json(full ? full->rope : kGemma4FullRope)}};
  j["sliding_window"] = sliding ? sliding->sliding_window : 512;
  j["num_kv_shared_layers"] = cfg.num_kv_shared_layers;
  j["use_double_wide_mlp"] = cfg.use_double_wide_mlp;
  j["hidden_size_per_layer_input"] = cfg.hidden_size_per_layer_input;
  j["vocab_size_per_layer_input"] = cfg.has_ple() ? json(cfg.vocab_size_per_layer_input) : json(nullptr);
  j["final_logit_softcapping"] = cfg.final_logit_softcapping > 0 ? json(cfg.final_logit_softcapping) : json(nullptr);
  j["hidden_activation"] = activation_name(cfg.activation);
  j["attention_bias"] = false;
  j["attention_k_eq_v"] = false;
  j["enable_moe_block"] = false;
  j["use_bidirectional_attention"] = nullptr;
  return j;
}

json llama_like_json(const ModelConfig& cfg) {
  const LayerConfig& l0 = cfg.layers.front();
  json j;
  write_common(cfg, j);
  j["num_attention_heads"] = l0.num_heads;
  j["num_key_value_heads"] = l0.num_kv_heads;
  j["head_dim"] = l0.head_dim;
  j["hidden_act"] = activation_name(cfg.activation);
  j["attention_bias"] = cfg.attention_bias;
  j["mlp_bias"] = false;
  return j;
}

}  // namespace

json to_config_json(const ModelConfig& cfg) {
  json text;
  switch (cfg.arch) {
    case Arch::kGemma4:
    case Arch::kHxa07i: text = gemma4_text_json(cfg); break;
    case Arch::kLlama:
    case Arch::kHxa079: text = llama_like_json(cfg); break;
  }
  if (cfg.arch == Arch::kGemma4) {
    text["model_type"] = "gemma4_text";
    text["architectures"] = {"Gemma4ForCausalLM"};
  } else if (cfg.arch == Arch::kLlama) {
    text["model_type"] = "llama";
    text["architectures"] = {"LlamaForCausalLM"};
    text["rope_parameters"] = rope_json(cfg.layers.front().rope);
  } else if (cfg.arch == Arch::kHxa079) {
    // RWKV-Infer HFMode keys (hybrid-arch.md §3.2); no model_type, so transformers does not mistake it for Llama.
    text["rwkv_architecture"] = "hxa079";
    const auto rwkv = rwkv_layer_indices(cfg);
    std::vector<int> gqa;
    for (int i = 0; i < cfg.num_layers(); ++i)
      if (!cfg.layers[i].is_rwkv()) gqa.push_back(i);
    text["transformer_layers"] = gqa;
    text["rwkv_layers"] = rwkv;
    text["nope_in_transformer"] = true;
    const LayerConfig* with_rope = nullptr;
    for (const LayerConfig& l : cfg.layers)
      if (!with_rope && l.rope.type != RopeType::kNone) with_rope = &l;
    text["rope_theta"] = with_rope ? with_rope->rope.theta : 1e6;
    write_rwkv_switches(cfg.rwkv, text);
  } else {  // hxa07i: the Gemma-4 keys plus hxa07i.md's
    text["rwkv_architecture"] = "hxa07i";
    text["rwkv_layers"] = rwkv_layer_indices(cfg);
    text["rwkv_head_dim"] = cfg.rwkv.head_dim;
    text["rwkv_num_heads"] = cfg.rwkv.num_heads;
    text["rwkv_num_kv_heads"] = cfg.rwkv.num_kv_heads;
    text["tica_num_heads"] = cfg.tica.num_heads;
    text["tica_num_kv_heads"] = cfg.tica.num_kv_heads;
    text["tica_head_dim"] = cfg.tica.head_dim;
    text["tica_gate_rank"] = cfg.tica.gate_rank;
    write_rwkv_switches(cfg.rwkv, text);
  }
  if (cfg.tensor_prefix != "model.language_model.") return text;
  // Gemma4ForConditionalGeneration: the text stack nests under text_config (vision/audio configs are not kept).
  json outer = {{"text_config", text}, {"tie_word_embeddings", cfg.tie_word_embeddings}, {"dtype", text["dtype"]}};
  if (cfg.arch == Arch::kGemma4) {
    outer["model_type"] = "gemma4";
    outer["architectures"] = {"Gemma4ForConditionalGeneration"};
    outer["text_config"].erase("architectures");
  }
  return outer;
}

}  // namespace hx
