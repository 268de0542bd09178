// Which tensors a quantization run quantizes, and how: the architecture table's policy column (tensor_table.h
// QuantPolicy: quantizable, lowest precision) combined with what the user asks for — `--scheme`, a preset such as
// attn-int8-mlp-int4, or a policy file (schemas/quant-policy.schema.json).
//
// Design goals:
//  * The table decides *what may* be quantized (matmul weights of attention, RWKV and MLP, and the head; never norms,
//    LoRA factors, w0/a0/v0/k0, embeddings); the user decides *how*, by role, role group or name pattern. Nothing in
//    quant/ looks at tensor names to decide quantizability.
//  * Resolution per tensor, most specific last: --scheme (or the file's "scheme") → the role group ("attention",
//    "mlp", "head") → the role ("mlp_down", "rwkv_key", …) → pattern overrides in file order. The head defaults to
//    int8 (RWKV-Infer keeps lm_head int8). A scheme below the row's floor is raised to the floor; a tensor whose shape
//    a scheme or layout cannot take falls back (int4/FPx → int8, torchao-tc/gemlite → portable), and the plan says
//    why in the entry's note.
// Non-goals: quantizing what the table marks unquantizable (a pattern cannot force it); per-tensor bit allocation
// from error measurements (importance matrices, mixed-precision search).
#pragma once

#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "arch/arch.h"
#include "arch/model_config.h"
#include "quant/codec.h"
#include "quant/fp8.h"
#include "quant/quantized_checkpoint.h"

namespace hx {

// The scheme's place in the table's precision order (tensor_table.h MinPrecision), and back (nullopt for kKeep).
MinPrecision scheme_precision(QuantScheme s);
std::optional<QuantScheme> scheme_of_precision(MinPrecision p);

// A scheme, or std::nullopt for "keep" (the tensor stays in its dtype).
using SchemeChoice = std::optional<QuantScheme>;
std::string scheme_choice_name(const SchemeChoice& c);  // "int8" … or "keep"

// "attention_q", "rwkv_key", "mlp_down", "head", … (role_name with '_' for spaces) and the groups a role belongs to.
std::string role_key(TensorRole role);
std::string_view role_group(TensorRole role);  // "attention", "mlp", "head" or "other"
std::vector<std::string> policy_role_keys();   // every key a policy file may use under "roles"

struct PatternOverride {
  std::string pattern;  // glob over the full tensor name: '*' any run of characters, '?' one character
  SchemeChoice scheme;
  std::optional<int> group_size;
};

struct QuantPolicyRules {
  std::string label;  // the preset's name or the file's path
  std::optional<SchemeChoice> scheme;         // the default for quantizable tensors
  std::map<std::string, SchemeChoice> roles;  // role key or group → scheme
  std::map<std::string, int> role_group_sizes;  // role key or group → int4 group size
  std::vector<PatternOverride> overrides;
  std::optional<int> group_size;
  std::optional<QuantLayout> layout;
  std::optional<Fp8ScaleMode> fp8_scale;
};

// The presets (RWKV-Infer's mixed modes): attn-int8-mlp-fp6, attn-fp8-mlp-int4, attn-int8-mlp-int4,
// attn-int8-mlp-fp5. Their int4 MLP groups are 128 wide, as in RWKV-Infer's int4 mode (attention: 64).
std::vector<std::string> policy_preset_names();
std::optional<QuantPolicyRules> policy_preset(std::string_view name);
// A policy file (JSON, schemas/quant-policy.schema.json). Unknown keys, roles and schemes are errors naming the file
// and the key (FormatError / UnsupportedError), so a typo cannot silently quantize the wrong tensors.
QuantPolicyRules load_policy_file(const std::string& path);
QuantPolicyRules parse_policy(const nlohmann::json& j, const std::string& source);

// The command line's settings; each one given wins over the rules'.
struct QuantRequest {
  std::optional<QuantScheme> scheme;
  std::optional<int> group_size;
  std::optional<QuantLayout> layout;
  std::optional<Fp8ScaleMode> fp8_scale;
};

// Every tensor of `checkpoint` in file order, kept or quantized with its resolved entry. Throws UsageError when
// nothing asks for a scheme (neither --scheme nor a policy) or for an int4 group size that cannot work.
std::vector<TensorPlan> plan_quantization(const Checkpoint& checkpoint, const ModelConfig& cfg,
                                          const QuantPolicyRules& rules, const QuantRequest& request);

// True when `name` matches the glob `pattern` ('*', '?').
bool name_pattern_match(std::string_view pattern, std::string_view name);

}  // namespace hx
