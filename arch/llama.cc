// Llama (LlamaForCausalLM; Reka Flash 3), teachers.md §4. Shapes are PyTorch [out, in].
//
// The head is untied for Reka and stored as lm_head.weight; biases exist only with attention_bias (Reka has none).
// Attention and MLP matmuls may go down to int4, the head to int8; embeddings and norms stay as they are.
#include "arch/tensor_table.h"

namespace hx {
namespace {

using enum Dim;
using enum TensorRole;
using enum Need;

constexpr TensorRow kLlamaRows[] = {
    {.name = "{P}embed_tokens.weight", .shape = {kVocab, kHidden}, .role = kEmbedding},
    {.name = "{P}norm.weight", .shape = {kHidden}, .role = kNorm},
    {.name = "lm_head.weight", .shape = {kVocab, kHidden}, .role = kHead, .need = kUnlessTied, .quant = kHeadToInt8},

    {.name = "{P}layers.{L}.input_layernorm.weight", .layers = kEveryLayer, .shape = {kHidden}, .role = kNorm},
    {.name = "{P}layers.{L}.post_attention_layernorm.weight", .layers = kEveryLayer, .shape = {kHidden},
     .role = kNorm},

    {.name = "{P}layers.{L}.self_attn.q_proj.weight", .layers = kEveryLayer, .shape = {kQDim, kHidden},
     .role = kAttentionQ, .quant = kMatmulToInt4},
    {.name = "{P}layers.{L}.self_attn.k_proj.weight", .layers = kEveryLayer, .shape = {kKvDim, kHidden},
     .role = kAttentionK, .quant = kMatmulToInt4},
    {.name = "{P}layers.{L}.self_attn.v_proj.weight", .layers = kEveryLayer, .shape = {kKvDim, kHidden},
     .role = kAttentionV, .quant = kMatmulToInt4},
    {.name = "{P}layers.{L}.self_attn.o_proj.weight", .layers = kEveryLayer, .shape = {kHidden, kQDim},
     .role = kAttentionO, .quant = kMatmulToInt4},
    {.name = "{P}layers.{L}.self_attn.q_proj.bias", .layers = kEveryLayer, .shape = {kQDim}, .role = kBias,
     .need = kIfAttentionBias},
    {.name = "{P}layers.{L}.self_attn.k_proj.bias", .layers = kEveryLayer, .shape = {kKvDim}, .role = kBias,
     .need = kIfAttentionBias},
    {.name = "{P}layers.{L}.self_attn.v_proj.bias", .layers = kEveryLayer, .shape = {kKvDim}, .role = kBias,
     .need = kIfAttentionBias},
    {.name = "{P}layers.{L}.self_attn.o_proj.bias", .layers = kEveryLayer, .shape = {kHidden}, .role = kBias,
     .need = kIfAttentionBias},

    {.name = "{P}layers.{L}.mlp.gate_proj.weight", .layers = kEveryLayer, .shape = {kFfn, kHidden},
     .role = kMlpGate, .quant = kMatmulToInt4},
    {.name = "{P}layers.{L}.mlp.up_proj.weight", .layers = kEveryLayer, .shape = {kFfn, kHidden}, .role = kMlpUp,
     .quant = kMatmulToInt4},
    {.name = "{P}layers.{L}.mlp.down_proj.weight", .layers = kEveryLayer, .shape = {kHidden, kFfn},
     .role = kMlpDown, .quant = kMatmulToInt4},
};

}  // namespace

std::span<const TensorRow> llama_tensor_rows() { return kLlamaRows; }

}  // namespace hx
