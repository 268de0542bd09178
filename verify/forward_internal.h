// Internal interface of the forward pass (model.cc and the block files); not part of the public API.
//
// The loaded model is the plan (forward_plan.h) plus, per tensor it names, a WeightMatrix over the mapped file or an
// f32 copy of a small vector. A forward call builds a StepContext (token count, positions, compute mode, RoPE tables,
// the hxa079 v_first/k_first of this call) and runs each layer's blocks on row-major f32 activations [T, …].
// Block contract: a mixer reads the normed input x [T, D] and writes its output to `out` [T, D] (the caller adds it
// to the residual stream), appending to the layer's caches as it goes.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <span>
#include <utility>
#include <vector>

#include "verify/forward.h"
#include "verify/forward_plan.h"
#include "verify/kernels.h"

namespace hx {

// Weights of a softmax attention mixer, or of TICA.
struct AttentionWeights {
  std::unique_ptr<WeightMatrix> q, k, v, o;  // k, v absent on Gemma KV-shared layers
  std::unique_ptr<WeightMatrix> gate_down, gate_up;  // TICA gate: σ(h@g1)@g2
  std::vector<float> q_norm, k_norm, q_bias, k_bias, v_bias, o_bias;  // empty = absent
  std::vector<float> rope_inv_freq;                                   // empty = no RoPE
};

struct RwkvWeights {
  std::unique_ptr<WeightMatrix> r, k, v, o;
  std::unique_ptr<WeightMatrix> w1, w2, a1, a2, v1, v2, k1, k2, g1, g2;  // LoRA factors, viewed transposed
  std::vector<float> r_bias, k_bias, v_bias, r_norm, k_norm;
  std::vector<float> w0, a0, v0, k0, r_k;
  std::vector<float> rope_inv_freq;
};

struct LayerWeights {
  AttentionWeights attention;  // softmax attention, or TICA in an RWKV+TICA layer
  RwkvWeights rwkv;
  std::vector<float> input_norm, attention_out_norm, ffn_in_norm, ffn_out_norm;
  std::unique_ptr<WeightMatrix> mlp_gate, mlp_up, mlp_down;
  std::unique_ptr<WeightMatrix> ple_gate, ple_projection;
  std::vector<float> ple_norm;
  float layer_scalar = 1.0f;
  bool has_layer_scalar = false;
};

struct Model::Impl {
  ModelPlan plan;
  std::vector<std::shared_ptr<const void>> storage_owners;  // keep the mapped files alive
  std::unique_ptr<WeightMatrix> embedding, head;            // head is null when tied to the embedding
  std::unique_ptr<WeightMatrix> ple_table, ple_model_projection;
  std::vector<float> final_norm, ple_projection_norm;
  std::vector<LayerWeights> layers;
  uint64_t mapped_bytes = 0, owned_bytes = 0;

  const WeightMatrix& head_matrix() const { return head ? *head : *embedding; }
};

// Reusable activation buffers of one forward call. A prefill allocates tens of MB of activations per layer; taking
// them from a pool (largest first-fit, given back when a Buffer goes out of scope) means the pages are allocated,
// faulted in and zeroed once per call instead of once per layer. Buffers start with unspecified contents. Used from
// the calling thread only (never inside a parallel region).
class ScratchPool {
 public:
  class Buffer {
   public:
    Buffer() = default;
    Buffer(Buffer&& other) noexcept { *this = std::move(other); }
    Buffer& operator=(Buffer&& other) noexcept {
      release();
      pool_ = std::exchange(other.pool_, nullptr);
      storage_ = std::move(other.storage_);
      size_ = std::exchange(other.size_, 0);
      return *this;
    }
    Buffer(const Buffer&) = delete;
    Buffer& operator=(const Buffer&) = delete;
    ~Buffer() { release(); }

    float* data() { return storage_.data(); }
    const float* data() const { return storage_.data(); }
    size_t size() const { return size_; }
    float& operator[](size_t i) { return storage_[i]; }
    float operator[](size_t i) const { return storage_[i]; }
    float* begin() { return data(); }
    float* end() { return data() + size_; }
    const float* begin() const { return data(); }
    const float* end() const { return data() + size_; }

