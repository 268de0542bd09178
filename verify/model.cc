// Model: loading the planned tensors from the mapped checkpoint, and the forward loop (embedding, layers, final
// norm, head, softcap) around the blocks of attention_block.cc, rwkv_block.cc and gemma_block.cc.
#include <algorithm>
#include <cmath>
#include <set>
#include <string>
#include <utility>

#include "formats/errors.h"
#include "formats/float_convert.h"
#include "formats/parallel.h"
#include "verify/forward_internal.h"
#include "verify/layer_loading.h"
#include "verify/model_weights.h"

namespace hx {
namespace {

// Loads what a plan names, counting bytes viewed in place and bytes copied.
class Loader {
 public:
  Loader(const Checkpoint& checkpoint, Model::Impl& model) : checkpoint_(checkpoint), model_(model) {}

  std::unique_ptr<WeightMatrix> matrix(const TensorRef& ref, WeightLayout layout = WeightLayout::kOutIn) {
    if (!ref.used()) return nullptr;
    auto w = make_weight(checkpoint_, ref.name, layout, ref.shape);
    if (const NamedTensor* t = checkpoint_.find(ref.name)) model_.mapped_bytes += t->view.nbytes();
    return w;
  }
  std::vector<float> vector(const TensorRef& ref) {
    if (!ref.used()) return {};
    std::vector<float> v = load_vector_f32(checkpoint_, ref.name, ref.shape);
    model_.owned_bytes += v.size() * sizeof(float);
    return v;
  }
  float scalar(const TensorRef& ref) { return vector(ref).at(0); }

