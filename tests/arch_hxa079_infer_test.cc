// infer_hxa079_config on synthetic RWKV-LM checkpoints: the oracle hxa079-tiny tensor list (README §3) built
// over small owned buffers, and the ways such a file can be wrong.
#include <gtest/gtest.h>

#include <algorithm>

#include "arch/arch.h"
#include "arch/presets.h"
#include "formats/errors.h"
#include "tests/arch_test_helpers.h"

namespace hx {
namespace {

using test::zero_tensor;

// hxa079-tiny/model.pth as listed in the oracle README: D=256, H=4, N=64, Hk=2, I=512, V=512, layers 0, 1, 3 RWKV,
// layer 2 GQA, ranks w/a/v/k/g = 32/32/32/32/64, no qk-norm, no biases, in file order.
Checkpoint hxa079_tiny_pth() {
  Checkpoint c;
  c.format = CheckpointFormat::kPth;
  c.path = "hxa079-tiny/model.pth";
  auto add = [&](const std::string& name, const Shape& shape) { c.tensors.push_back(zero_tensor(name, shape)); };
  add("emb.weight", {512, 256});
  for (int i = 0; i < 4; ++i) {
    const std::string b = "blocks." + std::to_string(i) + ".";
    add(b + "ln1.weight", {256});
    add(b + "ln2.weight", {256});
    if (i == 2) {
      add(b + "att.q_proj.weight", {256, 256});
      add(b + "att.k_proj.weight", {128, 256});
      add(b + "att.v_proj.weight", {128, 256});
      add(b + "att.o_proj.weight", {256, 256});
    } else {
      add(b + "att.receptance.weight", {256, 256});
      add(b + "att.key.weight", {128, 256});
      add(b + "att.value.weight", {128, 256});
      add(b + "att.output.weight", {256, 256});
      for (const auto& [v, width, rank] : {std::tuple{"w", 256, 32}, {"a", 256, 32}, {"v", 128, 32}, {"k", 128, 32}}) {
        add(b + "att." + v + "0", {1, 1, width});
        add(b + "att." + v + "1", {256, rank});
        add(b + "att." + v + "2", {rank, width});
      }
      add(b + "att.g1", {256, 64});
      add(b + "att.g2", {64, 256});
      add(b + "att.r_k", {4, 64});
      add(b + "att.layer_architecture", {});
      add(b + "att.head_size_record", {});
    }
    add(b + "ffn.gate.weight", {512, 256});
    add(b + "ffn.up.weight", {512, 256});
    add(b + "ffn.down.weight", {256, 512});
  }
  add("ln_out.weight", {256});
  add("head.weight", {512, 256});
  return c;
}

Checkpoint without(Checkpoint c, const std::string& suffix) {
  std::erase_if(c.tensors, [&](const NamedTensor& t) {
    return t.name.size() >= suffix.size() && t.name.compare(t.name.size() - suffix.size(), suffix.size(), suffix) == 0;
  });
  c.name_index.reset();
  return c;
}

template <typename E>
std::string error_of(const Checkpoint& c) {
  try {
    infer_hxa079_config(c);
  } catch (const E& e) {
    return e.what();
  }
  return "";
}

TEST(ArchHxa079Infer, TinyFromItsTensorList) {
  const Checkpoint pth = hxa079_tiny_pth();
  const ModelConfig c = infer_hxa079_config(pth);
  EXPECT_EQ(c.arch, Arch::kHxa079);
  EXPECT_EQ(c.naming, TensorNaming::kRwkvLm);
  EXPECT_EQ(c.vocab_size, 512);
  EXPECT_EQ(c.hidden_size, 256);
  EXPECT_EQ(c.intermediate_size, 512);
  EXPECT_EQ(c.rwkv.num_heads, 4);
  EXPECT_EQ(c.rwkv.head_dim, 64);
  EXPECT_EQ(c.rwkv.num_kv_heads, 2);
  EXPECT_EQ(c.rwkv.ranks, (LoraRanks{.decay = 32, .iclr = 32, .value_mix = 32, .key_mix = 32, .gate = 64}));
  EXPECT_FALSE(c.rwkv.qk_norm);
  EXPECT_FALSE(c.attention_bias);
  EXPECT_FALSE(c.tie_word_embeddings);
  EXPECT_DOUBLE_EQ(c.rms_norm_eps, 1e-6);
  ASSERT_EQ(c.num_layers(), 4);
  const std::vector<LayerKind> kinds = {LayerKind::kRwkv7, LayerKind::kRwkv7, LayerKind::kNoPEAttention,
                                        LayerKind::kRwkv7};
  for (int i = 0; i < 4; ++i) {
    EXPECT_EQ(c.layers[i].kind, kinds[i]) << i;
    const RopeConfig expected_rope = i == 2 ? RopeConfig{} : RopeConfig{RopeType::kDefault, 1e6, 1.0};
    EXPECT_EQ(c.layers[i].rope, expected_rope) << i;
  }
  EXPECT_EQ(check_against_table(pth, c), std::vector<std::string>{});
  EXPECT_EQ(detect_architecture(pth, nullptr), Arch::kHxa079);
  EXPECT_EQ(config_for_checkpoint(pth), c);

  // The hxa079 tiny preset is this model with HF-style names.
  ModelConfig preset = preset_config(Arch::kHxa079, "tiny");
  preset.naming = TensorNaming::kRwkvLm;
  preset.tensor_prefix = "";
  EXPECT_EQ(c, preset);
}

TEST(ArchHxa079Infer, MatchesTheOracleTensorList) {
  // metrics.json lists every tensor of hxa079-tiny/model.pth with its shape, as torch.load saw it.
  const nlohmann::json names = test::read_json(test::oracle_dir() + "/metrics.json")["hxa079"]["tensor_names"];
  Checkpoint listed;
  listed.path = "model.pth";
  for (const auto& [name, info] : names.items()) listed.tensors.push_back(zero_tensor(name, info[1].get<Shape>()));
  const Checkpoint ours = hxa079_tiny_pth();
  ASSERT_EQ(listed.tensors.size(), ours.tensors.size());
  EXPECT_EQ(infer_hxa079_config(listed), infer_hxa079_config(ours));
  EXPECT_EQ(check_against_table(listed, infer_hxa079_config(listed)), std::vector<std::string>{});
}

TEST(ArchHxa079Infer, UnstoredValuesComeFromTheArguments) {
  const ModelConfig c = infer_hxa079_config(hxa079_tiny_pth(), 8e6, 1e-5);
  EXPECT_DOUBLE_EQ(c.layers[0].rope.theta, 8e6);
  EXPECT_DOUBLE_EQ(c.rms_norm_eps, 1e-5);
}

TEST(ArchHxa079Infer, QkNormAndBiasesAreDetected) {
  Checkpoint c = hxa079_tiny_pth();
  for (int i = 0; i < 4; ++i) {
    const std::string b = "blocks." + std::to_string(i) + ".att.";
    c.tensors.push_back(zero_tensor(b + "ln_r.weight", {64}));
    c.tensors.push_back(zero_tensor(b + "ln_k.weight", {64}));
    if (i == 2) {
      c.tensors.push_back(zero_tensor(b + "q_proj.bias", {256}));
      c.tensors.push_back(zero_tensor(b + "k_proj.bias", {128}));
      c.tensors.push_back(zero_tensor(b + "v_proj.bias", {128}));
    } else {
      c.tensors.push_back(zero_tensor(b + "receptance.bias", {256}));
      c.tensors.push_back(zero_tensor(b + "key.bias", {128}));
      c.tensors.push_back(zero_tensor(b + "value.bias", {128}));
    }
  }
  const ModelConfig cfg = infer_hxa079_config(c);
  EXPECT_TRUE(cfg.rwkv.qk_norm);
  EXPECT_TRUE(cfg.attention_bias);
  EXPECT_EQ(check_against_table(c, cfg), std::vector<std::string>{});
  // Without the biases of layer 3 the table notices.
  const std::vector<std::string> problems = check_against_table(without(c, "3.att.key.bias"), cfg);
  EXPECT_EQ(problems, std::vector<std::string>{
                          "tensor 'blocks.3.att.key.bias' is required but missing; expected shape [128]"});
}

TEST(ArchHxa079Infer, BrokenFilesAreNamed) {
  EXPECT_NE(error_of<UnsupportedError>(without(hxa079_tiny_pth(), ".att.k0")).find("no 'blocks.N.att.k0' tensor"),
            std::string::npos);
  EXPECT_EQ(error_of<FormatError>(without(hxa079_tiny_pth(), "emb.weight")),
            "hxa079-tiny/model.pth: tensor 'emb.weight' is required but missing");
  EXPECT_EQ(error_of<FormatError>(without(hxa079_tiny_pth(), "blocks.0.att.w1")),
            "hxa079-tiny/model.pth: tensor 'blocks.0.att.w1' is required but missing");
  Checkpoint odd = hxa079_tiny_pth();
  odd.tensors.push_back(zero_tensor("blocks.x.ln1.weight", {256}));
  EXPECT_EQ(error_of<FormatError>(odd),
            "hxa079-tiny/model.pth: tensor 'blocks.x.ln1.weight' has no layer number; expected blocks.N.…");
  Checkpoint bad_key = hxa079_tiny_pth();
  for (NamedTensor& t : bad_key.tensors)
    if (t.name == "blocks.0.att.key.weight") t = zero_tensor(t.name, {100, 256});
  EXPECT_NE(error_of<FormatError>(bad_key).find("tensor 'blocks.0.att.key.weight' has wrong shape"),
            std::string::npos);
  // A layer whose LoRA rank differs from the first RWKV layer's is found by the table, not silently accepted.
  Checkpoint rank = hxa079_tiny_pth();
  for (NamedTensor& t : rank.tensors)
    if (t.name == "blocks.3.att.w1") t = zero_tensor(t.name, {256, 16});
  EXPECT_EQ(check_against_table(rank, infer_hxa079_config(rank)),
            std::vector<std::string>{"tensor 'blocks.3.att.w1' has wrong shape; expected [256, 32], got [256, 16]"});
}

TEST(ArchHxa079Infer, SafetensorsWithoutConfigIsRefused) {
  Checkpoint c = hxa079_tiny_pth();
  c.format = CheckpointFormat::kSafetensors;
  c.path = "folder";
  EXPECT_THROW(config_for_checkpoint(c), FormatError);
}

}  // namespace
}  // namespace hx