   private:
    friend class ScratchPool;
    void release() {
      if (pool_) pool_->free_.push_back(std::move(storage_));
      pool_ = nullptr;
    }
    ScratchPool* pool_ = nullptr;
    std::vector<float> storage_;  // size() ≥ size_
    size_t size_ = 0;
  };

  // A buffer of n floats with unspecified contents.
  Buffer take(size_t n) {
    size_t best = free_.size();
    for (size_t i = 0; i < free_.size(); ++i) {  // the smallest free buffer that fits, else the largest one
      const size_t have = free_[i].size();
      if (best == free_.size()) {
        best = i;
        continue;
      }
      const size_t best_have = free_[best].size();
      if ((have >= n && (best_have < n || have < best_have)) || (best_have < n && have > best_have)) best = i;
    }
    Buffer b;
    if (best < free_.size()) {
      b.storage_ = std::move(free_[best]);
      free_.erase(free_.begin() + static_cast<std::ptrdiff_t>(best));
    }
    if (b.storage_.size() < n) b.storage_.resize(n);
    b.pool_ = this;
    b.size_ = n;
    return b;
  }

 private:
  std::vector<std::vector<float>> free_;
};
using Buffer = ScratchPool::Buffer;

// What every block of one forward call shares.
struct StepContext {
  const ModelPlan* plan = nullptr;
  int64_t tokens = 0;
  int64_t position = 0;  // position of the first token
  MatmulOptions matmul;  // kF32 or kBF16 products
  RmsNormParams norm;    // style and eps of the model's RMSNorm (weight filled per call)
  ScratchPool* scratch = nullptr;  // activation buffers of this call
  Buffer take(int64_t n) const { return scratch->take(static_cast<size_t>(n)); }
  // hxa079: the first RWKV layer's v and k of this call ([T, Ck], post-RoPE, before repeat_kv).
  std::vector<float> v_first, k_first;
};

// ---- shared helpers (model.cc) ----
// y = x·Wᵀ over the call's tokens, in the call's compute mode; with `bias`, y += bias per row.
void project(const StepContext& ctx, const float* x, const WeightMatrix& w, float* y,
             const std::vector<float>* bias = nullptr, bool accumulate = false);
// RMSNorm of `rows` rows of `dim` with the model's style and eps; `weight` empty = weightless.
void rms_norm_rows(const StepContext& ctx, const float* x, float* y, int64_t rows, int64_t dim,
                   const std::vector<float>& weight);
// Runs f(t) for every token, in parallel when the call has enough of them.
void for_each_token(const StepContext& ctx, const std::function<void(int64_t)>& f);

// ---- blocks ----
// attention_block.cc: softmax attention (Gemma sliding/full with KV sharing, Llama, hxa079 NoPE GQA) and TICA.
// `cache` is the layer's own state or, on a KV-shared layer, its source's (already holding this call's K/V).
// With `add_to_out` the output projection is added to `out` instead of written (TICA next to the RWKV output).
void attention_mixer(const AttentionPlan& plan, const AttentionWeights& w, const StepContext& ctx, const float* x,
                     const RopeTable* rope, LayerState& own, const LayerState& cache, float* out, bool add_to_out);
// rwkv_block.cc: the RWKV-7 time mix of hxa079 / hxa07i.
void rwkv_mixer(const RwkvPlan& plan, const RwkvWeights& w, StepContext& ctx, const float* x, const RopeTable* rope,
                LayerState& state, float* out);
// gemma_block.cc: per-layer inputs P [T, L, ple_dim] from the token ids and the scaled embedding h [T, D].
void gemma_per_layer_inputs(const Model::Impl& model, const StepContext& ctx, std::span<const int64_t> tokens,
                            const float* embedded, float* per_layer_inputs);
// gemma_block.cc: h += RMSNorm(W_proj · (act(W_gate · h) ⊙ P_l)), P_l = per_layer_inputs[:, layer, :].
void gemma_per_layer_block(const LayerWeights& w, const StepContext& ctx, int layer, const float* per_layer_inputs,
                           float* h);

}  // namespace hx
