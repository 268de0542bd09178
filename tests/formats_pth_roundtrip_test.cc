// Round trips with the local PyTorch (Debian torch 1.13 via /usr/bin/python3; skipped when it is missing):
//  - torch.save (zip and legacy formats; views, shared storages, every dtype torch 1.13 has, nested containers,
//    parameters, a module state dict, legacy storage views) -> read_pth, checked against what torch.load reports;
//  - write_pth -> torch.load(weights_only=True), checked by SHA-256 of every tensor's contiguous bytes, including
//    ZIP64-forced archives and raw bit patterns (NaN payloads, every byte value);
//  - float8 (torch 1.13 has none): oracle dtypes.pth -> write_pth -> read_pth, bytes and pickle structure compared.
// The Python side is tests/python/pth_roundtrip.py.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <random>
#include <string>
#include <vector>

#include "formats/checkpoint.h"
#include "formats/errors.h"
#include "formats/pickle.h"
#include "formats/pth.h"
#include "formats/sha256.h"
#include "formats/zip.h"
#include "tests/support/test_support.h"

namespace hx {
namespace {

using nlohmann::json;
using nlohmann::ordered_json;
namespace fs = std::filesystem;

std::string script() { return test::tests_dir() + "/python/pth_roundtrip.py"; }
std::string python() { return HXFORGE_PYTHON; }

std::string torch_dtype_name(DType d) { return std::string(dtype_info(d).torch_name); }

// {name: {dtype, shape, sha256}} in tensor order, for `pth_roundtrip.py check`.
void write_expected(const std::string& path, const std::vector<NamedTensor>& tensors) {
  ordered_json j = ordered_json::object();
  for (const auto& t : tensors)
    j[t.name] = {{"dtype", torch_dtype_name(t.view.dtype)}, {"shape", t.view.shape},
                 {"sha256", to_hex(sha256_tensor(t.view))}};
  std::ofstream(path) << j.dump(1);
}

// torch.load(weights_only=True) of `pth` must agree with `tensors`.
void expect_torch_loads(const std::string& pth, const std::vector<NamedTensor>& tensors, const std::string& dir) {
  const std::string expected = dir + "/expected-" + fs::path(pth).filename().string() + ".json";
  write_expected(expected, tensors);
  const auto r = test::run_command(python() + " " + test::shell_quote(script()) + " check " + test::shell_quote(pth) +
                                   " " + test::shell_quote(expected));
  EXPECT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("OK " + std::to_string(tensors.size())), std::string::npos) << r.output;
}

void expect_same_tensors(const Checkpoint& a, const Checkpoint& b) {
  ASSERT_EQ(a.tensors.size(), b.tensors.size());
  for (size_t i = 0; i < a.tensors.size(); ++i) {
    SCOPED_TRACE(a.tensors[i].name);
    EXPECT_EQ(a.tensors[i].name, b.tensors[i].name);
    EXPECT_EQ(a.tensors[i].view.dtype, b.tensors[i].view.dtype);
    EXPECT_EQ(a.tensors[i].view.shape, b.tensors[i].view.shape);
    EXPECT_EQ(to_contiguous_bytes(a.tensors[i].view), to_contiguous_bytes(b.tensors[i].view));
  }
}

class PthTorchRoundTrip : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    if (!test::python_torch_available()) return;
    made_ = new test::TempDir();
    const auto r = test::run_command(python() + " " + test::shell_quote(script()) + " make " +
                                     test::shell_quote(made_->path()));
    ASSERT_EQ(r.exit_code, 0) << r.output;
    std::ifstream f(made_->file("manifest.json"));
    manifest_ = new json(json::parse(f));
  }
  static void TearDownTestSuite() {
    delete manifest_;
    delete made_;
    manifest_ = nullptr;
    made_ = nullptr;
  }
  void SetUp() override {
    if (!test::python_torch_available()) GTEST_SKIP() << "/usr/bin/python3 cannot import torch";
    ASSERT_NE(manifest_, nullptr);
  }
  static test::TempDir* made_;
  static json* manifest_;
};
test::TempDir* PthTorchRoundTrip::made_ = nullptr;
json* PthTorchRoundTrip::manifest_ = nullptr;

