// Error types of hxforge and the exit status each maps to.
//
// Design goals: every failure names what failed (file, tensor, expected, found) in one sentence; library code
// throws, only tools/ turns an exception into an exit status (cli.md: 1 verification, 2 usage, 3 invalid or
// unsupported input, 4 I/O). Non-goals: error codes threaded through return values, localisation.
#pragma once

#include <stdexcept>
#include <string>

namespace hx {

enum class ExitCode : int {
  kOk = 0,
  kVerificationFailed = 1,
  kUsage = 2,
  kInvalidInput = 3,
  kIo = 4,
};

class Error : public std::runtime_error {
 public:
  Error(ExitCode code, const std::string& message) : std::runtime_error(message), code_(code) {}
  ExitCode code() const { return code_; }

 private:
  ExitCode code_;
};

// The input is malformed or lies about itself (truncated, overlapping offsets, hostile pickle, wrong shape).
class FormatError : public Error {
 public:
  explicit FormatError(const std::string& message) : Error(ExitCode::kInvalidInput, message) {}
};

// The input is well formed but uses something hxforge does not handle (unknown dtype, forbidden global).
class UnsupportedError : public Error {
 public:
  explicit UnsupportedError(const std::string& message) : Error(ExitCode::kInvalidInput, message) {}
};

// The operating system refused (open, read, write, rename, mmap, disk full).
class IoError : public Error {
 public:
  explicit IoError(const std::string& message) : Error(ExitCode::kIo, message) {}
};

class UsageError : public Error {
 public:
  explicit UsageError(const std::string& message) : Error(ExitCode::kUsage, message) {}
};

// "path: message" — the one place that decides how a file is quoted in messages.
inline std::string in_file(const std::string& path, const std::string& message) {
  return path + ": " + message;
}

// strerror(errno) wrapped for IoError messages.
std::string errno_text(int err);

}  // namespace hx
