// The comparison statistics of `hxforge verify --against` (verify/compare.h), on cases computed by hand: KLD of
// known distributions, top-1 agreement, PPL ratio, Δp and its percentiles, per-layer cosines.
#include <gtest/gtest.h>

#include <cmath>
#include <vector>

#include "formats/errors.h"
#include "verify/compare.h"

namespace hx {
namespace {

// Sums of a few exp/log terms in double: agreement to a few ulps of 1.0 (no accumulation over long rows).
constexpr double kExact = 1e-12;

// Logits whose softmax is `probs` (ln p; any constant shift gives the same softmax).
std::vector<float> logits_of(const std::vector<double>& probs) {
  std::vector<float> out;
  for (double p : probs) out.push_back(static_cast<float>(std::log(p)));
  return out;
}

double kld(const std::vector<double>& p, const std::vector<double>& q) {
  double s = 0;
  for (size_t i = 0; i < p.size(); ++i) s += p[i] * std::log(p[i] / q[i]);
  return s;
}

TEST(CompareLogits, IdenticalRunsHaveZeroDivergenceAndFullAgreement) {
  const std::vector<float> row = {1.0f, 2.0f, 0.5f, -1.0f};
  std::vector<float> logits;
  for (int t = 0; t < 3; ++t) logits.insert(logits.end(), row.begin(), row.end());
  const std::vector<int64_t> tokens = {0, 1, 3};
  const LogitComparison c = compare_logits(logits, logits, 4, tokens);
  EXPECT_EQ(c.tokens, 3);
  EXPECT_EQ(c.predictions, 2);
  EXPECT_NEAR(c.kld.mean, 0.0, kExact);
  EXPECT_NEAR(c.kld.max, 0.0, kExact);
  EXPECT_EQ(c.top1_agreement, 1.0);
  EXPECT_NEAR(c.ppl_ratio, 1.0, kExact);
  EXPECT_NEAR(c.delta_p.rms, 0.0, kExact);
}

TEST(CompareLogits, KnownDistributionsGiveTheirKldPplAndDeltaP) {
  // Two predictions over a vocabulary of 3, with hand-picked probabilities.
  const std::vector<double> p0 = {0.7, 0.2, 0.1}, q0 = {0.5, 0.3, 0.2};
  const std::vector<double> p1 = {0.1, 0.6, 0.3}, q1 = {0.1, 0.3, 0.6};
  std::vector<float> ref = logits_of(p0), model = logits_of(q0);
  for (float v : logits_of(p1)) ref.push_back(v);
  for (float v : logits_of(q1)) model.push_back(v);
  for (int i = 0; i < 3; ++i) {  // the last position predicts nothing: its logits must not count
    ref.push_back(static_cast<float>(i));
    model.push_back(static_cast<float>(-5 * i));
  }
  const std::vector<int64_t> tokens = {2, 1, 2};  // next tokens: 1 (after position 0), 2 (after position 1)
  const LogitComparison c = compare_logits(ref, model, 3, tokens);
  // f32 logits of ln p carry ~1e-7 relative error, so the statistics agree to ~1e-6.
  constexpr double kFromF32Logits = 1e-6;
  const double k0 = kld(p0, q0), k1 = kld(p1, q1);
  EXPECT_NEAR(c.kld.mean, (k0 + k1) / 2, kFromF32Logits);
  EXPECT_NEAR(c.kld.max, std::max(k0, k1), kFromF32Logits);
  EXPECT_NEAR(c.kld.p99, std::min(k0, k1) + 0.99 * std::abs(k1 - k0), kFromF32Logits);
  EXPECT_EQ(c.top1_agreement, 0.5);  // argmax agrees at position 0 (token 0), not at 1 (1 vs 2)
  // PPL ratio = exp(mean ln p_ref(next) − mean ln p_model(next)).
  const double ratio = std::exp((std::log(0.2) + std::log(0.3) - std::log(0.3) - std::log(0.6)) / 2);
  EXPECT_NEAR(c.ppl_ratio, ratio, kFromF32Logits);
  const double d0 = 0.3 - 0.2, d1 = 0.6 - 0.3;
  EXPECT_NEAR(c.delta_p.rms, std::sqrt((d0 * d0 + d1 * d1) / 2), kFromF32Logits);
  EXPECT_NEAR(c.delta_p.p1, d0 + 0.01 * (d1 - d0), kFromF32Logits);
  EXPECT_NEAR(c.delta_p.p99, d0 + 0.99 * (d1 - d0), kFromF32Logits);
}

TEST(CompareLogits, RejectsWhatCannotBeCompared) {
  const std::vector<float> two_rows(8, 0.0f);
  const std::vector<int64_t> one = {0};
  EXPECT_THROW(compare_logits(std::vector<float>(4), std::vector<float>(4), 4, one), UsageError);  // T < 2
  const std::vector<int64_t> two = {0, 1};
  EXPECT_THROW(compare_logits(two_rows, std::vector<float>(4), 4, two), UsageError);  // sizes differ
  std::vector<float> nan_rows = two_rows;
  nan_rows[2] = NAN;
  try {
    compare_logits(two_rows, nan_rows, 4, two, "ref.safetensors", "q.safetensors");
    FAIL() << "NaN accepted";
  } catch (const FormatError& e) {
    EXPECT_NE(std::string(e.what()).find("q.safetensors"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("position 0"), std::string::npos) << e.what();
  }
  const std::vector<int64_t> outside = {0, 9};
  EXPECT_THROW(compare_logits(two_rows, two_rows, 4, outside), FormatError);
}

TEST(Percentile, InterpolatesBetweenClosestRanks) {
  const std::vector<double> v = {1, 2, 3, 4, 5};
  EXPECT_EQ(percentile_of_sorted(v, 0.0), 1.0);
  EXPECT_EQ(percentile_of_sorted(v, 1.0), 5.0);
  EXPECT_EQ(percentile_of_sorted(v, 0.5), 3.0);
  EXPECT_DOUBLE_EQ(percentile_of_sorted(v, 0.99), 4.96);  // rank 3.96
  EXPECT_THROW(percentile_of_sorted(std::vector<double>{}, 0.5), UsageError);
}

TEST(CompareHidden, CosinePerLayerMeanAndMinimumOverTokens) {
  // Two tokens of width 2; layer 0 identical, layer 1 token 0 orthogonal, token 1 opposite.
  const std::vector<std::vector<float>> ref = {{1, 0, 0, 1}, {1, 0, 0, 1}};
  const std::vector<std::vector<float>> model = {{2, 0, 0, 3}, {0, 1, 0, -1}};
  const std::vector<LayerCosine> layers = compare_hidden(ref, model, 2);
  ASSERT_EQ(layers.size(), 2u);
  EXPECT_NEAR(layers[0].mean, 1.0, kExact);
  EXPECT_NEAR(layers[1].mean, -0.5, kExact);
  EXPECT_NEAR(layers[1].min, -1.0, kExact);
  EXPECT_TRUE(compare_hidden(ref, {{1, 0, 0, 1}}, 2).empty());  // different layer counts: nothing to compare
}

TEST(Thresholds, NameWhatFailed) {
  LogitComparison c;
  c.kld.mean = 0.002;
  c.top1_agreement = 0.9;
  EXPECT_TRUE(threshold_failures(c, {}).empty());
  EXPECT_TRUE(threshold_failures(c, {0.002, 0.9}).empty());  // limits are inclusive
  const auto failures = threshold_failures(c, {0.0015, 0.95});
  ASSERT_EQ(failures.size(), 2u);
  EXPECT_NE(failures[0].find("--max-kld"), std::string::npos);
  EXPECT_NE(failures[1].find("--min-top1"), std::string::npos);
}

TEST(ComparisonJson, HasTheFieldsOfTheCliContract) {
  ModelComparison c;
  c.logits.tokens = 5;
  c.layers = {{0, 1.0, 1.0}};
  const nlohmann::json j = comparison_json(c);
  for (const char* key : {"tokens", "kld", "top1_agreement", "ppl_ratio", "delta_p", "layers"})
    EXPECT_TRUE(j.contains(key)) << key;
  for (const char* key : {"mean", "p99", "max"}) EXPECT_TRUE(j["kld"].contains(key)) << key;
  for (const char* key : {"rms", "p1", "p99"}) EXPECT_TRUE(j["delta_p"].contains(key)) << key;
  EXPECT_EQ(j["tokens"], 5);
}

}  // namespace
}  // namespace hx