TEST_F(PthTorchRoundTrip, ReadsEveryFileTorchWrote) {
  ASSERT_EQ(manifest_->size(), 11u);
  for (const auto& [file, m] : manifest_->items()) {
    SCOPED_TRACE(file);
    const Checkpoint ck = read_pth(made_->file(file));
    EXPECT_EQ(ck.format, m.at("format") == "legacy" ? CheckpointFormat::kPthLegacy : CheckpointFormat::kPth);
    const json& tensors = m.at("tensors");
    ASSERT_EQ(ck.tensors.size(), tensors.size());
    std::map<int64_t, std::pair<const std::byte*, size_t>> groups;
    for (size_t i = 0; i < tensors.size(); ++i) {
      const json& t = tensors[i];
      const TensorView& v = ck.tensors[i].view;
      SCOPED_TRACE(t.at("path").get<std::string>());
      EXPECT_EQ(ck.tensors[i].name, t.at("path").get<std::string>());
      EXPECT_EQ(torch_dtype_name(v.dtype), t.at("dtype").get<std::string>());
      EXPECT_EQ(v.shape, t.at("shape").get<Shape>());
      EXPECT_EQ(v.strides, t.at("stride").get<Shape>());
      EXPECT_EQ(v.storage_offset, t.at("storage_offset").get<int64_t>());
      EXPECT_EQ(v.storage.bytes.size(), t.at("storage_nbytes").get<uint64_t>());
      EXPECT_EQ(to_hex(sha256_tensor(v)), t.at("sha256_contiguous").get<std::string>());
      const auto here = std::make_pair(v.storage.bytes.data(), v.storage.bytes.size());
      const auto [it, first] = groups.emplace(t.at("storage_group").get<int64_t>(), here);
      if (!first) {
        EXPECT_EQ(it->second, here) << "tensors of one torch storage must share one Storage";
      }
      for (const auto& [g, other] : groups)
        if (g != t.at("storage_group").get<int64_t>() && here.second > 0) {
          EXPECT_NE(other, here) << "group " << g;
        }
    }
    const json& leaves = m.at("non_tensor_leaves");
    ASSERT_EQ(ck.other_leaves.size(), leaves.size());
    for (size_t i = 0; i < leaves.size(); ++i) {
      EXPECT_EQ(ck.other_leaves[i].path, leaves[i].at("path").get<std::string>());
      EXPECT_EQ(ck.other_leaves[i].type, leaves[i].at("type").get<std::string>());
    }
  }
}

TEST_F(PthTorchRoundTrip, TorchLoadsWhatWeWriteBitExactly) {
  test::TempDir out;
  for (const auto& [file, m] : manifest_->items()) {
    SCOPED_TRACE(file);
    const Checkpoint original = read_pth(made_->file(file));
    const std::string written = out.file("ours-" + file);
    write_pth(written, specs_of(original.tensors), source_of(original.tensors));
    expect_torch_loads(written, original.tensors, out.path());
    const Checkpoint back = read_pth(written);  // and our own reader agrees, with contiguous tensors now
    EXPECT_EQ(back.format, CheckpointFormat::kPth);
    expect_same_tensors(original, back);
    for (const auto& t : back.tensors) {
      EXPECT_TRUE(t.view.is_contiguous()) << t.name;
      EXPECT_EQ(t.view.storage_offset, 0) << t.name;
    }
  }
}

