// The presets, written as the config.json each model would ship with (parsed by the same code as a real one),
// plus the students derived from them by student_config.h.
#include "arch/presets.h"

#include <cmath>

#include "arch/student_config.h"
#include "formats/errors.h"

namespace hx {
namespace {

using json = nlohmann::json;

// The oracle's gemma4-tiny (transformers 5.17), in the shipped E2B style with global_head_dim.
constexpr const char* kGemma4Tiny = R"json({
  "architectures": ["Gemma4ForCausalLM"], "model_type": "gemma4_text", "dtype": "bfloat16",
  "vocab_size": 512, "vocab_size_per_layer_input": 512, "hidden_size": 64, "hidden_size_per_layer_input": 16,
  "intermediate_size": 128, "num_hidden_layers": 10, "num_attention_heads": 2, "num_key_value_heads": 1,
  "head_dim": 32, "global_head_dim": 64, "sliding_window": 8, "num_kv_shared_layers": 4,
  "use_double_wide_mlp": true, "final_logit_softcapping": 30.0, "tie_word_embeddings": true,
  "rms_norm_eps": 1e-06, "hidden_activation": "gelu_pytorch_tanh", "max_position_embeddings": 256,
  "bos_token_id": 2, "eos_token_id": 1, "pad_token_id": 0,
  "rope_parameters": {
    "sliding_attention": {"rope_type": "default", "rope_theta": 10000.0},
    "full_attention": {"rope_type": "proportional", "partial_rotary_factor": 0.25, "rope_theta": 1000000.0}}
})json";

// Gemma-4 E2B (teachers.md §1, convert_gemma4_weights.py _VARIANTS plus the shipped config): a
// Gemma4ForConditionalGeneration, so the text stack nests under text_config and its tensors under
// model.language_model. layer_types ([S,S,S,S,F]×7) are filled in by gemma4_e2b().
constexpr const char* kGemma4E2B = R"json({
  "architectures": ["Gemma4ForConditionalGeneration"], "model_type": "gemma4", "dtype": "bfloat16",
  "tie_word_embeddings": true,
  "text_config": {
    "model_type": "gemma4_text",
    "vocab_size": 262144, "vocab_size_per_layer_input": 262144, "hidden_size": 1536,
    "hidden_size_per_layer_input": 256, "intermediate_size": 6144, "num_hidden_layers": 35,
    "num_attention_heads": 8, "num_key_value_heads": 1, "head_dim": 256, "global_head_dim": 512,
    "sliding_window": 512, "num_kv_shared_layers": 20, "use_double_wide_mlp": true,
    "final_logit_softcapping": 30.0, "rms_norm_eps": 1e-06, "hidden_activation": "gelu_pytorch_tanh",
    "max_position_embeddings": 131072, "bos_token_id": 2, "eos_token_id": [1, 106], "pad_token_id": 0,
    "rope_parameters": {
      "sliding_attention": {"rope_type": "default", "rope_theta": 10000.0},
      "full_attention": {"rope_type": "proportional", "partial_rotary_factor": 0.25, "rope_theta": 1000000.0}}}
})json";

// The oracle's llama-tiny, shaped like Reka Flash 3 (intermediate not a multiple of 256, untied head).
constexpr const char* kLlamaTiny = R"json({
  "architectures": ["LlamaForCausalLM"], "model_type": "llama", "dtype": "bfloat16",
  "vocab_size": 512, "hidden_size": 128, "intermediate_size": 352, "num_hidden_layers": 4,
  "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 32, "hidden_act": "silu",
  "rope_parameters": {"rope_type": "default", "rope_theta": 8000000.0}, "rms_norm_eps": 1e-05,
  "tie_word_embeddings": false, "attention_bias": false, "mlp_bias": false, "max_position_embeddings": 32768,
  "bos_token_id": 1, "eos_token_id": 2, "pad_token_id": null
})json";

// RekaAI/reka-flash-3 config.json, verbatim values (teachers.md §4): legacy rope_theta and torch_dtype keys.
constexpr const char* kRekaFlash3 = R"json({
  "architectures": ["LlamaForCausalLM"], "model_type": "llama", "torch_dtype": "bfloat16",
  "num_hidden_layers": 44, "hidden_size": 6144, "num_attention_heads": 64, "num_key_value_heads": 8,
  "intermediate_size": 19648, "hidden_act": "silu", "rope_theta": 8000000, "rope_scaling": null,
  "rms_norm_eps": 1e-05, "vocab_size": 100352, "tie_word_embeddings": false, "max_position_embeddings": 32768,
  "attention_bias": false, "bos_token_id": 100257, "eos_token_id": 100257
})json";

