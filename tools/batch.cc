// hxforge batch JOBS.json [--shard I/N] [--resume] [--state DIR] [--json]
//
// Runs many convert / quantize / verify jobs (tools/batch_jobs.h: the job model, sharding and resume rules) by
// calling each subcommand in-process with the arguments the job stands for. One failing job does not stop the
// others; the exit status is the worst (highest) of the jobs'. Ends with a summary table (or, with --json, the
// summary as JSON) and always writes the JSON summary into the state folder.
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <iostream>
#include <new>
#include <optional>

#include "formats/errors.h"
#include "formats/mapped_file.h"
#include "tools/batch_jobs.h"
#include "tools/cli.h"

namespace hx::cli {
namespace {

namespace fs = std::filesystem;
using json = nlohmann::json;

void declare(po::options_description& options, po::positional_options_description& positional) {
  options.add_options()("jobs", po::value<std::string>(), "the job file (JSON, schemas/jobs.schema.json)")(
      "shard", po::value<std::string>()->default_value("1/1"),
      "run shard I of N: the jobs whose 0-based index % N == I-1 (e.g. $SLURM_ARRAY_TASK_ID/N)")(
      "resume", "skip jobs that succeeded before and whose output still hashes as recorded")(
      "state", po::value<std::string>(), "folder of the per-job records and summaries (default: JOBS.json.state)")(
      "json", "print the summary as JSON instead of a table");
  positional.add("jobs", 1);
}

void write_json_file(const std::string& path, const json& j) {
  const std::string text = j.dump(2) + "\n";
  AtomicOutputFile f(path, /*overwrite=*/true);
  f.write(std::as_bytes(std::span<const char>(text.data(), text.size())));
  f.commit();
}

// One job through its subcommand, as main() would run it: the same parsing, the same exception → exit mapping.
int run_in_process(const Subcommand& s, const std::vector<std::string>& argv, std::string* message) {
  po::options_description options(std::string("options of ") + s.name);
  po::positional_options_description positional;
  options.add_options()("help,h", "show this help")("quiet,q", "no progress output");
  s.declare(options, positional);
  try {
    po::variables_map args;
    po::store(po::command_line_parser(argv).options(options).positional(positional).run(), args);
    po::notify(args);
    const int code = s.run(args);
    if (code != 0) *message = code == 1 ? "verification failed (exit 1)" : "exit " + std::to_string(code);
    return code;
  } catch (const po::error& e) {
    *message = std::string("bad job options: ") + e.what();
    return static_cast<int>(ExitCode::kUsage);
  } catch (const Error& e) {
    *message = e.what();
    return static_cast<int>(e.code());
  } catch (const std::bad_alloc&) {
    *message = "out of memory";
    return static_cast<int>(ExitCode::kIo);
  } catch (const std::exception& e) {
    *message = std::string("internal error: ") + e.what();
    return static_cast<int>(ExitCode::kIo);
  }
}

// Points file descriptor 1 at stderr for its lifetime (the jobs run in-process and print with printf and cout).
class StdoutToStderr {
 public:
  StdoutToStderr() : saved_(::dup(STDOUT_FILENO)) {
    std::fflush(stdout);
    std::cout.flush();
    if (saved_ >= 0) ::dup2(STDERR_FILENO, STDOUT_FILENO);
  }
  ~StdoutToStderr() {
    std::fflush(stdout);
    std::cout.flush();
    if (saved_ >= 0) {
      ::dup2(saved_, STDOUT_FILENO);
      ::close(saved_);
    }
  }
  StdoutToStderr(const StdoutToStderr&) = delete;
  StdoutToStderr& operator=(const StdoutToStderr&) = delete;

