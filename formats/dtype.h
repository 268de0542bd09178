// The one dtype table of hxforge: every safetensors dtype and every torch storage dtype.
//
// Design goals: one row per dtype holding every name it goes by (safetensors, torch attribute, legacy storage
// class) and its size in bits, so readers, writers and the CLI never keep their own lists. Sub-byte dtypes (F4,
// F6_*) are sized in bits; a tensor of them must fill whole bytes. Non-goals: arithmetic on exotic dtypes (complex,
// quantized torch storages) — they are carried losslessly, not computed with.
#pragma once

#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>

namespace hx {

enum class DType : uint8_t {
  // The 22 safetensors dtypes.
  kBool, kU8, kI8, kI16, kU16, kI32, kU32, kI64, kU64,
  kF16, kBF16, kF32, kF64, kC64,
  kF8_E4M3, kF8_E5M2, kF8_E4M3FNUZ, kF8_E5M2FNUZ, kF8_E8M0,
  kF4, kF6_E2M3, kF6_E3M2,
  // torch storage dtypes that safetensors has no name for: carried by .pth files only.
  kC32, kC128, kQInt8, kQUInt8, kQInt32, kQUInt4x2, kQUInt2x4,
  kBits8, kBits16, kBits1x8, kBits2x4, kBits4x2,
  kCount  // sentinel
};

enum class DKind : uint8_t { kBool, kSigned, kUnsigned, kFloat, kComplex, kQuantized, kBits };

struct DTypeInfo {
  DType id;
  std::string_view name;            // safetensors name, or hxforge's own name for torch-only dtypes
  bool in_safetensors;              // whether `name` is one of the 22 safetensors dtypes
  std::string_view torch_name;      // attribute of the torch module ("float32"), "" if torch has none
  std::string_view legacy_storage;  // legacy typed storage class ("FloatStorage"), "" if none
  uint8_t bits;                     // bits per element
  DKind kind;
};

const DTypeInfo& dtype_info(DType t);
std::span<const DTypeInfo> all_dtypes();

inline std::string_view dtype_name(DType t) { return dtype_info(t).name; }
std::optional<DType> dtype_from_name(std::string_view safetensors_or_own_name);
std::optional<DType> dtype_from_torch_name(std::string_view torch_attribute);  // "float32", "float", "half", …
std::optional<DType> dtype_from_legacy_storage(std::string_view storage_class);  // "FloatStorage", …

// Bytes for `elements` elements, or nullopt when the bit count overflows 64 bits or is not a whole number of bytes.
std::optional<uint64_t> dtype_bytes_for(DType t, uint64_t elements);

// Bytes of one element for dtypes of at least 8 bits; 0 for sub-byte dtypes (F4, F6_*).
inline uint32_t dtype_element_size(DType t) {
  const uint8_t b = dtype_info(t).bits;
  return (b % 8 == 0) ? b / 8 : 0;
}

inline bool is_float(DType t) { return dtype_info(t).kind == DKind::kFloat; }

}  // namespace hx
