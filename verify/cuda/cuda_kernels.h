// Launchers of the CUDA kernels of the forward pass (internal to verify/cuda/). Every pointer is device memory,
// activations are row-major f32 [rows, width] as on the CPU, and every launch goes to `stream`. Each kernel computes
// the formula of its CPU counterpart in verify/kernels.h (named beside it); only the reduction order may differ.
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>
#include <string>

namespace hx::cuda {

// Throws UnsupportedError (exit 3) "<what>: CUDA error <name> (<description>)" (cuda_gemm.cc; declared here too for
// the .cu files, which cannot include the C++20 headers of cuda_internal.h).
[[noreturn]] void fail(const std::string& what, cudaError_t error);

// Lets `kernel` use `bytes` of dynamic shared memory when that is above the default 48 KB (a no-op below: the call
// costs host time on every decode launch); fails naming the size when this GPU has less (an H100 has 227 KB).
template <typename Kernel>
void allow_shared_memory(Kernel kernel, size_t bytes) {
  if (bytes <= 48 * 1024) return;
  if (const cudaError_t e = cudaFuncSetAttribute(reinterpret_cast<const void*>(kernel),
                                                 cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(bytes));
      e != cudaSuccess)
    fail("CUDA attention: " + std::to_string(bytes) + " bytes of shared memory per block", e);
}

// ---- conversions and gathers (elementwise.cu) ----
void f32_to_bf16(const float* x, uint16_t* out, int64_t n, cudaStream_t stream);
void bf16_to_f32(const uint16_t* x, float* out, int64_t n, cudaStream_t stream);
// out[t][:] = table[ids[t]][:] · scale; the table's rows are bf16 (table_bf16) or f32, `width` values each.
void gather_rows(const void* table, bool table_bf16, int64_t width, const int64_t* ids, int64_t tokens, float scale,
                 float* out, cudaStream_t stream);

// ---- products with few tokens (gemv.cu) ----
constexpr int64_t kMaxGemvTokens = 4;
// The activations x [tokens, cols] of a GEMV: f32 (kF32 mode), or already rounded to bf16 once for the call (kBF16
// mode: exact bf16 × bf16 products, f32 sums — the CPU's kBF16 values). Exactly one of the two is set.
struct GemvInput {
  const float* f32 = nullptr;
  const uint16_t* bf16 = nullptr;
};
// y [tokens, rows] (=|+=) x [tokens, cols] · Wᵀ for bf16 W [rows, cols]. Returns false (and launches nothing) when
// the shape or alignment does not suit it: use cuBLAS then.
bool gemv_bf16(const uint16_t* w, const GemvInput& x, float* y, int64_t tokens, int64_t rows, int64_t cols,
               bool accumulate, cudaStream_t stream);

// ---- quantized weights (quantized.cu) ----
// How a weight matrix is held on the GPU. Byte codes [rows, cols] with one f32 scale per row: int8 (value q),
// fp8 (e4m3 value of q), a code table (fp6/fp5: table[q], codes unpacked at load); int4: two codes per byte (low
// nibble first) [rows, cols/2] with f32 scale and zero per group of `group` columns [rows, cols/group].
enum class WeightCoding : uint8_t { kDense, kInt8, kFp8, kCodeTable, kInt4 };
constexpr int kCodeTableSize = 64;  // fp6/fp5 codes
struct QuantizedView {
  WeightCoding coding = WeightCoding::kDense;
  const uint8_t* codes = nullptr;
  const float* scales = nullptr;
  const float* zeros = nullptr;  // int4
  const float* table = nullptr;  // kCodeTable: kCodeTableSize values
  int64_t rows = 0, cols = 0;
  int64_t group = 0;  // int4
};
// Rows [row_begin, row_begin + rows) decoded into out [rows, cols] as bf16 (to_bf16: the f32 value rounded to
// nearest even) or f32 — the CPU's decode_f32 / decode_bf16 values.
void dequantize_rows(const QuantizedView& w, int64_t row_begin, int64_t rows, bool to_bf16, void* out,
                     cudaStream_t stream);
// gemv_bf16's contract on a quantized W, dequantized in registers (and rounded to bf16 when x is bf16).
// Returns false (launching nothing) when shape or alignment does not suit it.
bool gemv_quantized(const QuantizedView& w, const GemvInput& x, float* y, int64_t tokens, bool accumulate,
                    cudaStream_t stream);

// ---- row-wise and element-wise ops (elementwise.cu) ----
// rms_norm: y = x · (mean(x²) + eps)^-½ · w (w may be null: weightless); rows of `dim`. In place allowed. With
// y_bf16, also writes y rounded to bf16 there.
void rms_norm(const float* x, float* y, int64_t rows, int64_t dim, const float* weight, float eps, cudaStream_t s,
              uint16_t* y_bf16 = nullptr);
// apply_rope: x [tokens, heads, d] rotated NeoX-style with cos/sin [tokens, d] (the CPU's RopeTable rows).
void apply_rope(float* x, int64_t tokens, int64_t heads, int64_t d, const float* cos, const float* sin,
                cudaStream_t stream);
void add_bias(float* y, int64_t rows, int64_t width, const float* bias, cudaStream_t stream);  // y[r][c] += b[c]
void add(float* y, const float* delta, int64_t n, cudaStream_t stream);                        // y += delta
void scale(float* x, int64_t n, float factor, cudaStream_t stream);                            // x *= factor
void multiply(float* x, const float* g, int64_t n, cudaStream_t stream);                       // x *= g
enum class Unary : uint8_t { kSigmoid, kTanh };
void unary(float* x, int64_t n, Unary op, cudaStream_t stream);
// gate[r][c] = σ(bias[c] + gate[r][c]) (rwkv's a and the v/k mix gates).
void sigmoid_with_bias(float* gate, int64_t rows, int64_t width, const float* bias, cudaStream_t stream);
// out = act(gate) · up (glu, SwiGLU or GeGLU-tanh); out may alias gate.
void glu(bool gelu_tanh, const float* gate, const float* up, float* out, int64_t n, cudaStream_t stream);
// The same, rounded to bf16 (the down projection's input in kBF16 mode).
void glu_to_bf16(bool gelu_tanh, const float* gate, const float* up, uint16_t* out, int64_t n, cudaStream_t stream);
// x = cap · tanh(x / cap)
void softcap(float* x, int64_t n, float cap, cudaStream_t stream);
// Gemma PLE: out = (projected + out · token_scale) · combine_scale (out holds the gathered table rows).
void ple_combine(float* out, const float* projected, int64_t n, float token_scale, float combine_scale,
                 cudaStream_t stream);
// Gemma PLE per layer: gate[t][i] = act(gate[t][i]) · P[t][layer][i], P [tokens, layers, P].
void ple_gate(float* gate, const float* per_layer_inputs, int64_t tokens, int64_t layers, int64_t layer, int64_t p,
              bool gelu_tanh, cudaStream_t stream);

// ---- attention (attention.cu) ----
struct AttentionShape {
  int64_t q_heads = 0, kv_heads = 0, head_dim = 0;
  float scale = 1.0f;
  int64_t sliding_window = 0;  // 0: full causal
  bool tensor_cores = false;   // prefill may take attention_tc.cu's bf16×3 tensor-core kernel (kBF16 mode)
};
constexpr int64_t kMaxAttentionHeadDim = 512;  // Gemma-4's full layers; the kernel keeps the output in registers
// causal_attention: q [tokens, q_heads, d] over a cache k, v [cache_len, kv_heads, d] whose last `tokens` rows are
// the queries' own positions; out [tokens, q_heads, d].
void causal_attention(const AttentionShape& shape, const float* q, int64_t tokens, const float* k, const float* v,
                      int64_t cache_len, float* out, cudaStream_t stream);
// The same on the tensor cores (attention_tc.cu); false (nothing launched) for head sizes other than 32, 64, 96,
// 128, 256 and 512.
bool causal_attention_tensor_cores(const AttentionShape& shape, const float* q, int64_t tokens, const float* k,
                                   const float* v, int64_t cache_len, float* out, cudaStream_t stream);

// ---- RWKV-7 (rwkv7.cu) ----
void rwkv7_decay_from_logits(const float* z, float* omega, float* decay, int64_t n, cudaStream_t stream);
void rwkv7_normalize_keys(const float* k, float* kk, int64_t rows, int64_t head_dim, cudaStream_t stream);
void rwkv7_removal_terms(const float* kk, const float* a, float* remove, float* replace, int64_t n, cudaStream_t s);
void rwkv7_scale_keys(float* k, const float* term, const float* a, int64_t n, cudaStream_t stream);
void lerp_toward(float* x, const float* target, const float* gate, int64_t n, cudaStream_t stream);
// [tokens, kv_heads, n] → [tokens, heads, n] (query head j reads kv head j / (heads / kv_heads)).
void repeat_kv(const float* x, float* out, int64_t tokens, int64_t heads, int64_t kv_heads, int64_t n,
               cudaStream_t stream);
// The WKV recurrence (kernels.h rwkv7_recurrence): inputs [tokens, heads, N]; state [heads, N, N] in place.
void rwkv7_recurrence(const float* r, const float* decay, const float* k, const float* v, const float* remove,
                      const float* replace, int64_t tokens, int64_t heads, int64_t head_dim, float* state, float* y,
                      cudaStream_t stream);
// out = y·y_scale + (Σ_i r_i k_i bonus[h,i])·v (bonus may be null); out may alias y.
void rwkv7_output(const float* y, const float* r, const float* k, const float* v, const float* bonus, float y_scale,
                  int64_t tokens, int64_t heads, int64_t head_dim, float* out, cudaStream_t stream);

}  // namespace hx::cuda