TEST_F(PthTorchRoundTrip, EveryTorchDtypeWithRawBitPatterns) {
  // Every dtype torch 1.13 can hold, filled with pseudo-random bytes (NaN payloads, subnormals, every byte value):
  // a writer that converted or normalised anything would change the hash.
  std::mt19937_64 rng(42);
  std::vector<std::vector<std::byte>> buffers;
  std::vector<NamedTensor> tensors;
  for (const DTypeInfo& info : all_dtypes()) {
    if (info.legacy_storage.empty() || info.kind == DKind::kQuantized) continue;  // 1.13 lacks the v3 dtypes
    std::vector<std::byte> bytes(static_cast<size_t>(info.bits / 8) * 35);
    for (auto& b : bytes) b = static_cast<std::byte>(info.kind == DKind::kBool ? rng() & 1 : rng() & 0xFF);
    tensors.push_back({"t_" + std::string(info.torch_name), TensorView::contiguous(info.id, {5, 7}, Storage::owned(bytes))});
  }
  ASSERT_EQ(tensors.size(), 12u);  // bool u8 i8 i16 i32 i64 f16 bf16 f32 f64 c64 c128
  test::TempDir out;
  for (const bool zip64 : {false, true}) {
    const std::string path = out.file(zip64 ? "zip64.pth" : "plain.pth");
    PthWriteOptions opt;
    opt.force_zip64 = zip64;
    opt.archive_name = zip64 ? "weird_root.name" : "archive";
    write_pth(path, specs_of(tensors), source_of(tensors), opt);
    expect_torch_loads(path, tensors, out.path());
    const Checkpoint back = read_pth(path);
    Checkpoint original;
    original.tensors = tensors;
    expect_same_tensors(original, back);
  }
}

TEST_F(PthTorchRoundTrip, PythonZipfileAcceptsOurArchives) {
  std::vector<NamedTensor> tensors;
  tensors.push_back({"w", TensorView::contiguous(DType::kF32, {3, 3}, Storage::owned(std::vector<std::byte>(36, std::byte{7})))});
  test::TempDir out;
  for (const bool zip64 : {false, true}) {
    const std::string path = out.file(zip64 ? "z64.pth" : "z.pth");
    PthWriteOptions opt;
    opt.force_zip64 = zip64;
    write_pth(path, specs_of(tensors), source_of(tensors), opt);
    // testzip() re-reads every record and checks its CRC; the data offsets must be 64-byte aligned.
    const auto r = test::run_command(
        python() + " -c \"import zipfile,sys; z=zipfile.ZipFile(sys.argv[1]); assert z.testzip() is None; "
                   "import struct; f=open(sys.argv[1],'rb').read(); "
                   "offs=[i.header_offset+30+struct.unpack('<HH',f[i.header_offset+26:i.header_offset+30])[0]+"
                   "struct.unpack('<HH',f[i.header_offset+26:i.header_offset+30])[1] for i in z.infolist()]; "
                   "assert all(o % 64 == 0 for o in offs), offs; print('names', [i.filename for i in z.infolist()])\" " +
        test::shell_quote(path));
    EXPECT_EQ(r.exit_code, 0) << r.output;
    EXPECT_NE(r.output.find("'archive/data.pkl', 'archive/.format_version', 'archive/.storage_alignment', "
                            "'archive/byteorder', 'archive/data/0', 'archive/version'"),
              std::string::npos)
        << r.output;
  }
}

// ---- float8: no torch here can load it, so compare with what torch 2.11 wrote (oracle dtypes.pth) ----

TEST(PthFloat8, OracleDtypesSurviveOurWriter) {
  const Checkpoint oracle = read_pth(test::oracle_dir() + "/pth/dtypes.pth");
  test::TempDir out;
  const std::string path = out.file("dtypes-ours.pth");
  write_pth(path, specs_of(oracle.tensors), source_of(oracle.tensors));
  const Checkpoint back = read_pth(path);
  expect_same_tensors(oracle, back);
  int float8 = 0;
  for (const auto& t : back.tensors) float8 += (t.view.dtype == DType::kF8_E4M3 || t.view.dtype == DType::kF8_E5M2);
  EXPECT_EQ(float8, 2);
}

