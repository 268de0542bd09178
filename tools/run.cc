// hxforge run MODEL --tokens 1,2,3 [--tokens-file F] [--device cpu|cuda] [--gpu-weight-budget GIB]
//              [--compute f32|bf16] [--prefill N] [--dump-logits OUT.safetensors] [--top-k K] [--json]
//
// Runs the reference forward pass (verify/forward.h; with --device cuda the GPU one, verify/cuda/cuda_model.h) over
// the checkpoint and prints the top-k next tokens of every position; --dump-logits writes the full logits (tensor
// `logits`, F32 [T, vocab]). --prefill N runs the first N tokens in one call and the rest one call per token (the
// decode path), which is also how decode speed is measured; timings are printed (text) or reported under "timing".
#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <iostream>
#include <memory>
#include <numeric>
#include <nlohmann/json.hpp>

#include "formats/checkpoint.h"
#include "formats/errors.h"
#include "formats/parallel.h"
#include "formats/safetensors.h"
#include "tools/cli.h"
#include "tools/token_list.h"
#include "verify/cuda/cuda_model.h"
#include "verify/forward.h"

namespace hx::cli {
namespace {

using Clock = std::chrono::steady_clock;

void declare(po::options_description& options, po::positional_options_description& positional) {
  options.add_options()
      ("model", po::value<std::string>()->required(), "checkpoint: .safetensors, model folder, or .pth/.pt/.bin")
      ("tokens", po::value<std::string>(), "token ids, comma-separated (e.g. 2,449,251)")
      ("tokens-file", po::value<std::string>(), "a text file of token ids separated by commas, spaces or newlines")
      ("device", po::value<std::string>()->default_value("cpu"), "cpu or cuda")
      ("gpu-weight-budget", po::value<double>(),
       "GiB of GPU memory the weights may take (cuda); layers past it are streamed from host memory every call")
      ("compute", po::value<std::string>()->default_value("f32"),
       "f32 (reference: f32 activations and products) or bf16 (fast: bf16 products, f32 sums and small ops)")
      ("prefill", po::value<int64_t>(), "run the first N tokens in one call, then one call per token (decode)")
      ("dump-logits", po::value<std::string>(), "write the logits to this .safetensors file (tensor 'logits', F32 [T, vocab])")
      ("top-k", po::value<int>()->default_value(5), "print the K most likely next tokens of every position (0: none)")
      ("json", "print JSON instead of a table")
      ("force", "replace the --dump-logits file if it exists");
  positional.add("model", 1);
}

std::vector<int64_t> read_tokens(const po::variables_map& args) {
  const bool inline_ids = args.count("tokens") > 0, from_file = args.count("tokens-file") > 0;
  if (inline_ids == from_file) throw UsageError("give the token ids with exactly one of --tokens and --tokens-file");
  const std::vector<int64_t> ids = inline_ids ? token_ids_from_option(args["tokens"].as<std::string>())
                                              : token_ids_from_file(args["tokens-file"].as<std::string>());
  if (ids.empty()) throw UsageError("no token ids given");
  return ids;
}

ComputeMode parse_compute(const std::string& name) {
  if (name == "f32") return ComputeMode::kF32;
  if (name == "bf16") return ComputeMode::kBF16;
  throw UsageError("--compute '" + name + "' is not f32 or bf16");
}

struct Candidate {
  int64_t token;
  float logit;
  double prob;
};

// The k largest logits of a row (ties: lower id first) with their softmax probabilities.
std::vector<Candidate> top_k(std::span<const float> logits, int k) {
  const float max_logit = *std::max_element(logits.begin(), logits.end());
  double sum = 0.0;
  for (float v : logits) sum += std::exp(static_cast<double>(v) - max_logit);
  std::vector<int64_t> order(logits.size());
  std::iota(order.begin(), order.end(), 0);
  const size_t keep = std::min(order.size(), static_cast<size_t>(std::max(k, 0)));
  std::partial_sort(order.begin(), order.begin() + static_cast<std::ptrdiff_t>(keep), order.end(),
                    [&](int64_t a, int64_t b) {
                      const float la = logits[static_cast<size_t>(a)], lb = logits[static_cast<size_t>(b)];
                      return la != lb ? la > lb : a < b;
                    });
  std::vector<Candidate> out;
  for (size_t i = 0; i < keep; ++i) {
    const float logit = logits[static_cast<size_t>(order[i])];
    out.push_back({order[i], logit, std::exp(static_cast<double>(logit) - max_logit) / sum});
  }
  return out;
}

void dump_logits(const std::string& path, const std::vector<float>& logits, int64_t tokens, int64_t vocab,
                 const std::string& model, ComputeMode mode, bool overwrite) {
  std::vector<TensorSpec> specs{{"logits", DType::kF32, {tokens, vocab}}};
  SafetensorsWriteOptions options;
  options.overwrite = overwrite;
  options.metadata = {{"model", model}, {"compute", compute_mode_name(mode)}, {"producer", "hxforge run"}};
  write_safetensors(path, specs, [&](size_t, const ByteSink& sink) {
    sink(std::as_bytes(std::span<const float>(logits)));
  }, options);
}

double seconds_since(Clock::time_point start) {
  return std::chrono::duration<double>(Clock::now() - start).count();
}

int run(const po::variables_map& args) {
  const std::string model_path = args["model"].as<std::string>();
  const std::string device = args["device"].as<std::string>();
  if (device != "cpu" && device != "cuda") throw UsageError("--device '" + device + "' is not cpu or cuda");
  const ComputeMode mode = parse_compute(args["compute"].as<std::string>());
  const int k = args["top-k"].as<int>();
  if (k < 0) throw UsageError("--top-k must be ≥ 0, got " + std::to_string(k));
  const std::vector<int64_t> tokens = read_tokens(args);
  const int64_t T = static_cast<int64_t>(tokens.size());
  int64_t prefill = T;
  if (args.count("prefill")) {
    prefill = args["prefill"].as<int64_t>();
    if (prefill < 1 || prefill > T)
      throw UsageError("--prefill must lie in [1, " + std::to_string(T) + "] (the token count), got " +
                       std::to_string(prefill));
  }

  CudaLoadOptions load;
  if (args.count("gpu-weight-budget")) {
    constexpr double kMaxGib = 1 << 20;  // a pebibyte: beyond any GPU, and far inside uint64_t bytes
    const double gib = args["gpu-weight-budget"].as<double>();
    if (device != "cuda") throw UsageError("--gpu-weight-budget applies to --device cuda only");
    if (!(gib > 0 && gib <= kMaxGib)) {
      throw UsageError("--gpu-weight-budget must be a number of GiB in (0, " + std::to_string(int64_t(kMaxGib)) +
                       "], got " + std::to_string(gib));
    }
    load.weight_budget_bytes = std::max<uint64_t>(1, static_cast<uint64_t>(gib * double(uint64_t{1} << 30)));
  }

  const auto load_start = Clock::now();
  const Checkpoint checkpoint = open_checkpoint(model_path);
  // One engine per run: the CPU reference, or the CUDA forward pass (same plan, same forward contract).
  std::unique_ptr<Model> cpu_model;
  std::unique_ptr<CudaModel> gpu_model;
  if (device == "cuda") {
    gpu_model = std::make_unique<CudaModel>(checkpoint, load);
  } else {
    cpu_model = std::make_unique<Model>(checkpoint);
  }
  const double load_seconds = seconds_since(load_start);
  const int64_t V = gpu_model ? gpu_model->vocab_size() : cpu_model->vocab_size();
  const std::string architecture = gpu_model ? gpu_model->architecture() : cpu_model->architecture();
  const int num_layers = gpu_model ? gpu_model->num_layers() : cpu_model->num_layers();
  check_token_ids(tokens, V);

  ForwardState cpu_state = cpu_model ? cpu_model->new_state() : ForwardState();
  CudaState gpu_state = gpu_model ? gpu_model->new_state() : CudaState();
  ForwardOptions options;
  options.compute = mode;
  const auto forward = [&](std::span<const int64_t> part) {
    return gpu_model ? gpu_model->forward(part, gpu_state, options) : cpu_model->forward(part, cpu_state, options);
  };
  std::vector<float> logits;
  logits.reserve(static_cast<size_t>(T * V));
  const std::span<const int64_t> all(tokens);

  const auto prefill_start = Clock::now();
  ForwardResult first = forward(all.first(static_cast<size_t>(prefill)));
  const double prefill_seconds = seconds_since(prefill_start);
  logits.insert(logits.end(), first.logits.begin(), first.logits.end());
  const auto decode_start = Clock::now();
  for (int64_t t = prefill; t < T; ++t) {
    ForwardResult step = forward(all.subspan(static_cast<size_t>(t), 1));
    logits.insert(logits.end(), step.logits.begin(), step.logits.end());
  }
  const double decode_seconds = seconds_since(decode_start);
  const int64_t decoded = T - prefill;

  if (args.count("dump-logits")) {
    dump_logits(args["dump-logits"].as<std::string>(), logits, T, V, model_path, mode, args.count("force") > 0);
  }

  const std::span<const float> all_logits(logits);
  auto row = [&](int64_t t) { return all_logits.subspan(static_cast<size_t>(t * V), static_cast<size_t>(V)); };
  if (args.count("json")) {
    nlohmann::json out;
    out["model"] = model_path;
    out["architecture"] = architecture;
    out["device"] = device;
    out["compute"] = compute_mode_name(mode);
    out["vocab_size"] = V;
    out["tokens"] = tokens;
    nlohmann::json positions = nlohmann::json::array();
    for (int64_t t = 0; t < T && k > 0; ++t) {
      nlohmann::json top = nlohmann::json::array();
      for (const Candidate& c : top_k(row(t), k))
        top.push_back({{"token", c.token}, {"logit", c.logit}, {"prob", c.prob}});
      positions.push_back({{"position", t}, {"token", tokens[static_cast<size_t>(t)]}, {"top_k", top}});
    }
    out["positions"] = positions;
    out["timing"] = {{"threads", max_threads()},
                     {"load_seconds", load_seconds},
                     {"prefill_tokens", prefill},
                     {"prefill_seconds", prefill_seconds},
                     {"decode_tokens", decoded},
                     {"decode_seconds", decode_seconds}};
    if (gpu_model) {
      out["memory"] = {{"gpu_weight_bytes", gpu_model->device_weight_bytes()},
                       {"streamed_layers", gpu_model->streamed_layers()},
                       {"streamed_bytes", gpu_model->streamed_bytes()}};
      out["gpu"] = gpu_model->device_name();
    } else {
      out["memory"] = {{"mapped_weight_bytes", cpu_model->mapped_weight_bytes()},
                       {"owned_weight_bytes", cpu_model->owned_weight_bytes()}};
    }
    std::cout << out.dump(1) << "\n";
    return 0;
  }

  std::string on = gpu_model ? "cuda (" + gpu_model->device_name() + ")" : "cpu";
  if (gpu_model && gpu_model->streamed_layers() > 0) {
    on += ", " + std::to_string(gpu_model->streamed_layers()) + " layers (" +
          std::to_string(gpu_model->streamed_bytes() >> 20) + " MiB) streamed from host memory";
  }
  std::printf("%s: %s, %d layers, vocab %lld, %lld tokens, %s compute on %s\n", model_path.c_str(),
              architecture.c_str(), num_layers, static_cast<long long>(V), static_cast<long long>(T),
              compute_mode_name(mode), on.c_str());
  if (k > 0) {
    std::printf("%5s %8s  top-%d next tokens (id: logit, probability)\n", "pos", "token", k);
    for (int64_t t = 0; t < T; ++t) {
      std::string line;
      for (const Candidate& c : top_k(row(t), k)) {
        char cell[96];
        std::snprintf(cell, sizeof cell, "  %lld: %.4f %.4f", static_cast<long long>(c.token), c.logit, c.prob);
        line += cell;
      }
      std::printf("%5lld %8lld %s\n", static_cast<long long>(t), static_cast<long long>(tokens[static_cast<size_t>(t)]),
                  line.c_str());
    }
  }
  if (!quiet(args)) {
    std::printf("prefill: %lld tokens in %.3f s (%.1f tokens/s)", static_cast<long long>(prefill), prefill_seconds,
                static_cast<double>(prefill) / std::max(prefill_seconds, 1e-9));
    if (decoded > 0) {
      std::printf("; decode: %lld tokens in %.3f s (%.2f tokens/s)", static_cast<long long>(decoded), decode_seconds,
                  static_cast<double>(decoded) / std::max(decode_seconds, 1e-9));
    }
    std::printf("; %d threads\n", max_threads());
  }
  return 0;
}

}  // namespace

const Subcommand kRun = {
    "run",
    "run MODEL --tokens 1,2,3 [--tokens-file F] [--device cpu|cuda] [--compute f32|bf16] [--prefill N] "
    "[--dump-logits OUT.safetensors] [--top-k K] [--json]",
    "run the reference forward pass over token ids: top-k next tokens per position, logits to a file",
    "hxforge run /tmp/llama-tiny --tokens 1,402,392 --top-k 3", declare, run};

}  // namespace hx::cli
