// Internal interface of the CUDA forward pass (cuda_model.cc, cuda_blocks.cc, cuda_gemm.cc); not part of the API.
//
// The loaded model is the CPU's plan (forward_plan.h) plus, per tensor it names, a DeviceMatrix (bf16 when every
// value is exactly a bf16, else f32) or a DeviceVector (f32). A forward call builds a CallContext (token count,
// position, compute mode, stream, cuBLAS handle, hxa079's v_first/k_first) and runs each layer's blocks on
// row-major f32 device activations [T, …], with the CPU's block contract (verify/forward_internal.h): a mixer reads
// the normed input x [T, D] and writes (or adds) its output to `out` [T, D].
#pragma once

#include <cublas_v2.h>
#include <cuda_runtime_api.h>

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "verify/cuda/cuda_kernels.h"
#include "verify/cuda/cuda_model.h"
#include "verify/forward_plan.h"

namespace hx::cuda {

// fail() (cuda_kernels.h) unless `error` is cudaSuccess.
inline void check(cudaError_t error, const char* what) {
  if (error != cudaSuccess) fail(what, error);
}
void check_blas(cublasStatus_t status, const char* what);

// Device memory. With a stream it is stream-ordered scratch (cudaMallocAsync / cudaFreeAsync from the device's
// memory pool, so per-call buffers cost no cudaMalloc); without one, a long-lived allocation (weights, caches).
// view() is a non-owning part of another allocation (a streamed layer's weights inside its slot).
class DeviceBuffer {
 public:
  DeviceBuffer() = default;
  DeviceBuffer(size_t bytes, cudaStream_t stream);
  explicit DeviceBuffer(size_t bytes) : DeviceBuffer(bytes, nullptr) {}
  static DeviceBuffer view(void* ptr, size_t bytes) {
    DeviceBuffer b;
    b.ptr_ = ptr;
    b.bytes_ = bytes;
    b.owned_ = false;
    return b;
  }
  ~DeviceBuffer() { release(); }
  DeviceBuffer(DeviceBuffer&& other) noexcept { *this = std::move(other); }
  DeviceBuffer& operator=(DeviceBuffer&& other) noexcept {
    release();
    ptr_ = std::exchange(other.ptr_, nullptr);
    bytes_ = std::exchange(other.bytes_, 0);
    stream_ = std::exchange(other.stream_, nullptr);
    async_ = std::exchange(other.async_, false);
    owned_ = std::exchange(other.owned_, true);
    return *this;
  }
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;

  void* get() const { return ptr_; }
  float* f32() const { return static_cast<float*>(ptr_); }
  size_t bytes() const { return bytes_; }

 private:
  void release() noexcept;
  void* ptr_ = nullptr;
  size_t bytes_ = 0;
  cudaStream_t stream_ = nullptr;
  bool async_ = false;
  bool owned_ = true;
};

// A weight matrix W [rows = out, cols = in] resident on the GPU, row-major: dense bf16 or f32 values, or the packed
// codes of a quantized matrix (coding ≠ kDense; cuda_kernels.h QuantizedView says what each part holds).
struct DeviceMatrix {
  DeviceBuffer data;  // values, or codes
  bool bf16 = false;  // dense values are bf16 (else f32)
  int64_t rows = 0, cols = 0;
  WeightCoding coding = WeightCoding::kDense;
  DeviceBuffer scales, zeros, table;
  int64_t group = 0;

  bool quantized() const { return coding != WeightCoding::kDense; }
  QuantizedView quantized_view() const {
    return {coding, static_cast<const uint8_t*>(data.get()), scales.f32(), zeros.f32(), table.f32(), rows, cols,
            group};
  }
};
using Matrix = std::unique_ptr<DeviceMatrix>;  // null = absent

// Where the weights' bytes go at load. Outside a staged layer, put() makes a GPU allocation and copies the bytes
// there (resident weights). Between begin_layer() and end_layer(), put() lays the bytes out in the layer's host
// image instead (each part aligned as cudaMalloc's) and returns a view whose address is the part's offset in it,
// for LayerStreamer to place; kMeasure only adds up the image's size (a dry run: what would this layer take?).
struct LayerImage {
  std::vector<std::byte> image;  // empty when measured only
  size_t bytes = 0;
};
class WeightStore {
 public:
  enum class Staging : uint8_t { kNone, kImage, kMeasure };
  DeviceBuffer put(const void* host, size_t bytes, const std::string& what);
  // `count` rows of `row_bytes`, `stride` bytes apart in host memory, stored contiguously.
  DeviceBuffer put_rows(const void* host, size_t row_bytes, size_t stride, size_t count, const std::string& what);
  void begin_layer(Staging staging);
  LayerImage end_layer();
  uint64_t bytes_on_gpu = 0;  // the allocations put() made outside staged layers