 private:
  const Checkpoint& checkpoint_;
  Model::Impl& model_;
};

std::unique_ptr<Model::Impl> load_model(const Checkpoint& checkpoint, ModelPlan plan) {
  auto model = std::make_unique<Model::Impl>();
  model->plan = std::move(plan);
  const ModelPlan& p = model->plan;
  std::set<const void*> seen;
  for (const NamedTensor& t : checkpoint.tensors) {
    if (t.view.storage.owner && seen.insert(t.view.storage.owner.get()).second) {
      model->storage_owners.push_back(t.view.storage.owner);
    }
  }
  Loader load(checkpoint, *model);
  model->embedding = load.matrix(p.embedding);
  if (p.head.name != p.embedding.name) model->head = load.matrix(p.head);
  model->final_norm = load.vector(p.final_norm);
  model->ple_table = load.matrix(p.ple_table);
  model->ple_model_projection = load.matrix(p.ple_model_projection);
  model->ple_projection_norm = load.vector(p.ple_projection_norm);
  model->layers.resize(p.layers.size());
  for (size_t i = 0; i < p.layers.size(); ++i) load_layer_weights(load, p.layers[i], model->layers[i]);
  return model;
}

// The value a run in `mode` holds for a scalar the model keeps in its own dtype (Gemma's embed_scale buffer:
// transformers multiplies by embed_scale.to(weight.dtype), so √1536 is 39.25 in a bf16 run, 39.1918… in f32).
float in_model_dtype(double value, ComputeMode mode) {
  return mode == ComputeMode::kBF16 ? bf16_to_f32(f32_to_bf16(static_cast<float>(value))) : static_cast<float>(value);
}

// The MLP: down(act(gate(x)) ⊙ up(x)), SwiGLU or GeGLU-tanh; with `add_to_out`, out += down(…).
void mlp_block(const LayerPlan& lp, const LayerWeights& w, const StepContext& ctx, const float* x, float* out,
               bool add_to_out) {
  const int64_t T = ctx.tokens, width = lp.intermediate_size;
  Buffer gate = ctx.take(T * width), up = ctx.take(T * width);
  const MatmulOutput gate_and_up[] = {{w.mlp_gate.get(), gate.data(), width}, {w.mlp_up.get(), up.data(), width}};
  matmul_many(x, T, w.mlp_gate->cols(), gate_and_up, ctx.matmul);  // x packed once for both
  const GluActivation act = ctx.plan->gelu_tanh ? GluActivation::kGeluTanh : GluActivation::kSilu;
  for_each_token(ctx, [&](int64_t t) {
    glu(act, gate.data() + t * width, up.data() + t * width, gate.data() + t * width, width);
  });
  project(ctx, gate.data(), *w.mlp_down, out, nullptr, add_to_out);
}

void add_rows(const StepContext& ctx, float* h, const float* delta, int64_t dim) {
  for_each_token(ctx, [&](int64_t t) {
    float* row = h + t * dim;
    const float* d = delta + t * dim;
    for (int64_t i = 0; i < dim; ++i) row[i] = row[i] + d[i];
  });
}

// One decoder layer on the residual stream h [T, D] (teachers.md §2 / §4, hybrid-arch.md §1.1, hxa07i.md).
// With `trace`, the mixer output is kept (forward_layer's teacher-forced comparisons).
void run_layer(const Model::Impl& model, int layer, StepContext& ctx, const RopeTable* rope,
               std::vector<LayerState>& states, const float* per_layer_inputs, float* h, LayerTrace* trace) {
  const LayerPlan& lp = model.plan.layers[static_cast<size_t>(layer)];
  const LayerWeights& w = model.layers[static_cast<size_t>(layer)];
  const int64_t T = ctx.tokens, D = model.plan.hidden_size;
  Buffer x = ctx.take(T * D), mix = ctx.take(T * D);

  rms_norm_rows(ctx, h, x.data(), T, D, w.input_norm);
  LayerState& own = states[static_cast<size_t>(layer)];
  // Without a post-norm (Llama) and without a trace, the output projections add straight onto the residual stream:
  // h + (W·a) in one step, the same addition as through `mix`, without its pass over memory.
  const bool attention_into_h = lp.mixer == MixerKind::kAttention && !trace && w.attention_out_norm.empty();
  const bool mlp_into_h = !trace && w.ffn_out_norm.empty();
  switch (lp.mixer) {
    case MixerKind::kAttention: {
      const int source = lp.attention.kv_source;
      const LayerState& cache = source >= 0 ? states.at(static_cast<size_t>(source)) : own;
      attention_mixer(lp.attention, w.attention, ctx, x.data(), rope, own, cache, attention_into_h ? h : mix.data(),
                      attention_into_h);
      break;
    }
    case MixerKind::kRwkv:
      rwkv_mixer(lp.rwkv, w.rwkv, ctx, x.data(), rope, own, mix.data());
      break;
    case MixerKind::kRwkvTica:  // mix = RWKV7(h) + TICA(h)
      rwkv_mixer(lp.rwkv, w.rwkv, ctx, x.data(), rope, own, mix.data());
      if (trace) trace->rwkv_output.assign(mix.begin(), mix.end());
      attention_mixer(lp.attention, w.attention, ctx, x.data(), nullptr, own, own, mix.data(), true);
      break;
  }
  if (trace) trace->mixer_output.assign(mix.begin(), mix.end());
  if (!attention_into_h) {
    if (!w.attention_out_norm.empty()) rms_norm_rows(ctx, mix.data(), mix.data(), T, D, w.attention_out_norm);
    add_rows(ctx, h, mix.data(), D);
  }

  rms_norm_rows(ctx, h, x.data(), T, D, w.ffn_in_norm);
  mlp_block(lp, w, ctx, x.data(), mlp_into_h ? h : mix.data(), mlp_into_h);
  if (!mlp_into_h) {
    if (!w.ffn_out_norm.empty()) rms_norm_rows(ctx, mix.data(), mix.data(), T, D, w.ffn_out_norm);
    add_rows(ctx, h, mix.data(), D);
  }

  if (w.ple_gate) gemma_per_layer_block(w, ctx, layer, per_layer_inputs, h);
  if (w.has_layer_scalar) {  // the whole residual stream, after the PLE block (teachers.md §6.6)
    const float s = w.layer_scalar;
    for_each_token(ctx, [&](int64_t t) {
      for (int64_t i = 0; i < D; ++i) h[t * D + i] = h[t * D + i] * s;
    });
  }
}

// The RoPE table of one layer's rotation for this call's positions, shared between layers that rotate alike.
class RopeTables {
 public:
  RopeTables(std::span<const int64_t> positions) : positions_(positions) {}
  const RopeTable* get(const RopePlan& plan, const std::vector<float>& inv_freq) {
    if (!plan.enabled) return nullptr;
    for (auto& [key, table] : tables_) {
      if (key == plan) return table.get();
    }
    tables_.emplace_back(plan, std::make_unique<RopeTable>(rope_table(inv_freq, positions_, DType::kF32)));
    return tables_.back().second.get();
  }

