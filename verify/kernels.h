// CPU compute kernels of the reference forward pass: matrix products with weights in their stored encoding,
// normalisations, RoPE, activations, causal attention and the RWKV-7 recurrence.
//
// Design goals
//  * Reference quality first: every kernel has a fixed reduction order, so a result does not depend on the thread
//    count, on how the work was split, or on how many tokens were processed together (row t of a product is the same
//    for T = 1 and T = 37; prefill-then-decode of the recurrence equals one call over all tokens, bit for bit).
//  * Weights are read where they lie (a memory-mapped checkpoint): the matrix product asks a WeightMatrix for small
//    tiles, decoded on the fly, and never copies the whole matrix. New encodings (int8/FP8 with per-row scales,
//    FP6/FP5 bit-packed codes, int4 groups) are new WeightMatrix subclasses; the GEMM loop does not change.
//  * Fast where it matters (the matrix product, >95 % of a forward pass): an AVX-512 micro-kernel (FMA for f32,
//    vdpbf16ps for the bf16 mode) chosen at run time, plus a portable C++ path that computes the same sums in the
//    same order. `HXFORGE_FORCE_ISA=generic` or force_cpu_isa() selects the portable path, so one machine tests both.
//  * Parallel through the one OpenMP helper (formats/parallel.h) over independent outputs only.
//  * Emulating a bf16 model run: the small ops take an `activation` dtype (F32, BF16 or F16) and round where
//    PyTorch's eager bf16 run rounds (after every op); with DType::kF32 they are plain f32 math.
//
// Non-goals: training or gradients; batched sequences (one sequence per call; batch by calling again); hand-written
// SIMD for the O(T·d) element-wise ops, except where exponentials dominate (SwiGLU, the attention softmax: 4-lane
// portable and 16-lane AVX-512 twins of one exp, vector_exp.h, bit-identical); tuned AVX2/NEON kernels (those
// machines take the portable path); matching PyTorch's own summation order.
//
// Layouts: activations are row-major f32, one row per token. Multi-head tensors are [tokens, heads, head_dim],
// contiguous. Weight matrices are PyTorch's [out, in] (y = x·Wᵀ).
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "arch/model_config.h"  // RopeType
#include "formats/cpu_isa.h"
#include "formats/dtype.h"
#include "formats/tensor.h"

namespace hx {

// CPU instruction set: CpuIsa, active_cpu_isa(), force_cpu_isa() … live in formats/cpu_isa.h (quant/ uses them too).

// ============================================================ weight matrices ========================================

// A weight matrix W[rows = out features][cols = in features] in whatever encoding it is stored, decoded tile by tile.
//
// This is the plug-in point for encodings ("row decoders"). A subclass implements decode_f32() (and may override
// decode_bf16() when it can produce bf16 more cheaply than f32-then-round). Contract for implementers:
//  * decode_* write W[row_begin, row_end) × [col_begin, col_end) row-major into dst (row r at dst + (r - row_begin)
//    * dst_stride); nothing outside that rectangle is touched.
//  * The matrix product asks for at most kWeightTileRows rows at a time and for column ranges that start at a
//    multiple of kWeightTileColAlign (so group-quantised or bit-packed rows start on whole groups: int4 groups of
//    32/64/128, 4 FP6 codes = 3 bytes, 8 FP5 codes = 5 bytes); col_end is such a multiple or cols().
//  * decode_* are called concurrently from several threads on disjoint tiles: they must be const and thread-safe.
//    They may throw (matmul stops and rethrows the first exception to its caller).
//  * The bytes stay owned by the caller (a MappedFile, a TensorView's storage); a WeightMatrix only points at them.
// Examples: verify/quantized_matrix.h (int8 and FP8 with row scales, FP6/FP5 codes, int4 groups).
class WeightMatrix {
 public:
  static constexpr int64_t kWeightTileRows = 64;
  static constexpr int64_t kWeightTileColAlign = 128;

  virtual ~WeightMatrix() = default;
  int64_t rows() const { return rows_; }
  int64_t cols() const { return cols_; }

