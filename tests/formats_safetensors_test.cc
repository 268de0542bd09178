// safetensors reader and writer: the oracle files written by HF transformers, round trips of every dtype, sharding,
// header conventions and atomic output. Malformed input is in formats_safetensors_hostile_test.cc.
#include <gtest/gtest.h>

#include <cstring>
#include <filesystem>
#include <map>
#include <nlohmann/json.hpp>
#include <random>
#include <set>
#include <stdexcept>
#include <string>
#include <vector>

#include "formats/errors.h"
#include "formats/mapped_file.h"
#include "formats/safetensors.h"
#include "formats/sha256.h"
#include "tests/support/test_support.h"

namespace hx {
namespace {

namespace fs = std::filesystem;
using test::TempDir;

const NamedTensor* find_tensor(const Checkpoint& ck, const std::string& name) {
  for (const auto& t : ck.tensors)
    if (t.name == name) return &t;
  return nullptr;
}

std::vector<std::byte> random_bytes(size_t n, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::vector<std::byte> out(n);
  for (auto& b : out) b = static_cast<std::byte>(rng() & 0xFF);
  return out;
}

// Tensors held in memory, served to the writer in uneven chunks (so that chunk boundaries are exercised).
struct MemoryTensors {
  std::vector<TensorSpec> specs;
  std::vector<std::vector<std::byte>> data;

