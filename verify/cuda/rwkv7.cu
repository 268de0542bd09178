// The RWKV-7 WKV recurrence and the element-wise pieces around it, on the GPU (CPU: verify/rwkv7.cc).
//
// The recurrence keeps each head's state S [N][N] (fla layout S[i][j], i = key, j = value) in shared memory for the
// whole call: one block per head, one thread per value column j. Thread j only ever touches column j, and sums over
// i run in increasing order exactly as on the CPU, so the only synchronisation is around the per-token input
// vectors. Sequential over T (recurrent, not chunked): O(T·N²) per head, fine for verification and decode.
#include <stdexcept>
#include <string>

#include "verify/cuda/cuda_kernels.h"

namespace hx::cuda {
namespace {

constexpr int kThreads = 256;

unsigned blocks_for(int64_t n) {
  const int64_t b = (n + kThreads - 1) / kThreads;
  return static_cast<unsigned>(b < 1 ? 1 : (b > 65535 * 8 ? 65535 * 8 : b));
}

#define HX_GRID_STRIDE(i, n) \
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < (n); i += int64_t(gridDim.x) * blockDim.x)

__device__ float softplus_f(float x) { return x > 20.0f ? x : log1pf(expf(x)); }

__global__ void decay_kernel(const float* z, float* omega, float* decay, int64_t n) {
  HX_GRID_STRIDE(i, n) {
    const float w = -softplus_f(-z[i]) - 0.5f;
    omega[i] = w;
    decay[i] = expf(-expf(w));
  }
}

// One warp per row: kk = k / max(‖k‖, 1e-12), the norm summed in double as on the CPU.
__global__ void normalize_keys_kernel(const float* k, float* kk, int64_t rows, int64_t n) {
  const int64_t row = blockIdx.x * int64_t(blockDim.x / 32) + threadIdx.x / 32;
  const int lane = threadIdx.x % 32;
  if (row >= rows) return;
  const float* in = k + row * n;
  double sum = 0.0;
  for (int64_t i = lane; i < n; i += 32) sum += static_cast<double>(in[i]) * in[i];
  for (int offset = 16; offset > 0; offset /= 2) sum += __shfl_xor_sync(0xffffffffu, sum, offset);
  const float norm = fmaxf(static_cast<float>(sqrt(sum)), 1e-12f);
  for (int64_t i = lane; i < n; i += 32) kk[row * n + i] = in[i] / norm;
}

__global__ void removal_kernel(const float* kk, const float* a, float* remove, float* replace, int64_t n) {
  HX_GRID_STRIDE(i, n) {
    remove[i] = -kk[i];
    replace[i] = kk[i] * a[i];
  }
}
__global__ void scale_keys_kernel(float* k, const float* term, const float* a, int64_t n) {
  HX_GRID_STRIDE(i, n) { k[i] = k[i] * ((1.0f - term[i]) + a[i]); }
}
__global__ void lerp_kernel(float* x, const float* target, const float* gate, int64_t n) {
  HX_GRID_STRIDE(i, n) { x[i] = x[i] + (target[i] - x[i]) * gate[i]; }
}
__global__ void repeat_kv_kernel(const float* x, float* out, int64_t tokens, int64_t heads, int64_t kv_heads,
                                 int64_t n) {
  const int64_t group = heads / kv_heads;
  HX_GRID_STRIDE(idx, tokens * heads * n) {
    const int64_t i = idx % n, h = (idx / n) % heads, t = idx / (n * heads);
    out[idx] = x[(t * kv_heads + h / group) * n + i];
  }
}

__global__ void recurrence_kernel(const float* r, const float* decay, const float* k, const float* v,
                                  const float* remove, const float* replace, int64_t tokens, int64_t heads, int64_t n,
                                  float* state, float* y) {
  extern __shared__ float shared[];
  float* s = shared;            // [n][n]
  float* vec = shared + n * n;  // r, decay, k, v, remove, replace of the current token: [6][n]
  const int64_t h = blockIdx.x, j = threadIdx.x;
  float* global_state = state + h * n * n;
  for (int64_t i = 0; i < n; ++i) s[i * n + j] = global_state[i * n + j];
  for (int64_t t = 0; t < tokens; ++t) {
    const int64_t base = (t * heads + h) * n;
    vec[0 * n + j] = r[base + j];
    vec[1 * n + j] = decay[base + j];
    vec[2 * n + j] = k[base + j];
    vec[3 * n + j] = v[base + j];
    vec[4 * n + j] = remove[base + j];
    vec[5 * n + j] = replace[base + j];
    __syncthreads();
    float sa = 0.0f;
    for (int64_t i = 0; i < n; ++i) sa = sa + vec[4 * n + i] * s[i * n + j];
    const float v_j = vec[3 * n + j];
    float out = 0.0f;
    for (int64_t i = 0; i < n; ++i) {
      const float updated = (vec[1 * n + i] * s[i * n + j] + vec[5 * n + i] * sa) + vec[2 * n + i] * v_j;
      s[i * n + j] = updated;
      out = out + vec[0 * n + i] * updated;
    }
    y[base + j] = out;
    __syncthreads();  // the next token overwrites vec
  }
  for (int64_t i = 0; i < n; ++i) global_state[i * n + j] = s[i * n + j];
}

// One warp per (token, head): the bonus Σ_i r_i k_i bonus[h,i] shuffle-reduced, then out = y·scale + bonus·v.
__global__ void output_kernel(const float* y, const float* r, const float* k, const float* v, const float* bonus,
                              float y_scale, int64_t rows, int64_t heads, int64_t n, float* out) {
  const int64_t row = blockIdx.x * int64_t(blockDim.x / 32) + threadIdx.x / 32;
  const int lane = threadIdx.x % 32;
  if (row >= rows) return;
  const int64_t base = row * n, h = row % heads;
  float bonus_sum = 0.0f;
  if (bonus) {
    for (int64_t i = lane; i < n; i += 32) bonus_sum += (r[base + i] * k[base + i]) * bonus[h * n + i];
    for (int offset = 16; offset > 0; offset /= 2) bonus_sum += __shfl_xor_sync(0xffffffffu, bonus_sum, offset);
  }
  for (int64_t j = lane; j < n; j += 32) {
    const float scaled = y[base + j] * y_scale;
    out[base + j] = bonus ? scaled + bonus_sum * v[base + j] : scaled;
  }
}

unsigned warp_rows_blocks(int64_t rows) { return static_cast<unsigned>((rows + kThreads / 32 - 1) / (kThreads / 32)); }

}  // namespace

