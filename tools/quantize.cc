// hxforge quantize MODEL --scheme {int8,fp8,fp6,fp5,int4} [--group-size N] [--policy FILE|PRESET]
//                        [--layout portable|torchao-tc|gemlite] [--fp8-scale row|tensor] --out PATH
//                        [--report FILE.json] [--force] [--dry-run]
// Streams the weights the architecture table marks quantizable from the mapped input through the codecs of quant/
// into a quantized safetensors checkpoint (quant/quantized_checkpoint.h), with config.json and a per-tensor report.
#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>

#include "arch/model_config.h"
#include "formats/checkpoint.h"
#include "formats/errors.h"
#include "formats/mapped_file.h"
#include "formats/safetensors.h"
#include "quant/policy.h"
#include "quant/quantized_checkpoint.h"
#include "tools/cli.h"
#include "tools/progress.h"

namespace hx::cli {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

// Files copied from the input folder beside the weights (the model is the same model, only its weights change).
constexpr const char* kCompanionFiles[] = {"generation_config.json", "tokenizer.json", "tokenizer_config.json",
                                           "special_tokens_map.json", "tokenizer.model", "vocab.json", "merges.txt"};

void declare(po::options_description& options, po::positional_options_description& positional) {
  std::string presets;
  for (const auto& p : policy_preset_names()) presets += (presets.empty() ? "" : ", ") + p;
  options.add_options()
      ("model", po::value<std::string>()->required(), "input checkpoint (.safetensors, model folder, .pth)")
      ("scheme", po::value<std::string>(), "int8, fp8, fp6, fp5 or int4: the scheme of every quantizable weight "
                                           "(the head stays int8, the table's floor)")
      ("group-size", po::value<int>(), "int4 group size along the input axis: 32, 64 (default), 128, 256")
      ("policy", po::value<std::string>(), ("a policy file (JSON, schemas/quant-policy.schema.json) or a preset: " + presets).c_str())
      ("layout", po::value<std::string>()->default_value("portable"),
       "packing: portable (every scheme), torchao-tc (fp6/fp5, FP6-LLM kernels), gemlite (int4)")
      ("fp8-scale", po::value<std::string>(), "fp8 scales: row (default) or tensor")
      ("out", po::value<std::string>(), "output: a folder (model.safetensors + config.json) or NAME.safetensors")
      ("report", po::value<std::string>(), "write the per-tensor error report (JSON) here")
      ("dry-run", "quantize and report, write no checkpoint (--out is not needed)")
      ("force", "replace OUT if it exists");
  positional.add("model", 1);
}

QuantRequest request_from(const po::variables_map& args) {
  QuantRequest r;
  if (args.count("scheme")) {
    const std::string s = args["scheme"].as<std::string>();
    r.scheme = scheme_from_name(s);
    if (!r.scheme) throw UsageError("--scheme '" + s + "' is not one of int8, fp8, fp6, fp5, int4");
  }
  if (args.count("group-size")) r.group_size = args["group-size"].as<int>();
  if (!args["layout"].defaulted()) {  // when not asked for, a policy file may name one
    const std::string layout = args["layout"].as<std::string>();
    r.layout = layout_from_name(layout);
    if (!r.layout) throw UsageError("--layout '" + layout + "' is not one of portable, torchao-tc, gemlite");
  }
  if (args.count("fp8-scale")) {
    const std::string m = args["fp8-scale"].as<std::string>();
    r.fp8_scale = fp8_scale_mode_from_name(m);
    if (!r.fp8_scale) throw UsageError("--fp8-scale '" + m + "' is not row or tensor");
  }
  return r;
}

QuantPolicyRules rules_from(const po::variables_map& args) {
  if (!args.count("policy")) return {};
  const std::string p = args["policy"].as<std::string>();
  if (auto preset = policy_preset(p)) return *preset;
  if (fs::exists(p)) return load_policy_file(p);
  std::string presets;
  for (const auto& name : policy_preset_names()) presets += (presets.empty() ? "" : ", ") + name;
  throw UsageError("--policy '" + p + "' is neither a policy file nor a preset (" + presets + ")");
}

// The output's config.json: the input's (or, for a bare RWKV-LM .pth, the inferred one) plus quantization_config.
json output_config(const Checkpoint& ckpt, const ModelConfig& cfg, const QuantizationDescription& description) {
  json config;
  if (!ckpt.config_json_path.empty()) {
    std::ifstream in(ckpt.config_json_path);
    try {
      config = json::parse(in);
    } catch (const json::exception& e) {
      throw FormatError(in_file(ckpt.config_json_path, std::string("is not valid JSON (") + e.what() + ")"));
    }
  } else {
    config = to_config_json(cfg);
  }
  config["quantization_config"] = quantization_config_json(description);
  return config;
}

void write_text_file(const std::string& path, const std::string& text) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out << text;
  out.flush();
  if (!out) throw IoError("cannot write " + path + ": " + errno_text(errno));
}