 private:
  int saved_;
};

struct Outcome {
  const BatchJob* job = nullptr;
  std::string status;  // "ok", "failed", "skipped"
  int exit_code = 0;
  double seconds = 0;
  std::string note;  // the error, or why a job was skipped / re-run
};

void print_table(const std::string& jobs_file, int shard, int shards, size_t total, const std::vector<Outcome>& rows,
                 int worst) {
  std::printf("batch %s, shard %d/%d: %zu of %zu jobs\n", jobs_file.c_str(), shard, shards, rows.size(), total);
  std::printf("  %-4s %-20s %-9s %-8s %4s %8s  %s\n", "#", "id", "kind", "status", "exit", "seconds", "output / note");
  for (const Outcome& o : rows) {
    std::string note = o.job->output;
    if (!o.note.empty()) note += "  (" + o.note + ")";
    std::printf("  %-4zu %-20s %-9s %-8s %4d %8.2f  %s\n", o.job->index, o.job->id.c_str(), o.job->kind.c_str(),
                o.status.c_str(), o.exit_code, o.seconds, note.c_str());
  }
  size_t ok = 0, failed = 0, skipped = 0;
  for (const Outcome& o : rows) (o.status == "ok" ? ok : o.status == "failed" ? failed : skipped)++;
  std::printf("  %zu ok, %zu failed, %zu skipped; exit %d\n", ok, failed, skipped, worst);
}

int run(const po::variables_map& args) {
  if (!args.count("jobs")) throw UsageError("the job file is required: hxforge batch JOBS.json");
  const std::string jobs_file = args["jobs"].as<std::string>();
  const auto [shard, shards] = parse_shard(args["shard"].as<std::string>());
  const std::vector<BatchJob> jobs = read_jobs(jobs_file);
  const std::string state = args.count("state") ? args["state"].as<std::string>() : jobs_file + ".state";
  std::error_code ec;
  fs::create_directories(state, ec);
  if (ec) throw IoError(in_file(state, "cannot create the batch state folder: " + ec.message()));
  const bool resume = args.count("resume") > 0, as_json = args.count("json") > 0;

  std::vector<Outcome> rows;
  int worst = 0;
  // With --json, stdout carries the summary alone: what the jobs print goes to stderr meanwhile.
  std::optional<StdoutToStderr> jobs_to_stderr;
  if (as_json) jobs_to_stderr.emplace();
  for (const BatchJob& job : jobs) {
    if (!in_shard(job, shard, shards)) continue;
    Outcome o;
    o.job = &job;
    const std::string why_run = resume ? resume_verdict(job, jobs, state) : "";
    if (resume && why_run.empty()) {
      o.status = "skipped";
      o.note = "done before; output verified by hash";
      rows.push_back(o);
      continue;
    }
    if (resume && why_run != kNoRecord) o.note = "re-run: " + why_run;
    JobRecord record;
    record.definition = job.definition;
    record.input = input_fingerprint(job, jobs, state);  // what the job is about to read
    const Subcommand* command = find_subcommand(job.kind);
    const auto start = std::chrono::steady_clock::now();
    std::string message;
    if (!command) {
      o.exit_code = static_cast<int>(ExitCode::kInvalidInput);
      message = "this hxforge has no '" + job.kind + "' command";
    } else {
      if (!as_json && !quiet(args)) std::printf("[%zu] %s: hxforge %s ...\n", job.index, job.id.c_str(), command->name);
      std::fflush(stdout);
      o.exit_code = run_in_process(*command, job_arguments(job), &message);
    }
    o.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    o.status = o.exit_code == 0 ? "ok" : "failed";
    if (!message.empty()) {
      std::fprintf(stderr, "hxforge batch: job '%s' (%s): %s\n", job.id.c_str(), job.kind.c_str(), message.c_str());
      o.note = message;
    }
    record.exit_code = o.exit_code;
    if (o.exit_code == 0) record.output_hashes = hash_output(job.output);
    write_json_file(record_path(state, job), record.to_json(job, o.seconds));
    worst = std::max(worst, o.exit_code);
    rows.push_back(o);
  }

  jobs_to_stderr.reset();
  json summary = {{"jobs_file", jobs_file},
                  {"shard", {{"index", shard}, {"count", shards}}},
                  {"jobs_total", jobs.size()},
                  {"exit_code", worst},
                  {"jobs", json::array()}};
  for (const Outcome& o : rows)
    summary["jobs"].push_back({{"index", o.job->index},
                               {"id", o.job->id},
                               {"kind", o.job->kind},
                               {"status", o.status},
                               {"exit_code", o.exit_code},
                               {"seconds", o.seconds},
                               {"output", o.job->output},
                               {"note", o.note}});
  const std::string summary_name =
      shards == 1 ? "summary.json"
                  : "summary-shard-" + std::to_string(shard) + "-of-" + std::to_string(shards) + ".json";
  write_json_file(state + "/" + summary_name, summary);
  if (as_json)
    std::cout << summary.dump(2) << "\n";
  else
    print_table(jobs_file, shard, shards, jobs.size(), rows, worst);
  return worst;
}

}  // namespace

const Subcommand kBatch = {
    "batch",
    "batch JOBS.json [--shard I/N] [--resume] [--state DIR] [--json]",
    "run many convert/quantize/verify jobs from a JSON file; resumable, shardable for cluster array jobs",
    "hxforge batch jobs.json --shard 1/4 --resume",
    declare,
    run};

}  // namespace hx::cli
