#include "convert/layout.h"

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <set>
#include <sstream>

#include "formats/errors.h"

namespace hx {

// Generated at build time from convert/layouts/*.json (convert/embed_layouts.cmake).
extern const LayoutPreset kEmbeddedLayouts[];
extern const size_t kEmbeddedLayoutCount;

namespace {

using json = nlohmann::json;

std::string shown(const json& v) {
  std::string s = v.dump();
  return s.size() > 80 ? s.substr(0, 77) + "..." : s;
}

// Reads one JSON object of a layout; every error names the layout and the key path. Unknown keys are errors, so a
// misspelt switch cannot silently fall back to a default.
class LayoutReader {
 public:
  LayoutReader(const json& obj, const std::string& source, std::string path, std::set<std::string> allowed)
      : obj_(obj), source_(source), path_(std::move(path)) {
    if (!obj_.is_object())
      throw FormatError(in_file(source_, "'" + path_ + "' must be an object, found " + shown(obj_)));
    for (const auto& [key, value] : obj_.items())
      if (!allowed.count(key)) {
        std::string names;
        for (const auto& a : allowed) names += (names.empty() ? "" : ", ") + a;
        throw FormatError(in_file(source_, "key '" + path_ + key + "' is unknown; expected one of " + names));
      }
  }

  const json* find(const std::string& key) const {
    auto it = obj_.find(key);
    return it == obj_.end() ? nullptr : &*it;
  }
  [[noreturn]] void fail(const std::string& key, const std::string& expected) const {
    const json* v = find(key);
    throw FormatError(in_file(source_, "key '" + path_ + key + "' " +
                                           (v ? "is invalid; expected " + expected + ", found " + shown(*v)
                                              : "is missing; expected " + expected)));
  }
  const json& required(const std::string& key, const std::string& expected) const {
    const json* v = find(key);
    if (!v) fail(key, expected);
    return *v;
  }
  std::string string(const std::string& key) const {
    const json& v = required(key, "a string");
    if (!v.is_string()) fail(key, "a string");
    return v.get<std::string>();
  }
  std::string string_or(const std::string& key, const std::string& fallback) const {
    return find(key) ? string(key) : fallback;
  }
  bool boolean(const std::string& key) const {
    const json& v = required(key, "true or false");
    if (!v.is_boolean()) fail(key, "true or false");
    return v.get<bool>();
  }
  bool boolean_or(const std::string& key, bool fallback) const { return find(key) ? boolean(key) : fallback; }
  double number(const std::string& key) const {
    const json& v = required(key, "a finite number");
    if (!v.is_number() || !std::isfinite(v.get<double>())) fail(key, "a finite number");
    return v.get<double>();
  }
  double number_or(const std::string& key, double fallback) const { return find(key) ? number(key) : fallback; }
  int64_t positive_int(const std::string& key) const {
    const json& v = required(key, "a positive integer");
    if (!(v.is_number_integer() || v.is_number_unsigned()) || v.get<int64_t>() <= 0) fail(key, "a positive integer");
    return v.get<int64_t>();
  }
  LayoutReader child(const std::string& key, std::set<std::string> allowed) const {
    const json& v = required(key, "an object");
    if (!v.is_object()) fail(key, "an object");
    return LayoutReader(v, source_, path_ + key + ".", std::move(allowed));
  }
  std::string key_path(const std::string& key) const { return path_ + key; }