// A folder output is built beside its final name and renamed into place, so a failed run leaves nothing under OUT.
void commit_folder(const std::string& temp, const std::string& out, bool overwrite) {
  std::error_code ec;
  if (fs::exists(out)) {
    if (!overwrite) throw UsageError(out + " exists; add --force to replace it");
    if (fs::is_directory(out)) {
      for (const auto& entry : fs::directory_iterator(out))
        if (entry.is_directory()) throw UsageError(out + " holds subfolders; refusing to replace it with --force");
    }
    const std::string old = out + ".old-" + std::to_string(getpid());
    fs::rename(out, old, ec);
    if (ec) throw IoError("cannot move the old " + out + " aside: " + ec.message());
    fs::rename(temp, out, ec);
    if (ec) throw IoError("cannot rename " + temp + " to " + out + ": " + ec.message());
    fs::remove_all(old, ec);
    return;
  }
  fs::rename(temp, out, ec);
  if (ec) throw IoError("cannot rename " + temp + " to " + out + ": " + ec.message());
}

void print_summary(const QuantizeResult& result, const std::string& out) {
  struct Row {
    int tensors = 0;
    uint64_t in = 0, out = 0;
    double nmse_sum = 0;
    double worst_snr = 1e300;
    std::string worst;
  };
  std::map<std::string, Row> rows;
  for (const TensorReport& t : result.tensors) {
    Row& r = rows[t.scheme];
    ++r.tensors;
    r.in += t.bytes_in;
    r.out += t.bytes_out;
    if (t.scheme == "keep") continue;
    r.nmse_sum += t.error.nmse();
    if (t.error.snr_db() < r.worst_snr) {
      r.worst_snr = t.error.snr_db();
      r.worst = t.name;
    }
  }
  std::printf("%-6s %7s %12s %12s %11s %9s  %s\n", "scheme", "tensors", "in", "out", "mean NMSE", "min SNR", "worst tensor");
  for (const auto& [scheme, r] : rows) {
    if (scheme == "keep") {
      std::printf("%-6s %7d %12s %12s %11s %9s\n", scheme.c_str(), r.tensors, human_bytes(r.in).c_str(),
                  human_bytes(r.out).c_str(), "-", "-");
    } else {
      std::printf("%-6s %7d %12s %12s %11.3e %7.1f dB  %s\n", scheme.c_str(), r.tensors, human_bytes(r.in).c_str(),
                  human_bytes(r.out).c_str(), r.nmse_sum / r.tensors, r.worst_snr, r.worst.c_str());
    }
  }
  std::printf("quantize: %s -> %s (%.2fx smaller) -> %s\n", human_bytes(result.bytes_in).c_str(),
              human_bytes(result.bytes_out).c_str(),
              result.bytes_out ? static_cast<double>(result.bytes_in) / static_cast<double>(result.bytes_out) : 0.0,
              out.c_str());
}

