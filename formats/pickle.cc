// The safe pickle machine (see pickle.h). Opcode semantics follow CPython's Lib/pickle.py and torch's
// torch/_weights_only_unpickler.py; every opcode below is one case of Machine::step().
#include "formats/pickle.h"

#include <bit>
#include <cstring>

#include "formats/errors.h"

namespace hx {
namespace {

// Opcodes (CPython Lib/pickle.py names).
enum Op : uint8_t {
  MARK = '(', STOP = '.', BININT = 'J', BININT1 = 'K', BININT2 = 'M', NONE = 'N', BINPERSID = 'Q', REDUCE = 'R',
  BINSTRING = 'T', SHORT_BINSTRING = 'U', BINUNICODE = 'X', APPEND = 'a', BUILD = 'b', GLOBAL = 'c',
  EMPTY_DICT = '}', APPENDS = 'e', BINGET = 'h', LONG_BINGET = 'j', EMPTY_LIST = ']', BINPUT = 'q',
  LONG_BINPUT = 'r', SETITEM = 's', TUPLE = 't', EMPTY_TUPLE = ')', SETITEMS = 'u', BINFLOAT = 'G',
  BINBYTES = 'B', SHORT_BINBYTES = 'C',
  PROTO = 0x80, NEWOBJ = 0x81, TUPLE1 = 0x85, TUPLE2 = 0x86, TUPLE3 = 0x87, NEWTRUE = 0x88, NEWFALSE = 0x89,
  LONG1 = 0x8a, SHORT_BINUNICODE = 0x8c, BINUNICODE8 = 0x8d, EMPTY_SET = 0x8f, ADDITEMS = 0x90,
  FROZENSET = 0x91, STACK_GLOBAL = 0x93, MEMOIZE = 0x94, FRAME = 0x95, BYTEARRAY8 = 0x96,
};
constexpr uint8_t kMaxProtocol = 5;
constexpr ObjId kUnsetMemo = 0xFFFFFFFF;

}  // namespace

bool is_valid_utf8(std::string_view s) {
  size_t i = 0;
  while (i < s.size()) {
    const auto c = static_cast<unsigned char>(s[i]);
    size_t n = c < 0x80 ? 1 : (c >> 5) == 0x6 ? 2 : (c >> 4) == 0xE ? 3 : (c >> 3) == 0x1E ? 4 : 0;
    if (n == 0 || i + n > s.size()) return false;
    for (size_t k = 1; k < n; ++k)
      if ((static_cast<unsigned char>(s[i + k]) >> 6) != 0x2) return false;
    i += n;
  }
  return true;
}

namespace {

struct GlobalEntry {
  TorchGlobal kind;
  std::optional<DType> dtype;
};

bool ends_with(std::string_view s, std::string_view suffix) {
  return s.size() >= suffix.size() && s.substr(s.size() - suffix.size()) == suffix;
}

bool looks_like_dtype(std::string_view name) {
  for (std::string_view p : {"float", "int", "uint", "bits", "complex", "qint", "quint", "bfloat"})
    if (name.starts_with(p)) return true;
  return false;
}

// The allowlist. Returns nullopt for anything else; `why_unsupported` is set for torch globals that torch.load
// accepts but hxforge does not model, so that the message can say what they are.
std::optional<GlobalEntry> resolve_global(std::string module, std::string_view name, std::string* why_unsupported) {
  why_unsupported->clear();
  if (module == "__builtin__") module = "builtins";  // Python 2 pickles (fix_imports)
  if (module == "collections" && name == "OrderedDict") return GlobalEntry{TorchGlobal::kOrderedDict, {}};
  if (module == "torch._utils") {
    if (name == "_rebuild_tensor") return GlobalEntry{TorchGlobal::kRebuildTensor, {}};
    if (name == "_rebuild_tensor_v2") return GlobalEntry{TorchGlobal::kRebuildTensorV2, {}};
    if (name == "_rebuild_tensor_v3") return GlobalEntry{TorchGlobal::kRebuildTensorV3, {}};
    if (name == "_rebuild_parameter") return GlobalEntry{TorchGlobal::kRebuildParameter, {}};
    if (name == "_rebuild_parameter_with_state") return GlobalEntry{TorchGlobal::kRebuildParameterWithState, {}};
    if (name.starts_with("_rebuild_"))  // qtensor, sparse, meta, wrapper subclass, nested, …
      *why_unsupported = "a quantized, sparse, meta, nested or subclass tensor rebuild";
    return std::nullopt;
  }
  if (module == "torch._tensor" && name == "_rebuild_from_type_v2")
    return GlobalEntry{TorchGlobal::kRebuildFromTypeV2, {}};
  if ((module == "torch" || module == "torch._tensor") && name == "Tensor")
    return GlobalEntry{TorchGlobal::kTensorClass, {}};
  if (module == "torch.nn.parameter" && name == "Parameter") return GlobalEntry{TorchGlobal::kParameterClass, {}};
  if (module == "torch" && name == "Size") return GlobalEntry{TorchGlobal::kTorchSize, {}};
  if (module == "torch" && name == "device") return GlobalEntry{TorchGlobal::kDevice, {}};
  if ((module == "torch" || module == "torch.storage") && name == "UntypedStorage")
    return GlobalEntry{TorchGlobal::kStorageClass, std::nullopt};
  if ((module == "torch" || module == "torch.cuda") && ends_with(name, "Storage")) {
    if (auto dt = dtype_from_legacy_storage(name)) return GlobalEntry{TorchGlobal::kStorageClass, dt};
    *why_unsupported = "an unknown storage type";
    return std::nullopt;
  }
  if (module == "torch") {
    if (auto dt = dtype_from_torch_name(name)) return GlobalEntry{TorchGlobal::kDType, dt};
    if (name.starts_with("per_") || name == "qscheme") *why_unsupported = "a quantization scheme";
    else if (looks_like_dtype(name)) *why_unsupported = "an unknown dtype";
    return std::nullopt;
  }
  if (module == "_codecs" && name == "encode") return GlobalEntry{TorchGlobal::kCodecsEncode, {}};
  if (module == "builtins") {
    if (name == "set") return GlobalEntry{TorchGlobal::kSet, {}};
    if (name == "frozenset") return GlobalEntry{TorchGlobal::kFrozenSet, {}};
    if (name == "complex") return GlobalEntry{TorchGlobal::kComplex, {}};
    if (name == "bytearray" || name == "bytes") return GlobalEntry{TorchGlobal::kByteArray, {}};  // protocol 2: bytes()
  }
  return std::nullopt;
}

class Machine {
 public:
  Machine(std::span<const std::byte> bytes, const PickleSource& source) : in_(bytes), source_(source) {}

