// Prefill and decode timings of the CUDA forward pass on one checkpoint, as JSON (bench/cuda_forward_vs_torch.py
// runs it next to transformers on the same weights).
//
//   cuda_forward_timing MODEL [--prefill 2048] [--decode 64] [--compute bf16|f32] [--repeats 3] [--profile 1]
//
// Prefill: T tokens in one call on a fresh state, logits of the last position only (as generation needs them),
// after one untimed warm-up call of the same size (kernel loading and the memory pool's first allocations are not
// counted); the best of --repeats. Decode: --decode calls of one token each after that prefill (KV caches and RWKV
// states carried), the mean per token. Token ids are a fixed pseudo-random sequence. Also prints the weight bytes on
// the GPU, from which decode's roofline follows. --profile 1 adds where the GPU time of the last prefill and of the
// decode steps went, per kind of operation (CUDA events around each: the timings themselves grow a little).
// HXFORGE_CUDA_WEIGHT_BUDGET_MIB in the environment limits the GPU memory of the weights: the layers past it are
// streamed from host memory (streamed_layers, streamed_bytes in the output; gpu_weight_bytes then counts the two
// slots, not the streamed layers, and decode is bound by the copies rather than by HBM).
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "formats/checkpoint.h"
#include "verify/cuda/cuda_model.h"

namespace {

using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point start) { return std::chrono::duration<double>(Clock::now() - start).count(); }

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2) {
    std::fprintf(stderr,
                 "usage: cuda_forward_timing MODEL [--prefill T] [--decode D] [--compute bf16|f32] [--repeats R]\n");
    return 2;
  }
  const std::string model_path = argv[1];
  int64_t prefill = 2048, decode = 64;
  int repeats = 3;
  bool profile = false;
  hx::ComputeMode mode = hx::ComputeMode::kBF16;
  for (int i = 2; i + 1 < argc; i += 2) {
    const std::string flag = argv[i], value = argv[i + 1];
    if (flag == "--prefill")
      prefill = std::atoll(value.c_str());
    else if (flag == "--decode")
      decode = std::atoll(value.c_str());
    else if (flag == "--repeats")
      repeats = std::atoi(value.c_str());
    else if (flag == "--profile")
      profile = value == "1";
    else if (flag == "--compute")
      mode = value == "f32" ? hx::ComputeMode::kF32 : hx::ComputeMode::kBF16;
    else {
      std::fprintf(stderr, "unknown option %s\n", flag.c_str());
      return 2;
    }
  }
  if (profile) setenv("HXFORGE_CUDA_PROFILE", "1", 1);
  std::string prefill_profile = "{}", decode_profile = "{}";
  try {
    const auto load_start = Clock::now();
    const hx::Checkpoint checkpoint = hx::open_checkpoint(model_path);
    const hx::CudaModel model(checkpoint);
    const double load_seconds = seconds_since(load_start);
    std::vector<int64_t> tokens(static_cast<size_t>(prefill + decode));
    uint64_t x = 88172645463325252ull;
    for (int64_t& id : tokens) {  // xorshift64: the same ids every run
      x ^= x << 13, x ^= x >> 7, x ^= x << 17;
      id = static_cast<int64_t>(x % static_cast<uint64_t>(model.vocab_size()));
    }
    const std::span<const int64_t> all(tokens);
    hx::ForwardOptions options;
    options.compute = mode;

    double best_prefill = 1e30, decode_seconds = 0;
    for (int r = 0; r <= repeats; ++r) {  // r = 0 is the warm-up
      hx::CudaState state = model.new_state();
      hx::take_cuda_profile();  // only the last prefill's operations
      const auto start = Clock::now();
      model.forward(all.first(static_cast<size_t>(prefill)), state, options, hx::LogitRows::kLast);
      const double seconds = seconds_since(start);
      if (r > 0) best_prefill = std::min(best_prefill, seconds);
      if (r == repeats) {
        prefill_profile = hx::take_cuda_profile();
        const auto decode_start = Clock::now();
        for (int64_t t = prefill; t < prefill + decode; ++t)
          model.forward(all.subspan(static_cast<size_t>(t), 1), state, options);
        decode_seconds = seconds_since(decode_start);
        decode_profile = hx::take_cuda_profile();
      }
    }
    std::printf(
        "{\"model\": \"%s\", \"architecture\": \"%s\", \"gpu\": \"%s\", \"compute\": \"%s\", "
        "\"gpu_weight_bytes\": %llu, \"streamed_layers\": %d, \"streamed_bytes\": %llu, \"load_seconds\": %.3f, "
        "\"prefill_tokens\": %lld, \"prefill_seconds\": %.6f, "
        "\"prefill_tokens_per_second\": %.1f, \"decode_tokens\": %lld, \"decode_seconds\": %.6f, "
        "\"decode_tokens_per_second\": %.2f, \"prefill_profile\": %s, \"decode_profile\": %s}\n",
        model_path.c_str(), model.architecture().c_str(), model.device_name().c_str(), hx::compute_mode_name(mode),
        static_cast<unsigned long long>(model.device_weight_bytes()), model.streamed_layers(),
        static_cast<unsigned long long>(model.streamed_bytes()), load_seconds, static_cast<long long>(prefill),
        best_prefill, static_cast<double>(prefill) / best_prefill, static_cast<long long>(decode), decode_seconds,
        decode > 0 ? static_cast<double>(decode) / decode_seconds : 0.0, prefill_profile.c_str(),
        decode_profile.c_str());
  } catch (const std::exception& e) {
    std::fprintf(stderr, "cuda_forward_timing: %s\n", e.what());
    return 3;
  }
  return 0;
}
