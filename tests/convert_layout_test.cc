// Layouts (parsing, presets, errors), the init math (RADLADS formulas, seeded orthogonal) and conversion plans.
#include <gtest/gtest.h>
#include <omp.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "arch/model_config.h"
#include "convert/converter.h"
#include "convert/init_rules.h"
#include "convert/layout.h"
#include "convert/plan.h"
#include "formats/cpu_isa.h"
#include "formats/errors.h"
#include "tests/support/test_support.h"

namespace hx {
namespace {

using json = nlohmann::json;

std::string layouts_dir() { return test::tests_dir() + "/../convert/layouts"; }

json read_json_file(const std::string& path) {
  std::ifstream in(path);
  std::stringstream s;
  s << in.rdbuf();
  return json::parse(s.str());
}

// The message of the error `f` throws, checking its exit code.
template <typename F>
std::string error_of(F&& f, ExitCode expected) {
  try {
    f();
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), expected) << e.what();
    return e.what();
  }
  ADD_FAILURE() << "no error thrown";
  return "";
}

TEST(ConvertLayout, EveryShippedFileIsAnEmbeddedPresetAndParses) {
  size_t files = 0;
  for (const auto& entry : std::filesystem::directory_iterator(layouts_dir())) {
    ++files;
    const std::string name = entry.path().stem().string();
    const auto preset = preset_layout(name);
    ASSERT_TRUE(preset) << name << " is shipped but not embedded";
    EXPECT_EQ(preset->json, read_json_file(entry.path().string())) << name;
    EXPECT_EQ(parse_layout(read_json_file(entry.path().string()), name).rules, preset->rules);
  }
  EXPECT_EQ(files, layout_presets().size());
  for (const char* required : {"reka-hxa079-l6", "reka-hxa079-gen2", "reka-rwkv7-pure", "gemma4-e2b-hxa07i"})
    EXPECT_TRUE(preset_layout(required)) << required;
}

TEST(ConvertLayout, PresetsCarryTheReferenceLayerPlansAndFactors) {
  EXPECT_EQ(preset_layout("reka-hxa079-l6")->attention_layers, (std::vector<int>{8, 15, 22, 29, 36, 43}));
  EXPECT_EQ(preset_layout("reka-hxa079-gen2")->attention_layers,
            (std::vector<int>{4, 8, 11, 15, 18, 22, 25, 29, 32, 36, 39, 43}));
  EXPECT_TRUE(preset_layout("reka-rwkv7-pure")->attention_layers.empty());
  const Layout gemma = *preset_layout("gemma4-e2b-hxa07i");
  EXPECT_EQ(gemma.rwkv_head_dim, 128);
  EXPECT_EQ(gemma.tica, (TicaConfig{.num_heads = 4, .num_kv_heads = 2, .head_dim = 128, .gate_rank = 128}));
  EXPECT_EQ(gemma.k_scaling, KScaling::kDecay);
  EXPECT_FALSE(gemma.value_residual || gemma.key_residual || gemma.bonus);
  const Layout reka = *preset_layout("reka-hxa079-l6");
  std::map<std::string, double> factors;
  for (const TensorRule& r : reka.rules)
    if (!r.init) factors[r.match] = r.scale;
  EXPECT_EQ(factors["self_attn.receptance.weight"], 0.5);
  EXPECT_EQ(factors["self_attn.key.weight"], 0.5);
  EXPECT_EQ(factors["self_attn.value.weight"], 0.3);
  EXPECT_EQ(factors["self_attn.output.weight"], 0.5);
  EXPECT_EQ(factors["*"], 1.0);
}

TEST(ConvertLayout, RadladsRanksReproduceThePublishedOnes) {
  // Reka Flash 3 (C = 6144): OpenMOSE/RWKV-Reka-Flash-Gen2 config; Qwen3-8B (C = 4096): hybrid-arch.md §3.1.
  EXPECT_EQ(radlads_ranks(6144), (LoraRanks{.decay = 320, .iclr = 128, .value_mix = 96, .key_mix = 96, .gate = 384}));
  EXPECT_EQ(radlads_ranks(4096), (LoraRanks{.decay = 256, .iclr = 128, .value_mix = 96, .key_mix = 96, .gate = 256}));
  EXPECT_EQ(radlads_ranks(128), (LoraRanks{.decay = 256, .iclr = 32, .value_mix = 32, .key_mix = 32, .gate = 256}));
}

