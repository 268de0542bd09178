// A progress line for long jobs (cli.md): tensors done, bytes, rate, ETA — on stderr, only when stderr is a
// terminal and --quiet was not given, redrawn at most a few times a second.
#pragma once

#include <chrono>
#include <cstdint>
#include <string>

namespace hx::cli {

class Progress {
 public:
  Progress(std::string label, uint64_t total_items, uint64_t total_bytes, bool enabled);
  ~Progress();
  void advance(uint64_t items, uint64_t bytes);
  void finish();

 private:
  void draw(bool final_line);
  std::string label_;
  uint64_t total_items_, total_bytes_, items_ = 0, bytes_ = 0;
  bool enabled_, finished_ = false;
  std::chrono::steady_clock::time_point start_, last_draw_;
};

std::string human_bytes(uint64_t bytes);  // "1.50 GiB"

}  // namespace hx::cli
