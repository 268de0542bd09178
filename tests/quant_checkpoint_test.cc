// `hxforge quantize` end to end on synthetic models (hxforge synth --realistic): exactly the tensors the
// architecture table's policy column allows are quantized, with the scheme each rule resolves to; the error of each
// scheme is what it should be; HQQ's solver beats plain min/max rounding on every tensor; the output is the same
// bytes on 1 and 2 threads and across reruns; presets, policy files and fallbacks resolve as documented; hostile
// quantized files fail with exit 3 naming the file, the tensor, what was expected and what was found.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>

#include "arch/arch.h"
#include "arch/model_config.h"
#include "formats/checkpoint.h"
#include "formats/errors.h"
#include "formats/safetensors.h"
#include "formats/sha256.h"
#include "quant/hqq.h"
#include "quant/policy.h"
#include "quant/quantized_checkpoint.h"
#include "tests/support/test_support.h"

namespace hx {
namespace {

using nlohmann::json;
using test::run_command;
using test::run_hxforge;
using test::shell_quote;
using test::TempDir;

// Largest NMSE (Σ(ŵ−w)²/Σw²) a tensor of the realistic synthetic model may have after each scheme. The weights are
// Student-t (4 dof) with outlier input columns 20× larger and a log-normal row spread (arch/synth.h), so amax-based
// scales waste range: int8's step is amax/127 with amax ≈ 10–20σ (≈ 2e-3); e4m3 keeps 3 mantissa bits
// (relative step 2^-3); e3m2 2 bits; e2m2 2 bits but only 2 exponent bits, so small weights flush to its coarse
// subnormal grid; int4 has 16 levels per group of 64, stretched by the outliers. Each limit is 1.5–2× the worst
// tensor measured over seeds 1–5 (int8 1.5e-3, fp8 6.4e-4, fp6 2.5e-3, fp5 2.7e-2, int4 1.9e-2).
const std::map<std::string, double> kMaxNmse = {
    {"int8", 3e-3}, {"fp8", 1.3e-3}, {"fp6", 5e-3}, {"fp5", 4e-2}, {"int4", 4e-2}};
// And the smallest: a quantized tensor is lossy; an NMSE of 0 would mean the weights were copied, not quantized.
constexpr double kMinNmse = 1e-7;

std::string hxforge_ok(const std::string& args) {
  const auto r = run_hxforge(args);
  EXPECT_EQ(r.exit_code, 0) << args << "\n" << r.output;
  return r.output;
}

// One realistic hxa079 tiny model for the whole file (and a llama tiny, whose MLP width 352 exercises fallbacks).
class Synthetic : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = new TempDir;
    hxforge_ok("synth --quiet --arch hxa079 --preset tiny --realistic --seed 5 --out " + shell_quote(model()));
    hxforge_ok("synth --quiet --arch llama --preset tiny --realistic --seed 5 --out " + shell_quote(llama()));
  }
  static void TearDownTestSuite() { delete dir_; }
  static std::string model() { return dir_->file("hxa079"); }
  static std::string llama() { return dir_->file("llama"); }
  static TempDir* dir_;
};
TempDir* Synthetic::dir_ = nullptr;

// Scheme of every tensor of a quantized checkpoint ("keep" when not described).
std::map<std::string, std::string> schemes_of(const Checkpoint& q) {
  std::map<std::string, std::string> out;
  const auto d = read_quantization(q);
  for (const NamedTensor& t : q.tensors) out[t.name] = "keep";
  for (const auto& e : d->tensors) out[e.name] = std::string(scheme_name(e.scheme));
  for (const auto& e : d->tensors) {
    out.erase(scale_tensor_name(e.name));
    out.erase(zero_tensor_name(e.name));
  }
  return out;
}

double nmse(const std::vector<float>& approx, const TensorView& original) {
  std::vector<float> w(original.numel());
  convert_to_f32(original.dtype, to_contiguous_bytes(original).data(), w.data(), w.size());
  double err = 0, ref = 0;
  for (size_t i = 0; i < w.size(); ++i) {
    err += (static_cast<double>(approx[i]) - w[i]) * (static_cast<double>(approx[i]) - w[i]);
    ref += static_cast<double>(w[i]) * w[i];
  }
  return err / ref;
}

