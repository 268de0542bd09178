// Built-in verification of a freshly written student (`hxforge convert`, skipped with --no-verify), and the probe
// recorded in manifest.json.
//
// Design goals: each check is independent of the code that wrote the student — it re-opens the written files:
//   structure          the student passes check_against_table for the config.json written beside it, and that
//                      config reads back to the planned student config;
//   file_hashes        every tensor re-read from disk hashes to what was streamed (the manifest's sha256);
//   copies_identical   every tensor the plan copied hashes exactly like its teacher tensor (read from the teacher);
//   finite_logits      the student's forward pass (verify/forward.h) gives finite logits on the probe tokens;
//   unchanged_prefix   the hidden states of the layers before the first converted layer equal the teacher's (bit
//                      for bit when those layers were copied verbatim);
//   teacher_forced     every layer fed the teacher's own hidden state (convert/teacher_forced.h): kept layers give
//                      the teacher's output exactly; converted layers' mixer cosine vs the attention they replace.
// Non-goals: judging the quality of an untrained student (that is distillation's job); GPU runs.
#pragma once

#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "convert/plan.h"
#include "formats/checkpoint.h"
#include "formats/sha256.h"

namespace hx {

enum class CheckStatus : uint8_t { kPassed, kFailed, kSkipped };

struct CheckResult {
  std::string name;
  CheckStatus status = CheckStatus::kSkipped;
  std::string summary;                // one line
  std::vector<std::string> problems;  // one sentence per problem (failed checks)
};

struct Verification {
  std::vector<CheckResult> checks;
  nlohmann::json teacher_forced_layers = nlohmann::json::array();  // per layer (teacher_forced.h), when it ran
  bool passed() const;  // no check failed
  nlohmann::json to_json() const;
};

// The student's top-k next-token predictions on the layout's probe tokens (manifest.json "probe").
struct Probe {
  std::vector<int64_t> tokens;
  int top_k = 0;
  std::vector<std::vector<std::pair<int64_t, float>>> top;  // per position: (token, logit), best first
  nlohmann::json to_json() const;
};

// Opens the written student: its folder (safetensors) or the .pth inside it.
Checkpoint open_student(const std::string& folder, StudentFormat format);

CheckResult check_structure(const Checkpoint& student, const ConversionPlan& plan);
CheckResult check_file_hashes(const Checkpoint& student, const ConversionPlan& plan,
                              const std::vector<Digest>& streamed);
CheckResult check_copies_identical(const Checkpoint& student, const ConversionPlan& plan);

// The forward-pass checks; `probe` is filled from the same student run.
// `teacher_forced_layers` (may be null) receives the per-layer comparisons.
std::vector<CheckResult> check_forward(const Checkpoint& student, const Checkpoint& teacher, const ConversionPlan& plan,
                                       Probe* probe, nlohmann::json* teacher_forced_layers = nullptr);

// All of the above, in order.
Verification verify_student(const Checkpoint& student, const Checkpoint& teacher, const ConversionPlan& plan,
                            const std::vector<Digest>& streamed, Probe* probe);

}  // namespace hx