void rwkv7_decay_from_logits(const float* z, float* omega, float* decay, int64_t n, cudaStream_t s) {
  decay_kernel<<<blocks_for(n), kThreads, 0, s>>>(z, omega, decay, n);
}
void rwkv7_normalize_keys(const float* k, float* kk, int64_t rows, int64_t head_dim, cudaStream_t s) {
  if (rows > 0) normalize_keys_kernel<<<warp_rows_blocks(rows), kThreads, 0, s>>>(k, kk, rows, head_dim);
}
void rwkv7_removal_terms(const float* kk, const float* a, float* remove, float* replace, int64_t n, cudaStream_t s) {
  removal_kernel<<<blocks_for(n), kThreads, 0, s>>>(kk, a, remove, replace, n);
}
void rwkv7_scale_keys(float* k, const float* term, const float* a, int64_t n, cudaStream_t s) {
  scale_keys_kernel<<<blocks_for(n), kThreads, 0, s>>>(k, term, a, n);
}
void lerp_toward(float* x, const float* target, const float* gate, int64_t n, cudaStream_t s) {
  lerp_kernel<<<blocks_for(n), kThreads, 0, s>>>(x, target, gate, n);
}
void repeat_kv(const float* x, float* out, int64_t tokens, int64_t heads, int64_t kv_heads, int64_t n, cudaStream_t s) {
  repeat_kv_kernel<<<blocks_for(tokens * heads * n), kThreads, 0, s>>>(x, out, tokens, heads, kv_heads, n);
}

void rwkv7_recurrence(const float* r, const float* decay, const float* k, const float* v, const float* remove,
                      const float* replace, int64_t tokens, int64_t heads, int64_t head_dim, float* state, float* y,
                      cudaStream_t s) {
  constexpr int64_t kMaxHeadDim = 128;  // one thread per value column; S (64 KB at 128) in shared memory
  if (head_dim <= 0 || head_dim > kMaxHeadDim || heads <= 0) {
    throw std::invalid_argument("CUDA rwkv7_recurrence: unsupported head size " + std::to_string(head_dim));
  }
  if (tokens == 0) return;
  const size_t shared_bytes = static_cast<size_t>(head_dim * head_dim + 6 * head_dim) * sizeof(float);
  if (shared_bytes > 48 * 1024) {
    cudaFuncSetAttribute(recurrence_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                         static_cast<int>(shared_bytes));
  }
  recurrence_kernel<<<static_cast<unsigned>(heads), static_cast<unsigned>(head_dim), shared_bytes, s>>>(
      r, decay, k, v, remove, replace, tokens, heads, head_dim, state, y);
}

void rwkv7_output(const float* y, const float* r, const float* k, const float* v, const float* bonus, float y_scale,
                  int64_t tokens, int64_t heads, int64_t head_dim, float* out, cudaStream_t s) {
  const int64_t rows = tokens * heads;
  if (rows > 0)
    output_kernel<<<warp_rows_blocks(rows), kThreads, 0, s>>>(y, r, k, v, bonus, y_scale, rows, heads, head_dim, out);
}

}  // namespace hx::cuda
