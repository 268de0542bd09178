#include "convert/manifest.h"

#include <filesystem>
#include <fstream>
#include <sstream>

#include "formats/errors.h"
#include "formats/safetensors.h"

namespace hx {
namespace {

using json = nlohmann::json;

std::string basename_of(const std::string& path) { return std::filesystem::path(path).filename().string(); }

// The shortest decimal text that reads back as the same double ("0.3", not "0.299999…").
std::string number_text(double x) {
  std::ostringstream s;
  s.precision(17);
  for (int digits = 1; digits <= 17; ++digits) {
    std::ostringstream t;
    t.precision(digits);
    t << x;
    if (std::stod(t.str()) == x) return t.str();
  }
  s << x;
  return s.str();
}

json init_json(const InitSpec& spec) {
  json j = {{"rule", init_kind_name(spec.kind)}};
  switch (spec.kind) {
    case InitKind::kConstant:
      j["value"] = spec.value;
      break;
    case InitKind::kOrthogonal:
      j["scale"] = spec.scale;
      break;
    case InitKind::kNormal:
      j["std"] = spec.std;
      break;
    default:
      break;
  }
  if (spec.kind == InitKind::kOrthogonal || spec.kind == InitKind::kNormal)
    j["gain"] = spec.gain.radlads ? json("radlads") : json(spec.gain.value);
  return j;
}

}  // namespace

std::map<std::string, std::string> file_of_tensors(const Checkpoint& checkpoint) {
  std::map<std::string, std::string> out;
  if (checkpoint.files.size() == 1) {
    for (const NamedTensor& t : checkpoint.tensors) out[t.name] = basename_of(checkpoint.files.front());
    return out;
  }
  const std::string index = checkpoint.path + "/" + kSafetensorsIndexFileName;
  std::ifstream in(index);
  const json j = json::parse(in, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded() || !j.contains("weight_map") || !j["weight_map"].is_object())
    throw FormatError(in_file(index, "has no readable weight_map"));
  for (const auto& [name, file] : j["weight_map"].items()) out[name] = file.get<std::string>();
  return out;
}

json provenance_json(const PlannedTensor& t, const ConversionPlan& plan,
                     const std::map<std::string, std::string>& teacher_files) {
  json p = {{"kind", provenance_name(t.provenance)}, {"rule", plan.layout.rules[t.rule_index].match}};
  if (t.provenance == Provenance::kInit) {
    p["init"] = init_json(t.init);
    if (t.init.seeded()) {
      p["seed"] = plan.seed;
      p["stream"] = t.table_name;  // the generator key: (seed, this name, element index)
    }
    return p;
  }
  const auto file = teacher_files.find(t.source->name);
  p["source"] = {{"tensor", t.source->name},
                 {"file", file == teacher_files.end() ? json(nullptr) : json(file->second)},
                 {"dtype", dtype_name(t.source->view.dtype)}};
  switch (t.provenance) {
    case Provenance::kCopy:
      p["transform"] = "copy";
      break;
    case Provenance::kCast:
      p["transform"] = "cast " + std::string(dtype_name(t.dtype));
      break;
    default:
      p["transform"] = "scale " + number_text(t.scale);
      p["scale"] = t.scale;
      break;
  }
  if (!t.source_note.empty()) p["note"] = t.source_note;
  return p;
}

json build_manifest(const ManifestInputs& in) {
  const ConversionPlan& plan = *in.plan;
  const auto teacher_files = file_of_tensors(*in.teacher);
  json tensors = json::array();
  for (size_t i = 0; i < plan.tensors.size(); ++i) {
    const PlannedTensor& t = plan.tensors[i];
    const auto file = in.student_files->find(t.name);
    tensors.push_back({{"name", t.name},
                       {"dtype", dtype_name(t.dtype)},
                       {"shape", t.shape},
                       {"file", file == in.student_files->end() ? json(nullptr) : json(file->second)},
                       {"sha256", to_hex((*in.hashes)[i])},
                       {"provenance", provenance_json(t, plan, teacher_files)}});
  }
  json dropped = json::array();
  for (const DroppedTensor& d : plan.dropped) dropped.push_back({{"name", d.name}, {"reason", d.reason}});
  json teacher_files_list = json::array();
  for (const std::string& f : in.teacher->files) teacher_files_list.push_back(basename_of(f));

  json manifest = {
      {"format_version", kManifestFormatVersion},
      {"tool", {{"name", "hxforge"}, {"version", in.tool_version}, {"command", "convert"}}},
      {"teacher",
       {{"path", in.teacher->path},
        {"format", format_name(in.teacher->format)},
        {"architecture", arch_name(plan.teacher.arch)},
        {"files", teacher_files_list},
        {"layers", plan.teacher.num_layers()}}},
      {"student",
       {{"architecture", arch_name(plan.student.arch)},
        {"format", plan.format == StudentFormat::kPth ? "pth" : "safetensors"},
        {"dtype", dtype_name(plan.student.dtype)},
        {"rwkv_layers", rwkv_layer_indices(plan.student)},
        {"config", to_config_json(plan.student)}}},
      {"seed", plan.seed},
      {"layout", plan.layout.json},
      {"tensors", tensors},
      {"teacher_tensors_dropped", dropped},
      {"teacher_tensors_skipped", plan.skipped},
  };
  manifest["verification"] = in.verification ? in.verification->to_json() : json{{"status", "skipped"}};
  manifest["probe"] = in.probe ? in.probe->to_json()
                               : json{{"status", in.verification ? "not_run" : "skipped"},
                                      {"tokens", plan.layout.probe_tokens},
                                      {"top_k", plan.layout.probe_top_k}};
  return manifest;
}

}  // namespace hx
