#include "convert/init_rules.h"

#include <algorithm>
#include <climits>
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

// A dot product with four interleaved partial sums: vectorisable without -ffast-math, and its rounding depends only
// on the length, never on threads or chunking.
double dot(const double* a, const double* b, int64_t n) {
  double s0 = 0, s1 = 0, s2 = 0, s3 = 0;
  int64_t i = 0;
  for (; i + 4 <= n; i += 4) {
    s0 += a[i] * b[i];
    s1 += a[i + 1] * b[i + 1];
    s2 += a[i + 2] * b[i + 2];
    s3 += a[i + 3] * b[i + 3];
  }
  for (; i < n; ++i) s0 += a[i] * b[i];
  return (s0 + s1) + (s2 + s3);
}

// Rows per parallel block of the projection update.
constexpr int64_t kRowBlock = 512;

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

void orthonormalize_columns(std::vector<double>& a, int64_t m, int64_t n) {
  // Block classical Gram-Schmidt, twice ("twice is enough": as accurate as Householder for Q). Columns go in panels
  // of kPanelColumns: a panel is first projected off every finished column, twice, as two matrix products (one
  // parallel region each: R = Qᵀ·P over the finished columns, P −= Q·R over row blocks), then orthonormalised
  // column by column inside the panel (small, serial). Column-at-a-time parallel loops spent more time in OpenMP
  // barriers than in arithmetic on a loaded 2-core machine (perf: 38 % libgomp). Every sum has a fixed order, so the
  // result does not depend on the thread count.
  constexpr int64_t kPanelColumns = 32;
  const int64_t blocks = (m + kRowBlock - 1) / kRowBlock;
  std::vector<double> r;
  for (int64_t j0 = 0; j0 < n; j0 += kPanelColumns) {
    const int64_t width = std::min(kPanelColumns, n - j0);
    double* panel = a.data() + j0 * m;
    if (j0 > 0) {
      r.assign(static_cast<size_t>(j0 * width), 0.0);
      // Threads pay off only on big projections; small ones would spend more on waking the team than on the work.
      const int64_t grain = m * j0 * width >= (int64_t{1} << 20) ? 2 : INT64_MAX;
      for (int pass = 0; pass < 2; ++pass) {
        parallel_for(0, j0, grain, [&](int64_t k) {
          // R[k][·] = q_kᵀ·P: one pass over q_k for the whole panel (each sum as dot() forms it).
          const double* q = a.data() + k * m;
          for (int64_t c = 0; c < width; ++c) r[static_cast<size_t>(k * width + c)] = dot(q, panel + c * m, m);
        });
        parallel_for(0, blocks, grain, [&](int64_t b) {
          const int64_t lo = b * kRowBlock, hi = std::min(m, lo + kRowBlock);
          // P −= Q·R on rows [lo, hi): four panel columns per pass over q_k (q is loaded once for four updates);
          // every element still subtracts r_k·q_k in k order.
          int64_t c = 0;
          for (; c + 4 <= width; c += 4) {
            double* __restrict v0 = panel + c * m;
            double* __restrict v1 = v0 + m;
            double* __restrict v2 = v1 + m;
            double* __restrict v3 = v2 + m;
            for (int64_t k = 0; k < j0; ++k) {
              const double* rk = r.data() + k * width + c;
              const double* __restrict q = a.data() + k * m;
              for (int64_t i = lo; i < hi; ++i) {
                v0[i] -= rk[0] * q[i];
                v1[i] -= rk[1] * q[i];
                v2[i] -= rk[2] * q[i];
                v3[i] -= rk[3] * q[i];
              }
            }
          }
          for (; c < width; ++c) {
            double* v = panel + c * m;
            for (int64_t k = 0; k < j0; ++k) {
              const double rk = r[static_cast<size_t>(k * width + c)];
              const double* q = a.data() + k * m;
              for (int64_t i = lo; i < hi; ++i) v[i] -= rk * q[i];
            }
          }
        });
      }
    }
    std::vector<double> rp(static_cast<size_t>(width));
    for (int64_t c = 0; c < width; ++c) {
      double* v = panel + c * m;
      for (int pass = 0; pass < 2 && c > 0; ++pass) {
        for (int64_t k = 0; k < c; ++k) rp[static_cast<size_t>(k)] = dot(panel + k * m, v, m);
        for (int64_t k = 0; k < c; ++k) {
          const double rk = rp[static_cast<size_t>(k)];
          const double* q = panel + k * m;
          for (int64_t i = 0; i < m; ++i) v[i] -= rk * q[i];
        }
      }
      const double norm = std::sqrt(dot(v, v, m));
      if (!(norm > 1e-300))
        throw FormatError("orthogonal init: column " + std::to_string(j0 + c) + " is linearly dependent");
      for (int64_t i = 0; i < m; ++i) v[i] /= norm;
    }
  }
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