class QuantizeEveryScheme : public Synthetic, public ::testing::WithParamInterface<const char*> {};

TEST_P(QuantizeEveryScheme, QuantizesExactlyThePolicysTensorsWithPlausibleError) {
  const std::string scheme = GetParam();
  TempDir out;
  hxforge_ok("quantize --quiet " + shell_quote(model()) + " --scheme " + scheme + " --out " + shell_quote(out.file("q")) +
             " --report " + shell_quote(out.file("report.json")));
  const Checkpoint original = open_checkpoint(model());
  const Checkpoint q = open_checkpoint(out.file("q"));
  const ModelConfig cfg = config_for_checkpoint(q);  // the output's config.json still describes the model
  EXPECT_EQ(cfg, config_for_checkpoint(original));
  const auto schemes = schemes_of(q);
  const auto expected = expected_tensors(cfg);
  const auto description = read_quantization(q);
  int quantized = 0;
  for (const NamedTensor& t : original.tensors) {
    const ExpectedTensor* e = lookup(expected, t.name);
    ASSERT_NE(e, nullptr) << t.name;
    ASSERT_TRUE(schemes.count(t.name)) << t.name << " is missing from the output";
    if (!e->quant.quantizable) {
      EXPECT_EQ(schemes.at(t.name), "keep") << t.name << " (" << role_name(e->role) << ") must never be quantized";
      EXPECT_EQ(sha256_tensor(q.find(t.name)->view), sha256_tensor(t.view)) << t.name << " must be copied unchanged";
      continue;
    }
    // The scheme asked for, raised to the row's floor (the head: int8).
    const QuantScheme asked = *scheme_from_name(scheme);
    const QuantScheme want = scheme_precision(asked) < e->quant.lowest ? *scheme_of_precision(e->quant.lowest) : asked;
    EXPECT_EQ(schemes.at(t.name), scheme_name(want)) << t.name;
    const QuantizedTensorEntry& entry = *description->find(t.name);
    EXPECT_EQ(entry.shape, t.view.shape);
    EXPECT_EQ(entry.dtype, t.view.dtype);
    const double error = nmse(dequantize_tensor(q, entry), t.view);
    EXPECT_LE(error, kMaxNmse.at(std::string(scheme_name(want)))) << t.name;
    EXPECT_GE(error, kMinNmse) << t.name;
    ++quantized;
  }
  EXPECT_GT(quantized, 20);

  // The report: cli.md's fields for every output weight, hashes of what is stored, figures of what is stored.
  std::ifstream report_file(out.file("report.json"));
  const json report = json::parse(report_file);
  EXPECT_EQ(report["scheme"], scheme);
  ASSERT_EQ(report["tensors"].size(), original.tensors.size());
  for (const json& t : report["tensors"]) {
    for (const char* field : {"name", "scheme", "max_abs_err", "mean_abs_err", "nmse", "snr_db", "sha256"})
      ASSERT_TRUE(t.contains(field)) << field << " in " << t.dump();
    const std::string name = t["name"];
    EXPECT_EQ(t["scheme"], schemes.at(name)) << name;
    EXPECT_EQ(t["sha256"], to_hex(sha256_tensor(q.find(name)->view))) << name;
    if (t["scheme"] != "keep") {
      const double mine = nmse(dequantize_tensor(q, *description->find(name)), original.find(name)->view);
      EXPECT_NEAR(t["nmse"].get<double>(), mine, mine * 1e-3) << name;
      EXPECT_NEAR(t["snr_db"].get<double>(), -10 * std::log10(mine), 0.01) << name;
    }
  }
  // config.json carries the quantization block.
  std::ifstream config_file(out.file("q") + "/config.json");
  const json config = json::parse(config_file);
  ASSERT_TRUE(config.contains("quantization_config"));
  EXPECT_EQ(config["quantization_config"]["quant_method"], "hxforge");
  EXPECT_EQ(config["quantization_config"]["tensors"].size(), static_cast<size_t>(quantized));
}

INSTANTIATE_TEST_SUITE_P(Schemes, QuantizeEveryScheme, ::testing::Values("int8", "fp8", "fp6", "fp5", "int4"));

