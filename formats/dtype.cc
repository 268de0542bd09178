#include "formats/dtype.h"

#include <array>
#include <cstring>

#include "formats/errors.h"

namespace hx {
namespace {

using K = DKind;
constexpr std::array<DTypeInfo, static_cast<size_t>(DType::kCount)> kTable = {{
    // id                 name            st     torch               legacy storage          bits kind
    {DType::kBool,        "BOOL",         true,  "bool",             "BoolStorage",          8,   K::kBool},
    {DType::kU8,          "U8",           true,  "uint8",            "ByteStorage",          8,   K::kUnsigned},
    {DType::kI8,          "I8",           true,  "int8",             "CharStorage",          8,   K::kSigned},
    {DType::kI16,         "I16",          true,  "int16",            "ShortStorage",         16,  K::kSigned},
    {DType::kU16,         "U16",          true,  "uint16",           "",                     16,  K::kUnsigned},
    {DType::kI32,         "I32",          true,  "int32",            "IntStorage",           32,  K::kSigned},
    {DType::kU32,         "U32",          true,  "uint32",           "",                     32,  K::kUnsigned},
    {DType::kI64,         "I64",          true,  "int64",            "LongStorage",          64,  K::kSigned},
    {DType::kU64,         "U64",          true,  "uint64",           "",                     64,  K::kUnsigned},
    {DType::kF16,         "F16",          true,  "float16",          "HalfStorage",          16,  K::kFloat},
    {DType::kBF16,        "BF16",         true,  "bfloat16",         "BFloat16Storage",      16,  K::kFloat},
    {DType::kF32,         "F32",          true,  "float32",          "FloatStorage",         32,  K::kFloat},
    {DType::kF64,         "F64",          true,  "float64",          "DoubleStorage",        64,  K::kFloat},
    {DType::kC64,         "C64",          true,  "complex64",        "ComplexFloatStorage",  64,  K::kComplex},
    {DType::kF8_E4M3,     "F8_E4M3",      true,  "float8_e4m3fn",    "",                     8,   K::kFloat},
    {DType::kF8_E5M2,     "F8_E5M2",      true,  "float8_e5m2",      "",                     8,   K::kFloat},
    {DType::kF8_E4M3FNUZ, "F8_E4M3FNUZ",  true,  "float8_e4m3fnuz",  "",                     8,   K::kFloat},
    {DType::kF8_E5M2FNUZ, "F8_E5M2FNUZ",  true,  "float8_e5m2fnuz",  "",                     8,   K::kFloat},
    {DType::kF8_E8M0,     "F8_E8M0",      true,  "float8_e8m0fnu",   "",                     8,   K::kFloat},
    {DType::kF4,          "F4",           true,  "",                 "",                     4,   K::kFloat},
    {DType::kF6_E2M3,     "F6_E2M3",      true,  "",                 "",                     6,   K::kFloat},
    {DType::kF6_E3M2,     "F6_E3M2",      true,  "",                 "",                     6,   K::kFloat},
    {DType::kC32,         "C32",          false, "complex32",        "",                     32,  K::kComplex},
    {DType::kC128,        "C128",         false, "complex128",       "ComplexDoubleStorage", 128, K::kComplex},
    {DType::kQInt8,       "QINT8",        false, "qint8",            "QInt8Storage",         8,   K::kQuantized},
    {DType::kQUInt8,      "QUINT8",       false, "quint8",           "QUInt8Storage",        8,   K::kQuantized},
    {DType::kQInt32,      "QINT32",       false, "qint32",           "QInt32Storage",        32,  K::kQuantized},
    {DType::kQUInt4x2,    "QUINT4X2",     false, "quint4x2",         "QUInt4x2Storage",      8,   K::kQuantized},
    {DType::kQUInt2x4,    "QUINT2X4",     false, "quint2x4",         "QUInt2x4Storage",      8,   K::kQuantized},
    {DType::kBits8,       "BITS8",        false, "bits8",            "",                     8,   K::kBits},
    {DType::kBits16,      "BITS16",       false, "bits16",           "",                     16,  K::kBits},
    {DType::kBits1x8,     "BITS1X8",      false, "bits1x8",          "",                     8,   K::kBits},
    {DType::kBits2x4,     "BITS2X4",      false, "bits2x4",          "",                     8,   K::kBits},
    {DType::kBits4x2,     "BITS4X2",      false, "bits4x2",          "",                     8,   K::kBits},
}};

constexpr bool table_is_indexed_by_id() {
  for (size_t i = 0; i < kTable.size(); ++i)
    if (static_cast<size_t>(kTable[i].id) != i) return false;
  return true;
}
static_assert(table_is_indexed_by_id(), "dtype table rows must be in DType order");

// torch's short aliases (torch.float is torch.float32, …); pickles normally carry the canonical names.
struct Alias {
  std::string_view alias;
  DType id;
};
constexpr Alias kTorchAliases[] = {
    {"float", DType::kF32},   {"double", DType::kF64}, {"half", DType::kF16},  {"long", DType::kI64},
    {"int", DType::kI32},     {"short", DType::kI16},  {"cfloat", DType::kC64}, {"cdouble", DType::kC128},
    {"chalf", DType::kC32},
};

}  // namespace

const DTypeInfo& dtype_info(DType t) {
  const auto i = static_cast<size_t>(t);
  if (i >= kTable.size()) throw UnsupportedError("dtype id " + std::to_string(i) + " is not in the dtype table");
  return kTable[i];
}

std::span<const DTypeInfo> all_dtypes() { return kTable; }

std::optional<DType> dtype_from_name(std::string_view name) {
  for (const auto& row : kTable)
    if (row.name == name) return row.id;
  return std::nullopt;
}

std::optional<DType> dtype_from_torch_name(std::string_view torch_attribute) {
  for (const auto& row : kTable)
    if (!row.torch_name.empty() && row.torch_name == torch_attribute) return row.id;
  for (const auto& a : kTorchAliases)
    if (a.alias == torch_attribute) return a.id;
  return std::nullopt;
}

std::optional<DType> dtype_from_legacy_storage(std::string_view storage_class) {
  for (const auto& row : kTable)
    if (!row.legacy_storage.empty() && row.legacy_storage == storage_class) return row.id;
  return std::nullopt;
}

std::optional<uint64_t> dtype_bytes_for(DType t, uint64_t elements) {
  const uint64_t bits = dtype_info(t).bits;
  uint64_t total_bits = 0;
  if (__builtin_mul_overflow(elements, bits, &total_bits)) return std::nullopt;
  if (total_bits % 8 != 0) return std::nullopt;
  return total_bits / 8;
}

std::string errno_text(int err) {
  char buf[256];
  // GNU strerror_r may return a static string instead of filling buf.
  const char* text = strerror_r(err, buf, sizeof buf);
  return std::string(text) + " (errno " + std::to_string(err) + ")";
}

}  // namespace hx