  virtual void decode_f32(int64_t row_begin, int64_t row_end, int64_t col_begin, int64_t col_end, float* dst,
                          int64_t dst_stride) const = 0;
  // bf16 bit patterns, rounded to nearest even from decode_f32's values (exact for bf16/f8 sources).
  virtual void decode_bf16(int64_t row_begin, int64_t row_end, int64_t col_begin, int64_t col_end, uint16_t* dst,
                           int64_t dst_stride) const;
  // A hint that this tile will be decoded soon (the GEMM calls it one tile ahead, so the bytes can arrive from
  // memory while it computes). Optional: the default does nothing.
  virtual void prefetch(int64_t row_begin, int64_t row_end, int64_t col_begin, int64_t col_end) const;
  // Zero-copy access for encodings whose rows already are `format` (F32 or BF16 values, little-endian): the address
  // of element (row, col) and, in *row_stride_bytes, the distance between rows. nullptr (the default) when the
  // rows must be decoded; the GEMM then calls decode_*.
  virtual const std::byte* stored_rows(DType format, int64_t row, int64_t col, int64_t* row_stride_bytes) const;
  // "BF16 [4096, 1536]" — for error messages and benchmark labels.
  virtual std::string describe() const = 0;

 protected:
  WeightMatrix(int64_t rows, int64_t cols);

 private:
  int64_t rows_;
  int64_t cols_;
};

// Plain float weights as stored in safetensors/.pth: F32, BF16, F16, F8_E4M3, F8_E5M2 (and the FNUZ float8s).
// Rows may be padded (row_stride_bytes ≥ cols · element size; 0 means packed rows).
class DenseWeights final : public WeightMatrix {
 public:
  DenseWeights(DType dtype, const void* data, int64_t rows, int64_t cols, int64_t row_stride_bytes = 0);
  // A 2-D [out, in] tensor view whose rows are contiguous (stride 1 along `in`); throws UnsupportedError otherwise.
  static DenseWeights from_view(const TensorView& view);

  DType dtype() const { return dtype_; }
  void decode_f32(int64_t row_begin, int64_t row_end, int64_t col_begin, int64_t col_end, float* dst,
                  int64_t dst_stride) const override;
  void decode_bf16(int64_t row_begin, int64_t row_end, int64_t col_begin, int64_t col_end, uint16_t* dst,
                   int64_t dst_stride) const override;
  void prefetch(int64_t row_begin, int64_t row_end, int64_t col_begin, int64_t col_end) const override;
  const std::byte* stored_rows(DType format, int64_t row, int64_t col, int64_t* row_stride_bytes) const override;
  std::string describe() const override;

 private:
  const std::byte* row(int64_t r) const { return data_ + r * row_stride_; }

