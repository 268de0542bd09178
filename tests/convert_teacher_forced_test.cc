// Teacher-forced layer checks (convert/teacher_forced.h) and the per-layer entry point they use
// (Model::forward_layer): on the oracle teachers, layer-by-layer runs reproduce forward() bit for bit, kept layers of
// converted students equal the teacher's exactly, converted layers report finite cosines, and a corrupted kept layer
// is caught and named (convert then fails verification: exit 1, nothing written).
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <functional>
#include <nlohmann/json.hpp>
#include <span>

#include "arch/model_config.h"
#include "convert/converter.h"
#include "convert/teacher_forced.h"
#include "formats/checkpoint.h"
#include "formats/errors.h"
#include "formats/safetensors.h"
#include "tests/support/test_support.h"
#include "verify/forward.h"

namespace hx::test {
namespace {

namespace fs = std::filesystem;
using json = nlohmann::json;

const std::vector<int64_t> kTokens = {2, 17, 300, 5, 44, 9, 128, 3, 77, 1};

// Every layer of `path` run one by one from forward()'s embedding equals forward()'s hidden states, bit for bit,
// and leaves the state where forward() leaves it (a following decode step gives the same logits).
void expect_layer_by_layer_equals_forward(const std::string& path) {
  const Model model(open_checkpoint(path));
  ForwardOptions options;
  options.collect_hidden = true;
  options.collect_ple_inputs = true;
  ForwardState reference_state = model.new_state();
  const ForwardResult reference = model.forward(kTokens, reference_state, options);

  ForwardState state = model.new_state();
  std::vector<float> h = reference.hidden[0];
  for (int layer = 0; layer < model.num_layers(); ++layer) {
    LayerTrace trace;
    h = model.forward_layer(layer, {h, reference.ple_inputs}, state, options, &trace);
    const auto& expected = layer + 1 < model.num_layers() ? reference.hidden[layer + 1] : reference.final_norm_input;
    ASSERT_EQ(h, expected) << path << " layer " << layer;
    EXPECT_EQ(trace.mixer_output.size(), h.size()) << layer;
  }
  EXPECT_EQ(state.position(), reference_state.position());
  const std::vector<int64_t> next = {11};
  const ForwardResult a = model.forward(next, reference_state), b = model.forward(next, state);
  EXPECT_EQ(a.logits, b.logits) << path;
}

TEST(ForwardLayer, LayerByLayerIsForwardOnEveryOracleArchitecture) {
  expect_layer_by_layer_equals_forward(oracle_dir() + "/llama-tiny");
  expect_layer_by_layer_equals_forward(oracle_dir() + "/gemma4-tiny");
  expect_layer_by_layer_equals_forward(oracle_dir() +
                                       "/hxa079-tiny/model.pth");  // v_first/k_first carried between calls
}

TEST(ForwardLayer, RefusesLayersOutOfOrderBadWidthsAndMissingPerLayerInputs) {
  const Model llama(open_checkpoint(oracle_dir() + "/llama-tiny"));
  ForwardState state = llama.new_state();
  const std::vector<float> h(static_cast<size_t>(2 * llama.hidden_size()), 0.5f);
  EXPECT_THROW(llama.forward_layer(1, {h, {}}, state), UsageError);  // layer 0 is due
  const std::vector<float> ragged(static_cast<size_t>(llama.hidden_size() + 1), 0.5f);
  EXPECT_THROW(llama.forward_layer(0, {ragged, {}}, state), UsageError);
  llama.forward_layer(0, {h, {}}, state);
  EXPECT_THROW(llama.forward(std::vector<int64_t>{1}, state), UsageError);  // mid-step

  const Model gemma(open_checkpoint(oracle_dir() + "/gemma4-tiny"));
  ForwardState gemma_state = gemma.new_state();
  const std::vector<float> g(static_cast<size_t>(gemma.hidden_size()), 0.5f);
  EXPECT_THROW(gemma.forward_layer(0, {g, {}}, gemma_state), UsageError);  // PLE inputs missing
}

struct Converted {
  TempDir tmp;
  ConversionPlan plan;
  std::string student;
};

// A student converted without the built-in verification, and the plan that made it.
void convert_without_checks(const std::string& teacher_path, Arch to, Converted& c) {
  ConvertOptions options;
  options.teacher = teacher_path;
  options.to = to;
  options.layout = "tiny";
  options.out = c.tmp.file("student");
  options.verify = false;
  ASSERT_TRUE(convert_checkpoint(options).committed);
  const Checkpoint teacher = open_checkpoint(teacher_path);
  c.plan = plan_conversion(teacher, config_for_checkpoint(teacher), resolve_layout("tiny", to), options.plan);
  c.student = options.out;
}

// The teacher-forced check of `student_path` against its teacher, as convert runs it.
CheckResult teacher_forced(const std::string& teacher_path, const std::string& student_path, const ConversionPlan& plan,
                           std::vector<LayerComparison>* layers) {
  const Checkpoint teacher_file = open_checkpoint(teacher_path);
  const Model teacher(teacher_file, plan.teacher), student(open_checkpoint(student_path));
  ForwardOptions options;
  options.collect_hidden = true;
  options.collect_ple_inputs = true;
  ForwardState state = teacher.new_state();
  const ForwardResult run = teacher.forward(kTokens, state, options);
  return check_teacher_forced(student, teacher, plan, run, options, layers);
}

TEST(TeacherForced, GemmaStudentKeepsEverySlidingLayerBitForBit) {
  Converted c;
  convert_without_checks(oracle_dir() + "/gemma4-tiny", Arch::kHxa07i, c);
  std::vector<LayerComparison> layers;
  const CheckResult r = teacher_forced(oracle_dir() + "/gemma4-tiny", c.student, c.plan, &layers);
  EXPECT_EQ(r.status, CheckStatus::kPassed) << r.summary;
  ASSERT_EQ(layers.size(), 10u);
  int kept = 0;
  for (const LayerComparison& l : layers) {
    const bool full = l.layer == 4 || l.layer == 9;  // the oracle's full layers become RWKV-7 + TICA
    EXPECT_EQ(l.role, full ? LayerRole::kConverted : LayerRole::kKept) << l.layer;
    EXPECT_TRUE(std::isfinite(l.mixer_cosine) && std::isfinite(l.output_cosine)) << l.layer;
    EXPECT_LE(std::abs(l.mixer_cosine), 1.0 + 1e-12) << l.layer;
    if (l.role == LayerRole::kKept) {
      ++kept;
      EXPECT_EQ(l.max_abs_diff, 0.0) << l.layer;
      EXPECT_EQ(l.exact_positions, static_cast<int64_t>(kTokens.size()));
      EXPECT_EQ(l.output_cosine, 1.0) << l.layer;
      EXPECT_EQ(l.tica_max_abs, -1.0) << l.layer;  // no TICA in a sliding layer
    } else {
      EXPECT_LT(l.output_cosine, 1.0) << l.layer;  // a converted layer is a different layer
      EXPECT_TRUE(l.tica_must_be_zero) << l.layer;
      EXPECT_EQ(l.tica_max_abs, 0.0) << l.layer;  // a fresh TICA adds exactly 0
    }
  }
  EXPECT_EQ(kept, 8);  // including the KV-shared sliding layers 6–8, which read kept layer 5's cache
}

TEST(TeacherForced, LlamaStudentNoPELayerIsExactAtPositionZeroAndConvertedCosinesAreFinite) {
  Converted c;
  convert_without_checks(oracle_dir() + "/llama-tiny", Arch::kHxa079, c);
  std::vector<LayerComparison> layers;
  const CheckResult r = teacher_forced(oracle_dir() + "/llama-tiny", c.student, c.plan, &layers);
  EXPECT_EQ(r.status, CheckStatus::kPassed) << r.summary;
  ASSERT_EQ(layers.size(), 4u);
  for (const LayerComparison& l : layers) {
    EXPECT_TRUE(std::isfinite(l.mixer_cosine)) << l.layer;
    if (l.layer == 2) {  // the kept GQA layer, now NoPE
      EXPECT_EQ(l.role, LayerRole::kNoPE);
      EXPECT_EQ(l.exact_positions, 1);
      EXPECT_EQ(l.max_abs_diff, 0.0);
      EXPECT_LT(l.output_cosine, 1.0);  // later positions do differ: RoPE is gone
    } else {
      EXPECT_EQ(l.role, LayerRole::kConverted) << l.layer;
    }
  }
}

// Rewrites `folder`'s single safetensors shard with `edit` applied to the bf16 values of tensor `name`.
void corrupt_tensor(const std::string& folder, const std::string& name,
                    const std::function<void(std::span<uint16_t>)>& edit) {
  std::vector<std::byte> rewritten;
  std::string shard;
  {
    const Checkpoint student = open_checkpoint(folder);
    ASSERT_EQ(student.files.size(), 1u);
    shard = student.files[0];
    std::vector<NamedTensor> tensors = student.tensors;
    int edited = 0;
    for (NamedTensor& t : tensors) {
      if (t.name != name) continue;
      ASSERT_EQ(t.view.dtype, DType::kBF16);
      const auto bytes = t.view.contiguous_bytes();
      std::vector<std::byte> values(bytes.begin(), bytes.end());
      edit(std::span<uint16_t>(reinterpret_cast<uint16_t*>(values.data()), values.size() / 2));
      t.view = TensorView::contiguous(t.view.dtype, t.view.shape, Storage::owned(std::move(values)));
      ++edited;
    }
    ASSERT_EQ(edited, 1) << name;
    const TempDir out;
    write_safetensors(out.file("w.safetensors"), specs_of(tensors), source_of(tensors), {});
    rewritten = read_file_bytes(out.file("w.safetensors"));
  }
  write_file_bytes(shard, rewritten);  // same tensors, same order, same size: the index stays right
}

TEST(TeacherForced, CorruptedKeptLayerIsCaughtAndNamed) {
  Converted c;
  convert_without_checks(oracle_dir() + "/gemma4-tiny", Arch::kHxa07i, c);
  // One bf16 step (the lowest mantissa bit) in the first normal weight of kept sliding layer 6's MLP.
  corrupt_tensor(c.student, "model.layers.6.mlp.down_proj.weight", [](std::span<uint16_t> w) {
    for (uint16_t& v : w)
      if ((v & 0x7f80) != 0 && (v & 0x7f80) != 0x7f80) {
        v ^= 1;
        return;
      }
  });
  std::vector<LayerComparison> layers;
  const CheckResult r = teacher_forced(oracle_dir() + "/gemma4-tiny", c.student, c.plan, &layers);
  ASSERT_EQ(r.status, CheckStatus::kFailed);
  ASSERT_FALSE(r.problems.empty());
  EXPECT_NE(r.problems[0].find("layer 6 (kept"), std::string::npos) << r.problems[0];
  for (const LayerComparison& l : layers) EXPECT_EQ(l.passed, l.layer != 6) << l.layer;
  // Teacher forcing isolates the layer: layers after 6 still get the teacher's own input and pass.
  EXPECT_GT(layers[6].max_abs_diff, 0.0);
}

TEST(TeacherForced, TicaThatAddsSomethingInAFreshStudentIsCaught) {
  Converted c;
  convert_without_checks(oracle_dir() + "/gemma4-tiny", Arch::kHxa07i, c);
  // One weight of layer 9's zero-initialised TICA output projection becomes 1.0 (bf16 0x3f80).
  corrupt_tensor(c.student, "model.layers.9.self_attn.tica.o_proj.weight",
                 [](std::span<uint16_t> w) { w[0] = 0x3f80; });
  std::vector<LayerComparison> layers;
  const CheckResult r = teacher_forced(oracle_dir() + "/gemma4-tiny", c.student, c.plan, &layers);
  ASSERT_EQ(r.status, CheckStatus::kFailed);
  EXPECT_NE(r.problems.at(0).find("layer 9"), std::string::npos) << r.problems[0];
  EXPECT_NE(r.problems[0].find("TICA adds up to"), std::string::npos) << r.problems[0];
  EXPECT_GT(layers.at(9).tica_max_abs, 0.0);
  EXPECT_EQ(layers.at(4).tica_max_abs, 0.0);
}

TEST(TeacherForced, ConvertReportsTheLayersInTextJsonAndManifest) {
  TempDir tmp;
  const std::string out = tmp.file("student");
  const CommandResult r = run_hxforge("convert " + shell_quote(oracle_dir() + "/gemma4-tiny") +
                                      " --to hxa07i --layout tiny --json --out " + shell_quote(out));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  const json report = json::parse(r.output);
  const json& layers = report["verification"]["teacher_forced_layers"];
  ASSERT_EQ(layers.size(), 10u);
  EXPECT_EQ(layers[5]["role"], "kept");
  EXPECT_EQ(layers[5]["max_abs_diff"], 0.0);
  EXPECT_EQ(layers[4]["role"], "converted");
  bool check_found = false;
  for (const json& c : report["verification"]["checks"])
    if (c["name"] == "teacher_forced") check_found = c["status"] == "passed";
  EXPECT_TRUE(check_found) << report["verification"].dump();
  std::ifstream in(out + "/manifest.json");
  const json manifest = json::parse(in);
  EXPECT_EQ(manifest["verification"]["teacher_forced_layers"], layers);

  const CommandResult text = run_hxforge("convert " + shell_quote(oracle_dir() + "/llama-tiny") +
                                         " --to hxa079 --layout tiny --out " + shell_quote(tmp.file("text")));
  ASSERT_EQ(text.exit_code, 0) << text.output;
  EXPECT_NE(text.output.find("teacher-forced layers"), std::string::npos) << text.output;
  EXPECT_NE(text.output.find("[ok  ] teacher_forced"), std::string::npos) << text.output;
}

}  // namespace
}  // namespace hx::test
