// Validation and zero-copy loading of one safetensors file (see safetensors.h for the rules and why).
#include <algorithm>
#include <cstring>
#include <tuple>
#include <utility>

#include "formats/errors.h"
#include "formats/mapped_file.h"
#include "formats/safetensors.h"
#include "formats/safetensors_internal.h"

namespace hx {
namespace st_internal {
namespace {

using nlohmann::json;

constexpr uint64_t kLengthPrefixBytes = 8;  // the little-endian u64 header length
// A valid header nests three levels (root, tensor entry, shape); deeper nesting can only be hostile, and stopping
// early bounds the parser's work. Kept above 3 so that e.g. a nested shape array is reported as a bad shape.
constexpr size_t kMaxHeaderJsonDepth = 8;
constexpr const char* kMetadataKey = "__metadata__";

uint64_t read_u64_le(const std::byte* p) {
  uint64_t v = 0;
  for (int i = 7; i >= 0; --i) v = (v << 8) | static_cast<uint64_t>(p[i]);
  return v;
}

std::string offsets_text(uint64_t begin, uint64_t end) {
  return "[" + std::to_string(begin) + ", " + std::to_string(end) + "]";
}

// A number as written (-3, 2.5), anything else by its kind: messages never quote a long hostile string.
std::string value_text(const json& v) { return v.is_number() ? v.dump() : json_kind(v); }

const std::string& safetensors_dtype_list() {
  static const std::string list = [] {
    std::string s;
    for (const auto& row : all_dtypes()) {
      if (!row.in_safetensors) continue;
      if (!s.empty()) s += ", ";
      s += row.name;
    }
    return s;
  }();
  return list;
}

// What one header entry yields for the layout check: offsets when they are usable, even if something else about
// the entry is wrong, so that check_* still reports overlaps and holes around it.
struct EntryResult {
  HeaderTensor tensor;
  bool offsets_ok = false;
};

class HeaderValidator {
 public:
  HeaderValidator(const std::string& name, Problems& problems) : name_(name), problems_(problems) {}

  std::optional<ParsedHeader> run(std::span<const std::byte> file) {
    const size_t problems_before = problems_.size();
    if (file.size() < kLengthPrefixBytes) {
      fail("file is " + std::to_string(file.size()) + " bytes, shorter than the 8-byte header length prefix");
      return std::nullopt;
    }
    const uint64_t header_len = read_u64_le(file.data());
    if (header_len > kSafetensorsMaxHeaderBytes) {
      fail("header length " + std::to_string(header_len) + " exceeds the limit of " +
           std::to_string(kSafetensorsMaxHeaderBytes) + " bytes");
      return std::nullopt;
    }
    if (header_len > file.size() - kLengthPrefixBytes) {
      fail("header length " + std::to_string(header_len) + " runs past the end of the file: the header would end at " +
           "byte " + std::to_string(kLengthPrefixBytes + header_len) + ", the file has " + std::to_string(file.size()) +
           " bytes (truncated?)");
      return std::nullopt;
    }
    ParsedHeader out;
    out.data_start = kLengthPrefixBytes + header_len;
    out.buffer_size = file.size() - out.data_start;
    const std::string_view text(reinterpret_cast<const char*>(file.data()) + kLengthPrefixBytes, header_len);
    if (text.empty()) {
      fail("header is empty, expected a JSON object starting with '{'");
      return std::nullopt;
    }
    if (const auto bad = first_invalid_utf8(text)) {
      fail("header is not valid UTF-8: byte " + byte_hex(static_cast<unsigned char>(text[*bad])) +
           " at header offset " + std::to_string(*bad));
      return std::nullopt;
    }
    if (text.front() != '{') {
      fail("header does not start with '{' (found " + byte_hex(static_cast<unsigned char>(text.front())) + ")");
      return std::nullopt;
    }
    std::string json_error;
    auto parsed = parse_strict_json(text, JsonLimits{kMaxHeaderJsonDepth, kSafetensorsMaxRank}, &json_error);
    if (!parsed) {
      fail("header is " + json_error);
      return std::nullopt;
    }
    if (!parsed->value.is_object()) {  // unreachable after the '{' check, kept as a guard
      fail("header is " + json_kind(parsed->value) + ", expected a JSON object");
      return std::nullopt;
    }
    report_duplicates(parsed->duplicates);

    std::vector<EntryResult> entries;
    for (const auto& [key, value] : parsed->value.items()) {
      if (key == kMetadataKey) {
        read_metadata(value, &out.metadata);
      } else {
        entries.push_back(read_entry(key, value));
      }
    }
    check_layout(entries, out.buffer_size, file.size());

    if (problems_.size() != problems_before) return std::nullopt;
    for (auto& e : entries) out.tensors.push_back(std::move(e.tensor));
    std::sort(out.tensors.begin(), out.tensors.end(), [](const HeaderTensor& a, const HeaderTensor& b) {
      return std::tie(a.begin, a.end, a.name) < std::tie(b.begin, b.end, b.name);
    });
    return out;
  }

