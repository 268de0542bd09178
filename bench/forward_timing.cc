// Prefill and decode timings of the CPU forward pass in one process, as JSON (bench/forward_vs_torch.py runs it next
// to `hxforge run` and PyTorch on the same checkpoint and token ids).
//
//   forward_timing MODEL --tokens-file F [--prefill 256] [--compute bf16|f32] [--repeats 2]
//
// Why a second program next to `hxforge run`: run times the first forward call of a fresh process, and that call
// also pays the first touch of every page of the mapped checkpoint (on this project's VMs ~2 µs per 4 KiB page,
// 0.5 s per GiB of weights — as much as a third of a 1 B-model prefill), while the PyTorch side of the benchmark is
// timed after a warm-up pass. This program reports both: `cold_prefill_seconds` (the first call, what `hxforge run`
// measures) and `prefill_seconds` (the best of --repeats further calls on fresh states, the pages already mapped).
// Decode: the tokens after the first --prefill, one call each, after the last prefill (KV caches carried).
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "formats/checkpoint.h"
#include "formats/parallel.h"
#include "verify/forward.h"

namespace {

using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point start) { return std::chrono::duration<double>(Clock::now() - start).count(); }

std::vector<int64_t> read_token_file(const std::string& path) {
  std::ifstream in(path);
  if (!in) throw std::runtime_error("cannot read " + path);
  std::stringstream text;
  text << in.rdbuf();
  std::vector<int64_t> tokens;
  std::string item;
  while (std::getline(text, item, ',')) {
    if (item.find_first_not_of(" \n\t") != std::string::npos) tokens.push_back(std::stoll(item));
  }
  return tokens;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2) {
    std::fprintf(stderr,
                 "usage: forward_timing MODEL --tokens-file F [--prefill T] [--compute bf16|f32] [--repeats R]\n");
    return 2;
  }
  const std::string model_path = argv[1];
  std::string tokens_file;
  int64_t prefill = 256;
  int repeats = 2;
  hx::ComputeMode mode = hx::ComputeMode::kBF16;
  for (int i = 2; i + 1 < argc; i += 2) {
    const std::string flag = argv[i], value = argv[i + 1];
    if (flag == "--tokens-file")
      tokens_file = value;
    else if (flag == "--prefill")
      prefill = std::atoll(value.c_str());
    else if (flag == "--repeats")
      repeats = std::max(1, std::atoi(value.c_str()));
    else if (flag == "--compute")
      mode = value == "f32" ? hx::ComputeMode::kF32 : hx::ComputeMode::kBF16;
    else {
      std::fprintf(stderr, "unknown option %s\n", flag.c_str());
      return 2;
    }
  }
  try {
    const std::vector<int64_t> tokens = read_token_file(tokens_file);
    if (prefill < 1 || prefill > static_cast<int64_t>(tokens.size())) {
      std::fprintf(stderr, "--prefill %lld outside [1, %zu] (the token count)\n", static_cast<long long>(prefill),
                   tokens.size());
      return 2;
    }
    const auto load_start = Clock::now();
    const hx::Checkpoint checkpoint = hx::open_checkpoint(model_path);
    const hx::Model model(checkpoint);
    const double load_seconds = seconds_since(load_start);
    const std::span<const int64_t> all(tokens);
    hx::ForwardOptions options;
    options.compute = mode;

    double cold_prefill = 0, best_prefill = 1e30, decode_seconds = 0;
    for (int r = 0; r <= repeats; ++r) {  // r = 0: the cold call
      hx::ForwardState state = model.new_state();
      const auto start = Clock::now();
      model.forward(all.first(static_cast<size_t>(prefill)), state, options);
      const double seconds = seconds_since(start);
      if (r == 0) cold_prefill = seconds;
      else best_prefill = std::min(best_prefill, seconds);
      if (r == repeats) {
        const auto decode_start = Clock::now();
        for (size_t t = static_cast<size_t>(prefill); t < tokens.size(); ++t) {
          model.forward(all.subspan(t, 1), state, options);
        }
        decode_seconds = seconds_since(decode_start);
      }
    }
    const int64_t decoded = static_cast<int64_t>(tokens.size()) - prefill;
    std::printf(
        "{\"model\": \"%s\", \"compute\": \"%s\", \"threads\": %d, \"load_seconds\": %.3f, \"prefill_tokens\": %lld, "
        "\"cold_prefill_seconds\": %.6f, \"prefill_seconds\": %.6f, \"prefill_tokens_per_second\": %.1f, "
        "\"decode_tokens\": %lld, \"decode_seconds\": %.6f, \"decode_tokens_per_second\": %.2f}\n",
        model_path.c_str(), hx::compute_mode_name(mode), hx::max_threads(), load_seconds,
        static_cast<long long>(prefill), cold_prefill, best_prefill, static_cast<double>(prefill) / best_prefill,
        static_cast<long long>(decoded), decode_seconds,
        decoded > 0 ? static_cast<double>(decoded) / decode_seconds : 0.0);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "forward_timing: %s\n", e.what());
    return 1;
  }
  return 0;
}
