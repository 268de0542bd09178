// hxforge inspect PATH [--json] [--hash] [--check]
#include <cstdio>
#include <iostream>
#include <nlohmann/json.hpp>

#include <fstream>

#include "arch/arch.h"
#include "arch/model_config.h"
#include "formats/checkpoint.h"
#include "formats/errors.h"
#include "formats/sha256.h"
#include "tools/cli.h"
#include "tools/progress.h"

namespace hx::cli {
namespace {

void declare(po::options_description& options, po::positional_options_description& positional) {
  options.add_options()
      ("path", po::value<std::string>()->required(), "checkpoint: .safetensors, model folder, or .pth/.pt/.bin")
      ("json", "print JSON (cli.md fields) instead of a table")
      ("hash", "add the SHA-256 of every tensor (C-order contiguous bytes), hashed in parallel")
      ("check", "report every structural problem; exit 3 when there is one");
  positional.add("path", 1);
}

nlohmann::json shape_json(const Shape& s) { return nlohmann::json(s); }

struct ArchitectureFindings {
  std::string name;                   // "" when unknown
  std::vector<std::string> problems;  // against the architecture's table (only when checking)
};

// The architecture (from config.json, else from tensor names) and, when checking, every table problem.
ArchitectureFindings examine_architecture(const Checkpoint& ckpt, bool check) {
  ArchitectureFindings found;
  nlohmann::json config;
  if (!ckpt.config_json_path.empty()) {
    std::ifstream f(ckpt.config_json_path);
    config = nlohmann::json::parse(f, nullptr, /*allow_exceptions=*/false);
    if (config.is_discarded()) {
      found.problems.push_back(in_file(ckpt.config_json_path, "is not valid JSON"));
      return found;
    }
  }
  const auto arch = detect_architecture(ckpt, config.is_object() ? &config : nullptr);
  if (!arch) return found;
  found.name = std::string(arch_name(*arch));
  if (!check) return found;
  try {
    const ModelConfig cfg = config_for_checkpoint(ckpt);
    for (auto& p : check_against_table(ckpt, cfg)) found.problems.push_back(in_file(ckpt.path, p));
  } catch (const FormatError& e) {
    found.problems.push_back(e.what());
  } catch (const UnsupportedError& e) {
    found.problems.push_back(e.what());
  }
  return found;
}

void print_table(const Checkpoint& ckpt, const std::string& arch, const std::vector<Digest>* hashes) {
  uint64_t total = 0;
  size_t name_width = 4;
  for (const auto& t : ckpt.tensors) {
    total += t.view.nbytes();
    name_width = std::max(name_width, t.name.size());
  }
  std::printf("%s: %s, architecture %s, %zu tensors, %s\n", ckpt.path.c_str(), format_name(ckpt.format),
              arch.empty() ? "unknown" : arch.c_str(), ckpt.tensors.size(), human_bytes(total).c_str());
  for (const auto& [k, v] : ckpt.metadata) std::printf("  metadata %s = %s\n", k.c_str(), v.c_str());
  std::printf("%-*s  %-8s  %-20s  %12s%s\n", static_cast<int>(name_width), "name", "dtype", "shape", "bytes",
              hashes ? "  sha256" : "");
  for (size_t i = 0; i < ckpt.tensors.size(); ++i) {
    const auto& t = ckpt.tensors[i];
    std::printf("%-*s  %-8s  %-20s  %12llu%s%s\n", static_cast<int>(name_width), t.name.c_str(),
                std::string(dtype_name(t.view.dtype)).c_str(), shape_to_string(t.view.shape).c_str(),
                static_cast<unsigned long long>(t.view.nbytes()), hashes ? "  " : "",
                hashes ? to_hex((*hashes)[i]).c_str() : "");
  }
  for (const auto& leaf : ckpt.other_leaves)
    std::printf("  (non-tensor) %s: %s = %s\n", leaf.path.c_str(), leaf.type.c_str(), leaf.value.c_str());
}

int run(const po::variables_map& args) {
  const std::string path = args["path"].as<std::string>();
  const bool as_json = args.count("json") > 0;
  std::vector<std::string> problems;
  if (args.count("check")) problems = check_checkpoint_structure(path);

  nlohmann::json out;
  out["problems"] = problems;
  if (!problems.empty()) {  // the file does not load: report every structural problem and stop
    out["format"] = nullptr;
    out["architecture"] = nullptr;
    out["tensors"] = nlohmann::json::array();
    if (as_json) {
      std::cout << out.dump(2) << "\n";
    } else {
      std::printf("%s: %zu problem(s):\n", path.c_str(), problems.size());
      for (const auto& p : problems) std::printf("  - %s\n", p.c_str());
    }
    return static_cast<int>(ExitCode::kInvalidInput);
  }

  const Checkpoint ckpt = open_checkpoint(path);
  const ArchitectureFindings arch = examine_architecture(ckpt, args.count("check") > 0);
  problems = arch.problems;
  out["problems"] = problems;
  std::vector<Digest> hashes;
  if (args.count("hash")) hashes = sha256_tensors(ckpt.tensors);
  if (as_json) {
    out["format"] = format_name(ckpt.format);
    out["architecture"] = arch.name.empty() ? nlohmann::json(nullptr) : nlohmann::json(arch.name);
    out["files"] = ckpt.files;
    out["metadata"] = ckpt.metadata;
    auto& tensors = out["tensors"] = nlohmann::json::array();
    for (size_t i = 0; i < ckpt.tensors.size(); ++i) {
      const auto& t = ckpt.tensors[i];
      nlohmann::json row = {{"name", t.name},
                            {"dtype", dtype_name(t.view.dtype)},
                            {"shape", shape_json(t.view.shape)},
                            {"nbytes", t.view.nbytes()}};
      if (!hashes.empty()) row["sha256"] = to_hex(hashes[i]);
      tensors.push_back(std::move(row));
    }
    auto& leaves = out["other_leaves"] = nlohmann::json::array();
    for (const auto& leaf : ckpt.other_leaves)
      leaves.push_back({{"path", leaf.path}, {"type", leaf.type}, {"value", leaf.value}});
    std::cout << out.dump(2) << "\n";
  } else {
    print_table(ckpt, arch.name, hashes.empty() ? nullptr : &hashes);
    if (args.count("check")) {
      if (problems.empty()) std::printf("check: no problems%s\n", arch.name.empty() ? " (architecture unknown: structure only)" : "");
      for (const auto& p : problems) std::printf("  - %s\n", p.c_str());
    }
  }
  return problems.empty() ? 0 : static_cast<int>(ExitCode::kInvalidInput);
}

}  // namespace

const Subcommand kInspect = {
    "inspect", "inspect PATH [--json] [--hash] [--check]",
    "list the tensors of a checkpoint (name, dtype, shape, bytes, SHA-256), its format and architecture",
    "hxforge inspect model.safetensors --hash --check", declare, run};

}  // namespace hx::cli
