// hxforge run: top-k output, --json, --dump-logits (read back and compared with the oracle), --prefill (decode path),
// --tokens-file, and the exit statuses of bad input (cli.md: 2 usage, 3 invalid input).
#include <gtest/gtest.h>

#include <algorithm>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>

#include "tests/forward_test_helpers.h"
#include "verify/cuda/cuda_model.h"

namespace hx {
namespace {

using test::oracle_dir;
using test::run_hxforge;
using test::shell_quote;
using test::TempDir;

// The oracle README's f32 gate (the same forward pass as verify_forward_oracle_test, through the CLI and a file).
constexpr double kF32LogitTolerance = 1e-3;

const std::string kLlama = oracle_dir() + "/llama-tiny";

std::string oracle_token_list() {
  const auto ids = test::token_ids(read_safetensors_file(kLlama + "/expected.safetensors"));
  std::string csv;
  for (int64_t id : ids) csv += (csv.empty() ? "" : ",") + std::to_string(id);
  return csv;
}

TEST(CliRun, PrintsTopKPerPosition) {
  const auto r = run_hxforge("run " + shell_quote(kLlama) + " --tokens 1,402,392 --top-k 3");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("llama, 4 layers, vocab 512, 3 tokens, f32 compute"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("top-3 next tokens"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("prefill: 3 tokens"), std::string::npos) << r.output;
}

TEST(CliRun, JsonTopKIsSortedAndItsFirstEntryIsTheOraclesArgmax) {
  const auto expected = read_safetensors_file(kLlama + "/expected.safetensors");
  const test::LoadedTensor logits = test::tensor_f32(expected, "logits_f32");
  const auto r = run_hxforge("run " + shell_quote(kLlama) + " --tokens " + oracle_token_list() + " --top-k 4 --json");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  const auto j = nlohmann::json::parse(r.output);
  EXPECT_EQ(j["architecture"], "llama");
  EXPECT_EQ(j["compute"], "f32");
  EXPECT_EQ(j["vocab_size"], 512);
  ASSERT_EQ(j["positions"].size(), 24u);
  for (size_t t = 0; t < 24; ++t) {
    const auto& top = j["positions"][t]["top_k"];
    ASSERT_EQ(top.size(), 4u);
    for (size_t i = 1; i < 4; ++i) EXPECT_GE(top[i - 1]["prob"].get<double>(), top[i]["prob"].get<double>());
    const auto row = std::span<const float>(logits.values).subspan(t * 512, 512);
    EXPECT_EQ(top[0]["token"].get<int64_t>(), std::max_element(row.begin(), row.end()) - row.begin()) << "position " << t;
  }
  EXPECT_EQ(j["timing"]["prefill_tokens"], 24);
  EXPECT_GT(j["memory"]["mapped_weight_bytes"].get<uint64_t>(), 1'000'000u);
}

TEST(CliRun, DumpedLogitsMatchTheOracleAndDecodeGivesTheSameFile) {
  TempDir dir;
  const std::string tokens = oracle_token_list();
  auto r = run_hxforge("run " + shell_quote(kLlama) + " --quiet --top-k 0 --tokens " + tokens + " --dump-logits " +
                       shell_quote(dir.file("all.safetensors")));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  r = run_hxforge("run " + shell_quote(kLlama) + " --quiet --top-k 0 --prefill 10 --tokens " + tokens +
                  " --dump-logits " + shell_quote(dir.file("streamed.safetensors")));
  ASSERT_EQ(r.exit_code, 0) << r.output;

  const Checkpoint dumped = read_safetensors_file(dir.file("all.safetensors"));
  ASSERT_EQ(dumped.tensors.size(), 1u);
  EXPECT_EQ(dumped.tensors[0].name, "logits");
  EXPECT_EQ(dumped.tensors[0].view.dtype, DType::kF32);
  EXPECT_EQ(dumped.tensors[0].view.shape, (Shape{24, 512}));
  const auto ours = test::tensor_f32(dumped, "logits").values;
  const auto oracle = test::tensor_f32(read_safetensors_file(kLlama + "/expected.safetensors"), "logits_f32").values;
  EXPECT_LE(test::max_abs_difference(oracle, ours), kF32LogitTolerance);
  EXPECT_EQ(test::tensor_f32(read_safetensors_file(dir.file("streamed.safetensors")), "logits").values, ours);

  // An existing file is not replaced without --force.
  r = run_hxforge("run " + shell_quote(kLlama) + " --quiet --top-k 0 --tokens 1,2 --dump-logits " +
                  shell_quote(dir.file("all.safetensors")));
  EXPECT_NE(r.exit_code, 0) << r.output;
  EXPECT_EQ(test::tensor_f32(read_safetensors_file(dir.file("all.safetensors")), "logits").values, ours);
  r = run_hxforge("run " + shell_quote(kLlama) + " --quiet --top-k 0 --tokens 1,2 --force --dump-logits " +
                  shell_quote(dir.file("all.safetensors")));
  EXPECT_EQ(r.exit_code, 0) << r.output;
  EXPECT_EQ(read_safetensors_file(dir.file("all.safetensors")).tensors[0].view.shape, (Shape{2, 512}));
}

TEST(CliRun, TokensFileAndBf16Compute) {
  TempDir dir;
  std::ofstream(dir.file("ids.txt")) << "2 449\n251,174\n";
  const auto r = run_hxforge("run " + shell_quote(oracle_dir() + "/gemma4-tiny") + " --tokens-file " +
                             shell_quote(dir.file("ids.txt")) + " --compute bf16 --json --top-k 1");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  const auto j = nlohmann::json::parse(r.output);
  EXPECT_EQ(j["tokens"], nlohmann::json({2, 449, 251, 174}));
  EXPECT_EQ(j["compute"], "bf16");
  EXPECT_EQ(j["architecture"], "gemma4");
}

TEST(CliRun, TokenOutsideTheVocabularyExits3NamingPositionAndValue) {
  auto r = run_hxforge("run " + shell_quote(kLlama) + " --tokens 1,2,512");
  EXPECT_EQ(r.exit_code, 3) << r.output;
  EXPECT_NE(r.output.find("token id 512 at position 2"), std::string::npos) << r.output;
  r = run_hxforge("run " + shell_quote(kLlama) + " --tokens 5,-1");
  EXPECT_EQ(r.exit_code, 3) << r.output;
  EXPECT_NE(r.output.find("token id -1 at position 1"), std::string::npos) << r.output;
}

TEST(CliRun, CudaDeviceIsAClearExit3AndBadArgumentsAreUsageErrors) {
  std::string no_gpu;
  if (!cuda_device_available(&no_gpu)) {  // with a GPU, --device cuda runs (verify_cuda_test checks it)
    auto r = run_hxforge("run " + shell_quote(kLlama) + " --tokens 1 --device cuda");
    EXPECT_EQ(r.exit_code, 3) << r.output;
    EXPECT_NE(r.output.find("--device cuda: " + no_gpu), std::string::npos) << r.output;
  }
  EXPECT_EQ(run_hxforge("run " + shell_quote(kLlama) + " --tokens 1,x").exit_code, 2);
  EXPECT_EQ(run_hxforge("run " + shell_quote(kLlama)).exit_code, 2);
  EXPECT_EQ(run_hxforge("run " + shell_quote(kLlama) + " --tokens 1 --compute f16").exit_code, 2);
  EXPECT_EQ(run_hxforge("run " + shell_quote(kLlama) + " --tokens 1,2 --prefill 3").exit_code, 2);
}

}  // namespace
}  // namespace hx