  PickleResult run() {
    while (!stopped_) {
      if (pos_ >= in_.size()) fail("ends without STOP after " + std::to_string(in_.size()) + " bytes (truncated)");
      op_start_ = pos_;
      step(u8());
    }
    out_.consumed = pos_;
    return std::move(out_);
  }

 private:
  // ---- errors ----
  // "<file>: <problem> in <record> (byte N[; hint])"
  std::string message(const std::string& problem, const std::string& hint) const {
    return in_file(source_.file, problem + " in " + source_.record + " (byte " + std::to_string(op_start_) +
                                     (hint.empty() ? "" : "; " + hint) + ")");
  }
  [[noreturn]] void fail(const std::string& problem, const std::string& hint = "") const {
    throw FormatError(message(problem, hint));
  }
  [[noreturn]] void unsupported(const std::string& problem, const std::string& hint = "") const {
    throw UnsupportedError(message(problem, hint));
  }

  // ---- input ----
  std::span<const std::byte> take(uint64_t n, const char* what) {
    if (n > in_.size() - pos_)
      fail(std::string(what) + " needs " + std::to_string(n) + " bytes but only " + std::to_string(in_.size() - pos_) +
           " remain (truncated or a lying length)");
    auto s = in_.subspan(pos_, n);
    pos_ += n;
    return s;
  }
  uint64_t le(int n, const char* what) {
    const auto s = take(static_cast<uint64_t>(n), what);
    uint64_t v = 0;
    for (int i = n - 1; i >= 0; --i) v = (v << 8) | std::to_integer<uint64_t>(s[static_cast<size_t>(i)]);
    return v;
  }
  uint8_t u8() { return static_cast<uint8_t>(le(1, "opcode")); }
  std::string take_string(uint64_t n, const char* what) {
    const auto s = take(n, what);
    return std::string(reinterpret_cast<const char*>(s.data()), s.size());
  }
  std::string line(const char* what) {
    for (size_t i = pos_; i < in_.size() && i - pos_ <= kPickleMaxGlobalNameLength; ++i)
      if (in_[i] == std::byte{'\n'}) {
        std::string s(reinterpret_cast<const char*>(in_.data() + pos_), i - pos_);
        pos_ = i + 1;
        return s;
      }
    fail(std::string(what) + " is not a newline-terminated line of at most " +
         std::to_string(kPickleMaxGlobalNameLength) + " bytes (truncated?)");
  }