TEST_F(Synthetic, HqqSolverBeatsMinMaxRoundingOnEveryTensor) {
  const Checkpoint original = open_checkpoint(model());
  const auto expected = expected_tensors(config_for_checkpoint(original));
  int checked = 0;
  for (const NamedTensor& t : original.tensors) {
    const ExpectedTensor* e = lookup(expected, t.name);
    if (!e || !e->quant.allows(MinPrecision::kInt4)) continue;
    const FloatRows w = FloatRows::from_view(t.view, t.name);
    for (int group_size : {64, 128}) {
      HqqOptions options;
      options.group_size = group_size;
      double error[2];
      for (bool optimize : {false, true}) {
        options.optimize = optimize;
        const HqqFit fit = hqq_fit(w, options);
        std::vector<uint8_t> codes(static_cast<size_t>(w.rows() * w.cols()));
        error[optimize] = hqq_encode_rows(w, fit, 0, w.rows(), codes.data()).mean_abs_error();
      }
      EXPECT_LT(error[1], error[0]) << t.name << " g" << group_size;
      ++checked;
    }
  }
  EXPECT_GT(checked, 40);
}

TEST_F(Synthetic, OutputIsTheSameBytesOnOneAndTwoThreadsAndAcrossReruns) {
  TempDir out;
  const std::string runs[][2] = {{"1", "a"}, {"2", "b"}, {"2", "c"}};
  for (const char* args : {"--scheme int4", "--scheme fp6 --layout torchao-tc", "--scheme int4 --layout gemlite",
                           "--scheme fp8 --fp8-scale tensor", "--policy attn-int8-mlp-fp5"}) {
    for (const auto& [threads, name] : runs) {
      const auto r = run_command("OMP_NUM_THREADS=" + threads + " " + shell_quote(test::hxforge_binary()) + " quantize --quiet " +
                                 shell_quote(model()) + " " + args + " --force --out " + shell_quote(out.file(name)));
      ASSERT_EQ(r.exit_code, 0) << r.output;
    }
    const auto a = test::read_file_bytes(out.file("a") + "/model.safetensors");
    EXPECT_EQ(a, test::read_file_bytes(out.file("b") + "/model.safetensors")) << args << ": 1 vs 2 threads";
    EXPECT_EQ(a, test::read_file_bytes(out.file("c") + "/model.safetensors")) << args << ": rerun";
    EXPECT_GT(a.size(), 1000000u);
  }
}

// ---- presets, policy files, fallbacks ----

struct PresetCase {
  const char* preset;
  const char* attention;
  const char* mlp;
  int mlp_group_size;
};

void PrintTo(const PresetCase& p, std::ostream* os) { *os << p.preset; }

class Presets : public Synthetic, public ::testing::WithParamInterface<PresetCase> {};

TEST_P(Presets, ResolveByRoleGroup) {
  const PresetCase& p = GetParam();
  TempDir out;
  hxforge_ok("quantize --quiet " + shell_quote(model()) + " --policy " + p.preset + " --out " + shell_quote(out.file("q")));
  const Checkpoint q = open_checkpoint(out.file("q"));
  const auto expected = expected_tensors(config_for_checkpoint(q));
  const auto d = read_quantization(q);
  int attention = 0, mlp = 0;
  for (const auto& [name, scheme] : schemes_of(q)) {
    const ExpectedTensor* e = lookup(expected, name);
    ASSERT_NE(e, nullptr) << name;
    const std::string group(role_group(e->role));
    if (!e->quant.quantizable) {
      EXPECT_EQ(scheme, "keep") << name;
    } else if (group == "attention") {
      EXPECT_EQ(scheme, p.attention) << name;
      ++attention;
    } else if (group == "mlp") {
      EXPECT_EQ(scheme, p.mlp) << name;
      if (scheme == "int4") {
        EXPECT_EQ(d->find(name)->group_size, p.mlp_group_size) << name;
      }
      ++mlp;
    } else if (group == "head") {
      EXPECT_EQ(scheme, "int8") << name;
    }
  }
  EXPECT_EQ(attention, 16);  // 3 RWKV layers × r/k/v/o + 1 GQA layer × q/k/v/o
  EXPECT_EQ(mlp, 12);
}

