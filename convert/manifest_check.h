// `hxforge verify MODEL --manifest FILE`: re-checks a converted checkpoint later (in CI, after a copy, on another
// machine) against the manifest.json its conversion wrote (convert/manifest.h, schemas/manifest.schema.json).
//
// Design goals: the cheap, decisive check first — every tensor's dtype, shape and SHA-256 (cli.md's C-order bytes,
// so a safetensors↔pth repack still verifies), plus tensors missing or unexpected; then the recorded probe (the
// student's top-k on fixed tokens) through the forward pass: top-k ids exactly, logits within kProbeLogitTolerance.
// Every difference is named (tensor, expected, found). A missing or garbled manifest is invalid input (FormatError,
// exit 3); a checkpoint that differs from its manifest is a verification failure (exit 1, the caller's mapping).
// Non-goals: re-deriving the tensors from the teacher (that is convert's job); signatures.
#pragma once

#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "formats/checkpoint.h"

namespace hx {

// The probe is re-run with the same formulas and weights in f32; only the summation order of the matrix products
// can differ between machines (AVX-512 vs generic kernels, thread counts): ~1e-6 relative on logits of order 1–30.
// 1e-3 (absolute, scaled by max(1, |logit|)) keeps a wide margin over that, while any changed weight that the hash
// check could miss (none should) moves logits by far more.
inline constexpr double kProbeLogitTolerance = 1e-3;

// A manifest.json read and checked for the fields this check needs (FormatError naming the file and the field).
struct Manifest {
  struct Tensor {
    std::string name, dtype, sha256;
    Shape shape;
  };
  struct ProbePosition {
    std::vector<int64_t> top_ids;
    std::vector<double> top_logits;
  };
  std::string path;
  std::vector<Tensor> tensors;
  std::string probe_status;  // "ok", "not_run", "skipped"
  std::vector<int64_t> probe_tokens;
  std::vector<ProbePosition> probe_positions;  // when probe_status == "ok"
};
Manifest read_manifest(const std::string& path);

struct ManifestCheck {
  size_t tensors_checked = 0;                // manifest tensors compared (present or not)
  std::vector<std::string> tensor_problems;  // one sentence per tensor that differs, missing or unexpected
  size_t tensors_mismatched = 0;             // tensors named in tensor_problems
  bool probe_ran = false;
  std::string probe_status;  // the manifest's; "ok" means it was re-run
  int64_t probe_positions = 0;
  double probe_max_logit_diff = 0;
  std::vector<std::string> probe_problems;

  bool passed() const { return tensor_problems.empty() && probe_problems.empty(); }
  // {"hashes": {"checked", "mismatched"}, "probe": {...}, "problems": [...], "passed"}
  nlohmann::json to_json() const;
};

// Runs both checks. The probe runs only when the hashes all match (on a wrong file it would only add noise) and
// `run_probe` is set.
ManifestCheck check_against_manifest(const Checkpoint& model, const Manifest& manifest, bool run_probe = true);

}  // namespace hx