  // ---- objects ----
  ObjId make(PyObject o) {
    if (out_.objects.size() >= kPickleMaxObjects)
      fail("more than " + std::to_string(kPickleMaxObjects) + " objects (limit kPickleMaxObjects)");
    out_.objects.push_back(std::move(o));
    return static_cast<ObjId>(out_.objects.size() - 1);
  }
  ObjId make_scalar(PyKind k) {
    PyObject o;
    o.kind = k;
    return make(std::move(o));
  }
  ObjId make_int(int64_t v) {
    PyObject o;
    o.kind = PyKind::kInt;
    o.int_value = v;
    return make(std::move(o));
  }
  ObjId make_text(PyKind k, std::string s) {
    if (k == PyKind::kStr && !is_valid_utf8(s)) fail("string is not valid UTF-8");
    PyObject o;
    o.kind = k;
    o.text = std::move(s);
    return make(std::move(o));
  }
  ObjId make_container(PyKind k, std::vector<ObjId> items) {
    PyObject o;
    o.kind = k;
    check_size(items.size());
    uint32_t depth = 0;
    for (ObjId id : items) depth = std::max<uint32_t>(depth, obj(id).depth + 1u);
    if (depth > kPickleMaxNesting) fail("containers nested deeper than " + std::to_string(kPickleMaxNesting));
    o.depth = static_cast<uint16_t>(depth);
    o.items = std::move(items);
    return make(std::move(o));
  }
  PyObject& obj(ObjId id) { return out_.objects[id]; }
  void check_size(size_t n) {
    if (n > kPickleMaxContainerSize)
      fail("a container of more than " + std::to_string(kPickleMaxContainerSize) + " elements");
  }
  void add_items(ObjId container, std::span<const ObjId> items) {
    check_size(obj(container).items.size() + items.size());
    uint32_t depth = obj(container).depth;
    for (ObjId id : items) depth = std::max<uint32_t>(depth, obj(id).depth + 1u);
    if (depth > kPickleMaxNesting) fail("containers nested deeper than " + std::to_string(kPickleMaxNesting));
    obj(container).depth = static_cast<uint16_t>(depth);
    auto& v = obj(container).items;
    v.insert(v.end(), items.begin(), items.end());
  }
  std::string describe(ObjId id) {
    const PyObject& o = obj(id);
    if (o.kind == PyKind::kGlobal) return "'" + o.text + "'";
    if (o.kind == PyKind::kBigInt) return "an int beyond 64 bits";
    const std::string type = py_kind_name(o.kind);
    return (std::string("aeiou").find(type[0]) != std::string::npos ? "an " : "a ") + type;
  }

  // ---- stack ----
  size_t floor() const { return marks_.empty() ? 0 : marks_.back(); }
  void push(ObjId id) {
    if (stack_.size() >= kPickleMaxStackSize)
      fail("stack deeper than " + std::to_string(kPickleMaxStackSize) + " values (limit kPickleMaxStackSize)");
    stack_.push_back(id);
  }
  ObjId pop(const char* op) {
    if (stack_.size() <= floor()) fail(std::string(op) + " pops an empty stack (stack underflow)");
    const ObjId id = stack_.back();
    stack_.pop_back();
    return id;
  }
  ObjId& top(const char* op) {
    if (stack_.size() <= floor()) fail(std::string(op) + " needs a value on an empty stack (stack underflow)");
    return stack_.back();
  }
  std::vector<ObjId> pop_mark(const char* op) {
    if (marks_.empty()) fail(std::string(op) + " without a MARK");
    const size_t m = marks_.back();
    marks_.pop_back();
    std::vector<ObjId> items(stack_.begin() + static_cast<std::ptrdiff_t>(m), stack_.end());
    stack_.resize(m);
    return items;
  }

  // ---- memo ----
  void memo_put(uint64_t index) {
    if (index >= kPickleMaxMemoIndex)
      fail("memo index " + std::to_string(index) + " exceeds the limit of " + std::to_string(kPickleMaxMemoIndex));
    const ObjId value = top("BINPUT");
    if (index >= memo_.size()) memo_.resize(index + 1, kUnsetMemo);
    if (memo_[index] == kUnsetMemo) ++memo_count_;
    memo_[index] = value;
  }
  void memo_get(uint64_t index) {
    if (index >= memo_.size() || memo_[index] == kUnsetMemo) fail("memo index " + std::to_string(index) + " is not set");
    push(memo_[index]);
  }

  // ---- typed argument access for the callables ----
  const PyObject& expect(ObjId id, PyKind k, const std::string& what) {
    if (obj(id).kind != k) fail(what + " must be of type " + py_kind_name(k) + ", found " + describe(id));
    return obj(id);
  }
  int64_t expect_int(ObjId id, const std::string& what) {
    if (obj(id).kind == PyKind::kBool) return obj(id).flag ? 1 : 0;
    return expect(id, PyKind::kInt, what).int_value;
  }
  Shape expect_int_tuple(ObjId id, const std::string& what) {
    const PyObject& t = obj(id);
    if (t.kind != PyKind::kTuple && t.kind != PyKind::kList) fail(what + " must be a tuple of ints, found " + describe(id));
    Shape s;
    for (ObjId e : t.items) s.push_back(expect_int(e, what + " element"));
    return s;
  }
  const std::vector<ObjId>& args_of(ObjId args, const std::string& callee, size_t min, size_t max) {
    const PyObject& a = obj(args);
    if (a.kind != PyKind::kTuple) fail("arguments of " + callee + " must be a tuple, found " + describe(args));
    if (a.items.size() < min || a.items.size() > max)
      fail(callee + " takes " + std::to_string(min) + (min == max ? "" : "-" + std::to_string(max)) +
           " arguments, found " + std::to_string(a.items.size()));
    return a.items;
  }

