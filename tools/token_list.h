// Token ids from the command line: `--tokens 1,2,3` or `--tokens-file F` (ids separated by commas and/or
// whitespace). Shared by the subcommands that run models (run, verify).
#pragma once

#include <cctype>
#include <cerrno>
#include <charconv>
#include <cstdint>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "formats/errors.h"

namespace hx::cli {

// Ids separated by commas and/or whitespace. A piece that is not an integer is reported through `fail(why)`, which
// must throw.
template <typename Fail>
std::vector<int64_t> parse_token_ids(const std::string& text, Fail fail) {
  std::vector<int64_t> ids;
  std::string piece;
  auto flush = [&] {
    if (piece.empty()) return;
    int64_t value = 0;
    const char* end = piece.data() + piece.size();
    const auto [ptr, ec] = std::from_chars(piece.data(), end, value);
    if (ec != std::errc() || ptr != end)
      fail("'" + piece + "' (item " + std::to_string(ids.size()) + ") is not an integer token id");
    ids.push_back(value);
    piece.clear();
  };
  for (char c : text) {
    if (c == ',' || std::isspace(static_cast<unsigned char>(c))) {
      flush();
    } else {
      piece += c;
    }
  }
  flush();
  return ids;
}

inline std::vector<int64_t> token_ids_from_option(const std::string& text) {
  return parse_token_ids(text, [](const std::string& why) -> void { throw UsageError("--tokens: " + why); });
}

inline std::vector<int64_t> token_ids_from_file(const std::string& path) {
  std::ifstream f(path);
  if (!f) throw IoError(in_file(path, "cannot open the token file: " + errno_text(errno)));
  std::stringstream text;
  text << f.rdbuf();
  return parse_token_ids(text.str(), [&](const std::string& why) -> void { throw FormatError(in_file(path, why)); });
}

}  // namespace hx::cli
