// The execution plan of a forward pass: a ModelConfig resolved into what each layer computes and which tensors
// (resolved names and expected shapes) it reads.
//
// Design goals: the one place where architecture rules become data — which norm sits where (Gemma's four norms vs
// Llama's two), the attention scale, RoPE per layer, KV-sharing sources, the RWKV variant switches, the first RWKV
// layer (v_first/k_first) — so the block code (attention_block.cc, rwkv_block.cc, gemma_block.cc) has no
// `if (arch == …)`. Tensors are found through arch/arch.h's expected_tensors(): by role where a role names one tensor
// of a layer (q/k/v/o, r/k/v/o, MLP gate/up/down, embedding, head, …), by the table row's HF-style pattern where a
// role is shared (norms, LoRA factors, biases), so RWKV-LM .pth names and HF names resolve alike.
// Non-goals: loading or checking bytes (model.cc does, against the shapes recorded here).
//
// Plain data only: this header includes neither arch/model_config.h nor verify/kernels.h.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "formats/checkpoint.h"
#include "formats/tensor.h"

namespace hx {

struct ModelConfig;

// A tensor the plan reads: its name in the checkpoint and the shape the architecture table expects. An empty name
// means "not used by this layer" (an absent optional tensor, a feature that is off).
struct TensorRef {
  std::string name;
  Shape shape;
  bool used() const { return !name.empty(); }
};

struct RopePlan {
  bool enabled = false;
  bool proportional = false;            // Gemma-4 full layers: only the first partial·head_dim/2 pairs rotate
  double theta = 0.0;
  double partial_rotary_factor = 1.0;   // proportional only
  int64_t head_dim = 0;                 // the rotated head (RoPE always spans the whole head, NeoX half-split)
  bool operator==(const RopePlan&) const = default;
};

enum class MixerKind : uint8_t {
  kAttention,  // softmax attention: Gemma sliding/full, Llama, hxa079 NoPE GQA
  kRwkv,       // hxa079 RWKV-7 time mix
  kRwkvTica,   // hxa07i: RWKV-7 time mix + TICA, summed
};

// Softmax attention (also TICA, which is NoPE attention with QK-norm and a gate).
struct AttentionPlan {
  int64_t heads = 0, kv_heads = 0, head_dim = 0;
  int64_t sliding_window = 0;  // tokens a query sees including itself; 0 = all
  float scale = 1.0f;          // Gemma-4: 1.0; Llama, hxa079 GQA, TICA: 1/sqrt(head_dim)
  RopePlan rope;
  int kv_source = -1;          // ≥ 0: Gemma KV sharing, read that layer's cache and compute no K/V here
  bool v_norm = false;         // Gemma-4: weightless RMSNorm on v
  TensorRef q, k, v, o;
  TensorRef q_norm, k_norm;    // per-head RMSNorm weights [head_dim] (Gemma, qk-norm hybrids, TICA)
  TensorRef q_bias, k_bias, v_bias, o_bias;
  TensorRef gate_down, gate_up;  // TICA's sigmoid LoRA gate: sigmoid(h@g1)@g2, stored [D, R] and [R, heads·head_dim]
};

struct RwkvPlan {
  int64_t heads = 0, kv_heads = 0, head_dim = 0;
  RopePlan rope;               // hxa079: RoPE on r and k with the teacher θ; hxa07i: none
  bool k_scale_by_decay = false;  // k·(1 − d + a) (hxa07i) instead of k·(1 − ω + a) (hxa079)
  bool first_rwkv_layer = false;  // stores v_first / k_first for the later layers
  bool value_residual = false, key_residual = false, bonus = false;
  TensorRef r, k, v, o;
  TensorRef r_bias, k_bias, v_bias;
  TensorRef r_norm, k_norm;    // per-head RMSNorm weights [N] (qk-norm)
  TensorRef w0, w1, w2;        // decay: z = w0 + tanh(h@w1)@w2
  TensorRef a0, a1, a2;        // in-context rate: a = σ(a0 + h@a1@a2)
  TensorRef v0, v1, v2;        // v_first mix gate
  TensorRef k0, k1, k2;        // k_first mix gate
  TensorRef g1, g2;            // output gate: σ(h@g1)@g2
  TensorRef r_k;               // bonus [H, N]
};

struct LayerPlan {
  MixerKind mixer = MixerKind::kAttention;
  AttentionPlan attention;  // kAttention; the TICA half of kRwkvTica
  RwkvPlan rwkv;            // kRwkv, kRwkvTica

  // Norms by what they do, whatever the checkpoint calls them. Gemma: attention_out = post_attention_layernorm,
  // ffn_in = pre_feedforward_layernorm, ffn_out = post_feedforward_layernorm. Llama / hxa079: ffn_in is their
  // post_attention_layernorm and the other two are unused.
  TensorRef input_norm, attention_out_norm, ffn_in_norm, ffn_out_norm;
  int64_t intermediate_size = 0;
  TensorRef mlp_gate, mlp_up, mlp_down;
  // Gemma per-layer-input block: h += RMSNorm(W_proj · (act(W_gate · h) ⊙ P_l)); then h *= layer_scalar.
  TensorRef ple_gate, ple_projection, ple_norm;
  TensorRef layer_scalar;
};

struct ModelPlan {
  std::string architecture;  // "gemma4", "llama", "hxa079", "hxa07i"
  std::string source;        // the checkpoint path, for messages
  int64_t vocab_size = 0, hidden_size = 0;
  double rms_norm_eps = 1e-6;
  bool norm_weight_after_downcast = false;  // Llama RMSNorm (weight applied after the cast) vs Gemma/T5 (in f32)
  double embed_scale = 1.0;                 // Gemma: √D, rounded to the run's model dtype at run time
  double final_logit_softcap = 0.0;         // 0 = none
  bool gelu_tanh = false;                   // MLP activation: GeGLU-tanh (Gemma) or SwiGLU
  TensorRef embedding, head, final_norm;    // a tied head names the embedding
  // Gemma per-layer embeddings (PLE): table [V_ple, L·P], model projection [L·P, D], projection norm [P].
  int64_t ple_dim = 0, ple_vocab = 0;
  TensorRef ple_table, ple_model_projection, ple_projection_norm;
  std::vector<LayerPlan> layers;

  int num_layers() const { return static_cast<int>(layers.size()); }
  bool has_ple() const { return ple_dim > 0; }
};

// Resolves `config` against the tensor table of its architecture. Throws UnsupportedError for what the forward pass
// cannot compute (RoPE types other than default/proportional, partial default RoPE) and FormatError for a config
// that contradicts itself (naming checkpoint.path).
ModelPlan plan_model(const Checkpoint& checkpoint, const ModelConfig& config);
// The same with config_for_checkpoint(checkpoint).
ModelPlan plan_model(const Checkpoint& checkpoint);

}  // namespace hx
