// The forward pass on synthetic checkpoints of every architecture (hxforge synth presets), on every stored float
// dtype, and on broken checkpoints; hxa07i — which has no oracle — against an independent float64 PyTorch
// transcription of ../shared/spec/hxa07i.md (tests/python/forward_reference.py, run at test time).
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "arch/arch.h"
#include "arch/presets.h"
#include "arch/synth.h"
#include "formats/errors.h"
#include "tests/forward_test_helpers.h"
#include "verify/forward.h"
#include "verify/forward_plan.h"

namespace hx {
namespace {

using test::compare_logits;
using test::describe;
using test::oracle_dir;
using test::TempDir;

// The f32 forward pass against a float64 transcription: the project's f32 gate (oracle README: "a C++ fp32 forward:
// max|Δ| ≤ 1e-3"); the README's own f32-vs-f64 transcription gap is 4.6e-6.
constexpr double kF32VsFloat64Tolerance = 1e-3;
// Dropping TICA must move the logits by far more than the tolerance above, or the comparison proves nothing about
// TICA: 100× the tolerance.
constexpr double kTicaMattersAtLeast = 100 * kF32VsFloat64Tolerance;

std::vector<int64_t> some_tokens(int64_t count, int64_t vocab) {
  std::vector<int64_t> ids;
  for (int64_t i = 0; i < count; ++i) ids.push_back((i * 131 + 7) % vocab);
  return ids;
}

std::string synth(const TempDir& dir, Arch arch, uint64_t seed) {
  const std::string out = dir.file(std::string(arch_name(arch)));
  SynthOptions options;
  options.seed = seed;
  write_synthetic_checkpoint(preset_config(arch, "tiny"), out, options);
  return out;
}

class SynthModels : public ::testing::TestWithParam<Arch> {};

TEST_P(SynthModels, TinyPresetRunsEndToEndWithFiniteLogits) {
  TempDir dir;
  const Checkpoint checkpoint = open_checkpoint(synth(dir, GetParam(), 5));
  const Model model(checkpoint);
  EXPECT_EQ(model.architecture(), arch_name(GetParam()));
  const std::vector<int64_t> tokens = some_tokens(20, model.vocab_size());
  ForwardState state = model.new_state();
  ForwardOptions options;
  options.collect_hidden = true;
  const ForwardResult r = model.forward(tokens, state, options);
  ASSERT_EQ(r.logits.size(), tokens.size() * static_cast<size_t>(model.vocab_size()));
  EXPECT_EQ(r.hidden.size(), static_cast<size_t>(model.num_layers() + 1));
  size_t finite = 0;
  double spread = 0;
  for (float v : r.logits) {
    finite += std::isfinite(v);
    spread = std::max(spread, std::fabs(double(v) - r.logits[0]));
  }
  EXPECT_EQ(finite, r.logits.size());
  EXPECT_GT(spread, 0.1);  // not a constant output: the tokens reached the head
  // Weights are views of the mapped file; only small vectors are copied (a few % of the bytes at most here).
  EXPECT_GT(model.mapped_weight_bytes(), 0u);
  EXPECT_LT(model.owned_weight_bytes(), model.mapped_weight_bytes() / 10);
  // The context matters: the same token after a different one gets different logits.
  ForwardState again = model.new_state();
  const ForwardResult twice = model.forward(std::vector<int64_t>{3, 7, 3}, again);
  EXPECT_GT(test::max_abs_difference(twice.logits_row(0), twice.logits_row(2)), 1e-3);
}

INSTANTIATE_TEST_SUITE_P(EveryArchitecture, SynthModels,
                         ::testing::Values(Arch::kGemma4, Arch::kLlama, Arch::kHxa079, Arch::kHxa07i),
                         [](const ::testing::TestParamInfo<Arch>& param) { return std::string(arch_name(param.param)); });

TEST(SynthModels, Hxa079PthWithRwkvLmNamesRunsLikeItsHfNamedTwin) {
  // A synthetic hxa079 .pth (RWKV-LM names, config inferred from shapes) and the same tensors renamed to the HF
  // layout (RWKV-Infer HFMode names, config.json): the architecture table lists both names of every tensor in the
  // same order, which gives the renaming.
  TempDir dir;
  SynthOptions options;
  options.seed = 9;
  const ModelConfig hf = preset_config(Arch::kHxa079, "tiny");
  write_synthetic_checkpoint(hf, dir.file("m.pth"), options);
  ModelConfig lm = hf;
  lm.naming = TensorNaming::kRwkvLm;
  lm.tensor_prefix = "";
  const std::vector<ExpectedTensor> lm_names = expected_tensors(lm), hf_names = expected_tensors(hf);
  ASSERT_EQ(lm_names.size(), hf_names.size());
  const Checkpoint pth = open_checkpoint(dir.file("m.pth"));
  std::vector<TensorSpec> specs;
  std::vector<const NamedTensor*> sources;
  for (size_t i = 0; i < lm_names.size(); ++i) {
    if (const NamedTensor* t = pth.find(lm_names[i].name)) {
      specs.push_back({hf_names[i].name, t->view.dtype, t->view.shape});
      sources.push_back(t);
    }
  }
  ASSERT_EQ(specs.size(), pth.tensors.size());
  std::filesystem::create_directories(dir.file("hf"));
  std::ofstream(dir.file("hf/config.json")) << to_config_json(hf).dump(1);
  write_safetensors(dir.file("hf/model.safetensors"), specs, [&](size_t i, const ByteSink& sink) {
    sink(std::span<const std::byte>(to_contiguous_bytes(sources[i]->view)));
  });

  const Model from_pth(pth);
  const Model from_hf(open_checkpoint(dir.file("hf")));
  const std::vector<int64_t> tokens = some_tokens(12, from_pth.vocab_size());
  ForwardState a = from_pth.new_state(), b = from_hf.new_state();
  EXPECT_EQ(from_pth.forward(tokens, a).logits, from_hf.forward(tokens, b).logits);
}

TEST(ForwardHxa07i, MatchesAFloat64TranscriptionOfTheSpecAndTicaMatters) {
  if (!test::python_torch_available()) GTEST_SKIP() << "torch is not importable by " HXFORGE_PYTHON;
  TempDir dir;
  const std::string model_dir = synth(dir, Arch::kHxa07i, 21);
  const Model model(open_checkpoint(model_dir));
  const std::vector<int64_t> tokens = some_tokens(14, model.vocab_size());
  ForwardState state = model.new_state();
  const ForwardResult ours = model.forward(tokens, state);

  std::string csv;
  for (int64_t id : tokens) csv += (csv.empty() ? "" : ",") + std::to_string(id);
  const auto r = test::run_command(std::string(HXFORGE_PYTHON) + " " +
                                   test::shell_quote(test::tests_dir() + "/python/forward_reference.py") + " " +
                                   test::shell_quote(model_dir) + " " + csv + " " + test::shell_quote(dir.file("ref")));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  const auto read_f64 = [&](const std::string& name) {
    const std::vector<std::byte> bytes = test::read_file_bytes(dir.file("ref/" + name));
    std::vector<double> f64(bytes.size() / sizeof(double));
    std::memcpy(f64.data(), bytes.data(), f64.size() * sizeof(double));
    return std::vector<float>(f64.begin(), f64.end());
  };
  const std::vector<float> reference = read_f64("logits.bin"), without_tica = read_f64("logits_without_tica.bin");
  ASSERT_EQ(reference.size(), ours.logits.size());
  const auto a = compare_logits(reference, ours.logits, model.vocab_size());
  std::printf("  hxa07i vs float64 transcription: %s\n", describe(a).c_str());
  EXPECT_LE(a.max_abs, kF32VsFloat64Tolerance) << describe(a);
  EXPECT_EQ(a.top1, 1.0) << describe(a);
  const double tica_effect = test::max_abs_difference(reference, without_tica);
  std::printf("  dropping TICA moves the reference logits by %.3g\n", tica_effect);
  EXPECT_GT(tica_effect, kTicaMattersAtLeast);
}

// ---- stored dtypes ----

// The oracle llama-tiny with every tensor re-encoded: values rounded through `via` (BF16 → F16 / F8 is lossy) and
// stored as `stored`. Storing the same rounded values as F32 must give the same logits bit for bit.
void write_llama_copy(const std::string& out, DType via, DType stored) {
  const std::string src = oracle_dir() + "/llama-tiny";
  const Checkpoint in = open_checkpoint(src);
  std::filesystem::create_directories(out);
  std::filesystem::copy_file(src + "/config.json", out + "/config.json");
  std::vector<TensorSpec> specs;
  std::vector<std::vector<std::byte>> data;
  for (const NamedTensor& t : in.tensors) {
    const std::vector<std::byte> bytes = to_contiguous_bytes(t.view);
    std::vector<float> values(t.view.numel());
    convert_to_f32(t.view.dtype, bytes.data(), values.data(), values.size());
    std::vector<std::byte> encoded(values.size() * dtype_element_size(stored));
    for (size_t i = 0; i < values.size(); ++i) {
      float v = values[i];
      if (via == DType::kF16) v = f16_to_f32(f32_to_f16(v));
      if (via == DType::kF8_E4M3) v = minifloat8_decode(minifloat_encode_fast(v, kFormatE4M3FN, Overflow::kSaturate), kFormatE4M3FN);
      if (stored == DType::kF32) {
        std::memcpy(encoded.data() + 4 * i, &v, 4);
      } else if (stored == DType::kF16) {
        const uint16_t h = f32_to_f16(v);
        std::memcpy(encoded.data() + 2 * i, &h, 2);
      } else {
        encoded[i] = static_cast<std::byte>(minifloat_encode_fast(v, kFormatE4M3FN, Overflow::kSaturate));
      }
    }
    specs.push_back({t.name, stored, t.view.shape});
    data.push_back(std::move(encoded));
  }
  write_safetensors(out + "/model.safetensors", specs,
                    [&](size_t i, const ByteSink& sink) { sink(std::span<const std::byte>(data[i])); });
}

std::vector<float> llama_logits(const std::string& path) {
  const Model model(open_checkpoint(path));
  ForwardState state = model.new_state();
  return model.forward(some_tokens(16, model.vocab_size()), state).logits;
}

TEST(ForwardDtypes, F32F16AndF8WeightsRunFromTheFileAndMatchTheirF32Twins) {
  TempDir dir;
  // F32 copy of the bf16 checkpoint: exact, so it must equal the bf16 run itself.
  write_llama_copy(dir.file("f32"), DType::kBF16, DType::kF32);
  EXPECT_EQ(llama_logits(dir.file("f32")), llama_logits(oracle_dir() + "/llama-tiny"));
  for (DType lossy : {DType::kF16, DType::kF8_E4M3}) {
    const std::string name(dtype_name(lossy));
    write_llama_copy(dir.file(name), lossy, lossy);
    write_llama_copy(dir.file(name + "-as-f32"), lossy, DType::kF32);
    EXPECT_EQ(llama_logits(dir.file(name)), llama_logits(dir.file(name + "-as-f32"))) << name;
  }
}

// ---- broken checkpoints ----

// llama-tiny with one tensor dropped or replaced by one of another shape.
std::string broken_llama(const TempDir& dir, const std::string& victim, bool drop) {
  const std::string src = oracle_dir() + "/llama-tiny";
  const Checkpoint in = open_checkpoint(src);
  const std::string out = dir.file("broken");
  std::filesystem::create_directories(out);
  std::filesystem::copy_file(src + "/config.json", out + "/config.json");
  std::vector<TensorSpec> specs;
  std::vector<std::vector<std::byte>> data;
  for (const NamedTensor& t : in.tensors) {
    if (t.name == victim && drop) continue;
    std::vector<std::byte> bytes = to_contiguous_bytes(t.view);
    Shape shape = t.view.shape;
    if (t.name == victim) {  // keep the first half of the rows
      shape[0] /= 2;
      bytes.resize(bytes.size() / 2);
    }
    specs.push_back({t.name, t.view.dtype, shape});
    data.push_back(std::move(bytes));
  }
  write_safetensors(out + "/model.safetensors", specs,
                    [&](size_t i, const ByteSink& sink) { sink(std::span<const std::byte>(data[i])); });
  return out;
}

TEST(ForwardErrors, MissingTensorIsAFormatErrorNamingIt) {
  TempDir dir;
  const std::string path = broken_llama(dir, "model.layers.2.mlp.up_proj.weight", true);
  try {
    const Model model(open_checkpoint(path));
    FAIL() << "a checkpoint without up_proj of layer 2 loaded";
  } catch (const FormatError& e) {
    EXPECT_NE(std::string(e.what()).find("'model.layers.2.mlp.up_proj.weight' is required but missing"), std::string::npos)
        << e.what();
  }
}

TEST(ForwardErrors, WrongShapeIsAFormatErrorWithExpectedAndFound) {
  TempDir dir;
  const std::string path = broken_llama(dir, "model.layers.1.self_attn.k_proj.weight", false);
  try {
    const Model model(open_checkpoint(path));
    FAIL() << "a checkpoint with a half-height k_proj loaded";
  } catch (const FormatError& e) {
    EXPECT_NE(std::string(e.what()).find("'model.layers.1.self_attn.k_proj.weight' has wrong shape; expected [64, 128], "
                                         "got [32, 128]"),
              std::string::npos)
        << e.what();
  }
}

TEST(ForwardErrors, TokenOutsideTheVocabularyNamesPositionAndValue) {
  const Model model(open_checkpoint(oracle_dir() + "/llama-tiny"));
  ForwardState state = model.new_state();
  try {
    model.forward(std::vector<int64_t>{1, 2, 512}, state);
    FAIL() << "token 512 of a 512-token vocabulary was accepted";
  } catch (const FormatError& e) {
    EXPECT_NE(std::string(e.what()).find("token id 512 at position 2"), std::string::npos) << e.what();
  }
  EXPECT_EQ(state.position(), 0);  // nothing was run
}

TEST(ForwardPlan, GemmaSharedLayersReadTheirSourceAndIgnoreTheirOwnKv) {
  const ModelPlan plan = plan_model(open_checkpoint(oracle_dir() + "/gemma4-tiny"));
  ASSERT_EQ(plan.num_layers(), 10);
  const int expected_source[10] = {-1, -1, -1, -1, -1, -1, 5, 5, 5, 4};
  for (int i = 0; i < 10; ++i) {
    const AttentionPlan& a = plan.layers[static_cast<size_t>(i)].attention;
    EXPECT_EQ(a.kv_source, expected_source[i]) << "layer " << i;
    EXPECT_EQ(a.k.used(), expected_source[i] < 0) << "layer " << i;
    EXPECT_EQ(a.scale, 1.0f);
    EXPECT_TRUE(a.v_norm);
    EXPECT_EQ(a.rope.proportional, i % 5 == 4) << "layer " << i;
    EXPECT_EQ(a.sliding_window, i % 5 == 4 ? 0 : 8) << "layer " << i;
  }
  EXPECT_EQ(plan.layers[6].intermediate_size, 256);  // double-wide on the KV-shared layers
  EXPECT_EQ(plan.head.name, plan.embedding.name);      // tied
}

}  // namespace
}  // namespace hx
