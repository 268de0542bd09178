#include "arch/student_config.h"

#include <algorithm>

#include "formats/errors.h"

namespace hx {

ModelConfig hxa079_student_config(const ModelConfig& teacher, const std::vector<int>& attention_layers,
                                  const LoraRanks& ranks) {
  if (teacher.arch != Arch::kLlama)
    throw FormatError("hxa079 needs a llama teacher; expected arch llama, found " +
                      std::string(arch_name(teacher.arch)));
  for (int i : attention_layers)
    if (i < 0 || i >= teacher.num_layers())
      throw UsageError("attention layer " + std::to_string(i) + " is outside the teacher's " +
                       std::to_string(teacher.num_layers()) + " layers");
  ModelConfig s = teacher;
  s.arch = Arch::kHxa079;
  const LayerConfig& l0 = teacher.layers.front();
  s.rwkv = {.num_heads = l0.num_heads,
            .head_dim = l0.head_dim,
            .num_kv_heads = l0.num_kv_heads,
            .ranks = ranks,
            .value_residual = true,
            .key_residual = true,
            .bonus = true,
            .qk_norm = false,
            .rope = true,
            .k_scaling = KScaling::kOmega};
  for (int i = 0; i < s.num_layers(); ++i) {
    LayerConfig& l = s.layers[i];
    const bool gqa = std::find(attention_layers.begin(), attention_layers.end(), i) != attention_layers.end();
    l.kind = gqa ? LayerKind::kNoPEAttention : LayerKind::kRwkv7;
    if (gqa) l.rope = {};
  }
  s.norm_style = NormStyle::kWeightInFloat32;  // RWKV-Infer's T5RMSNorm (hybrid-arch.md §1.1)
  validate_model_config(s, "hxa079 student of a llama teacher");
  return s;
}

ModelConfig hxa07i_student_config(const ModelConfig& teacher, int64_t rwkv_head_dim, const LoraRanks& ranks,
                                  const TicaConfig& tica) {
  if (teacher.arch != Arch::kGemma4)
    throw FormatError("hxa07i needs a gemma4 teacher; expected arch gemma4, found " +
                      std::string(arch_name(teacher.arch)));
  ModelConfig s = teacher;
  s.arch = Arch::kHxa07i;
  s.tica = tica;
  s.rwkv = {.ranks = ranks, .qk_norm = true, .rope = false, .k_scaling = KScaling::kDecay};
  for (int i = 0; i < s.num_layers(); ++i) {
    LayerConfig& l = s.layers[i];
    if (l.kind != LayerKind::kFullAttention) continue;
    // A KV-shared full layer's own q/k widths are still the full-layer widths the student sizes itself from.
    if (rwkv_head_dim <= 0 || l.q_dim() % rwkv_head_dim != 0 || l.kv_dim() % rwkv_head_dim != 0)
      throw FormatError("layer " + std::to_string(i) + ": q width " + std::to_string(l.q_dim()) + " and k width " +
                        std::to_string(l.kv_dim()) + " must be multiples of the RWKV head size " +
                        std::to_string(rwkv_head_dim));
    const int64_t heads = l.q_dim() / rwkv_head_dim, kv_heads = l.kv_dim() / rwkv_head_dim;
    if (s.rwkv.num_heads == 0) {
      s.rwkv.num_heads = heads;
      s.rwkv.num_kv_heads = kv_heads;
      s.rwkv.head_dim = rwkv_head_dim;
    }
    l = {.kind = LayerKind::kRwkv7Tica,
         .head_dim = rwkv_head_dim,
         .num_heads = heads,
         .num_kv_heads = kv_heads,
         .intermediate_size = l.intermediate_size,
         .sliding_window = 0,
         .rope = {},
         .kv_shared_from = -1};
  }
  if (s.rwkv.num_heads == 0)
    throw FormatError("hxa07i needs a teacher with a full_attention layer to convert; found " +
                      std::to_string(teacher.num_layers()) + " layers, none of them full_attention");
  validate_model_config(s, "hxa07i student of a gemma4 teacher");
  return s;
}

}  // namespace hx