// The oracle's hxa079-tiny (RWKV-Infer defaults for what its .pth does not store), as an HF-style config.
constexpr const char* kHxa079Tiny = R"json({
  "rwkv_architecture": "hxa079", "dtype": "bfloat16",
  "vocab_size": 512, "hidden_size": 256, "intermediate_size": 512, "num_hidden_layers": 4,
  "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 64, "hidden_act": "silu",
  "rope_theta": 1000000.0, "rms_norm_eps": 1e-06, "tie_word_embeddings": false, "max_position_embeddings": 8192,
  "transformer_layers": [2], "enable_qk_norm": false,
  "lora_rank_decay": 32, "lora_rank_iclr": 32, "lora_rank_value_residual_mix": 32,
  "lora_rank_key_residual_mix": 32, "lora_rank_gate": 64
})json";

json& text_of(json& config) { return config.contains("text_config") ? config["text_config"] : config; }

// Keeps the first `layers` layers: layer i keeps its kind (except that Gemma's last layer is always full, as
// transformers forces), index lists drop what is gone, and Gemma's num_kv_shared_layers shrinks in proportion until
// every shared layer has a source again.
json truncated(json config, std::string_view preset, std::optional<int> layers) {
  json& t = text_of(config);
  const int depth = t["num_hidden_layers"].get<int>();
  if (!layers) return config;
  const int n = *layers;
  if (n < 1 || n > depth)
    throw UsageError("preset '" + std::string(preset) + "' has " + std::to_string(depth) +
                     " layers; --layers must lie in [1, " + std::to_string(depth) + "], found " + std::to_string(n));
  t["num_hidden_layers"] = n;
  for (const char* key : {"transformer_layers", "rwkv_layers"}) {
    if (!t.contains(key)) continue;
    json kept = json::array();
    for (const json& i : t[key])
      if (i.get<int>() < n) kept.push_back(i);
    t[key] = kept;
  }
  if (t.contains("layer_types")) {
    t["layer_types"].erase(t["layer_types"].begin() + n, t["layer_types"].end());
    t["layer_types"][n - 1] = "full_attention";  // Gemma-4's last layer is always full (transformers forces it)
    std::vector<LayerKind> kinds;
    for (const json& s : t["layer_types"])
      kinds.push_back(s == "full_attention" ? LayerKind::kFullAttention : LayerKind::kSlidingAttention);
    int shared = static_cast<int>(std::lround(t.value("num_kv_shared_layers", 0) * double(n) / depth));
    while (shared > 0 && !gemma4_kv_sharing_sources(kinds, shared, nullptr)) --shared;
    t["num_kv_shared_layers"] = shared;
  }
  return config;
}

ModelConfig from_json(const char* text, std::string_view preset, std::optional<int> layers) {
  return parse_model_config(truncated(json::parse(text), preset, layers), "preset '" + std::string(preset) + "'");
}

ModelConfig gemma4_tiny(std::optional<int> layers) {
  json config = json::parse(kGemma4Tiny);
  json types = json::array();
  for (int i = 0; i < 10; ++i) types.push_back(i % 5 == 4 ? "full_attention" : "sliding_attention");
  config["layer_types"] = types;
  return parse_model_config(truncated(config, "tiny", layers), "preset 'tiny'");
}

ModelConfig gemma4_e2b(std::optional<int> layers) {
  json config = json::parse(kGemma4E2B);
  json types = json::array();
  for (int i = 0; i < 35; ++i) types.push_back(i % 5 == 4 ? "full_attention" : "sliding_attention");
  config["text_config"]["layer_types"] = types;
  return parse_model_config(truncated(config, "gemma4-e2b", layers), "preset 'gemma4-e2b'");
}

ModelConfig llama_tiny(std::optional<int> layers) { return from_json(kLlamaTiny, "tiny", layers); }
ModelConfig reka_flash_3(std::optional<int> layers) { return from_json(kRekaFlash3, "reka-flash-3", layers); }
ModelConfig hxa079_tiny(std::optional<int> layers) { return from_json(kHxa079Tiny, "tiny", layers); }

