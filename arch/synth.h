// Seeded synthetic checkpoints of any architecture (`hxforge synth`).
//
// Design goals: every tensor the architecture table requires, with the shape the config gives, filled by a
// counter-based generator keyed by (seed, tensor name, element index) — so a tensor's values do not depend on the
// order tensors are written, on the thread count, or on the chunk size, and a 40 GB teacher streams to disk without
// ever being in memory. Two weight models:
//   * plain: the initialisations the oracle fixtures use (Linear N(0, 1/fan_in), norms 1 + N(0, 0.1²), …);
//   * realistic: what trained LLM weights look like, so quantization error is measured on data like the real thing —
//     heavy tails (Student-t, 4 degrees of freedom), a few outlier input channels ~20× larger, and a per-row scale
//     spread (log-normal, σ = 0.3).
// Non-goals: trained-model statistics beyond these three effects; optional tensors (they are left out).
#pragma once

#include <cstdint>
#include <string>

#include "arch/arch.h"
#include "arch/model_config.h"

namespace hx {

struct SynthOptions {
  uint64_t seed = 0;
  bool realistic = false;
  bool overwrite = false;
  uint64_t max_shard_bytes = 0;  // safetensors folder output: shard size (0: one model.safetensors)
};

// How one tensor is filled (exposed for tests).
struct InitRule {
  enum class Kind : uint8_t { kNormal, kUniform } kind = Kind::kNormal;
  double mean = 0;    // normal: mean; uniform: low
  double spread = 1;  // normal: standard deviation; uniform: high
  bool matrix = false;  // a matmul weight [out, in]: gets the realistic row spread and outlier columns
};
InitRule init_rule(const ExpectedTensor& tensor, const ModelConfig& cfg);

// The value of element `index` of tensor `name` (before rounding to the stored dtype). Pure function.
float synthetic_value(const InitRule& rule, uint64_t seed, const std::string& name, uint64_t index, int64_t cols,
                      bool realistic);

// Writes the checkpoint: `out` ending in .pth/.pt writes a PyTorch zip (hxa079 with RWKV-LM names, as RWKV-Infer
// loads it); anything else is a folder with config.json and model.safetensors (or shards). Atomic; nothing is left
// under `out` on failure. Returns the number of bytes of tensor data written.
uint64_t write_synthetic_checkpoint(const ModelConfig& cfg, const std::string& out, const SynthOptions& options);

}  // namespace hx
