// The reference forward pass: a model run straight from its mapped checkpoint, token ids in, logits out.
//
// Design goals
//  * One forward pass for every architecture hxforge handles — Gemma-4 (sliding/full attention, KV sharing, PLE,
//    layer_scalar, softcap), Llama / Reka, hxa079 (RWKV-7 + NoPE GQA) and hxa07i (Gemma-4 with RWKV-7 + TICA in its
//    full layers) — described by data (the resolved per-layer plan of verify/forward_plan.h), computed by the kernels
//    of verify/kernels.h, with every formula as the references write it (teachers.md §2/§4, hybrid-arch.md §1,
//    ../shared/spec/hxa07i.md).
//  * Weights stay where they lie: matrices are views into the memory-mapped file in their stored dtype (F32, BF16,
//    F16, F8_E4M3/E5M2), decoded tile by tile inside the matrix product; only small vectors (norm weights, w0, r_k,
//    layer_scalar, biases) are converted to f32 at load. Every matrix comes from one factory (make_weight in
//    verify/model_weights.h), which quantized encodings extend.
//  * Prefill and decode are the same call: forward() takes T tokens, batches the matrix products over T, and carries
//    a ForwardState (KV caches, RWKV states, position) to the next call. Because every kernel computes a row
//    independently of how many rows a call holds, prefill-then-decode gives the same bits as one prefill.
//  * Two compute modes. kF32 is the reference: activations f32, weights upcast, f32 products (what transformers'
//    float32 run of a bf16 checkpoint computes). kBF16 is the fast mode: the matrix products round their inputs to
//    bf16 and use exact bf16 products with f32 sums (MatmulCompute::kBF16, vdpbf16ps); everything between the
//    products (norms, RoPE, softmax, the RWKV recurrence, residual adds) stays in f32. It is therefore closer to the
//    f32 reference than a real bf16 run (which also rounds every intermediate), and cheaper than emulating that
//    rounding; the one deliberate bf16 effect is Gemma's embedding scale, which a bf16 model holds as bf16
//    (√1536 → 39.25).
//
// Non-goals: batches of sequences (one sequence per state; run several states for several sequences); sampling;
// trimming sliding-window caches (a KV cache keeps every position, so a long context costs its full cache);
// a CUDA path (verify/cuda/, not built yet).
//
// The header includes neither arch/model_config.h nor verify/kernels.h: a tool that runs models sees this API only
// (ModelConfig is forward-declared for the constructor that takes one).
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "formats/checkpoint.h"

namespace hx {

struct ModelConfig;
struct ModelPlan;

enum class ComputeMode : uint8_t {
  kF32,   // reference: f32 activations, weights upcast to f32, f32 products
  kBF16,  // fast: bf16 × bf16 products with f32 sums; every other op in f32 (see the header comment)
};
const char* compute_mode_name(ComputeMode mode);  // "f32", "bf16"

struct ForwardOptions {
  ComputeMode compute = ComputeMode::kF32;
  // Hidden states in transformers' output_hidden_states indexing (the oracle's hidden_f32): [0] the scaled
  // embedding, [k] the output of layer k-1 (after layer_scalar) for k = 1 … L-1, [L] the final RMSNorm's output.
  // The raw output of the last layer (the final norm's input) comes as final_norm_input.
  bool collect_hidden = false;
  bool collect_ple_inputs = false;  // Gemma per-layer inputs P [T, L, ple_dim] (the oracle's ple_inputs_f32)
};

struct ForwardResult {
  int64_t tokens = 0;
  int64_t vocab_size = 0;
  std::vector<float> logits;  // [tokens, vocab_size], after the final softcap

  // With ForwardOptions::collect_hidden (else empty): num_layers + 1 entries of [tokens, hidden_size].
  std::vector<std::vector<float>> hidden;
  std::vector<float> final_norm_input;  // [tokens, hidden_size]
  // With ForwardOptions::collect_ple_inputs on a model with per-layer embeddings: [tokens, num_layers, ple_dim].
  std::vector<float> ple_inputs;

  std::span<const float> logits_row(int64_t t) const {
    return std::span<const float>(logits).subspan(static_cast<size_t>(t * vocab_size),
                                                  static_cast<size_t>(vocab_size));
  }
};

// What one layer carries from call to call.
struct LayerState {
  // Attention layers that compute their own K/V, and the TICA part of RWKV+TICA layers: every position so far,
  // [positions, kv_heads, head_dim] each (post-norm, post-RoPE — exactly what attention reads). Empty on Gemma
  // KV-shared layers, which read their source layer's cache.
  std::vector<float> keys;
  std::vector<float> values;
  // RWKV layers: the WKV state [heads, N, N] in the fla layout S[head][key i][value j].
  std::vector<float> wkv;
};

// The recurrent state of one sequence: per-layer caches and the number of tokens processed (the next position).
class ForwardState {
 public:
  int64_t position() const { return position_; }
  int num_layers() const { return static_cast<int>(layers_.size()); }
  const LayerState& layer(int i) const { return layers_.at(static_cast<size_t>(i)); }
  // Back to an empty sequence (caches emptied, RWKV states zeroed), keeping the allocations.
  void reset();

