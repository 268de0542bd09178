// hxforge repack IN OUT: lossless, streaming format change between .pth and safetensors (file or sharded folder).
#include <cstdio>
#include <filesystem>

#include "formats/checkpoint.h"
#include "formats/errors.h"
#include "formats/pth.h"
#include "formats/safetensors.h"
#include "tools/cli.h"
#include "tools/progress.h"

namespace hx::cli {
namespace {

// HF's default shard size; a folder output is always written sharded with an index.
constexpr uint64_t kDefaultShardBytes = 5'000'000'000ULL;

enum class OutputKind { kSafetensorsFile, kSafetensorsFolder, kPth };

OutputKind output_kind_of(const std::string& out) {
  const auto ext = std::filesystem::path(out).extension().string();
  if (ext == ".safetensors") return OutputKind::kSafetensorsFile;
  if (ext == ".pth" || ext == ".pt" || ext == ".bin") return OutputKind::kPth;
  return OutputKind::kSafetensorsFolder;
}

uint64_t parse_size(const std::string& text) {
  size_t used = 0;
  double value = 0;
  try {
    value = std::stod(text, &used);
  } catch (const std::exception&) {
    throw UsageError("--shard-size '" + text + "' is not a size (e.g. 2GB, 500MB, 1GiB)");
  }
  std::string unit = text.substr(used);
  const std::pair<const char*, double> units[] = {{"", 1},        {"B", 1},       {"KB", 1e3},          {"MB", 1e6},
                                                  {"GB", 1e9},    {"KiB", 1024.}, {"MiB", 1048576.},    {"GiB", 1073741824.}};
  for (const auto& [name, factor] : units)
    if (unit == name && value > 0) return static_cast<uint64_t>(value * factor);
  throw UsageError("--shard-size '" + text + "' is not a positive size (e.g. 2GB, 500MB, 1GiB)");
}

void declare(po::options_description& options, po::positional_options_description& positional) {
  options.add_options()
      ("in", po::value<std::string>()->required(), "input checkpoint (.safetensors, model folder, .pth/.pt/.bin)")
      ("out", po::value<std::string>()->required(),
       "output: NAME.safetensors, NAME.pth/.pt/.bin, or a folder (sharded safetensors + index.json)")
      ("shard-size", po::value<std::string>()->default_value("5GB"), "largest shard when OUT is a folder")
      ("force", "replace OUT if it exists");
  positional.add("in", 1).add("out", 1);
}

int run(const po::variables_map& args) {
  const std::string in = args["in"].as<std::string>(), out = args["out"].as<std::string>();
  const bool overwrite = args.count("force") > 0;
  const Checkpoint ckpt = open_checkpoint(in);
  const auto specs = specs_of(ckpt.tensors);
  uint64_t total = 0;
  for (const auto& s : specs) total += s.nbytes();

  Progress progress("repack", specs.size(), total, !quiet(args));
  const TensorSource tensors = source_of(ckpt.tensors);
  const TensorSource counted = [&](size_t index, const ByteSink& sink) {
    tensors(index, [&](std::span<const std::byte> chunk) {
      sink(chunk);
      progress.advance(0, chunk.size());
    });
    progress.advance(1, 0);
  };

  const OutputKind kind = output_kind_of(out);
  if (kind == OutputKind::kPth) {
    PthWriteOptions options;
    options.overwrite = overwrite;
    write_pth(out, specs, counted, options);
  } else {
    SafetensorsWriteOptions options;
    options.overwrite = overwrite;
    options.metadata = ckpt.metadata;
    if (ckpt.format != CheckpointFormat::kSafetensors) options.metadata["format"] = "pt";  // what HF loaders expect
    if (kind == OutputKind::kSafetensorsFolder) {
      options.max_shard_bytes = args.count("shard-size") ? parse_size(args["shard-size"].as<std::string>())
                                                         : kDefaultShardBytes;
    }
    write_safetensors(out, specs, counted, options);
    if (kind == OutputKind::kSafetensorsFolder && !ckpt.config_json_path.empty()) {
      const auto dir = std::filesystem::path(ckpt.config_json_path).parent_path();
      for (const char* name : {"config.json", "generation_config.json"}) {
        if (std::filesystem::exists(dir / name))
          std::filesystem::copy_file(dir / name, std::filesystem::path(out) / name,
                                     std::filesystem::copy_options::overwrite_existing);
      }
    }
  }
  progress.finish();
  if (!quiet(args))
    std::printf("repacked %zu tensors (%s) from %s (%s) to %s\n", specs.size(), human_bytes(total).c_str(),
                in.c_str(), format_name(ckpt.format), out.c_str());
  return 0;
}

}  // namespace

const Subcommand kRepack = {
    "repack", "repack IN OUT [--shard-size SIZE] [--force]",
    "lossless format change between .pth and safetensors (single file or sharded folder); dtypes and bytes kept",
    "hxforge repack model.pth model.safetensors", declare, run};

}  // namespace hx::cli
