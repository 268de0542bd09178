// CudaModel: the planned tensors uploaded to the GPU, and the forward loop (embedding, PLE, layers, final norm,
// head, softcap) around the blocks of cuda_blocks.cc — verify/model.cc's loop on device buffers.
//
// Loading: every matrix comes from make_weight() (dense floats and the registered quantized encodings alike). A
// quantized matrix stays packed on the GPU (cuda_quantized.cc; quantized.cu dequantizes it where it is used); a
// matrix whose rows are stored as BF16 or F32 is copied as is; any other encoding (F16, F8, gemlite int4) is decoded
// on the host once and uploaded as bf16 when every value is exactly a bf16, else as f32 — so the GPU computes with
// the very values the CPU decodes. Small vectors are uploaded as f32.
#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <set>
#include <string>
#include <utility>

#include "formats/errors.h"
#include "formats/float_convert.h"
#include "formats/parallel.h"
#include "verify/cuda/cuda_internal.h"
#include "verify/cuda/cuda_kernels.h"
#include "verify/kernels.h"
#include "verify/layer_loading.h"
#include "verify/model_weights.h"

namespace hx {

using cuda::check;
using cuda::DeviceBuffer;
using cuda::DeviceLayerState;
using cuda::DeviceMatrix;
using cuda::DeviceVector;

struct CudaState::Impl {
  std::vector<DeviceLayerState> layers;
  int64_t position = 0;
};

// Per RoPE plan, cos/sin rows for positions [0, positions) on the GPU, computed on the host by the CPU's rope_table
// (each row depends on its position alone, so rows computed at different times equal one table's).
class RopeCache {
 public:
  struct Entry {
    RopePlan plan;
    int64_t head_dim = 0, positions = 0;
    cuda::DeviceBuffer cos, sin;
  };
  // The entry of `plan`, holding at least positions [0, end); grows (doubling) on the call's stream.
  const Entry& rows_up_to(const cuda::CallContext& ctx, const RopePlan& plan, const std::vector<float>& inv_freq,
                          int64_t end) {
    Entry* entry = nullptr;
    for (Entry& e : entries_) {
      if (e.plan == plan) entry = &e;
    }
    if (!entry) {
      entries_.push_back({plan, static_cast<int64_t>(2 * inv_freq.size()), 0, {}, {}});
      entry = &entries_.back();
    }
    if (entry->positions >= end) return *entry;
    const int64_t have = entry->positions, want = std::max(end, 2 * have), d = entry->head_dim;
    std::vector<int64_t> positions(static_cast<size_t>(want - have));
    for (size_t i = 0; i < positions.size(); ++i) positions[i] = have + static_cast<int64_t>(i);
    const RopeTable host = rope_table(inv_freq, positions, DType::kF32);
    const auto grow = [&](cuda::DeviceBuffer& rows, const std::vector<float>& new_rows) {
      cuda::DeviceBuffer bigger(static_cast<size_t>(want * d) * sizeof(float));
      if (have > 0) {
        check(cudaMemcpyAsync(bigger.get(), rows.get(), static_cast<size_t>(have * d) * sizeof(float),
                              cudaMemcpyDeviceToDevice, ctx.stream),
              "growing the RoPE table");
      }
      check(cudaMemcpyAsync(bigger.f32() + have * d, new_rows.data(), new_rows.size() * sizeof(float),
                            cudaMemcpyHostToDevice, ctx.stream),
            "uploading the RoPE table");  // pageable: staged before the call returns
      check(cudaStreamSynchronize(ctx.stream), "growing the RoPE table");  // the old rows may go now
      rows = std::move(bigger);
    };
    grow(entry->cos, host.cos);
    grow(entry->sin, host.sin);
    entry->positions = want;
    return *entry;
  }

 private:
  std::deque<Entry> entries_;  // a deque: entries stay where they are as others are added
};

struct CudaModel::Impl {
  ModelPlan plan;
  std::string device_name;
  cudaStream_t stream = nullptr;
  cublasHandle_t blas = nullptr;
  cuda::Matrix embedding, head, ple_table, ple_model_projection;
  DeviceVector final_norm, ple_projection_norm;
  std::vector<cuda::LayerWeights> layers;
  cuda::WeightStore store;
  mutable cuda::LayerStreamer streamer;  // forward() is const; one call at a time per model
  mutable RopeCache rope_cache;