int run(const po::variables_map& args) {
  const bool dry_run = args.count("dry-run") > 0;
  if (!dry_run && !args.count("out")) throw UsageError("give --out PATH (or --dry-run)");
  const std::string model = args["model"].as<std::string>(), out = dry_run ? "" : args["out"].as<std::string>();
  const bool overwrite = args.count("force") > 0;
  const QuantRequest request = request_from(args);
  const QuantPolicyRules rules = rules_from(args);
  if (!request.scheme && !args.count("policy")) throw UsageError("give --scheme or --policy");
  if (!dry_run && path_exists(out) && !overwrite) throw UsageError(out + " exists; add --force to replace it");

  const Checkpoint ckpt = open_checkpoint(model);
  if (read_quantization(ckpt))  // validates the description first: a hostile file fails with its own problem
    throw UnsupportedError(in_file(ckpt.path, "is already quantized (it has a quantization description); quantize "
                                              "the original weights instead"));
  const ModelConfig cfg = config_for_checkpoint(ckpt);
  const std::vector<TensorPlan> plan = plan_quantization(ckpt, cfg, rules, request);

  QuantizeOptions options;
  options.policy = request.scheme ? std::string(scheme_name(*request.scheme)) : rules.label;
  if (request.scheme && !rules.label.empty()) options.policy += " + " + rules.label;
  options.producer = std::string("hxforge ") + HXFORGE_VERSION;
  options.metadata = ckpt.metadata;
  if (ckpt.format != CheckpointFormat::kSafetensors) options.metadata["format"] = "pt";
  uint64_t total_bytes = 0;
  for (const NamedTensor& t : ckpt.tensors) total_bytes += t.view.nbytes();
  Progress progress("quantize", plan.size(), total_bytes, !quiet(args));
  uint64_t shown_tensors = 0, shown_bytes = 0;
  options.progress = [&](uint64_t tensors, uint64_t bytes) {
    progress.advance(tensors - shown_tensors, bytes - shown_bytes);
    shown_tensors = tensors;
    shown_bytes = bytes;
  };

  QuantizeResult result;
  const bool single_file = fs::path(out).extension() == ".safetensors";
  if (dry_run) {
    result = write_quantized_checkpoint(ckpt, plan, "", options);
  } else if (single_file) {
    options.overwrite = overwrite;
    result = write_quantized_checkpoint(ckpt, plan, out, options);
  } else {
    const fs::path parent = fs::absolute(out).parent_path();
    const std::string temp = (parent / ("." + fs::path(out).filename().string() + ".tmp-" + std::to_string(getpid()))).string();
    fs::remove_all(temp);
    std::error_code ec;
    fs::create_directories(temp, ec);
    if (ec) throw IoError("cannot create " + temp + ": " + ec.message());
    try {
      result = write_quantized_checkpoint(ckpt, plan, temp + "/" + kSafetensorsSingleFileName, options);
      write_text_file(temp + "/config.json", output_config(ckpt, cfg, result.description).dump(2) + "\n");
      if (!ckpt.config_json_path.empty()) {
        const fs::path dir = fs::path(ckpt.config_json_path).parent_path();
        for (const char* name : kCompanionFiles)
          if (fs::is_regular_file(dir / name)) fs::copy_file(dir / name, fs::path(temp) / name);
      }
      commit_folder(temp, out, overwrite);
    } catch (...) {
      fs::remove_all(temp, ec);
      throw;
    }
  }
  progress.finish();

  const std::string report_scheme = request.scheme ? std::string(scheme_name(*request.scheme)) : rules.label;
  if (args.count("report")) {
    const std::string path = args["report"].as<std::string>();
    const std::string temp = path + ".tmp-" + std::to_string(getpid());
    write_text_file(temp, report_json(report_scheme, result).dump(2) + "\n");
    std::error_code ec;
    fs::rename(temp, path, ec);
    if (ec) throw IoError("cannot rename " + temp + " to " + path + ": " + ec.message());
  }
  if (!quiet(args)) print_summary(result, dry_run ? "(dry run, nothing written)" : out);
  return 0;
}

}  // namespace

const Subcommand kQuantize = {
    "quantize",
    "quantize MODEL --scheme {int8,fp8,fp6,fp5,int4} [--group-size N] [--policy FILE|PRESET] "
    "[--layout portable|torchao-tc|gemlite] [--fp8-scale row|tensor] --out PATH [--report FILE.json] [--force] "
    "[--dry-run]",
    "quantize the weights the architecture table marks quantizable; writes a quantized checkpoint and a per-tensor "
    "error report",
    "hxforge quantize model/ --scheme int4 --group-size 64 --out model-int4/ --report int4.json", declare, run};

}  // namespace hx::cli
