// A safe pickle virtual machine for PyTorch checkpoints, and the small encoder the .pth writer uses.
//
// Design goals: read exactly what `torch.load(weights_only=True)` reads and nothing else. The machine implements
// the protocol-2 opcodes torch's weights-only unpickler accepts (plus BINSTRING/BINBYTES/SHORT_BINBYTES and the
// protocol 4/5 opcodes FRAME, MEMOIZE, SHORT_BINUNICODE, BINUNICODE8, STACK_GLOBAL, EMPTY_SET/ADDITEMS/FROZENSET,
// BYTEARRAY8).
// GLOBAL resolves through a fixed allowlist of torch tensor-rebuild callables, storage classes, dtypes and a few
// builtins; any other global is refused by name. Nothing is ever executed: REDUCE and NEWOBJ only *describe* what
// an allowlisted callable would build (a tensor record, an OrderedDict, a tuple for torch.Size, …), and BINPERSID
// turns torch's storage persistent ids into storage records that the .pth reader resolves to bytes. Hostile
// streams fail with FormatError / UnsupportedError naming the file, the record and the byte offset: every length is
// checked against the remaining bytes, and the stack, marks, memo, object count, container sizes and nesting depth
// have named limits. Objects live in one arena addressed by index, so cycles (a list appended to itself) cannot
// leak and deep structures are destroyed without recursion.
// Non-goals: running arbitrary pickles, protocol 0/1 text opcodes, user-extensible allowlists, quantized / sparse
// / nested / subclass tensors (their rebuild globals are recognised and refused with a specific message).
#pragma once

#include <cstddef>
#include <cstdint>
#include <deque>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "formats/dtype.h"
#include "formats/tensor.h"

namespace hx {

// Limits on what one pickle may build. A real state dict of 100k tensors stays far below each of them.
inline constexpr size_t kPickleMaxStackSize = size_t{1} << 20;         // values on the stack, all marks included
inline constexpr size_t kPickleMaxMarkDepth = size_t{1} << 16;         // open MARKs
inline constexpr uint64_t kPickleMaxMemoIndex = uint64_t{1} << 22;     // BINPUT/LONG_BINPUT/MEMOIZE index bound
inline constexpr size_t kPickleMaxObjects = size_t{1} << 22;           // objects created in total
inline constexpr size_t kPickleMaxContainerSize = size_t{1} << 24;     // elements of one tuple/list/dict/set
inline constexpr uint32_t kPickleMaxNesting = 256;                     // containers inside containers
inline constexpr size_t kPickleMaxGlobalNameLength = 256;              // bytes of a GLOBAL module or name line

using ObjId = uint32_t;

enum class PyKind : uint8_t {
  kNone, kBool, kInt, kBigInt, kFloat, kComplex, kStr, kBytes,
  kTuple, kList, kDict, kSet,
  kGlobal,   // an allowlisted global (a class, function or dtype), not called
  kStorage,  // a storage persistent id: index into PickleResult::storages
  kTensor,   // a rebuilt tensor or parameter: index into PickleResult::tensors
  kOpaque,   // an allowlisted value hxforge only describes (torch.device): `text` holds its repr
};
const char* py_kind_name(PyKind k);  // Python type names: "NoneType", "int", "str", "tuple", "Tensor", …

// What an allowlisted global stands for.
enum class TorchGlobal : uint8_t {
  kOrderedDict, kRebuildTensor, kRebuildTensorV2, kRebuildTensorV3, kRebuildParameter,
  kRebuildParameterWithState, kRebuildFromTypeV2, kTorchSize, kTensorClass, kParameterClass,
  kStorageClass, kDType, kDevice, kCodecsEncode, kSet, kFrozenSet, kComplex, kByteArray,
};

struct PyObject {
  PyKind kind = PyKind::kNone;
  bool flag = false;      // kBool: the value; kDict: an OrderedDict
  TorchGlobal global{};   // kGlobal
  uint16_t depth = 0;     // 0 for scalars, 1 + the deepest element for containers (as built)
  int64_t int_value = 0;  // kInt; kStorage/kTensor: index; kGlobal of a dtype or typed storage class: DType
  double real = 0, imag = 0;  // kFloat (real), kComplex
  std::string text;       // kStr (UTF-8), kBytes, kBigInt (two's complement, little-endian), kGlobal ("module.name")
  std::vector<ObjId> items;  // tuple/list/set elements; dict: key0, value0, key1, value1, … in insertion order
  std::optional<ObjId> build_state;  // the state a BUILD gave an OrderedDict (a state dict's _metadata)
};

// A storage persistent id: ('storage', storage_class, key, location, numel[, view_metadata]).
struct PyStorageRef {
  std::optional<DType> dtype;  // the typed storage's dtype; nullopt for torch.UntypedStorage (numel counts bytes)
  std::string storage_class;   // "FloatStorage", "UntypedStorage", …
  std::string key;             // the record name under data/ (zip) or the storage key (legacy)
  std::string location;        // "cpu", "cuda:0", … (informative only; bytes are read regardless)
  int64_t numel = 0;
  bool has_view = false;  // legacy files: the storage is a slice of the root storage `key`
  std::string view_key;
  int64_t view_offset = 0, view_numel = 0;  // in elements of dtype
};

// A tensor as _rebuild_tensor{,_v2,_v3} / _rebuild_parameter describe it.
struct PyTensorRef {
  ObjId storage = 0;            // a kStorage object
  std::optional<DType> dtype;   // explicit dtype of _rebuild_tensor_v3; otherwise the storage's
  int64_t storage_offset = 0;   // in elements
  Shape shape, strides;         // strides in elements
  bool requires_grad = false;
  bool is_parameter = false;
};

struct PickleResult {
  std::deque<PyObject> objects;  // a deque: growth never moves objects, so references to them stay valid
  std::vector<PyStorageRef> storages;
  std::vector<PyTensorRef> tensors;
  ObjId root = 0;
  size_t consumed = 0;  // bytes up to and including STOP (legacy files hold several pickles back to back)

