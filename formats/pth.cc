// .pth reading: the zip format, and the object-tree flattening shared with pth_legacy.cc; see pth.h.
#include "formats/pth.h"

#include <charconv>
#include <cmath>
#include <cstring>
#include <unordered_map>
#include <unordered_set>

#include "formats/errors.h"
#include "formats/mapped_file.h"
#include "formats/pickle.h"
#include "formats/pth_internal.h"

namespace hx {
namespace pth_detail {
namespace {

// ---- Python-like text of leaf values (NonTensorLeaf::value) ----

// Characters (roughly) one leaf's repr may take before the rest is elided.
constexpr int64_t kReprBudget = 4096;

// repr(float): the shortest round-trip digits, fixed notation for exponents in [-4, 16), else d.ddde±XX.
std::string float_repr(double v) {
  if (std::isnan(v)) return "nan";
  if (std::isinf(v)) return v > 0 ? "inf" : "-inf";
  char buf[64];
  const auto r = std::to_chars(buf, buf + sizeof buf, v, std::chars_format::scientific);
  std::string s(buf, r.ptr);
  std::string sign;
  if (s[0] == '-') {
    sign = "-";
    s.erase(0, 1);
  }
  const size_t e = s.find('e');
  const int exp = std::stoi(s.substr(e + 1));
  std::string digits;
  for (char c : s.substr(0, e))
    if (c != '.') digits += c;
  if (exp >= -4 && exp < 16) {
    if (exp < 0) return sign + "0." + std::string(static_cast<size_t>(-exp - 1), '0') + digits;
    const auto int_len = static_cast<size_t>(exp) + 1;
    if (digits.size() <= int_len) return sign + digits + std::string(int_len - digits.size(), '0') + ".0";
    return sign + digits.substr(0, int_len) + "." + digits.substr(int_len);
  }
  char exp_text[16];
  std::snprintf(exp_text, sizeof exp_text, "e%c%02d", exp < 0 ? '-' : '+', std::abs(exp));
  return sign + digits.substr(0, 1) + (digits.size() > 1 ? "." + digits.substr(1) : "") + exp_text;
}

// Decimal text of a little-endian two's complement integer of any length (LONG1 beyond 64 bits).
std::string bigint_decimal(const std::string& le_bytes) {
  std::vector<uint8_t> mag(le_bytes.begin(), le_bytes.end());
  const bool negative = !mag.empty() && (mag.back() & 0x80);
  if (negative) {  // two's complement negate
    unsigned carry = 1;
    for (auto& b : mag) {
      const unsigned v = static_cast<uint8_t>(~b) + carry;
      b = static_cast<uint8_t>(v);
      carry = v >> 8;
    }
  }
  std::string digits;
  while (std::any_of(mag.begin(), mag.end(), [](uint8_t b) { return b != 0; })) {
    unsigned rem = 0;
    for (size_t i = mag.size(); i-- > 0;) {
      const unsigned cur = (rem << 8) | mag[i];
      mag[i] = static_cast<uint8_t>(cur / 10);
      rem = cur % 10;
    }
    digits += static_cast<char>('0' + rem);
  }
  if (digits.empty()) digits = "0";
  std::reverse(digits.begin(), digits.end());
  return (negative ? "-" : "") + digits;
}

// Python's quoting: single quotes unless the text holds a single quote and no double quote.
std::string quoted(const std::string& s, bool bytes) {
  const char q = (s.find('\'') != std::string::npos && s.find('"') == std::string::npos) ? '"' : '\'';
  std::string out = std::string(bytes ? "b" : "") + q;
  for (unsigned char c : s) {
    if (c == '\\' || c == q) out += std::string("\\") + static_cast<char>(c);
    else if (c == '\n') out += "\\n";
    else if (c == '\t') out += "\\t";
    else if (c == '\r') out += "\\r";
    else if (c < 0x20 || c == 0x7f || (bytes && c >= 0x80)) {
      char hex[8];
      std::snprintf(hex, sizeof hex, "\\x%02x", c);
      out += hex;
    } else {
      out += static_cast<char>(c);
    }
  }
  return out + q;
}

// repr(complex): parts without a forced ".0", no parentheses when the real part is +0.
std::string complex_repr(double re, double im) {
  auto part = [](double x) {
    std::string t = float_repr(x);
    if (t.size() > 2 && t.ends_with(".0")) t.resize(t.size() - 2);
    return t;
  };
  if (re == 0 && !std::signbit(re)) return part(im) + "j";
  return "(" + part(re) + (std::signbit(im) ? "" : "+") + part(im) + "j)";
}

// repr() of leaf values and non-str dict keys. `budget` bounds the text (and so the work): tuples that share
// sub-tuples would otherwise repr to exponentially long strings. Past it, elements print as "...".
std::string repr(const PickleResult& p, ObjId id, int64_t& budget, uint32_t depth = 0) {
  const PyObject& o = p.at(id);
  if (--budget < 0 || depth > kPickleMaxNesting) return "...";
  switch (o.kind) {
    case PyKind::kNone: return "None";
    case PyKind::kBool: return o.flag ? "True" : "False";
    case PyKind::kInt: return std::to_string(o.int_value);
    case PyKind::kBigInt: return bigint_decimal(o.text);
    case PyKind::kFloat: return float_repr(o.real);
    case PyKind::kComplex: return complex_repr(o.real, o.imag);
    case PyKind::kStr: return quoted(o.text, false);
    case PyKind::kBytes: return quoted(o.text, true);
    case PyKind::kOpaque:
    case PyKind::kGlobal: return o.text;
    case PyKind::kTuple:
    case PyKind::kList:
    case PyKind::kSet: {
      const char* open = o.kind == PyKind::kTuple ? "(" : o.kind == PyKind::kList ? "[" : "{";
      const char* close = o.kind == PyKind::kTuple ? ")" : o.kind == PyKind::kList ? "]" : "}";
      if (o.kind == PyKind::kSet && o.items.empty()) return "set()";
      std::string s = open;
      for (size_t i = 0; i < o.items.size(); ++i) {
        if (budget < 0) {  // out of budget: elide the rest
          s += ", ...";
          break;
        }
        const std::string element = repr(p, o.items[i], budget, depth + 1);
        budget -= static_cast<int64_t>(element.size());
        s += (i ? ", " : "") + element;
      }
      if (o.kind == PyKind::kTuple && o.items.size() == 1) s += ",";
      return s + close;
    }
    default: return std::string("<") + py_kind_name(o.kind) + ">";
  }
}

class Flattener {
 public:
  Flattener(const PickleResult& p, const std::string& file, const StorageResolver& resolve, Checkpoint* out)
      : p_(p), file_(file), resolve_(resolve), out_(out) {}

