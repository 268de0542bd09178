// Named model shapes for `hxforge synth --arch A --preset NAME [--layers N]`.
//
// Design goals: a `tiny` preset per architecture that exercises every feature in a model of a few hundred KB
// (the teacher tinies are the oracle fixtures' configs exactly), and the full-size shapes of the teachers
// (gemma4-e2b, reka-flash-3) and their students, so converters and kernels can be tested at real sizes.
// `layers` shrinks depth while keeping the layer pattern (layer i keeps its kind; a Gemma stack's last layer is
// made full, as transformers requires) and recomputes KV sharing.
// Non-goals: weights (synth seeds them), presets for models the project does not target.
#pragma once

#include <optional>
#include <span>
#include <string>
#include <string_view>

#include "arch/model_config.h"

namespace hx {

struct PresetInfo {
  Arch arch;
  std::string_view name;
  std::string_view summary;  // one line for --help
  ModelConfig (*build)(std::optional<int> layers);
};

std::span<const PresetInfo> list_presets();
// One line per preset, "  gemma4  tiny          10 layers, …", for --help.
std::string presets_help();

// The preset's config with its first `layers` layers (default: all). UsageError for an unknown preset (naming the
// ones available) or a layer count outside [1, depth].
ModelConfig preset_config(Arch arch, std::string_view preset, std::optional<int> layers = std::nullopt);

}  // namespace hx
