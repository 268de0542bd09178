// The pickle machine on its own: pickles written by CPython (protocols 2, 4 and 5: FRAME, MEMOIZE,
// SHORT_BINUNICODE, STACK_GLOBAL, EMPTY_SET/ADDITEMS, BINFLOAT, LONG1, _codecs.encode bytes, NEWOBJ complex) read into
// the same leaves Python sees (paths, types and repr text); the encoder's integers round trip at every width; the
// named limits hold.
#include <gtest/gtest.h>

#include <fstream>
#include <limits>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "formats/errors.h"
#include "formats/mapped_file.h"
#include "formats/pickle.h"
#include "formats/pth.h"
#include "formats/zip.h"
#include "tests/support/test_support.h"

namespace hx {
namespace {

using Bytes = std::vector<std::byte>;

Bytes repeat(std::initializer_list<uint8_t> head, uint8_t op, size_t n, std::initializer_list<uint8_t> tail) {
  Bytes b;
  for (uint8_t c : head) b.push_back(std::byte{c});
  b.insert(b.end(), n, std::byte{op});
  for (uint8_t c : tail) b.push_back(std::byte{c});
  return b;
}

std::string error_of(const Bytes& pickle) {
  try {
    parse_pickle(pickle, PickleSource{"f.pth", "data.pkl"});
  } catch (const Error& e) {
    return e.what();
  }
  return "(accepted)";
}

TEST(PickleEncoder, IntegersRoundTripAtEveryWidth) {
  const std::vector<int64_t> values = {0,          1,          255,        256,       65535,     65536,
                                       -1,         -256,       INT32_MIN,  INT32_MAX, 1LL << 31, -(1LL << 31) - 1,
                                       1LL << 40,  -(1LL << 40), 0x7F00000000000000LL, std::numeric_limits<int64_t>::min(),
                                       std::numeric_limits<int64_t>::max(), 128, -128, 0x8000, -0x8001};
  PickleEncoder e;
  e.int_tuple(values);
  const Bytes pickle = e.finish();
  const PickleResult r = parse_pickle(pickle, PickleSource{"mem", "ints"});
  const PyObject& t = r.at(r.root);
  ASSERT_EQ(t.kind, PyKind::kTuple);
  ASSERT_EQ(t.items.size(), values.size());
  for (size_t i = 0; i < values.size(); ++i) {
    EXPECT_EQ(r.at(t.items[i]).kind, PyKind::kInt);
    EXPECT_EQ(r.at(t.items[i]).int_value, values[i]) << i;
  }
  EXPECT_EQ(r.consumed, pickle.size());
}

TEST(PickleEncoder, GlobalsAreMemoizedAndStrEncoded) {
  PickleEncoder e;
  e.mark();
  for (int i = 0; i < 300; ++i) e.global("collections", i % 2 ? "OrderedDict" : "OrderedDict");
  e.str("na\xc3\xafve");
  e.boolean(true);
  e.none();
  e.tuple_from_mark();
  const Bytes pickle = e.finish();
  const std::string text(reinterpret_cast<const char*>(pickle.data()), pickle.size());
  EXPECT_EQ(text.find("OrderedDict"), text.rfind("OrderedDict")) << "GLOBAL written more than once";
  const PickleResult r = parse_pickle(pickle, PickleSource{"mem", "globals"});
  const PyObject& t = r.at(r.root);
  ASSERT_EQ(t.items.size(), 303u);
  EXPECT_EQ(r.at(t.items[299]).kind, PyKind::kGlobal);
  EXPECT_EQ(r.at(t.items[299]).global, TorchGlobal::kOrderedDict);
  EXPECT_EQ(r.at(t.items[300]).text, "na\xc3\xafve");
  EXPECT_TRUE(r.at(t.items[301]).flag);
  EXPECT_EQ(r.at(t.items[302]).kind, PyKind::kNone);
}

// Python pickles plain data with each protocol; its own flattening and repr() are the expectation for ours.
class PicklePython : public ::testing::TestWithParam<int> {};

TEST_P(PicklePython, LeavesMatchPythonsView) {
  const int protocol = GetParam();
  test::TempDir dir;
  const std::string script = dir.file("make.py");
  std::ofstream(script) << R"PY(
import collections, json, pickle, sys
protocol, out = int(sys.argv[1]), sys.argv[2]
obj = {
    "ints": [0, 1, -1, 255, 256, 65535, 65536, -2**31, 2**31, 2**63 - 1, -2**63, 2**64, -2**100, 12345678901234567890123],
    "floats": [0.5, 2.5, -0.0, 0.1, 1e16, 1e15, 1e-5, 0.0001, 123456789.0, 1e300, 2.5e-300, float("inf"), float("-inf"), float("nan"), 1/3],
    "text": ["tiny", "", "na\u00efve \u2603", "quote ' and \\ backslash"],
    "bytes": [b"\x00\xff\x10abc'", b""],
    "flags": (True, False, None),
    "nested": {"deep": [[[{"x": 1}]]], 7: "int key", (1, 2): "tuple key", 0.5: "float key", None: "none key"},
    "sets": [{1, 2, 3}, frozenset({4}), set()],
    "complex": [1 + 2j, -0.5j],
    "bytearray": bytearray(b"\x01\x02"),
    "ordered": collections.OrderedDict([("b", 1), ("a", 2)]),
}
def flatten(o, path, leaves):
    if isinstance(o, dict):
        for k, v in o.items():
            flatten(v, f"{path}/{k}" if path else str(k), leaves)
    elif isinstance(o, (list, tuple)):
        for i, v in enumerate(o):
            flatten(v, f"{path}/{i}" if path else str(i), leaves)
    else:
        t = type(o).__name__
        if isinstance(o, (set, frozenset)):
            t = "set"
        if isinstance(o, bytearray):
            t, o = "bytes", bytes(o)
        leaves.append([path, t, o if isinstance(o, str) else repr(o) if not isinstance(o, frozenset) else repr(set(o))])
leaves = []
flatten(obj, "", leaves)
with open(out + ".pkl", "wb") as f:
    pickle.dump(obj, f, protocol=protocol)
with open(out + ".json", "w") as f:
    json.dump(leaves, f)
)PY";
  const auto r = test::run_command("/usr/bin/python3 " + test::shell_quote(script) + " " + std::to_string(protocol) +
                                   " " + test::shell_quote(dir.file("obj")));
  ASSERT_EQ(r.exit_code, 0) << r.output;

