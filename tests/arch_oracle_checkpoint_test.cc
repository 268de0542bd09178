// The oracle checkpoints, opened by formats/ and compared with the tables: files made by transformers and by
// torch.save (hxa079) must match their architecture's table with zero problems.
#include <gtest/gtest.h>

#include <cctype>

#include "arch/arch.h"
#include "arch/presets.h"
#include "formats/checkpoint.h"
#include "tests/arch_test_helpers.h"

namespace hx {
namespace {

struct Case {
  const char* path;  // under the oracle folder
  Arch arch;
  size_t tensors;
};

class ArchOracleCheckpoint : public ::testing::TestWithParam<Case> {};

TEST_P(ArchOracleCheckpoint, MatchesItsTableWithZeroProblems) {
  const Case& c = GetParam();
  const Checkpoint ckpt = open_checkpoint(test::oracle_dir() + "/" + c.path);
  ASSERT_EQ(ckpt.tensors.size(), c.tensors);
  const ModelConfig cfg = config_for_checkpoint(ckpt);
  EXPECT_EQ(cfg.arch, c.arch);
  EXPECT_EQ(detect_architecture(ckpt, nullptr), c.arch);
  const TableReport report = check_tensors(ckpt, cfg);
  EXPECT_EQ(report.problems, std::vector<std::string>{});
  EXPECT_EQ(report.skipped, std::vector<std::string>{});
  EXPECT_EQ(report.matched, ckpt.tensors.size());
  // And every tensor the checkpoint has is one the table lists, with the required ones all present.
  size_t required = 0;
  for (const ExpectedTensor& e : expected_tensors(cfg)) required += e.required;
  EXPECT_LE(required, ckpt.tensors.size());
}

// Tensor counts: gemma4-tiny has 5 model-level tensors and 17 per layer (4 norms, q/k/v/o, q/k norms, 3 MLP,
// 3 PLE, layer_scalar), minus k_proj/v_proj/k_norm on the 4 KV-shared layers; llama-tiny 3 + 4 × 9; hxa079-tiny
// (README §3) 3 + 3 RWKV layers × 26 + one GQA layer × 9.
INSTANTIATE_TEST_SUITE_P(Oracle, ArchOracleCheckpoint,
                         ::testing::Values(Case{"gemma4-tiny/model.safetensors", Arch::kGemma4, 5 + 10 * 17 - 4 * 3},
                                           Case{"gemma4-tiny/sharded", Arch::kGemma4, 5 + 10 * 17 - 4 * 3},
                                           Case{"llama-tiny/model.safetensors", Arch::kLlama, 3 + 4 * 9},
                                           Case{"llama-tiny/sharded", Arch::kLlama, 3 + 4 * 9},
                                           Case{"hxa079-tiny/model.pth", Arch::kHxa079, 3 + 3 * 26 + 9}),
                         [](const ::testing::TestParamInfo<Case>& tested) {
                           std::string name = tested.param.path;
                           for (char& ch : name)
                             if (!isalnum(static_cast<unsigned char>(ch))) ch = '_';
                           return name;
                         });

TEST(ArchOracleCheckpointConfig, TheFilesAreThePresetTinies) {
  EXPECT_EQ(config_for_checkpoint(open_checkpoint(test::oracle_dir() + "/gemma4-tiny/model.safetensors")),
            preset_config(Arch::kGemma4, "tiny"));
  EXPECT_EQ(config_for_checkpoint(open_checkpoint(test::oracle_dir() + "/llama-tiny")),
            preset_config(Arch::kLlama, "tiny"));
  ModelConfig hxa079 = preset_config(Arch::kHxa079, "tiny");
  hxa079.naming = TensorNaming::kRwkvLm;
  hxa079.tensor_prefix = "";
  EXPECT_EQ(config_for_checkpoint(open_checkpoint(test::oracle_dir() + "/hxa079-tiny/model.pth")), hxa079);
}

}  // namespace
}  // namespace hx