TEST(ConvertLayout, GlobsAndLayerLists) {
  EXPECT_TRUE(layout_glob_match("self_attn.?2", "self_attn.w2"));
  EXPECT_FALSE(layout_glob_match("self_attn.?2", "self_attn.tica.g2"));
  EXPECT_TRUE(layout_glob_match("*", "anything.at.all"));
  EXPECT_TRUE(layout_glob_match("self_attn.tica.*_norm.weight", "self_attn.tica.q_norm.weight"));
  EXPECT_FALSE(layout_glob_match("self_attn.w1", "self_attn.w10"));
  EXPECT_EQ(parse_layer_list("43,8,15"), (std::vector<int>{8, 15, 43}));
  EXPECT_TRUE(parse_layer_list("none").empty());
  for (const char* bad : {"", "8,,9", "8,8", "-1", "x"}) error_of([&] { parse_layer_list(bad); }, ExitCode::kUsage);
}

TEST(ConvertLayout, MistakesAreNamedWithTheirKey) {
  const json good = preset_layout("tiny-hxa079")->json;
  auto broken = [&](auto edit) {
    json j = good;
    edit(j);
    return error_of([&] { parse_layout(j, "my.json"); }, ExitCode::kInvalidInput);
  };
  EXPECT_NE(broken([](json& j) {
              j["student"]["rwkv"]["k_scalling"] = "omega";
            }).find("'student.rwkv.k_scalling' is unknown"),
            std::string::npos);
  EXPECT_NE(broken([](json& j) { j["format_version"] = 2; }).find("format_version"), std::string::npos);
  EXPECT_NE(broken([](json& j) { j["teacher"]["architecture"] = "gemma4"; }).find("needs a llama teacher"),
            std::string::npos);
  EXPECT_NE(broken([](json& j) {
              j["tensors"][0]["init"] = {{"rule", "zeros"}};
            }).find("exactly one of"),
            std::string::npos);
  EXPECT_NE(broken([](json& j) { j["tensors"][9]["init"]["std"] = 1.0; }).find("takes no 'std'"), std::string::npos);
  EXPECT_NE(broken([](json& j) {
              j["student"]["attention_layers"] = {2, 2};
            }).find("attention_layers"),
            std::string::npos);
}

TEST(ConvertInit, RadladsVectorsAtKnownPoints) {
  const InitContext first{.layer = 0, .num_layers = 4, .c = 128, .head_dim = 32};
  // n = 0: linear -0.5, zigzag -1, www -6 → w0 = -6 + 0.5 - 2.5, a0 = -0.19 - 0.3 - 0.2.
  EXPECT_DOUBLE_EQ(radlads_w0(first, 0), -8.0);
  EXPECT_DOUBLE_EQ(radlads_a0(first, 0), -0.69);
  // n = C-1 = 127 (n % N = 31: zigzag +1), www = 0 on every layer.
  const InitContext last{.layer = 3, .num_layers = 4, .c = 128, .head_dim = 32};
  EXPECT_DOUBLE_EQ(radlads_w0(last, 127), 3.0);
  EXPECT_DOUBLE_EQ(radlads_a0(last, 127), -0.19 + 0.3 + 0.2);
  // Mid-stack the exponent is 1 + r01^0.3.
  const InitContext mid{.layer = 1, .num_layers = 3, .c = 128, .head_dim = 32};
  const double zz = (64 % 32 - 15.5) / 15.5;
  EXPECT_NEAR(radlads_w0(mid, 64),
              -6 + 6 * std::pow(64.0 / 127, 1 + std::pow(0.5, 0.3)) + 0.5 + 2.5 * zz * std::abs(zz), 1e-12);
}

