// Model configuration: everything the converter, the quantizer and the forward pass need to know about a model.
//
// Design goals:
// - One plain struct per model with a per-layer vector (gemma.cpp's LayerConfig style), so a hybrid stack of
//   sliding / full / NoPE attention and RWKV-7 (+TICA) layers is described by data, not by branches in every consumer.
// - Per-layer values are *resolved* (head_dim, MLP width, KV-sharing source, RoPE): consumers never re-derive
//   transformers' rules (Gemma-4 KV sharing, double-wide MLP, per_layer_config, proportional RoPE).
// - config.json both ways: transformers 5.x keys for gemma4/llama, RWKV-Infer keys for the hybrids (hybrid-arch.md
//   §3.2, hxa07i.md); a bare RWKV-LM .pth is described the way RWKV-Infer infers it (hybrid-arch.md §3.3).
// - Bad input fails with FormatError naming the file and the key, with what was expected and what was found.
// Non-goals: MoE blocks, vision/audio towers, attention_k_eq_v, RoPE scaling variants, MLP biases — rejected with
// UnsupportedError rather than half-described.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "formats/checkpoint.h"
#include "formats/dtype.h"

namespace hx {

enum class Arch : uint8_t { kGemma4, kLlama, kHxa079, kHxa07i };

enum class LayerKind : uint8_t {
  kSlidingAttention,  // softmax attention over a window, RoPE (Gemma sliding layers)
  kFullAttention,     // softmax attention over all tokens, RoPE (Gemma full layers, every Llama layer)
  kNoPEAttention,     // hxa079 GQA layer: causal attention without position encoding
  kRwkv7,             // hxa079 RWKV-7 time-mix
  kRwkv7Tica,         // hxa07i: RWKV-7 time-mix plus TICA (tiny causal attention) in one attention slot
};
inline constexpr int kLayerKindCount = 5;

enum class RopeType : uint8_t {
  kNone,          // no rotation
  kDefault,       // NeoX half-split over partial_rotary_factor·head_dim dims, inv_freq = θ^(-2i/rotated)
  kProportional,  // Gemma-4 full layers: the first partial_rotary_factor·head_dim/2 pairs rotate,
                  // inv_freq = θ^(-2i/head_dim) (the full head_dim as denominator)
};

// Where RMSNorm applies its weight (teachers.md §6.1): Gemma-4 and RWKV-Infer multiply in fp32 before casting back,
// Llama casts back first and multiplies in the activation dtype.
enum class NormStyle : uint8_t { kWeightInFloat32, kWeightAfterDowncast };

enum class AttentionScaling : uint8_t { kOne /*Gemma-4*/, kInverseSqrtHeadDim /*Llama, hxa079 GQA, TICA*/ };
enum class Activation : uint8_t { kGeluTanh, kSilu };

// Which decay term scales k in the RWKV-7 core: hxa079 uses ω (log-neg-log decay, RWKV-Infer), hxa07i the decay d.
enum class KScaling : uint8_t { kOmega, kDecay };

// Tensor names: transformers / RWKV-Infer HFMode names, or RWKV-LM .pth names (blocks.N.att.…, hxa079 only).
enum class TensorNaming : uint8_t { kHuggingFace, kRwkvLm };

struct RopeConfig {
  RopeType type = RopeType::kNone;
  double theta = 0.0;
  double partial_rotary_factor = 1.0;
  bool operator==(const RopeConfig&) const = default;
};

// Gemma4TextConfig's default rope_parameters per layer type (teachers.md §1).
inline constexpr RopeConfig kGemma4SlidingRope{RopeType::kDefault, 10000.0, 1.0};
inline constexpr RopeConfig kGemma4FullRope{RopeType::kProportional, 1e6, 0.25};

struct LayerConfig {
  LayerKind kind = LayerKind::kFullAttention;
  int64_t head_dim = 0;           // attention head size; RWKV layers: N
  int64_t num_heads = 0;          // query heads; RWKV layers: receptance heads H
  int64_t num_kv_heads = 0;       // key/value heads; RWKV layers: Hk
  int64_t intermediate_size = 0;  // MLP width of this layer (Gemma double-wide layers: 2× the config value)
  int64_t sliding_window = 0;     // tokens a query sees including itself; 0 = all previous tokens
  RopeConfig rope;
  int kv_shared_from = -1;  // ≥ 0: reuses that layer's post-norm, post-RoPE K/V (Gemma KV sharing); -1: own K/V