  // Wrap the pickle as a torch archive's data.pkl and read it like any .pth.
  const Bytes pickle = test::read_file_bytes(dir.file("obj.pkl"));
  {
    AtomicOutputFile out(dir.file("obj.pth"), false);
    ZipWriter zip(out);
    zip.add_record("obj/data.pkl", pickle);
    zip.finish();
    out.commit();
  }
  const Checkpoint ck = read_pth(dir.file("obj.pth"));
  EXPECT_TRUE(ck.tensors.empty());
  std::ifstream f(dir.file("obj.json"));
  const auto expected = nlohmann::json::parse(f);
  ASSERT_EQ(ck.other_leaves.size(), expected.size());
  for (size_t i = 0; i < expected.size(); ++i) {
    SCOPED_TRACE(expected[i][0].get<std::string>());
    EXPECT_EQ(ck.other_leaves[i].path, expected[i][0].get<std::string>());
    EXPECT_EQ(ck.other_leaves[i].type, expected[i][1].get<std::string>());
    EXPECT_EQ(ck.other_leaves[i].value, expected[i][2].get<std::string>());
  }
}

INSTANTIATE_TEST_SUITE_P(Protocols, PicklePython, ::testing::Values(2, 3, 4, 5));

TEST(PickleMachine, OrderedDictBuildStateIsKept) {
  // collections.OrderedDict() REDUCE, then BUILD with {'_metadata': {...}} as state dicts carry it.
  const Bytes p = [] {
    Bytes b;
    for (uint8_t c : std::initializer_list<uint8_t>{0x80, 2, 'c'}) b.push_back(std::byte{c});
    const char text[] = "collections\nOrderedDict\n)R}X\x09\x00\x00\x00_metadataNsb.";
    for (char c : std::string(text, sizeof text - 1))
      b.push_back(static_cast<std::byte>(c));
    return b;
  }();
  const PickleResult r = parse_pickle(p, PickleSource{"mem", "sd"});
  const PyObject& d = r.at(r.root);
  EXPECT_EQ(d.kind, PyKind::kDict);
  EXPECT_TRUE(d.flag);
  ASSERT_TRUE(d.build_state.has_value());
  EXPECT_EQ(r.at(*d.build_state).kind, PyKind::kDict);
  EXPECT_TRUE(d.items.empty());
}

TEST(PickleMachine, LimitsAreEnforcedByName) {
  // Objects: a list appended to 5M times stays one stack slot deep but creates 5M objects.
  Bytes many = {std::byte{0x80}, std::byte{2}, std::byte{']'}};
  for (int i = 0; i < 5'000'000; ++i) {
    many.push_back(std::byte{'N'});
    many.push_back(std::byte{'a'});
  }
  EXPECT_NE(error_of(many).find("more than 4194304 objects"), std::string::npos) << error_of(many);
  EXPECT_NE(error_of(repeat({0x80, 2}, 'N', kPickleMaxStackSize + 1, {'.'})).find("stack deeper than 1048576 values"),
            std::string::npos);
  EXPECT_NE(error_of(repeat({0x80, 2}, '(', kPickleMaxMarkDepth + 1, {'.'})).find("more than 65536 open MARKs"),
            std::string::npos);
  // Exactly at the nesting limit is fine, one more is not.
  Bytes at_limit = repeat({0x80, 2, ')'}, 0x85, kPickleMaxNesting, {'.'});
  EXPECT_EQ(parse_pickle(at_limit, PickleSource{"mem", "nest"}).at(0).kind, PyKind::kTuple);
  EXPECT_NE(error_of(repeat({0x80, 2, ')'}, 0x85, kPickleMaxNesting + 1, {'.'})).find("nested deeper than 256"),
            std::string::npos);
  const Bytes long_global = repeat({0x80, 2, 'c'}, 'a', kPickleMaxGlobalNameLength + 10, {'\n', 'b', '\n', '.'});
  EXPECT_NE(error_of(long_global).find("GLOBAL module is not a newline-terminated line"), std::string::npos);
}

TEST(PickleMachine, ConsumedStopsAtStopForBackToBackPickles) {
  const Bytes two = {std::byte{0x80}, std::byte{2}, std::byte{'K'}, std::byte{7}, std::byte{'.'},
                     std::byte{0x80}, std::byte{2}, std::byte{'N'}, std::byte{'.'}};
  const PickleResult first = parse_pickle(two, PickleSource{"mem", "first"});
  EXPECT_EQ(first.consumed, 5u);
  EXPECT_EQ(first.at(first.root).int_value, 7);
  const PickleResult second = parse_pickle(std::span(two).subspan(first.consumed), PickleSource{"mem", "second"});
  EXPECT_EQ(second.at(second.root).kind, PyKind::kNone);
}

}  // namespace
}  // namespace hx