INSTANTIATE_TEST_SUITE_P(Mixed, Presets,
                         ::testing::Values(PresetCase{"attn-int8-mlp-fp6", "int8", "fp6", 0},
                                           PresetCase{"attn-fp8-mlp-int4", "fp8", "int4", 128},
                                           PresetCase{"attn-int8-mlp-int4", "int8", "int4", 128},
                                           PresetCase{"attn-int8-mlp-fp5", "int8", "fp5", 0}),
                         [](const auto& param_info) {
                           std::string n = param_info.param.preset;
                           for (char& c : n)
                             if (c == '-') c = '_';
                           return n;
                         });

TEST_F(Synthetic, PolicyFileRolesPatternsAndHead) {
  TempDir out;
  const json policy = {
      {"format_version", 1},
      {"scheme", "fp6"},
      {"head", "keep"},
      {"roles", {{"mlp_down", "int8"}, {"attention", {{"scheme", "int4"}, {"group_size", 128}}}}},
      {"overrides",
       {{{"pattern", "model.layers.0.*"}, {"scheme", "keep"}},
        {{"pattern", "*.self_attn.key.weight"}, {"scheme", "fp8"}},
        {{"pattern", "model.layers.3.self_attn.value.weight"}, {"scheme", "int4"}, {"group_size", 32}}}}};
  std::ofstream(out.file("policy.json")) << policy.dump(2);
  hxforge_ok("quantize --quiet " + shell_quote(model()) + " --policy " + shell_quote(out.file("policy.json")) + " --out " +
             shell_quote(out.file("q")));
  const Checkpoint q = open_checkpoint(out.file("q"));
  const auto s = schemes_of(q);
  const auto d = read_quantization(q);
  EXPECT_EQ(s.at("lm_head.weight"), "keep") << "\"head\": \"keep\"";
  EXPECT_EQ(s.at("model.layers.0.mlp.up_proj.weight"), "keep") << "the layer-0 pattern";
  EXPECT_EQ(s.at("model.layers.0.self_attn.receptance.weight"), "keep") << "the layer-0 pattern";
  EXPECT_EQ(s.at("model.layers.1.mlp.up_proj.weight"), "fp6") << "the file's default scheme";
  EXPECT_EQ(s.at("model.layers.1.mlp.down_proj.weight"), "int8") << "roles.mlp_down";
  EXPECT_EQ(s.at("model.layers.1.self_attn.receptance.weight"), "int4") << "roles.attention";
  EXPECT_EQ(d->find("model.layers.1.self_attn.receptance.weight")->group_size, 128);
  EXPECT_EQ(s.at("model.layers.1.self_attn.key.weight"), "fp8") << "a later pattern beats the role";
  EXPECT_EQ(s.at("model.layers.3.self_attn.value.weight"), "int4");
  EXPECT_EQ(d->find("model.layers.3.self_attn.value.weight")->group_size, 32);
  EXPECT_EQ(s.at("model.layers.1.self_attn.w1"), "keep") << "LoRA is never quantized, whatever the rules say";
  EXPECT_EQ(s.at("model.embed_tokens.weight"), "keep");

  // Typos are errors naming the file and the key.
  std::ofstream(out.file("typo.json")) << R"({"scheme": "int8", "roles": {"mlp_dwn": "fp6"}})";
  auto r = run_hxforge("quantize " + shell_quote(model()) + " --policy " + shell_quote(out.file("typo.json")) + " --out " +
                       shell_quote(out.file("q2")));
  EXPECT_EQ(r.exit_code, 3) << r.output;
  EXPECT_NE(r.output.find("typo.json: \"roles\" has unknown role 'mlp_dwn'"), std::string::npos) << r.output;
  std::ofstream(out.file("scheme.json")) << R"({"scheme": "int3"})";
  r = run_hxforge("quantize " + shell_quote(model()) + " --policy " + shell_quote(out.file("scheme.json")) + " --out " +
                  shell_quote(out.file("q2")));
  EXPECT_EQ(r.exit_code, 3) << r.output;
  EXPECT_NE(r.output.find("is 'int3'; expected one of int8, fp8, fp6, fp5, int4, keep"), std::string::npos) << r.output;
}