 private:
  Staging staging_ = Staging::kNone;
  LayerImage layer_;
};

// A small f32 vector (norm weight, bias, w0, r_k, …); empty = absent.
struct DeviceVector {
  DeviceBuffer data;
  int64_t size = 0;
  const float* ptr() const { return size ? data.f32() : nullptr; }
  bool empty() const { return size == 0; }
};

struct AttentionWeights {
  Matrix q, k, v, o, gate_down, gate_up;
  DeviceVector q_norm, k_norm, q_bias, k_bias, v_bias, o_bias;
  std::vector<float> rope_inv_freq;  // host: the call's cos/sin tables are built from it
};

struct RwkvWeights {
  Matrix r, k, v, o, w1, w2, a1, a2, v1, v2, k1, k2, g1, g2;
  DeviceVector r_bias, k_bias, v_bias, r_norm, k_norm, w0, a0, v0, k0, r_k;
  std::vector<float> rope_inv_freq;
};

struct LayerWeights {
  AttentionWeights attention;
  RwkvWeights rwkv;
  DeviceVector input_norm, attention_out_norm, ffn_in_norm, ffn_out_norm, ple_norm;
  Matrix mlp_gate, mlp_up, mlp_down, ple_gate, ple_projection;
  float layer_scalar = 1.0f;
  bool has_layer_scalar = false;
};

// Every weight buffer of a layer: the matrices' parts and the vectors. Keep in step with the structs above
// (LayerStreamer::keep_streamed checks that the buffers it visits tile the layer's image).
void for_each_buffer(LayerWeights& w, const std::function<void(DeviceBuffer&)>& fn);

// Frees a host image: cudaFreeHost when pinned, else delete[].
struct HostImageFree {
  bool pinned = false;
  void operator()(std::byte* p) const;
};

// The layers streamed from host memory (weight_streaming.cc). The layers past the weight budget keep their image
// (WeightStore) in pinned host memory; a forward call copies each into one of two GPU slots on a copy stream
// before it runs, the next one while the current one computes (streamed layer j always uses slot j % 2, so its
// views point into that slot for good). Events order the two streams: a slot is refilled only after the compute
// stream is done with the layer in it, and a layer runs only after its copy has landed. With one or two streamed
// layers the slots keep them from call to call and nothing is copied after the first call.
class LayerStreamer {
 public:
  LayerStreamer() = default;
  ~LayerStreamer();
  LayerStreamer(const LayerStreamer&) = delete;
  LayerStreamer& operator=(const LayerStreamer&) = delete;

  // Keeps layer `layer`'s image (w's views are offsets in it) in pinned host memory (pageable when pinning fails).
  void keep_streamed(int layer, LayerImage image, LayerWeights& w);
  // After the last layer: allocates the two slots and points every streamed layer's views into its slot.
  void allocate_slots();

  int streamed_count() const { return static_cast<int>(streamed_.size()); }
  uint64_t slot_bytes() const { return slots_[0].bytes() + slots_[1].bytes(); }
  uint64_t streamed_bytes() const;  // host bytes of the streamed layers

  // At the start of a forward call on `compute`: starts copying the first streamed layer, so that its copy overlaps
  // the embedding and the resident layers.
  void begin_call();
  // Around each layer of a forward call: wait for its weights and prefetch the next streamed layer's; then mark
  // the layer's slot free for refilling.
  void before_layer(int layer, cudaStream_t compute);
  void after_layer(int layer, cudaStream_t compute);

 private:
  struct Streamed {
    int layer = 0;
    std::unique_ptr<std::byte[], HostImageFree> host;
    size_t bytes = 0;
    LayerWeights* weights = nullptr;
  };
  int index_of(int layer) const;
  void ensure_loaded(int index);

  std::vector<Streamed> streamed_;  // in layer order
  DeviceBuffer slots_[2];
  int slot_holds_[2] = {-1, -1};  // index in streamed_ of what each slot holds (or is being filled with)
  cudaStream_t copy_stream_ = nullptr;
  cudaEvent_t ready_[2] = {nullptr, nullptr}, free_[2] = {nullptr, nullptr};
};

// A layer's state on the GPU: KV cache rows [capacity, row_floats] of which `positions` are filled; WKV [H, N, N].
struct DeviceLayerState {
  DeviceBuffer keys, values;
  int64_t positions = 0, capacity = 0, row_floats = 0;
  DeviceBuffer wkv;
  int64_t wkv_floats = 0;
};

// cos/sin [T, head_dim] of one RoPE plan for this call's positions: rows of the model's cached tables.
struct DeviceRope {
  int64_t head_dim = 0;
  const float* cos = nullptr;
  const float* sin = nullptr;
};

// What every block of one forward call shares.
struct CallContext {
  const ModelPlan* plan = nullptr;
  int64_t tokens = 0;
  int64_t position = 0;
  bool bf16 = false;  // ComputeMode::kBF16 products
  float eps = 1e-6f;
  cudaStream_t stream = nullptr;
  cublasHandle_t blas = nullptr;
  DeviceBuffer v_first, k_first;  // hxa079: the first RWKV layer's v and k of this call
  int64_t first_size = 0;

