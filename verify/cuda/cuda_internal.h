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
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "verify/cuda/cuda_kernels.h"
#include "verify/cuda/cuda_model.h"
#include "verify/forward_plan.h"

namespace hx::cuda {

// Throws UnsupportedError (exit 3) "<what>: CUDA error <name> (<description>)".
[[noreturn]] void fail(const std::string& what, cudaError_t error);
inline void check(cudaError_t error, const char* what) {
  if (error != cudaSuccess) fail(what, error);
}
void check_blas(cublasStatus_t status, const char* what);

// Device memory. With a stream it is stream-ordered scratch (cudaMallocAsync / cudaFreeAsync from the device's
// memory pool, so per-call buffers cost no cudaMalloc); without one, a long-lived allocation (weights, caches).
class DeviceBuffer {
 public:
  DeviceBuffer() = default;
  DeviceBuffer(size_t bytes, cudaStream_t stream);
  explicit DeviceBuffer(size_t bytes) : DeviceBuffer(bytes, nullptr) {}
  ~DeviceBuffer() { release(); }
  DeviceBuffer(DeviceBuffer&& other) noexcept { *this = std::move(other); }
  DeviceBuffer& operator=(DeviceBuffer&& other) noexcept {
    release();
    ptr_ = std::exchange(other.ptr_, nullptr);
    bytes_ = std::exchange(other.bytes_, 0);
    stream_ = std::exchange(other.stream_, nullptr);
    async_ = std::exchange(other.async_, false);
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

// y [T, w.rows] (=|+=) x [T, w.cols] · Wᵀ in the call's compute mode; with `bias`, the bias belongs to this product.
void project(const CallContext& ctx, const float* x, const DeviceMatrix& w, float* y,
             const DeviceVector* bias = nullptr, bool accumulate = false);
// RMSNorm of `rows` rows of `dim` with the model's eps; weight may be empty (weightless).
void rms_norm_rows(const CallContext& ctx, const float* x, float* y, int64_t rows, int64_t dim,
                   const DeviceVector& weight);
// Copies `floats` device values to a new host vector (synchronous on the call's stream).
std::vector<float> download(const CallContext& ctx, const float* device, int64_t floats);

// ---- quantized matrices (cuda_quantized.cc) ----
// When `name` is a quantized matrix of `checkpoint` whose layout the GPU decodes (every scheme's portable layout,
// and fp6/fp5 torchao-tc), uploads its codes, scales and zeros into `m` and returns true; false for a dense tensor
// or gemlite int4 (the caller decodes those on the host). Counts the bytes uploaded into *bytes.
bool upload_quantized(const Checkpoint& checkpoint, const std::string& name, DeviceMatrix& m, uint64_t* bytes);

// ---- blocks (cuda_blocks.cc) ----
void attention_mixer(const AttentionPlan& plan, const AttentionWeights& w, CallContext& ctx, const float* x,
                     const DeviceRope* rope, DeviceLayerState& own, const DeviceLayerState& cache, float* out,
                     bool add_to_out);
void rwkv_mixer(const RwkvPlan& plan, const RwkvWeights& w, CallContext& ctx, const float* x, const DeviceRope* rope,
                DeviceLayerState& state, float* out);
// Gemma PLE: P [T, L, ple_dim] from the ids (already clamped to the PLE vocabulary) and the scaled embedding.
void gemma_per_layer_inputs(const CallContext& ctx, const DeviceMatrix& table, const DeviceMatrix& projection,
                            const DeviceVector& projection_norm, const int64_t* ple_ids, const float* embedded,
                            float* per_layer_inputs);
// h += RMSNorm(W_proj · (act(W_gate · h) ⊙ P_l); ple_norm)
void gemma_per_layer_block(const LayerWeights& w, const CallContext& ctx, int layer, const float* per_layer_inputs,
                           float* h);

}  // namespace hx::cuda
