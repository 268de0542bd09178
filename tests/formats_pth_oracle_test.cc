// The .pth reader against files written by torch 2.11 itself (shared/fixtures/oracle/pth, README §4): every tensor's
// name, dtype, shape, strides, storage offset, storage size, storage sharing and SHA-256 must match manifest.json,
// the bytes must equal expected_*.safetensors, non-tensor leaves must match, and malicious.pth must be refused.
#include <gtest/gtest.h>

#include <cstring>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "formats/errors.h"
#include "formats/mapped_file.h"
#include "formats/pickle.h"
#include "formats/pth.h"
#include "formats/sha256.h"
#include "formats/zip.h"
#include "tests/support/test_support.h"

namespace hx {
namespace {

using nlohmann::json;

std::string pth_dir() { return test::oracle_dir() + "/pth"; }

json manifest() {
  std::ifstream f(pth_dir() + "/manifest.json");
  return json::parse(f);
}

// A minimal safetensors parser for the expected files (independent of formats/safetensors*): name -> (dtype, shape,
// bytes) plus __metadata__.
struct ExpectedTensor {
  std::string dtype;
  std::vector<int64_t> shape;
  std::vector<std::byte> bytes;
};
struct ExpectedFile {
  std::map<std::string, ExpectedTensor> tensors;
  std::map<std::string, std::string> metadata;
};

ExpectedFile read_expected(const std::string& path) {
  const auto raw = test::read_file_bytes(path);
  uint64_t n = 0;
  for (int i = 7; i >= 0; --i) n = (n << 8) | std::to_integer<uint64_t>(raw.at(static_cast<size_t>(i)));
  const json header = json::parse(std::string(reinterpret_cast<const char*>(raw.data()) + 8, n));
  ExpectedFile out;
  for (const auto& [name, info] : header.items()) {
    if (name == "__metadata__") {
      for (const auto& [k, v] : info.items()) out.metadata[k] = v.get<std::string>();
      continue;
    }
    ExpectedTensor t;
    t.dtype = info.at("dtype").get<std::string>();
    t.shape = info.at("shape").get<std::vector<int64_t>>();
    const auto begin = info.at("data_offsets")[0].get<uint64_t>(), end = info.at("data_offsets")[1].get<uint64_t>();
    t.bytes.assign(raw.begin() + static_cast<std::ptrdiff_t>(8 + n + begin),
                   raw.begin() + static_cast<std::ptrdiff_t>(8 + n + end));
    out.tensors[name] = std::move(t);
  }
  return out;
}

// How the reader is expected to render a manifest leaf value (NonTensorLeaf::value).
std::string leaf_text(const json& v) {
  if (v.is_null()) return "None";
  if (v.is_boolean()) return v.get<bool>() ? "True" : "False";
  if (v.is_string()) return v.get<std::string>();
  if (v.is_number_integer()) return std::to_string(v.get<int64_t>());
  return v.dump();  // floats: nlohmann prints the shortest round-trip form, as Python's repr does for these values
}

class PthOracle : public ::testing::TestWithParam<std::string> {};

TEST_P(PthOracle, MatchesManifestAndExpectedBytes) {
  const std::string file = GetParam();
  const json m = manifest().at("files").at(file);
  const Checkpoint ck = read_pth(pth_dir() + "/" + file);
  const bool legacy = m.at("format").get<std::string>().starts_with("legacy");
  EXPECT_EQ(ck.format, legacy ? CheckpointFormat::kPthLegacy : CheckpointFormat::kPth);
  ASSERT_EQ(ck.files.size(), 1u);

  const json& tensors = m.at("tensors");
  ASSERT_EQ(ck.tensors.size(), tensors.size());
  const ExpectedFile expected = read_expected(pth_dir() + "/" + m.at("expected").get<std::string>());
  std::map<int64_t, const Storage*> group_storage;
  for (size_t i = 0; i < tensors.size(); ++i) {
    const json& t = tensors[i];
    const NamedTensor& got = ck.tensors[i];
    const std::string path = t.at("path").get<std::string>();
    SCOPED_TRACE(file + ": " + path);
    EXPECT_EQ(got.name, path);  // pickle order is the manifest's order
    const auto dtype = dtype_from_torch_name(t.at("dtype").get<std::string>());
    ASSERT_TRUE(dtype.has_value());
    EXPECT_EQ(got.view.dtype, *dtype);
    EXPECT_EQ(got.view.shape, t.at("shape").get<Shape>());
    EXPECT_EQ(got.view.strides, t.at("stride").get<Shape>());
    EXPECT_EQ(got.view.storage_offset, t.at("storage_offset").get<int64_t>());
    EXPECT_EQ(got.view.storage.bytes.size(), t.at("storage_nbytes").get<uint64_t>());
    EXPECT_EQ(to_hex(sha256_tensor(got.view)), t.at("sha256_contiguous").get<std::string>());

    // Storage sharing: same group <=> the very same bytes.
    const int64_t group = t.at("storage_group").get<int64_t>();
    auto [it, first] = group_storage.emplace(group, &got.view.storage);
    if (!first) {
      EXPECT_EQ(it->second->bytes.data(), got.view.storage.bytes.data());
      EXPECT_EQ(it->second->bytes.size(), got.view.storage.bytes.size());
    }
    for (const auto& [other_group, storage] : group_storage)
      if (other_group != group && got.view.storage.bytes.size() > 0) {
        EXPECT_NE(storage->bytes.data(), got.view.storage.bytes.data()) << "groups " << group << " and " << other_group;
      }

    const auto e = expected.tensors.find(path);
    ASSERT_NE(e, expected.tensors.end());
    EXPECT_EQ(e->second.shape, got.view.shape);
    const auto real_dtype = expected.metadata.find("dtype:" + path);  // float8 is stored as U8 there
    if (real_dtype != expected.metadata.end()) {
      EXPECT_EQ(e->second.dtype, "U8");
      EXPECT_EQ(dtype_from_torch_name(real_dtype->second), got.view.dtype);
    } else {
      EXPECT_EQ(e->second.dtype, dtype_name(got.view.dtype));
    }
    EXPECT_EQ(to_contiguous_bytes(got.view), e->second.bytes);
  }

  const json& leaves = m.at("non_tensor_leaves");
  ASSERT_EQ(ck.other_leaves.size(), leaves.size());
  for (size_t i = 0; i < leaves.size(); ++i) {
    SCOPED_TRACE(file + ": leaf " + leaves[i].at("path").get<std::string>());
    EXPECT_EQ(ck.other_leaves[i].path, leaves[i].at("path").get<std::string>());
    EXPECT_EQ(ck.other_leaves[i].type, leaves[i].at("type").get<std::string>());
    EXPECT_EQ(ck.other_leaves[i].value, leaf_text(leaves[i].at("value")));
  }
}

INSTANTIATE_TEST_SUITE_P(Oracle, PthOracle,
                         ::testing::Values("dtypes.pth", "views.pth", "nested.pth", "state_dict.pth", "legacy.pth"),
                         [](const auto& param_info) {
                           std::string n = param_info.param;
                           return n.substr(0, n.find('.'));
                         });

TEST(PthOracle, ManifestListsEveryFixture) {
  // Guards the parameter list above: a new oracle file must be added there.
  const json m = manifest();
  std::vector<std::string> names;
  for (const auto& [name, info] : m.at("files").items())
    if (name != "malicious.pth") names.push_back(name);
  EXPECT_EQ(names, (std::vector<std::string>{"dtypes.pth", "legacy.pth", "nested.pth", "state_dict.pth", "views.pth"}));
}

TEST(PthOracle, StorageSharingInViews) {
  const Checkpoint ck = read_pth(pth_dir() + "/views.pth");
  const NamedTensor* a = ck.find("shared_a");
  const NamedTensor* b = ck.find("shared_b");
  ASSERT_TRUE(a && b);
  EXPECT_EQ(a->view.storage.bytes.data(), b->view.storage.bytes.data());
  EXPECT_EQ(a->view.storage.owner, b->view.storage.owner);
  // shared_b starts 10 floats into the storage shared_a starts at.
  const auto b_bytes = to_contiguous_bytes(b->view);
  EXPECT_EQ(std::memcmp(b_bytes.data(), a->view.storage.bytes.data() + 40, 4), 0);
  // The STORED records are zero-copy: the storage lies inside the mapped file that owns it.
  const auto file = std::static_pointer_cast<const MappedFile>(a->view.storage.owner);
  ASSERT_NE(file, nullptr);
  EXPECT_GE(a->view.storage.bytes.data(), file->bytes().data());
  EXPECT_LE(a->view.storage.bytes.data() + a->view.storage.bytes.size(), file->bytes().data() + file->size());
  EXPECT_EQ(static_cast<uint64_t>(a->view.storage.bytes.data() - file->bytes().data()) % kZipAlignment, 0u);
}

TEST(PthOracle, MaliciousIsRefusedNamingTheGlobal) {
  const std::string path = pth_dir() + "/malicious.pth";
  try {
    read_pth(path);
    FAIL() << "malicious.pth was accepted";
  } catch (const UnsupportedError& e) {
    const std::string msg = e.what();
    EXPECT_NE(msg.find("malicious.pth"), std::string::npos) << msg;
    EXPECT_NE(msg.find("forbidden global 'os.system' in malicious/data.pkl"), std::string::npos) << msg;
    EXPECT_NE(msg.find("only torch tensor-rebuild globals are allowed"), std::string::npos) << msg;
    EXPECT_EQ(e.code(), ExitCode::kInvalidInput);
  }
}

TEST(PthOracle, MaliciousPickleStopsAtTheGlobalBeforeAnyCall) {
  // The refusal happens at GLOBAL (byte 2), before the string argument or REDUCE are even read: nothing can run.
  const ZipArchive zip = ZipArchive::open(pth_dir() + "/malicious.pth");
  const Storage pkl = zip.read("malicious/data.pkl");
  try {
    parse_pickle(pkl.bytes, PickleSource{"malicious.pth", "malicious/data.pkl"});
    FAIL() << "accepted";
  } catch (const UnsupportedError& e) {
    EXPECT_NE(std::string(e.what()).find("in malicious/data.pkl (byte 2;"), std::string::npos) << e.what();
  }
}

TEST(PthOracle, DataPklOfFloat8UsesRebuildTensorV3) {
  // What our writer mirrors: torch 2.11 pickles float8 via UntypedStorage + _rebuild_tensor_v3 with a dtype global.
  const ZipArchive zip = ZipArchive::open(pth_dir() + "/dtypes.pth");
  const PickleResult p = parse_pickle(zip.read("dtypes/data.pkl").bytes, PickleSource{"dtypes.pth", "data.pkl"});
  bool found = false;
  for (const PyTensorRef& t : p.tensors) {
    const PyStorageRef& s = p.storages[static_cast<size_t>(p.at(t.storage).int_value)];
    if (t.dtype == DType::kF8_E4M3) {
      found = true;
      EXPECT_EQ(s.storage_class, "UntypedStorage");
      EXPECT_FALSE(s.dtype.has_value());
      EXPECT_EQ(s.numel, 11);  // bytes
    } else if (!t.dtype) {
      EXPECT_TRUE(s.dtype.has_value());  // every other dtype: a typed legacy storage class and _rebuild_tensor_v2
    }
  }
  EXPECT_TRUE(found);
}

TEST(PthOracle, Hxa079TinyModel) {
  const Checkpoint ck = read_pth(test::oracle_dir() + "/hxa079-tiny/model.pth");
  EXPECT_EQ(ck.format, CheckpointFormat::kPth);
  // README §3: per RWKV layer 26 tensors (x3), the GQA layer 9, plus emb, ln_out, head.
  EXPECT_EQ(ck.tensors.size(), 26u * 3 + 9 + 3);
  EXPECT_EQ(ck.tensors.front().name, "emb.weight");
  EXPECT_EQ(ck.tensors.front().view.shape, (Shape{512, 256}));
  EXPECT_EQ(ck.tensors.back().name, "head.weight");
  for (const auto& t : ck.tensors) EXPECT_EQ(t.view.dtype, DType::kBF16) << t.name;
  const NamedTensor* arch = ck.find("blocks.0.att.layer_architecture");
  ASSERT_NE(arch, nullptr);
  EXPECT_TRUE(arch->view.shape.empty());
  const auto b = to_contiguous_bytes(arch->view);  // bf16 78.0 = 0x429c
  ASSERT_EQ(b.size(), 2u);
  EXPECT_EQ(std::to_integer<int>(b[0]) | (std::to_integer<int>(b[1]) << 8), 0x429c);
}

}  // namespace
}  // namespace hx