  DeviceBuffer take(int64_t floats) const { return DeviceBuffer(static_cast<size_t>(floats) * sizeof(float), stream); }
};

// Times the GPU work launched on ctx.stream during its lifetime under `category` (a string literal) when
// HXFORGE_CUDA_PROFILE is set (cuda_profile.cc; take_cuda_profile() sums them); does nothing otherwise.
class OpTimer {
 public:
  OpTimer(const CallContext& ctx, const char* category);
  ~OpTimer();
  OpTimer(const OpTimer&) = delete;
  OpTimer& operator=(const OpTimer&) = delete;

 private:
  cudaStream_t stream_;
  const char* category_;
  cudaEvent_t start_ = nullptr, stop_ = nullptr;
};

// The input x [T, cols] of one or more products. In kBF16 mode the products read x rounded to bf16: that copy is
// made once for all the products of x (q/k/v, gate/up, RWKV's seven), by the kernel that wrote x where it can
// (RMSNorm, GLU), so f32 may then be null; in kF32 mode only f32 is set.
struct ProductInput {
  const float* f32 = nullptr;
  const uint16_t* bf16 = nullptr;
  DeviceBuffer owned_bf16;  // the bf16 copy, when this input holds it

  // Makes room for the bf16 copy of `floats` values, which the caller's kernel then writes on `stream`.
  uint16_t* own_bf16(int64_t floats, cudaStream_t stream) {
    owned_bf16 = DeviceBuffer(static_cast<size_t>(floats) * 2, stream);
    bf16 = static_cast<const uint16_t*>(owned_bf16.get());
    return static_cast<uint16_t*>(owned_bf16.get());
  }
};
// x as a product input: in kBF16 mode, rounded to bf16 now.
ProductInput product_input(const CallContext& ctx, const float* x, int64_t floats);
// y [T, w.rows] (=|+=) x [T, w.cols] · Wᵀ in the call's compute mode; with `bias`, the bias belongs to this product.
void project(const CallContext& ctx, const ProductInput& x, const DeviceMatrix& w, float* y,
             const DeviceVector* bias = nullptr, bool accumulate = false);
// The same for an f32 x used by this product only.
void project(const CallContext& ctx, const float* x, const DeviceMatrix& w, float* y,
             const DeviceVector* bias = nullptr, bool accumulate = false);
// RMSNorm of `rows` rows of `dim` with the model's eps; weight may be empty (weightless).
void rms_norm_rows(const CallContext& ctx, const float* x, float* y, int64_t rows, int64_t dim,
                   const DeviceVector& weight);
// The same, for a y that products read next: in kBF16 mode the kernel also writes y's bf16 copy.
ProductInput rms_norm_for_products(const CallContext& ctx, const float* x, float* y, int64_t rows, int64_t dim,
                                   const DeviceVector& weight);
// Copies `floats` device values to a new host vector (synchronous on the call's stream).
std::vector<float> download(const CallContext& ctx, const float* device, int64_t floats);

// ---- quantized matrices (cuda_quantized.cc) ----
// When `name` is a quantized matrix of `checkpoint` whose layout the GPU decodes (every scheme's portable layout,
// and fp6/fp5 torchao-tc), uploads its codes, scales and zeros into `m` and returns true; false for a dense tensor
// or gemlite int4 (the caller decodes those on the host). The bytes go through `store`.
bool upload_quantized(const Checkpoint& checkpoint, const std::string& name, DeviceMatrix& m, WeightStore& store);

// ---- blocks (cuda_blocks.cc) ----
void attention_mixer(const AttentionPlan& plan, const AttentionWeights& w, CallContext& ctx, const ProductInput& x,
                     const DeviceRope* rope, DeviceLayerState& own, const DeviceLayerState& cache, float* out,
                     bool add_to_out);
void rwkv_mixer(const RwkvPlan& plan, const RwkvWeights& w, CallContext& ctx, const ProductInput& x, const DeviceRope* rope,
                DeviceLayerState& state, float* out);
// Gemma PLE: P [T, L, ple_dim] from the ids (already clamped to the PLE vocabulary) and the scaled embedding.
void gemma_per_layer_inputs(const CallContext& ctx, const DeviceMatrix& table, const DeviceMatrix& projection,
                            const DeviceVector& projection_norm, const int64_t* ple_ids, const float* embedded,
                            float* per_layer_inputs);
// h += RMSNorm(W_proj · (act(W_gate · h) ⊙ P_l); ple_norm)
void gemma_per_layer_block(const LayerWeights& w, const CallContext& ctx, int layer, const float* per_layer_inputs,
                           float* h);

}  // namespace hx::cuda
