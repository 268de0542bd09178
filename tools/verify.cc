// hxforge verify MODEL [--against REF] [--manifest FILE] [--tokens 1,2,3 | --tokens-file F] [--device cpu|cuda]
//                [--compute f32|bf16] [--json FILE] [--max-kld X] [--min-top1 Y]
//
// Verifies a checkpoint in stages, each a function of its own, run in this order and merged into one report:
//   1. check_manifest_stage  --manifest: tensor hashes against a manifest.json (cheap; runs before any forward pass)
//   2. forward_stage         --against: both forward passes on the same tokens, compared with verify/compare.h's
//                            statistics (llama.cpp perplexity's KLD mode and more); without --against, one forward
//                            pass whose logits must be finite
// Exit status: 1 when a stage finds a difference beyond its thresholds (--max-kld on the mean KLD, --min-top1 on
// the top-1 agreement, non-finite logits), 3 for invalid input (named), as every subcommand (cli.md).
//
// Design goals: the report's field names are cli.md's `verify --json`; the default token sequence (no --tokens) is
// seeded, so two runs compare the same thing. Non-goals: text inputs (token ids only; hxforge has no tokenizer).
#include <cmath>
#include <cstdio>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "convert/manifest_check.h"
#include "formats/checkpoint.h"
#include "formats/errors.h"
#include "formats/mapped_file.h"
#include "tools/cli.h"
#include "tools/token_list.h"
#include "verify/compare.h"
#include "verify/cuda/cuda_model.h"
#include "verify/forward.h"

