// `hxforge batch`: a job file on a tiny synthetic teacher (convert → quantize, a failing job in the middle),
// the exit status = the worst job's, the summary table and JSON; --resume skipping done jobs and redoing a job
// whose output was tampered with or whose definition changed; --shard I/N partitioning the list; invalid job files
// refused with exit 3 naming the file and the field.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <set>

#include "tests/support/test_support.h"

namespace hx::test {
namespace {

namespace fs = std::filesystem;
using json = nlohmann::json;

// Status per job id from a --json summary.
std::map<std::string, std::string> statuses(const json& summary) {
  std::map<std::string, std::string> out;
  for (const json& j : summary["jobs"]) out[j["id"]] = j["status"];
  return out;
}

class BatchTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    tmp_ = new TempDir();
    const CommandResult r =
        run_hxforge("synth --arch llama --preset tiny --seed 7 -q --out " + shell_quote(tmp_->file("teacher")));
    ASSERT_EQ(r.exit_code, 0) << r.output;
  }
  static void TearDownTestSuite() { delete tmp_; }
  static std::string teacher() { return tmp_->file("teacher"); }
  static TempDir* tmp_;

  // convert → (a job that fails: its input does not exist) → int8 → fp8 → verify int8 against the student.
  // convert's own checks are convert_*_test's business: --no-verify keeps this quick under the sanitizer build.
  static json pipeline(const TempDir& dir) {
    return {{"jobs",
             {{{"id", "student"},
               {"kind", "convert"},
               {"input", teacher()},
               {"output", dir.file("student")},
               {"options", {{"to", "hxa079"}, {"layout", "tiny"}, {"attention-layers", "2"}, {"no-verify", true}}}},
              {{"id", "broken"},
               {"kind", "quantize"},
               {"input", dir.file("no-such-model")},
               {"output", dir.file("broken")},
               {"options", {{"scheme", "int8"}}}},
              {{"id", "q8"},
               {"kind", "quantize"},
               {"input", dir.file("student")},
               {"output", dir.file("q8")},
               {"options", {{"scheme", "int8"}}}},
              {{"id", "fp8"},
               {"kind", "quantize"},
               {"input", dir.file("student")},
               {"output", dir.file("fp8")},
               {"options", {{"scheme", "fp8"}, {"dry-run", false}}}},
              {{"id", "check-q8"},
               {"kind", "verify"},
               {"input", dir.file("q8")},
               {"output", dir.file("q8.verify.json")},
               {"options", {{"against", dir.file("student")}, {"num-tokens", 16}, {"max-kld", 1.0}}}}}}};
  }
};
TempDir* BatchTest::tmp_ = nullptr;

