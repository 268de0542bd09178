// The values of a student's new tensors: RADLADS formulas, seeded orthogonal and normal matrices, constants.
//
// Design goals:
// - Reproducible bit for bit: random values come from a counter-based generator keyed by (seed, tensor name,
//   element index) — independent of write order, thread count and chunking — and the orthogonalisation is our own
//   (classical Gram-Schmidt run twice, in double, with fixed summation orders), not a LAPACK whose blocking varies.
// - The formulas exactly as RWKVInside writes them (hybrid-arch.md §4), quirks included: v0 = k0 = 0.73 (the
//   -0.4·linear_kv term is zero there), r01 = ℓ/(L-1) over the whole stack, zigzag over the head size N.
// - orthogonal follows torch.nn.init.orthogonal_: a normal matrix A [rows, cols] (flattened row-major), QR of A (or
//   of Aᵀ when rows < cols) with R's diagonal made positive, Q (or Qᵀ) times gain·scale.
// - Streaming: element-wise rules produce any range [begin, end) on demand; orthogonal builds its whole (small,
//   rank-sized) matrix once per tensor.
// Non-goals: other torch init schemes; bitwise agreement with torch's own random numbers (torch's generator is not
// reproducible across devices anyway — the seed here defines the student).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "convert/layout.h"
#include "formats/tensor.h"

namespace hx {

// Where a tensor sits: what the RADLADS vector formulas depend on.
struct InitContext {
  int layer = 0;         // ℓ, absolute layer index
  int num_layers = 1;    // L, layers of the whole model
  int64_t c = 0;         // C = H·N
  int64_t head_dim = 0;  // N
};

// The generator: a standard normal for (seed, name, index), Box-Muller over splitmix64 uniforms.
uint64_t seeded_stream_key(uint64_t seed, const std::string& tensor_name);
double seeded_normal(uint64_t stream_key, uint64_t index);

// RADLADS vectors at position n ∈ [0, C): w0 = www + 0.5 + 2.5·zigzag, a0 = -0.19 + 0.3·zigzag + 0.4·linear.
double radlads_w0(const InitContext& ctx, int64_t n);
double radlads_a0(const InitContext& ctx, int64_t n);

// Q of the QR decomposition (positive diagonal R) of an m×n column-major matrix, m ≥ n, in place: column j is
// a[j·m … j·m + m). Throws FormatError when the columns are linearly dependent (not for Gaussian input).
void orthonormalize_columns(std::vector<double>& a, int64_t m, int64_t n);

// torch.nn.init.orthogonal_ semantics on a seeded normal matrix; row-major [rows, cols], times gain·scale.
std::vector<double> seeded_orthogonal(uint64_t stream_key, int64_t rows, int64_t cols, double gain_times_scale);

// Produces the values of one tensor for an InitSpec, range by range. Construction does the per-tensor work
// (an orthogonal matrix); fill() is then cheap and thread-safe.
class TensorInit {
 public:
  TensorInit(const InitSpec& spec, const InitContext& ctx, const Shape& shape, uint64_t stream_key);
  // values[i] = element begin + i, for i < count, rounded to f32.
  void fill(uint64_t begin, uint64_t count, float* values) const;

 private:
  InitSpec spec_;
  InitContext ctx_;
  int64_t rows_ = 1, cols_ = 1;
  uint64_t key_ = 0;
  double normal_std_ = 0.0;
  std::vector<double> matrix_;  // orthogonal: the whole tensor
};

}  // namespace hx
