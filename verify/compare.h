// Comparing a model with a reference on one token sequence: llama.cpp perplexity's KL-divergence statistics
// (examples/perplexity, --kl-divergence) and more — KLD(ref‖model) mean / p99 / max, top-1 agreement,
// PPL(model)/PPL(ref), Δp percentiles and RMS Δp of the actual next token — plus the hidden-state cosine of every
// layer. `hxforge verify --against` (tools/verify.cc) prints and gates on these.
//
// Definitions (position i predicts token i+1, so a sequence of T tokens gives T-1 predictions, as in llama.cpp,
// which scores every position that has a next token):
//   p = softmax(ref logits_i), q = softmax(model logits_i), computed in double from f32 logits
//   KLD_i      = Σ_v p_v (ln p_v − ln q_v)                       (≥ 0; llama.cpp's "KLD")
//   top-1      = fraction of i with argmax p = argmax q           (llama.cpp's "Same top p"; ties: lowest id)
//   PPL        = exp(−mean_i ln p(token_{i+1})), likewise for q;  ppl_ratio = PPL(model) / PPL(ref)
//   Δp_i       = q(token_{i+1}) − p(token_{i+1});  rms = sqrt(mean Δp²);  p1 / p99 = percentiles of Δp
//   percentiles: linear interpolation between closest ranks of the sorted values (numpy's default)
//   layer cosine: cos(h_ref[k][t], h_model[k][t]) per token t, reported as mean and minimum over tokens
// Design goals: plain functions over spans (unit-tested on hand-computed cases), thread-count independent (sums in
// position order), the JSON field names of ../shared/spec/cli.md `verify --json`.
// Non-goals: running models (compare_models does only the two forward calls); chunking long texts as llama.cpp does
// (one sequence, every position scored); statistical error bars.
#pragma once

#include <cstdint>
#include <nlohmann/json.hpp>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "verify/forward.h"

namespace hx {

struct KldStats {
  double mean = 0, p99 = 0, max = 0;
};
struct DeltaPStats {
  double rms = 0, p1 = 0, p99 = 0, mean = 0;
};

struct LogitComparison {
  int64_t tokens = 0;       // T
  int64_t predictions = 0;  // T - 1: the positions with a next token
  KldStats kld;
  double top1_agreement = 0;
  double ppl_ref = 0, ppl_model = 0, ppl_ratio = 0;
  DeltaPStats delta_p;
};

// Compares [T, vocab] logits row by row against `tokens` (T ids, each in [0, vocab)). Throws UsageError when the
// sizes disagree or T < 2 (nothing to predict), FormatError when a logit is NaN or inf (naming the model, the
// position and the token: `model_name` / `ref_name` label them).
LogitComparison compare_logits(std::span<const float> ref_logits, std::span<const float> model_logits, int64_t vocab,
                               std::span<const int64_t> tokens, const std::string& ref_name = "reference",
                               const std::string& model_name = "model");

struct LayerCosine {
  int index = 0;  // ForwardResult::hidden's index: 0 the embedding, k the output of layer k-1, L the final norm
  double mean = 0, min = 0;
};
// Per hidden state, the cosine of each token's vector in the two runs. Empty when the runs' hidden states differ in
// count or size (models of different shapes: nothing layer-to-layer to compare). A zero vector against a zero
// vector counts as cosine 1, against a non-zero one as 0.
std::vector<LayerCosine> compare_hidden(const std::vector<std::vector<float>>& ref,
                                        const std::vector<std::vector<float>>& model, int64_t tokens);

// The value at `fraction` ∈ [0, 1] of ascending `sorted` values, interpolated linearly between closest ranks.
double percentile_of_sorted(std::span<const double> sorted, double fraction);

struct ModelComparison {
  LogitComparison logits;
  std::vector<LayerCosine> layers;
};
// Throws FormatError naming both models when their vocabularies differ (nothing to compare position by position).
void check_same_vocabulary(int64_t reference_vocab, int64_t model_vocab, const std::string& ref_name,
                           const std::string& model_name);

// Runs both models over `tokens` (each from an empty state, hidden states collected) and compares them. Throws
// FormatError when the vocabularies differ or a token id is outside them. AnyModel is hx::Model or anything with
// its forward contract (vocab_size(), new_state(), forward(tokens, state, options)) — the CUDA model.
template <typename AnyModel>
ModelComparison compare_models(const AnyModel& reference, const AnyModel& model, std::span<const int64_t> tokens,
                               ComputeMode compute, const std::string& ref_name = "reference",
                               const std::string& model_name = "model") {
  check_same_vocabulary(reference.vocab_size(), model.vocab_size(), ref_name, model_name);
  check_token_ids(tokens, reference.vocab_size());
  ForwardOptions options;
  options.compute = compute;
  options.collect_hidden = true;
  auto ref_state = reference.new_state();
  const ForwardResult ref_run = reference.forward(tokens, ref_state, options);
  auto model_state = model.new_state();
  const ForwardResult model_run = model.forward(tokens, model_state, options);
  ModelComparison c;
  c.logits = compare_logits(ref_run.logits, model_run.logits, reference.vocab_size(), tokens, ref_name, model_name);
  c.layers = compare_hidden(ref_run.hidden, model_run.hidden, static_cast<int64_t>(tokens.size()));
  return c;
}

struct CompareThresholds {
  std::optional<double> max_kld;   // on the mean KLD
  std::optional<double> min_top1;  // on the top-1 agreement fraction
};
// The thresholds `c` fails, one sentence each ("mean KLD 0.0031 > --max-kld 0.0015"); empty when it passes.
std::vector<std::string> threshold_failures(const LogitComparison& c, const CompareThresholds& thresholds);

// cli.md's fields: {"tokens", "kld": {"mean", "p99", "max"}, "top1_agreement", "ppl_ratio",
// "delta_p": {"rms", "p1", "p99"}} plus "predictions", "ppl": {"ref", "model"}, "delta_p.mean" and
// "layers": [{"index", "cosine_mean", "cosine_min"}].
nlohmann::json comparison_json(const ModelComparison& c);
// A short human-readable report (llama.cpp's wording where it has one).
std::string comparison_text(const ModelComparison& c);

}  // namespace hx
