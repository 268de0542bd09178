// manifest.json of a converted student (schemas/manifest.schema.json): what every output tensor is and where it
// came from, so a student can be audited and re-derived without the tool that made it.
//
// Per tensor: name, dtype, shape, file, SHA-256 (cli.md: C-order little-endian bytes) and provenance — the teacher
// file and tensor with the transform ("copy", "cast", "scale 0.5") or the init rule with its seed and random stream.
// Plus: the layout (embedded as read), the teacher and student descriptions, the teacher tensors left behind with
// their reasons, the tool version, the verification results and the probe (student top-k on fixed tokens).
// Non-goals: signing; timestamps (they would make two identical conversions differ).
#pragma once

#include <map>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "convert/plan.h"
#include "convert/student_checks.h"
#include "formats/checkpoint.h"
#include "formats/sha256.h"

namespace hx {

inline constexpr int kManifestFormatVersion = 1;

// Which file of a checkpoint holds each tensor: the only file, or the folder's index.json weight_map.
std::map<std::string, std::string> file_of_tensors(const Checkpoint& checkpoint);

struct ManifestInputs {
  const ConversionPlan* plan = nullptr;
  const Checkpoint* teacher = nullptr;
  const std::vector<Digest>* hashes = nullptr;                        // per plan tensor, as streamed
  const std::map<std::string, std::string>* student_files = nullptr;  // output tensor → file
  const Verification* verification = nullptr;                         // null with --no-verify
  const Probe* probe = nullptr;                                       // null when the forward pass did not run
  std::string tool_version;
};

nlohmann::json build_manifest(const ManifestInputs& in);

// A tensor's provenance as manifest.json records it.
nlohmann::json provenance_json(const PlannedTensor& t, const ConversionPlan& plan,
                               const std::map<std::string, std::string>& teacher_files);

}  // namespace hx
