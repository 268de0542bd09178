// The hostile corpus: malformed safetensors files and sharded folders, built byte by byte here. Every case must be
// refused by read_* with FormatError / UnsupportedError (exit 3) whose message names the file and the specific
// problem, and reported by check_*, whose first problem is exactly the message read_* throws. Runs under ASan/UBSan.
#include <gtest/gtest.h>

#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <functional>
#include <iterator>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "formats/errors.h"
#include "formats/safetensors.h"
#include "tests/support/test_support.h"

namespace hx {
namespace {

namespace fs = std::filesystem;
using Bytes = std::vector<std::byte>;
using test::TempDir;

Bytes to_bytes(std::string_view s) {
  Bytes b(s.size());
  if (!s.empty()) std::memcpy(b.data(), s.data(), s.size());
  return b;
}

Bytes u64_le(uint64_t v) {
  Bytes b(8);
  for (int i = 0; i < 8; ++i) b[i] = static_cast<std::byte>((v >> (8 * i)) & 0xFF);
  return b;
}

// A file: the header's length (or `length_override`), the header verbatim, then `data_bytes` bytes of data.
Bytes file_with(std::string_view header, size_t data_bytes, std::optional<uint64_t> length_override = std::nullopt) {
  Bytes out = u64_le(length_override.value_or(header.size()));
  const Bytes h = to_bytes(header);
  out.insert(out.end(), h.begin(), h.end());
  for (size_t i = 0; i < data_bytes; ++i) out.push_back(static_cast<std::byte>(i * 7 + 1));
  return out;
}

// One header entry, written like the real writer does.
std::string entry(const std::string& name, const std::string& dtype, const std::string& shape, uint64_t begin,
                  uint64_t end) {
  return "\"" + name + "\":{\"dtype\":\"" + dtype + "\",\"shape\":" + shape + ",\"data_offsets\":[" +
         std::to_string(begin) + "," + std::to_string(end) + "]}";
}

std::string message_of(const std::function<void()>& f, bool* unsupported) {
  try {
    f();
  } catch (const UnsupportedError& e) {
    *unsupported = true;
    return e.what();
  } catch (const FormatError& e) {
    *unsupported = false;
    return e.what();
  }
  ADD_FAILURE() << "expected FormatError or UnsupportedError, nothing was thrown";
  return "";
}

bool contains(const std::string& haystack, const std::string& needle) {
  return haystack.find(needle) != std::string::npos;
}

// ---- single files ----

struct HostileFile {
  std::string label;  // also the file name
  std::function<Bytes()> make;
  std::vector<std::string> expected;  // substrings of the (first) problem
  bool unsupported = false;           // UnsupportedError rather than FormatError
};

class SafetensorsHostileFile : public ::testing::TestWithParam<HostileFile> {};

TEST_P(SafetensorsHostileFile, RefusedWithAPreciseMessage) {
  const HostileFile& c = GetParam();
  TempDir tmp;
  const std::string file_name = c.label + ".safetensors";
  const std::string path = tmp.file(file_name);
  const Bytes bytes = c.make();
  test::write_file_bytes(path, bytes);
  // HXFORGE_DUMP_HOSTILE=DIR keeps a copy of every case, e.g. to run the reference implementation on them.
  if (const char* dump_dir = std::getenv("HXFORGE_DUMP_HOSTILE"))
    test::write_file_bytes(dump_dir + ("/" + file_name), bytes);

  bool unsupported = false;
  const std::string thrown = message_of([&] { read_safetensors_file(path); }, &unsupported);
  EXPECT_EQ(unsupported, c.unsupported) << thrown;
  EXPECT_TRUE(contains(thrown, file_name)) << thrown;
  for (const auto& s : c.expected) EXPECT_TRUE(contains(thrown, s)) << "missing '" << s << "' in: " << thrown;

  const auto problems = check_safetensors_file(path);
  ASSERT_FALSE(problems.empty());
  EXPECT_EQ(problems.front(), thrown) << "check_* and read_* must agree on the first problem";
  for (const auto& p : problems) EXPECT_TRUE(contains(p, file_name)) << p;

  // The in-memory entry points behave the same.
  const auto in_memory = check_safetensors_bytes(bytes, path);
  EXPECT_EQ(in_memory, problems);
  EXPECT_THROW(read_safetensors_bytes(bytes, path, nullptr), Error);
}

const std::string kW = entry("w", "F32", "[2]", 0, 8);  // a valid 8-byte tensor

std::string rank_65_shape() {
  std::string s = "[";
  for (int i = 0; i < 65; ++i) s += i ? ",1" : "1";
  return s + "]";
}

std::string nested_arrays(int depth) { return std::string(depth, '[') + "1" + std::string(depth, ']'); }

const HostileFile kHostileFiles[] = {
    // length prefix and header framing
    {"shorter_than_8_bytes",
     [] { return to_bytes(std::string_view("\x05\0\0\0", 4)); },
     {"4 bytes, shorter than the 8-byte"}},
    {"empty_file", [] { return Bytes{}; }, {"0 bytes, shorter than the 8-byte"}},
    {"header_over_100mb",
     [] { return file_with("{}", 0, 100'000'001); },
     {"header length 100000001", "exceeds the limit of 100000000"}},
    {"header_length_huge",
     [] { return file_with("{}", 0, ~uint64_t{0}); },
     {"header length 18446744073709551615", "exceeds the limit"}},
    {"header_past_file_end",
     [] { return file_with("{}      ", 0, 4096); },
     {"header length 4096 runs past the end of the file", "the file has 16 bytes"}},
    {"empty_header", [] { return file_with("", 0); }, {"header is empty"}},
    {"not_utf8", [] { return file_with("{\"w\xff\":{}}", 0); }, {"not valid UTF-8", "0xff", "offset 3"}},
    {"overlong_utf8", [] { return file_with("{\"\xc0\xaf\":{}}", 0); }, {"not valid UTF-8", "0xc0"}},
    {"surrogate_utf8", [] { return file_with("{\"\xed\xa0\x80\":{}}", 0); }, {"not valid UTF-8", "0xed"}},
    {"truncated_utf8", [] { return file_with("{\"a\":1}\xe2\x82", 0); }, {"not valid UTF-8", "0xe2"}},
    {"not_starting_with_brace", [] { return file_with("[\"w\"]  ", 0); }, {"does not start with '{'", "0x5b"}},
    {"leading_space", [] { return file_with(" {}     ", 0); }, {"does not start with '{'", "0x20"}},
    {"not_json", [] { return file_with("{\"w\": {\"dtype\": F32}}", 0); }, {"header is not valid JSON"}},
    {"json_then_garbage", [] { return file_with("{} x", 0); }, {"header is not valid JSON"}},
    {"nul_padding",
     [] { return file_with(std::string("{}\0\0\0\0\0\0", 8), 0); },
     {"header is not valid JSON", "NUL byte at offset 2"}},
    {"nul_then_polyglot",
     [] { return file_with(std::string("{}\0<html>", 9), 0); },
     {"header is not valid JSON", "NUL byte"}},
    {"unclosed_object", [] { return file_with("{\"w\":{\"dtype\":\"F32\"", 0); }, {"header is not valid JSON"}},
    {"deep_nesting",
     [] { return file_with("{\"w\":" + nested_arrays(20) + "}", 0); },
     {"nests deeper than 8 levels", "'w'"}},
    // entries
    {"entry_not_object", [] { return file_with("{\"w\":\"F32\"}", 0); }, {"tensor 'w'", "header entry is a string"}},
    {"missing_dtype",
     [] { return file_with("{\"w\":{\"shape\":[2],\"data_offsets\":[0,8]}}", 8); },
     {"tensor 'w'", "no 'dtype'"}},
    {"missing_shape",
     [] { return file_with("{\"w\":{\"dtype\":\"F32\",\"data_offsets\":[0,8]}}", 8); },
     {"tensor 'w'", "no 'shape'"}},
    {"missing_data_offsets",
     [] { return file_with("{\"w\":{\"dtype\":\"F32\",\"shape\":[2]}}", 0); },
     {"tensor 'w'", "no 'data_offsets'"}},
    {"unknown_entry_key",
     [] { return file_with("{\"w\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8],\"strides\":[1]}}", 8); },
     {"tensor 'w'", "unknown key 'strides'"}},
    {"unknown_dtype",
     [] { return file_with("{" + entry("w", "F5", "[2]", 0, 2) + "}", 2); },
     {"tensor 'w'", "unknown dtype 'F5'", "F6_E3M2"},
     true},
    {"lowercase_dtype",
     [] { return file_with("{" + entry("w", "f32", "[2]", 0, 8) + "}", 8); },
     {"tensor 'w'", "unknown dtype 'f32'"},
     true},
    {"torch_only_dtype",
     [] { return file_with("{" + entry("w", "C128", "[2]", 0, 32) + "}", 32); },
     {"tensor 'w'", "unknown dtype 'C128'"},
     true},
    {"dtype_not_string",
     [] { return file_with("{\"w\":{\"dtype\":7,\"shape\":[2],\"data_offsets\":[0,8]}}", 8); },
     {"tensor 'w'", "dtype is the integer 7"}},
    {"shape_not_array",
     [] { return file_with("{" + entry("w", "F32", "4", 0, 16) + "}", 16); },
     {"tensor 'w'", "shape is the integer 4"}},
    {"negative_dim",
     [] { return file_with("{" + entry("w", "F32", "[2,-3]", 0, 8) + "}", 8); },
     {"tensor 'w'", "shape dimension 1 is -3"}},
    {"float_dim",
     [] { return file_with("{" + entry("w", "F32", "[2.5]", 0, 8) + "}", 8); },
     {"tensor 'w'", "shape dimension 0 is 2.5"}},
    {"integral_float_dim",
     [] { return file_with("{" + entry("w", "F32", "[2.0]", 0, 8) + "}", 8); },
     {"tensor 'w'", "shape dimension 0 is 2.0"}},
    {"string_dim",
     [] { return file_with("{" + entry("w", "F32", "[\"2\"]", 0, 8) + "}", 8); },
     {"tensor 'w'", "shape dimension 0 is a string"}},
    {"dim_above_int64",
     [] { return file_with("{" + entry("w", "U8", "[18446744073709551615]", 0, 8) + "}", 8); },
     {"tensor 'w'", "larger than 2^63 - 1"}},
    {"dim_above_uint64",
     [] { return file_with("{" + entry("w", "U8", "[99999999999999999999999]", 0, 8) + "}", 8); },
     {"tensor 'w'", "shape dimension 0 is"}},
    {"shape_product_overflow",
     [] { return file_with("{" + entry("w", "F32", "[1099511627776,1099511627776]", 0, 8) + "}", 8); },
     {"tensor 'w'", "[1099511627776, 1099511627776] has more elements than fit in 64 bits"}},
    {"bit_count_overflow",
     [] { return file_with("{" + entry("w", "F64", "[2305843009213693952]", 0, 8) + "}", 8); },
     {"tensor 'w'", "F64 [2305843009213693952] has more bits than fit in 64 bits"}},
    {"rank_above_64",
     [] { return file_with("{" + entry("w", "F32", rank_65_shape(), 0, 4) + "}", 4); },
     {"more than 64 elements", "'w'"}},
    {"sub_byte_misfit",
     [] { return file_with("{" + entry("w", "F4", "[3]", 0, 2) + "}", 2); },
     {"tensor 'w'", "F4 [3] is 12 bits, not a whole number of bytes"}},
    {"f6_misfit",
     [] { return file_with("{" + entry("w", "F6_E2M3", "[2]", 0, 2) + "}", 2); },
     {"tensor 'w'", "F6_E2M3 [2] is 12 bits"}},
    {"offsets_not_array",
     [] { return file_with("{\"w\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":8}}", 8); },
     {"tensor 'w'", "data_offsets is the integer 8"}},
    {"offsets_one_value",
     [] { return file_with("{\"w\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[8]}}", 8); },
     {"tensor 'w'", "an array of 1 values"}},
    {"offsets_negative",
     [] { return file_with("{\"w\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[-8,0]}}", 8); },
     {"tensor 'w'", "data_offsets [-8, 0] are not two non-negative integers"}},
    {"offsets_reversed",
     [] { return file_with("{" + entry("w", "U8", "[8]", 8, 0) + "}", 8); },
     {"tensor 'w'", "data_offsets [8, 0] are reversed"}},
    // layout of the data buffer
    {"size_mismatch",
     [] {
       return file_with("{" + entry("a", "F32", "[4]", 0, 16) + "," + entry("w", "F32", "[2,4]", 16, 40) + "}", 40);
     },
     {"tensor 'w': data_offsets [16, 40] span 24 bytes, expected 32 for F32 [2, 4]"}},
    {"offsets_out_of_bounds",
     [] { return file_with("{" + entry("w", "F32", "[4]", 0, 16) + "}", 8); },
     {"tensor 'w'", "data_offsets [0, 16] run past the end of the data buffer, which has 8 bytes"}},
    {"overlap",
     [] { return file_with("{" + entry("a", "F32", "[2]", 0, 8) + "," + entry("b", "F32", "[2]", 4, 12) + "}", 12); },
     {"tensor 'b'", "[4, 12] overlap tensor 'a' [0, 8]"}},
    {"same_offsets_twice",
     [] { return file_with("{" + entry("a", "F32", "[2]", 0, 8) + "," + entry("b", "F32", "[2]", 0, 8) + "}", 8); },
     {"tensor 'b'", "overlap tensor 'a'"}},
    {"empty_tensor_inside_another",
     [] { return file_with("{" + entry("a", "F32", "[4]", 0, 16) + "," + entry("e", "F32", "[0]", 8, 8) + "}", 16); },
     {"tensor 'e'", "[8, 8] overlap tensor 'a' [0, 16]"}},
    {"gap",
     [] { return file_with("{" + entry("a", "F32", "[2]", 0, 8) + "," + entry("b", "F32", "[2]", 12, 20) + "}", 20); },
     {"tensor 'b'", "hole of 4 bytes after tensor 'a' [0, 8]"}},
    {"first_tensor_not_at_zero",
     [] { return file_with("{" + entry("w", "F32", "[2]", 4, 12) + "}", 12); },
     {"tensor 'w'", "hole of 4 bytes at the start of the data buffer"}},
    {"trailing_bytes",
     [] { return file_with("{" + kW + "}", 12); },
     {"4 trailing bytes after the last tensor", "end at offset 8 of a data buffer of 12 bytes"}},
    {"no_tensors_but_data", [] { return file_with("{}", 3); }, {"3 trailing bytes"}},
    {"truncated_data",
     [] { return file_with("{" + entry("a", "F32", "[2]", 0, 8) + "," + entry("b", "F32", "[4]", 8, 24) + "}", 21); },
     {"tensor 'b'", "run past the end of the data buffer, which has 21 bytes"}},
    // duplicates and metadata
    {"duplicate_tensor_name",
     [] { return file_with("{" + kW + "," + entry("w", "F32", "[2]", 8, 16) + "}", 16); },
     {"duplicate tensor name 'w'"}},
    {"duplicate_key_in_entry",
     [] { return file_with("{\"w\":{\"dtype\":\"F32\",\"dtype\":\"F16\",\"shape\":[2],\"data_offsets\":[0,8]}}", 8); },
     {"tensor 'w'", "duplicate key 'dtype'"}},
    {"duplicate_metadata",
     [] { return file_with("{\"__metadata__\":{},\"__metadata__\":{}," + kW + "}", 8); },
     {"__metadata__ appears more than once"}},
    {"metadata_not_a_map",
     [] { return file_with("{\"__metadata__\":[\"pt\"]," + kW + "}", 8); },
     {"__metadata__ is an array, expected an object of string to string"}},
    {"metadata_non_string_value",
     [] { return file_with("{\"__metadata__\":{\"format\":1}," + kW + "}", 8); },
     {"__metadata__ key 'format' has the integer 1"}},
    {"metadata_nested_object",
     [] { return file_with("{\"__metadata__\":{\"a\":{}}," + kW + "}", 8); },
     {"__metadata__ key 'a' has an object"}},
    {"metadata_duplicate_key",
     [] { return file_with("{\"__metadata__\":{\"a\":\"1\",\"a\":\"2\"}," + kW + "}", 8); },
     {"__metadata__ has the key 'a' more than once"}},
};

INSTANTIATE_TEST_SUITE_P(Corpus, SafetensorsHostileFile, ::testing::ValuesIn(kHostileFiles),
                         [](const auto& param_info) { return param_info.param.label; });

TEST(SafetensorsHostile, CorpusIsLargeEnough) { EXPECT_GE(std::size(kHostileFiles), 28u); }

TEST(SafetensorsHostile, AFileWithManyProblemsReportsThemAll) {
  const std::string header = "{\"__metadata__\":{\"n\":2}," + entry("a_unknown", "F5", "[2]", 0, 8) +
                             "," +                                              // unknown dtype
                             entry("b_negative", "F32", "[-1]", 8, 16) + "," +  // negative dim
                             entry("c_size", "F32", "[4]", 16, 20) + "," +      // 4 bytes for 16
                             entry("d_overlap", "U8", "[8]", 18, 26) + "," +    // overlaps c_size
                             entry("e_gap", "U8", "[2]", 30, 32) + "," +        // hole of 4 bytes
                             "\"f_dup\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[32,33]}," +
                             "\"f_dup\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[32,33]}}";
  TempDir tmp;
  const std::string path = tmp.file("many.safetensors");
  test::write_file_bytes(path, file_with(header, 40));  // 7 trailing bytes
  const auto problems = check_safetensors_file(path);
  const std::vector<std::string> expected = {"duplicate tensor name 'f_dup'",
                                             "__metadata__ key 'n'",
                                             "tensor 'a_unknown': unknown dtype 'F5'",
                                             "tensor 'b_negative': shape dimension 0 is -1",
                                             "tensor 'c_size': data_offsets [16, 20] span 4 bytes, expected 16",
                                             "tensor 'd_overlap': data_offsets [18, 26] overlap tensor 'c_size'",
                                             "tensor 'e_gap': data_offsets [30, 32] leave a hole of 4 bytes",
                                             "7 trailing bytes"};
  EXPECT_EQ(problems.size(), expected.size());
  for (const auto& e : expected) {
    bool found = false;
    for (const auto& p : problems) found = found || contains(p, e);
    EXPECT_TRUE(found) << "no problem mentions: " << e;
  }
  bool unsupported = false;
  EXPECT_EQ(message_of([&] { read_safetensors_file(path); }, &unsupported), problems.front());
}

TEST(SafetensorsHostile, MissingFileIsAnIoError) {
  TempDir tmp;
  EXPECT_THROW(read_safetensors_file(tmp.file("absent.safetensors")), IoError);
  EXPECT_THROW(check_safetensors_file(tmp.file("absent.safetensors")), IoError);
  EXPECT_THROW(read_safetensors_folder(tmp.file("absent")), IoError);
}

TEST(SafetensorsHostile, AcceptsWhatTheReferenceAccepts) {
  // Trailing JSON whitespace, empty and 0-dim tensors sharing an offset, the 8-byte minimum: all valid.
  const std::string header = "{" + entry("a", "F32", "[]", 0, 4) + "," + entry("e1", "F32", "[0]", 4, 4) + "," +
                             entry("e2", "BF16", "[0,3]", 4, 4) + "," + entry("b", "F4", "[2]", 4, 5) + "} \n\t ";
  TempDir tmp;
  const std::string path = tmp.file("ok.safetensors");
  test::write_file_bytes(path, file_with(header, 5));
  EXPECT_TRUE(check_safetensors_file(path).empty());
  const Checkpoint ck = read_safetensors_file(path);
  ASSERT_EQ(ck.tensors.size(), 4u);
  EXPECT_EQ(ck.tensors[0].name, "a");
  EXPECT_EQ(ck.tensors[3].name, "b");
  EXPECT_TRUE(read_safetensors_bytes(file_with("{}", 0), "min", nullptr).tensors.empty());
}

// ---- sharded folders ----

// A valid two-shard folder written by the writer; each case then damages it.
struct ShardedFixture {
  TempDir tmp;
  std::string dir;
  nlohmann::json index;