TEST_F(BatchTest, RunsEveryJobPastAFailureAndReportsTheWorstExit) {
  TempDir dir;
  write_json(dir.file("jobs.json"), pipeline(dir));
  const CommandResult r = run_hxforge("batch " + shell_quote(dir.file("jobs.json")));
  EXPECT_NE(r.exit_code, 0) << r.output;
  EXPECT_GE(r.exit_code, 3) << r.output;  // the missing input: invalid input or I/O error
  EXPECT_NE(r.output.find("4 ok, 1 failed, 0 skipped"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("no-such-model"), std::string::npos) << r.output;  // the failing job's error, named
  EXPECT_TRUE(fs::exists(dir.file("student/manifest.json")));
  EXPECT_TRUE(fs::exists(dir.file("q8")));
  EXPECT_TRUE(fs::exists(dir.file("fp8")));
  EXPECT_EQ(read_json(dir.file("q8.verify.json"))["passed"], true);

  const json summary = read_json(dir.file("jobs.json.state/summary.json"));
  EXPECT_EQ(summary["exit_code"], r.exit_code);
  EXPECT_EQ(statuses(summary),
            (std::map<std::string, std::string>{
                {"student", "ok"}, {"broken", "failed"}, {"q8", "ok"}, {"fp8", "ok"}, {"check-q8", "ok"}}));
  const json record = read_json(dir.file("jobs.json.state/student.json"));
  EXPECT_EQ(record["exit_code"], 0);
  EXPECT_TRUE(record["output_sha256"].contains("manifest.json")) << record.dump(2);
  EXPECT_EQ(record["output_sha256"].size(), 4u);  // the shard, its index, config.json, manifest.json
}

TEST_F(BatchTest, ResumeSkipsDoneJobsAndRedoesTamperedOrChangedOnes) {
  TempDir dir;
  write_json(dir.file("jobs.json"), pipeline(dir));
  const std::string jobs = shell_quote(dir.file("jobs.json"));
  ASSERT_NE(run_hxforge("batch -q " + jobs).exit_code, 0);

  // stdout also carries the failing job's error (stderr), so the JSON summary is read from the state folder.
  const std::string summary_file = dir.file("jobs.json.state/summary.json");
  CommandResult r = run_hxforge("batch --resume --json " + jobs);
  json summary = read_json(summary_file);
  EXPECT_EQ(statuses(summary), (std::map<std::string, std::string>{{"student", "skipped"},
                                                                   {"broken", "failed"},
                                                                   {"q8", "skipped"},
                                                                   {"fp8", "skipped"},
                                                                   {"check-q8", "skipped"}}));

  // Tamper with the student's weights: resume redoes that job (and only that one), restoring the same bytes.
  const std::string weights = dir.file("student/model-00001-of-00001.safetensors");
  const std::vector<std::byte> original = read_file_bytes(weights);
  std::vector<std::byte> tampered = original;
  tampered[tampered.size() - 3] ^= std::byte{0x40};
  write_file_bytes(weights, tampered);
  r = run_hxforge("batch --resume --json " + jobs);
  summary = read_json(summary_file);
  EXPECT_EQ(statuses(summary)["student"], "ok") << r.output;
  EXPECT_EQ(statuses(summary)["q8"], "skipped");
  EXPECT_NE(summary["jobs"][0]["note"].get<std::string>().find("no longer hashes"), std::string::npos)
      << summary.dump(2);
  EXPECT_EQ(read_file_bytes(weights), original);  // a conversion is reproducible bit for bit

  // A changed job definition runs again even though its output is intact.
  json changed = pipeline(dir);
  changed["jobs"][3]["options"]["fp8-scale"] = "tensor";
  write_json(dir.file("jobs.json"), changed);
  run_hxforge("batch --resume --json " + jobs);
  summary = read_json(summary_file);
  EXPECT_EQ(statuses(summary)["fp8"], "ok");
  EXPECT_EQ(statuses(summary)["q8"], "skipped");

  // A new seed changes the student's random inits: every job downstream of it runs again, its input having changed.
  changed["jobs"][0]["options"]["seed"] = 5;
  write_json(dir.file("jobs.json"), changed);
  // --json: stdout is the summary alone, although the verify job prints its statistics (they go to stderr).
  r = run_command("{ " + shell_quote(hxforge_binary()) + " batch --resume --json " + jobs + " 2>/dev/null; }");
  EXPECT_EQ(json::parse(r.output), read_json(summary_file)) << r.output;
  summary = read_json(summary_file);
  EXPECT_EQ(statuses(summary),
            (std::map<std::string, std::string>{
                {"student", "ok"}, {"broken", "failed"}, {"q8", "ok"}, {"fp8", "ok"}, {"check-q8", "ok"}}))
      << summary.dump(2);
  EXPECT_NE(summary["jobs"][2]["note"].get<std::string>().find("its input changed"), std::string::npos)
      << summary.dump(2);
}

TEST_F(BatchTest, ShardsPartitionTheJobList) {
  TempDir dir;
  json jobs = {{"jobs", json::array()}};
  for (int i = 0; i < 7; ++i)  // jobs that fail at once (no input): only who runs what matters here
    jobs["jobs"].push_back({{"id", "job" + std::to_string(i)},
                            {"kind", "quantize"},
                            {"input", dir.file("absent" + std::to_string(i))},
                            {"output", dir.file("out" + std::to_string(i))},
                            {"options", {{"scheme", "int8"}}}});
  write_json(dir.file("jobs.json"), jobs);
  std::set<size_t> seen;
  for (int shard = 1; shard <= 3; ++shard) {
    const CommandResult r =
        run_hxforge("batch --json --shard " + std::to_string(shard) + "/3 " + shell_quote(dir.file("jobs.json")));
    EXPECT_NE(r.exit_code, 0);
    const json summary = read_json(dir.file("jobs.json.state/summary-shard-" + std::to_string(shard) + "-of-3.json"));
    for (const json& j : summary["jobs"]) {
      const size_t index = j["index"];
      EXPECT_EQ(index % 3, static_cast<size_t>(shard - 1)) << j.dump();
      EXPECT_TRUE(seen.insert(index).second) << "job " << index << " ran in two shards";
    }
  }
  EXPECT_EQ(seen.size(), 7u);

  for (const char* bad : {"0/3", "4/3", "1/0", "a/3", "1/", "/3", "1/3/2", "-1/3", "1234567/9999999"})
    EXPECT_EQ(run_hxforge(std::string("batch --shard ") + bad + " " + shell_quote(dir.file("jobs.json"))).exit_code, 2)
        << bad;
}

TEST_F(BatchTest, InvalidJobFilesAreRefusedWithExit3NamingTheField) {
  TempDir dir;
  const std::string good = R"({"id": "a", "kind": "quantize", "input": "x", "output": "y")";
  const std::vector<std::pair<std::string, std::string>> cases = {
      {"[]", "JSON object"},
      {R"({"jobs": [)" + good + "}, " + good + "}]}", "used twice"},
      {R"({"jobs": [)" + good + R"(, "options": {"out": "z"}}]})", "option 'out' is set by batch"},
      {R"({"jobs": [)" + good + R"(, "options": {"scheme": ["int8"]}}]})", "option 'scheme'"},
      {R"({"jobs": [{"id": "b", "kind": "verify", "input": "x"}]})", "'output' is missing"},
      {R"({"jobs": [{"id": "c", "kind": "compress", "input": "x", "output": "y"}]})", "kind 'compress'"},
  };
  for (size_t i = 0; i < cases.size(); ++i) {
    const std::string path = dir.file("bad" + std::to_string(i) + ".json");
    std::ofstream(path) << cases[i].first;
    const CommandResult r = run_hxforge("batch " + shell_quote(path));
    EXPECT_EQ(r.exit_code, 3) << cases[i].first << "\n" << r.output;
    EXPECT_NE(r.output.find(path), std::string::npos) << r.output;
    EXPECT_NE(r.output.find(cases[i].second), std::string::npos) << r.output;
    EXPECT_FALSE(fs::exists(dir.file("y"))) << "nothing may run from an invalid file";
  }
  std::ofstream(dir.file("garbled.json")) << "{\"jobs\": [";
  EXPECT_EQ(run_hxforge("batch " + shell_quote(dir.file("garbled.json"))).exit_code, 3);
}

}  // namespace
}  // namespace hx::test
