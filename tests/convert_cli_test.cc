// `hxforge convert` end to end on the oracle teachers: students that pass `inspect --check`, values checked by an
// independent numpy computation (tests/python/convert_reference.py), .pth read by torch, byte-identical reruns,
// and hostile or mismatched teachers refused with exit 3 and nothing written.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "formats/checkpoint.h"
#include "formats/safetensors.h"
#include "tests/support/test_support.h"

namespace hx::test {
namespace {

namespace fs = std::filesystem;
using json = nlohmann::json;

std::string llama_tiny() { return oracle_dir() + "/llama-tiny"; }
std::string gemma_tiny() { return oracle_dir() + "/gemma4-tiny"; }
std::string reference_script() { return tests_dir() + "/python/convert_reference.py"; }

bool python_numpy_available() {
  return run_command(std::string(HXFORGE_PYTHON) + " -c 'import numpy' 2>/dev/null").exit_code == 0;
}

// Nothing under `out`, and no staging folder left beside it.
void expect_nothing_written(const std::string& out) {
  EXPECT_FALSE(fs::exists(out)) << out;
  for (const auto& e : fs::directory_iterator(fs::path(out).parent_path()))
    EXPECT_EQ(e.path().filename().string().find(".hxforge-"), std::string::npos) << e.path();
}

// A copy of llama-tiny with `edit` applied to its tensor list (and the same config.json).
std::string edited_teacher(const TempDir& tmp, const std::string& name,
                           const std::function<void(std::vector<NamedTensor>&)>& edit) {
  const Checkpoint teacher = open_checkpoint(llama_tiny());
  std::vector<NamedTensor> tensors = teacher.tensors;
  edit(tensors);
  const std::string dir = tmp.file(name);
  SafetensorsWriteOptions options;
  options.max_shard_bytes = UINT64_MAX;
  write_safetensors(dir, specs_of(tensors), source_of(tensors), options);
  fs::copy_file(llama_tiny() + "/config.json", dir + "/config.json");
  return dir;
}

TEST(ConvertCli, LlamaTinyToHxa079PassesCheckAndTheIndependentReference) {
  TempDir tmp;
  const std::string out = tmp.file("student");
  const CommandResult r = run_hxforge("convert " + shell_quote(llama_tiny()) +
                                      " --to hxa079 --layout tiny --json --out " + shell_quote(out));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  const json report = json::parse(r.output);
  EXPECT_TRUE(report["passed"].get<bool>());
  EXPECT_EQ(report["scaled"], 12);  // r/k/v/o of RWKV layers 0, 1, 3
  for (const json& c : report["verification"]["checks"]) EXPECT_EQ(c["status"], "passed") << c.dump();
  const CommandResult check = run_hxforge("inspect --check " + shell_quote(out));
  EXPECT_EQ(check.exit_code, 0) << check.output;
  EXPECT_NE(check.output.find("check: no problems"), std::string::npos) << check.output;

  const json manifest = read_json(out + "/manifest.json");
  EXPECT_EQ(manifest["layout"]["name"], "tiny-hxa079");
  EXPECT_EQ(manifest["probe"]["status"], "ok");
  EXPECT_EQ(manifest["probe"]["positions"].size(), manifest["probe"]["tokens"].size());
  const json config = read_json(out + "/config.json");
  EXPECT_EQ(config["rwkv_architecture"], "hxa079");
  EXPECT_EQ(config["transformer_layers"], json({2}));
  EXPECT_EQ(config["rwkv_layers"], json({0, 1, 3}));

  if (!python_numpy_available()) GTEST_SKIP() << "numpy is missing: the independent value check did not run";
  const CommandResult values =
      run_command(std::string(HXFORGE_PYTHON) + " " + shell_quote(reference_script()) + " values " + shell_quote(out));
  EXPECT_EQ(values.exit_code, 0) << values.output;
  EXPECT_NE(values.output.find("\"orthogonal\": 15"), std::string::npos) << values.output;
}

TEST(ConvertCli, Gemma4TinyToHxa07iPassesCheckAndTheIndependentReference) {
  TempDir tmp;
  const std::string out = tmp.file("student");
  const CommandResult r = run_hxforge("convert " + shell_quote(gemma_tiny() + "/sharded") +
                                      " --to hxa07i --layout tiny --out " + shell_quote(out));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_EQ(run_hxforge("inspect --check " + shell_quote(out)).exit_code, 0);
  const json manifest = read_json(out + "/manifest.json");
  bool found = false;
  for (const json& t : manifest["tensors"])
    if (t["name"] == "model.layers.9.self_attn.value.weight") {
      found = true;  // layer 9 is KV-shared: its value comes from layer 4's v_proj, scaled 0.3
      EXPECT_EQ(t["provenance"]["source"]["tensor"], "model.layers.4.self_attn.v_proj.weight");
      EXPECT_EQ(t["provenance"]["transform"], "scale 0.3");
    }
  EXPECT_TRUE(found);
  EXPECT_EQ(manifest["teacher_tensors_dropped"].size(), 3u);
  if (!python_numpy_available()) GTEST_SKIP() << "numpy is missing";
  const CommandResult values =
      run_command(std::string(HXFORGE_PYTHON) + " " + shell_quote(reference_script()) + " values " + shell_quote(out));
  EXPECT_EQ(values.exit_code, 0) << values.output;
}

TEST(ConvertCli, PthLoadsInTorchWithRwkvLmNamesAndTheSameValues) {
  TempDir tmp;
  const std::string st = tmp.file("st"), pth = tmp.file("pth");
  ASSERT_EQ(
      run_hxforge("convert " + shell_quote(llama_tiny()) + " --to hxa079 --layout tiny -q --out " + shell_quote(st))
          .exit_code,
      0);
  const CommandResult r = run_hxforge("convert " + shell_quote(llama_tiny() + "/sharded") +
                                      " --to hxa079 --layout tiny --format pth -q --out " + shell_quote(pth));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_EQ(run_hxforge("inspect --check " + shell_quote(pth + "/model.pth")).exit_code, 0);
  if (!python_torch_available()) GTEST_SKIP() << "torch is missing: torch.load was not tried";
  const CommandResult load = run_command(std::string(HXFORGE_PYTHON) + " " + shell_quote(reference_script()) + " pth " +
                                         shell_quote(pth + "/model.pth") + " " + shell_quote(st));
  EXPECT_EQ(load.exit_code, 0) << load.output;
}

TEST(ConvertCli, SameCommandTwiceGivesIdenticalFilesAndTheSeedMatters) {
  TempDir tmp;
  auto convert = [&](const std::string& name, const std::string& extra) {
    const CommandResult r = run_hxforge("convert " + shell_quote(gemma_tiny()) + " --to hxa07i --layout tiny -q " +
                                        extra + " --out " + shell_quote(tmp.file(name)));
    EXPECT_EQ(r.exit_code, 0) << r.output;
  };
  convert("a", "");
  convert("b", "");
  convert("c", "--seed 1");
  size_t files = 0;
  for (const auto& e : fs::directory_iterator(tmp.file("a"))) {
    ++files;
    const std::string name = e.path().filename().string();
    EXPECT_EQ(read_file_bytes(e.path().string()), read_file_bytes(tmp.file("b/" + name))) << name;
  }
  EXPECT_EQ(files, 4u);  // shard, index, config.json, manifest.json
  const json a = read_json(tmp.file("a/manifest.json")), c = read_json(tmp.file("c/manifest.json"));
  for (size_t i = 0; i < a["tensors"].size(); ++i) {
    // Seeded inits change with the seed; copies, transfers and constant inits do not.
    const bool seeded = a["tensors"][i]["provenance"].contains("seed");
    EXPECT_EQ(seeded, a["tensors"][i]["sha256"] != c["tensors"][i]["sha256"]) << a["tensors"][i]["name"];
  }
}

TEST(ConvertCli, LayoutPlansApplyToShallowTeachersOnlyWhenTold) {
  TempDir tmp;
  const std::string out = tmp.file("student");
  // The default layout keeps attention at 8, 15, …: a 4-layer teacher has none of them.
  CommandResult r = run_hxforge("convert " + shell_quote(llama_tiny()) + " --to hxa079 --out " + shell_quote(out));
  EXPECT_EQ(r.exit_code, 3) << r.output;
  EXPECT_NE(r.output.find("layers 8, 15, 22, 29, 36, 43 do not exist"), std::string::npos) << r.output;
  expect_nothing_written(out);
  r = run_hxforge("convert " + shell_quote(llama_tiny()) + " --to hxa079 --attention-layers 9 --out " +
                  shell_quote(out));
  EXPECT_EQ(r.exit_code, 2) << r.output;
  expect_nothing_written(out);
  r = run_hxforge("convert " + shell_quote(llama_tiny()) + " --to hxa079 --attention-layers 1,2 -q --out " +
                  shell_quote(out));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_EQ(read_json(out + "/config.json")["transformer_layers"], json({1, 2}));
  // An existing output needs --force.
  r = run_hxforge("convert " + shell_quote(llama_tiny()) + " --to hxa079 --attention-layers none -q --out " +
                  shell_quote(out));
  EXPECT_EQ(r.exit_code, 2) << r.output;
  r = run_hxforge("convert " + shell_quote(llama_tiny()) + " --to hxa079 --attention-layers none --force -q --out " +
                  shell_quote(out));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_EQ(read_json(out + "/config.json")["transformer_layers"], json::array());
}

TEST(ConvertCli, HostileTeachersAreRefusedNamingTheProblem) {
  TempDir tmp;
  const std::string out = tmp.file("student");
  auto expect_refused = [&](const std::string& teacher, const std::string& args, const std::string& named) {
    const CommandResult r =
        run_hxforge("convert " + shell_quote(teacher) + " --to hxa079 " + args + " --out " + shell_quote(out));
    EXPECT_EQ(r.exit_code, 3) << r.output;
    EXPECT_NE(r.output.find(named), std::string::npos) << "expected '" << named << "' in: " << r.output;
    expect_nothing_written(out);
  };
  const std::string missing = edited_teacher(tmp, "missing", [](std::vector<NamedTensor>& t) {
    std::erase_if(t, [](const NamedTensor& n) { return n.name == "model.layers.1.self_attn.v_proj.weight"; });
  });
  expect_refused(missing, "--layout tiny", "model.layers.1.self_attn.v_proj.weight' is required but missing");

  const std::string misshapen = edited_teacher(tmp, "misshapen", [](std::vector<NamedTensor>& t) {
    for (NamedTensor& n : t)
      if (n.name == "model.layers.0.self_attn.q_proj.weight") {
        std::vector<std::byte> zeros(96 * 128 * 2);
        n.view = TensorView::contiguous(DType::kBF16, {96, 128}, Storage::owned(std::move(zeros)));
      }
  });
  expect_refused(misshapen, "--layout tiny", "model.layers.0.self_attn.q_proj.weight' has wrong shape");

  const std::string unknown = edited_teacher(tmp, "unknown", [](std::vector<NamedTensor>&) {});
  json config = read_json(unknown + "/config.json");
  config["model_type"] = "mistral";
  config["architectures"] = {"MistralForCausalLM"};
  std::ofstream(unknown + "/config.json") << config.dump();
  expect_refused(unknown, "--layout tiny", "mistral");

  // A Gemma-4 teacher under a Llama layout, and a layout file naming a layer the teacher does not have.
  expect_refused(gemma_tiny(), "--layout tiny-hxa079", "llama teacher");
  json layout = read_json(tests_dir() + "/../convert/layouts/tiny-hxa079.json");
  layout["student"]["attention_layers"] = {2, 7};
  const std::string layout_file = tmp.file("deep.json");
  std::ofstream(layout_file) << layout.dump();
  expect_refused(llama_tiny(), "--layout " + shell_quote(layout_file), "layers 7 do not exist");
}

TEST(ConvertCli, LayoutsAndManifestsFollowTheirSchemas) {
  TempDir tmp;
  const std::string out = tmp.file("student");
  ASSERT_EQ(
      run_hxforge("convert " + shell_quote(gemma_tiny()) + " --to hxa07i --layout tiny -q --out " + shell_quote(out))
          .exit_code,
      0);
  const std::string schemas = tests_dir() + "/../schemas/", script = tests_dir() + "/python/validate_json_schema.py";
  // python3-jsonschema comes from scripts/setup-deps; without it (a machine set up otherwise) the check is skipped.
  const CommandResult layouts =
      run_command(std::string(HXFORGE_PYTHON) + " " + shell_quote(script) + " " + shell_quote(schemas + "layout.schema.json") + " " +
                  shell_quote(tests_dir() + "/../convert/layouts") + "/*.json");
  if (layouts.exit_code == 77) GTEST_SKIP() << HXFORGE_PYTHON " has no jsonschema package";
  EXPECT_EQ(layouts.exit_code, 0) << layouts.output;
  const CommandResult manifest =
      run_command(std::string(HXFORGE_PYTHON) + " " + shell_quote(script) + " " + shell_quote(schemas + "manifest.schema.json") + " " +
                  shell_quote(out + "/manifest.json"));
  EXPECT_EQ(manifest.exit_code, 0) << manifest.output;
  // The schema is not vacuous: a rule with both a source and an init is refused.
  json layout = read_json(tests_dir() + "/../convert/layouts/tiny-hxa079.json");
  layout["tensors"][0]["init"] = {{"rule", "zeros"}};
  std::ofstream(tmp.file("bad.json")) << layout.dump();
  EXPECT_EQ(run_command(std::string(HXFORGE_PYTHON) + " " + shell_quote(script) + " " + shell_quote(schemas + "layout.schema.json") + " " +
                        shell_quote(tmp.file("bad.json")))
                .exit_code,
            1);
}

}  // namespace
}  // namespace hx::test
