// Problem collection, UTF-8 validation and duplicate-detecting JSON parsing for the safetensors reader.
#include <cstdio>
#include <deque>
#include <utility>

#include "formats/errors.h"
#include "formats/safetensors_internal.h"

namespace hx::st_internal {

void Problems::format(std::string message) {
  if (mode_ == Mode::kThrowFirst) throw FormatError(message);
  list_.push_back(std::move(message));
}

void Problems::unsupported(std::string message) {
  if (mode_ == Mode::kThrowFirst) throw UnsupportedError(message);
  list_.push_back(std::move(message));
}

void Problems::add_all(const std::vector<std::string>& messages) {
  list_.insert(list_.end(), messages.begin(), messages.end());
}

std::optional<size_t> first_invalid_utf8(std::string_view text) {
  const auto* s = reinterpret_cast<const unsigned char*>(text.data());
  const size_t n = text.size();
  size_t i = 0;
  while (i < n) {
    const unsigned char c = s[i];
    if (c < 0x80) {
      ++i;
      continue;
    }
    // Well-formed sequences (Unicode Table 3-7): the lead byte decides the length and the range of the 2nd byte.
    size_t length = 0;
    unsigned char second_lo = 0x80, second_hi = 0xBF;
    if (c >= 0xC2 && c <= 0xDF) {
      length = 2;
    } else if (c == 0xE0) {
      length = 3, second_lo = 0xA0;  // no overlong 3-byte forms
    } else if ((c >= 0xE1 && c <= 0xEC) || c == 0xEE || c == 0xEF) {
      length = 3;
    } else if (c == 0xED) {
      length = 3, second_hi = 0x9F;  // no UTF-16 surrogates
    } else if (c == 0xF0) {
      length = 4, second_lo = 0x90;  // no overlong 4-byte forms
    } else if (c >= 0xF1 && c <= 0xF3) {
      length = 4;
    } else if (c == 0xF4) {
      length = 4, second_hi = 0x8F;  // nothing above U+10FFFF
    } else {
      return i;  // 0x80..0xC1 (continuation or overlong 2-byte lead) and 0xF5..0xFF
    }
    if (n - i < length) return i;
    if (s[i + 1] < second_lo || s[i + 1] > second_hi) return i;
    for (size_t k = 2; k < length; ++k)
      if (s[i + k] < 0x80 || s[i + k] > 0xBF) return i;
    i += length;
  }
  return std::nullopt;
}

std::string byte_hex(unsigned char b) {
  char buf[8];
  std::snprintf(buf, sizeof buf, "0x%02x", b);
  return buf;
}

namespace {

using nlohmann::json;

// A SAX consumer that builds the DOM itself, so that it sees every key (duplicates included) and can stop at the
// depth and array-length limits before a hostile header makes it allocate much.
class StrictDomBuilder {
 public:
  explicit StrictDomBuilder(const JsonLimits& limits) : limits_(limits) {}

  bool null() { return add(json(nullptr)); }
  bool boolean(bool v) { return add(json(v)); }
  bool number_integer(json::number_integer_t v) { return add(json(v)); }
  bool number_unsigned(json::number_unsigned_t v) { return add(json(v)); }
  bool number_float(json::number_float_t v, const json::string_t&) { return add(json(v)); }
  bool string(json::string_t& v) { return add(json(std::move(v))); }
  bool binary(json::binary_t& v) { return add(json::binary(std::move(v))); }

  bool start_object(std::size_t) { return open(json::object()); }
  bool start_array(std::size_t) { return open(json::array()); }
  bool end_object() { return close(); }
  bool end_array() { return close(); }

  bool key(json::string_t& k) {
    Frame& top = stack_.back();
    if (top.node->contains(k)) {
      JsonDuplicateKey dup;
      for (size_t i = 0; i + 1 < stack_.size(); ++i) dup.parents.push_back(stack_[i].key);
      dup.key = k;
      duplicates_.push_back(std::move(dup));
      top.skip_value = true;  // keep the first value
    } else {
      top.skip_value = false;
    }
    top.key = std::move(k);
    return true;
  }

  bool parse_error(std::size_t, const std::string&, const nlohmann::detail::exception& e) {
    error_ = std::string("not valid JSON: ") + e.what();
    return false;
  }

  json& root() { return root_; }
  std::vector<JsonDuplicateKey>& duplicates() { return duplicates_; }
  const std::string& error() const { return error_; }

