// The hxforge CLI as a user runs it: inspect and repack on the oracle fixtures, exit statuses, atomic outputs.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>

#include "formats/checkpoint.h"
#include "formats/safetensors.h"
#include "tests/support/test_support.h"

namespace hx {
namespace {

using test::oracle_dir;
using test::run_hxforge;
using test::shell_quote;
using test::TempDir;

nlohmann::json inspect_json(const std::string& path, const std::string& extra = "") {
  const auto r = run_hxforge("inspect " + shell_quote(path) + " --json " + extra);
  EXPECT_EQ(r.exit_code, 0) << r.output;
  return nlohmann::json::parse(r.output);
}

std::map<std::string, std::string> hashes_of(const nlohmann::json& inspected) {
  std::map<std::string, std::string> out;
  for (const auto& t : inspected["tensors"]) out[t["name"].get<std::string>()] = t["sha256"].get<std::string>();
  return out;
}

TEST(CliInspect, SafetensorsJsonHasContractFields) {
  const auto j = inspect_json(oracle_dir() + "/llama-tiny/model.safetensors");
  EXPECT_EQ(j["format"], "safetensors");
  EXPECT_TRUE(j.contains("architecture"));
  EXPECT_TRUE(j["problems"].empty());
  bool found_head = false;
  for (const auto& t : j["tensors"]) {
    EXPECT_TRUE(t.contains("name") && t.contains("dtype") && t.contains("shape") && t.contains("nbytes"));
    if (t["name"] == "lm_head.weight") {
      found_head = true;
      EXPECT_EQ(t["dtype"], "BF16");
      EXPECT_EQ(t["shape"], nlohmann::json({512, 128}));
      EXPECT_EQ(t["nbytes"], 512 * 128 * 2);
    }
  }
  EXPECT_TRUE(found_head);
}

TEST(CliInspect, ShardedFolderHashesEqualSingleFile) {
  const auto single = hashes_of(inspect_json(oracle_dir() + "/gemma4-tiny/model.safetensors", "--hash"));
  const auto sharded = hashes_of(inspect_json(oracle_dir() + "/gemma4-tiny/sharded", "--hash"));
  EXPECT_FALSE(single.empty());
  EXPECT_EQ(single, sharded);
}

TEST(CliInspect, PthHashesEqualTorchManifest) {
  std::ifstream f(oracle_dir() + "/pth/manifest.json");
  const auto manifest = nlohmann::json::parse(f);
  for (const char* file : {"dtypes.pth", "views.pth", "nested.pth", "state_dict.pth", "legacy.pth"}) {
    const auto j = inspect_json(oracle_dir() + "/pth/" + file, "--hash");
    EXPECT_EQ(j["format"], std::string(file) == "legacy.pth" ? "pth-legacy" : "pth") << file;
    const auto ours = hashes_of(j);
    const auto& expected = manifest["files"][file]["tensors"];
    ASSERT_EQ(ours.size(), expected.size()) << file;
    for (const auto& t : expected)
      EXPECT_EQ(ours.at(t["path"].get<std::string>()), t["sha256_contiguous"].get<std::string>())
          << file << " " << t["path"];
  }
}

TEST(CliInspect, MaliciousPickleIsRefusedNamingTheGlobal) {
  TempDir dir;
  const auto marker = dir.file("pwned");
  const auto r = run_hxforge("inspect " + shell_quote(oracle_dir() + "/pth/malicious.pth"));
  EXPECT_EQ(r.exit_code, 3) << r.output;
  EXPECT_NE(r.output.find("os.system"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("malicious.pth"), std::string::npos) << r.output;
  EXPECT_FALSE(std::filesystem::exists(marker));
}

TEST(CliInspect, CheckReportsEveryProblemAndExits3) {
  TempDir dir;
  // Two tensors that overlap, one of an unknown dtype: both must be reported.
  const std::string header =
      R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F99","shape":[1],"data_offsets":[4,8]}})";
  std::string bytes(8, '\0');
  const uint64_t n = header.size();
  std::memcpy(bytes.data(), &n, 8);
  bytes += header + std::string(8, '\0');
  std::ofstream(dir.file("bad.safetensors"), std::ios::binary) << bytes;
  const auto r = run_hxforge("inspect --check " + shell_quote(dir.file("bad.safetensors")));
  EXPECT_EQ(r.exit_code, 3) << r.output;
  EXPECT_NE(r.output.find("F99"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("'b'"), std::string::npos) << r.output;
  const auto j = run_hxforge("inspect --check --json " + shell_quote(dir.file("bad.safetensors")));
  EXPECT_EQ(j.exit_code, 3);
  EXPECT_GE(nlohmann::json::parse(j.output)["problems"].size(), 2u) << j.output;
}

TEST(CliExitStatus, UsageAndIoErrors) {
  EXPECT_EQ(run_hxforge("no-such-command").exit_code, 2);
  EXPECT_EQ(run_hxforge("inspect").exit_code, 2);  // missing PATH
  EXPECT_EQ(run_hxforge("inspect x --no-such-option").exit_code, 2);
  EXPECT_EQ(run_hxforge("inspect /nonexistent/model.safetensors").exit_code, 4);
  const auto help = run_hxforge("repack --help");
  EXPECT_EQ(help.exit_code, 0);
  EXPECT_NE(help.output.find("example:"), std::string::npos);
}

TEST(CliRepack, PthToSafetensorsToPthKeepsEveryTensorByteIdentical) {
  for (const char* file : {"dtypes.pth", "views.pth", "nested.pth", "state_dict.pth", "legacy.pth"}) {
    TempDir dir;
    const std::string src = oracle_dir() + "/pth/" + file;
    const auto st = dir.file("x.safetensors"), back = dir.file("x.pth");
    auto r = run_hxforge("repack --quiet " + shell_quote(src) + " " + shell_quote(st));
    ASSERT_EQ(r.exit_code, 0) << file << ": " << r.output;
    r = run_hxforge("repack --quiet " + shell_quote(st) + " " + shell_quote(back));
    ASSERT_EQ(r.exit_code, 0) << file << ": " << r.output;
    const auto h0 = hashes_of(inspect_json(src, "--hash"));
    EXPECT_EQ(h0, hashes_of(inspect_json(st, "--hash"))) << file;
    EXPECT_EQ(h0, hashes_of(inspect_json(back, "--hash"))) << file;
  }
}

TEST(CliRepack, ShardedFolderOutputWithIndexAndConfig) {
  TempDir dir;
  const auto out = dir.file("model");
  const auto r = run_hxforge("repack --quiet " + shell_quote(oracle_dir() + "/llama-tiny/model.safetensors") + " " +
                             shell_quote(out) + " --shard-size 600KB");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_TRUE(std::filesystem::exists(out + "/model.safetensors.index.json"));
  EXPECT_TRUE(std::filesystem::exists(out + "/model-00001-of-00003.safetensors"));
  EXPECT_TRUE(std::filesystem::exists(out + "/config.json"));
  EXPECT_EQ(hashes_of(inspect_json(out, "--hash")),
            hashes_of(inspect_json(oracle_dir() + "/llama-tiny/model.safetensors", "--hash")));
}

TEST(CliRepack, ExistingOutputUntouchedWithoutForce) {
  TempDir dir;
  const auto out = dir.file("out.safetensors");
  std::ofstream(out) << "keep me";
  const auto src = shell_quote(oracle_dir() + "/pth/views.pth");
  EXPECT_EQ(run_hxforge("repack --quiet " + src + " " + shell_quote(out)).exit_code, 2);
  std::ifstream f(out);
  std::string content((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
  EXPECT_EQ(content, "keep me");
  EXPECT_EQ(run_hxforge("repack --quiet --force " + src + " " + shell_quote(out)).exit_code, 0);
}

TEST(CliRepack, UnsupportedDtypeForTargetFailsWithNothingWritten) {
  TempDir dir;
  const auto src = dir.file("f6.safetensors");
  std::vector<std::byte> payload(3);  // four F6_E3M2 values
  const std::vector<TensorSpec> specs = {{"fp6", DType::kF6_E3M2, {4}}};
  write_safetensors(src, specs, [&](size_t, const ByteSink& sink) { sink(payload); }, {});
  const auto out = dir.file("f6.pth");
  const auto r = run_hxforge("repack --quiet " + shell_quote(src) + " " + shell_quote(out));
  EXPECT_EQ(r.exit_code, 3) << r.output;
  EXPECT_NE(r.output.find("fp6"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("F6_E3M2"), std::string::npos) << r.output;
  for (const auto& entry : std::filesystem::directory_iterator(dir.path()))
    EXPECT_EQ(entry.path().filename(), "f6.safetensors") << "left behind: " << entry.path();
}

}  // namespace
}  // namespace hx
