// The job model of `hxforge batch` (schemas/jobs.schema.json): a list of convert / quantize / verify jobs, each run
// in-process through the same Subcommand as its command line, so a job means exactly what the command means.
//
// A job file:
//   {"jobs": [{"id": "student", "kind": "convert", "input": "teacher/", "output": "out/student",
//              "options": {"to": "hxa079", "layout": "tiny"}},
//             {"id": "q8", "kind": "quantize", "input": "out/student", "output": "out/q8",
//              "options": {"scheme": "int8"}},
//             {"id": "check-q8", "kind": "verify", "input": "out/q8", "output": "out/q8.verify.json",
//              "options": {"against": "out/student", "max-kld": 0.01}}]}
// `input` is the positional MODEL / TEACHER; `output` becomes --out (convert, quantize) or --json FILE (verify: the
// report); `options` are the subcommand's long options without "--" (a string or number is the value, true is a
// bare flag, false leaves it out). Relative paths are relative to the working directory, as on the command line.
// Batch owns its outputs: a job that runs replaces its output (--force) and runs --quiet.
//
// Sharding (--shard I/N, 1 ≤ I ≤ N): shard I runs the jobs whose 0-based index in the file satisfies
// index % N == I − 1 — stable as long as the file is only appended to, and every job lands in exactly one shard.
// Jobs run in file order within a shard; a job that needs another's output must be in the same shard (or run after).
//
// Resume (--resume): after each job a record <state>/<id>.json keeps the job as given, its exit status, the SHA-256
// of every file of its output and a fingerprint of its input. A job is skipped when its record says it succeeded,
// the job's definition and input are unchanged, and its output still hashes as recorded; otherwise it runs again (a
// tampered output is redone, and so is every job downstream of an output that changed). The input fingerprint is
// cheap: the recorded output hashes of the job in the file that produces the input, else the size and modification
// time of each input file (a teacher is not re-read on every resume). Options naming other files (--against) are
// not fingerprinted.
// Non-goals: dependency graphs, parallel jobs within one process (shards are the parallelism), remote storage.
#pragma once

#include <cstdint>
#include <map>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

namespace hx::cli {

struct BatchJob {
  size_t index = 0;  // in the file
  std::string id, kind, input, output;
  nlohmann::json options = nlohmann::json::object();
  nlohmann::json definition;  // the job object as given (the resume record compares it)
};

// Reads and validates a job file against schemas/jobs.schema.json's rules: FormatError (exit 3) naming the file,
// the job and the field; IoError when it cannot be read.
std::vector<BatchJob> read_jobs(const std::string& path);

// "I/N" → (I, N); UsageError unless 1 ≤ I ≤ N.
std::pair<int, int> parse_shard(const std::string& text);
bool in_shard(const BatchJob& job, int shard_index, int shard_count);

// The command line a job stands for, without the subcommand name: input, the options, then --out / --json, --force
// (convert, quantize) and --quiet.
std::vector<std::string> job_arguments(const BatchJob& job);

// SHA-256 of every regular file under `path` (a file: its own name; a folder: paths relative to it), sorted.
// Empty when `path` does not exist.
std::map<std::string, std::string> hash_output(const std::string& path);

// The input fingerprint described above ({"producer": id, "output_sha256": …} or {"files": {name: "size@mtime"}}).
nlohmann::json input_fingerprint(const BatchJob& job, const std::vector<BatchJob>& jobs, const std::string& state_dir);

// The resume record of one job.
struct JobRecord {
  nlohmann::json definition;
  nlohmann::json input;  // input_fingerprint when the job ran
  int exit_code = -1;
  std::map<std::string, std::string> output_hashes;
  nlohmann::json to_json(const BatchJob& job, double seconds) const;
};
std::string record_path(const std::string& state_dir, const BatchJob& job);
// Reads a record; false when absent or unreadable (the job then simply runs).
bool read_record(const std::string& path, JobRecord* record);
// Why a job must run ("" = it may be skipped): kNoRecord, failed last time, definition changed, output changed.
inline constexpr const char* kNoRecord = "no record of an earlier run";
std::string resume_verdict(const BatchJob& job, const std::vector<BatchJob>& jobs, const std::string& state_dir);

}  // namespace hx::cli