  DType dtype_;
  const std::byte* data_;
  int64_t row_stride_;
  std::vector<float> code_table_;  // the 256 values of a float8 dtype (empty otherwise)
};

// ============================================================ matrix product =========================================

enum class MatmulCompute : uint8_t {
  kF32,   // W decoded to f32, x as given; f32 products and sums (FMA on AVX-512, multiply-then-add in generic C++)
  kBF16,  // x and W rounded to bf16 (nearest even), exact products, f32 sums in vdpbf16ps order
};

struct MatmulOptions {
  MatmulCompute compute = MatmulCompute::kF32;
  bool accumulate = false;  // y += x·Wᵀ (the product is completed first, then added once: a residual add)
};

// y[t][n] (=|+=) Σ_k x[t][k] · W[n][k] for t < tokens, n < w.rows(), k < w.cols().
// x rows are x_stride floats apart, y rows y_stride floats apart; x and y must not overlap. If a decoder throws,
// the exception reaches the caller and y is left partly written.
// Reduction order (fixed, so thread count, token count and tiling never change a result):
//   kF32:  s = 0; for k = 0..K-1: s = s + x[k]·w[k]   (fused on AVX-512, two roundings in generic C++)
//   kBF16: s = 0; for each pair p: s = (s + x[2p+1]·w[2p+1]) + x[2p]·w[2p]  (products exact; equal on both paths
//          except that vdpbf16ps flushes denormals)
void matmul(const float* x, int64_t tokens, int64_t x_stride, const WeightMatrix& w, float* y, int64_t y_stride,
            const MatmulOptions& options = {});
// Several products of the same x with weight matrices of the same width (Q, K, V of one input; an MLP's gate and up):
// x is rounded and packed once and the output blocks of all the products share one parallel loop. Each y is
// bit-identical to what matmul(x, tokens, x_stride, *w, y, y_stride, options) writes.
struct MatmulOutput {
  const WeightMatrix* w;
  float* y;
  int64_t y_stride;
};
void matmul_many(const float* x, int64_t tokens, int64_t x_stride, std::span<const MatmulOutput> outputs,
                 const MatmulOptions& options = {});
// Contiguous x [tokens, w.cols()] and y [tokens, w.rows()].
inline void matmul(const float* x, int64_t tokens, const WeightMatrix& w, float* y, const MatmulOptions& options = {}) {
  matmul(x, tokens, w.cols(), w, y, w.rows(), options);
}

// y[t][n] += bias[n] (attention_bias teachers).
void add_bias(float* y, int64_t tokens, int64_t dim, const float* bias);

// ============================================================ element-wise ops =======================================

// Rounds to `activation` (F32: unchanged; BF16/F16: nearest even), the dtype a PyTorch run would hold the value in.
float round_to_activation(float x, DType activation);
void round_to_activation(std::span<float> x, DType activation);

enum class RmsNormStyle : uint8_t {
  kGemma,  // y = round(x · (mean(x²) + eps)^-0.5 · w), all in f32, one rounding at the end (Gemma-4, T5, hxa079)
  kLlama,  // y = round(w · round(x · rsqrt(mean(x²) + eps))): normalise, round to the activation dtype, then × w
};

struct RmsNormParams {
  RmsNormStyle style = RmsNormStyle::kGemma;
  float eps = 1e-6f;
  const float* weight = nullptr;   // [dim]; nullptr = no weight (Gemma's v_norm)
  DType activation = DType::kF32;  // F32, BF16 or F16
};

// Normalises each of `rows` rows of length `dim` (mean(x²) summed in double, then rounded to f32; the inverse root
// is 1/sqrt in f32, which is what torch computes for both pow(·, -0.5) and rsqrt). In-place (y == x) is allowed.
// Per-head norms (q_norm, k_norm over [T, heads, head_dim]) are rows = T·heads, dim = head_dim.
void rms_norm(const float* x, float* y, int64_t rows, int64_t dim, const RmsNormParams& params);

// GELU with the tanh approximation (gelu_pytorch_tanh), SiLU, logistic sigmoid, softplus (beta 1, threshold 20).
float gelu_tanh(float x);
float silu(float x);
float sigmoid(float x);
float softplus(float x);
// x = cap · tanh(x / cap) (Gemma's final logit softcap), then rounded to `activation`.
void softcap(std::span<float> x, float cap, DType activation = DType::kF32);

enum class GluActivation : uint8_t { kSilu /* SwiGLU */, kGeluTanh /* GeGLU */ };
// out[i] = round(round(act(gate[i])) · up[i]): PyTorch's `act(gate_proj(x)) * up_proj(x)`. out may alias gate or up.
void glu(GluActivation act, const float* gate, const float* up, float* out, int64_t n, DType activation = DType::kF32);

// ============================================================ RoPE ===================================================

// The RoPE kinds are arch/model_config.h's RopeType (one definition for the whole project):
//   kDefault       inv_freq[i] = theta^(-2i/d), i < d/2 (partial_rotary_factor must be 1: no teacher uses less)
//   kProportional  Gemma-4 full layers: i < int(partial·d/2) as kDefault (denominator d), inv_freq 0 for the rest
//   kNone          no rotation: rope_inv_freq() refuses it (a NoPE layer simply does not call apply_rope)
struct RopeParams {
  RopeType type = RopeType::kDefault;
  double theta = 10000.0;
  int64_t head_dim = 0;                // d (even); the rotation always spans the whole head (NeoX half-split)
  double partial_rotary_factor = 1.0;  // kProportional only
};

// head_dim/2 inverse frequencies, computed in f32 as HF does: 1 / (theta ^ (float(2i) / d)). Throws UsageError for
// bad geometry and UnsupportedError for kNone or a partial kDefault.
std::vector<float> rope_inv_freq(const RopeParams& params);

// cos/sin of angle = float(position) · inv_freq[i], laid out as HF's emb = cat(freqs, freqs): [positions][head_dim].
struct RopeTable {
  int64_t head_dim = 0;
  std::vector<float> cos;
  std::vector<float> sin;
};
// `round_to` rounds cos/sin to the activation dtype (HF casts them to the model dtype before use).
RopeTable rope_table(std::span<const float> inv_freq, std::span<const int64_t> positions, DType round_to = DType::kF32);

// x [tokens, heads, head_dim] in place: x' = x·cos + rotate_half(x)·sin with rotate_half(x) = cat(-x[d/2:], x[:d/2]);
// token t uses row t of `table` (built for that token's position). Each product and the sum are rounded to
// `activation` as PyTorch's eager run does.
void apply_rope(float* x, int64_t tokens, int64_t heads, const RopeTable& table, DType activation = DType::kF32);

// ============================================================ attention ==============================================

struct AttentionParams {
  int64_t q_heads = 0;
  int64_t kv_heads = 0;  // q head h reads kv head h / (q_heads / kv_heads)  (GQA, repeat_kv)
  int64_t head_dim = 0;
  float scale = 1.0f;              // Gemma-4: 1.0; Llama/hxa079 GQA/TICA: 1/sqrt(head_dim)
  int64_t sliding_window = 0;      // 0: full causal; W > 0: a query sees itself and the previous W-1 positions
  DType activation = DType::kF32;  // bf16 run emulation: scores, scaled scores, probabilities and outputs rounded
};

// Causal softmax attention of `tokens` queries over a cache of `cache_len` positions whose last `tokens` entries
// are the queries' own keys/values (the past is cache_len - tokens positions).
//   q   [tokens, q_heads, head_dim]     k, v  [cache_len, kv_heads, head_dim]     out [tokens, q_heads, head_dim]
// Query t (cache position p = cache_len - tokens + t) attends to cache positions j ≤ p (and j > p - W with a window):
//   s_j = round(round(q·k_j) · scale); p_j = round(softmax_j(s)) (f32, max subtracted); out = round(Σ_j p_j v_j).
// No positional encoding is applied here (RoPE, when used, is applied to q and k beforehand; NoPE layers skip it).
// Parallel over (q head, block of queries).
void causal_attention(const AttentionParams& params, const float* q, int64_t tokens, const float* k, const float* v,
                      int64_t cache_len, float* out);

// ============================================================ RWKV-7 =================================================

// The WKV recurrence of hxa079/hxa07i (flash-linear-attention's fused_recurrent_rwkv7 with a = -kk, b = kk·a), per
// head h, state S [N][N] in the fla layout S[i][j] (i = key index, j = value index), per token:
//   sa_j   = Σ_i remove_i · S[i][j]                         (remove = -kk)
//   S[i][j] = decay_i · S[i][j] + replace_i · sa_j + k_i · v_j   (replace = kk·a, decay = exp(-exp(ω)) ∈ (0, 1))
//   y_j    = Σ_i r_i · S[i][j]                              (with the updated state; no scale inside)
// All inputs are [tokens, heads, N]; state is [heads, N, N], read and updated in place, so calls can be chained
// (prefill then decode gives the same bits as one call). Sums run over i in increasing order; f32 throughout.
// Parallel over heads.
struct Rwkv7Inputs {
  const float* r = nullptr;
  const float* decay = nullptr;
  const float* k = nullptr;
  const float* v = nullptr;
  const float* remove = nullptr;   // -kk
  const float* replace = nullptr;  // kk·a
};
void rwkv7_recurrence(const Rwkv7Inputs& in, int64_t tokens, int64_t heads, int64_t head_dim, float* state, float* y);

// The pieces around the recurrence, element-wise over n values unless stated otherwise (all f32):
// ω = -softplus(-z) - 0.5 (log of the decay's rate; ω < -0.5) and decay = exp(-exp(ω)).
void rwkv7_decay_from_logits(const float* z, float* omega, float* decay, int64_t n);
// Per head of `head_dim`: kk = k / max(||k||₂, 1e-12) (F.normalize), over rows = tokens·heads.
void rwkv7_normalize_keys(const float* k, float* kk, int64_t rows, int64_t head_dim);
// remove = -kk, replace = kk·a.
void rwkv7_removal_terms(const float* kk, const float* a, float* remove, float* replace, int64_t n);
// k = k · (1 - term + a) in place; term = ω for hxa079, the decay d for hxa07i.
void rwkv7_scale_keys(float* k, const float* term, const float* a, int64_t n);
// x = x + (target - x) · gate (gate already through sigmoid): hxa079's v_first / k_first residual mix.
void lerp_toward(float* x, const float* target, const float* gate, int64_t n);
// out[t,h,:] = y[t,h,:] · y_scale + (Σ_i r_i k_i bonus[h,i]) · v[t,h,:]; bonus (r_k, [heads, N]) may be nullptr
// (no bonus term, hxa07i). out may alias y.
void rwkv7_output(const float* y, const float* r, const float* k, const float* v, const float* bonus, float y_scale,
                  int64_t tokens, int64_t heads, int64_t head_dim, float* out);

}  // namespace hx