  bool has_own_kv() const { return kv_shared_from < 0; }
  bool is_rwkv() const { return kind == LayerKind::kRwkv7 || kind == LayerKind::kRwkv7Tica; }
  int64_t q_dim() const { return num_heads * head_dim; }
  int64_t kv_dim() const { return num_kv_heads * head_dim; }
  bool operator==(const LayerConfig&) const = default;
};

struct LoraRanks {
  int64_t decay = 0;      // w1/w2
  int64_t iclr = 0;       // a1/a2 (in-context learning rate)
  int64_t value_mix = 0;  // v1/v2 (v_first residual mix)
  int64_t key_mix = 0;    // k1/k2 (k_first residual mix)
  int64_t gate = 0;       // g1/g2
  bool operator==(const LoraRanks&) const = default;
};

// RWKV-7 geometry and variant switches (hybrid-arch.md §1.2, hxa07i.md). All zero / false for pure transformers.
struct RwkvConfig {
  int64_t num_heads = 0;     // H: receptance heads
  int64_t head_dim = 0;      // N
  int64_t num_kv_heads = 0;  // Hk: key/value heads (GQA-sized k and v)
  LoraRanks ranks;
  bool value_residual = false;  // v += (v_first - v)·σ(v0 + h@v1@v2)
  bool key_residual = false;    // k += (k_first - k)·σ(k0 + h@k1@k2)
  bool bonus = false;           // r_k bonus term
  bool qk_norm = false;         // per-head RMSNorm on r and k (hxa079: also q/k of its GQA layers)
  bool rope = false;            // RoPE on r and k inside RWKV layers
  KScaling k_scaling = KScaling::kOmega;

  bool enabled() const { return num_heads > 0; }
  int64_t r_dim() const { return num_heads * head_dim; }      // C
  int64_t kv_dim() const { return num_kv_heads * head_dim; }  // Ck
  bool operator==(const RwkvConfig&) const = default;
};

// TICA, the tiny infused causal attention of hxa07i (NoPE, QK-norm, GQA, sigmoid LoRA gate). Zero when absent.
struct TicaConfig {
  int64_t num_heads = 0;
  int64_t num_kv_heads = 0;
  int64_t head_dim = 0;
  int64_t gate_rank = 0;

  bool enabled() const { return num_heads > 0; }
  bool operator==(const TicaConfig&) const = default;
};

struct ModelConfig {
  Arch arch = Arch::kLlama;
  TensorNaming naming = TensorNaming::kHuggingFace;
  // Prefix of the text-stack tensor names: "model." (Gemma4ForCausalLM, Llama, hxa079 HF), "model.language_model."
  // (Gemma4ForConditionalGeneration), "" (RWKV-LM .pth). lm_head.weight never carries it.
  std::string tensor_prefix = "model.";
  DType dtype = DType::kBF16;  // dtype of the stored weights (config "dtype" / "torch_dtype")

  int64_t vocab_size = 0;
  int64_t hidden_size = 0;
  int64_t intermediate_size = 0;  // config.json value; the width each layer really has is layers[i].intermediate_size
  int64_t max_position_embeddings = 0;
  std::vector<LayerConfig> layers;

  double rms_norm_eps = 1e-6;
  NormStyle norm_style = NormStyle::kWeightAfterDowncast;
  double embed_scale = 1.0;  // Gemma: √hidden (rounded to the activation dtype by the forward pass); else 1
  bool tie_word_embeddings = false;
  double final_logit_softcapping = 0.0;  // 0 = none; Gemma-4: cap·tanh(logits/cap)
  AttentionScaling attention_scaling = AttentionScaling::kInverseSqrtHeadDim;
  Activation activation = Activation::kSilu;
  bool attention_bias = false;  // q/k/v(/o) biases (Llama, hxa079)

