// Presets: the tinies equal the oracle configs, the full-size shapes carry the teachers' documented values,
// students follow their specs, and --layers keeps the layer pattern.
#include <gtest/gtest.h>

#include <cmath>

#include "arch/arch.h"
#include "arch/presets.h"
#include "formats/errors.h"
#include "tests/arch_test_helpers.h"

namespace hx {
namespace {

std::vector<int> layers_of(const ModelConfig& c, LayerKind kind) {
  std::vector<int> out;
  for (int i = 0; i < c.num_layers(); ++i)
    if (c.layers[i].kind == kind) out.push_back(i);
  return out;
}

TEST(ArchPresets, EveryArchitectureHasATinyAndAFullSizePreset) {
  const std::string help = presets_help();
  for (Arch arch : {Arch::kGemma4, Arch::kLlama, Arch::kHxa079, Arch::kHxa07i}) {
    int count = 0;
    for (const PresetInfo& p : list_presets()) {
      if (p.arch != arch) continue;
      ++count;
      EXPECT_NE(help.find(std::string(p.name)), std::string::npos) << p.name;
      EXPECT_EQ(preset_config(arch, p.name).arch, arch) << p.name;
    }
    EXPECT_GE(count, 2) << arch_name(arch);
    const ModelConfig tiny = preset_config(arch, "tiny");
    EXPECT_GE(tiny.hidden_size, 64);
    EXPECT_LE(tiny.hidden_size, 256);
    EXPECT_EQ(tiny.vocab_size, 512);
  }
}

TEST(ArchPresets, TeacherTiniesAreTheOracleConfigs) {
  EXPECT_EQ(preset_config(Arch::kGemma4, "tiny"), load_model_config(test::gemma_tiny_config_path()));
  EXPECT_EQ(preset_config(Arch::kLlama, "tiny"), load_model_config(test::llama_tiny_config_path()));
}

TEST(ArchPresets, HybridTiniesExerciseEveryLayerKind) {
  const ModelConfig hxa079 = preset_config(Arch::kHxa079, "tiny");
  EXPECT_EQ(layers_of(hxa079, LayerKind::kRwkv7), (std::vector<int>{0, 1, 3}));
  EXPECT_EQ(layers_of(hxa079, LayerKind::kNoPEAttention), (std::vector<int>{2}));
  const ModelConfig hxa07i = preset_config(Arch::kHxa07i, "tiny");
  EXPECT_EQ(layers_of(hxa07i, LayerKind::kRwkv7Tica), (std::vector<int>{4, 9}));
  EXPECT_EQ(layers_of(hxa07i, LayerKind::kSlidingAttention), (std::vector<int>{0, 1, 2, 3, 5, 6, 7, 8}));
  EXPECT_EQ(hxa07i.rwkv.num_heads * hxa07i.rwkv.head_dim, 2 * 64);  // the teacher's full-layer q width
  EXPECT_EQ(hxa07i.rwkv.num_kv_heads * hxa07i.rwkv.head_dim, 1 * 64);
  EXPECT_EQ(hxa07i.layers[6].kv_shared_from, 5);  // sliding KV sharing survives conversion
  EXPECT_EQ(hxa07i.layers[9].kv_shared_from, -1);
  EXPECT_EQ(hxa07i.layers[9].intermediate_size, 256);  // ... and so does the double-wide MLP
  EXPECT_TRUE(hxa07i.has_ple());
}

TEST(ArchPresets, Gemma4E2B) {
  const ModelConfig c = preset_config(Arch::kGemma4, "gemma4-e2b");
  ASSERT_EQ(c.num_layers(), 35);
  EXPECT_EQ(c.tensor_prefix, "model.language_model.");
  EXPECT_EQ(layers_of(c, LayerKind::kFullAttention), (std::vector<int>{4, 9, 14, 19, 24, 29, 34}));
  for (int i = 0; i < 35; ++i) {
    const LayerConfig& l = c.layers[i];
    const bool full = i % 5 == 4;
    EXPECT_EQ(l.head_dim, full ? 512 : 256) << i;
    EXPECT_EQ(l.num_heads, 8) << i;
    EXPECT_EQ(l.num_kv_heads, 1) << i;
    EXPECT_EQ(l.intermediate_size, i < 15 ? 6144 : 12288) << i;
    EXPECT_EQ(l.sliding_window, full ? 0 : 512) << i;
    EXPECT_EQ(l.kv_shared_from, i < 15 ? -1 : full ? 14 : 13) << i;  // teachers.md §2
    const RopeConfig rope = full ? kGemma4FullRope : RopeConfig{RopeType::kDefault, 1e4, 1};
    EXPECT_EQ(l.rope, rope) << i;
  }
  EXPECT_EQ(c.vocab_size, 262144);
  EXPECT_EQ(c.hidden_size, 1536);
  EXPECT_DOUBLE_EQ(c.embed_scale, std::sqrt(1536.0));
  EXPECT_DOUBLE_EQ(c.final_logit_softcapping, 30.0);
  EXPECT_EQ(c.hidden_size_per_layer_input, 256);
  EXPECT_EQ(c.vocab_size_per_layer_input, 262144);
  EXPECT_TRUE(c.tie_word_embeddings);
  EXPECT_EQ(c.eos_token_id, (nlohmann::json{1, 106}));
  const std::vector<ExpectedTensor> e = expected_tensors(c);
  EXPECT_EQ(lookup(e, "model.language_model.embed_tokens_per_layer.weight")->shape, (Shape{262144, 8960}));
  EXPECT_EQ(lookup(e, "model.language_model.per_layer_model_projection.weight")->shape, (Shape{8960, 1536}));
  EXPECT_EQ(lookup(e, "model.language_model.layers.9.self_attn.q_proj.weight")->shape, (Shape{4096, 1536}));
  EXPECT_EQ(lookup(e, "model.language_model.layers.8.self_attn.o_proj.weight")->shape, (Shape{1536, 2048}));
  EXPECT_FALSE(lookup(e, "lm_head.weight")->required);
}

TEST(ArchPresets, RekaFlash3AndItsStudent) {
  const ModelConfig reka = preset_config(Arch::kLlama, "reka-flash-3");
  ASSERT_EQ(reka.num_layers(), 44);
  EXPECT_EQ(reka.layers[0], (LayerConfig{.kind = LayerKind::kFullAttention, .head_dim = 96, .num_heads = 64,
                                         .num_kv_heads = 8, .intermediate_size = 19648, .sliding_window = 0,
                                         .rope = {RopeType::kDefault, 8e6, 1.0}, .kv_shared_from = -1}));
  EXPECT_EQ(reka.vocab_size, 100352);
  EXPECT_DOUBLE_EQ(reka.rms_norm_eps, 1e-5);
  EXPECT_FALSE(reka.tie_word_embeddings);

  const ModelConfig s = preset_config(Arch::kHxa079, "reka-flash-3");
  EXPECT_EQ(s, preset_config(Arch::kHxa079, "reka-hxa079-l6"));
  EXPECT_EQ(layers_of(s, LayerKind::kNoPEAttention), (std::vector<int>{8, 15, 22, 29, 36, 43}));
  EXPECT_EQ(layers_of(s, LayerKind::kRwkv7).size(), 38u);
  EXPECT_EQ(s.rwkv.ranks, (LoraRanks{.decay = 320, .iclr = 128, .value_mix = 96, .key_mix = 96, .gate = 384}));
  EXPECT_EQ(s.rwkv.num_heads, 64);
  EXPECT_EQ(s.rwkv.head_dim, 96);
  EXPECT_EQ(s.rwkv.num_kv_heads, 8);
  EXPECT_EQ(s.layers[0].rope.theta, 8e6);
  EXPECT_EQ(s.layers[8].rope.type, RopeType::kNone);
  EXPECT_EQ(s.hidden_size, reka.hidden_size);
  EXPECT_EQ(s.intermediate_size, 19648);
}

TEST(ArchPresets, Hxa07iOfE2B) {
  const ModelConfig s = preset_config(Arch::kHxa07i, "gemma4-e2b");
  EXPECT_EQ(layers_of(s, LayerKind::kRwkv7Tica), (std::vector<int>{4, 9, 14, 19, 24, 29, 34}));
  EXPECT_EQ(layers_of(s, LayerKind::kFullAttention), std::vector<int>{});
  EXPECT_EQ(s.rwkv.num_heads, 32);
  EXPECT_EQ(s.rwkv.head_dim, 128);
  EXPECT_EQ(s.rwkv.num_kv_heads, 4);
  EXPECT_EQ(s.rwkv.ranks, (LoraRanks{.decay = 256, .iclr = 256, .gate = 256}));
  EXPECT_EQ(s.tica, (TicaConfig{.num_heads = 4, .num_kv_heads = 2, .head_dim = 128, .gate_rank = 128}));
  EXPECT_EQ(s.layers[33].kv_shared_from, 13);
  EXPECT_EQ(s.layers[34].intermediate_size, 12288);
  EXPECT_EQ(s.num_kv_shared_layers, 20);  // the teacher's value, kept for the sliding layers
}

TEST(ArchPresets, LayersShrinkDepthKeepingThePattern) {
  const ModelConfig e2b10 = preset_config(Arch::kGemma4, "gemma4-e2b", 10);
  ASSERT_EQ(e2b10.num_layers(), 10);
  EXPECT_EQ(layers_of(e2b10, LayerKind::kFullAttention), (std::vector<int>{4, 9}));
  // 20 of 35 shared scales to 6 of 10, which would leave no full layer before the first shared one: 5 it is.
  EXPECT_EQ(e2b10.num_kv_shared_layers, 5);
  std::vector<int> sources;
  for (const LayerConfig& l : e2b10.layers) sources.push_back(l.kv_shared_from);
  EXPECT_EQ(sources, (std::vector<int>{-1, -1, -1, -1, -1, 3, 3, 3, 3, 4}));
  EXPECT_EQ(e2b10.layers[5].intermediate_size, 12288);
  EXPECT_EQ(e2b10.layers[4].intermediate_size, 6144);

  EXPECT_EQ(preset_config(Arch::kGemma4, "tiny", 5).num_kv_shared_layers, 0);
  EXPECT_EQ(layers_of(preset_config(Arch::kHxa079, "reka-flash-3", 16), LayerKind::kNoPEAttention),
            (std::vector<int>{8, 15}));
  EXPECT_EQ(layers_of(preset_config(Arch::kHxa079, "tiny", 2), LayerKind::kNoPEAttention), std::vector<int>{});
  // Gemma's last layer is full whatever the pattern says (transformers forces it), so it becomes RWKV+TICA too.
  EXPECT_EQ(layers_of(preset_config(Arch::kHxa07i, "tiny", 7), LayerKind::kRwkv7Tica), (std::vector<int>{4, 6}));
  EXPECT_EQ(layers_of(preset_config(Arch::kHxa07i, "tiny", 4), LayerKind::kRwkv7Tica), (std::vector<int>{3}));
  EXPECT_EQ(layers_of(preset_config(Arch::kGemma4, "gemma4-e2b", 12), LayerKind::kFullAttention),
            (std::vector<int>{4, 9, 11}));
  EXPECT_EQ(preset_config(Arch::kLlama, "reka-flash-3", 2).num_layers(), 2);
  EXPECT_EQ(parameter_count(preset_config(Arch::kLlama, "reka-flash-3", 2), false),
            2u * 100352 * 6144 + 6144 + 2u * 447'098'880);  // embeddings, final norm, two layers
}

TEST(ArchPresets, BadNamesAndDepthsAreUsageErrors) {
  try {
    preset_config(Arch::kGemma4, "gemma4-e4b");
    ADD_FAILURE() << "no error";
  } catch (const UsageError& e) {
    EXPECT_STREQ(e.what(), "unknown preset 'gemma4-e4b' for gemma4; available: tiny, gemma4-e2b");
  }
  EXPECT_THROW(preset_config(Arch::kLlama, "tiny", 0), UsageError);
  EXPECT_THROW(preset_config(Arch::kLlama, "tiny", 5), UsageError);
  EXPECT_THROW(preset_config(Arch::kHxa07i, "gemma4-e2b", 36), UsageError);
}

}  // namespace
}  // namespace hx
