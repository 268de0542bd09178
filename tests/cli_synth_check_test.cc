// hxforge synth and inspect --check: every architecture's tiny preset is valid against its own table, synthesis is
// deterministic, realistic weights have the statistics they claim, and a wrong tensor is caught.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <nlohmann/json.hpp>

#include "arch/presets.h"
#include "arch/synth.h"
#include "formats/checkpoint.h"
#include "formats/safetensors.h"
#include "tests/support/test_support.h"

namespace hx {
namespace {

using test::run_hxforge;
using test::shell_quote;
using test::TempDir;

nlohmann::json inspect_json(const std::string& path, const std::string& extra) {
  const auto r = run_hxforge("inspect " + shell_quote(path) + " --json " + extra);
  EXPECT_EQ(r.exit_code, 0) << r.output;
  return nlohmann::json::parse(r.output);
}

class SynthEveryArch : public ::testing::TestWithParam<const char*> {};

TEST_P(SynthEveryArch, TinyPresetPassesItsOwnTableAndIsDetected) {
  TempDir dir;
  const auto out = dir.file("m");
  auto r = run_hxforge(std::string("synth --quiet --arch ") + GetParam() + " --preset tiny --seed 7 --out " + shell_quote(out));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  const auto j = inspect_json(out, "--check");
  EXPECT_EQ(j["architecture"], GetParam());
  EXPECT_TRUE(j["problems"].empty()) << j["problems"].dump();
}

TEST_P(SynthEveryArch, SameSeedSameBytesOtherSeedOtherBytes) {
  TempDir dir;
  for (const char* name : {"a", "b"})
    ASSERT_EQ(run_hxforge(std::string("synth --quiet --arch ") + GetParam() + " --seed 3 --out " + shell_quote(dir.file(name))).exit_code, 0);
  ASSERT_EQ(run_hxforge(std::string("synth --quiet --arch ") + GetParam() + " --seed 4 --out " + shell_quote(dir.file("c"))).exit_code, 0);
  const auto a = inspect_json(dir.file("a"), "--hash"), b = inspect_json(dir.file("b"), "--hash"),
             c = inspect_json(dir.file("c"), "--hash");
  EXPECT_EQ(a["tensors"], b["tensors"]);
  EXPECT_NE(a["tensors"], c["tensors"]);
}

INSTANTIATE_TEST_SUITE_P(AllArchitectures, SynthEveryArch, ::testing::Values("gemma4", "llama", "hxa079", "hxa07i"));

TEST(SynthHxa079, PthUsesRwkvLmNamesAndPassesCheck) {
  TempDir dir;
  const auto out = dir.file("m.pth");
  ASSERT_EQ(run_hxforge("synth --quiet --arch hxa079 --out " + shell_quote(out)).exit_code, 0);
  const auto j = inspect_json(out, "--check");
  EXPECT_EQ(j["format"], "pth");
  EXPECT_EQ(j["architecture"], "hxa079");
  EXPECT_TRUE(j["problems"].empty()) << j["problems"].dump();
  bool has_r_k = false;
  for (const auto& t : j["tensors"]) has_r_k |= t["name"] == "blocks.0.att.r_k";
  EXPECT_TRUE(has_r_k);
}

TEST(SynthRealistic, HeavyTailsOutlierColumnsAndRowSpread) {
  const ModelConfig cfg = preset_config(Arch::kLlama, "tiny");
  ExpectedTensor t;
  t.name = "model.layers.0.mlp.down_proj.weight";
  t.role = TensorRole::kMlpDown;
  t.shape = {128, 1024};
  const InitRule rule = init_rule(t, cfg);
  ASSERT_TRUE(rule.matrix);
  const int64_t rows = 128, cols = 1024;
  std::vector<double> col_abs(cols, 0), row_rms(rows, 0);
  double m2 = 0, m4 = 0;
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t c = 0; c < cols; ++c) {
      const double v = synthetic_value(rule, 1, t.name, static_cast<uint64_t>(r * cols + c), cols, true);
      col_abs[c] += std::fabs(v);
      row_rms[r] += v * v;
      m2 += v * v;
      m4 += v * v * v * v;
    }
  std::vector<double> sorted = col_abs;
  std::sort(sorted.begin(), sorted.end());
  const double median = sorted[cols / 2];
  const auto outliers = std::count_if(col_abs.begin(), col_abs.end(), [&](double a) { return a > 10 * median; });
  EXPECT_GE(outliers, 1);             // ~cols/256 outlier channels ~20× larger
  EXPECT_LE(outliers, cols / 64);
  const double n = static_cast<double>(rows * cols);
  EXPECT_GT((m4 / n) / std::pow(m2 / n, 2), 6.0);  // kurtosis well above a normal's 3
  std::sort(row_rms.begin(), row_rms.end());
  EXPECT_GT(row_rms[rows * 9 / 10] / row_rms[rows / 10], 1.5);  // per-row scale spread
  // Plain weights stay normal: kurtosis near 3.
  double p2 = 0, p4 = 0;
  for (uint64_t i = 0; i < 100000; ++i) {
    const double v = synthetic_value(rule, 1, t.name, i, cols, false);
    p2 += v * v;
    p4 += v * v * v * v;
  }
  EXPECT_NEAR((p4 / 1e5) / std::pow(p2 / 1e5, 2), 3.0, 0.2);
}

TEST(InspectCheck, WrongShapeAndMissingTensorAreNamedWithExitStatus3) {
  TempDir dir;
  const auto good = dir.file("good");
  ASSERT_EQ(run_hxforge("synth --quiet --arch llama --out " + shell_quote(good)).exit_code, 0);
  const Checkpoint ckpt = open_checkpoint(good);
  // Rewrite it with one tensor's shape changed and another left out.
  std::vector<NamedTensor> kept;
  std::vector<TensorSpec> specs;
  for (const auto& t : ckpt.tensors) {
    if (t.name == "model.layers.1.mlp.gate_proj.weight") continue;
    kept.push_back(t);
    specs.push_back({t.name, t.view.dtype, t.view.shape});
    if (t.name == "model.layers.0.mlp.up_proj.weight") specs.back().shape = {t.view.shape[1], t.view.shape[0]};
  }
  const auto bad = dir.file("bad");
  SafetensorsWriteOptions options;
  options.max_shard_bytes = UINT64_MAX;
  write_safetensors(bad, specs, source_of(kept), options);
  std::filesystem::copy_file(good + "/config.json", bad + "/config.json");
  const auto r = run_hxforge("inspect --check " + shell_quote(bad));
  EXPECT_EQ(r.exit_code, 3) << r.output;
  EXPECT_NE(r.output.find("tensor 'model.layers.0.mlp.up_proj.weight' has wrong shape; expected [352, 128], got [128, 352]"),
            std::string::npos) << r.output;
  EXPECT_NE(r.output.find("model.layers.1.mlp.gate_proj.weight"), std::string::npos) << r.output;
}

}  // namespace
}  // namespace hx
