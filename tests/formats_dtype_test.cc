#include <gtest/gtest.h>

#include <set>

#include "formats/dtype.h"

namespace hx {
namespace {

TEST(DTypeTable, HasAllTwentyTwoSafetensorsDtypes) {
  const std::set<std::string_view> expected = {"BOOL", "F4", "F6_E2M3", "F6_E3M2", "U8", "I8", "F8_E5M2", "F8_E4M3",
                                               "F8_E8M0", "F8_E4M3FNUZ", "F8_E5M2FNUZ", "I16", "U16", "F16", "BF16",
                                               "I32", "U32", "F32", "C64", "F64", "I64", "U64"};
  std::set<std::string_view> found;
  for (const auto& row : all_dtypes())
    if (row.in_safetensors) {
      found.insert(row.name);
    }
  EXPECT_EQ(found, expected);
}

TEST(DTypeTable, NamesAreUniqueAndResolve) {
  std::set<std::string_view> names, torch_names;
  for (const auto& row : all_dtypes()) {
    EXPECT_TRUE(names.insert(row.name).second) << row.name;
    EXPECT_EQ(dtype_from_name(row.name), row.id);
    if (!row.torch_name.empty()) {
      EXPECT_TRUE(torch_names.insert(row.torch_name).second) << row.torch_name;
      EXPECT_EQ(dtype_from_torch_name(row.torch_name), row.id);
    }
    if (!row.legacy_storage.empty()) {
      EXPECT_EQ(dtype_from_legacy_storage(row.legacy_storage), row.id);
    }
  }
  EXPECT_FALSE(dtype_from_name("F5").has_value());  // safetensors has no F5: FP5 payloads are U8 + metadata
}

TEST(DTypeTable, TorchStorageTypes) {
  EXPECT_EQ(dtype_from_torch_name("float8_e4m3fn"), DType::kF8_E4M3);
  EXPECT_EQ(dtype_from_torch_name("float8_e5m2"), DType::kF8_E5M2);
  EXPECT_EQ(dtype_from_torch_name("float"), DType::kF32);
  EXPECT_EQ(dtype_from_legacy_storage("BFloat16Storage"), DType::kBF16);
  EXPECT_EQ(dtype_from_legacy_storage("ByteStorage"), DType::kU8);
  EXPECT_EQ(dtype_from_legacy_storage("CharStorage"), DType::kI8);
  EXPECT_EQ(dtype_from_torch_name("uint16"), DType::kU16);
  EXPECT_EQ(dtype_from_torch_name("uint64"), DType::kU64);
}

TEST(DTypeTable, ByteCountsWithOverflowAndSubByteChecks) {
  EXPECT_EQ(dtype_bytes_for(DType::kBF16, 2'350'000'000ULL), 4'700'000'000ULL);  // a PLE-sized table
  EXPECT_EQ(dtype_bytes_for(DType::kF4, 6), 3u);
  EXPECT_FALSE(dtype_bytes_for(DType::kF4, 3).has_value());       // 12 bits: not whole bytes
  EXPECT_EQ(dtype_bytes_for(DType::kF6_E3M2, 4), 3u);
  EXPECT_FALSE(dtype_bytes_for(DType::kF64, UINT64_MAX / 4).has_value());  // overflow
}

}  // namespace
}  // namespace hx
