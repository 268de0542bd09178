#include "tools/progress.h"

#include <unistd.h>

#include <cstdio>

namespace hx::cli {

std::string human_bytes(uint64_t bytes) {
  static const char* units[] = {"B", "KiB", "MiB", "GiB", "TiB"};
  double v = static_cast<double>(bytes);
  int u = 0;
  while (v >= 1024 && u < 4) {
    v /= 1024;
    ++u;
  }
  char buf[32];
  std::snprintf(buf, sizeof buf, u == 0 ? "%.0f %s" : "%.2f %s", v, units[u]);
  return buf;
}

Progress::Progress(std::string label, uint64_t total_items, uint64_t total_bytes, bool enabled)
    : label_(std::move(label)), total_items_(total_items), total_bytes_(total_bytes),
      enabled_(enabled && isatty(STDERR_FILENO)), start_(std::chrono::steady_clock::now()), last_draw_(start_) {}

Progress::~Progress() { finish(); }

void Progress::advance(uint64_t items, uint64_t bytes) {
  items_ += items;
  bytes_ += bytes;
  const auto now = std::chrono::steady_clock::now();
  if (enabled_ && now - last_draw_ > std::chrono::milliseconds(200)) {
    last_draw_ = now;
    draw(false);
  }
}

void Progress::finish() {
  if (finished_) return;
  finished_ = true;
  if (enabled_) draw(true);
}

void Progress::draw(bool final_line) {
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
  const double rate = seconds > 0 ? static_cast<double>(bytes_) / seconds : 0;
  const double eta = rate > 0 && total_bytes_ > bytes_ ? static_cast<double>(total_bytes_ - bytes_) / rate : 0;
  std::fprintf(stderr, "\r%s: %llu/%llu tensors, %s/%s, %s/s, ETA %.0fs   %s", label_.c_str(),
               static_cast<unsigned long long>(items_), static_cast<unsigned long long>(total_items_),
               human_bytes(bytes_).c_str(), human_bytes(total_bytes_).c_str(),
               human_bytes(static_cast<uint64_t>(rate)).c_str(), eta, final_line ? "\n" : "");
  std::fflush(stderr);
}

}  // namespace hx::cli