  void walk(ObjId id, const std::string& path, uint32_t depth) {
    if (depth > kPickleMaxNesting)
      throw FormatError(in_file(file_, "object tree nested deeper than " + std::to_string(kPickleMaxNesting) +
                                           " levels at '" + path.substr(0, 200) + "' (or a reference cycle)"));
    if (++visits_ > kPthMaxTreeVisits)
      throw FormatError(in_file(file_, "object tree has more than " + std::to_string(kPthMaxTreeVisits) +
                                           " nodes (shared subtrees are counted each time they are reached)"));
    if (path.size() > kPthMaxNameLength)
      throw FormatError(in_file(file_, "a tensor path is longer than " + std::to_string(kPthMaxNameLength) + " bytes"));
    if ((path_bytes_ += path.size()) > kPthMaxPathBytes)  // shared subtrees under long keys: bound time and memory
      throw FormatError(in_file(file_, "object tree paths add up to more than " + std::to_string(kPthMaxPathBytes) +
                                           " bytes (shared subtrees are counted each time they are reached)"));
    const PyObject& o = p_.at(id);
    switch (o.kind) {
      case PyKind::kDict:
        for (size_t i = 0; i + 1 < o.items.size(); i += 2) {
          const PyObject& k = p_.at(o.items[i]);
          int64_t budget = kReprBudget;
          const std::string key = k.kind == PyKind::kStr ? k.text : repr(p_, o.items[i], budget);
          walk(o.items[i + 1], join(path, key), depth + 1);
        }
        return;
      case PyKind::kList:
      case PyKind::kTuple:
        for (size_t i = 0; i < o.items.size(); ++i) walk(o.items[i], join(path, std::to_string(i)), depth + 1);
        return;
      case PyKind::kTensor:
        return add_tensor(path.empty() ? "tensor" : path, p_.tensors[static_cast<size_t>(o.int_value)]);
      case PyKind::kStorage:
        throw UnsupportedError(in_file(file_, "a bare storage at '" + path + "' (saved without a tensor) is not supported"));
      default:
        return add_leaf(path, o, id);
    }
  }

 private:
  static std::string join(const std::string& path, const std::string& key) { return path.empty() ? key : path + "/" + key; }

