#include "convert/plan.h"

#include <algorithm>
#include <map>
#include <set>

#include "arch/student_config.h"
#include "formats/errors.h"

namespace hx {
namespace {

std::string join_ints(const std::vector<int>& v) {
  std::string s;
  for (int i : v) s += (s.empty() ? "" : ", ") + std::to_string(i);
  return s;
}

bool starts_with(std::string_view s, std::string_view p) { return s.substr(0, p.size()) == p; }

bool selector_fits(LayerSelector s, const ModelConfig& student, int layer) {
  switch (s) {
    case LayerSelector::kAny:
      return true;
    case LayerSelector::kModel:
      return layer < 0;
    case LayerSelector::kRwkv:
      return layer >= 0 && student.layers[layer].is_rwkv();
    case LayerSelector::kAttention:
      return layer >= 0 && !student.layers[layer].is_rwkv();
  }
  return false;
}

// The teacher's table, keyed by (local name, layer), to resolve a rule's `from`.
using TableKey = std::pair<std::string, int>;

// The layer plan of the layout (or --attention-layers) checked against the teacher's depth.
std::vector<int> attention_layers_for(const ModelConfig& teacher, const Layout& layout,
                                      const std::optional<std::vector<int>>& override_list) {
  const std::vector<int>& list = override_list ? *override_list : layout.attention_layers;
  std::vector<int> missing;
  for (int i : list)
    if (i >= teacher.num_layers()) missing.push_back(i);
  if (missing.empty()) return list;
  const std::string what = "layers " + join_ints(missing) + " do not exist: the teacher has " +
                           std::to_string(teacher.num_layers()) + " layers (0-" +
                           std::to_string(teacher.num_layers() - 1) + ")";
  if (override_list) throw UsageError("--attention-layers " + join_ints(list) + ": " + what);
  throw FormatError(in_file(layout.source, "key 'student.attention_layers' names " + what +
                                               "; pass --attention-layers LIST or a layout for this depth "
                                               "(e.g. --layout tiny)"));
}

}  // namespace

std::string_view provenance_name(Provenance p) {
  switch (p) {
    case Provenance::kCopy:
      return "copy";
    case Provenance::kCast:
      return "cast";
    case Provenance::kScale:
      return "scale";
    case Provenance::kInit:
      return "init";
  }
  return "?";
}

uint64_t ConversionPlan::total_bytes() const {
  uint64_t total = 0;
  for (const PlannedTensor& t : tensors) total += TensorSpec{t.name, t.dtype, t.shape}.nbytes();
  return total;
}

std::string local_name_of(const TensorRow& row) {
  std::string_view n = row.name;
  for (std::string_view prefix : {"{P}layers.{L}.", "{P}"})
    if (starts_with(n, prefix)) return std::string(n.substr(prefix.size()));
  return std::string(n);
}

ModelConfig student_config_for(const ModelConfig& teacher, const Layout& layout,
                               const std::optional<std::vector<int>>& attention_layers) {
  if (teacher.arch != layout.teacher_arch)
    throw FormatError(in_file(layout.source, "layout '" + layout.name + "' is for a " +
                                                 std::string(arch_name(layout.teacher_arch)) +
                                                 " teacher; the teacher is " + std::string(arch_name(teacher.arch))));
  auto ranks_for = [&](int64_t c) {
    LoraRanks r = layout.ranks.radlads ? radlads_ranks(c) : layout.ranks.ranks;
    if (!layout.value_residual) r.value_mix = 0;
    if (!layout.key_residual) r.key_mix = 0;
    return r;
  };
  ModelConfig s;
  if (layout.student_arch == Arch::kHxa079) {
    if (attention_layers && !layout.convert_layer_kind.empty())
      throw UsageError("--attention-layers does not apply to layout '" + layout.name + "'");
    const LayerConfig& l0 = teacher.layers.front();
    if (layout.rwkv_head_dim != 0 && layout.rwkv_head_dim != l0.head_dim)
      throw FormatError(in_file(layout.source,
                                "key 'student.rwkv.head_dim' is " + std::to_string(layout.rwkv_head_dim) +
                                    "; an hxa079 student keeps the teacher's head_dim " + std::to_string(l0.head_dim)));
    s = hxa079_student_config(teacher, attention_layers_for(teacher, layout, attention_layers),
                              ranks_for(l0.num_heads * l0.head_dim));
  } else {
    if (attention_layers)
      throw UsageError("--attention-layers applies to hxa079; hxa07i converts every " + layout.convert_layer_kind +
                       " layer (hxa07i.md)");
    const auto full = std::find_if(teacher.layers.begin(), teacher.layers.end(),
                                   [](const LayerConfig& l) { return l.kind == LayerKind::kFullAttention; });
    if (full == teacher.layers.end())
      throw FormatError(in_file(layout.source, "the teacher has no full_attention layer to convert"));
    const int64_t n = layout.rwkv_head_dim != 0 ? layout.rwkv_head_dim : full->head_dim;
    for (const LayerConfig& l : teacher.layers)
      if (l.kind == LayerKind::kFullAttention && (l.q_dim() % n != 0 || l.kv_dim() % n != 0))
        throw FormatError(in_file(layout.source, "key 'student.rwkv.head_dim' (" + std::to_string(n) +
                                                     ") does not divide the teacher's full-layer q width " +
                                                     std::to_string(l.q_dim()) + " and k width " +
                                                     std::to_string(l.kv_dim()) +
                                                     "; use a layout for this teacher (e.g. --layout tiny)"));
    s = hxa07i_student_config(teacher, n, ranks_for(full->q_dim()), layout.tica);
  }
  // The layout's switches (hxa07i.md [choice] items as data).
  s.rwkv.value_residual = layout.value_residual;
  s.rwkv.key_residual = layout.key_residual;
  s.rwkv.bonus = layout.bonus;
  s.rwkv.k_scaling = layout.k_scaling;
  if (layout.qk_norm) s.rwkv.qk_norm = *layout.qk_norm;
  s.rwkv.rope = layout.rope;
  for (LayerConfig& l : s.layers)
    if (l.is_rwkv()) l.rope = layout.rope ? teacher.layers.front().rope : RopeConfig{};
  validate_model_config(s, layout.source + " applied to a " + std::string(arch_name(teacher.arch)) + " teacher");
  return s;
}

ConversionPlan plan_conversion(const Checkpoint& teacher, const ModelConfig& teacher_cfg, const Layout& layout,
                               const PlanOptions& options) {
  ConversionPlan plan;
  plan.layout = layout;
  plan.teacher = teacher_cfg;
  plan.format = options.format;
  plan.seed = options.seed;

  // 1. The teacher must match its own table: a missing or misshapen tensor is reported here, by name.
  const TableReport teacher_report = check_tensors(teacher, teacher_cfg);
  if (!teacher_report.problems.empty()) {
    std::string all;
    for (const std::string& p : teacher_report.problems) all += "\n  " + p;
    throw FormatError(in_file(teacher.path, "the teacher does not match the " +
                                                std::string(arch_name(teacher_cfg.arch)) + " tensor table:" + all));
  }
  plan.skipped = teacher_report.skipped;

  // 2. The student's config. Planning uses HF names; a .pth is RWKV-LM named and stores its head (RWKV-Infer
  //    reads head.weight even for a tied teacher).
  ModelConfig student = student_config_for(teacher_cfg, layout, options.attention_layers);
  if (options.format == StudentFormat::kPth) {
    if (student.arch != Arch::kHxa079)
      throw UsageError("--format pth writes RWKV-LM names, which exist for hxa079 only; use safetensors for " +
                       std::string(arch_name(student.arch)));
    student.tie_word_embeddings = false;
  }
  student.dtype = options.dtype.value_or(teacher_cfg.dtype);

  std::map<TableKey, ExpectedTensor> teacher_table;
  std::map<std::string, TableKey> teacher_key_of;
  for (ExpectedTensor& e : expected_tensors(teacher_cfg)) {
    TableKey key{local_name_of(*e.row), e.layer};
    teacher_key_of[e.name] = key;
    teacher_table.emplace(std::move(key), std::move(e));
  }
  std::set<std::string> consumed;
  auto present = [&](const TableKey& key) -> const NamedTensor* {
    const auto it = teacher_table.find(key);
    return it == teacher_table.end() ? nullptr : teacher.find(it->second.name);
  };

  for (const ExpectedTensor& e : expected_tensors(student)) {
    PlannedTensor t;
    t.table_name = e.name;
    t.local_name = local_name_of(*e.row);
    t.layer = e.layer;
    t.shape = e.shape;
    if (options.format == StudentFormat::kPth) {
      t.name = std::string(e.row->rwkv_lm_name);
      if (e.layer >= 0) t.name.replace(t.name.find("{L}"), 3, std::to_string(e.layer));
    } else {
      t.name = e.name;
    }
    const auto rule_it = std::find_if(layout.rules.begin(), layout.rules.end(), [&](const TensorRule& r) {
      return selector_fits(r.layers, student, e.layer) && layout_glob_match(r.match, t.local_name);
    });
    if (rule_it == layout.rules.end()) {
      if (!e.required) continue;
      throw FormatError(in_file(layout.source, "no rule in 'tensors' matches student tensor '" + e.name +
                                                   "' (local name '" + t.local_name + "')"));
    }
    const TensorRule& rule = *rule_it;
    t.rule_index = static_cast<size_t>(rule_it - layout.rules.begin());
    const std::string rule_text =
        layout.source + ": rule tensors[" + std::to_string(t.rule_index) + "] ('" + rule.match + "')";

    if (rule.init) {
      if (!e.required) continue;  // optional new tensors (trainer bookkeeping) are not invented
      t.provenance = Provenance::kInit;
      t.init = *rule.init;
      t.context = {.layer = e.layer,
                   .num_layers = student.num_layers(),
                   .c = student.rwkv.r_dim(),
                   .head_dim = student.rwkv.head_dim};
      t.stream_key = seeded_stream_key(options.seed, t.table_name);
      t.dtype = student.dtype;
      plan.tensors.push_back(std::move(t));
      continue;
    }

    // A transfer: resolve the teacher tensor.
    std::string from = rule.from == "$same" ? t.local_name : rule.from;
    int from_layer = e.layer;
    if (!rule.tied_from.empty() && teacher_cfg.tie_word_embeddings && e.required) {
      from = rule.tied_from;
      t.source_note = "tied head: the teacher's " + from;
    }
    TableKey key{from, from_layer};
    if (!teacher_table.count(key) && !e.required) continue;  // an optional tensor the teacher cannot have
    if (!teacher_table.count(key))
      throw FormatError(rule_text + " takes '" + from + "'" +
                        (from_layer >= 0 ? " at layer " + std::to_string(from_layer) : "") + ", which the " +
                        std::string(arch_name(teacher_cfg.arch)) + " table has no tensor for (student tensor '" +
                        e.name + "')");
    const NamedTensor* source = present(key);
    const int shared_from = from_layer >= 0 ? teacher_cfg.layers[from_layer].kv_shared_from : -1;
    if (rule.kv && shared_from >= 0) {
      const bool own_present = source != nullptr;
      const KvSource choice = own_present ? layout.kv_when_present : layout.kv_when_absent;
      if (choice == KvSource::kSourceLayer) {
        if (source) {  // present but left behind: the layout prefers the shared K/V
          consumed.insert(source->name);
          plan.dropped.push_back({source->name, "kv_sharing.when_present = source_layer: layer " +
                                                    std::to_string(e.layer) + " takes layer " +
                                                    std::to_string(shared_from) + "'s K/V instead"});
        }
        key = {from, shared_from};
        source = present(key);
        t.source_note = "layer " + std::to_string(e.layer) + " shares layer " + std::to_string(shared_from) +
                        "'s K/V (kv_sharing: " + (own_present ? "when_present" : "when_absent") + " = source_layer)";
      } else if (source) {
        t.source_note = "layer " + std::to_string(e.layer) + "'s own " + from +
                        " (present, unused by the teacher; kv_sharing.when_present = own)";
      }
    }
    if (!source) {
      if (!e.required) continue;
      throw FormatError(in_file(teacher.path, "tensor '" + teacher_table.at(key).name +
                                                  "' is missing; needed for student tensor '" + e.name + "' (" +
                                                  rule_text + ")"));
    }
    if (source->view.shape != e.shape)
      throw FormatError(in_file(teacher.path, "tensor '" + source->name + "' has shape " +
                                                  shape_to_string(source->view.shape) + "; student tensor '" + e.name +
                                                  "' needs " + shape_to_string(e.shape) + " (" + rule_text + ")"));
    if (!is_float(source->view.dtype))
      throw FormatError(in_file(teacher.path, "tensor '" + source->name + "' has dtype " +
                                                  std::string(dtype_name(source->view.dtype)) +
                                                  "; expected a float dtype"));
    consumed.insert(source->name);
    t.source = source;
    t.scale = rule.scale;
    t.dtype = options.dtype.value_or(source->view.dtype);
    t.provenance = rule.scale != 1.0               ? Provenance::kScale
                   : t.dtype == source->view.dtype ? Provenance::kCopy
                                                   : Provenance::kCast;
    plan.tensors.push_back(std::move(t));
  }

  // 3. Every teacher tensor of the text stack is used, or dropped for a stated reason.
  for (const NamedTensor& nt : teacher.tensors) {
    if (consumed.count(nt.name) || std::find(plan.skipped.begin(), plan.skipped.end(), nt.name) != plan.skipped.end())
      continue;
    const TableKey& key = teacher_key_of.at(nt.name);  // the table check guarantees the name is in the table
    if (key.first == "lm_head.weight" && teacher_cfg.tie_word_embeddings) {
      plan.dropped.push_back({nt.name, "the teacher ties its head to embed_tokens, which the student uses"});
      continue;
    }
    const auto drop = std::find_if(layout.drops.begin(), layout.drops.end(), [&](const DropRule& d) {
      return selector_fits(d.layers, student, key.second) && layout_glob_match(d.match, key.first);
    });
    if (drop == layout.drops.end())
      throw FormatError(in_file(layout.source, "teacher tensor '" + nt.name +
                                                   "' is used by no rule and not listed "
                                                   "under 'drop'; add a rule or a drop entry with its reason"));
    plan.dropped.push_back({nt.name, drop->reason});
  }
  plan.student = std::move(student);
  return plan;
}

}  // namespace hx
