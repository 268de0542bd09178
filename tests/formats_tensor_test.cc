#include <gtest/gtest.h>

#include <atomic>
#include <cstring>
#include <numeric>

#include "formats/errors.h"
#include "formats/parallel.h"
#include "formats/sha256.h"
#include "formats/tensor.h"

namespace hx {
namespace {

Storage iota_storage(size_t floats) {
  std::vector<float> values(floats);
  std::iota(values.begin(), values.end(), 0.0f);
  std::vector<std::byte> bytes(floats * sizeof(float));
  std::memcpy(bytes.data(), values.data(), bytes.size());
  return Storage::owned(std::move(bytes));
}

std::vector<float> as_floats(const std::vector<std::byte>& bytes) {
  std::vector<float> out(bytes.size() / sizeof(float));
  std::memcpy(out.data(), bytes.data(), bytes.size());
  return out;
}

TEST(TensorView, ContiguousStridesAndBytes) {
  const auto v = TensorView::contiguous(DType::kF32, {3, 4}, iota_storage(12));
  EXPECT_EQ(v.strides, (Shape{4, 1}));
  EXPECT_TRUE(v.is_contiguous());
  EXPECT_EQ(v.numel(), 12u);
  EXPECT_EQ(v.nbytes(), 48u);
  EXPECT_EQ(contiguous_strides({0, 4}), (Shape{4, 1}));
  EXPECT_EQ(contiguous_strides({}), (Shape{}));
}

TEST(TensorView, TransposedViewStreamsInCOrder) {
  TensorView v;  // a [3, 2] transpose of a [2, 3] storage: element (i, j) is storage[j * 3 + i]
  v.dtype = DType::kF32;
  v.shape = {3, 2};
  v.strides = {1, 3};
  v.storage = iota_storage(6);
  EXPECT_FALSE(v.is_contiguous());
  check_view_in_bounds(v, "t");
  EXPECT_EQ(as_floats(to_contiguous_bytes(v)), (std::vector<float>{0, 3, 1, 4, 2, 5}));
}

TEST(TensorView, OffsetViewAndSmallChunksGiveSameBytes) {
  TensorView v;  // rows 1..2 of a [4, 5] matrix, columns 1..3 (stride 5, offset 6)
  v.dtype = DType::kF32;
  v.shape = {2, 3};
  v.strides = {5, 1};
  v.storage_offset = 6;
  v.storage = iota_storage(20);
  check_view_in_bounds(v, "t");
  EXPECT_EQ(as_floats(to_contiguous_bytes(v)), (std::vector<float>{6, 7, 8, 11, 12, 13}));
  std::vector<std::byte> chunked;
  size_t calls = 0;
  for_each_contiguous_chunk(v, 8, [&](std::span<const std::byte> c) {  // two floats per chunk
    EXPECT_LE(c.size(), 8u);
    chunked.insert(chunked.end(), c.begin(), c.end());
    ++calls;
  });
  EXPECT_EQ(chunked, to_contiguous_bytes(v));
  EXPECT_EQ(calls, 3u);
}

TEST(TensorView, HashOfViewEqualsHashOfContiguousCopy) {
  TensorView v;
  v.dtype = DType::kF32;
  v.shape = {6, 4};
  v.strides = {1, 6};
  v.storage = iota_storage(24);
  const auto copy = to_contiguous_bytes(v);
  EXPECT_EQ(to_hex(sha256_tensor(v)), to_hex(sha256_bytes(copy)));
  EXPECT_EQ(to_hex(sha256_bytes({})), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
}

TEST(Sha256Beside, ChunksHashedOnTheHelperThreadGiveTheDigestOfTheWhole) {
  std::vector<std::byte> bytes(100000);
  for (size_t i = 0; i < bytes.size(); ++i) bytes[i] = static_cast<std::byte>((i * 131) ^ (i >> 7));
  const std::span<const std::byte> all(bytes);
  Sha256Beside beside;
  size_t written = 0;  // what a writer would do with each chunk meanwhile
  for (size_t at = 0; at < all.size(); at += 7919) {
    const auto chunk = all.subspan(at, std::min<size_t>(7919, all.size() - at));
    beside.start(chunk);
    written += chunk.size();
    beside.wait();
  }
  EXPECT_EQ(written, bytes.size());
  EXPECT_EQ(to_hex(beside.finish()), to_hex(sha256_bytes(all)));

  Sha256Beside nothing;  // no chunk at all: the empty string's digest; and start() without wait() before finish()
  EXPECT_EQ(to_hex(nothing.finish()), to_hex(sha256_bytes({})));
  Sha256Beside unwaited;
  unwaited.start(all.first(10));
  unwaited.start(all.subspan(10));  // waits for the first chunk itself
  EXPECT_EQ(to_hex(unwaited.finish()), to_hex(sha256_bytes(all)));
}

TEST(TensorView, ZeroDimAndEmpty) {
  const auto scalar = TensorView::contiguous(DType::kF32, {}, iota_storage(1));
  EXPECT_EQ(scalar.numel(), 1u);
  EXPECT_EQ(scalar.nbytes(), 4u);
  check_view_in_bounds(scalar, "scalar");
  const auto empty = TensorView::contiguous(DType::kF16, {0, 4}, Storage{});
  EXPECT_EQ(empty.nbytes(), 0u);
  check_view_in_bounds(empty, "empty");
  EXPECT_TRUE(to_contiguous_bytes(empty).empty());
}

TEST(TensorView, OutOfBoundsViewsAreRefusedWithNumbers) {
  TensorView v;
  v.dtype = DType::kF32;
  v.shape = {3, 4};
  v.strides = {4, 1};
  v.storage_offset = 1;  // needs 13 floats = 52 bytes
  v.storage = iota_storage(12);
  try {
    check_view_in_bounds(v, "f.pth: tensor 'w'");
    FAIL() << "expected FormatError";
  } catch (const FormatError& e) {
    EXPECT_NE(std::string(e.what()).find("f.pth: tensor 'w': needs 52 bytes"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("found 48"), std::string::npos) << e.what();
  }
  v.storage_offset = 0;
  v.strides = {-4, 1};
  EXPECT_THROW(check_view_in_bounds(v, "neg"), FormatError);
  v.strides = {INT64_MAX / 2, 1};
  EXPECT_THROW(check_view_in_bounds(v, "overflow"), FormatError);
  v.strides = {4, 1};
  v.shape = {INT64_MAX, INT64_MAX};
  EXPECT_THROW(check_view_in_bounds(v, "numel overflow"), FormatError);
  v.shape = {3, -1};
  EXPECT_THROW(check_view_in_bounds(v, "negative dim"), FormatError);
}

TEST(TensorView, SubByteDtypesMustBeDense) {
  auto v = TensorView::contiguous(DType::kF4, {6}, Storage::owned(std::vector<std::byte>(3)));
  check_view_in_bounds(v, "f4");
  v.shape = {5};  // 20 bits: not whole bytes
  EXPECT_THROW(check_view_in_bounds(v, "f4 odd"), FormatError);
}

// An exception thrown inside a parallel region comes back to the caller (it must not reach std::terminate), and
// the iterations not yet started are skipped. Runs serially where OpenMP has one thread: the contract is the same.
TEST(ParallelFor, AnExceptionInAnIterationReachesTheCaller) {
  constexpr int64_t kItems = 100000;
  for (bool dynamic : {false, true}) {
    std::atomic<int64_t> ran{0};
    const auto body = [&](int64_t i) {
      ran.fetch_add(1, std::memory_order_relaxed);
      if (i == 7) throw FormatError("item 7 is bad");
    };
    try {
      if (dynamic) {
        parallel_for_dynamic(0, kItems, body);
      } else {
        parallel_for(0, kItems, 1, body);
      }
      ADD_FAILURE() << "no exception came back (dynamic " << dynamic << ")";
    } catch (const FormatError& e) {
      EXPECT_STREQ(e.what(), "item 7 is bad");
    }
    // Static chunks: the throwing thread skips the rest of its own chunk. (Dynamic scheduling gives no such bound:
    // the other thread may take every remaining item while the first one is descheduled.)
    if (!dynamic) {
      EXPECT_LT(ran.load(), kItems) << "the remaining iterations were skipped";
    }
  }
}

}  // namespace
}  // namespace hx