// The statistics of verify/compare.h.
#include "verify/compare.h"

#include <algorithm>
#include <cmath>
#include <cstdio>

#include "formats/errors.h"

namespace hx {
namespace {

// ln softmax(logits) in double: x − max − ln Σ exp(x − max).
void log_softmax(std::span<const float> logits, std::vector<double>& out) {
  out.resize(logits.size());
  double max = -INFINITY;
  for (float v : logits) max = std::max(max, static_cast<double>(v));
  double sum = 0;
  for (float v : logits) sum += std::exp(static_cast<double>(v) - max);
  const double log_sum = std::log(sum) + max;
  for (size_t i = 0; i < logits.size(); ++i) out[i] = static_cast<double>(logits[i]) - log_sum;
}

int64_t argmax(std::span<const float> logits) {
  return std::max_element(logits.begin(), logits.end()) - logits.begin();  // first of equal maxima
}

void check_finite(std::span<const float> row, const std::string& name, int64_t position) {
  for (size_t v = 0; v < row.size(); ++v) {
    if (!std::isfinite(row[v]))
      throw FormatError(name + ": logit of token " + std::to_string(v) + " at position " + std::to_string(position) +
                        " is " + (std::isnan(row[v]) ? "NaN" : "inf") + "; expected finite logits");
  }
}

double cosine(const float* a, const float* b, int64_t n) {
  double ab = 0, aa = 0, bb = 0;
  for (int64_t i = 0; i < n; ++i) {
    ab += static_cast<double>(a[i]) * b[i];
    aa += static_cast<double>(a[i]) * a[i];
    bb += static_cast<double>(b[i]) * b[i];
  }
  if (aa == 0 && bb == 0) return 1.0;
  if (aa == 0 || bb == 0) return 0.0;
  return ab / std::sqrt(aa * bb);
}

}  // namespace

double percentile_of_sorted(std::span<const double> sorted, double fraction) {
  if (sorted.empty()) throw UsageError("percentile of no values");
  if (!(fraction >= 0 && fraction <= 1)) throw UsageError("percentile fraction must lie in [0, 1]");
  const double rank = fraction * static_cast<double>(sorted.size() - 1);
  const size_t below = static_cast<size_t>(std::floor(rank));
  const size_t above = std::min(below + 1, sorted.size() - 1);
  const double weight = rank - static_cast<double>(below);
  return sorted[below] + (sorted[above] - sorted[below]) * weight;
}

LogitComparison compare_logits(std::span<const float> ref_logits, std::span<const float> model_logits, int64_t vocab,
                               std::span<const int64_t> tokens, const std::string& ref_name,
                               const std::string& model_name) {
  const int64_t T = static_cast<int64_t>(tokens.size());
  if (vocab <= 0) throw UsageError("compare_logits: the vocabulary is empty");
  if (T < 2)
    throw UsageError("comparing models needs at least 2 tokens (position i predicts token i+1), got " +
                     std::to_string(T));
  const size_t want = static_cast<size_t>(T * vocab);
  if (ref_logits.size() != want || model_logits.size() != want)
    throw UsageError("compare_logits: expected " + std::to_string(T) + " x " + std::to_string(vocab) + " logits, got " +
                     std::to_string(ref_logits.size()) + " (" + ref_name + ") and " +
                     std::to_string(model_logits.size()) + " (" + model_name + ")");
  LogitComparison c;
  c.tokens = T;
  c.predictions = T - 1;
  std::vector<double> klds, delta_ps;
  std::vector<double> log_p, log_q;
  double sum_kld = 0, sum_nll_ref = 0, sum_nll_model = 0, sum_dp = 0, sum_dp2 = 0;
  int64_t same_top = 0;
  for (int64_t i = 0; i + 1 < T; ++i) {
    const auto p_row = ref_logits.subspan(static_cast<size_t>(i * vocab), static_cast<size_t>(vocab));
    const auto q_row = model_logits.subspan(static_cast<size_t>(i * vocab), static_cast<size_t>(vocab));
    check_finite(p_row, ref_name, i);
    check_finite(q_row, model_name, i);
    log_softmax(p_row, log_p);
    log_softmax(q_row, log_q);
    double kld = 0;
    for (int64_t v = 0; v < vocab; ++v) {
      const double lp = log_p[static_cast<size_t>(v)];
      kld += std::exp(lp) * (lp - log_q[static_cast<size_t>(v)]);
    }
    kld = std::max(kld, 0.0);  // rounding can leave a tiny negative sum for identical rows
    klds.push_back(kld);
    sum_kld += kld;
    same_top += argmax(p_row) == argmax(q_row);
    const int64_t next = tokens[static_cast<size_t>(i + 1)];
    if (next < 0 || next >= vocab)
      throw FormatError("token id " + std::to_string(next) + " at position " + std::to_string(i + 1) +
                        " is outside the vocabulary [0, " + std::to_string(vocab) + ")");
    const double lp_next = log_p[static_cast<size_t>(next)], lq_next = log_q[static_cast<size_t>(next)];
    sum_nll_ref -= lp_next;
    sum_nll_model -= lq_next;
    const double dp = std::exp(lq_next) - std::exp(lp_next);
    delta_ps.push_back(dp);
    sum_dp += dp;
    sum_dp2 += dp * dp;
  }
  const double n = static_cast<double>(c.predictions);
  std::sort(klds.begin(), klds.end());
  std::sort(delta_ps.begin(), delta_ps.end());
  c.kld = {sum_kld / n, percentile_of_sorted(klds, 0.99), klds.back()};
  c.top1_agreement = static_cast<double>(same_top) / n;
  c.ppl_ref = std::exp(sum_nll_ref / n);
  c.ppl_model = std::exp(sum_nll_model / n);
  c.ppl_ratio = std::exp((sum_nll_model - sum_nll_ref) / n);
  c.delta_p = {std::sqrt(sum_dp2 / n), percentile_of_sorted(delta_ps, 0.01), percentile_of_sorted(delta_ps, 0.99),
               sum_dp / n};
  return c;
}

std::vector<LayerCosine> compare_hidden(const std::vector<std::vector<float>>& ref,
                                        const std::vector<std::vector<float>>& model, int64_t tokens) {
  std::vector<LayerCosine> out;
  if (ref.size() != model.size() || tokens <= 0) return out;
  for (size_t k = 0; k < ref.size(); ++k) {
    if (ref[k].size() != model[k].size() || ref[k].size() % static_cast<size_t>(tokens) != 0) return {};
  }
  for (size_t k = 0; k < ref.size(); ++k) {
    const int64_t width = static_cast<int64_t>(ref[k].size()) / tokens;
    LayerCosine layer;
    layer.index = static_cast<int>(k);
    layer.min = 1.0;
    double sum = 0;
    for (int64_t t = 0; t < tokens; ++t) {
      const double cos = cosine(ref[k].data() + t * width, model[k].data() + t * width, width);
      sum += cos;
      layer.min = std::min(layer.min, cos);
    }
    layer.mean = sum / static_cast<double>(tokens);
    out.push_back(layer);
  }
  return out;
}

void check_same_vocabulary(int64_t reference_vocab, int64_t model_vocab, const std::string& ref_name,
                           const std::string& model_name) {
  if (reference_vocab != model_vocab)
    throw FormatError(model_name + " has a vocabulary of " + std::to_string(model_vocab) + " tokens, " + ref_name +
                      " of " + std::to_string(reference_vocab) +
                      "; only models with the same vocabulary can be compared");
}

std::vector<std::string> threshold_failures(const LogitComparison& c, const CompareThresholds& thresholds) {
  std::vector<std::string> failures;
  char line[160];
  if (thresholds.max_kld && !(c.kld.mean <= *thresholds.max_kld)) {
    std::snprintf(line, sizeof line, "mean KLD %.6g > --max-kld %.6g", c.kld.mean, *thresholds.max_kld);
    failures.push_back(line);
  }
  if (thresholds.min_top1 && !(c.top1_agreement >= *thresholds.min_top1)) {
    std::snprintf(line, sizeof line, "top-1 agreement %.6g < --min-top1 %.6g", c.top1_agreement, *thresholds.min_top1);
    failures.push_back(line);
  }
  return failures;
}

nlohmann::json comparison_json(const ModelComparison& c) {
  const LogitComparison& l = c.logits;
  nlohmann::json out;
  out["tokens"] = l.tokens;
  out["predictions"] = l.predictions;
  out["kld"] = {{"mean", l.kld.mean}, {"p99", l.kld.p99}, {"max", l.kld.max}};
  out["top1_agreement"] = l.top1_agreement;
  out["ppl_ratio"] = l.ppl_ratio;
  out["ppl"] = {{"ref", l.ppl_ref}, {"model", l.ppl_model}};
  out["delta_p"] = {{"rms", l.delta_p.rms}, {"p1", l.delta_p.p1}, {"p99", l.delta_p.p99}, {"mean", l.delta_p.mean}};
  nlohmann::json layers = nlohmann::json::array();
  for (const LayerCosine& layer : c.layers)
    layers.push_back({{"index", layer.index}, {"cosine_mean", layer.mean}, {"cosine_min", layer.min}});
  out["layers"] = layers;
  return out;
}

std::string comparison_text(const ModelComparison& c) {
  const LogitComparison& l = c.logits;
  std::string text;
  char line[200];
  auto add = [&](const char* format, auto... values) {
    std::snprintf(line, sizeof line, format, values...);
    text += line;
  };
  add("%lld tokens, %lld predictions\n", static_cast<long long>(l.tokens), static_cast<long long>(l.predictions));
  add("Mean KLD:        %10.6f\n", l.kld.mean);
  add("99.0%% KLD:       %10.6f\n", l.kld.p99);
  add("Maximum KLD:     %10.6f\n", l.kld.max);
  add("Same top p:      %9.3f %%\n", 100.0 * l.top1_agreement);
  add("PPL(Q)/PPL(ref): %10.6f   (PPL(Q) = %.4f, PPL(ref) = %.4f)\n", l.ppl_ratio, l.ppl_model, l.ppl_ref);
  add("RMS Δp:          %9.3f %%\n", 100.0 * l.delta_p.rms);
  add("Mean Δp:         %9.3f %%\n", 100.0 * l.delta_p.mean);
  add(" 1.0%% Δp:        %9.3f %%\n", 100.0 * l.delta_p.p1);
  add("99.0%% Δp:        %9.3f %%\n", 100.0 * l.delta_p.p99);
  if (!c.layers.empty()) {
    text += "hidden-state cosine (0: embedding, k: after layer k-1, last: final norm)\n";
    for (const LayerCosine& layer : c.layers) add("  %3d  mean %.6f  min %.6f\n", layer.index, layer.mean, layer.min);
  }
  return text;
}

}  // namespace hx
