#include "convert/student_checks.h"

#include <algorithm>
#include <cmath>
#include <numeric>
#include <unordered_map>

#include "arch/arch.h"
#include "convert/teacher_forced.h"
#include "formats/errors.h"
#include "verify/forward.h"

namespace hx {
namespace {

const char* status_name(CheckStatus s) {
  switch (s) {
    case CheckStatus::kPassed:
      return "passed";
    case CheckStatus::kFailed:
      return "failed";
    case CheckStatus::kSkipped:
      return "skipped";
  }
  return "?";
}

CheckResult finish(std::string name, std::vector<std::string> problems, const std::string& ok_summary) {
  CheckResult r{std::move(name), problems.empty() ? CheckStatus::kPassed : CheckStatus::kFailed, ok_summary,
                std::move(problems)};
  if (!r.problems.empty())
    r.summary = std::to_string(r.problems.size()) + " problem" + (r.problems.size() == 1 ? "" : "s") + ": " +
                r.problems.front();
  return r;
}

// Hashes of the student's tensors by name, computed in parallel from the re-opened files.
std::unordered_map<std::string, Digest> student_hashes(const Checkpoint& student) {
  const std::vector<Digest> digests = sha256_tensors(student.tensors);
  std::unordered_map<std::string, Digest> out;
  for (size_t i = 0; i < student.tensors.size(); ++i) out.emplace(student.tensors[i].name, digests[i]);
  return out;
}

// The first layer whose kind the conversion changed (hxa079: also the kept attention layers, now NoPE).
int first_converted_layer(const ConversionPlan& plan) {
  for (int i = 0; i < plan.student.num_layers(); ++i)
    if (plan.student.layers[i].kind != plan.teacher.layers[i].kind) return i;
  return plan.student.num_layers();
}

}  // namespace

bool Verification::passed() const {
  return std::none_of(checks.begin(), checks.end(),
                      [](const CheckResult& c) { return c.status == CheckStatus::kFailed; });
}

nlohmann::json Verification::to_json() const {
  nlohmann::json out = {{"passed", passed()}, {"checks", nlohmann::json::array()}};
  for (const CheckResult& c : checks)
    out["checks"].push_back(
        {{"name", c.name}, {"status", status_name(c.status)}, {"summary", c.summary}, {"problems", c.problems}});
  out["teacher_forced_layers"] = teacher_forced_layers;
  return out;
}

nlohmann::json Probe::to_json() const {
  nlohmann::json positions = nlohmann::json::array();
  for (size_t p = 0; p < top.size(); ++p) {
    nlohmann::json best = nlohmann::json::array();
    for (const auto& [token, logit] : top[p]) best.push_back({{"token", token}, {"logit", logit}});
    positions.push_back({{"position", p}, {"input_token", tokens[p]}, {"top", best}});
  }
  // f32: the reference compute mode, the one `verify --manifest` re-runs the probe in.
  return {{"status", "ok"}, {"compute", "f32"}, {"tokens", tokens}, {"top_k", top_k}, {"positions", positions}};
}

Checkpoint open_student(const std::string& folder, StudentFormat format) {
  return open_checkpoint(format == StudentFormat::kPth ? folder + "/model.pth" : folder);
}

CheckResult check_structure(const Checkpoint& student, const ConversionPlan& plan) {
  std::vector<std::string> problems;
  const ModelConfig read_back = config_for_checkpoint(student);
  for (const std::string& p : check_against_table(student, read_back)) problems.push_back(in_file(student.path, p));
  if (to_config_json(read_back) != to_config_json(plan.student))
    problems.push_back(in_file(student.config_json_path, "does not read back to the planned student config"));
  if (student.tensors.size() != plan.tensors.size())
    problems.push_back(in_file(student.path, "holds " + std::to_string(student.tensors.size()) +
                                                 " tensors; the plan has " + std::to_string(plan.tensors.size())));
  return finish("structure", std::move(problems),
                std::to_string(student.tensors.size()) + " tensors match the " +
                    std::string(arch_name(plan.student.arch)) + " table and config.json");
}

CheckResult check_file_hashes(const Checkpoint& student, const ConversionPlan& plan,
                              const std::vector<Digest>& streamed) {
  const auto hashes = student_hashes(student);
  std::vector<std::string> problems;
  for (size_t i = 0; i < plan.tensors.size(); ++i) {
    const auto it = hashes.find(plan.tensors[i].name);
    if (it == hashes.end())
      problems.push_back("tensor '" + plan.tensors[i].name + "' is missing from the output");
    else if (it->second != streamed[i])
      problems.push_back("tensor '" + plan.tensors[i].name + "' reads back as sha256 " + to_hex(it->second) + "; " +
                         to_hex(streamed[i]) + " was written");
  }
  return finish("file_hashes", std::move(problems),
                std::to_string(plan.tensors.size()) + " tensors re-read from disk hash as written");
}

CheckResult check_copies_identical(const Checkpoint& student, const ConversionPlan& plan) {
  std::vector<NamedTensor> teacher_views, student_views;
  std::vector<const PlannedTensor*> copied;
  for (const PlannedTensor& t : plan.tensors) {
    if (t.provenance != Provenance::kCopy) continue;
    const NamedTensor* s = student.find(t.name);
    if (!s) continue;  // reported by file_hashes
    copied.push_back(&t);
    teacher_views.push_back(*t.source);
    student_views.push_back(*s);
  }
  const std::vector<Digest> teacher_digests = sha256_tensors(teacher_views);
  const std::vector<Digest> student_digests = sha256_tensors(student_views);
  std::vector<std::string> problems;
  for (size_t i = 0; i < copied.size(); ++i)
    if (teacher_digests[i] != student_digests[i])
      problems.push_back("tensor '" + copied[i]->name + "' (sha256 " + to_hex(student_digests[i]) +
                         ") differs from teacher tensor '" + copied[i]->source->name + "' (sha256 " +
                         to_hex(teacher_digests[i]) + ")");
  return finish("copies_identical", std::move(problems),
                std::to_string(copied.size()) + " copied tensors are byte-identical to the teacher's");
}

std::vector<CheckResult> check_forward(const Checkpoint& student, const Checkpoint& teacher, const ConversionPlan& plan,
                                       Probe* probe, nlohmann::json* teacher_forced_layers) {
  std::vector<int64_t> tokens = plan.layout.probe_tokens;
  if (tokens.empty()) tokens = {1, 2, 3, 4, 5, 6, 7, 8};
  // A probe id past a small vocabulary wraps around, so one layout probes every teacher size.
  for (int64_t& t : tokens) t %= plan.student.vocab_size;

  ForwardOptions options;
  options.compute = ComputeMode::kF32;
  options.collect_hidden = true;
  const Model student_model(student);
  ForwardState student_state = student_model.new_state();
  const ForwardResult s = student_model.forward(tokens, student_state, options);

  std::vector<CheckResult> out;
  {
    std::vector<std::string> problems;
    const auto bad = std::find_if(s.logits.begin(), s.logits.end(), [](float x) { return !std::isfinite(x); });
    if (bad != s.logits.end()) {
      const auto at = static_cast<size_t>(bad - s.logits.begin());
      problems.push_back("logit " + std::to_string(at % s.vocab_size) + " at position " +
                         std::to_string(at / s.vocab_size) + " is " + std::to_string(*bad));
    }
    out.push_back(finish("finite_logits", std::move(problems),
                         std::to_string(s.logits.size()) + " logits over " + std::to_string(tokens.size()) +
                             " probe tokens are finite"));
  }

  {
    // Teacher-forced: the same tokens through the teacher; the layers before the first converted one hold the
    // teacher's own weights, so their outputs must match — exactly when those weights were copied byte for byte.
    const int first = first_converted_layer(plan);
    bool verbatim = true;
    for (const PlannedTensor& t : plan.tensors)
      if (t.layer < first && t.provenance != Provenance::kCopy) verbatim = false;
    const Model teacher_model(teacher, plan.teacher);
    ForwardState teacher_state = teacher_model.new_state();
    ForwardOptions teacher_options = options;
    teacher_options.collect_ple_inputs = true;  // the teacher-forced run below feeds them to both models
    const ForwardResult r = teacher_model.forward(tokens, teacher_state, teacher_options);
    std::vector<std::string> problems;
    double worst = 0;
    for (int k = 0; k <= first && k < static_cast<int>(s.hidden.size()); ++k) {
      double max_abs = 0, max_diff = 0;
      for (size_t i = 0; i < r.hidden[k].size(); ++i) {
        max_abs = std::max(max_abs, std::abs(static_cast<double>(r.hidden[k][i])));
        max_diff = std::max(max_diff, std::abs(static_cast<double>(s.hidden[k][i]) - r.hidden[k][i]));
      }
      worst = std::max(worst, max_diff);
      const double tolerance = verbatim ? 0.0 : 1e-2 * max_abs;  // a dtype cast rounds the copied weights
      if (!(max_diff <= tolerance))
        problems.push_back("hidden state " + std::to_string(k) +
                           (k == 0 ? " (embedding)" : " (after layer " + std::to_string(k - 1) + ")") +
                           " differs from the teacher's by " + std::to_string(max_diff) + " (allowed " +
                           std::to_string(tolerance) + ")");
    }
    out.push_back(finish("unchanged_prefix", std::move(problems),
                         "hidden states 0.." + std::to_string(first) + " (layers before the first converted layer " +
                             std::to_string(first) + ") match the teacher's, max |diff| " + std::to_string(worst)));

    std::vector<LayerComparison> layers;
    out.push_back(check_teacher_forced(student_model, teacher_model, plan, r, options, &layers));
    if (teacher_forced_layers) {
      *teacher_forced_layers = nlohmann::json::array();
      for (const LayerComparison& c : layers) teacher_forced_layers->push_back(c.to_json());
    }
  }

  if (probe) {
    probe->tokens = tokens;
    probe->top_k = std::max(1, std::min<int>(plan.layout.probe_top_k, static_cast<int>(s.vocab_size)));
    probe->top.clear();
    for (int64_t p = 0; p < s.tokens; ++p) {
      const auto row = s.logits_row(p);
      std::vector<int64_t> ids(row.size());
      std::iota(ids.begin(), ids.end(), 0);
      std::partial_sort(ids.begin(), ids.begin() + probe->top_k, ids.end(), [&](int64_t a, int64_t b) {
        return row[a] != row[b] ? row[a] > row[b] : a < b;  // ties by id, so the probe is deterministic
      });
      std::vector<std::pair<int64_t, float>> best;
      for (int i = 0; i < probe->top_k; ++i) best.emplace_back(ids[i], row[ids[i]]);
      probe->top.push_back(std::move(best));
    }
  }
  return out;
}

Verification verify_student(const Checkpoint& student, const Checkpoint& teacher, const ConversionPlan& plan,
                            const std::vector<Digest>& streamed, Probe* probe) {
  Verification v;
  v.checks.push_back(check_structure(student, plan));
  v.checks.push_back(check_file_hashes(student, plan, streamed));
  v.checks.push_back(check_copies_identical(student, plan));
  // The forward pass needs a structurally sound student; running it on a broken one would only add noise.
  if (v.passed()) {
    for (CheckResult& c : check_forward(student, teacher, plan, probe, &v.teacher_forced_layers))
      v.checks.push_back(std::move(c));
  } else {
    for (const char* name : {"finite_logits", "unchanged_prefix", "teacher_forced"})
      v.checks.push_back({name, CheckStatus::kSkipped, "not run: an earlier check failed", {}});
  }
  return v;
}

}  // namespace hx