 private:
  struct Frame {
    json* node;
    std::string key;          // the current key when node is an object
    bool skip_value = false;  // the current key is a duplicate
    size_t length = 0;        // elements so far when node is an array
  };

  // Places `v` in the current container; returns where it landed (nullptr when dropped as a duplicate's value).
  json* place(json v, bool* ok) {
    *ok = true;
    if (stack_.empty()) {
      root_ = std::move(v);
      return &root_;
    }
    Frame& top = stack_.back();
    if (top.node->is_array()) {
      if (++top.length > limits_.max_array_length) {
        error_ = "an array has more than " + std::to_string(limits_.max_array_length) + " elements" + where();
        *ok = false;
        return nullptr;
      }
      top.node->push_back(std::move(v));
      return &top.node->back();
    }
    if (top.skip_value) {
      // The duplicate's value is still parsed (it may be a container), but into a scratch slot that is dropped.
      scratch_.push_back(std::move(v));
      return &scratch_.back();
    }
    json& slot = (*top.node)[top.key];
    slot = std::move(v);
    return &slot;
  }

  bool add(json v) {
    bool ok = true;
    place(std::move(v), &ok);
    return ok;
  }

  bool open(json container) {
    if (stack_.size() >= limits_.max_depth) {
      error_ = "nests deeper than " + std::to_string(limits_.max_depth) + " levels" + where();
      return false;
    }
    bool ok = true;
    json* slot = place(std::move(container), &ok);
    if (!ok) return false;
    stack_.push_back(Frame{slot, {}, false, 0});
    return true;
  }

  bool close() {
    stack_.pop_back();
    return true;
  }

  // " (under key 'a')" — where in the document a limit was hit.
  std::string where() const {
    for (const Frame& f : stack_)
      if (f.node->is_object() && !f.key.empty()) return " (under key '" + f.key + "')";
    return "";
  }

  JsonLimits limits_;
  json root_;
  std::vector<Frame> stack_;
  // Values of duplicated keys, dropped with the builder. A deque, because the stack may point into an element while
  // another duplicate (nested in it) is appended.
  std::deque<json> scratch_;
  std::vector<JsonDuplicateKey> duplicates_;
  std::string error_;
};

}  // namespace

std::optional<StrictJson> parse_strict_json(std::string_view text, const JsonLimits& limits, std::string* error) {
  // nlohmann's lexer takes a NUL byte for the end of input, so "{}\0<anything>" would parse. JSON has no place for
  // a raw NUL (not whitespace, and control characters inside strings must be escaped): refuse it outright.
  if (const size_t nul = text.find('\0'); nul != std::string_view::npos) {
    *error = "not valid JSON: a NUL byte at offset " + std::to_string(nul);
    return std::nullopt;
  }
  StrictDomBuilder builder(limits);
  const bool ok = json::sax_parse(text.begin(), text.end(), &builder, nlohmann::detail::input_format_t::json,
                                  /*strict=*/true, /*ignore_comments=*/false);
  if (!ok) {
    *error = builder.error().empty() ? std::string("not valid JSON") : builder.error();
    return std::nullopt;
  }
  StrictJson out;
  out.value = std::move(builder.root());
  out.duplicates = std::move(builder.duplicates());
  return out;
}

std::string json_kind(const nlohmann::json& v) {
  switch (v.type()) {
    case json::value_t::null:
      return "null";
    case json::value_t::boolean:
      return v.get<bool>() ? "true" : "false";
    case json::value_t::string:
      return "a string";
    case json::value_t::array:
      return "an array";
    case json::value_t::object:
      return "an object";
    case json::value_t::binary:
      return "binary data";
    case json::value_t::number_float:
      return "the non-integer number " + v.dump();
    case json::value_t::number_integer:
    case json::value_t::number_unsigned:
      return "the integer " + v.dump();
    case json::value_t::discarded:
      return "nothing";
  }
  return "an unknown JSON value";
}

std::optional<uint64_t> json_non_negative_integer(const nlohmann::json& v) {
  if (v.is_number_unsigned()) return v.get<uint64_t>();
  if (v.is_number_integer()) {
    const int64_t i = v.get<int64_t>();
    if (i >= 0) return static_cast<uint64_t>(i);
  }
  return std::nullopt;
}

}  // namespace hx::st_internal