 private:
  std::span<const int64_t> positions_;
  std::vector<std::pair<RopePlan, std::unique_ptr<RopeTable>>> tables_;
};

// The context every layer of one call shares: compute mode, norm style, token count and first position.
StepContext step_context(const ModelPlan& plan, const ForwardOptions& options, ScratchPool& scratch, int64_t tokens,
                         int64_t position) {
  StepContext ctx;
  ctx.plan = &plan;
  ctx.scratch = &scratch;
  ctx.tokens = tokens;
  ctx.position = position;
  ctx.matmul.compute = options.compute == ComputeMode::kBF16 ? MatmulCompute::kBF16 : MatmulCompute::kF32;
  ctx.norm.style = plan.norm_weight_after_downcast ? RmsNormStyle::kLlama : RmsNormStyle::kGemma;
  ctx.norm.eps = static_cast<float>(plan.rms_norm_eps);
  ctx.norm.activation = DType::kF32;
  return ctx;
}

std::vector<int64_t> positions_of(const StepContext& ctx) {
  std::vector<int64_t> positions(static_cast<size_t>(ctx.tokens));
  for (int64_t t = 0; t < ctx.tokens; ++t) positions[static_cast<size_t>(t)] = ctx.position + t;
  return positions;
}

// The rotation a layer's mixer applies (attention's, or the RWKV path's), or null for none.
const RopeTable* layer_rope(const Model::Impl& m, int layer, RopeTables& tables) {
  const LayerPlan& lp = m.plan.layers[static_cast<size_t>(layer)];
  const LayerWeights& w = m.layers[static_cast<size_t>(layer)];
  return lp.mixer == MixerKind::kAttention ? tables.get(lp.attention.rope, w.attention.rope_inv_freq)
                                           : tables.get(lp.rwkv.rope, w.rwkv.rope_inv_freq);
}

}  // namespace

// ---- helpers shared with the block files ----

void project(const StepContext& ctx, const float* x, const WeightMatrix& w, float* y, const std::vector<float>* bias,
             bool accumulate) {
  MatmulOptions options = ctx.matmul;
  if (bias && !bias->empty()) {
    if (accumulate) {  // the bias belongs to this product, not to what y already holds
      Buffer product = ctx.take(ctx.tokens * w.rows());
      matmul(x, ctx.tokens, w, product.data(), options);
      add_bias(product.data(), ctx.tokens, w.rows(), bias->data());
      for (size_t i = 0; i < product.size(); ++i) y[i] += product[i];
      return;
    }
    matmul(x, ctx.tokens, w, y, options);
    add_bias(y, ctx.tokens, w.rows(), bias->data());
    return;
  }
  options.accumulate = accumulate;
  matmul(x, ctx.tokens, w, y, options);
}

void rms_norm_rows(const StepContext& ctx, const float* x, float* y, int64_t rows, int64_t dim,
                   const std::vector<float>& weight) {
  RmsNormParams params = ctx.norm;
  params.weight = weight.empty() ? nullptr : weight.data();
  if (!weight.empty() && static_cast<int64_t>(weight.size()) != dim) {
    throw FormatError(in_file(ctx.plan->source, "RMSNorm weight of " + std::to_string(weight.size()) +
                                                    " values for rows of " + std::to_string(dim)));
  }
  rms_norm(x, y, rows, dim, params);
}

void for_each_token(const StepContext& ctx, const std::function<void(int64_t)>& f) {
  constexpr int64_t kTokenGrain = 8;  // below this, waking the team costs more than the rows
  parallel_for(0, ctx.tokens, kTokenGrain, f);
}

// ---- Model ----

const char* compute_mode_name(ComputeMode mode) { return mode == ComputeMode::kBF16 ? "bf16" : "f32"; }

void check_token_ids(std::span<const int64_t> tokens, int64_t vocab_size) {
  for (size_t i = 0; i < tokens.size(); ++i) {
    if (tokens[i] < 0 || tokens[i] >= vocab_size) {
      throw FormatError("token id " + std::to_string(tokens[i]) + " at position " + std::to_string(i) +
                        " is outside the vocabulary [0, " + std::to_string(vocab_size) + ")");
    }
  }
}

void ForwardState::reset() {
  position_ = 0;
  next_layer_ = 0;
  step_v_first_.clear();
  step_k_first_.clear();
  for (LayerState& l : layers_) {
    l.keys.clear();
    l.values.clear();
    std::fill(l.wkv.begin(), l.wkv.end(), 0.0f);
  }
}

Model::Model(const Checkpoint& checkpoint) : impl_(load_model(checkpoint, plan_model(checkpoint))) {}
Model::Model(const Checkpoint& checkpoint, const ModelConfig& config)
    : impl_(load_model(checkpoint, plan_model(checkpoint, config))) {}
Model::~Model() = default;
Model::Model(Model&&) noexcept = default;
Model& Model::operator=(Model&&) noexcept = default;

const std::string& Model::architecture() const { return impl_->plan.architecture; }
int64_t Model::vocab_size() const { return impl_->plan.vocab_size; }
int64_t Model::hidden_size() const { return impl_->plan.hidden_size; }
int Model::num_layers() const { return impl_->plan.num_layers(); }
const ModelPlan& Model::plan() const { return impl_->plan; }
uint64_t Model::mapped_weight_bytes() const { return impl_->mapped_bytes; }
uint64_t Model::owned_weight_bytes() const { return impl_->owned_bytes; }

ForwardState Model::new_state() const {
  ForwardState state;
  state.layers_.resize(impl_->plan.layers.size());
  for (size_t i = 0; i < impl_->plan.layers.size(); ++i) {
    const LayerPlan& lp = impl_->plan.layers[i];
    if (lp.mixer != MixerKind::kAttention) {
      state.layers_[i].wkv.assign(static_cast<size_t>(lp.rwkv.heads * lp.rwkv.head_dim * lp.rwkv.head_dim), 0.0f);
    }
  }
  return state;
}

ForwardResult Model::forward(std::span<const int64_t> tokens, ForwardState& state, const ForwardOptions& options) const {
  const Impl& m = *impl_;
  const ModelPlan& plan = m.plan;
  if (state.num_layers() != plan.num_layers()) {
    throw UsageError("forward: the state has " + std::to_string(state.num_layers()) + " layers, the model " +
                     std::to_string(plan.num_layers()) + " (use Model::new_state())");
  }
  if (state.next_layer_ != 0) {
    throw UsageError("forward: the state is in the middle of a layer-by-layer step (layer " +
                     std::to_string(state.next_layer_) + " is due; finish it with forward_layer)");
  }
  check_token_ids(tokens, plan.vocab_size);
  const int64_t T = static_cast<int64_t>(tokens.size()), D = plan.hidden_size, L = plan.num_layers();

  ForwardResult result;
  result.tokens = T;
  result.vocab_size = plan.vocab_size;
  if (T == 0) return result;

  ScratchPool scratch;
  StepContext ctx = step_context(plan, options, scratch, T, state.position());

  // Embedding, times the scale the model holds in its own dtype.
  std::vector<float> h(static_cast<size_t>(T * D));
  const float embed_scale = in_model_dtype(plan.embed_scale, options.compute);
  for_each_token(ctx, [&](int64_t t) {
    float* row = h.data() + t * D;
    m.embedding->decode_f32(tokens[static_cast<size_t>(t)], tokens[static_cast<size_t>(t)] + 1, 0, D, row, D);
    if (embed_scale != 1.0f) {
      for (int64_t i = 0; i < D; ++i) row[i] = row[i] * embed_scale;
    }
  });
  if (options.collect_hidden) result.hidden.push_back(h);

  std::vector<float> per_layer_inputs;
  if (plan.has_ple()) {
    per_layer_inputs.resize(static_cast<size_t>(T * L * plan.ple_dim));
    gemma_per_layer_inputs(m, ctx, tokens, h.data(), per_layer_inputs.data());
    if (options.collect_ple_inputs) result.ple_inputs = per_layer_inputs;
  }

  const std::vector<int64_t> positions = positions_of(ctx);
  RopeTables rope_tables(positions);

  for (int layer = 0; layer < L; ++layer) {
    run_layer(m, layer, ctx, layer_rope(m, layer, rope_tables), state.layers_, per_layer_inputs.data(), h.data(),
              nullptr);
    if (options.collect_hidden && layer + 1 < L) result.hidden.push_back(h);
  }
  if (options.collect_hidden) result.final_norm_input = h;

  rms_norm_rows(ctx, h.data(), h.data(), T, D, m.final_norm);
  if (options.collect_hidden) result.hidden.push_back(h);

  result.logits.resize(static_cast<size_t>(T * plan.vocab_size));
  project(ctx, h.data(), m.head_matrix(), result.logits.data());
  if (plan.final_logit_softcap > 0) softcap(result.logits, static_cast<float>(plan.final_logit_softcap));
  state.position_ += T;
  return result;
}

std::vector<float> Model::forward_layer(int layer, const LayerInput& input, ForwardState& state,
                                        const ForwardOptions& options, LayerTrace* trace) const {
  const Impl& m = *impl_;
  const ModelPlan& plan = m.plan;
  const int64_t D = plan.hidden_size, L = plan.num_layers();
  if (state.num_layers() != L) {
    throw UsageError("forward_layer: the state has " + std::to_string(state.num_layers()) + " layers, the model " +
                     std::to_string(L) + " (use Model::new_state())");
  }
  if (layer != state.next_layer_) {
    throw UsageError("forward_layer: layer " + std::to_string(layer) + " called; layer " +
                     std::to_string(state.next_layer_) + " is due (the layers of a step run in order)");
  }
  if (input.hidden.empty() || input.hidden.size() % static_cast<size_t>(D) != 0) {
    throw UsageError("forward_layer: the input holds " + std::to_string(input.hidden.size()) +
                     " values, not a positive multiple of the hidden size " + std::to_string(D));
  }
  const int64_t T = static_cast<int64_t>(input.hidden.size()) / D;
  if (plan.has_ple() && input.per_layer_inputs.size() != static_cast<size_t>(T * L * plan.ple_dim)) {
    throw UsageError("forward_layer: the model has per-layer embeddings; expected " +
                     std::to_string(T * L * plan.ple_dim) + " per-layer input values, got " +
                     std::to_string(input.per_layer_inputs.size()));
  }

  ScratchPool scratch;
  StepContext ctx = step_context(plan, options, scratch, T, state.position());
  const std::vector<int64_t> positions = positions_of(ctx);
  RopeTables rope_tables(positions);
  ctx.v_first = std::move(state.step_v_first_);
  ctx.k_first = std::move(state.step_k_first_);
  std::vector<float> h(input.hidden.begin(), input.hidden.end());
  run_layer(m, layer, ctx, layer_rope(m, layer, rope_tables), state.layers_, input.per_layer_inputs.data(), h.data(),
            trace);
  state.step_v_first_ = std::move(ctx.v_first);
  state.step_k_first_ = std::move(ctx.k_first);
  if (++state.next_layer_ == L) {  // the step is complete: the same state forward() would leave
    state.next_layer_ = 0;
    state.position_ += T;
    state.step_v_first_.clear();
    state.step_k_first_.clear();
  }
  return h;
}

}  // namespace hx
