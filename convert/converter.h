// `hxforge convert`: a Transformer teacher → a hybrid RWKV-7 student (hxa079, hxa07i), as a layout describes.
//
// Design goals:
// - Streaming: the plan (plan.h) fixes every output tensor first; the writer then pulls them one by one through a
//   TensorSource — verbatim copies straight from the mapped teacher, scaled copies converted chunk by chunk,
//   new tensors generated chunk by chunk — so nothing model-sized is ever in memory. Every tensor is hashed as it
//   streams (manifest.json's sha256).
// - Atomic: weights, config.json and manifest.json are built in a hidden staging folder beside --out and renamed
//   into place only when everything is written and (unless --no-verify) verified; a failure leaves nothing.
// - Reproducible: the same teacher, layout, options and seed give byte-identical files.
// Non-goals: training or distillation; teachers other than Llama (→ hxa079) and Gemma-4 (→ hxa07i).
#pragma once

#include <cstdint>
#include <functional>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "convert/plan.h"
#include "convert/student_checks.h"

namespace hx {

// HF's default shard size.
inline constexpr uint64_t kDefaultStudentShardBytes = 5'000'000'000ULL;

struct ConvertOptions {
  std::string teacher;  // any MODEL / PATH of cli.md
  Arch to = Arch::kHxa079;
  std::string layout;  // a file, a preset, "tiny" (tiny-<to>), or "" for default_layout_name(to)
  PlanOptions plan;
  std::string out;  // the student folder
  uint64_t max_shard_bytes = kDefaultStudentShardBytes;
  bool overwrite = false;
  bool verify = true;
  std::string tool_version = "unknown";
  // Called after every chunk written (tensors completed, bytes written so far); may be empty.
  std::function<void(uint64_t tensors_done, uint64_t bytes_done)> on_progress;
};

struct ConvertResult {
  std::string out;
  std::string layout;  // the layout's name
  Arch student_arch = Arch::kHxa079;
  StudentFormat format = StudentFormat::kSafetensors;
  DType dtype = DType::kBF16;
  size_t tensors = 0;
  size_t by_provenance[4] = {};  // indexed by Provenance
  uint64_t bytes = 0;
  std::vector<DroppedTensor> dropped;
  std::optional<Verification> verification;  // absent with --no-verify
  bool committed = false;                    // false when verification failed (nothing was left under `out`)
  double seconds = 0.0;
  nlohmann::json to_json() const;  // the `--json` report
};

// Resolves --layout for a target (presets, "tiny", a file). UsageError when the layout makes another student.
Layout resolve_layout(const std::string& layout, Arch to);

// Runs the conversion. Throws (exit 2/3/4) before writing anything for bad input; returns committed = false, with
// the failed checks in `verification`, when the written student does not verify.
ConvertResult convert_checkpoint(const ConvertOptions& options);

}  // namespace hx