  const PyObject& at(ObjId id) const { return objects.at(id); }
};

// Where a pickle comes from, for messages: "<file>: <problem> in <record> (byte N)".
struct PickleSource {
  std::string file;    // "model.pth"
  std::string record;  // "archive/data.pkl", "the object pickle"
};

// Runs the machine over `bytes` up to the first STOP. Throws FormatError for malformed or hostile streams and
// UnsupportedError for globals outside the allowlist (naming them).
PickleResult parse_pickle(std::span<const std::byte> bytes, const PickleSource& source);

bool is_valid_utf8(std::string_view s);

// Emits protocol-2 pickles the way torch.save does for state dicts (see pth.cc): globals are memoized and reused.
class PickleEncoder {
 public:
  PickleEncoder();  // writes PROTO 2
  void global(std::string_view module, std::string_view name);
  void mark();
  void tuple_from_mark();           // TUPLE
  void tuple(size_t n);             // EMPTY_TUPLE / TUPLE1-3 over the last n values (n <= 3)
  void int_tuple(const std::vector<int64_t>& values);  // any length
  void integer(int64_t v);          // BININT1 / BININT2 / BININT / LONG1
  void str(std::string_view utf8);  // BINUNICODE
  void boolean(bool v);
  void none();
  void empty_dict();
  void setitems();                  // SETITEMS (pairs since the last mark)
  void reduce();
  void binpersid();
  std::vector<std::byte> finish();  // STOP

 private:
  void op(uint8_t opcode);
  void raw(const void* p, size_t n);
  std::vector<std::byte> out_;
  std::vector<std::pair<std::string, uint32_t>> global_memo_;
  uint32_t next_memo_ = 0;
};

}  // namespace hx
