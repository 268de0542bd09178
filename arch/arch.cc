// Evaluating the tensor tables against a ModelConfig, and comparing an opened checkpoint with the result.
#include "arch/arch.h"

#include <algorithm>
#include <unordered_map>
#include <unordered_set>

namespace hx {
namespace {

bool ends_with(std::string_view s, std::string_view suffix) {
  return s.size() >= suffix.size() && s.substr(s.size() - suffix.size()) == suffix;
}
bool starts_with(std::string_view s, std::string_view prefix) { return s.substr(0, prefix.size()) == prefix; }

void replace_all(std::string& s, std::string_view from, std::string_view to) {
  for (size_t at = s.find(from); at != std::string::npos; at = s.find(from, at + to.size()))
    s.replace(at, from.size(), to);
}

// Whether a row's tensor is expected for this config and layer: nullopt = not at all, else required or optional.
std::optional<bool> required_for(Need need, const ModelConfig& cfg, int layer) {
  auto feature = [](bool on) { return on ? std::optional<bool>(true) : std::nullopt; };
  switch (need) {
    case Need::kRequired: return true;
    case Need::kOptional: return false;
    case Need::kUnlessTied: return !cfg.tie_word_embeddings;
    case Need::kIfOwnKv: return cfg.layers[layer].has_own_kv();
    case Need::kIfPle: return feature(cfg.has_ple());
    case Need::kIfQkNorm: return feature(cfg.rwkv.qk_norm);
    case Need::kIfAttentionBias: return feature(cfg.attention_bias);
    case Need::kIfValueResidual: return feature(cfg.rwkv.value_residual);
    case Need::kIfKeyResidual: return feature(cfg.rwkv.key_residual);
    case Need::kIfBonus: return feature(cfg.rwkv.bonus);
  }
  return std::nullopt;
}

void add_row(const TensorRow& row, const ModelConfig& cfg, int layer, std::vector<ExpectedTensor>& out) {
  const auto required = required_for(row.need, cfg, layer);
  if (!required) return;
  std::string name(cfg.naming == TensorNaming::kRwkvLm ? row.rwkv_lm_name : row.name);
  replace_all(name, "{P}", cfg.tensor_prefix);
  if (layer >= 0) replace_all(name, "{L}", std::to_string(layer));
  Shape shape;
  for (Dim d : row.shape)
    if (d != Dim::kEnd) shape.push_back(evaluate_dim(d, cfg, layer));
  out.push_back({std::move(name), std::move(shape), row.role, *required, row.quant, layer, &row});
}

bool gemma_like(Arch a) { return a == Arch::kGemma4 || a == Arch::kHxa07i; }

}  // namespace

std::vector<std::span<const TensorRow>> tensor_rows(Arch arch) {
  switch (arch) {
    case Arch::kGemma4: return {gemma4_tensor_rows()};
    case Arch::kLlama: return {llama_tensor_rows()};
    case Arch::kHxa079: return {hxa079_tensor_rows()};
    case Arch::kHxa07i: return {gemma4_tensor_rows(), hxa07i_tensor_rows()};
  }
  return {};
}

int64_t evaluate_dim(Dim d, const ModelConfig& cfg, int layer) {
  const LayerConfig* l = layer >= 0 ? &cfg.layers.at(layer) : nullptr;
  auto per_layer = [&](int64_t (*f)(const LayerConfig&)) { return l ? f(*l) : int64_t{0}; };
  switch (d) {
    case Dim::kEnd: return 0;
    case Dim::kOne: return 1;
    case Dim::kVocab: return cfg.vocab_size;
    case Dim::kHidden: return cfg.hidden_size;
    case Dim::kQDim: return per_layer([](const LayerConfig& x) { return x.q_dim(); });
    case Dim::kKvDim: return per_layer([](const LayerConfig& x) { return x.kv_dim(); });
    case Dim::kHeadDim: return per_layer([](const LayerConfig& x) { return x.head_dim; });
    case Dim::kFfn: return per_layer([](const LayerConfig& x) { return x.intermediate_size; });
    case Dim::kPleDim: return cfg.hidden_size_per_layer_input;
    case Dim::kPleAll: return cfg.num_layers() * cfg.hidden_size_per_layer_input;
    case Dim::kPleVocab: return cfg.vocab_size_per_layer_input;
    case Dim::kRwkvC: return cfg.rwkv.r_dim();
    case Dim::kRwkvCk: return cfg.rwkv.kv_dim();
    case Dim::kRwkvHeads: return cfg.rwkv.num_heads;
    case Dim::kRwkvHeadDim: return cfg.rwkv.head_dim;
    case Dim::kRankDecay: return cfg.rwkv.ranks.decay;
    case Dim::kRankIclr: return cfg.rwkv.ranks.iclr;
    case Dim::kRankValueMix: return cfg.rwkv.ranks.value_mix;
    case Dim::kRankKeyMix: return cfg.rwkv.ranks.key_mix;
    case Dim::kRankGate: return cfg.rwkv.ranks.gate;
    case Dim::kTicaQDim: return cfg.tica.num_heads * cfg.tica.head_dim;
    case Dim::kTicaKvDim: return cfg.tica.num_kv_heads * cfg.tica.head_dim;
    case Dim::kTicaHeadDim: return cfg.tica.head_dim;
    case Dim::kTicaGateRank: return cfg.tica.gate_rank;
  }
  return 0;
}

std::vector<ExpectedTensor> expected_tensors(const ModelConfig& cfg) {
  const auto tables = tensor_rows(cfg.arch);
  std::vector<ExpectedTensor> out;
  for (const auto& table : tables)
    for (const TensorRow& row : table)
      if (row.layers == kModelLevel) add_row(row, cfg, -1, out);
  for (int i = 0; i < cfg.num_layers(); ++i) {
    const LayerMask bit = layer_bit(cfg.layers[i].kind);
    for (const auto& table : tables)
      for (const TensorRow& row : table)
        if (row.layers & bit) add_row(row, cfg, i, out);
  }
  return out;
}

const ExpectedTensor* lookup(std::span<const ExpectedTensor> expected, std::string_view name) {
  for (const ExpectedTensor& e : expected)
    if (e.name == name) return &e;
  return nullptr;
}

std::optional<Arch> detect_architecture(const Checkpoint& checkpoint, const nlohmann::json* config) {
  if (config)
    if (auto a = arch_from_config_json(*config)) return a;
  bool tica = false, rwkv = false, gemma = false, attention = false;
  for (const NamedTensor& t : checkpoint.tensors) {
    const std::string_view n = t.name;
    tica |= n.find(".self_attn.tica.") != std::string_view::npos;
    rwkv |= ends_with(n, ".self_attn.receptance.weight") ||
            (starts_with(n, "blocks.") && ends_with(n, ".att.receptance.weight"));
    gemma |= n.find("embed_tokens_per_layer") != std::string_view::npos || ends_with(n, ".layer_scalar") ||
             ends_with(n, ".pre_feedforward_layernorm.weight");
    attention |= ends_with(n, ".self_attn.q_proj.weight");
  }
  if (tica || (rwkv && gemma)) return Arch::kHxa07i;
  if (rwkv) return Arch::kHxa079;
  if (gemma) return Arch::kGemma4;
  if (attention) return Arch::kLlama;
  return std::nullopt;
}

TableReport check_tensors(const Checkpoint& checkpoint, const ModelConfig& cfg) {
  const std::vector<ExpectedTensor> expected = expected_tensors(cfg);
  std::unordered_map<std::string_view, const ExpectedTensor*> by_name;
  for (const ExpectedTensor& e : expected) by_name.emplace(e.name, &e);

  TableReport report;
  std::unordered_set<std::string_view> seen;
  for (const NamedTensor& t : checkpoint.tensors) {
    const auto skip = gemma4_multimodal_prefixes();
    if (gemma_like(cfg.arch) &&
        std::any_of(skip.begin(), skip.end(), [&](std::string_view p) { return starts_with(t.name, p); })) {
      report.skipped.push_back(t.name);
      continue;
    }
    const auto it = by_name.find(t.name);
    if (it == by_name.end()) {
      report.problems.push_back("tensor '" + t.name + "' is unexpected; the " + std::string(arch_name(cfg.arch)) +
                                " tensor table has no such name");
      continue;
    }
    if (!seen.insert(it->first).second) {
      report.problems.push_back("tensor '" + t.name + "' appears more than once");
      continue;
    }
    const ExpectedTensor& e = *it->second;
    if (t.view.shape != e.shape) {
      report.problems.push_back("tensor '" + t.name + "' has wrong shape; expected " + shape_to_string(e.shape) +
                                ", got " + shape_to_string(t.view.shape));
    } else if (!is_float(t.view.dtype)) {  // every row of every table holds real numbers
      report.problems.push_back("tensor '" + t.name + "' has wrong dtype; expected a float dtype for a " +
                                std::string(role_name(e.role)) + ", got " + std::string(dtype_name(t.view.dtype)));
    } else {
      ++report.matched;
    }
  }
  for (const ExpectedTensor& e : expected)
    if (e.required && !seen.count(e.name))
      report.problems.push_back("tensor '" + e.name + "' is required but missing; expected shape " +
                                shape_to_string(e.shape));
  return report;
}

std::vector<std::string> check_against_table(const Checkpoint& checkpoint, const ModelConfig& cfg) {
  return check_tensors(checkpoint, cfg).problems;
}

uint64_t parameter_count(const ModelConfig& cfg, bool include_optional) {
  uint64_t total = 0;
  for (const ExpectedTensor& e : expected_tensors(cfg)) {
    if (!e.required && !include_optional) continue;
    uint64_t n = 0;
    if (checked_numel(e.shape, &n)) total += n;
  }
  return total;
}

std::string_view role_name(TensorRole r) {
  switch (r) {
    case TensorRole::kEmbedding: return "embedding";
    case TensorRole::kPerLayerEmbedding: return "per-layer embedding";
    case TensorRole::kPerLayerProjection: return "per-layer projection";
    case TensorRole::kNorm: return "norm";
    case TensorRole::kLayerScalar: return "layer scalar";
    case TensorRole::kAttentionQ: return "attention q";
    case TensorRole::kAttentionK: return "attention k";
    case TensorRole::kAttentionV: return "attention v";
    case TensorRole::kAttentionO: return "attention o";
    case TensorRole::kBias: return "bias";
    case TensorRole::kRwkvR: return "rwkv receptance";
    case TensorRole::kRwkvK: return "rwkv key";
    case TensorRole::kRwkvV: return "rwkv value";
    case TensorRole::kRwkvO: return "rwkv output";
    case TensorRole::kLora: return "lora";
    case TensorRole::kDecayVector: return "decay vector";
    case TensorRole::kIclrVector: return "iclr vector";
    case TensorRole::kMixVector: return "mix vector";
    case TensorRole::kBonus: return "bonus";
    case TensorRole::kMlpGate: return "mlp gate";
    case TensorRole::kMlpUp: return "mlp up";
    case TensorRole::kMlpDown: return "mlp down";
    case TensorRole::kHead: return "head";
    case TensorRole::kBookkeeping: return "bookkeeping scalar";
    case TensorRole::kTicaQ: return "tica q";
    case TensorRole::kTicaK: return "tica k";
    case TensorRole::kTicaV: return "tica v";
    case TensorRole::kTicaO: return "tica o";
  }
  return "?";
}

std::string_view precision_name(MinPrecision p) {
  switch (p) {
    case MinPrecision::kInt4: return "int4";
    case MinPrecision::kFp5: return "fp5";
    case MinPrecision::kFp6: return "fp6";
    case MinPrecision::kFp8: return "fp8";
    case MinPrecision::kInt8: return "int8";
    case MinPrecision::kKeep: return "keep";
  }
  return "?";
}

std::optional<MinPrecision> precision_from_scheme(std::string_view scheme) {
  for (MinPrecision p : {MinPrecision::kInt4, MinPrecision::kFp5, MinPrecision::kFp6, MinPrecision::kFp8,
                         MinPrecision::kInt8})
    if (precision_name(p) == scheme) return p;
  return std::nullopt;
}

}  // namespace hx