 private:
  void fail(const std::string& message) { problems_.format(in_file(name_, message)); }
  void fail_tensor(const std::string& tensor, const std::string& message) {
    problems_.format(in_file(name_, "tensor '" + tensor + "': " + message));
  }

  void report_duplicates(const std::vector<JsonDuplicateKey>& duplicates) {
    for (const auto& d : duplicates) {
      if (d.parents.empty()) {
        fail(d.key == kMetadataKey ? std::string("__metadata__ appears more than once in the header")
                                   : "duplicate tensor name '" + d.key + "' in the header");
      } else if (d.parents.size() == 1 && d.parents[0] == kMetadataKey) {
        fail("__metadata__ has the key '" + d.key + "' more than once");
      } else if (d.parents.size() == 1) {
        fail_tensor(d.parents[0], "duplicate key '" + d.key + "' in its header entry");
      } else {
        fail_tensor(d.parents[0], "duplicate key '" + d.key + "' inside its header entry");
      }
    }
  }

  void read_metadata(const json& value, std::map<std::string, std::string>* metadata) {
    if (!value.is_object()) {
      fail("__metadata__ is " + json_kind(value) + ", expected an object of string to string");
      return;
    }
    for (const auto& [k, v] : value.items()) {
      if (!v.is_string()) {
        fail("__metadata__ key '" + k + "' has " + json_kind(v) + " as its value, expected a string");
        continue;
      }
      (*metadata)[k] = v.get<std::string>();
    }
  }

