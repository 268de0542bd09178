// The forward pass agrees with itself: prefill-then-decode equals one prefill, the thread count changes nothing, and
// the portable and AVX-512 kernels agree — on every architecture (the three oracle models and a synthetic hxa07i).
#include <gtest/gtest.h>

#include <omp.h>

#include <optional>
#include <string>
#include <vector>

#include "tests/forward_test_helpers.h"
#include "verify/forward.h"
#include "verify/kernels.h"

namespace hx {
namespace {

using test::max_abs_difference;
using test::oracle_dir;
using test::TempDir;

// Prefill-then-decode and 1-vs-2 threads: every kernel computes a row independently of how many rows a call holds
// and of how the work is split (verify/kernels.h, "Reference quality first"), and the forward pass only adds
// row-wise work around them, so the logits must agree bit for bit. Any difference is a bug, not noise.
constexpr double kBitIdentical = 0.0;
// Portable vs AVX-512 f32 products: the AVX-512 kernel fuses each multiply-add (one rounding), the portable one rounds
// twice, ≤ 1 ulp per term. Measured on these models: 5.4e-5 on Gemma-4 (its scale-1.0 attention amplifies q·k
// differences; the README's own f32 CPU-vs-CUDA gap there is 4.1e-5), ≤ 3e-5 on the others. 5e-4 is ~10× that and
// half the oracle f32 gate, while a kernel that drops or repeats a term moves logits by ≥ 1e-2.
constexpr double kIsaF32Tolerance = 5e-4;
// Portable vs AVX-512 bf16 products: the kernels compute identical sums except that vdpbf16ps flushes denormal
// products; bf16 activations × weights here are ≥ 1e-12, far above f32's denormal range, so no flush happens.
constexpr double kIsaBf16Tolerance = 0.0;

struct Case {
  const char* name;
  std::string model;              // path given to open_checkpoint
  std::vector<int64_t> tokens;
};

// A synthetic hxa07i (hxforge synth), made once for the whole suite.
const std::string& hxa07i_model() {
  static TempDir dir;
  static const std::string path = [] {
    const std::string out = dir.file("hxa07i");
    const auto r = test::run_hxforge("synth --quiet --arch hxa07i --preset tiny --seed 11 --out " + test::shell_quote(out));
    if (r.exit_code != 0) throw std::runtime_error("hxforge synth failed: " + r.output);
    return out;
  }();
  return path;
}

std::vector<int64_t> oracle_tokens(const std::string& model) {
  return test::token_ids(read_safetensors_file(oracle_dir() + "/" + model + "/expected.safetensors"));
}

// Case i, built on demand (the hxa07i one synthesizes a checkpoint).
Case case_at(int i) {
  switch (i) {
    case 0: return {"gemma4", oracle_dir() + "/gemma4-tiny", oracle_tokens("gemma4-tiny")};
    case 1: return {"llama", oracle_dir() + "/llama-tiny", oracle_tokens("llama-tiny")};
    case 2: return {"hxa079", oracle_dir() + "/hxa079-tiny/model.pth", oracle_tokens("hxa079-tiny")};
    default: {
      std::vector<int64_t> mixed;  // 24 tokens: TICA and the sliding window (8) see more than a window
      for (int t = 0; t < 24; ++t) mixed.push_back((t * 37 + 5) % 512);
      return {"hxa07i", hxa07i_model(), mixed};
    }
  }
}

std::vector<float> run_all(const Model& model, const std::vector<int64_t>& tokens, ComputeMode mode,
                           ForwardState* final_state = nullptr) {
  ForwardState state = model.new_state();
  ForwardOptions options;
  options.compute = mode;
  ForwardResult r = model.forward(tokens, state, options);
  if (final_state) *final_state = state;
  return r.logits;
}

class ForwardConsistency : public ::testing::TestWithParam<int> {
 protected:
  Case c() const { return case_at(GetParam()); }
};

TEST_P(ForwardConsistency, PrefillOfTenThenDecodeOneByOneEqualsOnePrefill) {
  const Case k = c();
  const Model model(open_checkpoint(k.model));
  for (ComputeMode mode : {ComputeMode::kF32, ComputeMode::kBF16}) {
    ForwardState whole_state;
    const std::vector<float> whole = run_all(model, k.tokens, mode, &whole_state);

    ForwardState state = model.new_state();
    ForwardOptions options;
    options.compute = mode;
    const std::span<const int64_t> ids(k.tokens);
    std::vector<float> streamed = model.forward(ids.first(10), state, options).logits;
    for (size_t t = 10; t < ids.size(); ++t) {
      const ForwardResult step = model.forward(ids.subspan(t, 1), state, options);
      ASSERT_EQ(step.logits.size(), static_cast<size_t>(model.vocab_size()));
      streamed.insert(streamed.end(), step.logits.begin(), step.logits.end());
    }
    EXPECT_EQ(state.position(), static_cast<int64_t>(ids.size()));
    EXPECT_LE(max_abs_difference(whole, streamed), kBitIdentical) << k.name << " " << compute_mode_name(mode);
    for (int layer = 0; layer < model.num_layers(); ++layer) {
      EXPECT_EQ(state.layer(layer).wkv, whole_state.layer(layer).wkv) << k.name << " layer " << layer;
      EXPECT_EQ(state.layer(layer).keys, whole_state.layer(layer).keys) << k.name << " layer " << layer;
    }
  }
}

TEST_P(ForwardConsistency, OneAndTwoThreadsGiveTheSameLogits) {
  const Case k = c();
  const Model model(open_checkpoint(k.model));
  const int saved = omp_get_max_threads();
  for (ComputeMode mode : {ComputeMode::kF32, ComputeMode::kBF16}) {
    omp_set_num_threads(1);
    const std::vector<float> one = run_all(model, k.tokens, mode);
    omp_set_num_threads(2);
    const std::vector<float> two = run_all(model, k.tokens, mode);
    EXPECT_LE(max_abs_difference(one, two), kBitIdentical) << k.name << " " << compute_mode_name(mode);
  }
  omp_set_num_threads(saved);
}

TEST_P(ForwardConsistency, PortableAndAvx512KernelsAgree) {
  if (!cpu_supports(CpuIsa::kAvx512)) GTEST_SKIP() << "this CPU has no AVX-512";
  const Case k = c();
  const Model model(open_checkpoint(k.model));
  for (ComputeMode mode : {ComputeMode::kF32, ComputeMode::kBF16}) {
    if (mode == ComputeMode::kBF16 && !cpu_supports_bf16_dot()) continue;  // both would take the portable path
    force_cpu_isa(CpuIsa::kGeneric);
    const std::vector<float> generic = run_all(model, k.tokens, mode);
    force_cpu_isa(CpuIsa::kAvx512);
    const std::vector<float> avx512 = run_all(model, k.tokens, mode);
    force_cpu_isa(std::nullopt);
    const double diff = max_abs_difference(generic, avx512);
    std::printf("  %s %s: generic vs avx512 max|Δ| %.3g\n", k.name, compute_mode_name(mode), diff);
    EXPECT_LE(diff, mode == ComputeMode::kF32 ? kIsaF32Tolerance : kIsaBf16Tolerance) << k.name;
  }
}

// Names without building the cases: test discovery must not run hxforge synth.
constexpr const char* kCaseNames[] = {"gemma4", "llama", "hxa079", "hxa07i"};
INSTANTIATE_TEST_SUITE_P(EveryArchitecture, ForwardConsistency, ::testing::Range(0, 4),
                         [](const ::testing::TestParamInfo<int>& param) { return std::string(kCaseNames[param.param]); });

}  // namespace
}  // namespace hx