  ShardedFixture() : dir(tmp.file("model")) {
    std::vector<TensorSpec> specs = {{"a", DType::kF32, {2}}, {"b", DType::kF32, {2}}, {"c", DType::kU8, {8}}};
    SafetensorsWriteOptions opt;
    opt.max_shard_bytes = 8;  // a | b | c: three shards of 8 bytes
    write_safetensors(
        dir, specs,
        [](size_t index_of, const ByteSink& sink) {
          const std::vector<std::byte> bytes(8, static_cast<std::byte>(index_of));
          sink(bytes);
        },
        opt);
    const auto b = test::read_file_bytes(index_path());
    index = nlohmann::json::parse(std::string(reinterpret_cast<const char*>(b.data()), b.size()));
  }
  std::string index_path() const { return dir + "/" + kSafetensorsIndexFileName; }
  std::string shard(int k) const { return safetensors_shard_name(static_cast<size_t>(k), 3); }
  void save_index() const { test::write_file_bytes(index_path(), to_bytes(index.dump(2))); }
  void save_index_text(const std::string& text) const { test::write_file_bytes(index_path(), to_bytes(text)); }
};

void expect_folder_refused(const ShardedFixture& f, const std::vector<std::string>& expected,
                           const std::string& named_file = kSafetensorsIndexFileName) {
  bool unsupported = false;
  const std::string thrown = message_of([&] { read_safetensors_folder(f.dir); }, &unsupported);
  EXPECT_FALSE(unsupported) << thrown;
  EXPECT_TRUE(contains(thrown, named_file)) << thrown;
  for (const auto& s : expected) EXPECT_TRUE(contains(thrown, s)) << "missing '" << s << "' in: " << thrown;
  const auto problems = check_safetensors_folder(f.dir);
  ASSERT_FALSE(problems.empty());
  EXPECT_EQ(problems.front(), thrown);
}

TEST(SafetensorsHostileFolder, TheFixtureIsValid) {
  ShardedFixture f;
  EXPECT_EQ(read_safetensors_folder(f.dir).tensors.size(), 3u);
  f.save_index();  // rewritten by nlohmann: still valid
  EXPECT_TRUE(check_safetensors_folder(f.dir).empty());
}

TEST(SafetensorsHostileFolder, IndexNamesAMissingShard) {
  ShardedFixture f;
  fs::remove(f.dir + "/" + f.shard(1));
  expect_folder_refused(f, {"tensor(s), e.g. 'b', to shard '" + f.shard(1) + "', which does not exist"});
}

TEST(SafetensorsHostileFolder, ShardPathEscapesTheFolder) {
  for (const std::string bad : {"../model-00002-of-00003.safetensors", "sub/x.safetensors", "..", "/etc/passwd"}) {
    SCOPED_TRACE(bad);
    ShardedFixture f;
    f.index["weight_map"]["b"] = bad;
    f.save_index();
    expect_folder_refused(f, {"maps tensor 'b' to '" + bad + "', which is not a plain file name"});
  }
}

TEST(SafetensorsHostileFolder, MappedTensorMissingFromItsShard) {
  ShardedFixture f;
  f.index["weight_map"]["ghost"] = f.shard(0);
  f.save_index();
  expect_folder_refused(f, {"maps tensor 'ghost' to shard '" + f.shard(0) + "', which does not contain it"});
}

TEST(SafetensorsHostileFolder, ShardTensorNotInWeightMap) {
  ShardedFixture f;
  // 'b' is dropped from weight_map while its shard stays referenced (through a name the shard does not hold).
  f.index["weight_map"].erase("b");
  f.index["weight_map"]["renamed_b"] = f.shard(1);
  f.save_index();
  expect_folder_refused(f, {"tensor 'b' of shard '" + f.shard(1) + "' is not in weight_map"});
}

TEST(SafetensorsHostileFolder, UnreferencedShardIsIgnored) {
  // As in transformers, only the shards weight_map names are read.
  ShardedFixture f;
  f.index["weight_map"].erase("c");
  f.index["metadata"]["total_size"] = 16;
  f.save_index();
  EXPECT_EQ(read_safetensors_folder(f.dir).tensors.size(), 2u);
}

TEST(SafetensorsHostileFolder, TensorMappedToTheWrongShard) {
  ShardedFixture f;
  f.index["weight_map"]["a"] = f.shard(1);  // a and b swapped
  f.index["weight_map"]["b"] = f.shard(0);
  f.save_index();
  expect_folder_refused(
      f, {"tensor 'a' is in shard '" + f.shard(0) + "', but weight_map maps it to '" + f.shard(1) + "'"});
}

TEST(SafetensorsHostileFolder, TensorInTwoShards) {
  ShardedFixture f;
  // Replace shard 2 by a file that holds 'b' and also 'a'.
  const std::vector<TensorSpec> specs = {{"a", DType::kF32, {2}}, {"b", DType::kF32, {2}}};
  SafetensorsWriteOptions opt;
  opt.overwrite = true;
  write_safetensors(
      f.dir + "/" + f.shard(1), specs, [](size_t, const ByteSink& sink) { sink(std::vector<std::byte>(8)); }, opt);
  expect_folder_refused(f, {"tensor 'a' is in shard '" + f.shard(0) + "' and in shard '" + f.shard(1) + "'"});
}

TEST(SafetensorsHostileFolder, TotalSizeMismatch) {
  ShardedFixture f;
  f.index["metadata"]["total_size"] = 25;
  f.save_index();
  expect_folder_refused(f, {"metadata.total_size is 25, but the shards' tensors hold 24 bytes"});
}

TEST(SafetensorsHostileFolder, TotalSizeNotAnInteger) {
  ShardedFixture f;
  f.index["metadata"]["total_size"] = "24";
  f.save_index();
  expect_folder_refused(f, {"metadata.total_size is a string, expected a non-negative integer"});
  f.index["metadata"]["total_size"] = 24.0;  // an exact float is tolerated
  f.save_index();
  EXPECT_TRUE(check_safetensors_folder(f.dir).empty());
}

TEST(SafetensorsHostileFolder, IndexWithoutWeightMap) {
  ShardedFixture f;
  f.index.erase("weight_map");
  f.save_index();
  expect_folder_refused(f, {"has no weight_map"});
}

TEST(SafetensorsHostileFolder, WeightMapNotAnObject) {
  ShardedFixture f;
  f.index["weight_map"] = nlohmann::json::array({"a"});
  f.save_index();
  expect_folder_refused(f, {"weight_map is an array"});
}

TEST(SafetensorsHostileFolder, ShardNameNotAString) {
  ShardedFixture f;
  f.index["weight_map"]["a"] = 1;
  f.save_index();
  expect_folder_refused(f, {"maps tensor 'a' to the integer 1"});
}

TEST(SafetensorsHostileFolder, IndexNotJson) {
  ShardedFixture f;
  f.save_index_text("{\"weight_map\": {\"a\": ");
  expect_folder_refused(f, {"index is not valid JSON"});
}

TEST(SafetensorsHostileFolder, IndexNotUtf8) {
  ShardedFixture f;
  f.save_index_text("{\"weight_map\": {\"\xff\": \"x\"}}");
  expect_folder_refused(f, {"index is not valid UTF-8", "0xff"});
}

TEST(SafetensorsHostileFolder, IndexListsATensorTwice) {
  ShardedFixture f;
  const std::string a = f.shard(0);
  f.save_index_text("{\"weight_map\": {\"a\": \"" + a + "\", \"a\": \"" + a + "\", \"b\": \"" + f.shard(1) +
                    "\", \"c\": \"" + f.shard(2) + "\"}}");
  expect_folder_refused(f, {"weight_map lists tensor 'a' more than once"});
}

TEST(SafetensorsHostileFolder, DamagedShardIsNamed) {
  ShardedFixture f;
  test::write_file_bytes(f.dir + "/" + f.shard(2), file_with("{\"c\":1}", 0));
  expect_folder_refused(f, {"tensor 'c'", "header entry is the integer 1"}, f.shard(2));
}

TEST(SafetensorsHostileFolder, FolderWithoutWeights) {
  TempDir tmp;
  fs::create_directory(tmp.file("empty"));
  bool unsupported = false;
  const std::string thrown = message_of([&] { read_safetensors_folder(tmp.file("empty")); }, &unsupported);
  EXPECT_TRUE(contains(thrown, "holds neither model.safetensors nor model.safetensors.index.json")) << thrown;
  EXPECT_EQ(check_safetensors_folder(tmp.file("empty")), std::vector<std::string>{thrown});
  EXPECT_FALSE(is_safetensors_folder(tmp.file("empty")));
}

TEST(SafetensorsHostileFolder, EveryProblemIsReported) {
  ShardedFixture f;
  fs::remove(f.dir + "/" + f.shard(2));                // c's shard is missing
  f.index["weight_map"]["ghost"] = f.shard(0);         // not in shard 1
  f.index["weight_map"]["evil"] = "../../etc/passwd";  // escapes
  f.index["metadata"]["total_size"] = -1;              // not a size
  f.save_index();
  const auto problems = check_safetensors_folder(f.dir);
  const std::vector<std::string> expected = {"to shard '" + f.shard(2) + "', which does not exist",
                                             "maps tensor 'ghost' to shard '" + f.shard(0) + "', which does not",
                                             "maps tensor 'evil' to '../../etc/passwd'", "metadata.total_size is -1"};
  EXPECT_EQ(problems.size(), expected.size());
  for (const auto& e : expected) {
    bool found = false;
    for (const auto& p : problems) found = found || contains(p, e);
    EXPECT_TRUE(found) << "no problem mentions: " << e;
  }
}

}  // namespace
}  // namespace hx
