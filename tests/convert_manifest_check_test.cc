// check_against_manifest (convert/manifest_check.h, `hxforge verify --manifest`): a converted student verifies
// against its own manifest, also after a repack to .pth; a changed tensor, a dtype/shape lie, a missing or extra
// tensor and a changed probe logit are each caught and named; missing or garbled manifests are invalid input.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "convert/converter.h"
#include "convert/manifest_check.h"
#include "formats/errors.h"
#include "formats/safetensors.h"
#include "tests/support/test_support.h"

namespace hx::test {
namespace {

namespace fs = std::filesystem;
using json = nlohmann::json;

// llama-tiny converted to hxa079 (with the built-in verification, so the manifest holds a probe).
class ManifestCheckTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    tmp_ = new TempDir();
    ConvertOptions options;
    options.teacher = oracle_dir() + "/llama-tiny";
    options.to = Arch::kHxa079;
    options.layout = "tiny";
    options.out = tmp_->file("student");
    ASSERT_TRUE(convert_checkpoint(options).committed);
  }
  static void TearDownTestSuite() { delete tmp_; }
  static std::string student() { return tmp_->file("student"); }
  static std::string manifest() { return tmp_->file("student/manifest.json"); }
  static TempDir* tmp_;
};
TempDir* ManifestCheckTest::tmp_ = nullptr;

TEST_F(ManifestCheckTest, StudentVerifiesAgainstItsManifestHashesThenProbe) {
  const Manifest m = read_manifest(manifest());
  const ManifestCheck r = check_against_manifest(open_checkpoint(student()), m);
  EXPECT_TRUE(r.passed()) << r.to_json().dump(2);
  EXPECT_EQ(r.tensors_checked, m.tensors.size());
  EXPECT_GT(r.tensors_checked, 30u);
  EXPECT_EQ(r.tensors_mismatched, 0u);
  EXPECT_TRUE(r.probe_ran);
  EXPECT_EQ(r.probe_positions, static_cast<int64_t>(m.probe_tokens.size()));
  EXPECT_LE(r.probe_max_logit_diff, kProbeLogitTolerance);
  const json j = r.to_json();
  EXPECT_EQ(j["hashes"]["checked"], m.tensors.size());
  EXPECT_EQ(j["hashes"]["mismatched"], 0);
}

TEST_F(ManifestCheckTest, RepackedToPthStillVerifies) {
  // cli.md's sha256 is of the C-order bytes, so the same tensors verify in another container.
  TempDir tmp;
  const std::string pth = tmp.file("model.pth");
  const CommandResult r = run_hxforge("repack " + shell_quote(student()) + " " + shell_quote(pth));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  fs::copy_file(student() + "/config.json", tmp.file("config.json"));
  const ManifestCheck c = check_against_manifest(open_checkpoint(pth), read_manifest(manifest()));
  EXPECT_TRUE(c.passed()) << c.to_json().dump(2);
}