TEST(ConvertInit, SeededOrthogonalIsOrthogonalScaledAndReproducible) {
  for (auto [rows, cols] : {std::pair<int64_t, int64_t>{16, 48}, {48, 16}, {24, 24}}) {
    const uint64_t key = seeded_stream_key(7, "w2");
    const std::vector<double> w = seeded_orthogonal(key, rows, cols, 0.1);
    EXPECT_EQ(w, seeded_orthogonal(key, rows, cols, 0.1));
    EXPECT_NE(w, seeded_orthogonal(seeded_stream_key(8, "w2"), rows, cols, 0.1));
    const int64_t k = std::min(rows, cols);
    double worst = 0;
    for (int64_t a = 0; a < k; ++a)
      for (int64_t b = 0; b < k; ++b) {
        double s = 0;  // rows < cols: W Wᵀ; else Wᵀ W
        for (int64_t i = 0; i < std::max(rows, cols); ++i)
          s += rows < cols ? w[a * cols + i] * w[b * cols + i] : w[i * cols + a] * w[i * cols + b];
        worst = std::max(worst, std::abs(s - (a == b ? 0.01 : 0.0)));
      }
    EXPECT_LT(worst, 1e-14) << rows << "x" << cols;
  }
}

TEST(ConvertInit, SeededOrthogonalAcrossPanelsIsOrthogonalAndThreadCountIndependent) {
  // 2100 x 70: three panels of the block Gram-Schmidt, and big enough for its projections to run on the team.
  constexpr int64_t kRows = 2100, kCols = 70;
  const uint64_t key = seeded_stream_key(3, "a1");
  const int threads = omp_get_max_threads();
  omp_set_num_threads(1);
  const std::vector<double> serial = seeded_orthogonal(key, kRows, kCols, 1.0);
  omp_set_num_threads(2);
  const std::vector<double> parallel = seeded_orthogonal(key, kRows, kCols, 1.0);
  omp_set_num_threads(threads);
  EXPECT_EQ(serial, parallel);
  double worst = 0;
  for (int64_t a = 0; a < kCols; ++a)
    for (int64_t b = 0; b <= a; ++b) {
      double s = 0;
      for (int64_t i = 0; i < kRows; ++i) s += serial[i * kCols + a] * serial[i * kCols + b];
      worst = std::max(worst, std::abs(s - (a == b ? 1.0 : 0.0)));
    }
  // Orthonormal to a few hundred ulps of 1: CGS2's bound is O(machine epsilon · m) at worst, far below bf16's 2^-8.
  constexpr double kOrthogonalityTolerance = 1e-13;
  EXPECT_LT(worst, kOrthogonalityTolerance);
}

TEST(ConvertInit, SeededOrthogonalIsTheSameBitsWithAndWithoutAvx512) {
  // A conversion must reproduce on any x86-64: the AVX-512 kernels run exactly the portable ones' operations.
  if (!cpu_supports(CpuIsa::kAvx512)) GTEST_SKIP() << "this CPU has no AVX-512: only the portable kernels exist";
  const uint64_t key = seeded_stream_key(5, "g2");
  for (const auto& [rows, cols] : {std::pair<int64_t, int64_t>{70, 1031}, {1031, 37}, {9, 9}}) {
    force_cpu_isa(CpuIsa::kGeneric);
    const std::vector<double> generic = seeded_orthogonal(key, rows, cols, 0.1);
    force_cpu_isa(CpuIsa::kAvx512);
    const std::vector<double> avx512 = seeded_orthogonal(key, rows, cols, 0.1);
    force_cpu_isa(std::nullopt);
    EXPECT_EQ(generic, avx512) << rows << "x" << cols;
  }
}

