// `hxforge verify MODEL --manifest FILE` end to end: a converted student passes with cli.md's `hashes` fields in the
// JSON report; a tampered tensor fails with exit 1 naming it; a missing or garbled manifest is exit 3.
#include <gtest/gtest.h>

#include <fstream>
#include <nlohmann/json.hpp>

#include "formats/checkpoint.h"
#include "tests/support/test_support.h"

namespace hx::test {
namespace {

using json = nlohmann::json;

TEST(VerifyManifestCli, PassesThenNamesATamperedTensorThenRefusesBadManifests) {
  TempDir tmp;
  const std::string student = tmp.file("student"), manifest = tmp.file("student/manifest.json");
  ASSERT_EQ(run_hxforge("convert " + shell_quote(oracle_dir() + "/gemma4-tiny") +
                        " --to hxa07i --layout tiny -q --out " + shell_quote(student))
                .exit_code,
            0);
  const std::string verify = "verify " + shell_quote(student) + " --num-tokens 8 --manifest ";

  CommandResult r = run_hxforge(verify + shell_quote(manifest) + " --json " + shell_quote(tmp.file("ok.json")));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  const json ok = read_json(tmp.file("ok.json"));
  const size_t tensors = read_json(manifest)["tensors"].size();
  EXPECT_EQ(ok["hashes"]["checked"], tensors);
  EXPECT_EQ(ok["hashes"]["mismatched"], 0);
  EXPECT_EQ(ok["manifest"]["probe"]["ran"], true);
  EXPECT_TRUE(ok["passed"].get<bool>());

  // One byte of the last tensor's data flipped (the shard's tail), in place.
  const Checkpoint opened = open_checkpoint(student);
  const std::string shard = opened.files.at(0);
  std::string last_name;  // the tensor whose bytes end last in the (single, mapped) shard
  uintptr_t last_end = 0;
  for (const NamedTensor& t : opened.tensors) {
    const auto bytes = t.view.contiguous_bytes();
    const auto end = reinterpret_cast<uintptr_t>(bytes.data() + bytes.size());
    if (end >= last_end) last_end = end, last_name = t.name;
  }
  std::vector<std::byte> data = read_file_bytes(shard);
  data[data.size() - 2] ^= std::byte{0x10};
  write_file_bytes(shard, data);
  r = run_hxforge(verify + shell_quote(manifest) + " --json " + shell_quote(tmp.file("bad.json")));
  EXPECT_EQ(r.exit_code, 1) << r.output;
  EXPECT_NE(r.output.find("tensor '" + last_name + "': sha256"), std::string::npos) << last_name << "\n" << r.output;
  const json bad = read_json(tmp.file("bad.json"));
  EXPECT_EQ(bad["hashes"]["mismatched"], 1);
  EXPECT_FALSE(bad["passed"].get<bool>());

  EXPECT_EQ(run_hxforge(verify + shell_quote(tmp.file("absent.json"))).exit_code, 3);
  std::ofstream(tmp.file("garbled.json")) << "{\"format_version\": 1, \"tensors\": [{\"name\": 3}]}";
  r = run_hxforge(verify + shell_quote(tmp.file("garbled.json")));
  EXPECT_EQ(r.exit_code, 3) << r.output;
  EXPECT_NE(r.output.find("garbled.json"), std::string::npos) << r.output;
}

}  // namespace
}  // namespace hx::test
