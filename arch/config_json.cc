// config.json → ModelConfig for every architecture (writing: config_json_write.cc).
//
// Reading follows transformers 5.x (defaults of Gemma4TextConfig / LlamaConfig for absent keys, teachers.md §1) and
// RWKV-Infer's hybrid keys (hybrid-arch.md §3.2, hxa07i.md). Both Gemma-4 head-dim styles load identically:
// transformers 5.17's `per_layer_config` (integer-valued, possibly zero-padded string keys) and the shipped E2B
// `global_head_dim`.
#include <algorithm>
#include <cerrno>
#include <cmath>
#include <fstream>
#include <set>
#include <sstream>

#include "arch/model_config.h"
#include "formats/errors.h"

namespace hx {
namespace {

using json = nlohmann::json;

std::string shown(const json& v) {
  std::string s = v.dump();
  return s.size() > 80 ? s.substr(0, 77) + "..." : s;
}

bool is_integer(const json& v) { return v.is_number_integer() || v.is_number_unsigned(); }

// Reads the keys of one JSON object; every error names the file and the key path.
class KeyReader {
 public:
  KeyReader(const json& obj, const std::string& source, std::string path)
      : obj_(obj), source_(source), path_(std::move(path)) {}

  std::string key_path(std::string_view key) const { return path_ + std::string(key); }
  const std::string& source() const { return source_; }
  const json& object() const { return obj_; }

  // nullptr when the key is absent or null (transformers treats both as "use the default").
  const json* find(std::string_view key) const {
    auto it = obj_.find(std::string(key));
    return (it == obj_.end() || it->is_null()) ? nullptr : &*it;
  }

  [[noreturn]] void fail(std::string_view key, const std::string& expected, const json* found) const {
    if (!found) throw FormatError(in_file(source_, "key '" + key_path(key) + "' is missing; expected " + expected));
    throw FormatError(in_file(source_, "key '" + key_path(key) + "' is invalid; expected " + expected + ", found " +
                                           shown(*found)));
  }
  [[noreturn]] void unsupported(std::string_view key, const std::string& expected, const json& found) const {
    throw UnsupportedError(in_file(source_, "key '" + key_path(key) + "' is unsupported; expected " + expected +
                                                ", found " + shown(found)));
  }

  int64_t positive_int(std::string_view key) const {
    const json* v = find(key);
    if (!v || !is_integer(*v) || v->get<int64_t>() <= 0) fail(key, "a positive integer", v);
    return v->get<int64_t>();
  }
  int64_t positive_int_or(std::string_view key, int64_t fallback) const {
    return find(key) ? positive_int(key) : fallback;
  }
  int64_t nonnegative_int_or(std::string_view key, int64_t fallback) const {
    const json* v = find(key);
    if (!v) return fallback;
    if (!is_integer(*v) || v->get<int64_t>() < 0) fail(key, "an integer ≥ 0", v);
    return v->get<int64_t>();
  }
  double positive_number_or(std::string_view key, double fallback) const {
    const json* v = find(key);
    if (!v) return fallback;
    if (!v->is_number() || !(v->get<double>() > 0)) fail(key, "a positive number", v);
    return v->get<double>();
  }
  bool bool_or(std::string_view key, bool fallback) const {
    const json* v = find(key);
    if (!v) return fallback;
    if (!v->is_boolean()) fail(key, "true or false", v);
    return v->get<bool>();
  }
  std::string string_or(std::string_view key, const std::string& fallback) const {
    const json* v = find(key);
    if (!v) return fallback;
    if (!v->is_string()) fail(key, "a string", v);
    return v->get<std::string>();
  }
  // A list of distinct layer indices in [0, n).
  std::vector<int> layer_list(std::string_view key, int n) const {
    const json* v = find(key);
    if (!v) return {};
    if (!v->is_array()) fail(key, "a list of layer indices", v);
    std::set<int> seen;
    for (const json& e : *v) {
      if (!is_integer(e) || e.get<int64_t>() < 0 || e.get<int64_t>() >= n || seen.count(e.get<int>()))
        fail(key, "distinct layer indices in [0, " + std::to_string(n) + ")", v);
      seen.insert(e.get<int>());
    }
    return {seen.begin(), seen.end()};
  }
  KeyReader child(std::string_view key) const {
    const json* v = find(key);
    if (!v || !v->is_object()) fail(key, "an object", v);
    return KeyReader(*v, source_, key_path(key) + ".");
  }

