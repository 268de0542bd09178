// hxa079: the OpenMOSE RWKV-7 + NoPE-GQA hybrid of a Llama-style teacher (Reka Flash 3), hybrid-arch.md §3.
//
// Two name columns: `name` is the HF-style layout RWKV-Infer's HFMode loads (§3.2, its RenameToHFStyle of the
// .pth names), `rwkv_lm_name` the RWKV-LM .pth that ConvertToRWKVInfer_hybrid.py writes (§3.1). Shapes are the
// same in both, the decay/mix vectors included ([1, 1, C]). RWKV layers (kRwkv7) and GQA layers (kNoPEAttention)
// share the block skeleton: ln1, ln2 and the teacher's SwiGLU MLP. qk-norm is one switch for both kinds (RWKV-Infer:
// "qk-norm iff any ln_k"). RWKV-Infer quantizes only the r/k/v/o, q/k/v/o and MLP matmuls and keeps lm_head int8;
// LoRA factors, vectors, norms and embeddings stay in the base dtype (§5).
#include "arch/tensor_table.h"

namespace hx {
namespace {

using enum Dim;
using enum TensorRole;
using enum Need;

constexpr TensorRow kHxa079Rows[] = {
    {.name = "{P}embed_tokens.weight", .rwkv_lm_name = "emb.weight", .shape = {kVocab, kHidden}, .role = kEmbedding},
    {.name = "{P}norm.weight", .rwkv_lm_name = "ln_out.weight", .shape = {kHidden}, .role = kNorm},
    {.name = "lm_head.weight", .rwkv_lm_name = "head.weight", .shape = {kVocab, kHidden}, .role = kHead,
     .need = kUnlessTied, .quant = kHeadToInt8},

    // Block skeleton, both layer kinds.
    {.name = "{P}layers.{L}.input_layernorm.weight", .rwkv_lm_name = "blocks.{L}.ln1.weight", .layers = kEveryLayer,
     .shape = {kHidden}, .role = kNorm},
    {.name = "{P}layers.{L}.post_attention_layernorm.weight", .rwkv_lm_name = "blocks.{L}.ln2.weight",
     .layers = kEveryLayer, .shape = {kHidden}, .role = kNorm},
    {.name = "{P}layers.{L}.mlp.gate_proj.weight", .rwkv_lm_name = "blocks.{L}.ffn.gate.weight",
     .layers = kEveryLayer, .shape = {kFfn, kHidden}, .role = kMlpGate, .quant = kMatmulToInt4},
    {.name = "{P}layers.{L}.mlp.up_proj.weight", .rwkv_lm_name = "blocks.{L}.ffn.up.weight", .layers = kEveryLayer,
     .shape = {kFfn, kHidden}, .role = kMlpUp, .quant = kMatmulToInt4},
    {.name = "{P}layers.{L}.mlp.down_proj.weight", .rwkv_lm_name = "blocks.{L}.ffn.down.weight",
     .layers = kEveryLayer, .shape = {kHidden, kFfn}, .role = kMlpDown, .quant = kMatmulToInt4},

    // RWKV-7 time-mix.
    {.name = "{P}layers.{L}.self_attn.receptance.weight", .rwkv_lm_name = "blocks.{L}.att.receptance.weight",
     .layers = kRwkvLayers, .shape = {kRwkvC, kHidden}, .role = kRwkvR, .quant = kMatmulToInt4},
    {.name = "{P}layers.{L}.self_attn.key.weight", .rwkv_lm_name = "blocks.{L}.att.key.weight",
     .layers = kRwkvLayers, .shape = {kRwkvCk, kHidden}, .role = kRwkvK, .quant = kMatmulToInt4},
    {.name = "{P}layers.{L}.self_attn.value.weight", .rwkv_lm_name = "blocks.{L}.att.value.weight",
     .layers = kRwkvLayers, .shape = {kRwkvCk, kHidden}, .role = kRwkvV, .quant = kMatmulToInt4},
    {.name = "{P}layers.{L}.self_attn.output.weight", .rwkv_lm_name = "blocks.{L}.att.output.weight",
     .layers = kRwkvLayers, .shape = {kHidden, kRwkvC}, .role = kRwkvO, .quant = kMatmulToInt4},
    {.name = "{P}layers.{L}.self_attn.receptance.bias", .rwkv_lm_name = "blocks.{L}.att.receptance.bias",
     .layers = kRwkvLayers, .shape = {kRwkvC}, .role = kBias, .need = kIfAttentionBias},
    {.name = "{P}layers.{L}.self_attn.key.bias", .rwkv_lm_name = "blocks.{L}.att.key.bias", .layers = kRwkvLayers,
     .shape = {kRwkvCk}, .role = kBias, .need = kIfAttentionBias},
    {.name = "{P}layers.{L}.self_attn.value.bias", .rwkv_lm_name = "blocks.{L}.att.value.bias",
     .layers = kRwkvLayers, .shape = {kRwkvCk}, .role = kBias, .need = kIfAttentionBias},
    {.name = "{P}layers.{L}.self_attn.w0", .rwkv_lm_name = "blocks.{L}.att.w0", .layers = kRwkvLayers,
     .shape = {kOne, kOne, kRwkvC}, .role = kDecayVector},
    {.name = "{P}layers.{L}.self_attn.w1", .rwkv_lm_name = "blocks.{L}.att.w1", .layers = kRwkvLayers,
     .shape = {kHidden, kRankDecay}, .role = kLora},
    {.name = "{P}layers.{L}.self_attn.w2", .rwkv_lm_name = "blocks.{L}.att.w2", .layers = kRwkvLayers,
     .shape = {kRankDecay, kRwkvC}, .role = kLora},
    {.name = "{P}layers.{L}.self_attn.a0", .rwkv_lm_name = "blocks.{L}.att.a0", .layers = kRwkvLayers,
     .shape = {kOne, kOne, kRwkvC}, .role = kIclrVector},
    {.name = "{P}layers.{L}.self_attn.a1", .rwkv_lm_name = "blocks.{L}.att.a1", .layers = kRwkvLayers,
     .shape = {kHidden, kRankIclr}, .role = kLora},
    {.name = "{P}layers.{L}.self_attn.a2", .rwkv_lm_name = "blocks.{L}.att.a2", .layers = kRwkvLayers,
     .shape = {kRankIclr, kRwkvC}, .role = kLora},
    {.name = "{P}layers.{L}.self_attn.v0", .rwkv_lm_name = "blocks.{L}.att.v0", .layers = kRwkvLayers,
     .shape = {kOne, kOne, kRwkvCk}, .role = kMixVector, .need = kIfValueResidual},
    {.name = "{P}layers.{L}.self_attn.v1", .rwkv_lm_name = "blocks.{L}.att.v1", .layers = kRwkvLayers,
     .shape = {kHidden, kRankValueMix}, .role = kLora, .need = kIfValueResidual},
    {.name = "{P}layers.{L}.self_attn.v2", .rwkv_lm_name = "blocks.{L}.att.v2", .layers = kRwkvLayers,
     .shape = {kRankValueMix, kRwkvCk}, .role = kLora, .need = kIfValueResidual},
    {.name = "{P}layers.{L}.self_attn.k0", .rwkv_lm_name = "blocks.{L}.att.k0", .layers = kRwkvLayers,
     .shape = {kOne, kOne, kRwkvCk}, .role = kMixVector, .need = kIfKeyResidual},
    {.name = "{P}layers.{L}.self_attn.k1", .rwkv_lm_name = "blocks.{L}.att.k1", .layers = kRwkvLayers,
     .shape = {kHidden, kRankKeyMix}, .role = kLora, .need = kIfKeyResidual},
    {.name = "{P}layers.{L}.self_attn.k2", .rwkv_lm_name = "blocks.{L}.att.k2", .layers = kRwkvLayers,
     .shape = {kRankKeyMix, kRwkvCk}, .role = kLora, .need = kIfKeyResidual},
    {.name = "{P}layers.{L}.self_attn.g1", .rwkv_lm_name = "blocks.{L}.att.g1", .layers = kRwkvLayers,
     .shape = {kHidden, kRankGate}, .role = kLora},
    {.name = "{P}layers.{L}.self_attn.g2", .rwkv_lm_name = "blocks.{L}.att.g2", .layers = kRwkvLayers,
     .shape = {kRankGate, kRwkvC}, .role = kLora},
    {.name = "{P}layers.{L}.self_attn.r_k", .rwkv_lm_name = "blocks.{L}.att.r_k", .layers = kRwkvLayers,
     .shape = {kRwkvHeads, kRwkvHeadDim}, .role = kBonus, .need = kIfBonus},
    {.name = "{P}layers.{L}.self_attn.r_norm.weight", .rwkv_lm_name = "blocks.{L}.att.ln_r.weight",
     .layers = kRwkvLayers, .shape = {kRwkvHeadDim}, .role = kNorm, .need = kIfQkNorm},
    {.name = "{P}layers.{L}.self_attn.k_norm.weight", .rwkv_lm_name = "blocks.{L}.att.ln_k.weight",
     .layers = kRwkvLayers | kNoPELayers, .shape = {kHeadDim}, .role = kNorm, .need = kIfQkNorm},
    // Trainer bookkeeping (RWKVInside TimeMixer: 78.0 and N), 0-dim, read by nobody.
    {.name = "{P}layers.{L}.self_attn.layer_architecture", .rwkv_lm_name = "blocks.{L}.att.layer_architecture",
     .layers = kRwkvLayers, .shape = {}, .role = kBookkeeping, .need = kOptional},
    {.name = "{P}layers.{L}.self_attn.head_size_record", .rwkv_lm_name = "blocks.{L}.att.head_size_record",
     .layers = kRwkvLayers, .shape = {}, .role = kBookkeeping, .need = kOptional},

    // NoPE GQA layers.
    {.name = "{P}layers.{L}.self_attn.q_proj.weight", .rwkv_lm_name = "blocks.{L}.att.q_proj.weight",
     .layers = kNoPELayers, .shape = {kQDim, kHidden}, .role = kAttentionQ, .quant = kMatmulToInt4},
    {.name = "{P}layers.{L}.self_attn.k_proj.weight", .rwkv_lm_name = "blocks.{L}.att.k_proj.weight",
     .layers = kNoPELayers, .shape = {kKvDim, kHidden}, .role = kAttentionK, .quant = kMatmulToInt4},
    {.name = "{P}layers.{L}.self_attn.v_proj.weight", .rwkv_lm_name = "blocks.{L}.att.v_proj.weight",
     .layers = kNoPELayers, .shape = {kKvDim, kHidden}, .role = kAttentionV, .quant = kMatmulToInt4},
    {.name = "{P}layers.{L}.self_attn.o_proj.weight", .rwkv_lm_name = "blocks.{L}.att.o_proj.weight",
     .layers = kNoPELayers, .shape = {kHidden, kQDim}, .role = kAttentionO, .quant = kMatmulToInt4},
    {.name = "{P}layers.{L}.self_attn.q_proj.bias", .rwkv_lm_name = "blocks.{L}.att.q_proj.bias",
     .layers = kNoPELayers, .shape = {kQDim}, .role = kBias, .need = kIfAttentionBias},
    {.name = "{P}layers.{L}.self_attn.k_proj.bias", .rwkv_lm_name = "blocks.{L}.att.k_proj.bias",
     .layers = kNoPELayers, .shape = {kKvDim}, .role = kBias, .need = kIfAttentionBias},
    {.name = "{P}layers.{L}.self_attn.v_proj.bias", .rwkv_lm_name = "blocks.{L}.att.v_proj.bias",
     .layers = kNoPELayers, .shape = {kKvDim}, .role = kBias, .need = kIfAttentionBias},
    {.name = "{P}layers.{L}.self_attn.q_norm.weight", .rwkv_lm_name = "blocks.{L}.att.ln_r.weight",
     .layers = kNoPELayers, .shape = {kHeadDim}, .role = kNorm, .need = kIfQkNorm},
};

}  // namespace

std::span<const TensorRow> hxa079_tensor_rows() { return kHxa079Rows; }

}  // namespace hx