TEST_F(Synthetic, FloorsAndShapeFallbacksAreAppliedAndExplained) {
  TempDir out;
  // llama tiny: hidden 128, MLP 352. down_proj has in = 352: not a multiple of 64 (int4 → int8) nor of 64 for the
  // tc layout (fp6 → portable); the head's floor is int8.
  hxforge_ok("quantize --quiet " + shell_quote(llama()) + " --scheme int4 --out " + shell_quote(out.file("a")));
  auto d = read_quantization(open_checkpoint(out.file("a")));
  const QuantizedTensorEntry* down = d->find("model.layers.0.mlp.down_proj.weight");
  ASSERT_NE(down, nullptr);
  EXPECT_EQ(down->scheme, QuantScheme::kInt8);
  EXPECT_NE(down->note.find("in = 352 is not a multiple of the int4 group size 64; int8 instead"), std::string::npos)
      << down->note;
  EXPECT_EQ(d->find("model.layers.0.mlp.up_proj.weight")->scheme, QuantScheme::kInt4);
  EXPECT_EQ(d->find("lm_head.weight")->scheme, QuantScheme::kInt8) << "the head is int8 by default";
  // A rule that names the head with a scheme below its floor (int8) is raised to the floor.
  std::ofstream(out.file("head.json")) << R"({"scheme": "fp6", "head": "int4"})";
  hxforge_ok("quantize --quiet " + shell_quote(llama()) + " --policy " + shell_quote(out.file("head.json")) + " --out " +
             shell_quote(out.file("h")));
  const auto with_head_rule = read_quantization(open_checkpoint(out.file("h")));
  const QuantizedTensorEntry* head = with_head_rule->find("lm_head.weight");
  EXPECT_EQ(head->scheme, QuantScheme::kInt8);
  EXPECT_NE(head->note.find("int4 is below this tensor's floor; raised to int8"), std::string::npos) << head->note;

  hxforge_ok("quantize --quiet " + shell_quote(llama()) + " --scheme fp6 --layout torchao-tc --out " +
             shell_quote(out.file("b")));
  d = read_quantization(open_checkpoint(out.file("b")));
  EXPECT_EQ(d->find("model.layers.0.mlp.down_proj.weight")->layout, QuantLayout::kPortable);
  EXPECT_EQ(d->find("model.layers.0.mlp.up_proj.weight")->layout, QuantLayout::kPortable) << "out = 352 is not a multiple of 64";
  EXPECT_EQ(d->find("model.layers.0.self_attn.q_proj.weight")->layout, QuantLayout::kTorchaoTc);
}

TEST_F(Synthetic, CommandLineMistakesAreUsageErrors) {
  TempDir out;
  const std::string base = "quantize " + shell_quote(model()) + " --out " + shell_quote(out.file("q"));
  EXPECT_EQ(run_hxforge(base).exit_code, 2) << "no --scheme and no --policy";
  EXPECT_EQ(run_hxforge(base + " --scheme int3").exit_code, 2);
  EXPECT_EQ(run_hxforge(base + " --scheme int4 --group-size 48").exit_code, 2);
  EXPECT_EQ(run_hxforge(base + " --scheme int4 --layout marlin").exit_code, 2);
  EXPECT_EQ(run_hxforge(base + " --policy no-such-preset").exit_code, 2);
  hxforge_ok(base + " --quiet --scheme int8");
  EXPECT_EQ(run_hxforge(base + " --scheme int8").exit_code, 2) << "OUT exists and no --force";
  const auto again = run_hxforge("quantize " + shell_quote(out.file("q")) + " --scheme int8 --out " + shell_quote(out.file("r")));
  EXPECT_EQ(again.exit_code, 3) << "a quantized checkpoint is not quantized again";
  EXPECT_NE(again.output.find("is already quantized"), std::string::npos) << again.output;
}