// reka-hxa079-l6 (RWKVInside configs/reka_flash3_hybrid_l6.yaml): GQA at 8,15,22,29,36,43; ranks from
// OpenMOSE/RWKV-Reka-Flash-Gen2 (hybrid-arch.md §3.1).
ModelConfig reka_hxa079(std::optional<int> layers) {
  const ModelConfig teacher = reka_flash_3(layers);
  std::vector<int> gqa;
  for (int i : {8, 15, 22, 29, 36, 43})
    if (i < teacher.num_layers()) gqa.push_back(i);
  return hxa079_student_config(teacher, gqa, {.decay = 320, .iclr = 128, .value_mix = 96, .key_mix = 96, .gate = 384});
}

// hxa07i.md: N = 128, 32 heads / 4 kv heads, ranks 256, TICA 4/2 heads × 128, gate rank 128.
ModelConfig gemma4_e2b_hxa07i(std::optional<int> layers) {
  return hxa07i_student_config(gemma4_e2b(layers), 128, {.decay = 256, .iclr = 256, .gate = 256},
                               {.num_heads = 4, .num_kv_heads = 2, .head_dim = 128, .gate_rank = 128});
}

// The same plan at tiny size: N = 32 over the 128-wide q and 64-wide k of the full layers gives 4 heads / 2 kv.
ModelConfig hxa07i_tiny(std::optional<int> layers) {
  return hxa07i_student_config(gemma4_tiny(layers), 32, {.decay = 16, .iclr = 16, .gate = 16},
                               {.num_heads = 2, .num_kv_heads = 1, .head_dim = 32, .gate_rank = 16});
}

constexpr PresetInfo kPresets[] = {
    {Arch::kGemma4, "tiny",
     "10 layers, hidden 64: sliding+full, KV sharing, double-wide MLP, PLE, softcap (oracle gemma4-tiny)",
     gemma4_tiny},
    {Arch::kGemma4, "gemma4-e2b", "Gemma-4 E2B text stack: 35 layers, hidden 1536, vocab 262144", gemma4_e2b},
    {Arch::kLlama, "tiny", "4 layers, hidden 128, GQA 4/2, MLP 352, untied head (oracle llama-tiny)", llama_tiny},
    {Arch::kLlama, "reka-flash-3", "Reka Flash 3: 44 layers, hidden 6144, 64/8 heads x 96, MLP 19648",
     reka_flash_3},
    {Arch::kHxa079, "tiny", "4 layers, D 256: RWKV 0,1,3 + NoPE GQA 2, ranks 32/32/32/32/64 (oracle hxa079-tiny)",
     hxa079_tiny},
    {Arch::kHxa079, "reka-flash-3",
     "reka-hxa079-l6: Reka Flash 3 with GQA at 8,15,22,29,36,43, ranks 320/128/96/96/384", reka_hxa079},
    {Arch::kHxa079, "reka-hxa079-l6", "the same as reka-flash-3", reka_hxa079},
    {Arch::kHxa07i, "tiny", "gemma4 tiny with full layers 4, 9 as RWKV-7 (4x32, kv 2) + TICA (2/1 x 32)",
     hxa07i_tiny},
    {Arch::kHxa07i, "gemma4-e2b", "Gemma-4 E2B with full layers as RWKV-7 (32x128, kv 4) + TICA (4/2 x 128)",
     gemma4_e2b_hxa07i},
};

}  // namespace

std::span<const PresetInfo> list_presets() { return kPresets; }

std::string presets_help() {
  std::string out;
  for (const PresetInfo& p : kPresets) {
    std::string line = "  " + std::string(arch_name(p.arch));
    line.resize(10, ' ');
    line += p.name;
    line.resize(26, ' ');
    out += line + std::string(p.summary) + "\n";
  }
  return out;
}

ModelConfig preset_config(Arch arch, std::string_view preset, std::optional<int> layers) {
  std::string names;
  for (const PresetInfo& p : kPresets) {
    if (p.arch != arch) continue;
    if (p.name == preset) return p.build(layers);
    names += (names.empty() ? "" : ", ") + std::string(p.name);
  }
  throw UsageError("unknown preset '" + std::string(preset) + "' for " + std::string(arch_name(arch)) +
                   "; available: " + names);
}

}  // namespace hx
