// The config of a bare RWKV-LM hxa079 .pth, inferred from tensor names and shapes as RWKV-Infer does
// (rwkvcore.py, hybrid-arch.md §3.3): a .pth carries no config.json, so geometry comes from shapes and the rest
// (rope_theta, rms_norm_eps, context length) from RWKV-Infer's constructor defaults.
#include <algorithm>
#include <cmath>

#include "arch/model_config.h"
#include "formats/errors.h"

namespace hx {
namespace {

bool ends_with(std::string_view s, std::string_view suffix) {
  return s.size() >= suffix.size() && s.substr(s.size() - suffix.size()) == suffix;
}

// The block index of "blocks.N.…", or -1 for other names; throws on "blocks.x." with a non-number.
int block_index(const std::string& name, const std::string& source) {
  constexpr std::string_view kPrefix = "blocks.";
  if (name.rfind(kPrefix, 0) != 0) return -1;
  const size_t dot = name.find('.', kPrefix.size());
  const std::string number = name.substr(kPrefix.size(), dot == std::string::npos ? dot : dot - kPrefix.size());
  if (number.empty() || number.size() > 6 || number.find_first_not_of("0123456789") != std::string::npos)
    throw FormatError(in_file(source, "tensor '" + name + "' has no layer number; expected blocks.N.…"));
  return std::stoi(number);
}

class Shapes {
 public:
  explicit Shapes(const Checkpoint& c) : c_(c) {}

  const NamedTensor* first_ending(std::string_view suffix) const {
    for (const NamedTensor& t : c_.tensors)
      if (ends_with(t.name, suffix)) return &t;
    return nullptr;
  }
  // The tensor's shape, which must have `rank` dims; FormatError naming it otherwise.
  const Shape& shape(const std::string& name, size_t rank) const {
    const NamedTensor* t = c_.find(name);
    if (!t) throw FormatError(in_file(c_.path, "tensor '" + name + "' is required but missing"));
    return checked(*t, rank);
  }
  const Shape& checked(const NamedTensor& t, size_t rank) const {
    if (t.view.shape.size() != rank || std::any_of(t.view.shape.begin(), t.view.shape.end(),
                                                   [](int64_t d) { return d <= 0; }))
      throw FormatError(in_file(c_.path, "tensor '" + t.name + "' has wrong shape; expected " +
                                             std::to_string(rank) + " positive dims, got " +
                                             shape_to_string(t.view.shape)));
    return t.view.shape;
  }

 private:
  const Checkpoint& c_;
};

}  // namespace

ModelConfig infer_hxa079_config(const Checkpoint& checkpoint, double rope_theta, double rms_norm_eps) {
  const std::string& source = checkpoint.path;
  const Shapes shapes(checkpoint);
  ModelConfig cfg;
  cfg.arch = Arch::kHxa079;
  cfg.naming = TensorNaming::kRwkvLm;
  cfg.tensor_prefix = "";

  const Shape& emb = shapes.shape("emb.weight", 2);
  cfg.vocab_size = emb[0];
  cfg.hidden_size = emb[1];
  cfg.dtype = checkpoint.find("emb.weight")->view.dtype;

  int n_layer = 0;
  for (const NamedTensor& t : checkpoint.tensors) n_layer = std::max(n_layer, block_index(t.name, source) + 1);
  if (n_layer == 0) throw FormatError(in_file(source, "no 'blocks.N.…' tensors; expected an RWKV-LM checkpoint"));

  if (!shapes.first_ending(".att.k0"))
    throw UnsupportedError(in_file(source, "no 'blocks.N.att.k0' tensor; expected an hxa079 checkpoint (RWKV-Infer "
                                           "calls a hybrid without k0 hxa07a, which hxforge does not handle)"));
  const NamedTensor* r_k = shapes.first_ending(".att.r_k");
  if (!r_k)
    throw FormatError(in_file(source, "no 'blocks.N.att.r_k' tensor; expected one to give heads and head size"));
  const Shape& hn = shapes.checked(*r_k, 2);
  const NamedTensor* key = shapes.first_ending(".att.key.weight");
  if (!key) throw FormatError(in_file(source, "no 'blocks.N.att.key.weight' tensor; expected one per RWKV layer"));
  const int64_t key_rows = shapes.checked(*key, 2)[0];
  if (key_rows % hn[1] != 0)
    throw FormatError(in_file(source, "tensor '" + key->name + "' has wrong shape; expected rows a multiple of the "
                                      "head size " + std::to_string(hn[1]) + ", got " +
                                      shape_to_string(key->view.shape)));

  RwkvConfig& rwkv = cfg.rwkv;
  rwkv.num_heads = hn[0];
  rwkv.head_dim = hn[1];
  rwkv.num_kv_heads = key_rows / hn[1];
  rwkv.qk_norm = shapes.first_ending(".att.ln_k.weight") != nullptr;
  rwkv.rope = true;
  rwkv.value_residual = rwkv.key_residual = rwkv.bonus = true;  // RWKV-Infer's hxa079 always uses all three
  rwkv.k_scaling = KScaling::kOmega;

  // The first RWKV layer gives the LoRA ranks and the FFN width; every layer must match them (checked by the table).
  const std::string first_rwkv = key->name.substr(0, key->name.size() - std::string_view("key.weight").size());
  rwkv.ranks = {.decay = shapes.shape(first_rwkv + "w1", 2)[1],
                .iclr = shapes.shape(first_rwkv + "a1", 2)[1],
                .value_mix = shapes.shape(first_rwkv + "v1", 2)[1],
                .key_mix = shapes.shape(first_rwkv + "k1", 2)[1],
                .gate = shapes.shape(first_rwkv + "g1", 2)[1]};
  cfg.intermediate_size = shapes.shape("blocks.0.ffn.gate.weight", 2)[0];
  cfg.attention_bias =
      shapes.first_ending(".att.receptance.bias") != nullptr || shapes.first_ending(".att.q_proj.bias") != nullptr;

  const RopeConfig rope{RopeType::kDefault, rope_theta, 1.0};
  for (int i = 0; i < n_layer; ++i) {
    const bool gqa = checkpoint.find("blocks." + std::to_string(i) + ".att.q_proj.weight") != nullptr;
    cfg.layers.push_back({.kind = gqa ? LayerKind::kNoPEAttention : LayerKind::kRwkv7,
                          .head_dim = rwkv.head_dim,
                          .num_heads = rwkv.num_heads,
                          .num_kv_heads = rwkv.num_kv_heads,
                          .intermediate_size = cfg.intermediate_size,
                          .sliding_window = 0,
                          .rope = gqa ? RopeConfig{} : rope,
                          .kv_shared_from = -1});
  }

  cfg.max_position_embeddings = 8192;  // RWKV-Infer max_ctxlen default
  cfg.rms_norm_eps = rms_norm_eps;
  cfg.norm_style = NormStyle::kWeightInFloat32;  // T5RMSNorm
  cfg.embed_scale = 1.0;
  cfg.tie_word_embeddings = false;  // the .pth stores head.weight (a clone of emb when the teacher was tied)
  cfg.attention_scaling = AttentionScaling::kInverseSqrtHeadDim;
  cfg.activation = Activation::kSilu;
  validate_model_config(cfg, source);
  return cfg;
}

}  // namespace hx
