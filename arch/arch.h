// What a checkpoint of a given ModelConfig must contain, and how an opened checkpoint compares with it.
//
// Design goals: the tables of tensor_table.h evaluated into concrete tensors (name, shape, role, required,
// quantization policy) that every tool shares: `inspect --check`, the converter's output plan, the quantizer's
// policy, the forward pass's loader. Checks collect *every* problem (safetensors-cpp style) in llama.cpp's wording,
// e.g. "tensor 'model.layers.3.mlp.up_proj.weight' has wrong shape; expected [352, 128], got [352, 64]".
// Non-goals: reading files (formats/), quantized-tensor layouts (quant/).
#pragma once

#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "arch/model_config.h"
#include "arch/tensor_table.h"
#include "formats/checkpoint.h"

namespace hx {

struct ExpectedTensor {
  std::string name;
  Shape shape;
  TensorRole role = TensorRole::kNorm;
  bool required = true;
  QuantPolicy quant;
  int layer = -1;                   // -1 for model-level tensors
  const TensorRow* row = nullptr;  // the table row it comes from
};

// Every tensor the config can have, in table order (model-level rows first, then layer by layer). Optional tensors
// (shared-layer K/V, a tied lm_head, trainer scalars) are listed with required = false.
std::vector<ExpectedTensor> expected_tensors(const ModelConfig& cfg);

// The entry named `name`, or nullptr. Linear scan: build your own map when looking up many names.
const ExpectedTensor* lookup(std::span<const ExpectedTensor> expected, std::string_view name);

// The architecture of a checkpoint: from config.json when given (rwkv_architecture, model_type, architectures),
// else from tensor names (hxa07i: TICA tensors; hxa079: RWKV tensors; gemma4: PLE/layer_scalar; llama: q_proj).
std::optional<Arch> detect_architecture(const Checkpoint& checkpoint, const nlohmann::json* config);

struct TableReport {
  std::vector<std::string> problems;  // missing required, unexpected, wrong shape, non-float dtype
  std::vector<std::string> skipped;   // names deliberately ignored (Gemma-4 vision/audio towers)
  size_t matched = 0;                 // tensors found in the table with the right shape and dtype
};
TableReport check_tensors(const Checkpoint& checkpoint, const ModelConfig& cfg);
// check_tensors(…).problems: one sentence per problem, empty when the checkpoint matches the table.
std::vector<std::string> check_against_table(const Checkpoint& checkpoint, const ModelConfig& cfg);

// Sum of elements over the expected tensors (with or without the optional ones).
uint64_t parameter_count(const ModelConfig& cfg, bool include_optional);

}  // namespace hx
