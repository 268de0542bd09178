// ModelConfig names, the Gemma-4 KV-sharing rule, consistency checks, and picking a checkpoint's config.
#include "arch/model_config.h"

#include <algorithm>
#include <cmath>

#include "formats/errors.h"

namespace hx {

std::string_view arch_name(Arch a) {
  switch (a) {
    case Arch::kGemma4: return "gemma4";
    case Arch::kLlama: return "llama";
    case Arch::kHxa079: return "hxa079";
    case Arch::kHxa07i: return "hxa07i";
  }
  return "?";
}

std::optional<Arch> arch_from_name(std::string_view name) {
  for (Arch a : {Arch::kGemma4, Arch::kLlama, Arch::kHxa079, Arch::kHxa07i})
    if (arch_name(a) == name) return a;
  return std::nullopt;
}

std::string_view layer_kind_name(LayerKind k) {
  switch (k) {
    case LayerKind::kSlidingAttention: return "sliding_attention";
    case LayerKind::kFullAttention: return "full_attention";
    case LayerKind::kNoPEAttention: return "nope_attention";
    case LayerKind::kRwkv7: return "rwkv7";
    case LayerKind::kRwkv7Tica: return "rwkv7_tica";
  }
  return "?";
}

std::string_view rope_type_name(RopeType t) {
  switch (t) {
    case RopeType::kNone: return "none";
    case RopeType::kDefault: return "default";
    case RopeType::kProportional: return "proportional";
  }
  return "?";
}

std::vector<int> layers_where(const ModelConfig& cfg, bool (*pred)(const LayerConfig&)) {
  std::vector<int> out;
  for (int i = 0; i < cfg.num_layers(); ++i)
    if (pred(cfg.layers[i])) out.push_back(i);
  return out;
}

std::optional<std::vector<int>> gemma4_kv_sharing_sources(const std::vector<LayerKind>& kinds,
                                                          int num_kv_shared_layers, std::string* why) {
  const int n = static_cast<int>(kinds.size());
  std::vector<int> sources(n, -1);
  if (num_kv_shared_layers < 0 || num_kv_shared_layers > n) {
    if (why) *why = "num_kv_shared_layers must lie in [0, " + std::to_string(n) + "]";
    return std::nullopt;
  }
  const int first_shared = n - num_kv_shared_layers;
  if (first_shared == n) return sources;
  // Sharing every layer leaves no layer to store K/V (transformers 5.17 then marks every attention shared but gives
  // no MLP double width: inconsistent, so refused).
  if (first_shared == 0) {
    if (why) *why = "num_kv_shared_layers must be smaller than num_hidden_layers " + std::to_string(n);
    return std::nullopt;
  }
  for (int i = first_shared; i < n; ++i) {
    for (int j = first_shared - 1; j >= 0; --j) {
      if (kinds[j] == kinds[i]) {
        sources[i] = j;
        break;
      }
    }
    if (sources[i] < 0) {
      if (why)
        *why = "layer " + std::to_string(i) + " (" + std::string(layer_kind_name(kinds[i])) +
               ") is KV-shared but no " + std::string(layer_kind_name(kinds[i])) + " layer precedes layer " +
               std::to_string(first_shared) + ", the first shared one";
      return std::nullopt;
    }
  }
  return sources;
}

namespace {

bool kind_allowed(Arch arch, LayerKind k) {
  switch (arch) {
    case Arch::kGemma4: return k == LayerKind::kSlidingAttention || k == LayerKind::kFullAttention;
    case Arch::kLlama: return k == LayerKind::kFullAttention;
    case Arch::kHxa079: return k == LayerKind::kNoPEAttention || k == LayerKind::kRwkv7;
    case Arch::kHxa07i: return k != LayerKind::kNoPEAttention && k != LayerKind::kRwkv7;
  }
  return false;
}

struct Checker {
  const std::string& source;
  [[noreturn]] void fail(const std::string& what) const { throw FormatError(in_file(source, what)); }
  void positive(int64_t v, const std::string& key) const {
    if (v <= 0) fail("key '" + key + "' is invalid; expected a positive integer, found " + std::to_string(v));
  }
};

void validate_layer(const ModelConfig& cfg, int i, const Checker& c) {
  const LayerConfig& l = cfg.layers[i];
  const std::string at = "layer " + std::to_string(i) + ": ";
  if (!kind_allowed(cfg.arch, l.kind))
    c.fail(at + "a " + std::string(layer_kind_name(l.kind)) + " layer cannot appear in a " +
           std::string(arch_name(cfg.arch)) + " model");
  c.positive(l.head_dim, at + "head_dim");
  c.positive(l.num_heads, at + "num_attention_heads");
  c.positive(l.num_kv_heads, at + "num_key_value_heads");
  c.positive(l.intermediate_size, at + "intermediate_size");
  if (l.num_heads % l.num_kv_heads != 0)
    c.fail(at + "num_attention_heads " + std::to_string(l.num_heads) + " is not a multiple of num_key_value_heads " +
           std::to_string(l.num_kv_heads));
  if (l.sliding_window < 0) c.fail(at + "sliding_window must be ≥ 0, found " + std::to_string(l.sliding_window));
  if ((l.kind == LayerKind::kSlidingAttention) != (l.sliding_window > 0))
    c.fail(at + "a sliding window belongs to sliding_attention layers only; found " +
           std::to_string(l.sliding_window) + " on a " + std::string(layer_kind_name(l.kind)) + " layer");
  if (l.rope.type != RopeType::kNone) {
    if (!(l.rope.theta > 0)) c.fail(at + "rope_theta must be positive, found " + std::to_string(l.rope.theta));
    if (!(l.rope.partial_rotary_factor > 0 && l.rope.partial_rotary_factor <= 1))
      c.fail(at + "partial_rotary_factor must lie in (0, 1], found " + std::to_string(l.rope.partial_rotary_factor));
  }
  const bool expects_rope = l.kind == LayerKind::kSlidingAttention || l.kind == LayerKind::kFullAttention ||
                            (l.is_rwkv() && cfg.rwkv.rope);
  if (expects_rope != (l.rope.type != RopeType::kNone))
    c.fail(at + (expects_rope ? "needs RoPE but has none" : "must not use RoPE but has " +
                                                                std::string(rope_type_name(l.rope.type))));
  if (l.is_rwkv() && (l.num_heads != cfg.rwkv.num_heads || l.head_dim != cfg.rwkv.head_dim ||
                      l.num_kv_heads != cfg.rwkv.num_kv_heads))
    c.fail(at + "RWKV layer geometry " + std::to_string(l.num_heads) + "×" + std::to_string(l.head_dim) +
           " (kv " + std::to_string(l.num_kv_heads) + ") differs from the model's rwkv geometry");
  if (l.kv_shared_from >= 0) {
    if (l.kv_shared_from >= i) c.fail(at + "shares K/V with a later layer " + std::to_string(l.kv_shared_from));
    const LayerConfig& src = cfg.layers[l.kv_shared_from];
    if (src.kind != l.kind || !src.has_own_kv() || src.kv_dim() != l.kv_dim() || src.head_dim != l.head_dim)
      c.fail(at + "shares K/V with layer " + std::to_string(l.kv_shared_from) +
             ", which is of another kind or shape or shares K/V itself");
  }
}

}  // namespace

void validate_model_config(const ModelConfig& cfg, const std::string& source) {
  const Checker c{source};
  c.positive(cfg.vocab_size, "vocab_size");
  c.positive(cfg.hidden_size, "hidden_size");
  c.positive(cfg.intermediate_size, "intermediate_size");
  if (cfg.layers.empty()) c.fail("key 'num_hidden_layers' is invalid; expected a positive integer, found 0");
  if (!(cfg.rms_norm_eps > 0)) c.fail("key 'rms_norm_eps' must be positive, found " + std::to_string(cfg.rms_norm_eps));
  if (cfg.final_logit_softcapping < 0)
    c.fail("key 'final_logit_softcapping' must be positive or null, found " +
           std::to_string(cfg.final_logit_softcapping));
  if (cfg.naming == TensorNaming::kRwkvLm && cfg.arch != Arch::kHxa079)
    c.fail("RWKV-LM tensor names exist for hxa079 only, not " + std::string(arch_name(cfg.arch)));
  for (int i = 0; i < cfg.num_layers(); ++i) validate_layer(cfg, i, c);

  const bool gemma_like = cfg.arch == Arch::kGemma4 || cfg.arch == Arch::kHxa07i;
  if (!gemma_like && (cfg.has_ple() || cfg.num_kv_shared_layers != 0 || cfg.use_double_wide_mlp))
    c.fail("per-layer embeddings and KV sharing are Gemma-4 features, found in a " +
           std::string(arch_name(cfg.arch)) + " config");
  if (cfg.has_ple() != (cfg.vocab_size_per_layer_input > 0))
    c.fail("keys 'hidden_size_per_layer_input' and 'vocab_size_per_layer_input' must both be set or both be 0; "
           "found " + std::to_string(cfg.hidden_size_per_layer_input) + " and " +
           std::to_string(cfg.vocab_size_per_layer_input));

  const bool has_rwkv = !rwkv_layer_indices(cfg).empty();
  const bool hybrid = cfg.arch == Arch::kHxa079 || cfg.arch == Arch::kHxa07i;
  if (hybrid) {
    const RwkvConfig& r = cfg.rwkv;
    c.positive(r.num_heads, "rwkv num_heads");
    c.positive(r.head_dim, "rwkv head_dim");
    c.positive(r.num_kv_heads, "rwkv num_kv_heads");
    if (r.num_heads % r.num_kv_heads != 0)
      c.fail("RWKV heads " + std::to_string(r.num_heads) + " are not a multiple of its kv heads " +
             std::to_string(r.num_kv_heads));
    c.positive(r.ranks.decay, "lora_rank_decay");
    c.positive(r.ranks.iclr, "lora_rank_iclr");
    c.positive(r.ranks.gate, "lora_rank_gate");
    if (r.value_residual) c.positive(r.ranks.value_mix, "lora_rank_value_residual_mix");
    if (r.key_residual) c.positive(r.ranks.key_mix, "lora_rank_key_residual_mix");
  } else if (cfg.rwkv.enabled() || has_rwkv) {
    c.fail("RWKV settings found in a " + std::string(arch_name(cfg.arch)) + " config");
  }
  if (cfg.arch == Arch::kHxa07i) {
    c.positive(cfg.tica.num_heads, "tica_num_heads");
    c.positive(cfg.tica.num_kv_heads, "tica_num_kv_heads");
    c.positive(cfg.tica.head_dim, "tica_head_dim");
    c.positive(cfg.tica.gate_rank, "tica_gate_rank");
    if (cfg.tica.num_heads % cfg.tica.num_kv_heads != 0)
      c.fail("key 'tica_num_heads' " + std::to_string(cfg.tica.num_heads) + " is not a multiple of tica_num_kv_heads " +
             std::to_string(cfg.tica.num_kv_heads));
  } else if (cfg.tica.enabled()) {
    c.fail("TICA settings found in a " + std::string(arch_name(cfg.arch)) + " config");
  }
}

ModelConfig config_for_checkpoint(const Checkpoint& checkpoint) {
  if (!checkpoint.config_json_path.empty()) {
    ModelConfig cfg = load_model_config(checkpoint.config_json_path);
    // config.json says nothing about names: an hxa079 .pth beside it still uses the RWKV-LM ones.
    if (cfg.arch == Arch::kHxa079 && checkpoint.find("emb.weight")) {
      cfg.naming = TensorNaming::kRwkvLm;
      cfg.tensor_prefix = "";
    }
    return cfg;
  }
  if (checkpoint.format != CheckpointFormat::kSafetensors) return infer_hxa079_config(checkpoint);
  throw FormatError(in_file(checkpoint.path,
                            "no config.json beside the weights; expected one (only an RWKV-LM .pth describes "
                            "itself), found none"));
}

}  // namespace hx
