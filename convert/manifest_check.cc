#include "convert/manifest_check.h"

#include <algorithm>
#include <cmath>
#include <fstream>
#include <numeric>
#include <set>
#include <sstream>

#include "formats/errors.h"
#include "formats/sha256.h"
#include "verify/forward.h"

namespace hx {
namespace {

using json = nlohmann::json;

// Reads `key` of `object` as T, or FormatError naming the file and the path of the field.
template <typename T>
T field(const json& object, const char* key, const std::string& file, const std::string& where) {
  if (!object.is_object() || !object.contains(key)) throw FormatError(in_file(file, where + " has no '" + key + "'"));
  try {
    return object.at(key).get<T>();
  } catch (const json::exception&) {
    throw FormatError(in_file(file, where + "." + key + " has the wrong type (" + object.at(key).dump() + ")"));
  }
}

bool is_sha256_hex(const std::string& s) {
  return s.size() == 64 &&
         std::all_of(s.begin(), s.end(), [](char c) { return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'); });
}

std::string number(double x) {
  std::ostringstream s;
  s.precision(7);
  s << x;
  return s.str();
}

std::string ids_text(const std::vector<int64_t>& ids) {
  std::string out = "[";
  for (size_t i = 0; i < ids.size(); ++i) out += (i ? ", " : "") + std::to_string(ids[i]);
  return out + "]";
}

}  // namespace

Manifest read_manifest(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw FormatError(in_file(path, "cannot be opened as a manifest (missing or unreadable)"));
  std::stringstream text;
  text << in.rdbuf();
  const json j = json::parse(text.str(), nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded() || !j.is_object()) throw FormatError(in_file(path, "is not a JSON object (garbled manifest)"));

  Manifest m;
  m.path = path;
  const int version = field<int>(j, "format_version", path, "the manifest");
  if (version != 1)
    throw UnsupportedError(in_file(path, "has format_version " + std::to_string(version) + "; this hxforge reads 1"));
  const json tensors = field<json>(j, "tensors", path, "the manifest");
  if (!tensors.is_array() || tensors.empty()) throw FormatError(in_file(path, "'tensors' is not a non-empty array"));
  std::set<std::string> names;
  for (size_t i = 0; i < tensors.size(); ++i) {
    const std::string where = "tensors[" + std::to_string(i) + "]";
    Manifest::Tensor t;
    t.name = field<std::string>(tensors[i], "name", path, where);
    t.dtype = field<std::string>(tensors[i], "dtype", path, where);
    t.shape = field<Shape>(tensors[i], "shape", path, where);
    t.sha256 = field<std::string>(tensors[i], "sha256", path, where);
    if (!is_sha256_hex(t.sha256))
      throw FormatError(
          in_file(path, where + " ('" + t.name + "'): sha256 '" + t.sha256 + "' is not 64 lowercase hex digits"));
    if (!names.insert(t.name).second) throw FormatError(in_file(path, "tensor '" + t.name + "' is listed twice"));
    m.tensors.push_back(std::move(t));
  }

  const json probe = field<json>(j, "probe", path, "the manifest");
  m.probe_status = field<std::string>(probe, "status", path, "probe");
  if (m.probe_status == "ok") {
    const std::string compute = probe.value("compute", "f32");
    if (compute != "f32")
      throw UnsupportedError(in_file(path, "probe.compute is '" + compute + "'; this hxforge re-runs f32 probes"));
    m.probe_tokens = field<std::vector<int64_t>>(probe, "tokens", path, "probe");
    const json positions = field<json>(probe, "positions", path, "probe");
    if (!positions.is_array() || positions.size() != m.probe_tokens.size())
      throw FormatError(in_file(path, "probe.positions does not hold one entry per probe token"));
    for (size_t p = 0; p < positions.size(); ++p) {
      const std::string where = "probe.positions[" + std::to_string(p) + "]";
      const json top = field<json>(positions[p], "top", path, where);
      if (!top.is_array() || top.empty()) throw FormatError(in_file(path, where + ".top is not a non-empty array"));
      Manifest::ProbePosition pos;
      for (const json& entry : top) {
        pos.top_ids.push_back(field<int64_t>(entry, "token", path, where + ".top"));
        pos.top_logits.push_back(field<double>(entry, "logit", path, where + ".top"));
      }
      m.probe_positions.push_back(std::move(pos));
    }
  }
  return m;
}

json ManifestCheck::to_json() const {
  json probe = {{"status", probe_status}, {"ran", probe_ran}};
  if (probe_ran) {
    probe["positions"] = probe_positions;
    probe["max_logit_diff"] = probe_max_logit_diff;
    probe["tolerance"] = kProbeLogitTolerance;
  }
  json problems = tensor_problems;
  for (const std::string& p : probe_problems) problems.push_back(p);
  return {{"hashes", {{"checked", tensors_checked}, {"mismatched", tensors_mismatched}}},
          {"probe", probe},
          {"problems", problems},
          {"passed", passed()}};
}

ManifestCheck check_against_manifest(const Checkpoint& model, const Manifest& manifest, bool run_probe) {
  ManifestCheck r;
  r.probe_status = manifest.probe_status;

  // Tensors: what the manifest lists, then what the checkpoint holds beyond it.
  std::vector<NamedTensor> present;
  std::vector<const Manifest::Tensor*> expected;
  std::set<std::string> listed;
  for (const Manifest::Tensor& t : manifest.tensors) {
    listed.insert(t.name);
    ++r.tensors_checked;
    const NamedTensor* found = model.find(t.name);
    if (!found) {
      r.tensor_problems.push_back("tensor '" + t.name + "' is in the manifest but missing from " + model.path);
      continue;
    }
    const std::string dtype(dtype_name(found->view.dtype));
    if (dtype != t.dtype || found->view.shape != t.shape) {
      r.tensor_problems.push_back("tensor '" + t.name + "': the manifest says " + t.dtype + " " +
                                  shape_to_string(t.shape) + ", the checkpoint holds " + dtype + " " +
                                  shape_to_string(found->view.shape));
      continue;
    }
    present.push_back(*found);
    expected.push_back(&t);
  }
  const std::vector<Digest> digests = sha256_tensors(present);
  for (size_t i = 0; i < present.size(); ++i) {
    const std::string hex = to_hex(digests[i]);
    if (hex != expected[i]->sha256)
      r.tensor_problems.push_back("tensor '" + expected[i]->name + "': sha256 " + hex + ", the manifest records " +
                                  expected[i]->sha256);
  }
  for (const NamedTensor& t : model.tensors)
    if (!listed.count(t.name))
      r.tensor_problems.push_back("tensor '" + t.name + "' in " + model.path + " is not in the manifest " +
                                  manifest.path);
  r.tensors_mismatched = r.tensor_problems.size();  // one sentence per tensor

  if (!run_probe || manifest.probe_status != "ok" || !r.tensor_problems.empty()) return r;

  // The probe: the same tokens through the forward pass in f32 (the mode convert recorded it in).
  const Model m(model);
  ForwardState state = m.new_state();
  ForwardOptions options;
  options.compute = ComputeMode::kF32;
  const ForwardResult out = m.forward(manifest.probe_tokens, state, options);
  r.probe_ran = true;
  r.probe_positions = out.tokens;
  for (int64_t p = 0; p < out.tokens; ++p) {
    const auto row = out.logits_row(p);
    const Manifest::ProbePosition& want = manifest.probe_positions[static_cast<size_t>(p)];
    const size_t k = std::min(want.top_ids.size(), row.size());
    std::vector<int64_t> ids(row.size());
    std::iota(ids.begin(), ids.end(), 0);
    std::partial_sort(ids.begin(), ids.begin() + static_cast<std::ptrdiff_t>(k), ids.end(),
                      [&](int64_t a, int64_t b) { return row[a] != row[b] ? row[a] > row[b] : a < b; });
    ids.resize(k);
    const std::vector<int64_t> want_ids(want.top_ids.begin(), want.top_ids.begin() + static_cast<std::ptrdiff_t>(k));
    if (ids != want_ids)
      r.probe_problems.push_back("probe position " + std::to_string(p) + ": top-" + std::to_string(k) + " ids " +
                                 ids_text(ids) + ", the manifest records " + ids_text(want_ids));
    for (size_t i = 0; i < k; ++i) {
      const int64_t id = want.top_ids[i];
      if (id < 0 || id >= static_cast<int64_t>(row.size())) {
        r.probe_problems.push_back("probe position " + std::to_string(p) + ": recorded token " + std::to_string(id) +
                                   " is outside the vocabulary of " + std::to_string(row.size()));
        continue;
      }
      const double diff = std::abs(static_cast<double>(row[static_cast<size_t>(id)]) - want.top_logits[i]);
      r.probe_max_logit_diff = std::max(r.probe_max_logit_diff, diff);
      const double allowed = kProbeLogitTolerance * std::max(1.0, std::abs(want.top_logits[i]));
      if (!(diff <= allowed))
        r.probe_problems.push_back("probe position " + std::to_string(p) + ", token " + std::to_string(id) +
                                   ": logit " + number(row[static_cast<size_t>(id)]) + ", the manifest records " +
                                   number(want.top_logits[i]) + " (allowed difference " + number(allowed) + ")");
    }
  }
  return r;
}

}  // namespace hx
