// The conversion plan: a teacher, a layout and a few options resolved into the student's config and one entry per
// output tensor — its name, dtype and shape, and where its values come from (a teacher tensor, copied or scaled,
// or an init rule with its seed) — before a single byte is written.
//
// Design goals:
// - The output list is the student's architecture table (arch/arch.h expected_tensors), so every student passes
//   `inspect --check` by construction; the layout only says how each entry is filled.
// - Every failure is found here, up front, naming what is wrong: a teacher that does not match its own table
//   (missing tensor, wrong shape), a layout naming a layer the teacher lacks, a rule whose source does not exist or
//   has the wrong shape, a teacher tensor that no rule uses and no `drop` entry explains. Nothing is written then.
// - Names: planning uses the HF-style names (they key the random streams, so a .pth and a safetensors student of
//   the same seed hold the same values); the output name follows the requested format (RWKV-LM for .pth).
// Non-goals: reading or writing tensor bytes (converter.cc streams them).
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "arch/arch.h"
#include "arch/model_config.h"
#include "convert/init_rules.h"
#include "convert/layout.h"
#include "formats/checkpoint.h"

namespace hx {

enum class StudentFormat : uint8_t { kSafetensors, kPth };

struct PlanOptions {
  StudentFormat format = StudentFormat::kSafetensors;
  std::optional<DType> dtype = DType::kBF16;         // nullopt: keep the teacher's dtype
  std::optional<std::vector<int>> attention_layers;  // --attention-layers (hxa079): replaces the layout's list
  uint64_t seed = 0;
};

enum class Provenance : uint8_t {
  kCopy,   // the teacher tensor's bytes, unchanged (same dtype, scale 1): verified by hash
  kCast,   // the teacher tensor converted to another dtype, scale 1
  kScale,  // round(f32(teacher) · f32(scale)) in the output dtype
  kInit,   // a new tensor from an init rule
};
std::string_view provenance_name(Provenance p);  // "copy", "cast", "scale", "init"

struct PlannedTensor {
  std::string name;        // in the output file
  std::string table_name;  // HF-style name: the random stream key and the manifest's cross-format identity
  std::string local_name;  // what the layout rule matched ("self_attn.receptance.weight")
  int layer = -1;
  DType dtype = DType::kBF16;
  Shape shape;
  size_t rule_index = 0;  // into Layout::rules
  Provenance provenance = Provenance::kInit;

  // kCopy / kCast / kScale
  const NamedTensor* source = nullptr;
  std::string source_file;
  double scale = 1.0;
  std::string source_note;  // why this source: "layer 9 shares layer 4's K/V", "tied head: embed_tokens"

  // kInit
  InitSpec init;
  InitContext context;
  uint64_t stream_key = 0;
};

struct DroppedTensor {
  std::string name;
  std::string reason;
};

struct ConversionPlan {
  Layout layout;
  ModelConfig teacher;
  ModelConfig student;  // as written to config.json (naming and tie follow the format)
  StudentFormat format = StudentFormat::kSafetensors;
  uint64_t seed = 0;
  std::vector<PlannedTensor> tensors;  // in the student table's order
  std::vector<DroppedTensor> dropped;  // teacher tensors deliberately left behind
  std::vector<std::string> skipped;    // teacher tensors outside the text stack (Gemma-4 vision/audio)
  uint64_t total_bytes() const;
};

// The student's config for a teacher under a layout (student_config.h plus the layout's switches). FormatError
// naming the layout when it does not fit the teacher (architecture, layers that do not exist, head sizes); a
// layer list from --attention-layers that does not fit is a UsageError.
ModelConfig student_config_for(const ModelConfig& teacher, const Layout& layout,
                               const std::optional<std::vector<int>>& attention_layers);

// Checks the teacher against its table and the layout against both, and plans every output tensor.
ConversionPlan plan_conversion(const Checkpoint& teacher, const ModelConfig& teacher_config, const Layout& layout,
                               const PlanOptions& options);

// The local name of a table row ("{P}layers.{L}.self_attn.q_proj.weight" → "self_attn.q_proj.weight").
std::string local_name_of(const TensorRow& row);

}  // namespace hx