  EntryResult read_entry(const std::string& tensor, const json& entry) {
    EntryResult r;
    r.tensor.name = tensor;
    if (!entry.is_object()) {
      fail_tensor(tensor,
                  "header entry is " + json_kind(entry) + ", expected an object with dtype, shape and data_offsets");
      return r;
    }
    bool dtype_ok = false, shape_ok = false;

    // dtype
    if (!entry.contains("dtype")) {
      fail_tensor(tensor, "header entry has no 'dtype'");
    } else if (const json& d = entry.at("dtype"); !d.is_string()) {
      fail_tensor(tensor, "dtype is " + json_kind(d) + ", expected a string such as \"F32\"");
    } else {
      const std::string name = d.get<std::string>();
      const auto id = dtype_from_name(name);
      if (!id || !dtype_info(*id).in_safetensors) {
        problems_.unsupported(in_file(name_, "tensor '" + tensor + "': unknown dtype '" + name +
                                                 "', expected one of the safetensors dtypes (" +
                                                 safetensors_dtype_list() + ")"));
      } else {
        r.tensor.dtype = *id;
        dtype_ok = true;
      }
    }

    // shape
    if (!entry.contains("shape")) {
      fail_tensor(tensor, "header entry has no 'shape'");
    } else if (const json& s = entry.at("shape"); !s.is_array()) {
      fail_tensor(tensor, "shape is " + json_kind(s) + ", expected an array of non-negative integers");
    } else {
      shape_ok = read_shape(tensor, s, &r.tensor.shape);
    }

    // data_offsets
    if (!entry.contains("data_offsets")) {
      fail_tensor(tensor, "header entry has no 'data_offsets'");
    } else if (const json& o = entry.at("data_offsets"); !o.is_array() || o.size() != 2) {
      fail_tensor(tensor, "data_offsets is " +
                              (o.is_array() ? "an array of " + std::to_string(o.size()) + " values" : json_kind(o)) +
                              ", expected [BEGIN, END] with two non-negative integers");
    } else {
      const auto begin = json_non_negative_integer(o[0]);
      const auto end = json_non_negative_integer(o[1]);
      if (!begin || !end) {
        fail_tensor(tensor, "data_offsets [" + value_text(o[0]) + ", " + value_text(o[1]) +
                                "] are not two non-negative integers");
      } else if (*begin > *end) {
        fail_tensor(tensor, "data_offsets " + offsets_text(*begin, *end) + " are reversed (BEGIN > END)");
      } else {
        r.tensor.begin = *begin;
        r.tensor.end = *end;
        r.offsets_ok = true;
      }
    }

    for (const auto& [k, v] : entry.items())
      if (k != "dtype" && k != "shape" && k != "data_offsets")
        fail_tensor(tensor, "unknown key '" + k + "' in its header entry (expected dtype, shape, data_offsets)");

    if (dtype_ok && shape_ok) {
      const auto expected = tensor_bytes(tensor, r.tensor.dtype, r.tensor.shape);
      if (expected && r.offsets_ok && r.tensor.end - r.tensor.begin != *expected)
        fail_tensor(tensor, "data_offsets " + offsets_text(r.tensor.begin, r.tensor.end) + " span " +
                                std::to_string(r.tensor.end - r.tensor.begin) + " bytes, expected " +
                                std::to_string(*expected) + " for " + std::string(dtype_name(r.tensor.dtype)) + " " +
                                shape_to_string(r.tensor.shape));
    }
    return r;
  }

  bool read_shape(const std::string& tensor, const json& s, Shape* shape) {
    if (s.size() > kSafetensorsMaxRank) {  // unreachable: the parser caps arrays at this length
      fail_tensor(tensor, "shape has " + std::to_string(s.size()) + " dimensions, more than the limit of " +
                              std::to_string(kSafetensorsMaxRank));
      return false;
    }
    bool ok = true;
    for (size_t i = 0; i < s.size(); ++i) {
      const auto dim = json_non_negative_integer(s[i]);
      if (!dim) {
        fail_tensor(tensor, "shape dimension " + std::to_string(i) + " is " + value_text(s[i]) +
                                ", expected a non-negative integer");
        ok = false;
      } else if (*dim > static_cast<uint64_t>(INT64_MAX)) {
        fail_tensor(tensor,
                    "shape dimension " + std::to_string(i) + " is " + std::to_string(*dim) + ", larger than 2^63 - 1");
        ok = false;
      } else {
        shape->push_back(static_cast<int64_t>(*dim));
      }
    }
    return ok;
  }

  // Byte size of dtype × shape with overflow and whole-byte checks; nullopt after reporting a problem.
  std::optional<uint64_t> tensor_bytes(const std::string& tensor, DType dtype, const Shape& shape) {
    const std::string what = std::string(dtype_name(dtype)) + " " + shape_to_string(shape);
    uint64_t numel = 0;
    if (!checked_numel(shape, &numel)) {
      fail_tensor(tensor, "shape " + shape_to_string(shape) + " has more elements than fit in 64 bits");
      return std::nullopt;
    }
    uint64_t bits = 0;
    if (__builtin_mul_overflow(numel, uint64_t{dtype_info(dtype).bits}, &bits)) {
      fail_tensor(tensor, what + " has more bits than fit in 64 bits");
      return std::nullopt;
    }
    if (bits % 8 != 0) {
      fail_tensor(tensor, what + " is " + std::to_string(bits) + " bits, not a whole number of bytes");
      return std::nullopt;
    }
    return bits / 8;
  }