// Our data.pkl must describe float8 tensors exactly as torch 2.11's does: _rebuild_tensor_v3, UntypedStorage with
// the size in bytes, the dtype as a torch global; and every other dtype through _rebuild_tensor_v2 + typed storage.
TEST(PthFloat8, PickleMirrorsTorch2) {
  const ZipArchive oracle_zip = ZipArchive::open(test::oracle_dir() + "/pth/dtypes.pth");
  const PickleResult theirs = parse_pickle(oracle_zip.read("dtypes/data.pkl").bytes, PickleSource{"dtypes.pth", "data.pkl"});
  const Checkpoint oracle = read_pth(test::oracle_dir() + "/pth/dtypes.pth");
  const auto pickle = encode_pth_state_dict(specs_of(oracle.tensors));
  const PickleResult ours = parse_pickle(pickle, PickleSource{"ours", "data.pkl"});
  ASSERT_EQ(ours.tensors.size(), theirs.tensors.size());
  for (size_t i = 0; i < ours.tensors.size(); ++i) {
    SCOPED_TRACE(oracle.tensors[i].name);
    const PyTensorRef& a = ours.tensors[i];
    const PyTensorRef& b = theirs.tensors[i];
    EXPECT_EQ(a.dtype, b.dtype);
    EXPECT_EQ(a.shape, b.shape);
    EXPECT_EQ(a.strides, b.strides);
    EXPECT_EQ(a.storage_offset, b.storage_offset);
    EXPECT_EQ(a.requires_grad, b.requires_grad);
    const PyStorageRef& sa = ours.storages[static_cast<size_t>(ours.at(a.storage).int_value)];
    const PyStorageRef& sb = theirs.storages[static_cast<size_t>(theirs.at(b.storage).int_value)];
    EXPECT_EQ(sa.storage_class, sb.storage_class);
    EXPECT_EQ(sa.dtype, sb.dtype);
    EXPECT_EQ(sa.numel, sb.numel);
    EXPECT_EQ(sa.key, sb.key);
    EXPECT_EQ(sa.location, sb.location);
  }
  // The very globals torch 2.11 used, byte for byte in GLOBAL form.
  const std::string text(reinterpret_cast<const char*>(pickle.data()), pickle.size());
  for (const char* g : {"ctorch._utils\n_rebuild_tensor_v3\n", "ctorch.storage\nUntypedStorage\n",
                        "ctorch\nfloat8_e4m3fn\n", "ctorch\nfloat8_e5m2\n", "ctorch._utils\n_rebuild_tensor_v2\n",
                        "ctorch\nBFloat16Storage\n", "ccollections\nOrderedDict\n"})
    EXPECT_NE(text.find(g), std::string::npos) << g;
}

// ---- writer errors (no torch needed) ----

std::vector<NamedTensor> one_tensor(DType d, Shape shape, size_t bytes) {
  return {{"x", TensorView::contiguous(d, std::move(shape), Storage::owned(std::vector<std::byte>(bytes)))}};
}

template <typename E>
std::string thrown(const std::function<void()>& f) {
  try {
    f();
  } catch (const E& e) {
    return e.what();
  }
  return "(nothing thrown)";
}