  void add_tensor(const std::string& name, const PyTensorRef& t) {
    if (!names_.insert(name).second) throw FormatError(in_file(file_, "two tensors are named '" + name + "'"));
    const PyStorageRef& s = p_.storages[static_cast<size_t>(p_.at(t.storage).int_value)];
    TensorView v;
    v.dtype = t.dtype.value_or(storage_dtype(s));
    v.shape = t.shape;
    v.strides = t.strides;
    v.storage_offset = t.storage_offset;
    v.storage = resolve_(s, name);
    check_view_in_bounds(v, in_file(file_, "tensor '" + name + "'"));
    out_->tensors.push_back(NamedTensor{name, std::move(v)});
  }

  void add_leaf(const std::string& path, const PyObject& o, ObjId id) {
    NonTensorLeaf leaf;
    leaf.path = path;
    leaf.type = o.kind == PyKind::kOpaque ? "torch.device"
                : o.kind == PyKind::kGlobal ? (o.global == TorchGlobal::kDType ? "torch.dtype" : "type")
                                            : py_kind_name(o.kind);
    int64_t budget = kReprBudget;
    leaf.value = o.kind == PyKind::kStr ? o.text : repr(p_, id, budget);
    out_->other_leaves.push_back(std::move(leaf));
  }

  const PickleResult& p_;
  const std::string& file_;
  const StorageResolver& resolve_;
  Checkpoint* out_;
  size_t visits_ = 0;
  size_t path_bytes_ = 0;
  std::unordered_set<std::string> names_;
};

}  // namespace

DType storage_dtype(const PyStorageRef& ref) { return ref.dtype.value_or(DType::kU8); }

uint64_t storage_declared_bytes(const PyStorageRef& ref, const std::string& file) {
  const auto bytes = dtype_bytes_for(storage_dtype(ref), static_cast<uint64_t>(ref.numel));
  if (!bytes)
    throw FormatError(in_file(file, "storage '" + ref.key + "' of " + std::to_string(ref.numel) + " x " +
                                        ref.storage_class + " overflows 64 bits"));
  return *bytes;
}

void flatten_pickle(const PickleResult& pickle, const std::string& file, const StorageResolver& resolve,
                    Checkpoint* out) {
  Flattener(pickle, file, resolve, out).walk(pickle.root, "", 0);
}

}  // namespace pth_detail

PthKind detect_pth_kind(std::span<const std::byte> head) {
  auto at = [&](size_t i) { return i < head.size() ? std::to_integer<uint8_t>(head[i]) : 0; };
  if (at(0) == 'P' && at(1) == 'K' && ((at(2) == 3 && at(3) == 4) || (at(2) == 5 && at(3) == 6))) return PthKind::kZip;
  // Legacy: the magic-number pickle, PROTO 2..5, an optional FRAME (protocol 4+), then LONG1 of 10 bytes. Checking
  // the LONG1 keeps a safetensors header length such as 0x0280 from passing for PROTO 2.
  if (at(0) == 0x80 && at(1) >= 2 && at(1) <= 5) {
    const size_t long1 = at(2) == 0x95 ? 11 : 2;
    if (at(long1) == 0x8a && at(long1 + 1) == 10) return PthKind::kLegacy;
  }
  return PthKind::kUnknown;
}

namespace {

std::string trimmed(std::span<const std::byte> b) {
  std::string s(reinterpret_cast<const char*>(b.data()), b.size());
  while (!s.empty() && (s.back() == '\n' || s.back() == '\r' || s.back() == ' ')) s.pop_back();
  return s;
}

Checkpoint read_zip(std::span<const std::byte> bytes, std::shared_ptr<const void> owner, const std::string& file,
                    const PthReadOptions& options) {
  ZipReadOptions zopt;
  zopt.verify_stored_crc = options.verify_crc;
  zopt.max_inflated_bytes = options.max_inflated_bytes;
  const ZipArchive zip = ZipArchive::from_bytes(bytes, std::move(owner), file, zopt);
  if (zip.entries().empty()) throw FormatError(in_file(file, "empty zip archive: no data.pkl"));
  const std::string& first = zip.entries().front().name;
  const size_t slash = first.find('/');
  if (slash == std::string::npos || slash == 0)
    throw FormatError(in_file(file, "first zip record '" + first + "' is not inside a folder (torch.save puts every "
                                    "record under one root folder such as 'archive/')"));
  const std::string root = first.substr(0, slash);

  // Version: torch's reader accepts versions in [1, kMaxSupportedFileFormatVersion]; absent in some writers.
  const ZipEntry* version = zip.find(root + "/.data/version");
  if (!version) version = zip.find(root + "/version");
  if (version) {
    const std::string text = trimmed(zip.read(*version).bytes);
    int64_t v = 0;
    const auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), v);
    if (ec != std::errc() || end != text.data() + text.size())
      throw FormatError(in_file(file, "zip record '" + version->name + "' holds '" + text.substr(0, 40) +
                                      "', expected a version number"));
    if (v < 1) throw FormatError(in_file(file, "archive version " + std::to_string(v) + " is invalid (expected >= 1)"));
    if (v > kPthMaxArchiveVersion)
      throw UnsupportedError(in_file(file, "archive version " + std::to_string(v) + " is newer than hxforge supports (" +
                                           "<= " + std::to_string(kPthMaxArchiveVersion) + "); produced by a newer torch"));
  }
  if (const ZipEntry* order = zip.find(root + "/byteorder")) {
    const std::string text = trimmed(zip.read(*order).bytes);
    if (text == "big")
      throw UnsupportedError(in_file(file, "byteorder record says 'big': big-endian .pth files are not supported "
                                           "(re-save it on a little-endian machine)"));
    if (text != "little")
      throw FormatError(in_file(file, "byteorder record holds '" + text.substr(0, 40) + "', expected 'little' or 'big'"));
  }

