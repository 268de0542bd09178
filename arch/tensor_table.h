// The schema of the per-architecture tensor tables (gemma4.cc, llama.cc, hxa079.cc, hxa07i.cc).
//
// Design goals: an architecture is one table of designated-initializer rows, one row per tensor (gemma.cpp's
// tensor_info, llama.cpp's llama-arch): name pattern, the layer kinds it repeats over, shape in config symbols,
// role, when it must be present, and the quantization policy as a column — so the quantizer asks the table, never a
// list of name substrings (style-anchors.md, lessons 1–3). Rows are constexpr data; arch.cc evaluates them against
// a ModelConfig. Non-goals: conversion rules (which teacher tensor feeds which student tensor) live in convert/.
#pragma once

#include <array>
#include <cstdint>
#include <optional>
#include <span>
#include <string_view>
#include <vector>

#include "arch/model_config.h"

namespace hx {

// Shape symbols, evaluated against a ModelConfig and a layer index by evaluate_dim().
enum class Dim : uint8_t {
  kEnd = 0,  // terminates a row's shape; a row of only kEnd is a 0-dim scalar
  kOne,
  kVocab,   // vocab_size
  kHidden,  // hidden_size (D)
  kQDim,    // layer: num_heads·head_dim
  kKvDim,   // layer: num_kv_heads·head_dim
  kHeadDim,  // layer: head_dim
  kFfn,      // layer: intermediate_size
  kPleDim,    // hidden_size_per_layer_input
  kPleAll,    // num_layers·hidden_size_per_layer_input (the PLE table is layer-major packed)
  kPleVocab,  // vocab_size_per_layer_input
  kRwkvC,     // H·N
  kRwkvCk,    // Hk·N
  kRwkvHeads,    // H
  kRwkvHeadDim,  // N
  kRankDecay, kRankIclr, kRankValueMix, kRankKeyMix, kRankGate,
  kTicaQDim,   // TICA heads·head_dim
  kTicaKvDim,  // TICA kv heads·head_dim
  kTicaHeadDim,
  kTicaGateRank,
};
inline constexpr size_t kMaxRank = 3;
using DimList = std::array<Dim, kMaxRank>;

enum class TensorRole : uint8_t {
  kEmbedding,
  kPerLayerEmbedding,   // Gemma PLE table
  kPerLayerProjection,  // Gemma PLE matmuls (model projection, per-layer gate and projection)
  kNorm,
  kLayerScalar,  // Gemma layer_scalar, multiplies the residual stream
  kAttentionQ, kAttentionK, kAttentionV, kAttentionO,
  kBias,
  kRwkvR, kRwkvK, kRwkvV, kRwkvO,
  kLora,          // RWKV/TICA low-rank factors (w1, w2, a1, …, g2)
  kDecayVector,   // w0
  kIclrVector,    // a0
  kMixVector,     // v0, k0
  kBonus,         // r_k
  kMlpGate, kMlpUp, kMlpDown,
  kHead,
  kBookkeeping,  // trainer scalars nobody reads (hxa079 layer_architecture, head_size_record)
  kTicaQ, kTicaK, kTicaV, kTicaO,
};
std::string_view role_name(TensorRole r);

// Quantization floor, lowest first: a scheme is allowed when it is at or above the row's floor in this order.
enum class MinPrecision : uint8_t { kInt4, kFp5, kFp6, kFp8, kInt8, kKeep };
std::string_view precision_name(MinPrecision p);                     // "int4", "fp5", "fp6", "fp8", "int8", "keep"
std::optional<MinPrecision> precision_from_scheme(std::string_view);  // the `quantize --scheme` names

struct QuantPolicy {
  bool quantizable = false;
  MinPrecision lowest = MinPrecision::kKeep;
  bool allows(MinPrecision scheme) const { return quantizable && scheme >= lowest && scheme != MinPrecision::kKeep; }
  bool operator==(const QuantPolicy&) const = default;
};
inline constexpr QuantPolicy kNeverQuantize{false, MinPrecision::kKeep};   // norms, LoRA, vectors, embeddings, PLE
inline constexpr QuantPolicy kMatmulToInt4{true, MinPrecision::kInt4};     // attention / RWKV / MLP matmuls
inline constexpr QuantPolicy kHeadToInt8{true, MinPrecision::kInt8};       // lm_head: RWKV-Infer keeps it int8

// When a row's tensor must be in the checkpoint.
enum class Need : uint8_t {
  kRequired,
  kOptional,          // accepted when present, never required (trainer bookkeeping)
  kUnlessTied,        // lm_head: required when untied; accepted and ignored when tied
  kIfOwnKv,           // Gemma k_proj/v_proj/k_norm: required where the layer computes K/V; optional on KV-shared
                      // layers (transformers drops them on load, teachers.md §3)
  kIfPle,             // present iff per-layer embeddings are configured
  kIfQkNorm,          // present iff rwkv.qk_norm
  kIfAttentionBias,   // present iff attention_bias
  kIfValueResidual,   // present iff rwkv.value_residual
  kIfKeyResidual,     // present iff rwkv.key_residual
  kIfBonus,           // present iff rwkv.bonus
};

using LayerMask = uint32_t;
constexpr LayerMask layer_bit(LayerKind k) { return LayerMask{1} << static_cast<unsigned>(k); }
inline constexpr LayerMask kModelLevel = 0;  // once per model, no {L} in the name
inline constexpr LayerMask kSlidingLayers = layer_bit(LayerKind::kSlidingAttention);
inline constexpr LayerMask kFullLayers = layer_bit(LayerKind::kFullAttention);
inline constexpr LayerMask kRopeAttentionLayers = kSlidingLayers | kFullLayers;
inline constexpr LayerMask kNoPELayers = layer_bit(LayerKind::kNoPEAttention);
inline constexpr LayerMask kRwkvLayers = layer_bit(LayerKind::kRwkv7);
inline constexpr LayerMask kRwkvTicaLayers = layer_bit(LayerKind::kRwkv7Tica);
inline constexpr LayerMask kEveryLayer = (LayerMask{1} << kLayerKindCount) - 1;

struct TensorRow {
  std::string_view name = {};     // HF-style pattern: {P} = ModelConfig::tensor_prefix, {L} = layer index
  std::string_view rwkv_lm_name = {};  // RWKV-LM .pth pattern (hxa079), "" where the format has no such tensor
  LayerMask layers = kModelLevel;
  DimList shape{};
  TensorRole role = TensorRole::kNorm;
  Need need = Need::kRequired;
  QuantPolicy quant = kNeverQuantize;
};

// The per-architecture tables, each defined in its own file.
std::span<const TensorRow> gemma4_tensor_rows();
std::span<const TensorRow> llama_tensor_rows();
std::span<const TensorRow> hxa079_tensor_rows();
std::span<const TensorRow> hxa07i_tensor_rows();  // the RWKV+TICA slot only; hxa07i keeps every Gemma-4 row
// Name prefixes of Gemma4ForConditionalGeneration's vision/audio parts, which the text stack skips.
std::span<const std::string_view> gemma4_multimodal_prefixes();

// The rows describing an architecture (hxa07i: the Gemma-4 rows followed by its own).
std::vector<std::span<const TensorRow>> tensor_rows(Arch arch);

// A symbol's value for `layer` (-1 for model-level rows).
int64_t evaluate_dim(Dim d, const ModelConfig& cfg, int layer);

}  // namespace hx
