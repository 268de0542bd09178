// Gemma-4 text stack: Gemma4ForCausalLM ("model.") or the language model of Gemma4ForConditionalGeneration
// ("model.language_model."). teachers.md §3; shapes are PyTorch [out, in].
//
// Per layer: q_proj/q_norm/o_proj everywhere; k_proj/v_proj/k_norm only where the layer computes its own K/V
// (KV-shared layers may still carry them, unused — teachers.md §3 finds both kinds of file); v_norm has no weight.
// The head is tied (no lm_head.weight) unless the config says otherwise. Embeddings, the PLE table and its
// matmuls, norms and layer_scalar are never quantized; attention and MLP matmuls may go down to int4.
#include "arch/tensor_table.h"

namespace hx {
namespace {

using enum Dim;
using enum TensorRole;
using enum Need;

constexpr TensorRow kGemma4Rows[] = {
    {.name = "{P}embed_tokens.weight", .shape = {kVocab, kHidden}, .role = kEmbedding},
    {.name = "{P}embed_tokens_per_layer.weight", .shape = {kPleVocab, kPleAll}, .role = kPerLayerEmbedding,
     .need = kIfPle},
    {.name = "{P}per_layer_model_projection.weight", .shape = {kPleAll, kHidden}, .role = kPerLayerProjection,
     .need = kIfPle},
    {.name = "{P}per_layer_projection_norm.weight", .shape = {kPleDim}, .role = kNorm, .need = kIfPle},
    {.name = "{P}norm.weight", .shape = {kHidden}, .role = kNorm},
    {.name = "lm_head.weight", .shape = {kVocab, kHidden}, .role = kHead, .need = kUnlessTied, .quant = kHeadToInt8},

    // Every layer, whatever fills its attention slot.
    {.name = "{P}layers.{L}.input_layernorm.weight", .layers = kEveryLayer, .shape = {kHidden}, .role = kNorm},
    {.name = "{P}layers.{L}.post_attention_layernorm.weight", .layers = kEveryLayer, .shape = {kHidden},
     .role = kNorm},
    {.name = "{P}layers.{L}.pre_feedforward_layernorm.weight", .layers = kEveryLayer, .shape = {kHidden},
     .role = kNorm},
    {.name = "{P}layers.{L}.post_feedforward_layernorm.weight", .layers = kEveryLayer, .shape = {kHidden},
     .role = kNorm},

    // Attention (sliding and full layers).
    {.name = "{P}layers.{L}.self_attn.q_proj.weight", .layers = kRopeAttentionLayers, .shape = {kQDim, kHidden},
     .role = kAttentionQ, .quant = kMatmulToInt4},
    {.name = "{P}layers.{L}.self_attn.q_norm.weight", .layers = kRopeAttentionLayers, .shape = {kHeadDim},
     .role = kNorm},
    {.name = "{P}layers.{L}.self_attn.k_proj.weight", .layers = kRopeAttentionLayers, .shape = {kKvDim, kHidden},
     .role = kAttentionK, .need = kIfOwnKv, .quant = kMatmulToInt4},
    {.name = "{P}layers.{L}.self_attn.v_proj.weight", .layers = kRopeAttentionLayers, .shape = {kKvDim, kHidden},
     .role = kAttentionV, .need = kIfOwnKv, .quant = kMatmulToInt4},
    {.name = "{P}layers.{L}.self_attn.k_norm.weight", .layers = kRopeAttentionLayers, .shape = {kHeadDim},
     .role = kNorm, .need = kIfOwnKv},
    {.name = "{P}layers.{L}.self_attn.o_proj.weight", .layers = kRopeAttentionLayers, .shape = {kHidden, kQDim},
     .role = kAttentionO, .quant = kMatmulToInt4},

    // MLP: down(gelu_tanh(gate(x)) * up(x)); double-wide on KV-shared layers (kFfn is per layer).
    {.name = "{P}layers.{L}.mlp.gate_proj.weight", .layers = kEveryLayer, .shape = {kFfn, kHidden},
     .role = kMlpGate, .quant = kMatmulToInt4},
    {.name = "{P}layers.{L}.mlp.up_proj.weight", .layers = kEveryLayer, .shape = {kFfn, kHidden}, .role = kMlpUp,
     .quant = kMatmulToInt4},
    {.name = "{P}layers.{L}.mlp.down_proj.weight", .layers = kEveryLayer, .shape = {kHidden, kFfn},
     .role = kMlpDown, .quant = kMatmulToInt4},

    // Per-layer-input block, then the residual scale.
    {.name = "{P}layers.{L}.per_layer_input_gate.weight", .layers = kEveryLayer, .shape = {kPleDim, kHidden},
     .role = kPerLayerProjection, .need = kIfPle},
    {.name = "{P}layers.{L}.per_layer_projection.weight", .layers = kEveryLayer, .shape = {kHidden, kPleDim},
     .role = kPerLayerProjection, .need = kIfPle},
    {.name = "{P}layers.{L}.post_per_layer_input_norm.weight", .layers = kEveryLayer, .shape = {kHidden},
     .role = kNorm, .need = kIfPle},
    {.name = "{P}layers.{L}.layer_scalar", .layers = kEveryLayer, .shape = {kOne}, .role = kLayerScalar},
};

// Gemma4ForConditionalGeneration's towers and their projections into the text stack (teachers.md §3, "Skip").
constexpr std::string_view kMultimodalPrefixes[] = {"model.vision_tower.", "model.audio_tower.",
                                                    "model.embed_vision.", "model.embed_audio."};

}  // namespace

std::span<const TensorRow> gemma4_tensor_rows() { return kGemma4Rows; }
std::span<const std::string_view> gemma4_multimodal_prefixes() { return kMultimodalPrefixes; }

}  // namespace hx
