// hxforge convert TEACHER --to {hxa079,hxa07i} [--layout FILE|PRESET] [--attention-layers LIST|none]
//                 [--format safetensors|pth] [--dtype D] [--seed N] [--shard-size S] [--force] [--no-verify] [--json]
//                 --out DIR
#include <cstdio>
#include <iostream>

#include "convert/converter.h"
#include "formats/errors.h"
#include "tools/cli.h"
#include "tools/progress.h"

namespace hx::cli {
namespace {

uint64_t parse_shard_size(const std::string& text) {
  size_t used = 0;
  double value = 0;
  try {
    value = std::stod(text, &used);
  } catch (const std::exception&) {
    used = 0;
  }
  const std::string unit = text.substr(used);
  const std::pair<const char*, double> units[] = {{"", 1},     {"B", 1},       {"KB", 1e3},       {"MB", 1e6},
                                                  {"GB", 1e9}, {"KiB", 1024.}, {"MiB", 1048576.}, {"GiB", 1073741824.}};
  for (const auto& [name, factor] : units)
    if (used > 0 && unit == name && value > 0) return static_cast<uint64_t>(value * factor);
  throw UsageError("--shard-size '" + text + "' is not a positive size (e.g. 5GB, 500MB, 1GiB)");
}

std::string layouts_help() {
  std::string out;
  for (const LayoutPreset& p : layout_presets()) {
    const Layout l = *preset_layout(p.name);
    std::string line = "  " + std::string(p.name);
    line.resize(22, ' ');
    out += line + l.description + "\n";
  }
  return out;
}

void declare(po::options_description& options, po::positional_options_description& positional) {
  options.add_options()("teacher", po::value<std::string>(), "teacher checkpoint (.safetensors, model folder, .pth)")(
      "to", po::value<std::string>(), "student architecture: hxa079 (Llama teachers) or hxa07i (Gemma-4)")(
      "layout", po::value<std::string>()->default_value(""),
      "layout FILE or preset (--list-layouts); 'tiny' picks tiny-<to>; default reka-hxa079-l6 / gemma4-e2b-hxa07i")(
      "attention-layers", po::value<std::string>(), "hxa079: layers kept as attention, e.g. 8,15,22 or none")(
      "format", po::value<std::string>()->default_value("safetensors"),
      "safetensors (HF names, sharded + index.json) or pth (RWKV-LM names, model.pth)")(
      "dtype", po::value<std::string>()->default_value("BF16"), "stored dtype: BF16, F16, F32 or teacher")(
      "seed", po::value<uint64_t>()->default_value(0), "seed of the random inits (orthogonal, normal)")(
      "shard-size", po::value<std::string>()->default_value("5GB"), "largest safetensors shard")(
      "out", po::value<std::string>(), "the student folder (weights, config.json, manifest.json)")(
      "force", "replace --out if it exists")(
      "no-verify", "skip the built-in verification (structure, hashes, forward pass) and the probe")(
      "json", "print the report as JSON")("list-layouts", "list the embedded layout presets and exit")(
      "print-layout", po::value<std::string>(), "print a preset's JSON (a starting point for a new teacher) and exit");
  positional.add("teacher", 1);
}

void print_report(const ConvertResult& r) {
  std::printf("convert: %s student (%s, %s) from layout '%s' -> %s\n", std::string(arch_name(r.student_arch)).c_str(),
              r.format == StudentFormat::kPth ? "pth" : "safetensors", std::string(dtype_name(r.dtype)).c_str(),
              r.layout.c_str(), r.out.c_str());
  std::printf("  %zu tensors, %s: %zu copied, %zu cast, %zu scaled (RADLADS transfer), %zu initialised; %.1f s\n",
              r.tensors, human_bytes(r.bytes).c_str(), r.by_provenance[0], r.by_provenance[1], r.by_provenance[2],
              r.by_provenance[3], r.seconds);
  if (!r.dropped.empty())
    std::printf("  %zu teacher tensors left behind on purpose (see manifest.json)\n", r.dropped.size());
  if (!r.verification) {
    std::printf("  verification skipped (--no-verify)\n");
    return;
  }
  for (const CheckResult& c : r.verification->checks) {
    const char* mark = c.status == CheckStatus::kPassed ? "ok  " : c.status == CheckStatus::kFailed ? "FAIL" : "skip";
    std::printf("  [%s] %-18s %s\n", mark, c.name.c_str(), c.summary.c_str());
    for (size_t i = 1; i < c.problems.size() && i < 20; ++i) std::printf("         %s\n", c.problems[i].c_str());
  }
  const nlohmann::json& layers = r.verification->teacher_forced_layers;
  if (!layers.empty()) std::printf("  teacher-forced layers (each fed the teacher's hidden state):\n");
  for (const nlohmann::json& l : layers) {
    std::string exact = "";
    if (l.contains("max_abs_diff"))
      exact = "max |diff| " + std::to_string(l["max_abs_diff"].get<double>()) + " over " +
              std::to_string(l["exact_positions"].get<int64_t>()) + " position(s)";
    if (l.contains("tica_max_abs")) exact = "TICA adds max |" + std::to_string(l["tica_max_abs"].get<double>()) + "|";
    std::printf("    %2d %-9s %-17s -> %-17s output cos %9.6f  mixer cos %9.6f  %s%s\n", l["layer"].get<int>(),
                l["role"].get<std::string>().c_str(), l["teacher_kind"].get<std::string>().c_str(),
                l["student_kind"].get<std::string>().c_str(), l["output_cosine"].get<double>(),
                l["mixer_cosine"].get<double>(), exact.c_str(), l["passed"].get<bool>() ? "" : "  FAIL");
  }
  if (!r.committed) std::printf("  verification failed: nothing was written to %s\n", r.out.c_str());
}

int run(const po::variables_map& args) {
  if (args.count("list-layouts")) {
    std::printf("%s", layouts_help().c_str());
    return 0;
  }
  if (args.count("print-layout")) {
    const std::string name = args["print-layout"].as<std::string>();
    for (const LayoutPreset& p : layout_presets())
      if (p.name == name) {
        std::printf("%s", std::string(p.json_text).c_str());
        return 0;
      }
    throw UsageError("--print-layout '" + name + "' is not a preset; --list-layouts shows them");
  }
  for (const char* required : {"teacher", "to", "out"})
    if (!args.count(required)) throw UsageError(std::string("the option '--") + required + "' is required");

  ConvertOptions options;
  options.teacher = args["teacher"].as<std::string>();
  const std::string to = args["to"].as<std::string>();
  const auto arch = arch_from_name(to);
  if (!arch || (*arch != Arch::kHxa079 && *arch != Arch::kHxa07i))
    throw UsageError("--to '" + to + "' is not hxa079 or hxa07i");
  options.to = *arch;
  options.layout = args["layout"].as<std::string>();
  if (args.count("attention-layers"))
    options.plan.attention_layers = parse_layer_list(args["attention-layers"].as<std::string>());
  const std::string format = args["format"].as<std::string>();
  if (format != "safetensors" && format != "pth")
    throw UsageError("--format '" + format + "' is not safetensors or pth");
  options.plan.format = format == "pth" ? StudentFormat::kPth : StudentFormat::kSafetensors;
  const std::string dtype = args["dtype"].as<std::string>();
  if (dtype == "teacher") {
    options.plan.dtype = std::nullopt;
  } else {
    const auto d = dtype_from_name(dtype);
    if (!d || (*d != DType::kBF16 && *d != DType::kF16 && *d != DType::kF32))
      throw UsageError("--dtype '" + dtype + "' is not BF16, F16, F32 or teacher");
    options.plan.dtype = *d;
  }
  options.plan.seed = args["seed"].as<uint64_t>();
  options.max_shard_bytes = parse_shard_size(args["shard-size"].as<std::string>());
  options.out = args["out"].as<std::string>();
  options.overwrite = args.count("force") > 0;
  options.verify = args.count("no-verify") == 0;
  options.tool_version = HXFORGE_VERSION;

  const bool as_json = args.count("json") > 0;
  std::unique_ptr<Progress> progress;
  uint64_t last_tensors = 0, last_bytes = 0;
  // The progress line knows totals only after planning; it starts at the first chunk.
  options.on_progress = [&](uint64_t tensors, uint64_t bytes) {
    if (!progress) progress = std::make_unique<Progress>("convert", 0, 0, !quiet(args) && !as_json);
    progress->advance(tensors - last_tensors, bytes - last_bytes);
    last_tensors = tensors, last_bytes = bytes;
  };
  const ConvertResult result = convert_checkpoint(options);
  if (progress) progress->finish();
  if (as_json)
    std::cout << result.to_json().dump(2) << "\n";
  else if (!quiet(args) || !result.committed)
    print_report(result);
  return result.committed ? 0 : static_cast<int>(ExitCode::kVerificationFailed);
}

}  // namespace

const Subcommand kConvert = {
    "convert",
    "convert TEACHER --to {hxa079,hxa07i} [--layout FILE|PRESET] [--attention-layers LIST|none] "
    "[--format safetensors|pth] --out DIR",
    "turn a Transformer teacher into a hybrid RWKV-7 student (RADLADS transfer + init), with manifest.json",
    "hxforge convert ../shared/fixtures/oracle/llama-tiny --to hxa079 --layout tiny --out /tmp/llama-hxa079",
    declare,
    run};

}  // namespace hx::cli