  // Sorted by offset, the tensors must tile the data buffer exactly: the first at 0, each where the previous one
  // ends, the last at the buffer's end (the reference's InvalidOffset and MetadataIncompleteBuffer).
  void check_layout(const std::vector<EntryResult>& entries, uint64_t buffer_size, uint64_t file_size) {
    std::vector<const HeaderTensor*> placed;
    for (const auto& e : entries)
      if (e.offsets_ok) placed.push_back(&e.tensor);
    std::sort(placed.begin(), placed.end(), [](const HeaderTensor* a, const HeaderTensor* b) {
      return std::tie(a->begin, a->end, a->name) < std::tie(b->begin, b->end, b->name);
    });
    uint64_t covered = 0;                    // the data buffer is tiled up to here
    const HeaderTensor* furthest = nullptr;  // the tensor that ends at `covered`
    for (const HeaderTensor* t : placed) {
      const std::string offsets = "data_offsets " + offsets_text(t->begin, t->end);
      if (t->end > buffer_size)
        fail_tensor(t->name, offsets + " run past the end of the data buffer, which has " +
                                 std::to_string(buffer_size) + " bytes (file of " + std::to_string(file_size) +
                                 " bytes)");
      if (t->begin > covered) {
        const std::string hole = std::to_string(t->begin - covered);
        if (!furthest)
          fail_tensor(t->name, offsets + " leave a hole of " + hole +
                                   " bytes at the start of the data buffer: the first tensor must begin at 0");
        else
          fail_tensor(t->name, offsets + " leave a hole of " + hole + " bytes after tensor '" + furthest->name + "' " +
                                   offsets_text(furthest->begin, furthest->end));
      } else if (t->begin < covered) {
        fail_tensor(t->name, offsets + " overlap tensor '" + furthest->name + "' " +
                                 offsets_text(furthest->begin, furthest->end));
      }
      if (t->end >= covered) {
        covered = t->end;
        furthest = t;
      }
    }
    if (covered < buffer_size)
      fail(std::to_string(buffer_size - covered) + " trailing bytes after the last tensor: tensors end at offset " +
           std::to_string(covered) + " of a data buffer of " + std::to_string(buffer_size) +
           " bytes (a safetensors file has no bytes beyond its tensors)");
  }

  const std::string& name_;
  Problems& problems_;
};

}  // namespace

std::optional<ParsedHeader> parse_safetensors(std::span<const std::byte> file, const std::string& name,
                                              Problems& problems) {
  return HeaderValidator(name, problems).run(file);
}

Checkpoint checkpoint_from(const ParsedHeader& header, std::span<const std::byte> file, const std::string& name,
                           std::shared_ptr<const void> owner) {
  Checkpoint ck;
  ck.format = CheckpointFormat::kSafetensors;
  ck.path = name;
  ck.files = {name};
  ck.metadata = header.metadata;
  ck.tensors.reserve(header.tensors.size());
  for (const HeaderTensor& t : header.tensors) {
    Storage storage;
    storage.bytes = file.subspan(header.data_start + t.begin, t.end - t.begin);
    storage.owner = owner;
    ck.tensors.push_back(NamedTensor{t.name, TensorView::contiguous(t.dtype, t.shape, std::move(storage))});
  }
  return ck;
}

}  // namespace st_internal

using st_internal::Problems;

Checkpoint read_safetensors_bytes(std::span<const std::byte> bytes, const std::string& name,
                                  std::shared_ptr<const void> owner) {
  Problems problems(Problems::Mode::kThrowFirst);
  const auto header = st_internal::parse_safetensors(bytes, name, problems);
  return st_internal::checkpoint_from(*header, bytes, name, std::move(owner));
}

std::vector<std::string> check_safetensors_bytes(std::span<const std::byte> bytes, const std::string& name) {
  Problems problems(Problems::Mode::kCollectAll);
  st_internal::parse_safetensors(bytes, name, problems);
  return problems.take();
}

Checkpoint read_safetensors_file(const std::string& path) {
  const auto file = MappedFile::open(path);
  return read_safetensors_bytes(file->bytes(), path, file);
}

std::vector<std::string> check_safetensors_file(const std::string& path) {
  const auto file = MappedFile::open(path);
  return check_safetensors_bytes(file->bytes(), path);
}

}  // namespace hx
