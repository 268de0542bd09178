// The tensor tables: every preset through every row without weights, the quantization policy column, parameter
// counts of the teachers, and check_against_table's reports.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <set>

#include "arch/arch.h"
#include "arch/presets.h"
#include "tests/arch_test_helpers.h"

namespace hx {
namespace {

using test::checkpoint_of;
using test::zero_tensor;

// Every preset at full depth and shrunk, plus variants switching on the features no preset uses, so that every
// row of every table is evaluated at least once.
std::vector<std::pair<std::string, ModelConfig>> all_configs() {
  std::vector<std::pair<std::string, ModelConfig>> out;
  for (const PresetInfo& p : list_presets()) {
    const int depth = p.build(std::nullopt).num_layers();
    const std::optional<int> none, one = 1, five = std::min(depth, 5);
    for (std::optional<int> layers : {none, one, five})
      out.emplace_back(std::string(arch_name(p.arch)) + "/" + std::string(p.name) +
                           (layers ? "/" + std::to_string(*layers) : ""),
                       p.build(layers));
  }
  ModelConfig llama = preset_config(Arch::kLlama, "tiny");
  llama.attention_bias = true;
  out.emplace_back("llama/tiny+bias", llama);
  ModelConfig hxa079 = preset_config(Arch::kHxa079, "tiny");
  hxa079.attention_bias = true;
  hxa079.rwkv.qk_norm = true;
  out.emplace_back("hxa079/tiny+bias+qknorm", hxa079);
  hxa079.naming = TensorNaming::kRwkvLm;
  hxa079.tensor_prefix = "";
  out.emplace_back("hxa079/tiny+bias+qknorm/pth", hxa079);
  ModelConfig hxa07i = preset_config(Arch::kHxa07i, "tiny");
  hxa07i.rwkv.value_residual = hxa07i.rwkv.key_residual = hxa07i.rwkv.bonus = true;
  hxa07i.rwkv.ranks.value_mix = hxa07i.rwkv.ranks.key_mix = 8;
  out.emplace_back("hxa07i/tiny+residuals+bonus", hxa07i);
  return out;
}

TEST(ArchTables, RowsFollowTheSchema) {
  for (Arch arch : {Arch::kGemma4, Arch::kLlama, Arch::kHxa079, Arch::kHxa07i}) {
    for (const auto& table : tensor_rows(arch)) {
      for (const TensorRow& row : table) {
        const bool per_layer = row.layers != kModelLevel;
        EXPECT_EQ(per_layer, row.name.find("{L}") != std::string_view::npos) << row.name;
        if (!row.rwkv_lm_name.empty()) {
          EXPECT_EQ(per_layer, row.rwkv_lm_name.find("{L}") != std::string_view::npos) << row.rwkv_lm_name;
        }
        if (arch == Arch::kHxa079) {
          EXPECT_FALSE(row.rwkv_lm_name.empty()) << row.name << " has no RWKV-LM name";
        }
        EXPECT_EQ(row.layers & ~kEveryLayer, 0u) << row.name;
      }
    }
  }
}

TEST(ArchTables, EveryPresetResolvesEveryRow) {
  std::set<const TensorRow*> used;
  for (const auto& [label, cfg] : all_configs()) {
    SCOPED_TRACE(label);
    const std::vector<ExpectedTensor> expected = expected_tensors(cfg);
    ASSERT_FALSE(expected.empty());
    std::set<std::string> names;
    for (const ExpectedTensor& e : expected) {
      used.insert(e.row);
      EXPECT_TRUE(names.insert(e.name).second) << "duplicate name " << e.name;
      EXPECT_EQ(e.name.find('{'), std::string::npos) << e.name;
      EXPECT_TRUE(std::all_of(e.shape.begin(), e.shape.end(), [](int64_t d) { return d > 0; }))
          << e.name << " " << shape_to_string(e.shape);
      const size_t rank = std::count_if(e.row->shape.begin(), e.row->shape.end(), [](Dim d) { return d != Dim::kEnd; });
      EXPECT_EQ(e.shape.size(), rank) << e.name;
      EXPECT_EQ(e.name.rfind(cfg.tensor_prefix, 0) == 0 || e.name == "lm_head.weight" || cfg.tensor_prefix.empty(),
                true)
          << e.name;
      if (e.required) {
        const ExpectedTensor* found = lookup(expected, e.name);
        ASSERT_NE(found, nullptr) << e.name;
        EXPECT_EQ(found->shape, e.shape);
      }
    }
    // A checkpoint holding exactly the required tensors matches its own table.
    const Checkpoint ckpt = checkpoint_of(expected, /*include_optional*/ false, /*max_bytes_each*/ 0);
    EXPECT_EQ(check_against_table(ckpt, cfg), std::vector<std::string>{});
  }
  for (Arch arch : {Arch::kGemma4, Arch::kLlama, Arch::kHxa079, Arch::kHxa07i})
    for (const auto& table : tensor_rows(arch))
      for (const TensorRow& row : table) EXPECT_TRUE(used.count(&row)) << "row never used: " << row.name;
}

TEST(ArchTables, QuantizationPolicyFollowsTheRole) {
  for (const auto& [label, cfg] : all_configs()) {
    for (const ExpectedTensor& e : expected_tensors(cfg)) {
      switch (e.role) {
        case TensorRole::kAttentionQ: case TensorRole::kAttentionK: case TensorRole::kAttentionV:
        case TensorRole::kAttentionO: case TensorRole::kRwkvR: case TensorRole::kRwkvK: case TensorRole::kRwkvV:
        case TensorRole::kRwkvO: case TensorRole::kMlpGate: case TensorRole::kMlpUp: case TensorRole::kMlpDown:
        case TensorRole::kTicaQ: case TensorRole::kTicaK: case TensorRole::kTicaV: case TensorRole::kTicaO:
          EXPECT_EQ(e.quant, kMatmulToInt4) << label << " " << e.name;
          EXPECT_EQ(e.shape.size(), 2u) << e.name;
          break;
        case TensorRole::kHead:
          EXPECT_EQ(e.quant, kHeadToInt8) << label << " " << e.name;
          break;
        default:  // embeddings, PLE, norms, LoRA, vectors, bonus, biases, scalars
          EXPECT_EQ(e.quant, kNeverQuantize) << label << " " << e.name << " (" << role_name(e.role) << ")";
      }
    }
  }
  EXPECT_TRUE(kHeadToInt8.allows(MinPrecision::kInt8));
  EXPECT_FALSE(kHeadToInt8.allows(MinPrecision::kFp8));
  EXPECT_FALSE(kHeadToInt8.allows(MinPrecision::kInt4));
  EXPECT_TRUE(kMatmulToInt4.allows(MinPrecision::kInt4));
  EXPECT_TRUE(kMatmulToInt4.allows(MinPrecision::kFp6));
  EXPECT_FALSE(kNeverQuantize.allows(MinPrecision::kInt8));
  EXPECT_EQ(precision_from_scheme("fp5"), MinPrecision::kFp5);
  EXPECT_EQ(precision_from_scheme("nf4"), std::nullopt);
}

TEST(ArchTables, RekaFlash3HasTheDocumentedParameterCount) {
  const ModelConfig reka = preset_config(Arch::kLlama, "reka-flash-3");
  EXPECT_EQ(parameter_count(reka, false), 20'905'482'240u);  // teachers.md §4
  EXPECT_EQ(parameter_count(reka, true), 20'905'482'240u);
}

TEST(ArchTables, Gemma4E2BTextStackMatchesTheDocumentedSizes) {
  const ModelConfig e2b = preset_config(Arch::kGemma4, "gemma4-e2b");
  uint64_t embedding = 0, ple_table = 0, ple_matmuls = 0, tied_head = 0, rest = 0, rest_required = 0;
  for (const ExpectedTensor& e : expected_tensors(e2b)) {
    uint64_t n = 0;
    ASSERT_TRUE(checked_numel(e.shape, &n));
    if (e.role == TensorRole::kEmbedding) embedding += n;
    else if (e.role == TensorRole::kPerLayerEmbedding) ple_table += n;
    else if (e.role == TensorRole::kPerLayerProjection) ple_matmuls += n;
    else if (e.role == TensorRole::kHead) tied_head += e.required ? 0 : n;  // tied: not stored
    else {
      rest += n;
      if (e.required) rest_required += n;
    }
  }
  // teachers.md §3, bf16 sizes: embed_tokens 0.750 GiB, embed_tokens_per_layer 4.375 GiB, PLE projection/gates
  // 0.077 GiB, "rest of the LM" 3.455 GiB = 1.8546 B params with the shared layers' unused k/v (3.419 GiB without).
  const auto gib = [](uint64_t params) { return std::round(params * 2.0 / (1 << 30) * 1000) / 1000; };
  EXPECT_EQ(embedding, 262144u * 1536);
  EXPECT_EQ(ple_table, 262144u * 35 * 256);
  EXPECT_DOUBLE_EQ(gib(embedding), 0.750);
  EXPECT_DOUBLE_EQ(gib(ple_table), 4.375);
  EXPECT_DOUBLE_EQ(gib(ple_matmuls), 0.077);
  EXPECT_DOUBLE_EQ(gib(rest), 3.455);
  EXPECT_DOUBLE_EQ(gib(rest_required), 3.419);
  EXPECT_DOUBLE_EQ(std::floor(rest / 1e5) / 1e4, 1.8546);  // 1,854,698,787: the doc truncates
  EXPECT_EQ(tied_head, embedding);
  EXPECT_EQ(parameter_count(e2b, true), embedding + ple_table + ple_matmuls + rest + tied_head);
  EXPECT_EQ(parameter_count(e2b, false), embedding + ple_table + ple_matmuls + rest_required);
}

TEST(ArchTables, ChecksReportMissingUnexpectedWrongShapeAndDtype) {
  const ModelConfig llama = preset_config(Arch::kLlama, "tiny");
  Checkpoint ckpt = checkpoint_of(expected_tensors(llama), false);
  ASSERT_EQ(check_against_table(ckpt, llama), std::vector<std::string>{});

  auto find = [&](const std::string& name) {
    return std::find_if(ckpt.tensors.begin(), ckpt.tensors.end(), [&](const NamedTensor& t) { return t.name == name; });
  };
  *find("model.layers.3.mlp.up_proj.weight") = zero_tensor("model.layers.3.mlp.up_proj.weight", {352, 64});
  *find("model.norm.weight") = zero_tensor("model.norm.weight", {128}, DType::kI32);
  ckpt.tensors.erase(find("lm_head.weight"));
  ckpt.tensors.push_back(zero_tensor("model.layers.0.self_attn.rotary_emb.inv_freq", {16}, DType::kF32));
  ckpt.tensors.push_back(zero_tensor("model.layers.0.input_layernorm.weight", {128}));

  const TableReport report = check_tensors(ckpt, llama);
  EXPECT_EQ(report.problems,
            (std::vector<std::string>{
                "tensor 'model.norm.weight' has wrong dtype; expected a float dtype for a norm, got I32",
                "tensor 'model.layers.3.mlp.up_proj.weight' has wrong shape; expected [352, 128], got [352, 64]",
                "tensor 'model.layers.0.self_attn.rotary_emb.inv_freq' is unexpected; the llama tensor table has no "
                "such name",
                "tensor 'model.layers.0.input_layernorm.weight' appears more than once",
                "tensor 'lm_head.weight' is required but missing; expected shape [512, 128]"}));
  EXPECT_EQ(report.matched, ckpt.tensors.size() - 4);
}

TEST(ArchTables, OptionalTensorsAreAcceptedButNotRequired) {
  const ModelConfig gemma = preset_config(Arch::kGemma4, "tiny");
  const std::vector<ExpectedTensor> expected = expected_tensors(gemma);
  // Shared layers 6-9 may carry unused k_proj/v_proj/k_norm; the tied head may be stored anyway.
  std::vector<std::string> optional;
  for (const ExpectedTensor& e : expected)
    if (!e.required) optional.push_back(e.name);
  EXPECT_EQ(optional.size(), 4u * 3 + 1);
  EXPECT_NE(std::find(optional.begin(), optional.end(), "model.layers.9.self_attn.k_proj.weight"), optional.end());
  EXPECT_NE(std::find(optional.begin(), optional.end(), "lm_head.weight"), optional.end());
  EXPECT_EQ(check_against_table(checkpoint_of(expected, true), gemma), std::vector<std::string>{});
  EXPECT_EQ(check_against_table(checkpoint_of(expected, false), gemma), std::vector<std::string>{});
  // Not optional on a layer that computes its own K/V.
  const ExpectedTensor* own = lookup(expected, "model.layers.5.self_attn.k_proj.weight");
  ASSERT_NE(own, nullptr);
  EXPECT_TRUE(own->required);
  EXPECT_EQ(own->shape, (Shape{32, 64}));
  EXPECT_EQ(own->role, TensorRole::kAttentionK);
  EXPECT_EQ(lookup(expected, "model.layers.10.self_attn.k_proj.weight"), nullptr);
}

TEST(ArchTables, MultimodalTowersAreSkippedNotUnexpected) {
  const ModelConfig e2b_like = preset_config(Arch::kGemma4, "gemma4-e2b", 5);
  ASSERT_EQ(e2b_like.tensor_prefix, "model.language_model.");
  Checkpoint ckpt = checkpoint_of(expected_tensors(e2b_like), false, 0);
  const size_t text_tensors = ckpt.tensors.size();
  for (const char* name : {"model.vision_tower.encoder.layers.0.self_attn.q_proj.linear.weight",
                           "model.audio_tower.conformer.0.ffw_layer_start.ffw_layer_1.weight",
                           "model.embed_vision.embedding_projection.weight",
                           "model.embed_audio.embedding_projection.weight"})
    ckpt.tensors.push_back(zero_tensor(name, {4, 4}));
  const TableReport report = check_tensors(ckpt, e2b_like);
  EXPECT_EQ(report.problems, std::vector<std::string>{});
  EXPECT_EQ(report.skipped.size(), 4u);
  EXPECT_EQ(report.matched, text_tensors);
  // A Llama checkpoint has no towers to skip: the same names are unexpected there.
  Checkpoint llama = checkpoint_of(expected_tensors(preset_config(Arch::kLlama, "tiny")), false);
  llama.tensors.push_back(zero_tensor("model.vision_tower.x", {1}));
  EXPECT_EQ(check_tensors(llama, preset_config(Arch::kLlama, "tiny")).problems.size(), 1u);
}

TEST(ArchTables, DetectsTheArchitecture) {
  for (const auto& [label, cfg] : all_configs()) {
    const Checkpoint ckpt = checkpoint_of(expected_tensors(cfg), false, 0);
    EXPECT_EQ(detect_architecture(ckpt, nullptr), cfg.arch) << label;
    const nlohmann::json config = to_config_json(cfg);
    EXPECT_EQ(detect_architecture(Checkpoint{}, &config), cfg.arch) << label;
  }
  EXPECT_EQ(detect_architecture(Checkpoint{}, nullptr), std::nullopt);
  const nlohmann::json unknown = {{"model_type", "bert"}};
  EXPECT_EQ(detect_architecture(Checkpoint{}, &unknown), std::nullopt);
}

TEST(ArchTables, HybridShapesFollowTheSpecs) {
  // hxa07i.md, "Tensor names": a converted E2B full layer.
  const std::vector<ExpectedTensor> e = expected_tensors(preset_config(Arch::kHxa07i, "gemma4-e2b"));
  const std::string p = "model.language_model.layers.4.self_attn.";
  const std::vector<std::pair<std::string, Shape>> spec = {
      {"receptance.weight", {4096, 1536}}, {"key.weight", {512, 1536}}, {"value.weight", {512, 1536}},
      {"output.weight", {1536, 4096}}, {"r_norm.weight", {128}}, {"k_norm.weight", {128}}, {"w0", {4096}},
      {"w1", {1536, 256}}, {"w2", {256, 4096}}, {"a0", {4096}}, {"a1", {1536, 256}}, {"a2", {256, 4096}},
      {"g1", {1536, 256}}, {"g2", {256, 4096}}, {"tica.q_proj.weight", {512, 1536}},
      {"tica.k_proj.weight", {256, 1536}}, {"tica.v_proj.weight", {256, 1536}}, {"tica.o_proj.weight", {1536, 512}},
      {"tica.q_norm.weight", {128}}, {"tica.k_norm.weight", {128}}, {"tica.g1", {1536, 128}}, {"tica.g2", {128, 512}}};
  size_t slot_tensors = 0;
  for (const ExpectedTensor& t : e)
    if (t.layer == 4 && t.name.find(".self_attn.") != std::string::npos) ++slot_tensors;
  EXPECT_EQ(slot_tensors, spec.size());
  for (const auto& [suffix, shape] : spec) {
    const ExpectedTensor* t = lookup(e, p + suffix);
    ASSERT_NE(t, nullptr) << suffix;
    EXPECT_EQ(t->shape, shape) << suffix;
    EXPECT_TRUE(t->required) << suffix;
  }
  // The sliding layers keep Gemma's attention; the converted layer keeps its double-wide MLP.
  EXPECT_NE(lookup(e, "model.language_model.layers.3.self_attn.q_proj.weight"), nullptr);
  EXPECT_EQ(lookup(e, "model.language_model.layers.4.self_attn.q_proj.weight"), nullptr);
  EXPECT_EQ(lookup(e, "model.language_model.layers.19.mlp.up_proj.weight")->shape, (Shape{12288, 1536}));

  // hybrid-arch.md §3.1: the .pth names and shapes of a Reka hxa079 RWKV layer and GQA layer.
  ModelConfig reka = preset_config(Arch::kHxa079, "reka-flash-3");
  reka.naming = TensorNaming::kRwkvLm;
  reka.tensor_prefix = "";
  const std::vector<ExpectedTensor> r = expected_tensors(reka);
  EXPECT_EQ(lookup(r, "blocks.0.att.w1")->shape, (Shape{6144, 320}));
  EXPECT_EQ(lookup(r, "blocks.0.att.a2")->shape, (Shape{128, 6144}));
  EXPECT_EQ(lookup(r, "blocks.0.att.v0")->shape, (Shape{1, 1, 768}));
  EXPECT_EQ(lookup(r, "blocks.0.att.g1")->shape, (Shape{6144, 384}));
  EXPECT_EQ(lookup(r, "blocks.0.att.r_k")->shape, (Shape{64, 96}));
  EXPECT_EQ(lookup(r, "blocks.8.att.k_proj.weight")->shape, (Shape{768, 6144}));
  EXPECT_EQ(lookup(r, "blocks.8.att.receptance.weight"), nullptr);
  EXPECT_EQ(lookup(r, "blocks.43.ffn.down.weight")->shape, (Shape{6144, 19648}));
  EXPECT_EQ(lookup(r, "head.weight")->quant, kHeadToInt8);
}

}  // namespace
}  // namespace hx
