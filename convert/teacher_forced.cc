#include "convert/teacher_forced.h"

#include <algorithm>
#include <cmath>
#include <cstdio>

#include "arch/model_config.h"

namespace hx {
namespace {

bool is_softmax_attention(LayerKind k) { return k == LayerKind::kSlidingAttention || k == LayerKind::kFullAttention; }

LayerRole role_of(LayerKind teacher, LayerKind student) {
  if (teacher == student) return LayerRole::kKept;
  if (is_softmax_attention(teacher) && student == LayerKind::kNoPEAttention) return LayerRole::kNoPE;
  return LayerRole::kConverted;
}

// Largest |a − b| and largest |b| over the first `count` values.
std::pair<double, double> max_diff_and_scale(std::span<const float> a, std::span<const float> b, size_t count) {
  double diff = 0, scale = 0;
  for (size_t i = 0; i < count; ++i) {
    diff = std::max(diff, std::abs(static_cast<double>(a[i]) - static_cast<double>(b[i])));
    scale = std::max(scale, std::abs(static_cast<double>(b[i])));
  }
  return {diff, scale};
}

std::string number(double x) {
  char text[32];
  std::snprintf(text, sizeof text, "%.6g", x);
  return text;
}

}  // namespace

const char* layer_role_name(LayerRole role) {
  switch (role) {
    case LayerRole::kKept:
      return "kept";
    case LayerRole::kNoPE:
      return "nope";
    case LayerRole::kConverted:
      return "converted";
  }
  return "?";
}

double cosine_similarity(std::span<const float> a, std::span<const float> b) {
  double dot = 0, aa = 0, bb = 0;
  for (size_t i = 0; i < a.size() && i < b.size(); ++i) {
    dot += static_cast<double>(a[i]) * b[i];
    aa += static_cast<double>(a[i]) * a[i];
    bb += static_cast<double>(b[i]) * b[i];
  }
  if (aa == 0 && bb == 0) return 1.0;
  if (aa == 0 || bb == 0) return 0.0;
  return dot / std::sqrt(aa * bb);
}

nlohmann::json LayerComparison::to_json() const {
  nlohmann::json j = {{"layer", layer},
                      {"role", layer_role_name(role)},
                      {"teacher_kind", teacher_kind},
                      {"student_kind", student_kind},
                      {"output_cosine", output_cosine},
                      {"mixer_cosine", mixer_cosine},
                      {"passed", passed}};
  if (tica_max_abs >= 0) {
    j["tica_max_abs"] = tica_max_abs;
    j["tica_must_be_zero"] = tica_must_be_zero;
  }
  if (role != LayerRole::kConverted) {
    j["verbatim"] = verbatim;
    j["exact_positions"] = exact_positions;
    j["max_abs_diff"] = max_abs_diff;
    j["tolerance"] = tolerance;
  }
  return j;
}

CheckResult check_teacher_forced(const Model& student, const Model& teacher, const ConversionPlan& plan,
                                 const ForwardResult& teacher_run, const ForwardOptions& options,
                                 std::vector<LayerComparison>* layers) {
  const int L = plan.student.num_layers();
  const int64_t T = teacher_run.tokens, D = teacher.hidden_size();
  std::vector<std::string> problems;
  std::vector<LayerComparison> out;

  std::vector<bool> verbatim(static_cast<size_t>(L), true), tica_zeroed(static_cast<size_t>(L), false);
  for (const PlannedTensor& t : plan.tensors) {
    if (t.layer < 0 || t.layer >= L) continue;
    if (t.provenance != Provenance::kCopy) verbatim[static_cast<size_t>(t.layer)] = false;
    if (t.local_name == "self_attn.tica.o_proj.weight" && t.provenance == Provenance::kInit &&
        t.init.kind == InitKind::kZeros)
      tica_zeroed[static_cast<size_t>(t.layer)] = true;
  }

  ForwardState teacher_state = teacher.new_state(), student_state = student.new_state();
  std::vector<float> h = teacher_run.hidden.at(0);  // the teacher's own residual stream, layer by layer
  int kept = 0, nope = 0, converted = 0, tica_zero = 0;
  double worst_converted = 1.0;
  for (int layer = 0; layer < L; ++layer) {
    const LayerInput input{h, teacher_run.ple_inputs};
    LayerTrace teacher_trace, student_trace;
    std::vector<float> teacher_out = teacher.forward_layer(layer, input, teacher_state, options, &teacher_trace);
    const std::vector<float> student_out = student.forward_layer(layer, input, student_state, options, &student_trace);

    // One code path: the teacher run layer by layer is its own forward().
    const std::vector<float>& expected =
        layer + 1 < L ? teacher_run.hidden.at(static_cast<size_t>(layer + 1)) : teacher_run.final_norm_input;
    if (teacher_out != expected)
      problems.push_back("layer " + std::to_string(layer) +
                         ": the teacher run layer by layer differs from its own forward pass (max |diff| " +
                         number(max_diff_and_scale(teacher_out, expected, expected.size()).first) + ")");

    LayerComparison c;
    c.layer = layer;
    const LayerKind tk = plan.teacher.layers[static_cast<size_t>(layer)].kind;
    const LayerKind sk = plan.student.layers[static_cast<size_t>(layer)].kind;
    c.teacher_kind = std::string(layer_kind_name(tk));
    c.student_kind = std::string(layer_kind_name(sk));
    c.role = role_of(tk, sk);
    c.verbatim = verbatim[static_cast<size_t>(layer)];
    c.output_cosine = cosine_similarity(student_out, teacher_out);
    c.mixer_cosine = cosine_similarity(student_trace.mixer_output, teacher_trace.mixer_output);
    if (!student_trace.rwkv_output.empty()) {
      c.tica_max_abs =
          max_diff_and_scale(student_trace.mixer_output, student_trace.rwkv_output, student_trace.rwkv_output.size())
              .first;
      c.tica_must_be_zero = tica_zeroed[static_cast<size_t>(layer)];
      if (c.tica_must_be_zero && !(c.tica_max_abs == 0)) {
        c.passed = false;
        problems.push_back("layer " + std::to_string(layer) + " (" + c.student_kind + "): TICA adds up to " +
                           number(c.tica_max_abs) +
                           " to the mixer output; with its output projection initialised to zeros it must add "
                           "exactly 0");
      } else if (c.tica_must_be_zero) {
        ++tica_zero;
      }
    }
    if (c.role == LayerRole::kConverted) {
      ++converted;
      worst_converted = std::min(worst_converted, c.mixer_cosine);
      if (!std::isfinite(c.mixer_cosine) || !std::isfinite(c.output_cosine)) {
        c.passed = false;
        problems.push_back("layer " + std::to_string(layer) + " (converted): the mixer output is not finite");
      }
    } else {
      c.role == LayerRole::kKept ? ++kept : ++nope;
      c.exact_positions = c.role == LayerRole::kKept ? T : std::min<int64_t>(T, 1);
      const auto [diff, scale] =
          max_diff_and_scale(student_out, teacher_out, static_cast<size_t>(c.exact_positions * D));
      c.max_abs_diff = diff;
      c.tolerance = c.verbatim ? 0.0 : kCastLayerTolerance * scale;
      c.passed = diff <= c.tolerance;  // false for NaN too
      if (!c.passed)
        problems.push_back("layer " + std::to_string(layer) + " (" + layer_role_name(c.role) + ", " + c.student_kind +
                           "): fed the teacher's hidden state, its output over the first " +
                           std::to_string(c.exact_positions) + " position(s) differs from the teacher layer's by " +
                           number(diff) + " (allowed " + number(c.tolerance) + (c.verbatim ? ": bit for bit" : "") +
                           ")");
    }
    out.push_back(c);
    h = std::move(teacher_out);
  }
  if (layers) *layers = out;

  std::string summary =
      std::to_string(kept) + " kept layers equal the teacher's" +
      (kept > 0 && std::all_of(out.begin(), out.end(),
                               [](const LayerComparison& c) { return c.role != LayerRole::kKept || c.verbatim; })
           ? " bit for bit"
           : "");
  if (nope > 0) summary += ", " + std::to_string(nope) + " NoPE layers exact at position 0";
  if (converted > 0)
    summary += "; " + std::to_string(converted) + " converted layers, mixer cosine vs teacher attention ≥ " +
               number(worst_converted) + " (informative)";
  if (tica_zero > 0) summary += "; TICA adds exactly 0 in " + std::to_string(tica_zero) + " fresh layers";
  CheckResult r{"teacher_forced", problems.empty() ? CheckStatus::kPassed : CheckStatus::kFailed, summary, problems};
  if (!problems.empty())
    r.summary = std::to_string(problems.size()) + " problem" + (problems.size() == 1 ? "" : "s") + ": " + problems[0];
  return r;
}

}  // namespace hx