TEST_F(ManifestCheckTest, ChangedMissingAndExtraTensorsAreNamed) {
  TempDir tmp;
  const Checkpoint original = open_checkpoint(student());
  std::vector<NamedTensor> tensors = original.tensors;
  const std::string changed = "model.layers.2.self_attn.o_proj.weight";
  bool found = false;
  for (NamedTensor& t : tensors)
    if (t.name == changed) {
      const auto bytes = t.view.contiguous_bytes();
      std::vector<std::byte> copy(bytes.begin(), bytes.end());
      copy[10] ^= std::byte{1};
      t.view = TensorView::contiguous(t.view.dtype, t.view.shape, Storage::owned(std::move(copy)));
      found = true;
    }
  ASSERT_TRUE(found);
  SafetensorsWriteOptions options;
  options.max_shard_bytes = UINT64_MAX;
  write_safetensors(tmp.file("changed"), specs_of(tensors), source_of(tensors), options);
  fs::copy_file(student() + "/config.json", tmp.file("changed/config.json"));
  const ManifestCheck r = check_against_manifest(open_checkpoint(tmp.file("changed")), read_manifest(manifest()));
  EXPECT_FALSE(r.passed());
  ASSERT_EQ(r.tensors_mismatched, 1u);
  EXPECT_NE(r.tensor_problems[0].find(changed), std::string::npos) << r.tensor_problems[0];
  EXPECT_NE(r.tensor_problems[0].find("sha256"), std::string::npos) << r.tensor_problems[0];
  EXPECT_FALSE(r.probe_ran);  // the probe is not run on a checkpoint that already differs

  // The manifest lies about one tensor's shape and lists one the checkpoint lacks.
  json m = read_json(manifest());
  m["tensors"][0]["shape"] = json::array({1, 2, 3});
  const std::string first = m["tensors"][0]["name"];
  json ghost = m["tensors"][1];
  ghost["name"] = "model.layers.99.ghost.weight";
  m["tensors"].push_back(ghost);
  // ... and omits one the checkpoint holds.
  const std::string omitted = m["tensors"][2]["name"];
  m["tensors"].erase(2);
  write_json(tmp.file("lying.json"), m);
  const ManifestCheck lies = check_against_manifest(open_checkpoint(student()), read_manifest(tmp.file("lying.json")));
  ASSERT_EQ(lies.tensors_mismatched, 3u) << lies.to_json().dump(2);
  const std::string all = lies.to_json()["problems"].dump();
  EXPECT_NE(all.find(first + "': the manifest says"), std::string::npos) << all;
  EXPECT_NE(all.find("model.layers.99.ghost.weight' is in the manifest but missing"), std::string::npos) << all;
  EXPECT_NE(all.find(omitted + "' in"), std::string::npos) << all;
}

TEST_F(ManifestCheckTest, ProbeLogitOutsideToleranceIsCaught) {
  TempDir tmp;
  json m = read_json(manifest());
  json& top = m["probe"]["positions"][3]["top"][0];
  top["logit"] = top["logit"].get<double>() + 0.5;
  write_json(tmp.file("m.json"), m);
  const ManifestCheck r = check_against_manifest(open_checkpoint(student()), read_manifest(tmp.file("m.json")));
  ASSERT_EQ(r.probe_problems.size(), 1u) << r.to_json().dump(2);
  EXPECT_NE(r.probe_problems[0].find("probe position 3"), std::string::npos) << r.probe_problems[0];
  EXPECT_EQ(r.tensors_mismatched, 0u);

  json ids = read_json(manifest());
  std::swap(ids["probe"]["positions"][1]["top"][0], ids["probe"]["positions"][1]["top"][1]);
  write_json(tmp.file("ids.json"), ids);
  const ManifestCheck swapped = check_against_manifest(open_checkpoint(student()), read_manifest(tmp.file("ids.json")));
  ASSERT_FALSE(swapped.probe_problems.empty());
  EXPECT_NE(swapped.probe_problems[0].find("top-"), std::string::npos) << swapped.probe_problems[0];
}

TEST_F(ManifestCheckTest, MissingOrGarbledManifestIsInvalidInputNamingTheFile) {
  TempDir tmp;
  const auto expect_format_error = [](const std::string& path, const std::string& needle) {
    try {
      read_manifest(path);
      ADD_FAILURE() << path << " was accepted";
    } catch (const FormatError& e) {
      EXPECT_NE(std::string(e.what()).find(path), std::string::npos) << e.what();
      EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
    }
  };
  expect_format_error(tmp.file("absent.json"), "missing");
  { std::ofstream(tmp.file("garbled.json")) << "{\"format_version\": 1, \"tensors\": ["; }
  expect_format_error(tmp.file("garbled.json"), "not a JSON object");
  json m = read_json(manifest());
  m["tensors"][4]["sha256"] = "xyz";
  write_json(tmp.file("bad-hash.json"), m);
  expect_format_error(tmp.file("bad-hash.json"), "tensors[4]");
  m = read_json(manifest());
  m["probe"]["positions"].erase(0);
  write_json(tmp.file("short-probe.json"), m);
  expect_format_error(tmp.file("short-probe.json"), "one entry per probe token");
  m = read_json(manifest());
  m.erase("tensors");
  write_json(tmp.file("no-tensors.json"), m);
  expect_format_error(tmp.file("no-tensors.json"), "'tensors'");
}

}  // namespace
}  // namespace hx::test
