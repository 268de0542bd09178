// Conversion layouts: everything a teacher → hybrid conversion needs, as data (schemas/layout.schema.json).
//
// Design goals:
// - A new teacher of a known family needs a layout file, not code: the layer plan (which layers stay attention,
//   which become RWKV-7 or RWKV-7 + TICA), the RWKV/TICA geometry and LoRA ranks, the variant switches of
//   hxa07i.md's [choice] items, where KV-shared layers take missing K/V from, and one rule per student tensor —
//   transferred from a teacher tensor with a scale factor (RADLADS: receptance ← 0.5·q, key ← 0.5·k, value ← 0.3·v,
//   output ← 0.5·o), copied, or initialised (zeros, ones, constant, the RADLADS w0/a0 formulas, seeded orthogonal,
//   seeded normal) — plus the teacher tensors deliberately left behind, each with its reason.
// - Rules name tensors by their *local* name, the architecture table's pattern without "{P}layers.{L}." (or "{P}"):
//   "self_attn.receptance.weight", "embed_tokens.weight". Globs (`*`, `?`) and a layer selector (rwkv / attention /
//   model / any) pick the tensors; the first matching rule wins, so a layout ends with a catch-all copy.
// - Presets are the files in convert/layouts/, embedded in the binary at build time (one source of truth).
// - Every error names the layout (file or preset) and the key, with what was expected and what was found.
// Non-goals: arbitrary expressions in rules; layouts for architectures without a student_config.h function.
#pragma once

#include <cstdint>
#include <nlohmann/json.hpp>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "arch/model_config.h"

namespace hx {

inline constexpr int kLayoutFormatVersion = 1;

// How a new tensor is filled. Values are computed in double and rounded once to f32, then to the stored dtype.
enum class InitKind : uint8_t {
  kZeros,
  kOnes,
  kConstant,    // `value` everywhere (RADLADS v0 = k0 = 0.73, r_k = -0.04)
  kRadladsW0,   // www + 0.5 + 2.5·zigzag (hybrid-arch.md §4)
  kRadladsA0,   // -0.19 + 0.3·zigzag + 0.4·linear
  kOrthogonal,  // torch.nn.init.orthogonal_ of a seeded normal matrix, times gain·scale
  kNormal,      // seeded N(0, (std·gain)²)
};
std::string_view init_kind_name(InitKind k);  // the layout spelling: "zeros", "radlads_w0", "orthogonal", …

// gain of orthogonal / normal inits: a fixed number, or RWKV-LM's ortho_init rule √(rows/cols) if rows > cols else 1.
struct Gain {
  bool radlads = false;
  double value = 1.0;
  double of(int64_t rows, int64_t cols) const;
  bool operator==(const Gain&) const = default;
};

struct InitSpec {
  InitKind kind = InitKind::kZeros;
  double value = 0.0;  // kConstant
  double scale = 1.0;  // kOrthogonal: multiplies the gain (RADLADS: 0.1)
  double std = 0.0;    // kNormal
  Gain gain;           // kOrthogonal, kNormal
  bool seeded() const { return kind == InitKind::kOrthogonal || kind == InitKind::kNormal; }
  bool operator==(const InitSpec&) const = default;
};

// Which student layers a rule applies to.
enum class LayerSelector : uint8_t { kAny, kRwkv, kAttention, kModel };
std::string_view layer_selector_name(LayerSelector s);

struct TensorRule {
  std::string match;  // glob over the local name
  LayerSelector layers = LayerSelector::kAny;
  // Exactly one of: a teacher source (`from`, "$same" = the same local name) or an init.
  std::string from;
  double scale = 1.0;     // transfers: y = round(f32(x) · f32(scale))
  bool kv = false;        // a K/V weight: a KV-shared layer follows `kv_sharing`
  std::string tied_from;  // with a tied teacher head, take this tensor instead (lm_head ← embed_tokens)
  std::optional<InitSpec> init;
  bool operator==(const TensorRule&) const = default;
};

// Teacher tensors left out on purpose (hxa07i.md: q_norm/k_norm of converted layers), matched like rules.
struct DropRule {
  std::string match;
  LayerSelector layers = LayerSelector::kAny;
  std::string reason;
  bool operator==(const DropRule&) const = default;
};

enum class KvSource : uint8_t { kOwn, kSourceLayer };

struct LayoutRanks {
  bool radlads = false;  // RWKVInside's rank formulas of C (hybrid-arch.md §4), Python round-half-even
  LoraRanks ranks;       // when !radlads; value_mix / key_mix 0 where the residual is off
  bool operator==(const LayoutRanks&) const = default;
};

struct Layout {
  int format_version = kLayoutFormatVersion;
  std::string name;
  std::string description;
  std::string source;  // "preset 'reka-hxa079-l6'" or the file path, for messages

  Arch teacher_arch = Arch::kLlama;
  Arch student_arch = Arch::kHxa079;

  // Layer plan. hxa079: `attention_layers` stay (NoPE) attention, every other layer becomes RWKV-7.
  // hxa07i: every teacher layer of kind `convert_layer_kind` becomes RWKV-7 + TICA.
  std::vector<int> attention_layers;
  std::string convert_layer_kind;  // "full_attention"

  int64_t rwkv_head_dim = 0;  // 0: the teacher's head_dim ("teacher")
  LayoutRanks ranks;
  bool value_residual = false, key_residual = false, bonus = false;
  std::optional<bool> qk_norm;  // nullopt: "teacher" (on iff the teacher has q_norm/k_norm)
  bool rope = false;
  KScaling k_scaling = KScaling::kOmega;
  TicaConfig tica;  // hxa07i

  KvSource kv_when_absent = KvSource::kSourceLayer;
  KvSource kv_when_present = KvSource::kOwn;

  std::vector<TensorRule> rules;
  std::vector<DropRule> drops;

  std::vector<int64_t> probe_tokens;
  int probe_top_k = 5;

  nlohmann::json json;  // the layout as read (embedded in the manifest)
};

// Parses and validates a layout; `source` prefixes every error (FormatError / UnsupportedError, exit 3).
Layout parse_layout(const nlohmann::json& json, const std::string& source);
// Reads FILE, or a preset name. UsageError for a name that is neither a file nor a preset (listing the presets).
Layout load_layout(const std::string& file_or_preset);

// The embedded presets (convert/layouts/*.json), by name.
struct LayoutPreset {
  std::string_view name;
  std::string_view json_text;
};
std::span<const LayoutPreset> layout_presets();
std::optional<Layout> preset_layout(std::string_view name);
// The preset used when --layout is not given: reka-hxa079-l6 for hxa079, gemma4-e2b-hxa07i for hxa07i.
std::string default_layout_name(Arch student);

// RWKVInside's rank formulas for C = H·N (hybrid-arch.md §4, current trainer): decay max(256, r(1.7·C^0.6)),
// iclr max(32, r(1.8·C^0.5)), value/key mix max(32, r(1.3·C^0.5)), gate max(256, r(0.35·C^0.8)), with
// r(x) = round_half_even(x/32)·32 as Python's round() does.
LoraRanks radlads_ranks(int64_t c);

// Glob match: `*` any run (also empty), `?` one character; everything else literal.
bool layout_glob_match(std::string_view pattern, std::string_view text);

// Parses --attention-layers: "none" (no attention layer) or "8,15,22" (UsageError otherwise).
std::vector<int> parse_layer_list(const std::string& text);

}  // namespace hx