 private:
  const json& obj_;
  const std::string& source_;
  std::string path_;
};

Activation parse_activation(const KeyReader& r, std::string_view key, const std::string& fallback) {
  const std::string name = r.string_or(key, fallback);
  if (name == "gelu_pytorch_tanh" || name == "gelu_tanh") return Activation::kGeluTanh;
  if (name == "silu" || name == "swish") return Activation::kSilu;
  r.unsupported(key, "\"gelu_pytorch_tanh\" or \"silu\"", name);
}
DType parse_dtype(const KeyReader& text, const KeyReader& outer) {
  for (const KeyReader* r : {&text, &outer}) {
    for (std::string_view key : {"dtype", "torch_dtype"}) {
      if (!r->find(key)) continue;
      const std::string name = r->string_or(key, "");
      const std::string bare = name.rfind("torch.", 0) == 0 ? name.substr(6) : name;
      const auto t = dtype_from_torch_name(bare);
      if (!t || !is_float(*t)) r->fail(key, "a float dtype such as \"bfloat16\"", r->find(key));
      return *t;
    }
  }
  return DType::kBF16;  // both teachers store bf16 (teachers.md §5)
}

// One RoPE parameter dict: {"rope_type", "rope_theta", "partial_rotary_factor"}.
RopeConfig parse_rope(const KeyReader& r, RopeConfig fallback) {
  RopeConfig rope = fallback;
  const std::string type = r.string_or("rope_type", r.string_or("type", std::string(rope_type_name(fallback.type))));
  if (type == "default") rope.type = RopeType::kDefault;
  else if (type == "proportional") rope.type = RopeType::kProportional;
  else r.unsupported("rope_type", "\"default\" or \"proportional\"", type);
  rope.theta = r.positive_number_or("rope_theta", fallback.theta);
  rope.partial_rotary_factor = r.positive_number_or("partial_rotary_factor", fallback.partial_rotary_factor);
  if (rope.partial_rotary_factor > 1)
    r.fail("partial_rotary_factor", "a number in (0, 1]", r.find("partial_rotary_factor"));
  if (const json* f = r.find("factor"); f && !(f->is_number() && f->get<double>() == 1.0))
    r.unsupported("factor", "1.0 (no RoPE scaling)", *f);
  return rope;
}

void read_token_ids(const KeyReader& text, const KeyReader& outer, ModelConfig& cfg) {
  auto pick = [&](std::string_view key) -> json {
    if (const json* v = text.find(key)) return *v;
    if (const json* v = outer.find(key)) return *v;
    return nullptr;
  };
  cfg.bos_token_id = pick("bos_token_id");
  cfg.eos_token_id = pick("eos_token_id");
  cfg.pad_token_id = pick("pad_token_id");
}

void reject_true(const KeyReader& r, std::string_view key) {
  if (r.bool_or(key, false)) r.unsupported(key, "false", true);
}

// ---- Gemma-4 (text stack) ----

std::vector<LayerKind> gemma4_layer_types(const KeyReader& r, int n) {
  std::vector<LayerKind> kinds(n);
  const json* v = r.find("layer_types");
  if (!v) {  // Gemma4TextConfig: pattern of 5 sliding + 1 full, last layer forced full
    for (int i = 0; i < n; ++i) kinds[i] = (i % 6 == 5 || i == n - 1) ? LayerKind::kFullAttention
                                                                       : LayerKind::kSlidingAttention;
    return kinds;
  }
  if (!v->is_array() || static_cast<int>(v->size()) != n)
    r.fail("layer_types", "a list of " + std::to_string(n) + " layer types (num_hidden_layers)", v);
  for (int i = 0; i < n; ++i) {
    const json& e = (*v)[i];
    if (e == "sliding_attention") kinds[i] = LayerKind::kSlidingAttention;
    else if (e == "full_attention") kinds[i] = LayerKind::kFullAttention;
    else r.fail("layer_types[" + std::to_string(i) + "]", "\"sliding_attention\" or \"full_attention\"", &e);
  }
  // transformers 5.17 Gemma4TextConfig: "Last layer must use `full_attention` … Forcing last layer to
  // `full_attention`".
  kinds[n - 1] = LayerKind::kFullAttention;
  return kinds;
}

// per_layer_config: {"4": {"head_dim": 64}, …}; keys are layer indices, zero-padded from 10 layers on ("04").
void apply_per_layer_config(const KeyReader& r, std::vector<int64_t>& head_dims) {
  const json* v = r.find("per_layer_config");
  if (!v) return;
  if (!v->is_object()) r.fail("per_layer_config", "an object keyed by layer index", v);
  const int n = static_cast<int>(head_dims.size());
  for (const auto& [key, entry] : v->items()) {
    const std::string path = "per_layer_config." + key;
    const bool digits = !key.empty() && key.size() <= 9 && key.find_first_not_of("0123456789") == std::string::npos;
    if (!digits || std::stoi(key) >= n)
      r.fail(path, "a layer index in [0, " + std::to_string(n) + ") as the key", &entry);
    const KeyReader layer(entry, r.source(), path + ".");
    if (!entry.is_object()) r.fail(path, "an object such as {\"head_dim\": 512}", &entry);
    for (const auto& item : entry.items())
      if (item.key() != "head_dim") layer.unsupported(item.key(), "only \"head_dim\" per layer", item.value());
    head_dims[std::stoi(key)] = layer.positive_int("head_dim");
  }
}

void parse_gemma4(const KeyReader& r, const KeyReader& outer, ModelConfig& cfg) {
  const int n = static_cast<int>(r.positive_int("num_hidden_layers"));
  const int64_t heads = r.positive_int("num_attention_heads");
  const int64_t kv_heads = r.positive_int_or("num_key_value_heads", 4);
  const int64_t full_kv_heads = r.positive_int_or("num_global_key_value_heads", kv_heads);
  for (std::string_view key : {"attention_k_eq_v", "enable_moe_block", "attention_bias"}) reject_true(r, key);
  if (const json* b = r.find("use_bidirectional_attention"); b && *b == "all")
    r.unsupported("use_bidirectional_attention", "null or \"vision\" (causal text)", *b);

  const std::vector<LayerKind> kinds = gemma4_layer_types(r, n);
  std::vector<int64_t> head_dims(n);
  const int64_t head_dim = r.positive_int_or("head_dim", 256);
  const int64_t global_head_dim = r.positive_int_or("global_head_dim", 512);
  for (int i = 0; i < n; ++i) head_dims[i] = kinds[i] == LayerKind::kFullAttention ? global_head_dim : head_dim;
  apply_per_layer_config(r, head_dims);

  RopeConfig sliding_rope = kGemma4SlidingRope, full_rope = kGemma4FullRope;
  if (r.find("rope_parameters")) {
    const KeyReader rp = r.child("rope_parameters");
    if (rp.find("sliding_attention") || rp.find("full_attention")) {
      if (rp.find("sliding_attention")) sliding_rope = parse_rope(rp.child("sliding_attention"), sliding_rope);
      if (rp.find("full_attention")) full_rope = parse_rope(rp.child("full_attention"), full_rope);
    } else {  // one flat dict for every layer type
      sliding_rope = full_rope = parse_rope(rp, {RopeType::kDefault, 10000.0, 1.0});
    }
  } else {  // legacy Gemma-3 style keys
    full_rope.theta = r.positive_number_or("rope_theta", full_rope.theta);
    sliding_rope.theta = r.positive_number_or("rope_local_base_freq", sliding_rope.theta);
  }

  const int64_t window = r.positive_int_or("sliding_window", 512);
  cfg.num_kv_shared_layers = static_cast<int>(r.nonnegative_int_or("num_kv_shared_layers", 0));
  cfg.use_double_wide_mlp = r.bool_or("use_double_wide_mlp", false);
  std::string why;
  const auto sources = gemma4_kv_sharing_sources(kinds, cfg.num_kv_shared_layers, &why);
  if (!sources) r.fail("num_kv_shared_layers", "a count that leaves every shared layer a source (" + why + ")",
                       r.find("num_kv_shared_layers"));

  cfg.layers.resize(n);
  for (int i = 0; i < n; ++i) {
    LayerConfig& l = cfg.layers[i];
    const bool full = kinds[i] == LayerKind::kFullAttention;
    const bool shared = (*sources)[i] >= 0;
    l.kind = kinds[i];
    l.head_dim = head_dims[i];
    l.num_heads = heads;
    l.num_kv_heads = full ? full_kv_heads : kv_heads;
    // transformers: double-wide applies to the KV-shared layers only (oracle README, "Plan that transformers built").
    l.intermediate_size = cfg.intermediate_size * (cfg.use_double_wide_mlp && shared ? 2 : 1);
    l.sliding_window = full ? 0 : window;
    l.rope = full ? full_rope : sliding_rope;
    l.kv_shared_from = (*sources)[i];
  }

  cfg.hidden_size_per_layer_input = r.nonnegative_int_or("hidden_size_per_layer_input", 256);
  cfg.vocab_size_per_layer_input =
      cfg.has_ple() ? r.positive_int_or("vocab_size_per_layer_input", 262144) : 0;
  cfg.final_logit_softcapping = r.positive_number_or("final_logit_softcapping", 0.0);
  cfg.rms_norm_eps = r.positive_number_or("rms_norm_eps", 1e-6);
  cfg.activation = parse_activation(r, "hidden_activation", "gelu_pytorch_tanh");
  cfg.tie_word_embeddings = r.find("tie_word_embeddings") ? r.bool_or("tie_word_embeddings", true)
                                                          : outer.bool_or("tie_word_embeddings", true);
  cfg.max_position_embeddings = r.positive_int_or("max_position_embeddings", 131072);
  cfg.norm_style = NormStyle::kWeightInFloat32;
  cfg.embed_scale = std::sqrt(static_cast<double>(cfg.hidden_size));
  cfg.attention_scaling = AttentionScaling::kOne;
}

// ---- Llama (Reka Flash 3) and the Llama part of hxa079 ----
void parse_llama_like(const KeyReader& r, ModelConfig& cfg, double default_theta, double default_eps,
                      int64_t default_max_positions) {
  const int n = static_cast<int>(r.positive_int("num_hidden_layers"));
  const int64_t heads = r.positive_int("num_attention_heads");
  const int64_t kv_heads = r.positive_int_or("num_key_value_heads", heads);
  if (!r.find("head_dim") && cfg.hidden_size % heads != 0)
    r.fail("head_dim", "a value, since hidden_size is not a multiple of num_attention_heads", nullptr);
  const int64_t head_dim = r.positive_int_or("head_dim", cfg.hidden_size / heads);
  reject_true(r, "mlp_bias");

  RopeConfig rope{RopeType::kDefault, default_theta, 1.0};
  if (r.find("rope_parameters")) {
    rope = parse_rope(r.child("rope_parameters"), rope);
  } else {
    rope.theta = r.positive_number_or("rope_theta", default_theta);
    if (r.find("rope_scaling")) rope = parse_rope(r.child("rope_scaling"), rope);
  }
  if (rope.type != RopeType::kDefault)
    r.unsupported("rope_parameters", "rope_type \"default\"", rope_type_name(rope.type));

  cfg.layers.assign(n, LayerConfig{.kind = LayerKind::kFullAttention,
                                   .head_dim = head_dim,
                                   .num_heads = heads,
                                   .num_kv_heads = kv_heads,
                                   .intermediate_size = cfg.intermediate_size,
                                   .sliding_window = 0,
                                   .rope = rope,
                                   .kv_shared_from = -1});
  cfg.rms_norm_eps = r.positive_number_or("rms_norm_eps", default_eps);
  cfg.activation = parse_activation(r, "hidden_act", "silu");
  cfg.tie_word_embeddings = r.bool_or("tie_word_embeddings", false);
  cfg.attention_bias = r.bool_or("attention_bias", false);
  cfg.max_position_embeddings = r.positive_int_or("max_position_embeddings", default_max_positions);
  cfg.norm_style = NormStyle::kWeightAfterDowncast;
  cfg.embed_scale = 1.0;
  cfg.attention_scaling = AttentionScaling::kInverseSqrtHeadDim;
}

// ---- hybrid keys shared by hxa079 and hxa07i ----
void parse_rwkv_switches(const KeyReader& r, RwkvConfig& rwkv, bool residuals_and_bonus, KScaling scaling) {
  rwkv.value_residual = r.bool_or("rwkv_value_residual", residuals_and_bonus);
  rwkv.key_residual = r.bool_or("rwkv_key_residual", residuals_and_bonus);
  rwkv.bonus = r.bool_or("rwkv_bonus", residuals_and_bonus);
  const std::string k = r.string_or("rwkv_k_scaling", scaling == KScaling::kOmega ? "omega" : "decay");
  if (k == "omega") rwkv.k_scaling = KScaling::kOmega;
  else if (k == "decay") rwkv.k_scaling = KScaling::kDecay;
  else r.fail("rwkv_k_scaling", "\"omega\" or \"decay\"", r.find("rwkv_k_scaling"));
  rwkv.ranks.decay = r.positive_int("lora_rank_decay");
  rwkv.ranks.iclr = r.positive_int("lora_rank_iclr");
  rwkv.ranks.gate = r.positive_int("lora_rank_gate");
  if (rwkv.value_residual) rwkv.ranks.value_mix = r.positive_int("lora_rank_value_residual_mix");
  if (rwkv.key_residual) rwkv.ranks.key_mix = r.positive_int("lora_rank_key_residual_mix");
}

void parse_hxa079(const KeyReader& r, ModelConfig& cfg) {
  parse_llama_like(r, cfg, /*RWKV-Infer rope_theta*/ 1e6, /*rms_norm_eps*/ 1e-6, /*max_ctxlen*/ 8192);
  const int n = cfg.num_layers();
  const std::vector<int> gqa = r.layer_list("transformer_layers", n);
  if (r.find("rwkv_layers")) {
    std::vector<int> expected;
    for (int i = 0; i < n; ++i)
      if (std::find(gqa.begin(), gqa.end(), i) == gqa.end()) expected.push_back(i);
    if (r.layer_list("rwkv_layers", n) != expected)
      r.fail("rwkv_layers", "every layer not in transformer_layers, " + json(expected).dump(), r.find("rwkv_layers"));
  }
  if (!r.bool_or("nope_in_transformer", true))
    r.unsupported("nope_in_transformer", "true (hxa079 GQA layers are NoPE)", false);
  RwkvConfig& rwkv = cfg.rwkv;
  rwkv.num_heads = cfg.layers[0].num_heads;
  rwkv.head_dim = cfg.layers[0].head_dim;
  rwkv.num_kv_heads = cfg.layers[0].num_kv_heads;
  rwkv.qk_norm = r.bool_or("enable_qk_norm", false);
  rwkv.rope = !r.bool_or("nope_in_rwkv", false);
  parse_rwkv_switches(r, rwkv, /*residuals_and_bonus*/ true, KScaling::kOmega);
  const RopeConfig rwkv_rope = rwkv.rope ? cfg.layers[0].rope : RopeConfig{};
  for (int i = 0; i < n; ++i) {
    const bool is_gqa = std::find(gqa.begin(), gqa.end(), i) != gqa.end();
    cfg.layers[i].kind = is_gqa ? LayerKind::kNoPEAttention : LayerKind::kRwkv7;
    cfg.layers[i].rope = is_gqa ? RopeConfig{} : rwkv_rope;
  }
  // RWKV-Infer's T5RMSNorm multiplies the weight in fp32 (hybrid-arch.md §1.1), unlike the Llama teacher.
  cfg.norm_style = NormStyle::kWeightInFloat32;
}

void parse_hxa07i(const KeyReader& r, ModelConfig& cfg) {
  const int n = cfg.num_layers();
  const std::vector<int> rwkv_layers = r.layer_list("rwkv_layers", n);
  if (rwkv_layers.empty())
    r.fail("rwkv_layers", "a non-empty list of converted full_attention layers", r.find("rwkv_layers"));
  RwkvConfig& rwkv = cfg.rwkv;
  rwkv.head_dim = r.positive_int("rwkv_head_dim");
  rwkv.num_heads = r.positive_int("rwkv_num_heads");
  rwkv.num_kv_heads = r.positive_int("rwkv_num_kv_heads");
  rwkv.qk_norm = r.bool_or("enable_qk_norm", true);
  rwkv.rope = !r.bool_or("nope_in_rwkv", true);
  if (rwkv.rope) r.unsupported("nope_in_rwkv", "true (hxa07i RWKV layers are NoPE)", false);
  parse_rwkv_switches(r, rwkv, /*residuals_and_bonus*/ false, KScaling::kDecay);
  cfg.tica = {.num_heads = r.positive_int("tica_num_heads"),
              .num_kv_heads = r.positive_int("tica_num_kv_heads"),
              .head_dim = r.positive_int("tica_head_dim"),
              .gate_rank = r.positive_int("tica_gate_rank")};
  for (int i : rwkv_layers) {
    LayerConfig& l = cfg.layers[i];
    if (l.kind != LayerKind::kFullAttention)
      r.fail("rwkv_layers", "full_attention layers only (layer " + std::to_string(i) + " is " +
                                std::string(layer_kind_name(l.kind)) + ")", r.find("rwkv_layers"));
    l = LayerConfig{.kind = LayerKind::kRwkv7Tica,
                    .head_dim = rwkv.head_dim,
                    .num_heads = rwkv.num_heads,
                    .num_kv_heads = rwkv.num_kv_heads,
                    .intermediate_size = l.intermediate_size,  // the teacher's MLP stays, double-wide included
                    .sliding_window = 0,
                    .rope = {},
                    .kv_shared_from = -1};
  }
  for (int i = 0; i < n; ++i) {
    const int src = cfg.layers[i].kv_shared_from;
    if (src >= 0 && cfg.layers[src].is_rwkv())
      r.fail("rwkv_layers", "no layer whose K/V another layer shares (layer " + std::to_string(i) +
                                " reads layer " + std::to_string(src) + "'s)", r.find("rwkv_layers"));
  }
}

}  // namespace

std::optional<Arch> arch_from_config_json(const json& root) {
  if (!root.is_object()) return std::nullopt;
  const auto text_it = root.find("text_config");
  const json& text = (text_it != root.end() && text_it->is_object()) ? *text_it : root;
  for (const json* obj : {&text, &root}) {
    if (auto it = obj->find("rwkv_architecture"); it != obj->end() && it->is_string()) {
      if (*it == "hxa079") return Arch::kHxa079;
      if (*it == "hxa07i") return Arch::kHxa07i;
      return std::nullopt;
    }
  }
  for (const json* obj : {&text, &root}) {
    if (auto it = obj->find("model_type"); it != obj->end() && it->is_string()) {
      if (*it == "gemma4" || *it == "gemma4_text") return Arch::kGemma4;
      if (*it == "llama") return Arch::kLlama;
    }
  }
  if (auto it = root.find("architectures"); it != root.end() && it->is_array()) {
    for (const json& a : *it) {
      if (a == "Gemma4ForCausalLM" || a == "Gemma4ForConditionalGeneration") return Arch::kGemma4;
      if (a == "LlamaForCausalLM") return Arch::kLlama;
    }
  }
  return std::nullopt;
}

ModelConfig parse_model_config(const json& root, const std::string& source) {
  if (!root.is_object()) throw FormatError(in_file(source, "expected a JSON object, found " + shown(root)));
  const KeyReader outer(root, source, "");
  const bool nested = root.contains("text_config");
  const KeyReader text = nested ? outer.child("text_config") : outer;

  const auto arch = arch_from_config_json(root);
  if (!arch) {
    const std::string known = "\"hxa079\", \"hxa07i\", \"gemma4\" or \"llama\"";
    for (std::string_view key : {"rwkv_architecture", "model_type"}) {
      if (const json* v = text.find(key)) text.unsupported(key, known, *v);
      if (const json* v = outer.find(key)) outer.unsupported(key, known, *v);
    }
    outer.fail("model_type", "\"gemma4\", \"gemma4_text\" or \"llama\" (or rwkv_architecture for a hybrid)", nullptr);
  }

  ModelConfig cfg;
  cfg.arch = *arch;
  const bool multimodal =
      nested || (root.contains("architectures") && root["architectures"].is_array() &&
                 std::find(root["architectures"].begin(), root["architectures"].end(),
                           "Gemma4ForConditionalGeneration") != root["architectures"].end());
  cfg.tensor_prefix = multimodal ? "model.language_model." : "model.";
  cfg.dtype = parse_dtype(text, outer);
  cfg.vocab_size = text.positive_int("vocab_size");
  cfg.hidden_size = text.positive_int("hidden_size");
  cfg.intermediate_size = text.positive_int("intermediate_size");
  read_token_ids(text, outer, cfg);

  switch (cfg.arch) {
    case Arch::kGemma4: parse_gemma4(text, outer, cfg); break;
    case Arch::kLlama: parse_llama_like(text, cfg, 10000.0, 1e-6, 2048); break;
    case Arch::kHxa079: parse_hxa079(text, cfg); break;
    case Arch::kHxa07i:
      parse_gemma4(text, outer, cfg);
      parse_hxa07i(text, cfg);
      break;
  }
  validate_model_config(cfg, source);
  return cfg;
}

ModelConfig load_model_config(const std::string& path) {
  std::ifstream in(path);
  if (!in) throw IoError(in_file(path, "cannot open: " + errno_text(errno)));
  std::stringstream text;
  text << in.rdbuf();
  json j = json::parse(text.str(), nullptr, /*allow_exceptions*/ false);
  if (j.is_discarded()) throw FormatError(in_file(path, "is not valid JSON; expected a config.json object"));
  return parse_model_config(j, path);
}

}  // namespace hx