TEST(ConvertPlan, LlamaTinyToHxa079FollowsTheLayout) {
  const Checkpoint teacher = open_checkpoint(test::oracle_dir() + "/llama-tiny");
  const ModelConfig cfg = config_for_checkpoint(teacher);
  const ConversionPlan plan = plan_conversion(teacher, cfg, *preset_layout("tiny-hxa079"), {});
  EXPECT_EQ(rwkv_layer_indices(plan.student), (std::vector<int>{0, 1, 3}));
  std::map<std::string, const PlannedTensor*> by_name;
  for (const PlannedTensor& t : plan.tensors) by_name[t.name] = &t;
  const PlannedTensor& r = *by_name.at("model.layers.1.self_attn.receptance.weight");
  EXPECT_EQ(r.provenance, Provenance::kScale);
  EXPECT_EQ(r.scale, 0.5);
  EXPECT_EQ(r.source->name, "model.layers.1.self_attn.q_proj.weight");
  EXPECT_EQ(by_name.at("model.layers.1.self_attn.value.weight")->scale, 0.3);
  const PlannedTensor& q = *by_name.at("model.layers.2.self_attn.q_proj.weight");  // the kept GQA layer: ×1
  EXPECT_EQ(q.provenance, Provenance::kCopy);
  EXPECT_EQ(by_name.at("lm_head.weight")->source->name, "lm_head.weight");
  EXPECT_EQ(by_name.at("model.layers.0.self_attn.w2")->init.kind, InitKind::kOrthogonal);
  EXPECT_EQ(by_name.at("model.layers.0.self_attn.v0")->init.value, 0.73);
  EXPECT_EQ(plan.student.rwkv.ranks, radlads_ranks(128));
  EXPECT_TRUE(plan.dropped.empty());

  // .pth output: RWKV-LM names, same plan otherwise.
  PlanOptions pth_options;
  pth_options.format = StudentFormat::kPth;
  const ConversionPlan pth = plan_conversion(teacher, cfg, *preset_layout("tiny-hxa079"), pth_options);
  EXPECT_EQ(pth.tensors.front().name, "emb.weight");
  EXPECT_EQ(pth.tensors.size(), plan.tensors.size());

  // --attention-layers overrides the layout; a preset for a deeper teacher names the layers that do not exist.
  PlanOptions override_options;
  override_options.attention_layers = std::vector<int>{2};
  const ConversionPlan overridden = plan_conversion(teacher, cfg, *preset_layout("reka-hxa079-l6"), override_options);
  EXPECT_EQ(overridden.student.rwkv.ranks.decay, 320);
  const std::string why =
      error_of([&] { plan_conversion(teacher, cfg, *preset_layout("reka-hxa079-l6"), {}); }, ExitCode::kInvalidInput);
  EXPECT_NE(why.find("layers 8, 15, 22, 29, 36, 43 do not exist"), std::string::npos) << why;
}

TEST(ConvertPlan, Gemma4TinyKvSharedFullLayerTakesItsSourceLayersKv) {
  const Checkpoint teacher = open_checkpoint(test::oracle_dir() + "/gemma4-tiny");
  const ModelConfig cfg = config_for_checkpoint(teacher);
  ASSERT_EQ(cfg.layers[9].kv_shared_from, 4);
  const Layout layout = *preset_layout("tiny-hxa07i");
  const ConversionPlan plan = plan_conversion(teacher, cfg, layout, {});
  EXPECT_EQ(rwkv_layer_indices(plan.student), (std::vector<int>{4, 9}));
  for (const PlannedTensor& t : plan.tensors) {
    if (t.name == "model.layers.9.self_attn.key.weight") {
      EXPECT_EQ(t.source->name, "model.layers.4.self_attn.k_proj.weight");
      EXPECT_NE(t.source_note.find("shares layer 4"), std::string::npos);
    }
    if (t.name == "model.layers.9.self_attn.tica.o_proj.weight") {
      EXPECT_EQ(t.init.kind, InitKind::kZeros);
    }
    if (t.name == "model.layers.4.self_attn.r_norm.weight") {
      EXPECT_EQ(t.init.kind, InitKind::kOnes);
    }
  }
  ASSERT_EQ(plan.dropped.size(), 3u);  // q_norm 4, 9 and k_norm 4: hxa07i.md's [choice]
  // With "own" for absent K/V the missing tensor is named.
  Layout own = layout;
  own.kv_when_absent = KvSource::kOwn;
  const std::string why = error_of([&] { plan_conversion(teacher, cfg, own, {}); }, ExitCode::kInvalidInput);
  EXPECT_NE(why.find("model.layers.9.self_attn.k_proj.weight' is missing"), std::string::npos) << why;
  // The E2B preset's N = 128 does not divide the tiny full layers: the error says so and what to use.
  const std::string n128 = error_of([&] { plan_conversion(teacher, cfg, *preset_layout("gemma4-e2b-hxa07i"), {}); },
                                    ExitCode::kInvalidInput);
  EXPECT_NE(n128.find("--layout tiny"), std::string::npos) << n128;
  // A Gemma teacher cannot make a .pth (RWKV-LM names exist for hxa079 only).
  PlanOptions pth_options;
  pth_options.format = StudentFormat::kPth;
  error_of([&] { plan_conversion(teacher, cfg, layout, pth_options); }, ExitCode::kUsage);
}

}  // namespace
}  // namespace hx
