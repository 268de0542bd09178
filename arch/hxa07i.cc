// hxa07i: the attention slot of a converted Gemma-4 full layer, RWKV-7 + TICA (../shared/spec/hxa07i.md).
//
// Everything else in an hxa07i checkpoint keeps its Gemma-4 name and row (gemma4.cc: the attention rows there apply
// to sliding and full layers only, the rest to every layer), so this table holds only what a kRwkv7Tica layer adds,
// under "{P}layers.{L}.self_attn.". Vectors are 1-D here ([C]), unlike hxa079's [1, 1, C]. The value/key residual
// and bonus rows are off by default ([choice] in hxa07i.md) but kept so a checkpoint that has them is described.
// RWKV and TICA projections are matmuls (int4 allowed); LoRA factors, vectors and norms stay as they are.
#include "arch/tensor_table.h"

namespace hx {
namespace {

using enum Dim;
using enum TensorRole;
using enum Need;

constexpr LayerMask kSlot = kRwkvTicaLayers;

constexpr TensorRow kHxa07iRows[] = {
    {.name = "{P}layers.{L}.self_attn.receptance.weight", .layers = kSlot, .shape = {kRwkvC, kHidden},
     .role = kRwkvR, .quant = kMatmulToInt4},
    {.name = "{P}layers.{L}.self_attn.key.weight", .layers = kSlot, .shape = {kRwkvCk, kHidden}, .role = kRwkvK,
     .quant = kMatmulToInt4},
    {.name = "{P}layers.{L}.self_attn.value.weight", .layers = kSlot, .shape = {kRwkvCk, kHidden}, .role = kRwkvV,
     .quant = kMatmulToInt4},
    {.name = "{P}layers.{L}.self_attn.output.weight", .layers = kSlot, .shape = {kHidden, kRwkvC}, .role = kRwkvO,
     .quant = kMatmulToInt4},
    {.name = "{P}layers.{L}.self_attn.r_norm.weight", .layers = kSlot, .shape = {kRwkvHeadDim}, .role = kNorm,
     .need = kIfQkNorm},
    {.name = "{P}layers.{L}.self_attn.k_norm.weight", .layers = kSlot, .shape = {kRwkvHeadDim}, .role = kNorm,
     .need = kIfQkNorm},
    {.name = "{P}layers.{L}.self_attn.w0", .layers = kSlot, .shape = {kRwkvC}, .role = kDecayVector},
    {.name = "{P}layers.{L}.self_attn.w1", .layers = kSlot, .shape = {kHidden, kRankDecay}, .role = kLora},
    {.name = "{P}layers.{L}.self_attn.w2", .layers = kSlot, .shape = {kRankDecay, kRwkvC}, .role = kLora},
    {.name = "{P}layers.{L}.self_attn.a0", .layers = kSlot, .shape = {kRwkvC}, .role = kIclrVector},
    {.name = "{P}layers.{L}.self_attn.a1", .layers = kSlot, .shape = {kHidden, kRankIclr}, .role = kLora},
    {.name = "{P}layers.{L}.self_attn.a2", .layers = kSlot, .shape = {kRankIclr, kRwkvC}, .role = kLora},
    {.name = "{P}layers.{L}.self_attn.v0", .layers = kSlot, .shape = {kRwkvCk}, .role = kMixVector,
     .need = kIfValueResidual},
    {.name = "{P}layers.{L}.self_attn.v1", .layers = kSlot, .shape = {kHidden, kRankValueMix}, .role = kLora,
     .need = kIfValueResidual},
    {.name = "{P}layers.{L}.self_attn.v2", .layers = kSlot, .shape = {kRankValueMix, kRwkvCk}, .role = kLora,
     .need = kIfValueResidual},
    {.name = "{P}layers.{L}.self_attn.k0", .layers = kSlot, .shape = {kRwkvCk}, .role = kMixVector,
     .need = kIfKeyResidual},
    {.name = "{P}layers.{L}.self_attn.k1", .layers = kSlot, .shape = {kHidden, kRankKeyMix}, .role = kLora,
     .need = kIfKeyResidual},
    {.name = "{P}layers.{L}.self_attn.k2", .layers = kSlot, .shape = {kRankKeyMix, kRwkvCk}, .role = kLora,
     .need = kIfKeyResidual},
    {.name = "{P}layers.{L}.self_attn.g1", .layers = kSlot, .shape = {kHidden, kRankGate}, .role = kLora},
    {.name = "{P}layers.{L}.self_attn.g2", .layers = kSlot, .shape = {kRankGate, kRwkvC}, .role = kLora},
    {.name = "{P}layers.{L}.self_attn.r_k", .layers = kSlot, .shape = {kRwkvHeads, kRwkvHeadDim}, .role = kBonus,
     .need = kIfBonus},

    // TICA: NoPE GQA with QK-norm and a sigmoid LoRA gate; o_proj starts at zero in a fresh conversion.
    {.name = "{P}layers.{L}.self_attn.tica.q_proj.weight", .layers = kSlot, .shape = {kTicaQDim, kHidden},
     .role = kTicaQ, .quant = kMatmulToInt4},
    {.name = "{P}layers.{L}.self_attn.tica.k_proj.weight", .layers = kSlot, .shape = {kTicaKvDim, kHidden},
     .role = kTicaK, .quant = kMatmulToInt4},
    {.name = "{P}layers.{L}.self_attn.tica.v_proj.weight", .layers = kSlot, .shape = {kTicaKvDim, kHidden},
     .role = kTicaV, .quant = kMatmulToInt4},
    {.name = "{P}layers.{L}.self_attn.tica.o_proj.weight", .layers = kSlot, .shape = {kHidden, kTicaQDim},
     .role = kTicaO, .quant = kMatmulToInt4},
    {.name = "{P}layers.{L}.self_attn.tica.q_norm.weight", .layers = kSlot, .shape = {kTicaHeadDim}, .role = kNorm},
    {.name = "{P}layers.{L}.self_attn.tica.k_norm.weight", .layers = kSlot, .shape = {kTicaHeadDim}, .role = kNorm},
    {.name = "{P}layers.{L}.self_attn.tica.g1", .layers = kSlot, .shape = {kHidden, kTicaGateRank}, .role = kLora},
    {.name = "{P}layers.{L}.self_attn.tica.g2", .layers = kSlot, .shape = {kTicaGateRank, kTicaQDim}, .role = kLora},
};

}  // namespace

std::span<const TensorRow> hxa07i_tensor_rows() { return kHxa07iRows; }

}  // namespace hx