namespace hx::cli {
namespace {

constexpr int64_t kDefaultTokenCount = 128;  // enough positions for a stable mean KLD, a second or so on tiny models

void declare(po::options_description& options, po::positional_options_description& positional) {
  options.add_options()
      ("model", po::value<std::string>()->required(), "the checkpoint to verify (e.g. a quantized one)")
      ("against", po::value<std::string>(), "the reference checkpoint to compare the forward pass with")
      ("manifest", po::value<std::string>(), "check tensor hashes against this manifest.json first")
      ("tokens", po::value<std::string>(), "token ids, comma-separated (e.g. 2,449,251)")
      ("tokens-file", po::value<std::string>(), "a text file of token ids separated by commas, spaces or newlines")
      ("num-tokens", po::value<int64_t>()->default_value(kDefaultTokenCount),
       "without --tokens/--tokens-file: this many seeded pseudo-random token ids")
      ("seed", po::value<uint64_t>()->default_value(0), "seed of the default token ids")
      ("device", po::value<std::string>()->default_value("cpu"), "cpu or cuda")
      ("compute", po::value<std::string>()->default_value("f32"), "f32 (reference) or bf16 (bf16 products)")
      ("json", po::value<std::string>(), "write the report (cli.md `verify --json`) to this file")
      ("force", "replace the --json file if it exists")
      ("max-kld", po::value<double>(), "fail (exit 1) when the mean KLD(ref||model) exceeds this")
      ("min-top1", po::value<double>(), "fail (exit 1) when the top-1 agreement (a fraction) is below this");
  positional.add("model", 1);
}

struct VerifyRequest {
  std::string model_path;
  std::optional<std::string> against, manifest, json_path;
  std::optional<std::vector<int64_t>> tokens;  // none: seeded default tokens of the model's vocabulary
  int64_t default_token_count = kDefaultTokenCount;
  uint64_t seed = 0;
  ComputeMode compute = ComputeMode::kF32;
  CompareThresholds thresholds;
  bool overwrite_json = false;
  bool cuda = false;  // --device cuda: the forward passes run on the GPU (verify/cuda/cuda_model.h)
};

// What the stages found: the JSON report (cli.md's fields) and every failed check, one sentence each.
struct VerifyReport {
  nlohmann::json json = nlohmann::json::object();
  std::vector<std::string> failures;
};

VerifyRequest parse_request(const po::variables_map& args) {
  VerifyRequest r;
  r.model_path = args["model"].as<std::string>();
  const std::string device = args["device"].as<std::string>();
  if (device != "cpu" && device != "cuda") throw UsageError("--device '" + device + "' is not cpu or cuda");
  r.cuda = device == "cuda";
  const std::string compute = args["compute"].as<std::string>();
  if (compute == "f32") r.compute = ComputeMode::kF32;
  else if (compute == "bf16") r.compute = ComputeMode::kBF16;
  else throw UsageError("--compute '" + compute + "' is not f32 or bf16");
  if (args.count("against")) r.against = args["against"].as<std::string>();
  if (args.count("manifest")) r.manifest = args["manifest"].as<std::string>();
  if (args.count("json")) r.json_path = args["json"].as<std::string>();
  r.overwrite_json = args.count("force") > 0;
  if (args.count("tokens") && args.count("tokens-file"))
    throw UsageError("give the token ids with at most one of --tokens and --tokens-file");
  if (args.count("tokens")) r.tokens = token_ids_from_option(args["tokens"].as<std::string>());
  if (args.count("tokens-file")) r.tokens = token_ids_from_file(args["tokens-file"].as<std::string>());
  if (r.tokens && r.tokens->empty()) throw UsageError("no token ids given");
  r.default_token_count = args["num-tokens"].as<int64_t>();
  if (r.default_token_count < 2) throw UsageError("--num-tokens must be at least 2, got " + std::to_string(r.default_token_count));
  r.seed = args["seed"].as<uint64_t>();
  if (args.count("max-kld")) {
    r.thresholds.max_kld = args["max-kld"].as<double>();
    if (!(*r.thresholds.max_kld >= 0)) throw UsageError("--max-kld must be ≥ 0");
  }
  if (args.count("min-top1")) {
    r.thresholds.min_top1 = args["min-top1"].as<double>();
    if (!(*r.thresholds.min_top1 >= 0 && *r.thresholds.min_top1 <= 1))
      throw UsageError("--min-top1 is a fraction in [0, 1]");
  }
  if ((r.thresholds.max_kld || r.thresholds.min_top1) && !r.against)
    throw UsageError("--max-kld and --min-top1 need --against REF (a reference to compare with)");
  return r;
}

// splitmix64: the same ids on every platform and standard library (std:: distributions are not portable).
std::vector<int64_t> default_tokens(int64_t count, int64_t vocab, uint64_t seed) {
  std::vector<int64_t> ids;
  uint64_t state = seed;
  for (int64_t i = 0; i < count; ++i) {
    uint64_t z = (state += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    z ^= z >> 31;
    ids.push_back(static_cast<int64_t>(z % static_cast<uint64_t>(vocab)));
  }
  return ids;
}

// Stage 1: --manifest. The check belongs to the converter's manifest (convert/manifest_check.h); it is wired here,
// before any forward pass, so a file whose bytes are wrong is reported without running it. A missing or garbled
// manifest throws FormatError (exit 3); every tensor that differs, and a probe that does not reproduce, is a failure.
void check_manifest_stage(const VerifyRequest& request, VerifyReport& report) {
  if (!request.manifest) return;
  const Manifest manifest = read_manifest(*request.manifest);
  const ManifestCheck check = check_against_manifest(open_checkpoint(request.model_path), manifest);
  const nlohmann::json result = check.to_json();
  report.json["hashes"] = result["hashes"];
  report.json["manifest"] = {{"path", *request.manifest}, {"probe", result["probe"]}, {"problems", result["problems"]}};
  for (const auto* problems : {&check.tensor_problems, &check.probe_problems})
    for (const std::string& problem : *problems) report.failures.push_back(in_file(request.model_path, problem));
  const std::string probe = check.probe_ran ? std::to_string(check.probe_positions) +
                                                  " positions re-run, max logit diff " +
                                                  std::to_string(check.probe_max_logit_diff)
                             : check.probe_status != "ok" ? "none recorded (" + check.probe_status + ")"
                                                          : "not run: the tensors differ";
  std::printf("%s against %s: %zu tensors hashed, %zu mismatched; probe %s\n", request.model_path.c_str(),
              request.manifest->c_str(), check.tensors_checked, check.tensors_mismatched, probe.c_str());
}

std::string device_suffix(const Model&) { return ""; }
std::string device_suffix(const CudaModel& model) { return ", " + model.device_name(); }

// Stage 2 on one device: the forward pass, compared with --against when given (the reference on the same device).
template <typename AnyModel>
void forward_stage_on(const AnyModel& model, const VerifyRequest& request, VerifyReport& report, bool quiet_output) {
  const std::vector<int64_t> tokens =
      request.tokens ? *request.tokens : default_tokens(request.default_token_count, model.vocab_size(), request.seed);
  report.json["tokens"] = static_cast<int64_t>(tokens.size());
  report.json["compute"] = compute_mode_name(request.compute);
  report.json["device"] = request.cuda ? "cuda" : "cpu";
  if (!request.against) {
    check_token_ids(tokens, model.vocab_size());
    ForwardOptions options;
    options.compute = request.compute;
    auto state = model.new_state();
    const ForwardResult result = model.forward(tokens, state, options);
    int64_t non_finite = 0;
    for (float v : result.logits) non_finite += !std::isfinite(v);
    report.json["non_finite_logits"] = non_finite;
    if (non_finite > 0)
      report.failures.push_back(std::to_string(non_finite) + " logits of " + request.model_path + " are NaN or inf");
    if (!quiet_output)
      std::printf("%s: forward pass over %zu tokens%s, %lld non-finite logits\n", request.model_path.c_str(),
                  tokens.size(), device_suffix(model).c_str(), static_cast<long long>(non_finite));
    return;
  }
  const Checkpoint reference_checkpoint = open_checkpoint(*request.against);
  const AnyModel reference(reference_checkpoint);
  const ModelComparison comparison =
      compare_models(reference, model, tokens, request.compute, *request.against, request.model_path);
  report.json.update(comparison_json(comparison));
  report.json["against"] = *request.against;
  for (std::string& failure : threshold_failures(comparison.logits, request.thresholds))
    report.failures.push_back(std::move(failure));
  std::printf("%s against %s (%s compute%s):\n%s", request.model_path.c_str(), request.against->c_str(),
              compute_mode_name(request.compute), device_suffix(model).c_str(), comparison_text(comparison).c_str());
}

// Stage 2: the forward pass on the requested device.
void forward_stage(const VerifyRequest& request, VerifyReport& report, bool quiet_output) {
  const Checkpoint checkpoint = open_checkpoint(request.model_path);
  if (request.cuda)
    forward_stage_on(CudaModel(checkpoint), request, report, quiet_output);
  else
    forward_stage_on(Model(checkpoint), request, report, quiet_output);
}

void write_report(const std::string& path, const nlohmann::json& json, bool overwrite) {
  const std::string text = json.dump(2) + "\n";
  AtomicOutputFile out(path, overwrite);
  out.write(std::as_bytes(std::span<const char>(text.data(), text.size())));
  out.commit();
}

int run(const po::variables_map& args) {
  const VerifyRequest request = parse_request(args);
  if (request.json_path && !request.overwrite_json && path_exists(*request.json_path))
    throw UsageError(*request.json_path + " exists; add --force to replace it");  // before minutes of work
  VerifyReport report;
  report.json["model"] = request.model_path;
  check_manifest_stage(request, report);
  forward_stage(request, report, quiet(args));
  report.json["passed"] = report.failures.empty();
  report.json["failures"] = report.failures;
  if (request.json_path) write_report(*request.json_path, report.json, request.overwrite_json);
  for (const std::string& failure : report.failures) std::printf("FAILED: %s\n", failure.c_str());
  if (report.failures.empty()) std::printf("PASSED\n");
  return report.failures.empty() ? 0 : 1;
}

}  // namespace

const Subcommand kVerify = {
    "verify",
    "verify MODEL [--against REF] [--manifest FILE] [--tokens 1,2,3 | --tokens-file F] [--device cpu|cuda] "
    "[--compute f32|bf16] [--json FILE] [--max-kld X] [--min-top1 Y]",
    "compare a model's forward pass with a reference (KLD, top-1 agreement, PPL ratio, Δp, per-layer cosine); "
    "exit 1 when a threshold fails",
    "hxforge verify model-int8/ --against model/ --max-kld 0.0015 --json verify.json", declare, run};

}  // namespace hx::cli