  void add(const std::string& name, DType dtype, Shape shape) {
    TensorSpec spec{name, dtype, std::move(shape)};
    data.push_back(random_bytes(spec.nbytes(), 1000 + data.size()));
    specs.push_back(std::move(spec));
  }
  TensorSource source() const {
    return [this](size_t index, const ByteSink& sink) {
      std::span<const std::byte> rest(data.at(index));
      size_t chunk = 1;
      while (!rest.empty()) {
        const size_t n = std::min(chunk, rest.size());
        sink(rest.first(n));
        rest = rest.subspan(n);
        chunk = chunk * 3 + 1;
      }
    };
  }
};

// Reads the length prefix and header JSON directly from the bytes, independently of the reader under test.
struct RawHeader {
  uint64_t length = 0;
  std::string text;
  nlohmann::json json;
};
RawHeader raw_header(const std::string& path) {
  const auto bytes = test::read_file_bytes(path);
  RawHeader h;
  if (bytes.size() < 8) throw std::runtime_error("short file " + path);
  for (int i = 7; i >= 0; --i) h.length = (h.length << 8) | static_cast<uint64_t>(bytes[i]);
  h.text.assign(reinterpret_cast<const char*>(bytes.data()) + 8, h.length);
  h.json = nlohmann::json::parse(h.text);
  return h;
}

// The tensors of `ck` compared to what was written: same names in spec order, dtypes, shapes and bytes.
void expect_equal_to(const Checkpoint& ck, const MemoryTensors& m) {
  ASSERT_EQ(ck.tensors.size(), m.specs.size());
  for (size_t i = 0; i < m.specs.size(); ++i) {
    SCOPED_TRACE(m.specs[i].name);
    const NamedTensor& t = ck.tensors[i];
    EXPECT_EQ(t.name, m.specs[i].name);
    EXPECT_EQ(t.view.dtype, m.specs[i].dtype);
    EXPECT_EQ(t.view.shape, m.specs[i].shape);
    EXPECT_EQ(to_contiguous_bytes(t.view), m.data[i]);
  }
}

std::vector<std::string> list_dir(const std::string& dir) {
  std::vector<std::string> names;
  for (const auto& e : fs::directory_iterator(dir)) names.push_back(e.path().filename().string());
  std::sort(names.begin(), names.end());
  return names;
}

// ---- the oracle files written by transformers / safetensors 0.8 ----

struct OracleCase {
  std::string model;         // folder under oracle/
  size_t tensor_count;       // from the header (README: 163 / 39, all BF16)
  std::string first_tensor;  // lowest offset
  std::string checked_tensor;
  Shape checked_shape;
  std::string checked_sha256;  // of the raw bytes, computed with Python's hashlib
};

const OracleCase kGemma{"gemma4-tiny",
                        163,
                        "model.embed_tokens.weight",
                        "model.embed_tokens_per_layer.weight",
                        {512, 160},
                        "7f257b6149af3c1e5358d4bbe9b657768446ef11440d657c147bddd53bf89dcf"};
const OracleCase kLlama{"llama-tiny",     39,
                        "lm_head.weight", "lm_head.weight",
                        {512, 128},       "a2b827b47a7087358fa4cc95058a6db96267262d3f5dd147799f9963860d3bd7"};

class SafetensorsOracle : public ::testing::TestWithParam<OracleCase> {};

TEST_P(SafetensorsOracle, SingleFileLoadsZeroCopyInOffsetOrder) {
  const OracleCase& c = GetParam();
  const std::string path = test::oracle_dir() + "/" + c.model + "/model.safetensors";
  const Checkpoint ck = read_safetensors_file(path);
  EXPECT_EQ(ck.format, CheckpointFormat::kSafetensors);
  EXPECT_EQ(ck.files, std::vector<std::string>{path});
  ASSERT_EQ(ck.tensors.size(), c.tensor_count);
  EXPECT_EQ(ck.metadata, (std::map<std::string, std::string>{{"format", "pt"}}));
  EXPECT_EQ(ck.tensors.front().name, c.first_tensor);

  const NamedTensor* t = find_tensor(ck, c.checked_tensor);
  ASSERT_NE(t, nullptr);
  EXPECT_EQ(t->view.dtype, DType::kBF16);
  EXPECT_EQ(t->view.shape, c.checked_shape);
  EXPECT_EQ(to_hex(sha256_tensor(t->view)), c.checked_sha256);

  // Zero copy: every view points into the mapped file, and in offset order the views tile the file from the end of
  // the header to its last byte.
  const auto mapped = std::static_pointer_cast<const MappedFile>(ck.tensors.front().view.storage.owner);
  ASSERT_NE(mapped, nullptr);
  const std::byte* base = mapped->bytes().data();
  const uint64_t header_length = raw_header(path).length;
  const std::byte* expected_start = base + 8 + header_length;
  for (const NamedTensor& n : ck.tensors) {
    SCOPED_TRACE(n.name);
    EXPECT_EQ(n.view.dtype, DType::kBF16);
    EXPECT_EQ(n.view.storage.owner.get(), mapped.get());
    EXPECT_EQ(n.view.storage.bytes.data(), expected_start);
    EXPECT_EQ(n.view.storage.bytes.size(), n.view.nbytes());
    expected_start += n.view.storage.bytes.size();
  }
  EXPECT_EQ(expected_start, base + mapped->size());
  EXPECT_TRUE(check_safetensors_file(path).empty());
}

TEST_P(SafetensorsOracle, ShardedCopyHoldsTheSameTensors) {
  const OracleCase& c = GetParam();
  const std::string dir = test::oracle_dir() + "/" + c.model;
  const Checkpoint single = read_safetensors_file(dir + "/model.safetensors");
  const Checkpoint sharded = read_safetensors_folder(dir + "/sharded");
  EXPECT_EQ(sharded.format, CheckpointFormat::kSafetensors);
  EXPECT_EQ(sharded.path, dir + "/sharded");
  EXPECT_EQ(sharded.files, (std::vector<std::string>{dir + "/sharded/model-00001-of-00002.safetensors",
                                                     dir + "/sharded/model-00002-of-00002.safetensors"}));
  EXPECT_EQ(sharded.config_json_path, dir + "/sharded/config.json");
  EXPECT_EQ(sharded.metadata, (std::map<std::string, std::string>{{"format", "pt"}}));
  ASSERT_EQ(sharded.tensors.size(), single.tensors.size());

  std::set<std::string> seen;
  const auto single_digests = sha256_tensors(single.tensors);
  const auto sharded_digests = sha256_tensors(sharded.tensors);
  for (size_t i = 0; i < single.tensors.size(); ++i) {
    const NamedTensor& a = single.tensors[i];
    SCOPED_TRACE(a.name);
    size_t j = 0;
    while (j < sharded.tensors.size() && sharded.tensors[j].name != a.name) ++j;
    ASSERT_LT(j, sharded.tensors.size());
    seen.insert(a.name);
    EXPECT_EQ(sharded.tensors[j].view.dtype, a.view.dtype);
    EXPECT_EQ(sharded.tensors[j].view.shape, a.view.shape);
    EXPECT_EQ(to_contiguous_bytes(sharded.tensors[j].view), to_contiguous_bytes(a.view));
    EXPECT_EQ(sharded_digests[j], single_digests[i]);
  }
  EXPECT_EQ(seen.size(), single.tensors.size());
  EXPECT_TRUE(check_safetensors_folder(dir + "/sharded").empty());
}

TEST_P(SafetensorsOracle, FolderWithSingleFile) {
  const OracleCase& c = GetParam();
  const std::string dir = test::oracle_dir() + "/" + c.model;
  EXPECT_TRUE(is_safetensors_folder(dir));
  EXPECT_TRUE(is_safetensors_folder(dir + "/sharded"));
  const Checkpoint ck = read_safetensors_folder(dir);
  EXPECT_EQ(ck.files, std::vector<std::string>{dir + "/model.safetensors"});
  EXPECT_EQ(ck.path, dir);
  EXPECT_EQ(ck.config_json_path, dir + "/config.json");
  EXPECT_EQ(ck.tensors.size(), c.tensor_count);
  EXPECT_TRUE(check_safetensors_folder(dir).empty());
}

// Writing the tensors back in offset order reproduces the original data buffer byte for byte; sharded the same.
TEST_P(SafetensorsOracle, RewriteReproducesTheDataBuffer) {
  const OracleCase& c = GetParam();
  const std::string original = test::oracle_dir() + "/" + c.model + "/model.safetensors";
  const Checkpoint ck = read_safetensors_file(original);
  TempDir tmp;
  SafetensorsWriteOptions opt;
  opt.metadata = ck.metadata;
  write_safetensors(tmp.file("copy.safetensors"), specs_of(ck.tensors), source_of(ck.tensors), opt);

  const auto a = test::read_file_bytes(original), b = test::read_file_bytes(tmp.file("copy.safetensors"));
  const uint64_t data_a = 8 + raw_header(original).length, data_b = 8 + raw_header(tmp.file("copy.safetensors")).length;
  ASSERT_EQ(a.size() - data_a, b.size() - data_b);
  EXPECT_TRUE(std::equal(a.begin() + static_cast<std::ptrdiff_t>(data_a), a.end(),
                         b.begin() + static_cast<std::ptrdiff_t>(data_b)));

  opt.max_shard_bytes = 300'000;
  write_safetensors(tmp.file("sharded"), specs_of(ck.tensors), source_of(ck.tensors), opt);
  const Checkpoint again = read_safetensors_folder(tmp.file("sharded"));
  EXPECT_GT(again.files.size(), 2u);
  ASSERT_EQ(again.tensors.size(), ck.tensors.size());
  EXPECT_EQ(sha256_tensors(again.tensors), sha256_tensors(ck.tensors));
}

INSTANTIATE_TEST_SUITE_P(Models, SafetensorsOracle, ::testing::Values(kGemma, kLlama), [](const auto& param_info) {
  return param_info.param.model == "gemma4-tiny" ? "Gemma4" : "Llama";
});

// ---- writer round trips ----

TEST(SafetensorsWriter, RoundTripsEverySafetensorsDtype) {
  MemoryTensors m;
  size_t dtypes = 0;
  for (const DTypeInfo& row : all_dtypes()) {
    if (!row.in_safetensors) continue;
    ++dtypes;
    // 24 elements fill whole bytes for every dtype: 12 bytes of F4, 18 of F6.
    m.add(std::string(row.name) + ".matrix", row.id, {3, 8});
    m.add(std::string(row.name) + ".vector", row.id, {row.bits % 8 == 0 ? 2 : 8});  // 8 × F6 = 6 bytes
  }
  EXPECT_EQ(dtypes, 22u);
  TempDir tmp;
  const std::string path = tmp.file("all.safetensors");
  write_safetensors(path, m.specs, m.source());
  expect_equal_to(read_safetensors_file(path), m);
  EXPECT_TRUE(check_safetensors_file(path).empty());

  const RawHeader h = raw_header(path);
  EXPECT_EQ(h.json.at("F4.matrix").at("dtype"), "F4");
  EXPECT_EQ(h.json.at("F4.matrix").at("data_offsets")[1].get<uint64_t>() -
                h.json.at("F4.matrix").at("data_offsets")[0].get<uint64_t>(),
            12u);
  EXPECT_EQ(h.json.at("F6_E3M2.matrix").at("data_offsets")[1].get<uint64_t>() -
                h.json.at("F6_E3M2.matrix").at("data_offsets")[0].get<uint64_t>(),
            18u);
  EXPECT_EQ(h.json.at("F8_E8M0.matrix").at("dtype"), "F8_E8M0");
}

TEST(SafetensorsWriter, ZeroDimAndEmptyTensors) {
  MemoryTensors m;
  m.add("scalar_f32", DType::kF32, {});
  m.add("before", DType::kBF16, {5});
  m.add("empty_1d", DType::kF32, {0});
  m.add("empty_3d", DType::kI64, {3, 0, 2});
  m.add("scalar_i64", DType::kI64, {});
  m.add("empty_bool", DType::kBool, {0});
  m.add("after", DType::kU8, {7});
  TempDir tmp;
  const std::string path = tmp.file("edge.safetensors");
  write_safetensors(path, m.specs, m.source());
  const Checkpoint ck = read_safetensors_file(path);
  expect_equal_to(ck, m);
  EXPECT_EQ(ck.tensors[0].view.nbytes(), 4u);
  EXPECT_EQ(ck.tensors[0].view.shape.size(), 0u);
  EXPECT_EQ(ck.tensors[2].view.nbytes(), 0u);

  const RawHeader h = raw_header(path);
  EXPECT_EQ(h.json.at("empty_1d").at("data_offsets"), (nlohmann::json{14, 14}));  // after 4 + 10 bytes
  EXPECT_EQ(h.json.at("empty_3d").at("shape"), (nlohmann::json{3, 0, 2}));
  EXPECT_EQ(h.json.at("scalar_f32").at("shape"), nlohmann::json::array());
}

TEST(SafetensorsWriter, EmptyCheckpoint) {
  TempDir tmp;
  const std::string path = tmp.file("empty.safetensors");
  write_safetensors(path, {}, [](size_t, const ByteSink&) { FAIL() << "no tensor to ask for"; });
  EXPECT_TRUE(read_safetensors_file(path).tensors.empty());
  EXPECT_EQ(raw_header(path).length % 8, 0u);
}

TEST(SafetensorsWriter, HeaderIsPaddedWithSpacesToEightBytesAndKeepsSpecOrder) {
  for (size_t name_length = 1; name_length <= 17; ++name_length) {
    SCOPED_TRACE(name_length);
    MemoryTensors m;
    m.add(std::string(name_length, 'z'), DType::kF16, {3});
    m.add("a", DType::kF32, {2});  // alphabetically first, written second
    TempDir tmp;
    const std::string path = tmp.file("x.safetensors");
    write_safetensors(path, m.specs, m.source());
    const RawHeader h = raw_header(path);
    EXPECT_EQ(h.length % kSafetensorsHeaderAlignment, 0u);
    const size_t close = h.text.rfind('}');
    ASSERT_NE(close, std::string::npos);
    EXPECT_EQ(h.text.find_first_not_of(' ', close + 1), std::string::npos) << "padding must be spaces";
    EXPECT_LT(h.length - (close + 1), kSafetensorsHeaderAlignment);
    EXPECT_EQ(h.text.front(), '{');
    EXPECT_EQ(h.json.at(m.specs[0].name).at("data_offsets"), (nlohmann::json{0, 6}));
    EXPECT_EQ(h.json.at("a").at("data_offsets"), (nlohmann::json{6, 14}));
    EXPECT_EQ(test::read_file_bytes(path).size(), 8 + h.length + 14);
  }
}

TEST(SafetensorsWriter, MetadataRoundTripsAndComesFirst) {
  MemoryTensors m;
  m.add("w", DType::kF32, {2});
  SafetensorsWriteOptions opt;
  opt.metadata = {{"format", "pt"},
                  {"quotes \" and \\ backslash", "line\nbreak\ttab"},
                  {"unicode", "\xc3\xa9t\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80"},
                  {"empty", ""}};
  TempDir tmp;
  const std::string path = tmp.file("meta.safetensors");
  write_safetensors(path, m.specs, m.source(), opt);
  const Checkpoint ck = read_safetensors_file(path);
  EXPECT_EQ(ck.metadata, opt.metadata);
  EXPECT_EQ(raw_header(path).text.rfind("{\"__metadata__\":{", 0), 0u);
}

// An independent reader: Python's json and struct only (no numpy or safetensors needed).
TEST(SafetensorsWriter, PythonParsesTheOutput) {
  if (!fs::exists("/usr/bin/python3")) GTEST_SKIP() << "no /usr/bin/python3";
  MemoryTensors m;
  m.add("w", DType::kBF16, {4, 3});
  m.add("s", DType::kF64, {});
  m.add("e", DType::kF32, {0, 5});
  m.add("f8", DType::kF8_E4M3, {9});
  SafetensorsWriteOptions opt;
  opt.metadata = {{"format", "pt"}};
  TempDir tmp;
  const std::string path = tmp.file("py.safetensors");
  write_safetensors(path, m.specs, m.source(), opt);
  const std::string script = R"PY(
import json, struct, sys
b = open(sys.argv[1], 'rb').read()
n = struct.unpack('<Q', b[:8])[0]
assert n % 8 == 0, n
h = json.loads(b[8:8 + n].decode('utf-8'))
assert h.pop('__metadata__') == {'format': 'pt'}
spans = sorted(tuple(v['data_offsets']) for v in h.values())
pos = 0
for s, e in spans:
    assert s == pos, (s, pos)
    pos = e
assert 8 + n + pos == len(b)
print('OK', len(h), h['w']['dtype'], h['w']['shape'], h['s']['shape'])
)PY";
  const std::string script_path = tmp.file("check.py");
  test::write_file_bytes(script_path,
                         std::vector<std::byte>(reinterpret_cast<const std::byte*>(script.data()),
                                                reinterpret_cast<const std::byte*>(script.data()) + script.size()));
  const auto r =
      test::run_command("/usr/bin/python3 " + test::shell_quote(script_path) + " " + test::shell_quote(path));
  EXPECT_EQ(r.exit_code, 0) << r.output;
  EXPECT_EQ(r.output, "OK 4 BF16 [4, 3] []\n");
}

// ---- sharding ----

MemoryTensors shard_test_tensors() {
  MemoryTensors m;
  m.add("embed", DType::kBF16, {10, 10});  // 200 bytes
  m.add("norm", DType::kF32, {4});         // 16
  m.add("q", DType::kF16, {6, 6});         // 72
  m.add("scalar", DType::kF32, {});        // 4
  m.add("empty", DType::kF32, {0});        // 0
  m.add("k", DType::kI8, {90});            // 90
  m.add("v", DType::kF8_E5M2, {33});       // 33
  m.add("big", DType::kF64, {40});         // 320
  m.add("tail", DType::kU16, {3});         // 6
  return m;
}

TEST(SafetensorsWriter, ShardsGreedilyAndWritesAnIndex) {
  const MemoryTensors m = shard_test_tensors();
  uint64_t total = 0;
  for (const auto& d : m.data) total += d.size();
  for (const uint64_t max_bytes : {uint64_t{1}, uint64_t{100}, uint64_t{250}, uint64_t{400}, uint64_t{1} << 40}) {
    SCOPED_TRACE(max_bytes);
    TempDir tmp;
    const std::string out = tmp.file("model");
    SafetensorsWriteOptions opt;
    opt.max_shard_bytes = max_bytes;
    opt.metadata = {{"format", "pt"}};
    write_safetensors(out, m.specs, m.source(), opt);
    EXPECT_EQ(list_dir(tmp.path()), std::vector<std::string>{"model"}) << "no temporary folder is left behind";

    const auto index = nlohmann::json::parse([&] {
      const auto b = test::read_file_bytes(out + "/model.safetensors.index.json");
      return std::string(reinterpret_cast<const char*>(b.data()), b.size());
    }());
    EXPECT_EQ(index.at("metadata").at("total_size").get<uint64_t>(), total);
    const auto& weight_map = index.at("weight_map");
    ASSERT_EQ(weight_map.size(), m.specs.size());

    // Replay the greedy rule independently: which shard each tensor must land in.
    std::vector<size_t> expected_shard;
    size_t shard = 0;
    uint64_t filled = 0;
    for (size_t i = 0; i < m.specs.size(); ++i) {
      const uint64_t n = m.data[i].size();
      if (i > 0 && filled + n > max_bytes) {
        ++shard;
        filled = 0;
      }
      expected_shard.push_back(shard);
      filled += n;
    }
    const size_t shard_count = shard + 1;
    std::set<std::string> expected_files = {"model.safetensors.index.json"};
    for (size_t i = 0; i < m.specs.size(); ++i) {
      const std::string name = safetensors_shard_name(expected_shard[i], shard_count);
      EXPECT_EQ(weight_map.at(m.specs[i].name), name) << m.specs[i].name;
      expected_files.insert(name);
    }
    const auto files = list_dir(out);
    EXPECT_EQ(std::set<std::string>(files.begin(), files.end()), expected_files);

    const Checkpoint ck = read_safetensors_folder(out);
    expect_equal_to(ck, m);  // shards in order, spec order within each
    EXPECT_EQ(ck.files.size(), shard_count);
    EXPECT_EQ(ck.metadata, opt.metadata);
    EXPECT_TRUE(check_safetensors_folder(out).empty());
    for (const std::string& f : ck.files) {
      EXPECT_EQ(read_safetensors_file(f).metadata, opt.metadata) << f;
      EXPECT_EQ(raw_header(f).length % 8, 0u) << f;
    }
  }
}

TEST(SafetensorsWriter, ShardNamesFollowTransformers) {
  EXPECT_EQ(safetensors_shard_name(0, 2), "model-00001-of-00002.safetensors");
  EXPECT_EQ(safetensors_shard_name(11, 12), "model-00012-of-00012.safetensors");
}

TEST(SafetensorsWriter, ShardedFolderNameWithTrailingSlash) {
  const MemoryTensors m = shard_test_tensors();
  TempDir tmp;
  SafetensorsWriteOptions opt;
  opt.max_shard_bytes = 300;
  write_safetensors(tmp.file("out/"), m.specs, m.source(), opt);
  expect_equal_to(read_safetensors_folder(tmp.file("out")), m);
}

// ---- atomic output and byte counting ----

TEST(SafetensorsWriter, FailingSourceLeavesNothing) {
  const MemoryTensors m = shard_test_tensors();
  const TensorSource base = m.source();
  const TensorSource failing = [&](size_t index, const ByteSink& sink) {
    if (index == 5) {
      sink(std::span<const std::byte>(m.data[5]).first(10));
      throw std::runtime_error("disk on fire");
    }
    base(index, sink);
  };
  for (const uint64_t max_bytes : {uint64_t{0}, uint64_t{100}}) {
    SCOPED_TRACE(max_bytes);
    TempDir tmp;
    SafetensorsWriteOptions opt;
    opt.max_shard_bytes = max_bytes;
    EXPECT_THROW(write_safetensors(tmp.file("out"), m.specs, failing, opt), std::runtime_error);
    EXPECT_TRUE(list_dir(tmp.path()).empty()) << "no output and no temporary file or folder";
  }
}

TEST(SafetensorsWriter, SourceGivingTooFewOrTooManyBytesFailsNamingTheTensor) {
  MemoryTensors m;
  m.add("good", DType::kF32, {2});
  m.add("bad", DType::kF32, {2, 4});  // 32 bytes
  for (const int delta : {-1, +1}) {
    SCOPED_TRACE(delta);
    const TensorSource source = [&](size_t index, const ByteSink& sink) {
      std::vector<std::byte> bytes = m.data[index];
      if (index == 1) bytes.resize(static_cast<size_t>(static_cast<int>(bytes.size()) + delta));
      sink(bytes);
    };
    for (const uint64_t max_bytes : {uint64_t{0}, uint64_t{16}}) {
      TempDir tmp;
      SafetensorsWriteOptions opt;
      opt.max_shard_bytes = max_bytes;
      try {
        write_safetensors(tmp.file("out"), m.specs, source, opt);
        ADD_FAILURE() << "expected FormatError";
      } catch (const FormatError& e) {
        const std::string what = e.what();
        EXPECT_NE(what.find("tensor 'bad' (F32 [2, 4], 32 bytes)"), std::string::npos) << what;
        EXPECT_NE(what.find(delta < 0 ? "gave 31 of the 32 bytes" : "more than the 32 bytes"), std::string::npos)
            << what;
        EXPECT_EQ(what.find(".tmp-"), std::string::npos) << "messages name the final path: " << what;
      }
      EXPECT_TRUE(list_dir(tmp.path()).empty());
    }
  }
}

TEST(SafetensorsWriter, ExistingFileIsUntouchedWithoutOverwrite) {
  MemoryTensors m;
  m.add("w", DType::kF32, {2});
  TempDir tmp;
  const std::string path = tmp.file("out.safetensors");
  const std::vector<std::byte> old = {std::byte{'o'}, std::byte{'l'}, std::byte{'d'}};
  test::write_file_bytes(path, old);
  EXPECT_THROW(write_safetensors(path, m.specs, m.source()), UsageError);
  EXPECT_EQ(test::read_file_bytes(path), old);

  SafetensorsWriteOptions opt;
  opt.overwrite = true;
  write_safetensors(path, m.specs, m.source(), opt);
  expect_equal_to(read_safetensors_file(path), m);
  EXPECT_EQ(list_dir(tmp.path()), std::vector<std::string>{"out.safetensors"});
}

TEST(SafetensorsWriter, ExistingFolderIsUntouchedWithoutOverwriteAndReplacedWithIt) {
  const MemoryTensors m = shard_test_tensors();
  TempDir tmp;
  const std::string out = tmp.file("out");
  fs::create_directory(out);
  test::write_file_bytes(out + "/marker", {std::byte{1}});
  SafetensorsWriteOptions opt;
  opt.max_shard_bytes = 200;
  EXPECT_THROW(write_safetensors(out, m.specs, m.source(), opt), UsageError);
  EXPECT_EQ(list_dir(out), std::vector<std::string>{"marker"});

  opt.overwrite = true;
  write_safetensors(out, m.specs, m.source(), opt);
  expect_equal_to(read_safetensors_folder(out), m);
  EXPECT_FALSE(fs::exists(out + "/marker")) << "the folder is replaced as a whole";
  EXPECT_EQ(list_dir(tmp.path()), std::vector<std::string>{"out"});

  // Overwriting an earlier sharded output with a differently sharded one.
  opt.max_shard_bytes = 1 << 20;
  write_safetensors(out, m.specs, m.source(), opt);
  EXPECT_EQ(read_safetensors_folder(out).files.size(), 1u);
  EXPECT_EQ(list_dir(out).size(), 2u);
}

TEST(SafetensorsWriter, OverwriteRefusesAFolderWithSubfolders) {
  const MemoryTensors m = shard_test_tensors();
  TempDir tmp;
  const std::string out = tmp.file("home");
  fs::create_directories(out + "/projects");
  SafetensorsWriteOptions opt;
  opt.max_shard_bytes = 200;
  opt.overwrite = true;
  EXPECT_THROW(write_safetensors(out, m.specs, m.source(), opt), UsageError);
  EXPECT_TRUE(fs::is_directory(out + "/projects"));
  EXPECT_EQ(list_dir(tmp.path()), std::vector<std::string>{"home"});
}

// ---- spec validation happens before anything is written ----

struct BadSpecCase {
  std::string label;
  std::vector<TensorSpec> specs;
  bool unsupported;
  std::vector<std::string> expected;  // substrings of the message
};

class SafetensorsBadSpecs : public ::testing::TestWithParam<BadSpecCase> {};

TEST_P(SafetensorsBadSpecs, RejectedUpFront) {
  const BadSpecCase& c = GetParam();
  for (const uint64_t max_bytes : {uint64_t{0}, uint64_t{64}}) {
    TempDir tmp;
    size_t calls = 0;
    const TensorSource source = [&](size_t, const ByteSink&) { ++calls; };
    SafetensorsWriteOptions opt;
    opt.max_shard_bytes = max_bytes;
    try {
      write_safetensors(tmp.file("out"), c.specs, source, opt);
      ADD_FAILURE() << "expected an error";
    } catch (const Error& e) {
      EXPECT_EQ(e.code(), ExitCode::kInvalidInput);
      EXPECT_EQ(dynamic_cast<const UnsupportedError*>(&e) != nullptr, c.unsupported) << e.what();
      for (const auto& s : c.expected) EXPECT_NE(std::string(e.what()).find(s), std::string::npos) << e.what();
    }
    EXPECT_EQ(calls, 0u);
    EXPECT_TRUE(list_dir(tmp.path()).empty());
  }
}

INSTANTIATE_TEST_SUITE_P(
    Writer, SafetensorsBadSpecs,
    ::testing::Values(
        BadSpecCase{"duplicate", {{"w", DType::kF32, {1}}, {"w", DType::kF16, {2}}}, false, {"two tensors", "'w'"}},
        BadSpecCase{"reserved", {{"__metadata__", DType::kF32, {1}}}, false, {"'__metadata__'"}},
        BadSpecCase{"torch_only_dtype", {{"c", DType::kC128, {2}}}, true, {"tensor 'c'", "C128"}},
        BadSpecCase{"quantized_dtype", {{"q", DType::kQInt8, {2}}}, true, {"tensor 'q'", "QINT8"}},
        BadSpecCase{"negative_dim", {{"n", DType::kF32, {2, -1}}}, false, {"tensor 'n'", "[2, -1]"}},
        BadSpecCase{"f4_misfit", {{"f", DType::kF4, {3}}}, false, {"tensor 'f'", "F4 [3]", "whole number of bytes"}},
        BadSpecCase{"overflow", {{"o", DType::kF32, {int64_t{1} << 40, int64_t{1} << 40}}}, false, {"tensor 'o'"}},
        BadSpecCase{"not_utf8", {{"bad\xff", DType::kF32, {1}}}, false, {"not valid UTF-8"}}),
    [](const auto& param_info) { return param_info.param.label; });

}  // namespace
}  // namespace hx
