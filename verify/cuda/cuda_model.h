// The forward pass on an NVIDIA GPU: the same graph as the CPU reference (verify/forward.h), from the same resolved
// ModelPlan (verify/forward_plan.h), with the weights in GPU memory (or streamed to it layer by layer, below).
//
// Design goals
//  * One graph, two engines: the plan decides what every layer computes (norm placement, RoPE, KV sharing, the
//    RWKV-7 switches, TICA, PLE, layer_scalar, softcap); tensors are found through plan_model() and read through
//    make_weight() (so every encoding the CPU reads — dense floats and the registered quantized formats — loads
//    here too). Nothing here re-derives an architecture.
//  * The CPU's numerics: activations f32 between the products; kF32 = f32 GEMMs (cuBLAS, CUBLAS_COMPUTE_32F, no
//    TF32), kBF16 = bf16 × bf16 products with f32 sums (the CPU's MatmulCompute::kBF16). Element-wise ops follow the
//    CPU formulas (verify/kernels.h); the reduction order differs, so results agree to f32 noise, not bit for bit.
//  * The same contract as Model::forward: T tokens in, logits f32 [T, vocab] out, state (KV caches, RWKV states,
//    position) carried on the GPU from call to call; prefill-then-decode equals one prefill up to f32 noise.
//  * This header includes no CUDA header: the CLI and the tests compile without the CUDA toolkit. Without CUDA
//    (HXFORGE_CUDA=OFF or no nvcc) the same API is built from cuda_stub.cc, and every entry point reports
//    "hxforge was built without CUDA".
//
// Quantized matrices stay packed on the GPU (1 byte a weight for int8/fp8/fp6/fp5, ½ + group scales for int4) and
// are dequantized where they are used: in registers by the decode GEMV, a slice of rows at a time into scratch for
// cuBLAS in prefill (gemlite int4 alone is decoded at load).
//
// Prefill attention runs on the tensor cores in kBF16 mode (attention_tc.cu, bf16×3 products: f32-like accuracy);
// kF32 keeps the f32 kernels, the reference they are tested against.
//
// Weights that do not fit the budget (CudaLoadOptions) are streamed layer by layer: the last layers stay in pinned
// host memory and every call copies them into two GPU slots on a second stream, each while the layer before it
// computes (weight_streaming.cc; one or two streamed layers stay in their slots between calls); the embedding,
// head and PLE tables stay resident. A streamed layer costs its bytes over PCIe per call (~50 GB/s on an H100
// host), so decode slows to the copy rate; prefill of long sequences hides much of it behind compute.
//
// Non-goals (for now): batches of sequences; integer/fp8 tensor-core products;
// CUDA graphs (decode launches ~25 kernels a layer, which keeps bf16 decode near 61 % of the HBM roofline on an
// H100); several GPUs.
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "formats/checkpoint.h"
#include "verify/forward.h"

namespace hx {

struct ModelConfig;
struct ModelPlan;

// True when this build has CUDA and a usable GPU is present; otherwise false with the reason in *why ("hxforge was
// built without CUDA", or the cudaGetDeviceCount error, or "no CUDA device").
bool cuda_device_available(std::string* why = nullptr);

// The recurrent state of one sequence on the GPU (KV caches, WKV states, position).
class CudaState {
 public:
  CudaState();
  ~CudaState();
  CudaState(CudaState&&) noexcept;
  CudaState& operator=(CudaState&&) noexcept;

  int64_t position() const;
  // The WKV state of RWKV layer `layer` copied to the host ([heads, N, N], fla layout), empty for other layers.
  std::vector<float> wkv(int layer) const;
  // Back to an empty sequence, keeping the allocations.
  void reset();

  struct Impl;

 private:
  friend class CudaModel;
  std::unique_ptr<Impl> impl_;
};

// Which rows of logits a forward call computes and copies back: every position (Model::forward's contract) or only
// the last one ([1, vocab]: what generation needs; it skips a [T, vocab] head product and its copy to the host, e.g.
// 512 MB for a 512-token prefill of a 262k-vocabulary model).
enum class LogitRows : uint8_t { kAll, kLast };

// With HXFORGE_CUDA_PROFILE set in the environment, forward calls time their GPU work per kind of operation (CUDA
// events: gemm, attention, rwkv, norm); this returns the totals since the last call as JSON ({"gemm": {"ms": …,
// "calls": …}, …}) and clears them. "{}" when profiling is off or there is no CUDA.
std::string take_cuda_profile();

// One causal attention on the GPU, for tests and benches: q [tokens, q_heads, d], k and v [cache_len, kv_heads, d]
// (host f32, the queries at the cache's last `tokens` positions) → out [tokens, q_heads, d]. `tensor_cores` lets
// prefill take the bf16×3 tensor-core kernel (≥ 64 queries, head_dim 32/64/96/128/256/512), as kBF16 calls do;
// otherwise the f32 kernels. Throws UnsupportedError without CUDA or a GPU.
struct CudaAttentionProblem {
  int64_t tokens = 0, cache_len = 0, q_heads = 0, kv_heads = 0, head_dim = 0, sliding_window = 0;
  float scale = 1.0f;
};
std::vector<float> cuda_causal_attention(const CudaAttentionProblem& problem, std::span<const float> q,
                                         std::span<const float> k, std::span<const float> v, bool tensor_cores);

// How much GPU memory the weights may take. 0 = HXFORGE_CUDA_WEIGHT_BUDGET_MIB from the environment when set, else
// the GPU's free memory less a reserve for activations and caches (max(4 GiB, 1/8 of the GPU)). Layers that do not
// fit are streamed from pinned host memory (see above).
struct CudaLoadOptions {
  uint64_t weight_budget_bytes = 0;
};

class CudaModel {
 public:
  // Throws UnsupportedError (exit 3) when there is no CUDA build, no GPU or driver (naming the CUDA error), or an
  // allocation fails; the checkpoint errors of Model (FormatError naming file and tensor) otherwise.
  explicit CudaModel(const Checkpoint& checkpoint, const CudaLoadOptions& options = {});
  CudaModel(const Checkpoint& checkpoint, const ModelConfig& config, const CudaLoadOptions& options = {});
  ~CudaModel();
  CudaModel(CudaModel&&) noexcept;
  CudaModel& operator=(CudaModel&&) noexcept;
  CudaModel(const CudaModel&) = delete;
  CudaModel& operator=(const CudaModel&) = delete;

  const std::string& architecture() const;
  int64_t vocab_size() const;
  int64_t hidden_size() const;
  int num_layers() const;
  const ModelPlan& plan() const;
  std::string device_name() const;       // "NVIDIA H100 80GB HBM3"
  uint64_t device_weight_bytes() const;  // GPU bytes the weights take (resident layers, tables, streaming slots)
  int streamed_layers() const;           // layers streamed from host memory (0: all resident)
  uint64_t streamed_bytes() const;       // their bytes, held in (pinned) host memory

  CudaState new_state() const;
  // Model::forward's contract (token ids checked the same way, ForwardOptions honoured, hidden states and PLE inputs
  // copied back when asked). One call at a time per model (the model owns one CUDA stream and cuBLAS handle).
  ForwardResult forward(std::span<const int64_t> tokens, CudaState& state, const ForwardOptions& options = {},
                        LogitRows rows = LogitRows::kAll) const;

  struct Impl;

 private:
  std::unique_ptr<Impl> impl_;
};

}  // namespace hx