// The JSON Schemas describe what hxforge writes and reads (validated with python3's jsonschema where present).
TEST_F(Synthetic, SchemasValidateWhatHxforgeWritesAndReads) {
  TempDir out;
  hxforge_ok("quantize --quiet " + shell_quote(model()) + " --policy attn-fp8-mlp-int4 --fp8-scale tensor --out " +
             shell_quote(out.file("q.safetensors")));
  const Checkpoint q = read_safetensors_file(out.file("q.safetensors"));
  std::ofstream(out.file("description.json")) << q.metadata.at(kQuantMetadataKey);
  json bad = json::parse(q.metadata.at(kQuantMetadataKey));
  bad["tensors"]["lm_head.weight"]["scheme"] = "int3";
  std::ofstream(out.file("bad_description.json")) << bad.dump();
  const json policy = {{"scheme", "int4"}, {"roles", {{"mlp_down", "fp6"}, {"attention", {{"scheme", "int8"}, {"group_size", 32}}}}},
                       {"overrides", {{{"pattern", "*.0.*"}, {"scheme", "keep"}}}}};
  std::ofstream(out.file("policy.json")) << policy.dump();
  std::ofstream(out.file("bad_policy.json")) << R"({"roles": {"mlp_dwn": "fp6"}})";

  const std::string schemas = test::tests_dir() + "/../schemas/", script = test::tests_dir() + "/python/validate_json_schema.py";
  auto validate = [&](const std::string& schema, const std::string& file) {
    return run_command(std::string(HXFORGE_PYTHON) + " " + shell_quote(script) + " " + shell_quote(schemas + schema) + " " + shell_quote(file));
  };
  const auto first = validate("quantized-checkpoint.schema.json", out.file("description.json"));
  if (first.exit_code == 77) GTEST_SKIP() << HXFORGE_PYTHON " has no jsonschema package";
  EXPECT_EQ(first.exit_code, 0) << first.output;
  EXPECT_EQ(validate("quantized-checkpoint.schema.json", out.file("bad_description.json")).exit_code, 1);
  EXPECT_EQ(validate("quant-policy.schema.json", out.file("policy.json")).exit_code, 0);
  EXPECT_EQ(validate("quant-policy.schema.json", out.file("bad_policy.json")).exit_code, 1);
  // The policy schema's role names are exactly the ones the parser accepts.
  std::ifstream schema_file(schemas + "quant-policy.schema.json");
  const json schema = json::parse(schema_file);
  std::vector<std::string> in_schema = schema["properties"]["roles"]["propertyNames"]["enum"];
  std::vector<std::string> in_code = policy_role_keys();
  std::sort(in_schema.begin(), in_schema.end());
  std::sort(in_code.begin(), in_code.end());
  EXPECT_EQ(in_schema, in_code);
  EXPECT_EQ(parse_policy(policy, "policy.json").roles.size(), 2u);
}

// ---- hostile quantized files ----

// Rewrites a checkpoint's tensors and metadata: `edit` may drop (return false) or change each spec, and
// `bytes_for` supplies bytes for a spec whose size changed.
void rewrite(const Checkpoint& c, const std::string& path, const std::function<bool(TensorSpec&)>& edit,
             const std::map<std::string, std::string>& metadata) {
  std::vector<TensorSpec> specs;
  std::vector<const NamedTensor*> from;
  for (const NamedTensor& t : c.tensors) {
    TensorSpec s{t.name, t.view.dtype, t.view.shape};
    if (!edit(s)) continue;
    specs.push_back(s);
    from.push_back(&t);
  }
  SafetensorsWriteOptions options;
  options.metadata = metadata;
  write_safetensors(path, specs, [&](size_t i, const ByteSink& sink) {
    const std::vector<std::byte> bytes = to_contiguous_bytes(from[i]->view);
    std::vector<std::byte> sized(specs[i].nbytes(), std::byte{0});
    std::copy_n(bytes.begin(), std::min(bytes.size(), sized.size()), sized.begin());
    sink(sized);
  }, options);
}

