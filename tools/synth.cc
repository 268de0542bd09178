// hxforge synth --arch {gemma4,llama,hxa079,hxa07i} --preset NAME [--seed N] [--layers N] [--realistic] --out PATH
#include <cstdio>

#include "arch/presets.h"
#include "arch/synth.h"
#include "formats/errors.h"
#include "tools/cli.h"
#include "tools/progress.h"

namespace hx::cli {
namespace {

void declare(po::options_description& options, po::positional_options_description&) {
  options.add_options()
      ("arch", po::value<std::string>()->required(), "gemma4, llama, hxa079 or hxa07i")
      ("preset", po::value<std::string>()->default_value("tiny"), "model shape (see the list below)")
      ("out", po::value<std::string>()->required(), "a folder (config.json + safetensors) or NAME.pth")
      ("seed", po::value<uint64_t>()->default_value(0), "seed of the weights")
      ("layers", po::value<int>(), "keep only the first N layers (the layer pattern is kept)")
      ("realistic", "heavy-tailed weights with outlier channels and row-scale spread, like trained LLMs")
      ("dtype", po::value<std::string>()->default_value("BF16"), "stored dtype: BF16, F16 or F32")
      ("shard-size", po::value<uint64_t>()->default_value(0), "bytes per safetensors shard (0: one file)")
      ("force", "replace OUT if it exists");
}

int run(const po::variables_map& args) {
  const auto arch = arch_from_name(args["arch"].as<std::string>());
  if (!arch) throw UsageError("--arch '" + args["arch"].as<std::string>() + "' is not one of gemma4, llama, hxa079, hxa07i");
  std::optional<int> layers;
  if (args.count("layers")) layers = args["layers"].as<int>();
  ModelConfig cfg = preset_config(*arch, args["preset"].as<std::string>(), layers);
  const auto dtype = dtype_from_name(args["dtype"].as<std::string>());
  if (!dtype || (*dtype != DType::kBF16 && *dtype != DType::kF16 && *dtype != DType::kF32))
    throw UsageError("--dtype '" + args["dtype"].as<std::string>() + "' is not BF16, F16 or F32");
  cfg.dtype = *dtype;
  SynthOptions options;
  options.seed = args["seed"].as<uint64_t>();
  options.realistic = args.count("realistic") > 0;
  options.overwrite = args.count("force") > 0;
  options.max_shard_bytes = args["shard-size"].as<uint64_t>();
  const std::string out = args["out"].as<std::string>();
  const uint64_t bytes = write_synthetic_checkpoint(cfg, out, options);
  if (!quiet(args))
    std::printf("synth: %s %s, %d layers, %s of %s weights (seed %llu%s) -> %s\n", std::string(arch_name(*arch)).c_str(),
                args["preset"].as<std::string>().c_str(), cfg.num_layers(), human_bytes(bytes).c_str(),
                std::string(dtype_name(cfg.dtype)).c_str(), static_cast<unsigned long long>(options.seed),
                options.realistic ? ", realistic" : "", out.c_str());
  return 0;
}

}  // namespace

const Subcommand kSynth = {
    "synth", "synth --arch {gemma4,llama,hxa079,hxa07i} --preset NAME [--seed N] [--layers N] [--realistic] --out PATH",
    "write a seeded random checkpoint + config.json of an architecture (presets: tiny, gemma4-e2b, reka-flash-3, …)",
    "hxforge synth --arch llama --preset tiny --seed 1 --out /tmp/llama-tiny", declare, run};

}  // namespace hx::cli
