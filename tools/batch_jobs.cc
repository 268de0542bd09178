#include "tools/batch_jobs.h"

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <optional>
#include <set>
#include <sstream>
#include <string_view>

#include "formats/errors.h"
#include "formats/mapped_file.h"
#include "formats/sha256.h"

namespace hx::cli {
namespace {

namespace fs = std::filesystem;
using json = nlohmann::json;

const std::set<std::string> kKinds = {"convert", "quantize", "verify"};
// Options batch sets itself: a job may not set them (its output is `output`; batch owns replacement and output).
const std::set<std::string> kReservedOptions = {"out", "json", "force", "quiet", "help"};

json parse_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw IoError(in_file(path, "cannot be read: " + errno_text(errno)));
  std::stringstream text;
  text << in.rdbuf();
  const json j = json::parse(text.str(), nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded()) throw FormatError(in_file(path, "is not valid JSON"));
  return j;
}

std::string option_value_text(const json& v) {
  if (v.is_string()) return v.get<std::string>();
  if (v.is_number_integer()) return std::to_string(v.get<int64_t>());
  return v.dump();  // other numbers: JSON's shortest round-trip text
}

bool is_lower_alnum(char c) { return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9'); }
bool is_alnum(char c) { return is_lower_alnum(c) || (c >= 'A' && c <= 'Z'); }

// [A-Za-z0-9][A-Za-z0-9._-]*: a job id names its resume record file.
bool is_job_id(const std::string& s) {
  return !s.empty() && is_alnum(s[0]) &&
         std::all_of(s.begin(), s.end(), [](char c) { return is_alnum(c) || c == '.' || c == '_' || c == '-'; });
}

// [a-z][a-z0-9-]*: a long option name without its "--".
bool is_option_name(const std::string& s) {
  return !s.empty() && s[0] >= 'a' && s[0] <= 'z' &&
         std::all_of(s.begin(), s.end(), [](char c) { return is_lower_alnum(c) || c == '-'; });
}

// 1 to 6 decimal digits.
std::optional<int> small_number(std::string_view s) {
  if (s.empty() || s.size() > 6 || !std::all_of(s.begin(), s.end(), [](char c) { return c >= '0' && c <= '9'; }))
    return std::nullopt;
  return std::stoi(std::string(s));
}

}  // namespace

std::vector<BatchJob> read_jobs(const std::string& path) {
  const json j = parse_file(path);
  const auto fail = [&](const std::string& what) { throw FormatError(in_file(path, what)); };
  if (!j.is_object()) fail("the job file must be a JSON object with a 'jobs' array");
  for (const auto& [key, value] : j.items())
    if (key != "jobs" && key != "version" && key != "$schema") fail("unknown top-level field '" + key + "'");
  if (j.contains("version") && j["version"] != 1) fail("'version' is " + j["version"].dump() + "; expected 1");
  if (!j.contains("jobs") || !j["jobs"].is_array()) fail("'jobs' is missing or not an array");

  std::vector<BatchJob> jobs;
  std::set<std::string> ids;
  for (size_t i = 0; i < j["jobs"].size(); ++i) {
    const json& o = j["jobs"][i];
    std::string where = "jobs[" + std::to_string(i) + "]";
    if (!o.is_object()) fail(where + " is not an object");
    for (const auto& [key, value] : o.items())
      if (key != "id" && key != "kind" && key != "input" && key != "output" && key != "options")
        fail(where + ": unknown field '" + key + "' (expected id, kind, input, output, options)");
    for (const char* key : {"id", "kind", "input", "output"})
      if (!o.contains(key) || !o[key].is_string() || o[key].get<std::string>().empty())
        fail(where + ": '" + key + "' is missing or not a non-empty string");
    BatchJob job;
    job.index = i;
    job.id = o["id"];
    where += " ('" + job.id + "')";
    if (!is_job_id(job.id))
      fail(where + ": id must be letters, digits, '.', '_' or '-' (it names the resume record)");
    if (!ids.insert(job.id).second) fail(where + ": id '" + job.id + "' is used twice");
    job.kind = o["kind"];
    if (!kKinds.count(job.kind)) fail(where + ": kind '" + job.kind + "' is not convert, quantize or verify");
    job.input = o["input"];
    job.output = o["output"];
    if (o.contains("options")) {
      if (!o["options"].is_object()) fail(where + ": 'options' is not an object");
      for (const auto& [key, value] : o["options"].items()) {
        if (!is_option_name(key))
          fail(where + ": option '" + key + "' is not a long option name (lowercase, without '--')");
        if (kReservedOptions.count(key))
          fail(where + ": option '" + key + "' is set by batch itself (use the job's 'output')");
        if (!value.is_string() && !value.is_number() && !value.is_boolean())
          fail(where + ": option '" + key + "' must be a string, a number or a boolean, not " + value.dump());
      }
      job.options = o["options"];
    }
    job.definition = o;
    jobs.push_back(std::move(job));
  }
  return jobs;
}

std::pair<int, int> parse_shard(const std::string& text) {
  const size_t slash = text.find('/');
  if (slash != std::string::npos) {
    const auto index = small_number(std::string_view(text).substr(0, slash));
    const auto count = small_number(std::string_view(text).substr(slash + 1));
    if (index && count && *count >= 1 && *index >= 1 && *index <= *count) return {*index, *count};
  }
  throw UsageError("--shard '" + text + "' is not I/N with 1 <= I <= N (e.g. 2/4)");
}

bool in_shard(const BatchJob& job, int shard_index, int shard_count) {
  return job.index % static_cast<size_t>(shard_count) == static_cast<size_t>(shard_index - 1);
}

std::vector<std::string> job_arguments(const BatchJob& job) {
  std::vector<std::string> argv = {job.input};
  for (const auto& [key, value] : job.options.items()) {
    if (value.is_boolean()) {
      if (value.get<bool>()) argv.push_back("--" + key);
      continue;
    }
    argv.push_back("--" + key);
    argv.push_back(option_value_text(value));
  }
  argv.insert(argv.end(), {job.kind == "verify" ? "--json" : "--out", job.output, "--force", "--quiet"});
  return argv;
}

std::map<std::string, std::string> hash_output(const std::string& path) {
  std::map<std::string, std::string> out;
  std::error_code ec;
  const auto hash_file = [](const fs::path& file) {
    if (fs::file_size(file) == 0) return to_hex(sha256_bytes({}));
    return to_hex(sha256_bytes(MappedFile::open(file.string())->bytes()));
  };
  if (fs::is_regular_file(path, ec)) {
    out[fs::path(path).filename().string()] = hash_file(path);
  } else if (fs::is_directory(path, ec)) {
    for (const auto& e : fs::recursive_directory_iterator(path))
      if (e.is_regular_file()) out[fs::relative(e.path(), path).string()] = hash_file(e.path());
  }
  return out;
}

json input_fingerprint(const BatchJob& job, const std::vector<BatchJob>& jobs, const std::string& state_dir) {
  const auto same_path = [](const std::string& a, const std::string& b) {
    return fs::absolute(a).lexically_normal() == fs::absolute(b).lexically_normal();
  };
  for (size_t i = job.index; i-- > 0;) {  // the nearest earlier job that writes this input
    if (!same_path(jobs[i].output, job.input)) continue;
    JobRecord upstream;
    const bool known = read_record(record_path(state_dir, jobs[i]), &upstream);
    return {{"producer", jobs[i].id}, {"output_sha256", known ? json(upstream.output_hashes) : json(nullptr)}};
  }
  json files = json::object();
  std::error_code ec;
  const auto describe = [&](const fs::path& file, const std::string& name) {
    files[name] = std::to_string(fs::file_size(file, ec)) + "@" +
                  std::to_string(fs::last_write_time(file, ec).time_since_epoch().count());
  };
  if (fs::is_regular_file(job.input, ec)) {
    describe(job.input, fs::path(job.input).filename().string());
  } else if (fs::is_directory(job.input, ec)) {
    for (const auto& e : fs::recursive_directory_iterator(job.input, ec))
      if (e.is_regular_file()) describe(e.path(), fs::relative(e.path(), job.input).string());
  }
  return {{"files", files}};
}

json JobRecord::to_json(const BatchJob& job, double seconds) const {
  return {{"id", job.id},           {"kind", job.kind},   {"job", definition},    {"input", input},
          {"exit_code", exit_code}, {"seconds", seconds}, {"output", job.output}, {"output_sha256", output_hashes}};
}

std::string record_path(const std::string& state_dir, const BatchJob& job) {
  return state_dir + "/" + job.id + ".json";
}

bool read_record(const std::string& path, JobRecord* record) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return false;
  std::stringstream text;
  text << in.rdbuf();
  const json j = json::parse(text.str(), nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded() || !j.is_object() || !j.contains("job") || !j.contains("exit_code") ||
      !j["exit_code"].is_number_integer() || !j.contains("output_sha256") || !j["output_sha256"].is_object())
    return false;
  record->definition = j["job"];
  record->input = j.value("input", json());
  record->exit_code = j["exit_code"].get<int>();
  record->output_hashes.clear();
  for (const auto& [file, digest] : j["output_sha256"].items()) {
    if (!digest.is_string()) return false;
    record->output_hashes[file] = digest.get<std::string>();
  }
  return true;
}

std::string resume_verdict(const BatchJob& job, const std::vector<BatchJob>& jobs, const std::string& state_dir) {
  JobRecord record;
  if (!read_record(record_path(state_dir, job), &record)) return kNoRecord;
  if (record.exit_code != 0) return "the last run failed (exit " + std::to_string(record.exit_code) + ")";
  if (record.definition != job.definition) return "the job changed since its last run";
  if (record.input != input_fingerprint(job, jobs, state_dir)) return "its input changed since its last run";
  if (record.output_hashes.empty()) return "no output was recorded";
  const auto now = hash_output(job.output);
  if (now.empty()) return "its output " + job.output + " is gone";
  for (const auto& [file, digest] : record.output_hashes) {
    const auto it = now.find(file);
    if (it == now.end()) return "output file " + file + " is gone";
    if (it->second != digest) return "output file " + file + " no longer hashes as recorded";
  }
  if (now.size() != record.output_hashes.size()) return "its output holds files the record does not know";
  return "";
}

}  // namespace hx::cli
