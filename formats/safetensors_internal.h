// Internals shared by safetensors_{json,reader,folder,writer}.cc; not part of the public API.
//
// Problems is what lets one validation routine serve both read_* (throw at the first problem) and check_* (collect
// them all): validators report through it and carry on; in kThrowFirst mode the report throws, so the first message
// check_* collects is exactly the one read_* throws.
#pragma once

#include <cstddef>
#include <cstdint>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "formats/checkpoint.h"

namespace hx::st_internal {

class Problems {
 public:
  enum class Mode { kThrowFirst, kCollectAll };
  explicit Problems(Mode mode) : mode_(mode) {}

  void format(std::string message);                        // FormatError in kThrowFirst mode
  void unsupported(std::string message);                   // UnsupportedError in kThrowFirst mode
  void add_all(const std::vector<std::string>& messages);  // already-phrased problems (kCollectAll only)

  bool empty() const { return list_.empty(); }
  size_t size() const { return list_.size(); }
  Mode mode() const { return mode_; }
  std::vector<std::string> take() { return std::move(list_); }

 private:
  Mode mode_;
  std::vector<std::string> list_;
};

// Offset of the first byte that is not part of well-formed UTF-8 (overlong forms, surrogates and code points above
// U+10FFFF are ill-formed, as Rust's str::from_utf8 decides), or nullopt when `text` is valid.
std::optional<size_t> first_invalid_utf8(std::string_view text);

// "0x7b" — how a byte found in the wrong place is shown.
std::string byte_hex(unsigned char b);

// JSON parsed with the limits a safetensors header or index needs. nlohmann keeps only one value of a duplicated
// key, so duplicates are detected here while parsing; the first value is kept.
struct JsonLimits {
  size_t max_depth;         // nesting of objects and arrays
  size_t max_array_length;  // elements of any one array
};
struct JsonDuplicateKey {
  std::vector<std::string> parents;  // keys of the enclosing objects, outermost first ("" for an array level)
  std::string key;
};
struct StrictJson {
  nlohmann::json value;
  std::vector<JsonDuplicateKey> duplicates;
};
// nullopt with `*error` set when `text` is not JSON or exceeds the limits.
std::optional<StrictJson> parse_strict_json(std::string_view text, const JsonLimits& limits, std::string* error);

// "a string", "an array", "a negative integer", … for messages about a value of the wrong type.
std::string json_kind(const nlohmann::json& v);
// A non-negative JSON integer (not a float like 2.0), or nullopt.
std::optional<uint64_t> json_non_negative_integer(const nlohmann::json& v);

// One tensor entry of a header that passed validation.
struct HeaderTensor {
  std::string name;
  DType dtype = DType::kU8;
  Shape shape;
  uint64_t begin = 0, end = 0;  // data_offsets, relative to the data buffer
};
struct ParsedHeader {
  uint64_t data_start = 0;            // 8 + N
  uint64_t buffer_size = 0;           // file size − data_start
  std::vector<HeaderTensor> tensors;  // by offset (ties: by name)
  std::map<std::string, std::string> metadata;
};

// Validates a whole safetensors file held in `file`; `name` prefixes every message. Returns nullopt when any problem
// was reported (kCollectAll) — in kThrowFirst mode the first problem throws instead.
std::optional<ParsedHeader> parse_safetensors(std::span<const std::byte> file, const std::string& name,
                                              Problems& problems);

// Builds the Checkpoint of a validated file: views into `file`, kept alive by `owner`.
Checkpoint checkpoint_from(const ParsedHeader& header, std::span<const std::byte> file, const std::string& name,
                           std::shared_ptr<const void> owner);

}  // namespace hx::st_internal
