// MappedFile's file-span lookup and the kernel-copy / pread paths built on it (AtomicOutputFile::write, SHA-256):
// they must give exactly the bytes the mapping holds, and fall back cleanly for memory that is not a mapping.
#include <gtest/gtest.h>

#include <cstring>
#include <fstream>
#include <iterator>
#include <vector>

#include "formats/errors.h"
#include "formats/mapped_file.h"
#include "formats/sha256.h"
#include "formats/tensor.h"
#include "tests/support/test_support.h"

namespace hx {
namespace {

using test::TempDir;

// 3 MiB + 5: above the 1 MiB kernel-copy threshold, several pread chunks, and not a multiple of a page.
constexpr size_t kFileBytes = (size_t{3} << 20) + 5;

std::vector<std::byte> pattern(size_t n) {
  std::vector<std::byte> v(n);
  uint32_t x = 12345;
  for (auto& b : v) {
    x = x * 1664525u + 1013904223u;
    b = static_cast<std::byte>(x >> 24);
  }
  return v;
}

std::string write_file(const TempDir& dir, const std::vector<std::byte>& bytes) {
  const std::string path = dir.path() + "/data.bin";
  std::ofstream(path, std::ios::binary).write(reinterpret_cast<const char*>(bytes.data()),
                                              static_cast<std::streamsize>(bytes.size()));
  return path;
}

std::vector<std::byte> read_all(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::vector<char> c((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  std::vector<std::byte> out(c.size());
  std::memcpy(out.data(), c.data(), c.size());
  return out;
}

TEST(MappedFileSpan, FindsTheFileAndOffsetOfBytesInsideAMapping) {
  TempDir dir;
  const auto path = write_file(dir, pattern(kFileBytes));
  auto file = MappedFile::open(path);
  const auto inside = mapped_file_span(file->bytes().subspan(4096 + 7, 1000));
  ASSERT_TRUE(inside.has_value());
  EXPECT_EQ(inside->fd, file->fd());
  EXPECT_EQ(inside->offset, 4096u + 7u);
  EXPECT_EQ(*inside->path, path);
  // Straddling the end of the mapping, or memory that is no mapping at all: no file span.
  const std::span<const std::byte> past_end(file->bytes().data() + kFileBytes - 10, 20);
  EXPECT_FALSE(mapped_file_span(past_end).has_value());
  const auto heap = pattern(100);
  EXPECT_FALSE(mapped_file_span(heap).has_value());
}

TEST(MappedFileSpan, ForgetsAMappingOnceItIsClosed) {
  TempDir dir;
  const auto path = write_file(dir, pattern(kFileBytes));
  auto file = MappedFile::open(path);
  const auto bytes = file->bytes();
  ASSERT_TRUE(mapped_file_span(bytes).has_value());
  file.reset();
  EXPECT_FALSE(mapped_file_span(bytes.subspan(0, 1)).has_value());
}

TEST(AtomicOutputFileWrite, KernelCopyAndMemoryWritesGiveTheSameBytes) {
  TempDir dir;
  const auto data = pattern(kFileBytes);
  auto file = MappedFile::open(write_file(dir, data));
  const std::string out_path = dir.path() + "/out.bin";
  AtomicOutputFile out(out_path, false);
  out.write(file->bytes().subspan(0, 100));                 // small: written from memory
  out.write(file->bytes().subspan(100, kFileBytes - 100));  // large, mapped: copied by the kernel
  out.write(std::span<const std::byte>(data).subspan(0, (size_t{2} << 20)));  // large, heap: from memory
  EXPECT_EQ(out.position(), kFileBytes + (size_t{2} << 20));
  out.commit();
  auto expected = data;
  expected.insert(expected.end(), data.begin(), data.begin() + (2 << 20));
  EXPECT_EQ(read_all(out_path), expected);
}

TEST(Sha256FileBacked, PreadPathHashesLikeTheBytesThemselves) {
  TempDir dir;
  const auto data = pattern(kFileBytes);
  auto file = MappedFile::open(write_file(dir, data));
  const int64_t elements = static_cast<int64_t>((kFileBytes - 5) / 4);
  TensorView view = TensorView::contiguous(DType::kF32, {elements}, Storage{file->bytes().subspan(5), file});
  EXPECT_EQ(to_hex(sha256_tensor(view)),
            to_hex(sha256_bytes(std::span<const std::byte>(data).subspan(5, static_cast<size_t>(elements) * 4))));
}

TEST(ForEachStoredChunk, FileBackedViewsComeInWholeChunksWithTheMappingsBytes) {
  TempDir dir;
  const auto data = pattern(kFileBytes);
  auto file = MappedFile::open(write_file(dir, data));
  const int64_t elements = static_cast<int64_t>((kFileBytes - 1) / 2);
  const TensorView view = TensorView::contiguous(DType::kBF16, {elements}, Storage{file->bytes().subspan(1), file});
  std::vector<std::byte> seen;
  std::vector<size_t> sizes;
  for_each_stored_chunk(view, 4096, [&](std::span<const std::byte> c) {
    sizes.push_back(c.size());
    seen.insert(seen.end(), c.begin(), c.end());
  });
  // Every chunk but the last is a whole 1 MiB read (converters rely on whole elements per chunk).
  ASSERT_GE(sizes.size(), 2u);
  for (size_t i = 0; i + 1 < sizes.size(); ++i) EXPECT_EQ(sizes[i], size_t{1} << 20);
  EXPECT_EQ(seen, std::vector<std::byte>(data.begin() + 1, data.begin() + 1 + elements * 2));
}

}  // namespace
}  // namespace hx