  const DeviceMatrix& head_matrix() const { return head ? *head : *embedding; }
  ~Impl() {
    layers.clear();
    if (blas) cublasDestroy(blas);
    if (stream) cudaStreamDestroy(stream);
  }
};

namespace {

void require_device() {
  std::string why;
  if (!cuda_device_available(&why)) throw UnsupportedError("--device cuda: " + why);
}

class Uploader {
 public:
  Uploader(const Checkpoint& checkpoint, CudaModel::Impl& model) : checkpoint_(checkpoint), model_(model) {}

  cuda::Matrix matrix(const TensorRef& ref, WeightLayout layout = WeightLayout::kOutIn) {
    if (!ref.used()) return nullptr;
    const std::unique_ptr<WeightMatrix> w = make_weight(checkpoint_, ref.name, layout, ref.shape);
    auto m = std::make_unique<DeviceMatrix>();
    m->rows = w->rows();
    m->cols = w->cols();
    const std::string what = ref.name + " (" + w->describe() + ")";
    if (cuda::upload_quantized(checkpoint_, ref.name, *m, model_.store)) return m;  // stays packed
    int64_t stride = 0;
    for (DType format : {DType::kBF16, DType::kF32}) {
      if (const std::byte* rows = w->stored_rows(format, 0, 0, &stride)) {
        const size_t row_bytes = static_cast<size_t>(m->cols * dtype_element_size(format));
        m->bf16 = format == DType::kBF16;
        m->data = model_.store.put_rows(rows, row_bytes, static_cast<size_t>(stride), static_cast<size_t>(m->rows),
                                        what);
        return m;
      }
    }
    upload_decoded(*w, *m, what);
    return m;
  }

  DeviceVector vector(const TensorRef& ref) {
    if (!ref.used()) return {};
    return upload_vector(load_vector_f32(checkpoint_, ref.name, ref.shape), ref.name);
  }
  float scalar(const TensorRef& ref) { return load_vector_f32(checkpoint_, ref.name, ref.shape).at(0); }

  DeviceVector upload_vector(const std::vector<float>& host, const std::string& name) {
    DeviceVector v;
    v.size = static_cast<int64_t>(host.size());
    v.data = model_.store.put(host.data(), host.size() * sizeof(float), name);
    return v;
  }

 private:
  // Decodes every row to f32 (tiles of kWeightTileRows, in parallel), then uploads bf16 if that is exact.
  void upload_decoded(const WeightMatrix& w, DeviceMatrix& m, const std::string& what) {
    const int64_t rows = w.rows(), cols = w.cols(), tile = WeightMatrix::kWeightTileRows;
    std::vector<float> values(static_cast<size_t>(rows * cols));
    parallel_for(0, (rows + tile - 1) / tile, 1, [&](int64_t i) {
      const int64_t begin = i * tile, end = std::min(rows, begin + tile);
      w.decode_f32(begin, end, 0, cols, values.data() + begin * cols, cols);
    });
    bool exact_in_bf16 = true;
    for (float v : values) {
      if (bf16_to_f32(f32_to_bf16(v)) != v && !std::isnan(v)) {
        exact_in_bf16 = false;
        break;
      }
    }
    m.bf16 = exact_in_bf16;
    if (exact_in_bf16) {
      std::vector<uint16_t> bits(values.size());
      for (size_t i = 0; i < values.size(); ++i) bits[i] = f32_to_bf16(values[i]);
      m.data = model_.store.put(bits.data(), bits.size() * sizeof(uint16_t), what);
    } else {
      m.data = model_.store.put(values.data(), values.size() * sizeof(float), what);
    }
  }