  // ---- the allowlisted callables: describe, never execute ----
  ObjId call(ObjId callee, ObjId args, bool newobj) {
    const PyObject& f = obj(callee);
    if (f.kind != PyKind::kGlobal)
      fail(std::string(newobj ? "NEWOBJ" : "REDUCE") + " on " + describe(callee) + ", which is not a callable global");
    const std::string name = "'" + f.text + "'";
    const TorchGlobal g = f.global;
    const std::vector<ObjId> a = args_of(args, name, 0, 16);
    auto arity = [&](size_t lo, size_t hi) { args_of(args, name, lo, hi); };
    switch (g) {
      case TorchGlobal::kRebuildTensor:
      case TorchGlobal::kRebuildTensorV2:
      case TorchGlobal::kRebuildTensorV3: {
        // (storage, offset, size, stride[, requires_grad, backward_hooks][, dtype][, metadata])
        if (g == TorchGlobal::kRebuildTensor) arity(4, 4);
        if (g == TorchGlobal::kRebuildTensorV2) arity(6, 7);
        if (g == TorchGlobal::kRebuildTensorV3) arity(7, 8);
        PyTensorRef t;
        t.storage = a[0];
        expect(a[0], PyKind::kStorage, name + " argument 1 (storage)");
        t.storage_offset = expect_int(a[1], name + " argument 2 (storage_offset)");
        t.shape = expect_int_tuple(a[2], name + " argument 3 (size)");
        t.strides = expect_int_tuple(a[3], name + " argument 4 (stride)");
        if (a.size() > 4) t.requires_grad = expect_int(a[4], name + " argument 5 (requires_grad)") != 0;
        if (g == TorchGlobal::kRebuildTensorV3) {
          const PyObject& d = obj(a[6]);
          if (d.kind != PyKind::kGlobal || d.global != TorchGlobal::kDType)
            fail(name + " argument 7 (dtype) must be a torch dtype, found " + describe(a[6]));
          t.dtype = static_cast<DType>(d.int_value);
        }
        return make_tensor(std::move(t));
      }
      case TorchGlobal::kRebuildParameter:
      case TorchGlobal::kRebuildParameterWithState: {
        if (g == TorchGlobal::kRebuildParameter) arity(3, 3);
        else arity(4, 4);
        PyTensorRef t = out_.tensors[static_cast<size_t>(expect(a[0], PyKind::kTensor, name + " argument 1 (data)").int_value)];
        t.requires_grad = expect_int(a[1], name + " argument 2 (requires_grad)") != 0;
        t.is_parameter = true;
        return make_tensor(std::move(t));
      }
      case TorchGlobal::kParameterClass: {  // NEWOBJ Parameter(data[, requires_grad])
        arity(1, 2);
        PyTensorRef t = out_.tensors[static_cast<size_t>(expect(a[0], PyKind::kTensor, name + " argument 1 (data)").int_value)];
        t.requires_grad = a.size() < 2 || expect_int(a[1], name + " argument 2 (requires_grad)") != 0;
        t.is_parameter = true;
        return make_tensor(std::move(t));
      }
      case TorchGlobal::kRebuildFromTypeV2: {  // (func, new_type, args, state): func(*args), type is Tensor/Parameter
        arity(4, 4);
        const PyObject& type = obj(a[1]);
        if (type.kind != PyKind::kGlobal ||
            (type.global != TorchGlobal::kTensorClass && type.global != TorchGlobal::kParameterClass))
          unsupported(name + " with tensor subclass " + describe(a[1]) + " (only torch.Tensor and Parameter)");
        const PyObject& fn = obj(a[0]);
        if (fn.kind != PyKind::kGlobal || fn.global == TorchGlobal::kRebuildFromTypeV2)
          fail(name + " argument 1 must be a tensor rebuild function, found " + describe(a[0]));
        return call(a[0], a[2], false);
      }
      case TorchGlobal::kOrderedDict: {
        arity(0, 1);
        PyObject d;
        d.kind = PyKind::kDict;
        d.flag = true;
        const ObjId id = make(std::move(d));
        if (a.size() == 1) {  // OrderedDict(iterable of pairs)
          const PyObject& pairs = obj(a[0]);
          if (pairs.kind != PyKind::kList && pairs.kind != PyKind::kTuple)
            fail(name + " argument must be a list of pairs, found " + describe(a[0]));
          std::vector<ObjId> kv;
          for (ObjId p : pairs.items) {
            const PyObject& pair = obj(p);
            if (pair.kind != PyKind::kTuple || pair.items.size() != 2) fail(name + " items must be (key, value) pairs");
            kv.push_back(pair.items[0]);
            kv.push_back(pair.items[1]);
          }
          set_items(id, kv);
        }
        return id;
      }
      case TorchGlobal::kTorchSize: {
        arity(0, 1);
        return make_int_tuple(a.empty() ? Shape{} : expect_int_tuple(a[0], name + " argument"));
      }
      case TorchGlobal::kSet:
      case TorchGlobal::kFrozenSet: {
        arity(0, 1);
        std::vector<ObjId> elems;
        if (a.size() == 1) {
          const PyObject& src = obj(a[0]);
          if (src.kind != PyKind::kList && src.kind != PyKind::kTuple && src.kind != PyKind::kSet)
            fail(name + " argument must be a list, tuple or set, found " + describe(a[0]));
          elems = src.items;
        }
        return make_container(PyKind::kSet, std::move(elems));
      }
      case TorchGlobal::kComplex: {
        arity(0, 2);
        PyObject c;
        c.kind = PyKind::kComplex;
        double parts[2] = {0, 0};
        for (size_t i = 0; i < a.size(); ++i) {
          const PyObject& p = obj(a[i]);
          if (p.kind == PyKind::kFloat) parts[i] = p.real;
          else parts[i] = static_cast<double>(expect_int(a[i], name + " argument"));
        }
        c.real = parts[0];
        c.imag = parts[1];
        return make(std::move(c));
      }
      case TorchGlobal::kByteArray: {  // bytearray(), bytearray(b'...'), or protocol 2's bytearray('...', 'latin-1')
        arity(0, 2);
        if (a.size() == 2) return call_codecs_encode(name, a[0], a[1]);
        return make_text(PyKind::kBytes, a.empty() ? std::string() : expect(a[0], PyKind::kBytes, name + " argument").text);
      }
      case TorchGlobal::kCodecsEncode:  // protocol 2 pickles bytes as _codecs.encode(text, 'latin1')
        arity(2, 2);
        return call_codecs_encode(name, a[0], a[1]);
      case TorchGlobal::kDevice: {
        arity(1, 2);
        std::string repr = "device(type='" + expect(a[0], PyKind::kStr, name + " argument 1").text + "'";
        if (a.size() == 2) repr += ", index=" + std::to_string(expect_int(a[1], name + " argument 2"));
        PyObject d;
        d.kind = PyKind::kOpaque;
        d.text = repr + ")";
        return make(std::move(d));
      }
      case TorchGlobal::kTensorClass:
      case TorchGlobal::kStorageClass:
      case TorchGlobal::kDType:
        break;
    }
    unsupported("calling " + name + " is not supported");
  }
  // Latin-1 text (UTF-8 code points below 256) back to the bytes it stands for.
  ObjId call_codecs_encode(const std::string& name, ObjId text_id, ObjId codec_id) {
    const std::string text = expect(text_id, PyKind::kStr, name + " argument 1").text;
    const std::string codec = expect(codec_id, PyKind::kStr, name + " argument 2").text;
    if (codec != "latin1" && codec != "latin-1" && codec != "iso-8859-1")
      unsupported(name + " with codec '" + codec + "'", "only latin1");
    std::string bytes;
    for (size_t i = 0; i < text.size();) {  // valid UTF-8 was checked when the str was made
      const auto c = static_cast<unsigned char>(text[i]);
      if (c < 0x80) {
        bytes += static_cast<char>(c);
        i += 1;
      } else if ((c >> 5) == 0x6 && c <= 0xC3) {
        bytes += static_cast<char>(((c & 0x1F) << 6) | (static_cast<unsigned char>(text[i + 1]) & 0x3F));
        i += 2;
      } else {
        fail(name + " text has a character beyond latin1");
      }
    }
    return make_text(PyKind::kBytes, std::move(bytes));
  }
  ObjId make_int_tuple(const Shape& ints) {
    std::vector<ObjId> ids;
    for (int64_t v : ints) ids.push_back(make_int(v));
    return make_container(PyKind::kTuple, std::move(ids));
  }
  ObjId make_tensor(PyTensorRef t) {
    out_.tensors.push_back(std::move(t));
    PyObject o;
    o.kind = PyKind::kTensor;
    o.int_value = static_cast<int64_t>(out_.tensors.size() - 1);
    return make(std::move(o));
  }

