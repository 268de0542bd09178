// config.json ⇄ ModelConfig: the oracle's transformers 5.17 configs, both Gemma-4 head-dim styles, key errors,
// round trips of every preset.
#include <gtest/gtest.h>

#include <cmath>

#include "arch/model_config.h"
#include "arch/presets.h"
#include "formats/errors.h"
#include "tests/arch_test_helpers.h"

namespace hx {
namespace {

using nlohmann::json;
using test::read_json;

std::vector<int64_t> per_layer(const ModelConfig& c, int64_t LayerConfig::*field) {
  std::vector<int64_t> out;
  for (const LayerConfig& l : c.layers) out.push_back(l.*field);
  return out;
}
std::vector<int> kv_sources(const ModelConfig& c) {
  std::vector<int> out;
  for (const LayerConfig& l : c.layers) out.push_back(l.kv_shared_from);
  return out;
}

// The error message parse_model_config throws for `config`, or "" when it parses.
template <typename E = FormatError>
std::string error_of(const json& config) {
  try {
    parse_model_config(config, "cfg.json");
  } catch (const E& e) {
    return e.what();
  }
  return "";
}

TEST(ArchConfig, GemmaTinyMatchesThePlanTransformersBuilt) {
  const ModelConfig c = load_model_config(test::gemma_tiny_config_path());
  const json plan = read_json(test::oracle_dir() + "/metrics.json")["gemma4"];

  EXPECT_EQ(c.arch, Arch::kGemma4);
  EXPECT_EQ(c.tensor_prefix, "model.");
  EXPECT_EQ(per_layer(c, &LayerConfig::head_dim), plan["head_dim_per_layer"].get<std::vector<int64_t>>());
  EXPECT_EQ(per_layer(c, &LayerConfig::head_dim), (std::vector<int64_t>{32, 32, 32, 32, 64, 32, 32, 32, 32, 64}));
  EXPECT_EQ(per_layer(c, &LayerConfig::intermediate_size),
            plan["mlp_intermediate_per_layer"].get<std::vector<int64_t>>());
  EXPECT_EQ(kv_sources(c), (std::vector<int>{-1, -1, -1, -1, -1, -1, 5, 5, 5, 4}));
  for (int i : plan["kv_shared_layers"].get<std::vector<int>>()) {
    EXPECT_FALSE(c.layers[i].has_own_kv()) << "layer " << i;
  }
  for (int i : plan["store_full_length_kv_layers"].get<std::vector<int>>()) {
    EXPECT_TRUE(c.layers[i].has_own_kv()) << "layer " << i;
  }
  const json& windows = plan["sliding_window_per_layer"];
  for (int i = 0; i < c.num_layers(); ++i) {
    EXPECT_EQ(c.layers[i].sliding_window, windows[i].is_null() ? 0 : windows[i].get<int64_t>()) << "layer " << i;
  }
  EXPECT_DOUBLE_EQ(c.embed_scale, plan["embed_scale"].get<double>());
  EXPECT_EQ(c.layers[4].rope, (RopeConfig{RopeType::kProportional, 1e6, 0.25}));
  EXPECT_EQ(c.layers[0].rope, (RopeConfig{RopeType::kDefault, 1e4, 1.0}));
  EXPECT_EQ(c.layers[4].num_kv_heads, 1);
  EXPECT_EQ(c.hidden_size_per_layer_input, 16);
  EXPECT_EQ(c.vocab_size_per_layer_input, 512);
  EXPECT_DOUBLE_EQ(c.final_logit_softcapping, 30.0);
  EXPECT_TRUE(c.tie_word_embeddings);
  EXPECT_EQ(c.dtype, DType::kBF16);
  EXPECT_EQ(c.activation, Activation::kGeluTanh);
  EXPECT_EQ(c.attention_scaling, AttentionScaling::kOne);
  EXPECT_EQ(c.norm_style, NormStyle::kWeightInFloat32);
}

TEST(ArchConfig, BothGemmaHeadDimStylesLoadIdentically) {
  const ModelConfig per_layer_style = load_model_config(test::gemma_tiny_config_path());
  const ModelConfig global_style = load_model_config(test::oracle_dir() + "/gemma4-tiny/config_global_head_dim.json");
  EXPECT_EQ(per_layer_style, global_style);
}

TEST(ArchConfig, LlamaTinyLoads) {
  const ModelConfig c = load_model_config(test::llama_tiny_config_path());
  EXPECT_EQ(c.arch, Arch::kLlama);
  EXPECT_EQ(c.num_layers(), 4);
  EXPECT_EQ(c.hidden_size, 128);
  EXPECT_EQ(c.vocab_size, 512);
  for (const LayerConfig& l : c.layers) {
    EXPECT_EQ(l, (LayerConfig{.kind = LayerKind::kFullAttention, .head_dim = 32, .num_heads = 4, .num_kv_heads = 2,
                              .intermediate_size = 352, .sliding_window = 0,
                              .rope = {RopeType::kDefault, 8e6, 1.0}, .kv_shared_from = -1}));
  }
  EXPECT_DOUBLE_EQ(c.rms_norm_eps, 1e-5);
  EXPECT_FALSE(c.tie_word_embeddings);
  EXPECT_DOUBLE_EQ(c.embed_scale, 1.0);
  EXPECT_EQ(c.attention_scaling, AttentionScaling::kInverseSqrtHeadDim);
  EXPECT_EQ(c.norm_style, NormStyle::kWeightAfterDowncast);
  EXPECT_EQ(c.activation, Activation::kSilu);
}

TEST(ArchConfig, LegacyLlamaKeys) {
  json j = read_json(test::llama_tiny_config_path());
  j.erase("rope_parameters");
  j.erase("dtype");
  j.erase("head_dim");
  j["rope_theta"] = 500000.0;
  j["torch_dtype"] = "float16";
  const ModelConfig c = parse_model_config(j, "legacy.json");
  EXPECT_DOUBLE_EQ(c.layers[0].rope.theta, 5e5);
  EXPECT_EQ(c.dtype, DType::kF16);
  EXPECT_EQ(c.layers[0].head_dim, 128 / 4);
}

TEST(ArchConfig, ZeroPaddedPerLayerConfigKeysParse) {
  json j = read_json(test::gemma_tiny_config_path());
  j["num_hidden_layers"] = 15;
  j["num_kv_shared_layers"] = 0;
  json types = json::array();
  for (int i = 0; i < 15; ++i) types.push_back(i % 5 == 4 ? "full_attention" : "sliding_attention");
  j["layer_types"] = types;
  j["per_layer_config"] = {{"04", {{"head_dim", 64}}}, {"09", {{"head_dim", 64}}}, {"14", {{"head_dim", 64}}}};
  const ModelConfig c = parse_model_config(j, "padded.json");  // without the keys, full layers would get 512
  EXPECT_EQ(per_layer(c, &LayerConfig::head_dim),
            (std::vector<int64_t>{32, 32, 32, 32, 64, 32, 32, 32, 32, 64, 32, 32, 32, 32, 64}));
  // Writing pads the same way transformers does: to the width of the largest index.
  const json written = to_config_json(c)["per_layer_config"];
  EXPECT_EQ(written, (json{{"04", {{"head_dim", 64}}}, {"09", {{"head_dim", 64}}}, {"14", {{"head_dim", 64}}}}));
}

TEST(ArchConfig, LastGemmaLayerIsAlwaysFull) {
  // transformers 5.17 forces it ("Last layer must use `full_attention`"), with the full layers' head_dim.
  json j = read_json(test::gemma_tiny_config_path());
  j["layer_types"][9] = "sliding_attention";
  const ModelConfig c = parse_model_config(j, "last.json");
  EXPECT_EQ(c.layers[9].kind, LayerKind::kFullAttention);
  EXPECT_EQ(c.layers[9].head_dim, 64);
  EXPECT_EQ(c, load_model_config(test::gemma_tiny_config_path()));
}

TEST(ArchConfig, WrittenConfigsAgreeWithWhatTransformersWrote) {
  for (const std::string& path : {test::gemma_tiny_config_path(), test::llama_tiny_config_path()}) {
    const json original = read_json(path);
    const json written = to_config_json(load_model_config(path));
    for (const auto& [key, value] : written.items()) {
      ASSERT_TRUE(original.contains(key)) << path << ": hxforge writes '" << key << "', transformers did not";
      EXPECT_EQ(value, original[key]) << path << ": key '" << key << "'";
    }
  }
}

TEST(ArchConfig, TextConfigNestingSelectsTheLanguageModelPrefix) {
  const json text = read_json(test::gemma_tiny_config_path());
  const json nested = {{"architectures", {"Gemma4ForConditionalGeneration"}},
                       {"model_type", "gemma4"},
                       {"text_config", text},
                       {"vision_config", {{"hidden_size", 768}}}};
  ModelConfig c = parse_model_config(nested, "nested.json");
  EXPECT_EQ(c.tensor_prefix, "model.language_model.");
  c.tensor_prefix = "model.";
  EXPECT_EQ(c, load_model_config(test::gemma_tiny_config_path()));
}

TEST(ArchConfig, EveryPresetRoundTripsThroughConfigJson) {
  for (const PresetInfo& p : list_presets()) {
    const int depth = p.build(std::nullopt).num_layers();
    for (std::optional<int> layers : {std::optional<int>{}, std::optional<int>{std::min(depth, 5)}}) {
      const ModelConfig c = p.build(layers);
      const json j = to_config_json(c);
      EXPECT_EQ(parse_model_config(j, "roundtrip.json"), c) << arch_name(p.arch) << " " << p.name << "\n" << j.dump();
    }
  }
  for (const std::string& path : {test::gemma_tiny_config_path(), test::llama_tiny_config_path()}) {
    const ModelConfig c = load_model_config(path);
    EXPECT_EQ(parse_model_config(to_config_json(c), path), c) << path;
  }
}

TEST(ArchConfig, MissingOrInvalidKeysAreNamed) {
  const json gemma = read_json(test::gemma_tiny_config_path());
  {
    json j = gemma;
    j.erase("hidden_size");
    EXPECT_EQ(error_of(j), "cfg.json: key 'hidden_size' is missing; expected a positive integer");
  }
  {
    json j = gemma;
    j["num_attention_heads"] = "two";
    EXPECT_EQ(error_of(j),
              "cfg.json: key 'num_attention_heads' is invalid; expected a positive integer, found \"two\"");
  }
  {
    json j = gemma;
    j["layer_types"][3] = "global";
    EXPECT_NE(error_of(j).find("key 'layer_types[3]' is invalid"), std::string::npos) << error_of(j);
  }
  {
    json j = gemma;
    j["per_layer_config"] = {{"x4", {{"head_dim", 64}}}};
    EXPECT_NE(error_of(j).find("key 'per_layer_config.x4' is invalid"), std::string::npos) << error_of(j);
  }
  {
    json j = gemma;
    j["per_layer_config"] = {{"4", {{"head_dim", 0}}}};
    EXPECT_NE(error_of(j).find("key 'per_layer_config.4.head_dim' is invalid"), std::string::npos) << error_of(j);
  }
  {
    json j = gemma;  // layer 1 onward shared: no full layer precedes the first shared one
    j["num_kv_shared_layers"] = 9;
    EXPECT_NE(error_of(j).find("key 'num_kv_shared_layers' is invalid"), std::string::npos) << error_of(j);
  }
  {
    json j = gemma;  // every layer shared: none would store K/V
    j["num_kv_shared_layers"] = 10;
    EXPECT_NE(error_of(j).find("must be smaller than num_hidden_layers 10"), std::string::npos) << error_of(j);
  }
  {
    json j = gemma;
    j["num_attention_heads"] = 3;
    j["num_key_value_heads"] = 2;
    EXPECT_NE(error_of(j).find("is not a multiple of num_key_value_heads 2"), std::string::npos) << error_of(j);
  }
  {
    json j = {{"text_config", gemma}};
    j["text_config"].erase("vocab_size");
    EXPECT_EQ(error_of(j), "cfg.json: key 'text_config.vocab_size' is missing; expected a positive integer");
  }
  EXPECT_EQ(error_of(json::array()), "cfg.json: expected a JSON object, found []");
}

TEST(ArchConfig, UnsupportedFeaturesAreRefusedByName) {
  const json gemma = read_json(test::gemma_tiny_config_path());
  for (const char* key : {"enable_moe_block", "attention_k_eq_v"}) {
    json j = gemma;
    j[key] = true;
    EXPECT_EQ(error_of<UnsupportedError>(j),
              std::string("cfg.json: key '") + key + "' is unsupported; expected false, found true");
  }
  json qwen = gemma;
  qwen["model_type"] = "qwen3";
  qwen.erase("architectures");
  EXPECT_NE(error_of<UnsupportedError>(qwen).find("key 'model_type' is unsupported"), std::string::npos);
  json scaled = read_json(test::llama_tiny_config_path());
  scaled["rope_parameters"] = {{"rope_type", "llama3"}, {"rope_theta", 5e5}, {"factor", 8.0}};
  EXPECT_NE(error_of<UnsupportedError>(scaled).find("rope_parameters.rope_type"), std::string::npos);
  json hxa07a = {{"rwkv_architecture", "hxa07a"}};
  EXPECT_NE(error_of<UnsupportedError>(hxa07a).find("key 'rwkv_architecture' is unsupported"), std::string::npos);
}

TEST(ArchConfig, HybridKeysAreCheckedByName) {
  json hxa079 = to_config_json(preset_config(Arch::kHxa079, "tiny"));
  {
    json j = hxa079;
    j.erase("lora_rank_decay");
    EXPECT_EQ(error_of(j), "cfg.json: key 'lora_rank_decay' is missing; expected a positive integer");
  }
  {
    json j = hxa079;
    j["rwkv_layers"] = {0, 1};
    EXPECT_NE(error_of(j).find("key 'rwkv_layers' is invalid"), std::string::npos) << error_of(j);
  }
  {
    json j = hxa079;
    j["transformer_layers"] = {2, 7};
    EXPECT_NE(error_of(j).find("key 'transformer_layers' is invalid"), std::string::npos) << error_of(j);
  }
  json hxa07i = to_config_json(preset_config(Arch::kHxa07i, "tiny"));
  {
    json j = hxa07i;
    j["rwkv_layers"] = {3, 4};  // layer 3 is a sliding layer
    EXPECT_NE(error_of(j).find("layer 3 is sliding_attention"), std::string::npos) << error_of(j);
  }
  {
    json j = hxa07i;
    j.erase("tica_gate_rank");
    EXPECT_EQ(error_of(j), "cfg.json: key 'tica_gate_rank' is missing; expected a positive integer");
  }
}

TEST(ArchConfig, HybridConfigsCarryTheirVariantSwitches) {
  const ModelConfig hxa079 = preset_config(Arch::kHxa079, "tiny");
  EXPECT_TRUE(hxa079.rwkv.value_residual && hxa079.rwkv.key_residual && hxa079.rwkv.bonus && hxa079.rwkv.rope);
  EXPECT_EQ(hxa079.rwkv.k_scaling, KScaling::kOmega);
  const ModelConfig hxa07i = preset_config(Arch::kHxa07i, "tiny");
  EXPECT_FALSE(hxa07i.rwkv.value_residual || hxa07i.rwkv.key_residual || hxa07i.rwkv.bonus || hxa07i.rwkv.rope);
  EXPECT_TRUE(hxa07i.rwkv.qk_norm);
  EXPECT_EQ(hxa07i.rwkv.k_scaling, KScaling::kDecay);

  json j = to_config_json(hxa07i);
  j["rwkv_bonus"] = true;
  j["rwkv_value_residual"] = true;
  j["lora_rank_value_residual_mix"] = 8;
  const ModelConfig with_bonus = parse_model_config(j, "bonus.json");
  EXPECT_TRUE(with_bonus.rwkv.bonus);
  EXPECT_EQ(with_bonus.rwkv.ranks.value_mix, 8);
  EXPECT_EQ(parse_model_config(to_config_json(with_bonus), "again.json"), with_bonus);
}

}  // namespace
}  // namespace hx