  const Checkpoint& checkpoint_;
  CudaModel::Impl& model_;
};

// Bytes of GPU memory the weights may take: the caller's budget, else HXFORGE_CUDA_WEIGHT_BUDGET_MIB, else the free
// memory less a reserve for what a forward call allocates (activations, KV caches, logits, cuBLAS workspace).
uint64_t weight_budget(const CudaLoadOptions& options) {
  if (options.weight_budget_bytes > 0) return options.weight_budget_bytes;
  if (const char* env = std::getenv("HXFORGE_CUDA_WEIGHT_BUDGET_MIB"); env && *env) {
    uint64_t mib = 0;
    bool valid = true;
    for (const char* c = env; *c; ++c) {  // digits only: strtoull would take "-1" as 2^64 - 1
      valid = valid && *c >= '0' && *c <= '9' && mib <= (UINT64_MAX >> 20) / 10;
      if (valid) mib = mib * 10 + static_cast<uint64_t>(*c - '0');
    }
    if (!valid || mib == 0 || mib > (UINT64_MAX >> 20)) {
      throw UsageError(std::string("HXFORGE_CUDA_WEIGHT_BUDGET_MIB must be a positive whole number of MiB, got '") +
                       env + "'");
    }
    return mib << 20;
  }
  size_t free_bytes = 0, total_bytes = 0;
  check(cudaMemGetInfo(&free_bytes, &total_bytes), "reading the GPU's free memory");
  constexpr uint64_t kMinReserve = uint64_t{4} << 30;  // a 2048-token prefill of a 21B model needs about 3 GiB
  const uint64_t reserve = std::max<uint64_t>(kMinReserve, total_bytes / 8);
  return free_bytes > reserve ? free_bytes - reserve : 0;
}

uint64_t stored_bytes(const Checkpoint& checkpoint) {
  uint64_t total = 0;
  for (const NamedTensor& t : checkpoint.tensors) total += t.view.nbytes();
  return total;
}

// How many leading layers stay resident (the rest are streamed): all of them when they surely fit; else the most
// for which tables + those layers + the two slots (the largest streamed layer of each parity) fit the budget, from
// each layer's GPU size measured by a dry run of its load (no copies). At least 0: when even streaming every layer
// exceeds the budget, the load goes on with every layer streamed, and an allocation that fails names itself.
int resident_layer_count(const Checkpoint& checkpoint, const ModelPlan& p, Uploader& up, cuda::WeightStore& store,
                         uint64_t budget) {
  const int L = p.num_layers();
  const uint64_t tables = store.bytes_on_gpu;
  // No stored weight grows more than 8× on the GPU (a 4-bit code decoded to f32), so below that nothing streams.
  constexpr uint64_t kMaxGrowth = 8;
  if (tables <= budget && stored_bytes(checkpoint) <= (budget - tables) / kMaxGrowth) return L;
  std::vector<uint64_t> sizes(static_cast<size_t>(L));
  for (int i = 0; i < L; ++i) {
    cuda::LayerWeights scratch;
    store.begin_layer(cuda::WeightStore::Staging::kMeasure);
    load_layer_weights(up, p.layers[static_cast<size_t>(i)], scratch);
    sizes[static_cast<size_t>(i)] = store.end_layer().bytes;
  }
  for (int resident = L; resident > 0; --resident) {
    uint64_t total = tables, slot[2] = {0, 0};
    for (int i = 0; i < resident; ++i) total += sizes[static_cast<size_t>(i)];
    for (int i = resident; i < L; ++i) {
      uint64_t& s = slot[(i - resident) % 2];
      s = std::max<uint64_t>(s, sizes[static_cast<size_t>(i)]);
    }
    if (total + slot[0] + slot[1] <= budget) return resident;
  }
  return 0;
}

std::unique_ptr<CudaModel::Impl> load_model(const Checkpoint& checkpoint, ModelPlan plan,
                                            const CudaLoadOptions& options) {
  require_device();
  auto model = std::make_unique<CudaModel::Impl>();
  model->plan = std::move(plan);
  cudaDeviceProp properties{};
  check(cudaGetDeviceProperties(&properties, 0), "reading the GPU's properties");
  model->device_name = properties.name;
  check(cudaStreamCreateWithFlags(&model->stream, cudaStreamNonBlocking), "creating a CUDA stream");
  cuda::check_blas(cublasCreate(&model->blas), "cublasCreate");
  cuda::check_blas(cublasSetStream(model->blas, model->stream), "cublasSetStream");
  // Keep freed scratch in the pool between calls instead of returning it to the driver.
  cudaMemPool_t pool = nullptr;
  check(cudaDeviceGetDefaultMemPool(&pool, 0), "getting the GPU memory pool");
  uint64_t keep = UINT64_MAX;
  check(cudaMemPoolSetAttribute(pool, cudaMemPoolAttrReleaseThreshold, &keep), "configuring the GPU memory pool");

  const ModelPlan& p = model->plan;
  const uint64_t budget = weight_budget(options);  // before the first upload: the free memory includes the tables
  Uploader up(checkpoint, *model);
  model->embedding = up.matrix(p.embedding);
  if (p.head.name != p.embedding.name) model->head = up.matrix(p.head);
  model->final_norm = up.vector(p.final_norm);
  model->ple_table = up.matrix(p.ple_table);
  model->ple_model_projection = up.matrix(p.ple_model_projection);
  model->ple_projection_norm = up.vector(p.ple_projection_norm);

  const int L = p.num_layers();
  const int resident = resident_layer_count(checkpoint, p, up, model->store, budget);
  model->layers.resize(p.layers.size());
  for (int i = 0; i < L; ++i) {
    cuda::LayerWeights& w = model->layers[static_cast<size_t>(i)];
    if (i < resident) {
      load_layer_weights(up, p.layers[static_cast<size_t>(i)], w);
      continue;
    }
    model->store.begin_layer(cuda::WeightStore::Staging::kImage);
    load_layer_weights(up, p.layers[static_cast<size_t>(i)], w);
    model->streamer.keep_streamed(i, model->store.end_layer(), w);
  }
  model->streamer.allocate_slots();
  return model;
}

// The MLP: down(act(gate(x)) ⊙ up(x)).
void mlp_block(const LayerPlan& lp, const cuda::LayerWeights& w, const cuda::CallContext& ctx,
               const cuda::ProductInput& x, float* out) {
  const int64_t n = ctx.tokens * lp.intermediate_size;
  DeviceBuffer gate = ctx.take(n), up = ctx.take(n);
  project(ctx, x, *w.mlp_gate, gate.f32());
  project(ctx, x, *w.mlp_up, up.f32());
  cuda::ProductInput activated;
  if (ctx.bf16) {  // the down projection reads bf16 only: the GLU writes it (half the bytes, no conversion pass)
    cuda::glu_to_bf16(ctx.plan->gelu_tanh, gate.f32(), up.f32(), activated.own_bf16(n, ctx.stream), n, ctx.stream);
  } else {
    cuda::glu(ctx.plan->gelu_tanh, gate.f32(), up.f32(), gate.f32(), n, ctx.stream);
    activated.f32 = gate.f32();
  }
  project(ctx, activated, *w.mlp_down, out);
}

// One decoder layer on the residual stream h [T, D] (verify/model.cc run_layer).
void run_layer(const CudaModel::Impl& model, int layer, cuda::CallContext& ctx, const cuda::DeviceRope* rope,
               std::vector<DeviceLayerState>& states, const float* per_layer_inputs, float* h) {
  const LayerPlan& lp = model.plan.layers[static_cast<size_t>(layer)];
  const cuda::LayerWeights& w = model.layers[static_cast<size_t>(layer)];
  const int64_t T = ctx.tokens, D = model.plan.hidden_size;
  DeviceBuffer x = ctx.take(T * D), mix = ctx.take(T * D);

  const cuda::ProductInput normed = rms_norm_for_products(ctx, h, x.f32(), T, D, w.input_norm);
  DeviceLayerState& own = states[static_cast<size_t>(layer)];
  switch (lp.mixer) {
    case MixerKind::kAttention: {
      const int source = lp.attention.kv_source;
      const DeviceLayerState& cache = source >= 0 ? states.at(static_cast<size_t>(source)) : own;
      attention_mixer(lp.attention, w.attention, ctx, normed, rope, own, cache, mix.f32(), false);
      break;
    }
    case MixerKind::kRwkv:
      rwkv_mixer(lp.rwkv, w.rwkv, ctx, normed, rope, own, mix.f32());
      break;
    case MixerKind::kRwkvTica:  // mix = RWKV7(h) + TICA(h)
      rwkv_mixer(lp.rwkv, w.rwkv, ctx, normed, rope, own, mix.f32());
      attention_mixer(lp.attention, w.attention, ctx, normed, nullptr, own, own, mix.f32(), true);
      break;
  }
  if (!w.attention_out_norm.empty()) rms_norm_rows(ctx, mix.f32(), mix.f32(), T, D, w.attention_out_norm);
  cuda::add(h, mix.f32(), T * D, ctx.stream);

  mlp_block(lp, w, ctx, rms_norm_for_products(ctx, h, x.f32(), T, D, w.ffn_in_norm), mix.f32());
  if (!w.ffn_out_norm.empty()) rms_norm_rows(ctx, mix.f32(), mix.f32(), T, D, w.ffn_out_norm);
  cuda::add(h, mix.f32(), T * D, ctx.stream);

  if (w.ple_gate) gemma_per_layer_block(w, ctx, layer, per_layer_inputs, h);
  if (w.has_layer_scalar) cuda::scale(h, T * D, w.layer_scalar, ctx.stream);
}

// The RoPE tables of this call, one per distinct RopePlan: rows of the model's cache (RopeCache), which holds
// positions [0, n) of each plan on the GPU and grows when a call reaches past n. The rows are the CPU's rope_table
// values (computed on the host once per position: for a 2048-token Gemma-4 prefill that is 1.6 M double-precision
// sin/cos, tens of milliseconds the GPU used to wait for on every call).
class RopeTables {
 public:
  RopeTables(const cuda::CallContext& ctx, RopeCache& cache) : ctx_(ctx), cache_(cache) {}
  const cuda::DeviceRope* get(const RopePlan& plan, const std::vector<float>& inv_freq) {
    if (!plan.enabled) return nullptr;
    for (auto& [key, table] : tables_) {
      if (key == plan) return &table;
    }
    const RopeCache::Entry& entry = cache_.rows_up_to(ctx_, plan, inv_freq, ctx_.position + ctx_.tokens);
    cuda::DeviceRope rope;
    rope.head_dim = entry.head_dim;
    rope.cos = entry.cos.f32() + ctx_.position * entry.head_dim;
    rope.sin = entry.sin.f32() + ctx_.position * entry.head_dim;
    tables_.emplace_back(plan, rope);
    return &tables_.back().second;
  }