  // BINPERSID: ('storage', storage_class, key, location, numel[, view_metadata]).
  ObjId persistent_load(ObjId pid) {
    const PyObject& t = obj(pid);
    if (t.kind != PyKind::kTuple || t.items.empty())
      fail("persistent id must be a non-empty tuple, found " + describe(pid));
    const PyObject& tag = obj(t.items[0]);
    const bool is_text = tag.kind == PyKind::kStr || tag.kind == PyKind::kBytes;
    if (is_text && tag.text == "module")
      unsupported("persistent id 'module' (pickled nn.Module source code)");
    if (!is_text || tag.text != "storage")
      fail("persistent id of type " + (is_text ? "'" + tag.text + "'" : describe(t.items[0])) + " (only 'storage')");
    if (t.items.size() != 5 && t.items.size() != 6)
      fail("storage persistent id has " + std::to_string(t.items.size()) + " fields, expected 5 (zip) or 6 (legacy)");
    PyStorageRef s;
    const PyObject& cls = obj(t.items[1]);
    if (cls.kind != PyKind::kGlobal || cls.global != TorchGlobal::kStorageClass)
      fail("storage persistent id names storage type " + describe(t.items[1]) + ", not a torch storage class");
    s.storage_class = cls.text.substr(cls.text.rfind('.') + 1);
    if (s.storage_class != "UntypedStorage") s.dtype = static_cast<DType>(cls.int_value);
    s.key = key_text(t.items[2], "storage key");
    const PyObject& loc = obj(t.items[3]);
    if (loc.kind != PyKind::kStr && loc.kind != PyKind::kBytes) fail("storage location must be a str, found " + describe(t.items[3]));
    s.location = loc.text;
    s.numel = expect_int(t.items[4], "storage size");
    if (s.numel < 0) fail("storage '" + s.key + "' has negative size " + std::to_string(s.numel));
    if (t.items.size() == 6 && obj(t.items[5]).kind != PyKind::kNone) {
      const PyObject& view = obj(t.items[5]);
      if (view.kind != PyKind::kTuple || view.items.size() != 3)
        fail("legacy storage view metadata must be (key, offset, size), found " + describe(t.items[5]));
      s.has_view = true;
      s.view_key = key_text(view.items[0], "storage view key");
      s.view_offset = expect_int(view.items[1], "storage view offset");
      s.view_numel = expect_int(view.items[2], "storage view size");
    }
    out_.storages.push_back(std::move(s));
    PyObject o;
    o.kind = PyKind::kStorage;
    o.int_value = static_cast<int64_t>(out_.storages.size() - 1);
    return make(std::move(o));
  }
  std::string key_text(ObjId id, const std::string& what) {
    const PyObject& k = obj(id);
    if (k.kind == PyKind::kStr || k.kind == PyKind::kBytes) return k.text;
    if (k.kind == PyKind::kInt) return std::to_string(k.int_value);
    fail(what + " must be a str, found " + describe(id));
  }