  const std::string pkl_name = root + "/data.pkl";
  const ZipEntry* pkl = zip.find(pkl_name);
  if (!pkl)
    throw FormatError(in_file(file, "no '" + pkl_name + "' record: not a torch.save archive (TorchScript archives "
                                    "hold constants.pkl and code/ instead)"));
  const Storage pkl_bytes = zip.read(*pkl);
  const PickleResult pickle = parse_pickle(pkl_bytes.bytes, PickleSource{file, pkl_name});

  std::unordered_map<std::string, Storage> records;  // storage key -> whole record (shared by every view of it)
  const pth_detail::StorageResolver resolve = [&](const PyStorageRef& ref, const std::string& tensor) {
    const std::string name = root + "/data/" + ref.key;
    if (ref.has_view)
      throw FormatError(in_file(file, "tensor '" + tensor + "': storage '" + ref.key +
                                      "' carries legacy view metadata, which zip archives never have"));
    auto it = records.find(ref.key);
    if (it == records.end()) {
      const ZipEntry* e = zip.find(name);
      if (!e)
        throw FormatError(in_file(file, "storage record '" + name + "' of tensor '" + tensor + "' is missing"));
      it = records.emplace(ref.key, zip.read(*e)).first;
    }
    const uint64_t declared = pth_detail::storage_declared_bytes(ref, file);
    const Storage& whole = it->second;
    if (declared > whole.bytes.size())
      throw FormatError(in_file(file, "storage record '" + name + "' holds " + std::to_string(whole.bytes.size()) +
                                      " bytes, but tensor '" + tensor + "' declares " + std::to_string(ref.numel) +
                                      " x " + ref.storage_class + " (" + std::to_string(declared) + " bytes)"));
    return Storage{whole.bytes.first(declared), whole.owner};
  };
  Checkpoint ck;
  ck.format = CheckpointFormat::kPth;
  pth_detail::flatten_pickle(pickle, file, resolve, &ck);
  return ck;
}

}  // namespace

Checkpoint read_pth_bytes(std::span<const std::byte> bytes, std::shared_ptr<const void> owner,
                          const std::string& display_name, const PthReadOptions& options) {
  Checkpoint ck;
  switch (detect_pth_kind(bytes.first(std::min<size_t>(bytes.size(), 16)))) {
    case PthKind::kZip: ck = read_zip(bytes, std::move(owner), display_name, options); break;
    case PthKind::kLegacy: ck = pth_detail::read_legacy(bytes, owner, display_name); break;
    case PthKind::kUnknown:
      if (bytes.size() > 262 && std::memcmp(bytes.data() + 257, "ustar", 5) == 0)
        throw UnsupportedError(in_file(display_name, "the tar-based .pth format of torch < 1.0 is not supported "
                                                     "(load and re-save it with a newer torch)"));
      throw FormatError(in_file(display_name, "not a PyTorch checkpoint: neither a zip archive nor a legacy "
                                              "torch.save pickle"));
  }
  ck.path = display_name;
  ck.files = {display_name};
  return ck;
}

Checkpoint read_pth(const std::string& path, const PthReadOptions& options) {
  auto file = MappedFile::open(path);
  const auto bytes = file->bytes();
  return read_pth_bytes(bytes, std::move(file), path, options);
}

Checkpoint read_pth(const std::string& path) { return read_pth(path, PthReadOptions{}); }

}  // namespace hx