 private:
  friend class Model;
  std::vector<LayerState> layers_;
  int64_t position_ = 0;
  // A step run layer by layer (Model::forward_layer): the next layer due, and what the hxa079 first RWKV layer
  // handed to the later ones within this step (v_first / k_first are per-step temporaries, not state).
  int next_layer_ = 0;
  std::vector<float> step_v_first_, step_k_first_;
};

// Teacher forcing (Model::forward_layer): one layer run on a residual stream the caller supplies, typically another
// model's hidden state (ForwardResult::hidden[layer]).
struct LayerInput {
  std::span<const float> hidden;            // [T, hidden_size]: the residual stream entering the layer
  std::span<const float> per_layer_inputs;  // Gemma PLE: P [T, num_layers, ple_dim] (ForwardResult::ple_inputs)
};

// What a layer computed on the way, for comparisons with the layer it replaces.
struct LayerTrace {
  // [T, hidden_size]: the token mixer's output (attention, RWKV-7, or RWKV-7 + TICA) as the output projection gives
  // it, before the post-attention norm (Gemma) and the residual add.
  std::vector<float> mixer_output;
  // RWKV-7 + TICA layers only: the RWKV-7 part alone; mixer_output − rwkv_output is what TICA added.
  std::vector<float> rwkv_output;
};

class Model {
 public:
  // Uses config_for_checkpoint(checkpoint): the config.json beside the weights, or the configuration a bare
  // RWKV-LM hxa079 .pth implies (rope θ 1e6, eps 1e-6).
  explicit Model(const Checkpoint& checkpoint);
  Model(const Checkpoint& checkpoint, const ModelConfig& config);
  ~Model();
  Model(Model&&) noexcept;
  Model& operator=(Model&&) noexcept;
  Model(const Model&) = delete;
  Model& operator=(const Model&) = delete;
  // The checkpoint's mapped files stay alive as long as the Model (it keeps the storages' owners), so the
  // Checkpoint object itself may go away.

  const std::string& architecture() const;  // "gemma4", "llama", "hxa079", "hxa07i"
  int64_t vocab_size() const;
  int64_t hidden_size() const;
  int num_layers() const;
  const ModelPlan& plan() const;
  // Bytes of weights the model reads from the mapped file(s) per token (every matrix once), and bytes it holds in
  // its own memory (the f32 copies of small vectors): what "runs from the mapped file" means in numbers.
  uint64_t mapped_weight_bytes() const;
  uint64_t owned_weight_bytes() const;

  ForwardState new_state() const;
  // Runs `tokens` (ids in [0, vocab_size); FormatError naming the position and value otherwise) at positions
  // state.position() … + T-1, appends to the state, and returns their logits. T = 0 returns empty logits.
  // Calls on different states may run concurrently (the model is read-only; each call has its own scratch).
  ForwardResult forward(std::span<const int64_t> tokens, ForwardState& state, const ForwardOptions& options = {}) const;

  // One layer of a step, on the caller's residual stream: runs layer `layer` on input.hidden [T, D] at positions
  // state.position() … + T-1 with the code forward() runs for it, appends to the layer's caches, and returns the
  // layer's output [T, D] (the next layer's input: after the PLE block and layer_scalar). The layers of a step run
  // in order 0 … L-1 on one state (KV-shared layers read their source's cache of this step; hxa079's later RWKV
  // layers read the first one's v/k); the position advances after the last layer. UsageError when a layer comes out
  // of order, the input has the wrong width, or a PLE model gets no per-layer inputs.
  std::vector<float> forward_layer(int layer, const LayerInput& input, ForwardState& state,
                                   const ForwardOptions& options = {}, LayerTrace* trace = nullptr) const;

  struct Impl;

 private:
  std::unique_ptr<Impl> impl_;
};

// Throws FormatError (invalid input, exit 3) naming the first id outside [0, vocab_size):
// "token id 600 at position 2 is outside the vocabulary [0, 512)".
void check_token_ids(std::span<const int64_t> tokens, int64_t vocab_size);

}  // namespace hx