  void set_items(ObjId dict, std::span<const ObjId> kv) {
    for (size_t i = 0; i < kv.size(); i += 2) {
      const PyKind k = obj(kv[i]).kind;
      if (k == PyKind::kList || k == PyKind::kDict || k == PyKind::kSet)
        fail(std::string("unhashable dict key of type ") + py_kind_name(k));
    }
    add_items(dict, kv);
  }

  ObjId global_object(const std::string& module, const std::string& name) {
    std::string why_unsupported;
    const auto entry = resolve_global(module, name, &why_unsupported);
    const std::string full = module + "." + name;
    if (!entry) {
      if (!why_unsupported.empty()) unsupported("unsupported torch global '" + full + "'", why_unsupported);
      unsupported("forbidden global '" + full + "'", "only torch tensor-rebuild globals are allowed");
    }
    PyObject o;
    o.kind = PyKind::kGlobal;
    o.global = entry->kind;
    o.text = full;
    if (entry->dtype) o.int_value = static_cast<int64_t>(*entry->dtype);
    return make(std::move(o));
  }

  void step(uint8_t op) {
    switch (op) {
      case PROTO: {
        const uint8_t v = u8();
        if (v > kMaxProtocol) fail("pickle protocol " + std::to_string(v) + " (newest known is 5)");
        return;
      }
      case FRAME: {
        const uint64_t n = le(8, "FRAME length");
        if (n > in_.size() - pos_) fail("FRAME of " + std::to_string(n) + " bytes runs past the end of the data");
        return;
      }
      case STOP: {
        if (!marks_.empty()) fail("STOP with " + std::to_string(marks_.size()) + " unclosed MARK(s)");
        out_.root = pop("STOP");
        stopped_ = true;
        return;
      }
      case MARK:
        if (marks_.size() >= kPickleMaxMarkDepth) fail("more than " + std::to_string(kPickleMaxMarkDepth) + " open MARKs");
        marks_.push_back(stack_.size());
        return;
      case NONE: return push(make_scalar(PyKind::kNone));
      case NEWTRUE:
      case NEWFALSE: {
        PyObject o;
        o.kind = PyKind::kBool;
        o.flag = op == NEWTRUE;
        return push(make(std::move(o)));
      }
      case BININT: return push(make_int(static_cast<int32_t>(le(4, "BININT"))));
      case BININT1: return push(make_int(static_cast<int64_t>(le(1, "BININT1"))));
      case BININT2: return push(make_int(static_cast<int64_t>(le(2, "BININT2"))));
      case LONG1: {
        const uint64_t n = le(1, "LONG1 length");
        const auto b = take(n, "LONG1");
        if (n <= 8) {
          uint64_t v = 0;
          for (uint64_t i = n; i-- > 0;) v = (v << 8) | std::to_integer<uint64_t>(b[i]);
          if (n > 0 && n < 8 && (std::to_integer<uint8_t>(b[n - 1]) & 0x80)) v |= ~uint64_t{0} << (8 * n);
          return push(make_int(static_cast<int64_t>(v)));
        }
        return push(make_text(PyKind::kBigInt, std::string(reinterpret_cast<const char*>(b.data()), b.size())));
      }
      case BINFLOAT: {
        const auto b = take(8, "BINFLOAT");  // big-endian IEEE double
        uint64_t bits = 0;
        for (size_t i = 0; i < 8; ++i) bits = (bits << 8) | std::to_integer<uint64_t>(b[i]);
        PyObject o;
        o.kind = PyKind::kFloat;
        o.real = std::bit_cast<double>(bits);
        return push(make(std::move(o)));
      }
      case SHORT_BINUNICODE: return push(make_text(PyKind::kStr, take_string(le(1, "SHORT_BINUNICODE length"), "SHORT_BINUNICODE")));
      case BINUNICODE: return push(make_text(PyKind::kStr, take_string(le(4, "BINUNICODE length"), "BINUNICODE")));
      case BINUNICODE8: return push(make_text(PyKind::kStr, take_string(le(8, "BINUNICODE8 length"), "BINUNICODE8")));
      // Python 2 str: torch.load decodes it with encoding='utf-8'.
      case SHORT_BINSTRING: return push(make_text(PyKind::kStr, take_string(le(1, "SHORT_BINSTRING length"), "SHORT_BINSTRING")));
      case BINSTRING: {
        const int32_t n = static_cast<int32_t>(le(4, "BINSTRING length"));
        if (n < 0) fail("BINSTRING with negative length " + std::to_string(n));
        return push(make_text(PyKind::kStr, take_string(static_cast<uint64_t>(n), "BINSTRING")));
      }
      case SHORT_BINBYTES: return push(make_text(PyKind::kBytes, take_string(le(1, "SHORT_BINBYTES length"), "SHORT_BINBYTES")));
      case BINBYTES: return push(make_text(PyKind::kBytes, take_string(le(4, "BINBYTES length"), "BINBYTES")));
      case BYTEARRAY8: return push(make_text(PyKind::kBytes, take_string(le(8, "BYTEARRAY8 length"), "BYTEARRAY8")));
      case EMPTY_TUPLE: return push(make_container(PyKind::kTuple, {}));
      case EMPTY_LIST: return push(make_container(PyKind::kList, {}));
      case EMPTY_DICT: return push(make_container(PyKind::kDict, {}));
      case EMPTY_SET: return push(make_container(PyKind::kSet, {}));
      case TUPLE: return push(make_container(PyKind::kTuple, pop_mark("TUPLE")));
      case FROZENSET: return push(make_container(PyKind::kSet, pop_mark("FROZENSET")));
      case TUPLE1:
      case TUPLE2:
      case TUPLE3: {
        const size_t n = op - TUPLE1 + 1;
        std::vector<ObjId> items(n);
        for (size_t i = n; i-- > 0;) items[i] = pop(op == TUPLE1 ? "TUPLE1" : op == TUPLE2 ? "TUPLE2" : "TUPLE3");
        return push(make_container(PyKind::kTuple, std::move(items)));
      }
      case APPEND: {
        const ObjId item = pop("APPEND");
        const ObjId list = top("APPEND");
        if (obj(list).kind != PyKind::kList) fail("APPEND to " + describe(list) + " (only lists)");
        return add_items(list, std::span<const ObjId>(&item, 1));
      }
      case APPENDS:
      case ADDITEMS: {
        const char* name = op == APPENDS ? "APPENDS" : "ADDITEMS";
        const auto items = pop_mark(name);
        const ObjId target = top(name);
        const PyKind want = op == APPENDS ? PyKind::kList : PyKind::kSet;
        if (obj(target).kind != want) fail(std::string(name) + " to " + describe(target));
        return add_items(target, items);
      }
      case SETITEM: {
        const ObjId value = pop("SETITEM");
        const ObjId key = pop("SETITEM");
        const ObjId dict = top("SETITEM");
        if (obj(dict).kind != PyKind::kDict) fail("SETITEM on " + describe(dict) + " (only dicts)");
        const ObjId kv[2] = {key, value};
        return set_items(dict, kv);
      }
      case SETITEMS: {
        const auto items = pop_mark("SETITEMS");
        if (items.size() % 2 != 0) fail("SETITEMS with an odd number (" + std::to_string(items.size()) + ") of values");
        const ObjId dict = top("SETITEMS");
        if (obj(dict).kind != PyKind::kDict) fail("SETITEMS on " + describe(dict) + " (only dicts)");
        return set_items(dict, items);
      }
      case BINPUT: return memo_put(le(1, "BINPUT"));
      case LONG_BINPUT: return memo_put(le(4, "LONG_BINPUT"));
      case MEMOIZE: return memo_put(memo_count_);
      case BINGET: return memo_get(le(1, "BINGET"));
      case LONG_BINGET: return memo_get(le(4, "LONG_BINGET"));
      case GLOBAL: {
        const std::string module = line("GLOBAL module");
        const std::string name = line("GLOBAL name");
        return push(global_object(module, name));
      }
      case STACK_GLOBAL: {
        const ObjId name = pop("STACK_GLOBAL");
        const ObjId module = pop("STACK_GLOBAL");
        const std::string m = expect(module, PyKind::kStr, "STACK_GLOBAL module").text;
        const std::string n = expect(name, PyKind::kStr, "STACK_GLOBAL name").text;
        return push(global_object(m, n));
      }
      case BINPERSID: {
        const ObjId pid = pop("BINPERSID");
        return push(persistent_load(pid));
      }
      case REDUCE: {
        const ObjId args = pop("REDUCE");
        const ObjId callee = top("REDUCE");
        const ObjId result = call(callee, args, false);
        stack_.back() = result;
        return;
      }
      case NEWOBJ: {
        const ObjId args = pop("NEWOBJ");
        const ObjId cls = top("NEWOBJ");
        const PyObject& c = obj(cls);
        const bool allowed = c.kind == PyKind::kGlobal &&
                             (c.global == TorchGlobal::kOrderedDict || c.global == TorchGlobal::kParameterClass ||
                              c.global == TorchGlobal::kSet || c.global == TorchGlobal::kFrozenSet ||
                              c.global == TorchGlobal::kTorchSize || c.global == TorchGlobal::kComplex ||
                              c.global == TorchGlobal::kByteArray);
        if (!allowed) {
          if (c.kind == PyKind::kGlobal) unsupported("NEWOBJ of " + describe(cls) + " (not an allowed class)");
          fail("NEWOBJ on " + describe(cls) + ", which is not a class");
        }
        const ObjId result = call(cls, args, true);
        stack_.back() = result;
        return;
      }
      case BUILD: {
        const ObjId state = pop("BUILD");
        const ObjId target = top("BUILD");
        const PyKind k = obj(target).kind;
        if (k == PyKind::kDict) obj(target).build_state = state;  // an OrderedDict's attributes (_metadata)
        else if (k != PyKind::kTensor) fail("BUILD on " + describe(target) + " (only OrderedDict, Tensor, Parameter)");
        return;
      }
      default: {
        char hex[8];
        std::snprintf(hex, sizeof hex, "0x%02x", op);
        fail(std::string("unknown or unsupported opcode ") + hex);
      }
    }
  }

