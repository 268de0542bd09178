#include "quant/policy.h"

#include <fstream>
#include <sstream>
#include <unordered_map>

#include "formats/errors.h"
#include "quant/fpx.h"
#include "quant/hqq.h"

namespace hx {

using nlohmann::json;

MinPrecision scheme_precision(QuantScheme s) {
  switch (s) {
    case QuantScheme::kInt8: return MinPrecision::kInt8;
    case QuantScheme::kFp8: return MinPrecision::kFp8;
    case QuantScheme::kFp6: return MinPrecision::kFp6;
    case QuantScheme::kFp5: return MinPrecision::kFp5;
    case QuantScheme::kInt4: return MinPrecision::kInt4;
  }
  return MinPrecision::kKeep;
}

std::optional<QuantScheme> scheme_of_precision(MinPrecision p) {
  for (QuantScheme s : kAllQuantSchemes)
    if (scheme_precision(s) == p) return s;
  return std::nullopt;
}

std::string scheme_choice_name(const SchemeChoice& c) { return c ? std::string(scheme_name(*c)) : "keep"; }

namespace {

constexpr TensorRole kAllRoles[] = {
    TensorRole::kEmbedding, TensorRole::kPerLayerEmbedding, TensorRole::kPerLayerProjection, TensorRole::kNorm,
    TensorRole::kLayerScalar, TensorRole::kAttentionQ, TensorRole::kAttentionK, TensorRole::kAttentionV,
    TensorRole::kAttentionO, TensorRole::kBias, TensorRole::kRwkvR, TensorRole::kRwkvK, TensorRole::kRwkvV,
    TensorRole::kRwkvO, TensorRole::kLora, TensorRole::kDecayVector, TensorRole::kIclrVector, TensorRole::kMixVector,
    TensorRole::kBonus, TensorRole::kMlpGate, TensorRole::kMlpUp, TensorRole::kMlpDown, TensorRole::kHead,
    TensorRole::kBookkeeping, TensorRole::kTicaQ, TensorRole::kTicaK, TensorRole::kTicaV, TensorRole::kTicaO,
};

constexpr const char* kRoleGroups[] = {"attention", "mlp", "head", "other"};

SchemeChoice parse_choice(const json& v, const std::string& at) {
  if (!v.is_string()) throw FormatError(at + " must be a scheme name or \"keep\", got " + v.dump());
  const std::string name = v.get<std::string>();
  if (name == "keep") return std::nullopt;
  if (const auto s = scheme_from_name(name)) return *s;
  throw UnsupportedError(at + " is '" + name + "'; expected one of int8, fp8, fp6, fp5, int4, keep");
}

int parse_group_size(const json& v, const std::string& at) {
  if (!v.is_number_integer() || !hqq_group_size_ok(static_cast<int>(v.get<int64_t>())))
    throw UnsupportedError(at + " is " + v.dump() + "; expected 32, 64, 128 or 256");
  return static_cast<int>(v.get<int64_t>());
}

void require_keys(const json& j, std::initializer_list<const char*> allowed, const std::string& at) {
  for (const auto& [key, value] : j.items()) {
    bool known = false;
    for (const char* a : allowed) known = known || key == a;
    if (!known) {
      std::string list;
      for (const char* a : allowed) list += (list.empty() ? "" : ", ") + std::string(a);
      throw FormatError(at + " has unknown key '" + key + "'; expected one of " + list);
    }
  }
}

QuantPolicyRules mixed_preset(const char* name, QuantScheme attention, QuantScheme mlp) {
  QuantPolicyRules r;
  r.label = name;
  r.roles["attention"] = attention;
  r.roles["mlp"] = mlp;
  if (mlp == QuantScheme::kInt4) r.role_group_sizes["mlp"] = 128;  // RWKV-Infer: hqq g128 for the MLP
  return r;
}

}  // namespace

std::string role_key(TensorRole role) {
  std::string key(role_name(role));
  for (char& c : key)
    if (c == ' ' || c == '-') c = '_';
  return key;
}

std::string_view role_group(TensorRole role) {
  switch (role) {
    case TensorRole::kAttentionQ: case TensorRole::kAttentionK: case TensorRole::kAttentionV: case TensorRole::kAttentionO:
    case TensorRole::kRwkvR: case TensorRole::kRwkvK: case TensorRole::kRwkvV: case TensorRole::kRwkvO:
    case TensorRole::kTicaQ: case TensorRole::kTicaK: case TensorRole::kTicaV: case TensorRole::kTicaO:
      return "attention";
    case TensorRole::kMlpGate: case TensorRole::kMlpUp: case TensorRole::kMlpDown:
      return "mlp";
    case TensorRole::kHead:
      return "head";
    default:
      return "other";
  }
}

std::vector<std::string> policy_role_keys() {
  std::vector<std::string> keys(std::begin(kRoleGroups), std::end(kRoleGroups));
  for (TensorRole r : kAllRoles)
    if (role_key(r) != "head") keys.push_back(role_key(r));
  return keys;
}

std::vector<std::string> policy_preset_names() {
  return {"attn-int8-mlp-fp6", "attn-fp8-mlp-int4", "attn-int8-mlp-int4", "attn-int8-mlp-fp5"};
}

std::optional<QuantPolicyRules> policy_preset(std::string_view name) {
  if (name == "attn-int8-mlp-fp6") return mixed_preset("attn-int8-mlp-fp6", QuantScheme::kInt8, QuantScheme::kFp6);
  if (name == "attn-fp8-mlp-int4") return mixed_preset("attn-fp8-mlp-int4", QuantScheme::kFp8, QuantScheme::kInt4);
  if (name == "attn-int8-mlp-int4") return mixed_preset("attn-int8-mlp-int4", QuantScheme::kInt8, QuantScheme::kInt4);
  if (name == "attn-int8-mlp-fp5") return mixed_preset("attn-int8-mlp-fp5", QuantScheme::kInt8, QuantScheme::kFp5);
  return std::nullopt;
}

QuantPolicyRules parse_policy(const json& j, const std::string& source) {
  if (!j.is_object()) throw FormatError(source + ": a quantization policy must be a JSON object, got " + j.type_name());
  require_keys(j, {"$schema", "description", "format_version", "scheme", "group_size", "layout", "fp8_scale", "head",
                   "roles", "overrides"},
               source);
  QuantPolicyRules r;
  r.label = source;
  if (j.contains("format_version") && (!j["format_version"].is_number_integer() || j["format_version"].get<int>() != 1))
    throw UnsupportedError(source + ": policy format_version " + j["format_version"].dump() + " is not supported (expected 1)");
  if (j.contains("scheme")) r.scheme = parse_choice(j["scheme"], source + ": \"scheme\"");
  if (j.contains("group_size")) r.group_size = parse_group_size(j["group_size"], source + ": \"group_size\"");
  if (j.contains("layout")) {
    const auto l = j["layout"].is_string() ? layout_from_name(j["layout"].get<std::string>()) : std::nullopt;
    if (!l) throw UnsupportedError(source + ": \"layout\" is " + j["layout"].dump() + "; expected portable, torchao-tc or gemlite");
    r.layout = *l;
  }
  if (j.contains("fp8_scale")) {
    const auto m = j["fp8_scale"].is_string() ? fp8_scale_mode_from_name(j["fp8_scale"].get<std::string>()) : std::nullopt;
    if (!m) throw UnsupportedError(source + ": \"fp8_scale\" is " + j["fp8_scale"].dump() + "; expected row or tensor");
    r.fp8_scale = *m;
  }
  if (j.contains("head")) r.roles["head"] = parse_choice(j["head"], source + ": \"head\"");
  if (j.contains("roles")) {
    if (!j["roles"].is_object()) throw FormatError(source + ": \"roles\" must be an object");
    const std::vector<std::string> keys = policy_role_keys();
    for (const auto& [key, value] : j["roles"].items()) {
      if (std::find(keys.begin(), keys.end(), key) == keys.end()) {
        std::string list;
        for (const auto& k : keys) list += (list.empty() ? "" : ", ") + k;
        throw FormatError(source + ": \"roles\" has unknown role '" + key + "'; expected one of " + list);
      }
      const std::string at = source + ": roles." + key;
      if (value.is_object()) {  // {"scheme": …, "group_size": …}
        require_keys(value, {"scheme", "group_size"}, at);
        if (!value.contains("scheme")) throw FormatError(at + " has no \"scheme\"");
        r.roles[key] = parse_choice(value["scheme"], at + ".scheme");
        if (value.contains("group_size")) r.role_group_sizes[key] = parse_group_size(value["group_size"], at + ".group_size");
      } else {
        r.roles[key] = parse_choice(value, at);
      }
    }
  }
  if (j.contains("overrides")) {
    if (!j["overrides"].is_array()) throw FormatError(source + ": \"overrides\" must be an array");
    size_t i = 0;
    for (const auto& o : j["overrides"]) {
      const std::string at = source + ": overrides[" + std::to_string(i++) + "]";
      if (!o.is_object()) throw FormatError(at + " must be an object");
      require_keys(o, {"pattern", "scheme", "group_size"}, at);
      if (!o.contains("pattern") || !o["pattern"].is_string() || o["pattern"].get<std::string>().empty())
        throw FormatError(at + " has no \"pattern\" string");
      if (!o.contains("scheme")) throw FormatError(at + " has no \"scheme\"");
      PatternOverride po{o["pattern"].get<std::string>(), parse_choice(o["scheme"], at + ".scheme"), std::nullopt};
      if (o.contains("group_size")) po.group_size = parse_group_size(o["group_size"], at + ".group_size");
      r.overrides.push_back(std::move(po));
    }
  }
  return r;
}

QuantPolicyRules load_policy_file(const std::string& path) {
  std::ifstream in(path);
  if (!in) throw IoError("cannot open the policy file " + path);
  std::stringstream text;
  text << in.rdbuf();
  json j;
  try {
    j = json::parse(text.str());
  } catch (const json::exception& e) {
    throw FormatError(path + ": the policy is not valid JSON (" + e.what() + ")");
  }
  return parse_policy(j, path);
}

bool name_pattern_match(std::string_view pattern, std::string_view name) {
  // Iterative matcher with one backtracking point per '*': linear in practice, no recursion on hostile patterns.
  size_t p = 0, n = 0, star = std::string_view::npos, resume = 0;
  while (n < name.size()) {
    if (p < pattern.size() && (pattern[p] == '?' || pattern[p] == name[n])) {
      ++p;
      ++n;
    } else if (p < pattern.size() && pattern[p] == '*') {
      star = p++;
      resume = n;
    } else if (star != std::string_view::npos) {
      p = star + 1;
      n = ++resume;
    } else {
      return false;
    }
  }
  while (p < pattern.size() && pattern[p] == '*') ++p;
  return p == pattern.size();
}

namespace {

// Why a scheme cannot take a tensor of this shape in this layout ("" when it can).
std::string shape_misfit(QuantScheme s, int64_t in, int group_size) {
  switch (s) {
    case QuantScheme::kInt4:
      if (in % group_size != 0)
        return "in = " + std::to_string(in) + " is not a multiple of the int4 group size " + std::to_string(group_size);
      return "";
    case QuantScheme::kFp6:
    case QuantScheme::kFp5: {
      const int block = fpx_block_codes(fpx_format_of(s));
      if (in % block != 0)
        return "in = " + std::to_string(in) + " is not a multiple of " + std::to_string(block) + " (" +
               std::string(scheme_name(s)) + " packs " + std::to_string(block) + " codes per block)";
      return "";
    }
    default:
      return "";
  }
}

}  // namespace

std::vector<TensorPlan> plan_quantization(const Checkpoint& checkpoint, const ModelConfig& cfg,
                                          const QuantPolicyRules& rules, const QuantRequest& request) {
  const std::optional<SchemeChoice> default_scheme =
      request.scheme ? std::optional<SchemeChoice>(*request.scheme) : rules.scheme;
  if (!default_scheme && rules.roles.empty() && rules.overrides.empty())
    throw UsageError("nothing to quantize with: give --scheme, or a --policy preset or file that names schemes");
  if (request.group_size && !hqq_group_size_ok(*request.group_size))
    throw UsageError("--group-size " + std::to_string(*request.group_size) + " is not one of 32, 64, 128, 256");
  const QuantLayout wanted_layout = request.layout.value_or(rules.layout.value_or(QuantLayout::kPortable));
  const Fp8ScaleMode fp8_scale = request.fp8_scale.value_or(rules.fp8_scale.value_or(Fp8ScaleMode::kPerRow));

  const std::vector<ExpectedTensor> expected = expected_tensors(cfg);
  std::unordered_map<std::string, const ExpectedTensor*> by_name;
  for (const ExpectedTensor& e : expected) by_name.emplace(e.name, &e);

  std::vector<TensorPlan> plan;
  for (const NamedTensor& t : checkpoint.tensors) {
    TensorPlan p{t.name, std::nullopt, ""};
    const auto found = by_name.find(t.name);
    if (found == by_name.end() || !found->second->quant.quantizable) {  // the table's column decides
      plan.push_back(std::move(p));
      continue;
    }
    const ExpectedTensor& e = *found->second;
    const std::string key = role_key(e.role);
    const std::string group(role_group(e.role));

    // The scheme: default → group → role → patterns; the head is int8 unless a rule names it.
    std::optional<SchemeChoice> choice = default_scheme;
    if (e.role == TensorRole::kHead) choice = SchemeChoice(QuantScheme::kInt8);
    std::optional<int> group_size;
    if (const auto it = rules.roles.find(group); it != rules.roles.end()) choice = it->second;
    if (const auto it = rules.roles.find(key); it != rules.roles.end()) choice = it->second;
    if (const auto it = rules.role_group_sizes.find(group); it != rules.role_group_sizes.end()) group_size = it->second;
    if (const auto it = rules.role_group_sizes.find(key); it != rules.role_group_sizes.end()) group_size = it->second;
    if (request.group_size) group_size = request.group_size;  // the command line beats the rules' role sizes …
    for (const PatternOverride& o : rules.overrides) {          // … and name patterns beat everything
      if (!name_pattern_match(o.pattern, t.name)) continue;
      choice = o.scheme;
      if (o.group_size) group_size = o.group_size;
    }
    if (!choice || !*choice) {
      if (!choice) p.note = "no rule names a scheme for this " + std::string(role_name(e.role)) + " tensor";
      plan.push_back(std::move(p));
      continue;
    }
    const bool float_matrix = t.view.shape.size() == 2 &&
                              (t.view.dtype == DType::kF32 || t.view.dtype == DType::kBF16 || t.view.dtype == DType::kF16);
    if (!float_matrix) {
      p.note = "kept: only 2-D F32/BF16/F16 matrices are quantized, this is " + std::string(dtype_name(t.view.dtype)) +
               " " + shape_to_string(t.view.shape);
      plan.push_back(std::move(p));
      continue;
    }

    QuantizedTensorEntry q;
    q.name = t.name;
    q.shape = t.view.shape;
    q.dtype = t.view.dtype;
    q.scheme = **choice;
    q.fp8_scale = fp8_scale;
    q.group_size = group_size.value_or(rules.group_size.value_or(kHqqDefaultGroupSize));
    std::vector<std::string> notes;
    if (scheme_precision(q.scheme) < e.quant.lowest) {
      const QuantScheme floor = *scheme_of_precision(e.quant.lowest);
      notes.push_back(std::string(scheme_name(q.scheme)) + " is below this tensor's floor; raised to " +
                      std::string(scheme_name(floor)));
      q.scheme = floor;
    }
    if (const std::string misfit = shape_misfit(q.scheme, q.shape[1], q.group_size); !misfit.empty()) {
      notes.push_back(misfit + "; int8 instead");
      q.scheme = QuantScheme::kInt8;
    }
    // The layout asked for applies to the schemes that have it; a shape it cannot take falls back to portable.
    const bool fpx = q.scheme == QuantScheme::kFp6 || q.scheme == QuantScheme::kFp5;
    if (wanted_layout == QuantLayout::kTorchaoTc && fpx) {
      if (fpx_tc_shape_ok(q.shape[0], q.shape[1]))
        q.layout = QuantLayout::kTorchaoTc;
      else
        notes.push_back("torchao-tc needs out and in multiples of 64, got " + shape_to_string(q.shape) + "; portable layout");
    } else if (wanted_layout == QuantLayout::kGemlite && q.scheme == QuantScheme::kInt4) {
      if (q.shape[1] % 32 == 0)
        q.layout = QuantLayout::kGemlite;
      else
        notes.push_back("gemlite needs in to be a multiple of 32, got " + std::to_string(q.shape[1]) + "; portable layout");
    }
    if (q.scheme != QuantScheme::kInt4) q.group_size = 0;
    for (const std::string& n : notes) q.note += (q.note.empty() ? "" : "; ") + n;
    p.quantize = std::move(q);
    plan.push_back(std::move(p));
  }
  return plan;
}

}  // namespace hx