  // Gemma-4 only.
  int num_kv_shared_layers = 0;            // the last N layers reuse earlier K/V (resolved into kv_shared_from)
  bool use_double_wide_mlp = false;        // KV-shared layers have 2× intermediate_size (resolved per layer)
  int64_t hidden_size_per_layer_input = 0;  // PLE width; 0 = no per-layer embeddings
  int64_t vocab_size_per_layer_input = 0;

  RwkvConfig rwkv;  // hybrids
  TicaConfig tica;  // hxa07i

  // Token ids as config.json holds them (int, list or null), written back unchanged; not used by the math.
  nlohmann::json bos_token_id;
  nlohmann::json eos_token_id;
  nlohmann::json pad_token_id;

  int num_layers() const { return static_cast<int>(layers.size()); }
  bool has_ple() const { return hidden_size_per_layer_input > 0; }
  bool operator==(const ModelConfig&) const = default;
};

// ---- names (config.json spellings where one exists) ----
std::string_view arch_name(Arch a);  // "gemma4", "llama", "hxa079", "hxa07i"
std::optional<Arch> arch_from_name(std::string_view name);
std::string_view layer_kind_name(LayerKind k);  // "sliding_attention", "full_attention", "nope_attention", "rwkv7", …
std::string_view rope_type_name(RopeType t);    // "none", "default", "proportional"

// Layer indices of the given kinds, ascending.
std::vector<int> layers_where(const ModelConfig& cfg, bool (*pred)(const LayerConfig&));
inline std::vector<int> rwkv_layer_indices(const ModelConfig& cfg) {
  return layers_where(cfg, [](const LayerConfig& l) { return l.is_rwkv(); });
}

// transformers' Gemma-4 KV-sharing rule (Gemma4TextAttention.__init__): with first = n - num_kv_shared_layers > 0,
// layer i ≥ first reuses the K/V of the last layer of its type before `first`. Returns per-layer sources (-1 = own),
// or nullopt with `why` filled when a shared layer's type has no earlier layer to share from.
std::optional<std::vector<int>> gemma4_kv_sharing_sources(const std::vector<LayerKind>& kinds,
                                                          int num_kv_shared_layers, std::string* why);

// Checks internal consistency (positive sizes, head counts divisible, layer kinds allowed for the architecture,
// KV-sharing sources valid, RWKV/TICA geometry present where used). Throws FormatError prefixed with `source`.
void validate_model_config(const ModelConfig& cfg, const std::string& source);

// ---- config.json ----
// Parses a transformers / RWKV-Infer config.json object; `source` (the file) prefixes every error. Nested
// `text_config` (Gemma4ForConditionalGeneration) selects the "model.language_model." prefix. Validates the result.
ModelConfig parse_model_config(const nlohmann::json& config, const std::string& source);
ModelConfig load_model_config(const std::string& config_json_path);  // reads the file; IoError / FormatError
// The architecture a config.json names (rwkv_architecture, model_type, architectures), or nullopt.
std::optional<Arch> arch_from_config_json(const nlohmann::json& config);
// Writes config.json: transformers-compatible for gemma4/llama (5.17 style: per_layer_config, rope_parameters,
// dtype), RWKV-Infer keys plus the teacher's keys for the hybrids. parse_model_config(to_config_json(c)) == c.
nlohmann::json to_config_json(const ModelConfig& cfg);

// ---- bare RWKV-LM .pth (hybrid-arch.md §3.3, RWKV-Infer rwkvcore.py) ----
// n_layer = 1 + highest block index; (H, N) from the first *.r_k; Hk = rows(first att.key.weight) / N; qk-norm iff
// any ln_k; hxa079 iff any k0 (else UnsupportedError); layer i is GQA iff it has att.q_proj.weight; LoRA ranks from
// shapes; untied head (the .pth stores head.weight). Not stored, so given here as RWKV-Infer's defaults: rope_theta
// 1e6, rms_norm_eps 1e-6, max_position_embeddings 8192 (its max_ctxlen).
ModelConfig infer_hxa079_config(const Checkpoint& checkpoint, double rope_theta = 1e6, double rms_norm_eps = 1e-6);

// The config of an opened checkpoint: its config.json when there is one, else inference from a RWKV-LM .pth.
ModelConfig config_for_checkpoint(const Checkpoint& checkpoint);

}  // namespace hx