 private:
  const cuda::CallContext& ctx_;
  RopeCache& cache_;
  std::deque<std::pair<RopePlan, cuda::DeviceRope>> tables_;  // a deque: the pointers handed out stay valid
};

DeviceBuffer upload_ids(const cuda::CallContext& ctx, const std::vector<int64_t>& ids) {
  DeviceBuffer d(ids.size() * sizeof(int64_t), ctx.stream);
  check(cudaMemcpyAsync(d.get(), ids.data(), ids.size() * sizeof(int64_t), cudaMemcpyHostToDevice, ctx.stream),
        "uploading token ids");  // from pageable memory: staged before the call returns, so `ids` may go
  return d;
}

}  // namespace

// ---- CudaState ----

CudaState::CudaState() : impl_(std::make_unique<Impl>()) {}
CudaState::~CudaState() = default;
CudaState::CudaState(CudaState&&) noexcept = default;
CudaState& CudaState::operator=(CudaState&&) noexcept = default;
int64_t CudaState::position() const { return impl_->position; }

std::vector<float> CudaState::wkv(int layer) const {
  const DeviceLayerState& l = impl_->layers.at(static_cast<size_t>(layer));
  std::vector<float> host(static_cast<size_t>(l.wkv_floats));
  if (!host.empty()) {
    check(cudaMemcpy(host.data(), l.wkv.get(), host.size() * sizeof(float), cudaMemcpyDeviceToHost),
          "copying a WKV state from the GPU");
  }
  return host;
}

void CudaState::reset() {
  impl_->position = 0;
  for (DeviceLayerState& l : impl_->layers) {
    l.positions = 0;
    if (l.wkv_floats) check(cudaMemset(l.wkv.get(), 0, l.wkv.bytes()), "zeroing a WKV state");
  }
}

// ---- CudaModel ----

CudaModel::CudaModel(const Checkpoint& checkpoint, const CudaLoadOptions& options)
    : impl_(load_model(checkpoint, plan_model(checkpoint), options)) {}
CudaModel::CudaModel(const Checkpoint& checkpoint, const ModelConfig& config, const CudaLoadOptions& options)
    : impl_(load_model(checkpoint, plan_model(checkpoint, config), options)) {}
CudaModel::~CudaModel() = default;
CudaModel::CudaModel(CudaModel&&) noexcept = default;
CudaModel& CudaModel::operator=(CudaModel&&) noexcept = default;

const std::string& CudaModel::architecture() const { return impl_->plan.architecture; }
int64_t CudaModel::vocab_size() const { return impl_->plan.vocab_size; }
int64_t CudaModel::hidden_size() const { return impl_->plan.hidden_size; }
int CudaModel::num_layers() const { return impl_->plan.num_layers(); }
const ModelPlan& CudaModel::plan() const { return impl_->plan; }
std::string CudaModel::device_name() const { return impl_->device_name; }
uint64_t CudaModel::device_weight_bytes() const {
  return impl_->store.bytes_on_gpu + impl_->streamer.slot_bytes();
}
int CudaModel::streamed_layers() const { return impl_->streamer.streamed_count(); }
uint64_t CudaModel::streamed_bytes() const { return impl_->streamer.streamed_bytes(); }

CudaState CudaModel::new_state() const {
  CudaState state;
  state.impl_->layers.resize(impl_->plan.layers.size());
  for (size_t i = 0; i < impl_->plan.layers.size(); ++i) {
    const LayerPlan& lp = impl_->plan.layers[i];
    if (lp.mixer == MixerKind::kAttention) continue;
    DeviceLayerState& l = state.impl_->layers[i];
    l.wkv_floats = lp.rwkv.heads * lp.rwkv.head_dim * lp.rwkv.head_dim;
    l.wkv = DeviceBuffer(static_cast<size_t>(l.wkv_floats) * sizeof(float));
    check(cudaMemset(l.wkv.get(), 0, l.wkv.bytes()), "zeroing a WKV state");
  }
  return state;
}

ForwardResult CudaModel::forward(std::span<const int64_t> tokens, CudaState& state, const ForwardOptions& options,
                                 LogitRows rows) const {
  const Impl& m = *impl_;
  const ModelPlan& plan = m.plan;
  std::vector<DeviceLayerState>& layers = state.impl_->layers;
  if (static_cast<int>(layers.size()) != plan.num_layers()) {
    throw UsageError("forward: the state has " + std::to_string(layers.size()) + " layers, the model " +
                     std::to_string(plan.num_layers()) + " (use CudaModel::new_state())");
  }
  check_token_ids(tokens, plan.vocab_size);
  const int64_t T = static_cast<int64_t>(tokens.size()), D = plan.hidden_size, L = plan.num_layers();
  ForwardResult result;
  result.tokens = T;
  result.vocab_size = plan.vocab_size;
  if (T == 0) return result;

  cuda::CallContext ctx;
  ctx.plan = &plan;
  ctx.tokens = T;
  ctx.position = state.impl_->position;
  ctx.bf16 = options.compute == ComputeMode::kBF16;
  ctx.eps = static_cast<float>(plan.rms_norm_eps);
  ctx.stream = m.stream;
  ctx.blas = m.blas;

  // Embedding, times the scale the model holds in its own dtype (model.cc in_model_dtype).
  const std::vector<int64_t> ids(tokens.begin(), tokens.end());
  const DeviceBuffer device_ids = upload_ids(ctx, ids);
  const float embed_scale =
      ctx.bf16 ? bf16_to_f32(f32_to_bf16(static_cast<float>(plan.embed_scale))) : static_cast<float>(plan.embed_scale);
  DeviceBuffer h = ctx.take(T * D);
  cuda::gather_rows(m.embedding->data.get(), m.embedding->bf16, D, static_cast<const int64_t*>(device_ids.get()), T,
                    embed_scale, h.f32(), ctx.stream);
  if (options.collect_hidden) result.hidden.push_back(cuda::download(ctx, h.f32(), T * D));

  DeviceBuffer per_layer_inputs;
  if (plan.has_ple()) {
    std::vector<int64_t> ple_ids(ids);
    for (int64_t& id : ple_ids) id = id < plan.ple_vocab ? id : 0;  // as HF: ids past the PLE vocabulary read row 0
    const DeviceBuffer device_ple_ids = upload_ids(ctx, ple_ids);
    per_layer_inputs = ctx.take(T * L * plan.ple_dim);
    gemma_per_layer_inputs(ctx, *m.ple_table, *m.ple_model_projection, m.ple_projection_norm,
                           static_cast<const int64_t*>(device_ple_ids.get()), h.f32(), per_layer_inputs.f32());
    if (options.collect_ple_inputs)
      result.ple_inputs = cuda::download(ctx, per_layer_inputs.f32(), T * L * plan.ple_dim);
  }

  m.streamer.begin_call();
  RopeTables rope_tables(ctx, m.rope_cache);
  for (int layer = 0; layer < L; ++layer) {
    const LayerPlan& lp = plan.layers[static_cast<size_t>(layer)];
    const cuda::LayerWeights& w = m.layers[static_cast<size_t>(layer)];
    const cuda::DeviceRope* rope = lp.mixer == MixerKind::kAttention
                                       ? rope_tables.get(lp.attention.rope, w.attention.rope_inv_freq)
                                       : rope_tables.get(lp.rwkv.rope, w.rwkv.rope_inv_freq);
    m.streamer.before_layer(layer, ctx.stream);
    run_layer(m, layer, ctx, rope, layers, per_layer_inputs.f32(), h.f32());
    m.streamer.after_layer(layer, ctx.stream);
    if (options.collect_hidden && layer + 1 < L) result.hidden.push_back(cuda::download(ctx, h.f32(), T * D));
  }
  if (options.collect_hidden) result.final_norm_input = cuda::download(ctx, h.f32(), T * D);
  rms_norm_rows(ctx, h.f32(), h.f32(), T, D, m.final_norm);
  if (options.collect_hidden) result.hidden.push_back(cuda::download(ctx, h.f32(), T * D));

  cuda::CallContext head_ctx;  // the head's rows: every position, or the last one
  head_ctx.plan = &plan;
  head_ctx.tokens = rows == LogitRows::kLast ? 1 : T;
  head_ctx.bf16 = ctx.bf16;
  head_ctx.stream = ctx.stream;
  head_ctx.blas = ctx.blas;
  const int64_t logit_count = head_ctx.tokens * plan.vocab_size;
  DeviceBuffer logits = ctx.take(logit_count);
  project(head_ctx, h.f32() + (T - head_ctx.tokens) * D, m.head_matrix(), logits.f32());
  if (plan.final_logit_softcap > 0) {
    cuda::softcap(logits.f32(), logit_count, static_cast<float>(plan.final_logit_softcap), ctx.stream);
  }
  result.tokens = head_ctx.tokens;
  result.logits = cuda::download(ctx, logits.f32(), logit_count);
  check(cudaGetLastError(), "running the forward pass on the GPU");
  state.impl_->position += T;
  return result;
}

bool cuda_device_available(std::string* why) {
  int count = 0;
  const cudaError_t error = cudaGetDeviceCount(&count);
  if (error != cudaSuccess) {
    if (why) {
      *why = std::string("no usable GPU: cudaGetDeviceCount failed with ") + cudaGetErrorName(error) + " (" +
             cudaGetErrorString(error) + ")";
    }
    return false;
  }
  if (count == 0) {
    if (why) *why = "no CUDA device is present";
    return false;
  }
  return true;
}

}  // namespace hx