TEST(PthWriter, RefusesBadInputAndLeavesNothingBehind) {
  test::TempDir dir;
  const std::string path = dir.file("out.pth");
  const auto f4 = one_tensor(DType::kF4, {4}, 2);
  EXPECT_NE(thrown<UnsupportedError>([&] { write_pth(path, specs_of(f4), source_of(f4)); }).find("dtype F4 has no torch"),
            std::string::npos);
  const auto q = one_tensor(DType::kQInt8, {4}, 4);
  EXPECT_NE(thrown<UnsupportedError>([&] { write_pth(path, specs_of(q), source_of(q)); }).find("quantized dtype QINT8"),
            std::string::npos);
  const auto ok = one_tensor(DType::kF32, {4}, 16);
  auto dup = ok;
  dup.push_back(ok[0]);
  EXPECT_NE(thrown<FormatError>([&] { write_pth(path, specs_of(dup), source_of(dup)); }).find("two tensors are named 'x'"),
            std::string::npos);
  // A source that delivers too few or too many bytes is caught and named.
  const TensorSource short_source = [](size_t, const ByteSink& sink) { sink(std::vector<std::byte>(12)); };
  EXPECT_NE(thrown<FormatError>([&] { write_pth(path, specs_of(ok), short_source); })
                .find("tensor 'x': the source delivered 12 bytes, expected 16"),
            std::string::npos);
  const TensorSource long_source = [](size_t, const ByteSink& sink) { sink(std::vector<std::byte>(20)); };
  EXPECT_NE(thrown<FormatError>([&] { write_pth(path, specs_of(ok), long_source); }).find("more than the 16 bytes"),
            std::string::npos);
  EXPECT_TRUE(fs::is_empty(dir.path())) << "a failed write left files behind";
  // Existing output: refused unless overwrite.
  write_pth(path, specs_of(ok), source_of(ok));
  EXPECT_NE(thrown<Error>([&] { write_pth(path, specs_of(ok), source_of(ok)); }).find("already exists"), std::string::npos);
  PthWriteOptions overwrite;
  overwrite.overwrite = true;
  write_pth(path, specs_of(ok), source_of(ok), overwrite);
  EXPECT_EQ(read_pth(path).tensors.size(), 1u);
  EXPECT_THROW(write_pth(path, specs_of(ok), source_of(ok), PthWriteOptions{true, "a/b"}), UsageError);
}

TEST(PthWriter, EmptyAndZeroSizedTensors) {
  test::TempDir dir;
  std::vector<NamedTensor> none;
  write_pth(dir.file("empty.pth"), {}, source_of(none));
  EXPECT_TRUE(read_pth(dir.file("empty.pth")).tensors.empty());
  std::vector<NamedTensor> zero = {{"z", TensorView::contiguous(DType::kF16, {0, 4}, Storage::owned({}))},
                                   {"s", TensorView::contiguous(DType::kI64, {}, Storage::owned(std::vector<std::byte>(8, std::byte{1})))}};
  write_pth(dir.file("zero.pth"), specs_of(zero), source_of(zero));
  const Checkpoint back = read_pth(dir.file("zero.pth"));
  ASSERT_EQ(back.tensors.size(), 2u);
  EXPECT_EQ(back.tensors[0].view.shape, (Shape{0, 4}));
  EXPECT_EQ(back.tensors[0].view.strides, (Shape{4, 1}));  // torch's strides for a [0, 4] tensor
  EXPECT_TRUE(back.tensors[1].view.shape.empty());
  EXPECT_EQ(to_contiguous_bytes(back.tensors[1].view), std::vector<std::byte>(8, std::byte{1}));
}

TEST(PthWriter, ManyTensorsBatchSetItemsAndLargeInts) {
  // 2500 tensors: three SETITEMS batches, memo indices beyond 255 are not needed for globals, shapes need BININT2,
  // BININT and LONG1 encodings.
  std::vector<NamedTensor> tensors;
  for (int i = 0; i < 2500; ++i)
    tensors.push_back({"layer." + std::to_string(i), TensorView::contiguous(DType::kU8, {1, 1}, Storage::owned({std::byte(i & 0xFF)}))});
  test::TempDir dir;
  write_pth(dir.file("many.pth"), specs_of(tensors), source_of(tensors));
  const Checkpoint back = read_pth(dir.file("many.pth"));
  ASSERT_EQ(back.tensors.size(), 2500u);
  EXPECT_EQ(back.tensors[2499].name, "layer.2499");
  EXPECT_EQ(std::to_integer<int>(back.tensors[2499].view.storage.bytes[0]), 2499 & 0xFF);

  const std::vector<TensorSpec> huge = {{"h", DType::kU8, {70000, 3000000000LL, 0}}};
  const PickleResult p = parse_pickle(encode_pth_state_dict(huge), PickleSource{"huge", "data.pkl"});
  ASSERT_EQ(p.tensors.size(), 1u);
  EXPECT_EQ(p.tensors[0].shape, (Shape{70000, 3000000000LL, 0}));
  EXPECT_EQ(p.tensors[0].strides, (Shape{3000000000LL, 1, 1}));
}

}  // namespace
}  // namespace hx
