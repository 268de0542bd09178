// The config of a hybrid student built from its teacher's config (what `convert` writes and the presets use).
//
// Design goals: the layer plan of hybrid-arch.md §4 (hxa079) and hxa07i.md (hxa07i) as two pure functions, so the
// converter and the presets cannot disagree about a student's geometry. Non-goals: weights (convert/ maps and
// initialises them).
#pragma once

#include <vector>

#include "arch/model_config.h"

namespace hx {

// hxa079 from a Llama teacher: layers in `attention_layers` become NoPE GQA, every other layer RWKV-7 with
// H = heads, N = head_dim, Hk = kv heads, RoPE θ of the teacher, v_first/k_first residuals, r_k bonus, ω k-scaling,
// no qk-norm (Llama has none). Teacher norms, MLP, embeddings and head stay. Throws UsageError for a layer index
// outside the model, FormatError when the teacher is not a Llama config.
ModelConfig hxa079_student_config(const ModelConfig& llama_teacher, const std::vector<int>& attention_layers,
                                  const LoraRanks& ranks);

// hxa07i from a Gemma-4 teacher: every full-attention layer becomes RWKV-7 + TICA with head size `rwkv_head_dim`,
// H = q width / N, Hk = k width / N (hxa07i.md), QK-norm, NoPE, decay k-scaling, no residuals or bonus; sliding
// layers, KV sharing among them, the MLP widths (double-wide included), PLE and everything else stay.
// Throws FormatError when a full layer's widths are not multiples of `rwkv_head_dim`.
ModelConfig hxa07i_student_config(const ModelConfig& gemma4_teacher, int64_t rwkv_head_dim, const LoraRanks& ranks,
                                  const TicaConfig& tica);

}  // namespace hx
