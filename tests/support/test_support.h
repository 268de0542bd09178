// Helpers shared by the test executables: fixture paths, temporary folders, running the CLI and Python.
#pragma once

#include <nlohmann/json.hpp>
#include <string>
#include <vector>

namespace hx::test {

std::string shared_dir();      // ../shared beside the checkout
std::string oracle_dir();      // shared/fixtures/oracle
std::string test_data_dir();   // tests/data
std::string tests_dir();       // tests/
std::string hxforge_binary();  // the built CLI

// A fresh empty folder under the system temp dir, removed by the destructor.
class TempDir {
 public:
  TempDir();
  ~TempDir();
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  const std::string& path() const { return path_; }
  std::string file(const std::string& name) const { return path_ + "/" + name; }

 private:
  std::string path_;
};

struct CommandResult {
  int exit_code = -1;   // the process's exit status, or 128+signal when it was killed
  std::string output;   // stdout and stderr together
};
// Runs a shell command line, capturing output.
CommandResult run_command(const std::string& command_line);
// Runs the hxforge CLI with the given (already shell-quoted) arguments.
CommandResult run_hxforge(const std::string& args);
std::string shell_quote(const std::string& s);

// True when Debian's /usr/bin/python3 can import torch (tests that need it skip otherwise).
bool python_torch_available();

std::vector<std::byte> read_file_bytes(const std::string& path);
// A JSON file (reports, manifests, job files); throws std::runtime_error naming the file when it cannot be read.
nlohmann::json read_json(const std::string& path);
void write_json(const std::string& path, const nlohmann::json& j);  // indented by 2
void write_file_bytes(const std::string& path, const std::vector<std::byte>& bytes);

}  // namespace hx::test