TEST_F(Synthetic, HostileQuantizedFilesAreRefusedNamingTheProblem) {
  TempDir out;
  hxforge_ok("quantize --quiet " + shell_quote(model()) + " --scheme int4 --out " + shell_quote(out.file("q.safetensors")));
  const Checkpoint q = read_safetensors_file(out.file("q.safetensors"));
  const std::string x = "model.layers.1.mlp.up_proj.weight";  // int4 [512, 256], group 64
  const std::string description = q.metadata.at(kQuantMetadataKey);
  auto with_entry = [&](const std::function<void(json&)>& change) {
    json d = json::parse(description);
    change(d["tensors"][x]);
    std::map<std::string, std::string> m = q.metadata;
    m[kQuantMetadataKey] = d.dump();
    return m;
  };
  auto keep_all = [](TensorSpec&) { return true; };
  struct Case {
    const char* name;
    std::function<bool(TensorSpec&)> edit;
    std::map<std::string, std::string> metadata;
    std::vector<std::string> expect;  // parts of the one-sentence message
  };
  const Case cases[] = {
      {"missing_scale", [&](TensorSpec& s) { return s.name != scale_tensor_name(x); }, q.metadata,
       {"tensor '" + x + ".scale' is required but not found in file", "expected F32 [512, 4]"}},
      {"short_packed", [&](TensorSpec& s) { if (s.name == x) s.shape = {512, 127}; return true; }, q.metadata,
       {"tensor '" + x + "' has wrong shape; expected [512, 128]", "got [512, 127]"}},
      {"unknown_scheme", keep_all, with_entry([](json& e) { e["scheme"] = "int3"; }),
       {"tensor '" + x + "': quantization entry has unknown scheme 'int3'; expected one of int8, fp8, fp6, fp5, int4"}},
      {"scale_dtype", [&](TensorSpec& s) { if (s.name == scale_tensor_name(x)) s.dtype = DType::kF16; return true; },
       q.metadata, {"tensor '" + x + ".scale' has wrong dtype; expected F32", "got F16"}},
      {"scale_shape", [&](TensorSpec& s) { if (s.name == scale_tensor_name(x)) s.shape = {4, 512}; return true; },
       q.metadata, {"tensor '" + x + ".scale' has wrong shape; expected [512, 4]", "got [4, 512]"}},
      {"group_not_dividing", keep_all, with_entry([](json& e) { e["shape"] = {512, 96}; }),
       {"tensor '" + x + "' (int4, portable): group size 64 does not divide in = 96"}},
      {"unsupported_group", keep_all, with_entry([](json& e) { e["group_size"] = 48; }),
       {"tensor '" + x + "' (int4, portable): group size 48 is not one of 32, 64, 128, 256"}},
      {"newer_version", keep_all,
       [&] {
         json d = json::parse(description);
         d["format_version"] = 2;
         auto m = q.metadata;
         m[kQuantMetadataKey] = d.dump();
         return m;
       }(),
       {"is format version 2; this hxforge reads versions 1 to 1 (the file was produced by a newer tool)"}},
      {"not_json", keep_all,
       [&] {
         auto m = q.metadata;
         m[kQuantMetadataKey] = "{\"format_version\": 1, \"tensors\": ";
         return m;
       }(),
       {"__metadata__ 'quantization' is not valid JSON"}},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.name);
    const std::string path = out.file(std::string(c.name) + ".safetensors");
    rewrite(q, path, c.edit, c.metadata);
    const auto r = run_hxforge("quantize " + shell_quote(path) + " --scheme int8 --out " + shell_quote(out.file("never")));
    EXPECT_EQ(r.exit_code, 3) << r.output;
    EXPECT_NE(r.output.find(path), std::string::npos) << "names the file: " << r.output;
    for (const std::string& part : c.expect) EXPECT_NE(r.output.find(part), std::string::npos) << part << "\n" << r.output;
    // The library: read_quantization throws the same sentence, check_quantization lists it.
    const Checkpoint hostile = read_safetensors_file(path);
    EXPECT_THROW(read_quantization(hostile), Error);
    const auto problems = check_quantization(hostile);
    ASSERT_FALSE(problems.empty());
    EXPECT_NE(problems.front().find(c.expect.front()), std::string::npos) << problems.front();
  }
  EXPECT_FALSE(std::filesystem::exists(out.file("never")));
  EXPECT_TRUE(check_quantization(q).empty());
}

}  // namespace
}  // namespace hx