  std::span<const std::byte> in_;
  const PickleSource& source_;
  size_t pos_ = 0, op_start_ = 0;
  bool stopped_ = false;
  std::vector<ObjId> stack_;
  std::vector<size_t> marks_;
  std::vector<ObjId> memo_;
  uint64_t memo_count_ = 0;
  PickleResult out_;
};

}  // namespace

const char* py_kind_name(PyKind k) {
  switch (k) {
    case PyKind::kNone: return "NoneType";
    case PyKind::kBool: return "bool";
    case PyKind::kInt:
    case PyKind::kBigInt: return "int";
    case PyKind::kFloat: return "float";
    case PyKind::kComplex: return "complex";
    case PyKind::kStr: return "str";
    case PyKind::kBytes: return "bytes";
    case PyKind::kTuple: return "tuple";
    case PyKind::kList: return "list";
    case PyKind::kDict: return "dict";
    case PyKind::kSet: return "set";
    case PyKind::kGlobal: return "global";
    case PyKind::kStorage: return "storage";
    case PyKind::kTensor: return "Tensor";
    case PyKind::kOpaque: return "object";
  }
  return "object";
}

PickleResult parse_pickle(std::span<const std::byte> bytes, const PickleSource& source) {
  return Machine(bytes, source).run();
}

}  // namespace hx
