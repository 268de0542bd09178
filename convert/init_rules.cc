#include "convert/init_rules.h"

#include <algorithm>
#include <cmath>
#include <numbers>

#include "formats/errors.h"
#include "formats/parallel.h"

namespace hx {
namespace {

uint64_t mix(uint64_t x) {  // splitmix64 finaliser
  x += 0x9e3779b97f4a7c15ULL;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
  return x ^ (x >> 31);
}

// Uniform in (0, 1) from 53 random bits, never 0 (its log is taken).
double uniform(uint64_t key, uint64_t counter) {
  return (static_cast<double>(mix(key ^ mix(counter)) >> 11) + 0.5) * 0x1p-53;
}

}  // namespace

uint64_t seeded_stream_key(uint64_t seed, const std::string& tensor_name) {
  uint64_t h = 0xcbf29ce484222325ULL ^ mix(seed ^ 0x68786f7267650000ULL);  // FNV-1a over the name, keyed by the seed
  for (unsigned char c : tensor_name) h = (h ^ c) * 0x100000001b3ULL;
  return mix(h);
}

double seeded_normal(uint64_t stream_key, uint64_t index) {
  const double u1 = uniform(stream_key, 2 * index), u2 = uniform(stream_key, 2 * index + 1);
  return std::sqrt(-2.0 * std::log(u1)) * std::cos(2.0 * std::numbers::pi * u2);
}

double radlads_w0(const InitContext& ctx, int64_t n) {
  const double c1 = static_cast<double>(std::max<int64_t>(ctx.c - 1, 1));
  const double half = (static_cast<double>(ctx.head_dim) - 1.0) / 2.0;  // (N-1)/2; 0 when N = 1 (zigzag 0)
  const double zz = half > 0 ? (static_cast<double>(n % ctx.head_dim) - half) / half : 0.0;
  const double zigzag = zz * std::abs(zz);
  const double r01 = ctx.num_layers > 1 ? static_cast<double>(ctx.layer) / (ctx.num_layers - 1) : 0.0;
  const double www = -6.0 + 6.0 * std::pow(static_cast<double>(n) / c1, 1.0 + std::pow(r01, 0.3));
  return www + 0.5 + zigzag * 2.5;
}

double radlads_a0(const InitContext& ctx, int64_t n) {
  const double c1 = static_cast<double>(std::max<int64_t>(ctx.c - 1, 1));
  const double half = (static_cast<double>(ctx.head_dim) - 1.0) / 2.0;
  const double zz = half > 0 ? (static_cast<double>(n % ctx.head_dim) - half) / half : 0.0;
  const double zigzag = zz * std::abs(zz);
  const double linear = static_cast<double>(n) / c1 - 0.5;
  return -0.19 + zigzag * 0.3 + linear * 0.4;
}

std::vector<double> seeded_orthogonal(uint64_t stream_key, int64_t rows, int64_t cols, double gain_times_scale) {
  // torch: flattened = normal(rows, cols); if rows < cols: flattened.t_(); q, r = qr(flattened); q *= sign(diag r);
  // if rows < cols: q.t_(). Column-major storage of the tall matrix makes both cases one loop: for rows ≥ cols the
  // tall matrix is A and the result is Q; for rows < cols it is Aᵀ, whose column-major Q' is Q'ᵀ row-major.
  const int64_t m = std::max(rows, cols), n = std::min(rows, cols);
  std::vector<double> a(static_cast<size_t>(m * n));
  parallel_for(0, rows, 64, [&](int64_t i) {
    for (int64_t j = 0; j < cols; ++j) {
      const double x = seeded_normal(stream_key, static_cast<uint64_t>(i * cols + j));
      if (rows >= cols)
        a[static_cast<size_t>(j * m + i)] = x;  // column j of A
      else
        a[static_cast<size_t>(i * m + j)] = x;  // column i of Aᵀ
    }
  });
  orthonormalize_columns(a, m, n);
  std::vector<double> w(static_cast<size_t>(rows * cols));
  for (int64_t i = 0; i < rows; ++i)
    for (int64_t j = 0; j < cols; ++j)
      w[static_cast<size_t>(i * cols + j)] =
          gain_times_scale * (rows >= cols ? a[static_cast<size_t>(j * m + i)] : a[static_cast<size_t>(i * m + j)]);
  return w;
}

TensorInit::TensorInit(const InitSpec& spec, const InitContext& ctx, const Shape& shape, uint64_t stream_key)
    : spec_(spec), ctx_(ctx), key_(stream_key) {
  if (shape.size() == 2) rows_ = shape[0], cols_ = shape[1];
  if (spec.kind == InitKind::kOrthogonal) {
    if (shape.size() != 2 || rows_ == 0 || cols_ == 0)
      throw FormatError("orthogonal init needs a non-empty 2-D tensor; found shape " + shape_to_string(shape));
    matrix_ = seeded_orthogonal(key_, rows_, cols_, spec.gain.of(rows_, cols_) * spec.scale);
  }
  if (spec.kind == InitKind::kNormal) normal_std_ = spec.std * spec.gain.of(rows_, cols_);
  if ((spec.kind == InitKind::kRadladsW0 || spec.kind == InitKind::kRadladsA0) && (ctx.c <= 0 || ctx.head_dim <= 0))
    throw FormatError("RADLADS vector init needs an RWKV layer (C and N > 0)");
}

void TensorInit::fill(uint64_t begin, uint64_t count, float* values) const {
  for (uint64_t i = 0; i < count; ++i) {
    const uint64_t index = begin + i;
    double v = 0.0;
    switch (spec_.kind) {
      case InitKind::kZeros:
        v = 0.0;
        break;
      case InitKind::kOnes:
        v = 1.0;
        break;
      case InitKind::kConstant:
        v = spec_.value;
        break;
      // The vectors are [1, 1, C] (hxa079) or [C] (hxa07i): the flat index is n either way.
      case InitKind::kRadladsW0:
        v = radlads_w0(ctx_, static_cast<int64_t>(index));
        break;
      case InitKind::kRadladsA0:
        v = radlads_a0(ctx_, static_cast<int64_t>(index));
        break;
      case InitKind::kOrthogonal:
        v = matrix_[index];
        break;
      case InitKind::kNormal:
        v = normal_std_ * seeded_normal(key_, index);
        break;
    }
    values[i] = static_cast<float>(v);
  }
}

}  // namespace hx