 private:
  const json& obj_;
  const std::string& source_;
  std::string path_;
};

Arch parse_arch(const LayoutReader& r, const std::string& key, std::initializer_list<Arch> allowed) {
  const std::string name = r.string(key);
  const auto arch = arch_from_name(name);
  std::string names;
  for (Arch a : allowed) {
    names += (names.empty() ? "\"" : ", \"") + std::string(arch_name(a)) + "\"";
    if (arch == a) return a;
  }
  r.fail(key, names);
}

LayerSelector parse_selector(const LayoutReader& r) {
  const std::string s = r.string_or("layers", "any");
  if (s == "any") return LayerSelector::kAny;
  if (s == "rwkv") return LayerSelector::kRwkv;
  if (s == "attention") return LayerSelector::kAttention;
  if (s == "model") return LayerSelector::kModel;
  r.fail("layers", "\"any\", \"rwkv\", \"attention\" or \"model\"");
}

Gain parse_gain(const LayoutReader& r) {
  const json* v = r.find("gain");
  if (!v) return {};
  if (v->is_string() && *v == "radlads") return {.radlads = true};
  if (v->is_number() && v->get<double>() > 0 && std::isfinite(v->get<double>())) return {.value = v->get<double>()};
  r.fail("gain", "a positive number or \"radlads\" (√(rows/cols) if rows > cols, else 1)");
}

InitSpec parse_init(const LayoutReader& r) {
  InitSpec spec;
  const std::string rule = r.string("rule");
  static const std::pair<const char*, InitKind> kKinds[] = {
      {"zeros", InitKind::kZeros},          {"ones", InitKind::kOnes},
      {"constant", InitKind::kConstant},    {"radlads_w0", InitKind::kRadladsW0},
      {"radlads_a0", InitKind::kRadladsA0}, {"orthogonal", InitKind::kOrthogonal},
      {"normal", InitKind::kNormal}};
  bool known = false;
  for (const auto& [name, kind] : kKinds)
    if (rule == name) spec.kind = kind, known = true;
  if (!known) r.fail("rule", "zeros, ones, constant, radlads_w0, radlads_a0, orthogonal or normal");
  // Each rule takes only its own parameters, so a "std" on an orthogonal init is a mistake, not a no-op.
  auto only = [&](std::initializer_list<const char*> keys) {
    for (const char* k : {"value", "scale", "std", "gain"}) {
      bool allowed = false;
      for (const char* a : keys) allowed |= std::string_view(a) == k;
      if (!allowed && r.find(k)) r.fail(k, "nothing: rule '" + rule + "' takes no '" + k + "'");
    }
  };
  switch (spec.kind) {
    case InitKind::kConstant:
      only({"value"});
      spec.value = r.number("value");
      break;
    case InitKind::kOrthogonal:
      only({"scale", "gain"});
      spec.scale = r.number_or("scale", 1.0);
      spec.gain = parse_gain(r);
      break;
    case InitKind::kNormal:
      only({"std", "gain"});
      spec.std = r.number("std");
      if (spec.std < 0) r.fail("std", "a number ≥ 0");
      spec.gain = parse_gain(r);
      break;
    default:
      only({});
      break;
  }
  return spec;
}

TensorRule parse_rule(const json& j, const std::string& source, size_t index) {
  const LayoutReader r(j, source, "tensors[" + std::to_string(index) + "].",
                       {"match", "layers", "from", "scale", "kv", "tied_from", "init", "note"});
  TensorRule rule;
  rule.match = r.string("match");
  rule.layers = parse_selector(r);
  if (r.find("note")) r.string("note");
  const bool has_from = r.find("from") != nullptr, has_init = r.find("init") != nullptr;
  if (has_from == has_init) r.fail(has_from ? "init" : "from", "exactly one of 'from' (a teacher tensor) and 'init'");
  if (has_from) {
    rule.from = r.string("from");
    rule.scale = r.number_or("scale", 1.0);
    rule.kv = r.boolean_or("kv", false);
    rule.tied_from = r.string_or("tied_from", "");
  } else {
    for (const char* k : {"scale", "kv", "tied_from"})
      if (r.find(k)) r.fail(k, "nothing: '" + std::string(k) + "' belongs to a rule with 'from'");
    rule.init = parse_init(r.child("init", {"rule", "value", "scale", "std", "gain"}));
  }
  return rule;
}

KvSource parse_kv_source(const LayoutReader& r, const std::string& key, KvSource fallback) {
  if (!r.find(key)) return fallback;
  const std::string s = r.string(key);
  if (s == "own") return KvSource::kOwn;
  if (s == "source_layer") return KvSource::kSourceLayer;
  r.fail(key, "\"own\" or \"source_layer\"");
}

void parse_rwkv(const LayoutReader& r, Layout& layout) {
  if (const json* hd = r.find("head_dim"); hd && hd->is_string()) {
    if (*hd != "teacher") r.fail("head_dim", "a positive integer or \"teacher\"");
  } else {
    layout.rwkv_head_dim = r.positive_int("head_dim");
  }
  const json& ranks = r.required("ranks", "\"radlads\" or an object of ranks");
  if (ranks.is_string()) {
    if (ranks != "radlads") r.fail("ranks", "\"radlads\" or an object of ranks");
    layout.ranks.radlads = true;
  } else {
    const LayoutReader rr = r.child("ranks", {"decay", "iclr", "value_mix", "key_mix", "gate"});
    LoraRanks& k = layout.ranks.ranks;
    k.decay = rr.positive_int("decay");
    k.iclr = rr.positive_int("iclr");
    k.gate = rr.positive_int("gate");
    if (rr.find("value_mix")) k.value_mix = rr.positive_int("value_mix");
    if (rr.find("key_mix")) k.key_mix = rr.positive_int("key_mix");
  }
  layout.value_residual = r.boolean("value_residual");
  layout.key_residual = r.boolean("key_residual");
  layout.bonus = r.boolean("bonus");
  if (!layout.ranks.radlads) {
    if (layout.value_residual && layout.ranks.ranks.value_mix == 0)
      r.fail("ranks", "a value_mix rank, since value_residual is on");
    if (layout.key_residual && layout.ranks.ranks.key_mix == 0)
      r.fail("ranks", "a key_mix rank, since key_residual is on");
  }
  if (const json* q = r.find("qk_norm"); q && q->is_string()) {
    if (*q != "teacher") r.fail("qk_norm", "true, false or \"teacher\"");
  } else {
    layout.qk_norm = r.boolean("qk_norm");
  }
  layout.rope = r.boolean("rope");
  const std::string k = r.string("k_scaling");
  if (k == "omega")
    layout.k_scaling = KScaling::kOmega;
  else if (k == "decay")
    layout.k_scaling = KScaling::kDecay;
  else
    r.fail("k_scaling", "\"omega\" (hxa079: k·(1-ω+a)) or \"decay\" (hxa07i: k·(1-d+a))");
}

}  // namespace

std::string_view init_kind_name(InitKind k) {
  switch (k) {
    case InitKind::kZeros:
      return "zeros";
    case InitKind::kOnes:
      return "ones";
    case InitKind::kConstant:
      return "constant";
    case InitKind::kRadladsW0:
      return "radlads_w0";
    case InitKind::kRadladsA0:
      return "radlads_a0";
    case InitKind::kOrthogonal:
      return "orthogonal";
    case InitKind::kNormal:
      return "normal";
  }
  return "?";
}

std::string_view layer_selector_name(LayerSelector s) {
  switch (s) {
    case LayerSelector::kAny:
      return "any";
    case LayerSelector::kRwkv:
      return "rwkv";
    case LayerSelector::kAttention:
      return "attention";
    case LayerSelector::kModel:
      return "model";
  }
  return "?";
}

double Gain::of(int64_t rows, int64_t cols) const {
  if (!radlads) return value;
  return rows > cols ? std::sqrt(static_cast<double>(rows) / static_cast<double>(cols)) : 1.0;
}

Layout parse_layout(const json& j, const std::string& source) {
  const LayoutReader top(j, source, "",
                         {"$schema", "format_version", "name", "description", "teacher", "student", "kv_sharing",
                          "tensors", "drop", "probe"});
  Layout layout;
  layout.source = source;
  layout.json = j;
  const json& version = top.required("format_version", "1");
  if (!version.is_number_integer() || version.get<int>() != kLayoutFormatVersion)
    throw UnsupportedError(in_file(source, "key 'format_version' is unsupported; expected " +
                                               std::to_string(kLayoutFormatVersion) + ", found " + shown(version)));
  layout.name = top.string("name");
  layout.description = top.string_or("description", "");

  layout.teacher_arch =
      parse_arch(top.child("teacher", {"architecture"}), "architecture", {Arch::kLlama, Arch::kGemma4});
  const LayoutReader student =
      top.child("student", {"architecture", "attention_layers", "convert_layer_kind", "rwkv", "tica"});
  layout.student_arch = parse_arch(student, "architecture", {Arch::kHxa079, Arch::kHxa07i});
  const Arch expected_teacher = layout.student_arch == Arch::kHxa079 ? Arch::kLlama : Arch::kGemma4;
  if (layout.teacher_arch != expected_teacher)
    throw FormatError(in_file(source, "key 'teacher.architecture' does not fit the student; a " +
                                          std::string(arch_name(layout.student_arch)) + " student needs a " +
                                          std::string(arch_name(expected_teacher)) + " teacher, found " +
                                          std::string(arch_name(layout.teacher_arch))));

  if (layout.student_arch == Arch::kHxa079) {
    const json& list = student.required("attention_layers", "a list of layer indices (may be empty)");
    std::set<int> seen;
    if (!list.is_array()) student.fail("attention_layers", "a list of layer indices (may be empty)");
    for (const json& e : list) {
      if (!e.is_number_integer() || e.get<int64_t>() < 0 || e.get<int64_t>() > 1'000'000 ||
          !seen.insert(e.get<int>()).second)
        student.fail("attention_layers", "distinct non-negative layer indices");
    }
    layout.attention_layers.assign(seen.begin(), seen.end());
    if (student.find("convert_layer_kind")) student.fail("convert_layer_kind", "nothing for an hxa079 student");
    if (student.find("tica")) student.fail("tica", "nothing for an hxa079 student (TICA is hxa07i's)");
  } else {
    layout.convert_layer_kind = student.string("convert_layer_kind");
    if (layout.convert_layer_kind != "full_attention")
      student.fail("convert_layer_kind", "\"full_attention\" (hxa07i.md converts the full layers)");
    if (student.find("attention_layers")) student.fail("attention_layers", "nothing for an hxa07i student");
    const LayoutReader t = student.child("tica", {"num_heads", "num_kv_heads", "head_dim", "gate_rank"});
    layout.tica = {.num_heads = t.positive_int("num_heads"),
                   .num_kv_heads = t.positive_int("num_kv_heads"),
                   .head_dim = t.positive_int("head_dim"),
                   .gate_rank = t.positive_int("gate_rank")};
    if (layout.tica.num_heads % layout.tica.num_kv_heads != 0)
      t.fail("num_heads", "a multiple of num_kv_heads (" + std::to_string(layout.tica.num_kv_heads) + ")");
  }
  parse_rwkv(student.child("rwkv", {"head_dim", "ranks", "value_residual", "key_residual", "bonus", "qk_norm", "rope",
                                    "k_scaling"}),
             layout);

  if (top.find("kv_sharing")) {
    const LayoutReader kv = top.child("kv_sharing", {"when_absent", "when_present"});
    layout.kv_when_absent = parse_kv_source(kv, "when_absent", KvSource::kSourceLayer);
    layout.kv_when_present = parse_kv_source(kv, "when_present", KvSource::kOwn);
  }

  const json& rules = top.required("tensors", "a non-empty list of tensor rules");
  if (!rules.is_array() || rules.empty()) top.fail("tensors", "a non-empty list of tensor rules");
  for (size_t i = 0; i < rules.size(); ++i) layout.rules.push_back(parse_rule(rules[i], source, i));

  if (const json* drops = top.find("drop")) {
    if (!drops->is_array()) top.fail("drop", "a list of {match, layers, reason}");
    for (size_t i = 0; i < drops->size(); ++i) {
      const LayoutReader d((*drops)[i], source, "drop[" + std::to_string(i) + "].", {"match", "layers", "reason"});
      layout.drops.push_back({d.string("match"), parse_selector(d), d.string("reason")});
    }
  }

  if (top.find("probe")) {
    const LayoutReader p = top.child("probe", {"tokens", "top_k"});
    const json& tokens = p.required("tokens", "a non-empty list of token ids");
    if (!tokens.is_array() || tokens.empty()) p.fail("tokens", "a non-empty list of token ids");
    for (const json& t : tokens) {
      if (!t.is_number_integer() || t.get<int64_t>() < 0) p.fail("tokens", "non-negative token ids");
      layout.probe_tokens.push_back(t.get<int64_t>());
    }
    layout.probe_top_k = static_cast<int>(p.positive_int("top_k"));
  }
  return layout;
}

std::span<const LayoutPreset> layout_presets() { return {kEmbeddedLayouts, kEmbeddedLayoutCount}; }

std::optional<Layout> preset_layout(std::string_view name) {
  for (const LayoutPreset& p : layout_presets())
    if (p.name == name) return parse_layout(json::parse(p.json_text), "preset '" + std::string(name) + "'");
  return std::nullopt;
}

std::string default_layout_name(Arch student) {
  return student == Arch::kHxa07i ? "gemma4-e2b-hxa07i" : "reka-hxa079-l6";
}

Layout load_layout(const std::string& file_or_preset) {
  if (auto preset = preset_layout(file_or_preset)) return *preset;
  if (!std::filesystem::is_regular_file(file_or_preset)) {
    std::string names;
    for (const LayoutPreset& p : layout_presets()) names += (names.empty() ? "" : ", ") + std::string(p.name);
    throw UsageError("--layout '" + file_or_preset + "' is neither a file nor a preset; presets: " + names);
  }
  std::ifstream in(file_or_preset);
  if (!in) throw IoError(in_file(file_or_preset, "cannot be read"));
  std::stringstream text;
  text << in.rdbuf();
  const json j = json::parse(text.str(), nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded()) throw FormatError(in_file(file_or_preset, "is not valid JSON; expected a layout object"));
  return parse_layout(j, file_or_preset);
}

LoraRanks radlads_ranks(int64_t c) {
  // Python's round() rounds halves to even, as std::nearbyint does in the default rounding mode.
  auto r32 = [](double x) { return static_cast<int64_t>(std::nearbyint(x / 32.0)) * 32; };
  const double cd = static_cast<double>(c);
  const int64_t mix = std::max<int64_t>(32, r32(1.3 * std::pow(cd, 0.5)));
  return {.decay = std::max<int64_t>(256, r32(1.7 * std::pow(cd, 0.6))),
          .iclr = std::max<int64_t>(32, r32(1.8 * std::pow(cd, 0.5))),
          .value_mix = mix,
          .key_mix = mix,
          .gate = std::max<int64_t>(256, r32(0.35 * std::pow(cd, 0.8)))};
}

bool layout_glob_match(std::string_view pattern, std::string_view text) {
  // Iterative matcher with one backtrack point for the last '*' (linear in practice, no recursion).
  size_t p = 0, t = 0, star = std::string_view::npos, star_t = 0;
  while (t < text.size()) {
    if (p < pattern.size() && (pattern[p] == '?' || pattern[p] == text[t])) {
      ++p, ++t;
    } else if (p < pattern.size() && pattern[p] == '*') {
      star = p++;
      star_t = t;
    } else if (star != std::string_view::npos) {
      p = star + 1;
      t = ++star_t;
    } else {
      return false;
    }
  }
  while (p < pattern.size() && pattern[p] == '*') ++p;
  return p == pattern.size();
}

std::vector<int> parse_layer_list(const std::string& text) {
  if (text == "none") return {};
  std::vector<int> out;
  std::set<int> seen;
  std::stringstream in(text);
  std::string item;
  while (std::getline(in, item, ',')) {
    size_t used = 0;
    int value = -1;
    try {
      value = std::stoi(item, &used);
    } catch (const std::exception&) {
      used = 0;
    }
    if (item.empty() || used != item.size() || value < 0 || !seen.insert(value).second)
      throw UsageError("--attention-layers '" + text +
                       "' is not 'none' or a list of distinct layer indices like 8,15,22");
    out.push_back(value);
  }
  if (out.empty()) throw UsageError("--attention-layers '' is empty; use 'none' for a model without attention layers");
  std::sort(out.begin(), out.end());
  return out;
}

}  // namespace hx
