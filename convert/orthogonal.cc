// The orthonormalisation behind seeded orthogonal inits (convert/init_rules.h orthonormalize_columns).
//
// Design goals: the same bits on every CPU and thread count — every sum has one fixed order, the file is compiled
// with -ffp-contract=off (no fused multiply-adds, whose rounding differs), and the AVX-512 build of the kernels runs
// exactly the operations of the portable one, on 4-double vectors whose lanes are the four partial sums of dot().
// Speed: RWKV LoRA factors are [rank ≤ 384, C = 6144]; a Reka layer orthogonalises five of them, and the
// projections below were a quarter of a conversion's CPU time as scalar SSE2 loops.
// Non-goals: other factorizations (Householder, CholeskyQR) — their results differ in the last bits from today's
// conversions, which a manifest may already pin.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <string>
#include <vector>

#include "convert/init_rules.h"
#include "formats/cpu_isa.h"
#include "formats/errors.h"
#include "formats/parallel.h"

namespace hx {
namespace {

// The helpers below are always inlined, so no Vec4 ever crosses a call boundary of the portable build (which is why
// CMakeLists.txt silences GCC's -Wpsabi note).
typedef double Vec4 __attribute__((vector_size(32)));  // the four partial sums of dot(), one per lane

[[gnu::always_inline]] inline Vec4 load4(const double* p) {
  Vec4 v;
  __builtin_memcpy(&v, p, sizeof v);
  return v;
}
[[gnu::always_inline]] inline void store4(double* p, Vec4 v) { __builtin_memcpy(p, &v, sizeof v); }

// Panel columns per kernel call: a dot's sums are chains of dependent adds, so eight of them keep the adders busy;
// the update keeps 4 columns × 8 rows in registers.
constexpr int kDotGroup = 8;
constexpr int kGroup = 4;

// dot(a, b) of n doubles as four interleaved partial sums: lane j sums a[i]·b[i] for i ≡ j (mod 4), the tail goes to
// lane 0, and the result is (s0 + s1) + (s2 + s3). kCount dots of `a` with b[0..kCount) at once share the loads of
// `a`; each has exactly the rounding of a dot on its own.
template <int kCount>
[[gnu::always_inline]] inline void dots_fixed(const double* a, const double* const* b, int64_t n, double* out) {
  Vec4 acc[kCount] = {};
  int64_t i = 0;
  for (; i + 4 <= n; i += 4) {
    const Vec4 x = load4(a + i);
    for (int c = 0; c < kCount; ++c) acc[c] += x * load4(b[c] + i);
  }
  for (int c = 0; c < kCount; ++c) {
    double s0 = acc[c][0];
    for (int64_t t = i; t < n; ++t) s0 += a[t] * b[c][t];
    out[c] = (s0 + acc[c][1]) + (acc[c][2] + acc[c][3]);
  }
}

[[gnu::always_inline]] inline void dots_body(const double* a, const double* const* b, int count, int64_t n,
                                             double* out) {
  if (count == kDotGroup) return dots_fixed<kDotGroup>(a, b, n, out);
  for (int c = 0; c < count; ++c) dots_fixed<1>(a, b + c, n, out + c);
}

// v_c[lo, hi) −= Σ_k r[k·r_stride + c] · q_k[lo, hi) for c < kCount, k = 0, 1, … in order: per element the very
// subtractions of a plain loop over k, with 8 rows of the kCount panel columns kept in registers while k runs.
template <int kCount>
[[gnu::always_inline]] inline void subtract_fixed(const double* q, int64_t m, int64_t k_count, const double* r,
                                                  int64_t r_stride, double* const* v, int64_t lo, int64_t hi) {
  int64_t i = lo;
  for (; i + 8 <= hi; i += 8) {
    Vec4 lo4[kCount], hi4[kCount];
    for (int c = 0; c < kCount; ++c) lo4[c] = load4(v[c] + i), hi4[c] = load4(v[c] + i + 4);
    for (int64_t k = 0; k < k_count; ++k) {
      const Vec4 x0 = load4(q + k * m + i), x1 = load4(q + k * m + i + 4);
      const double* rk = r + k * r_stride;
      for (int c = 0; c < kCount; ++c) {
        lo4[c] -= rk[c] * x0;
        hi4[c] -= rk[c] * x1;
      }
    }
    for (int c = 0; c < kCount; ++c) store4(v[c] + i, lo4[c]), store4(v[c] + i + 4, hi4[c]);
  }
  for (; i < hi; ++i)
    for (int c = 0; c < kCount; ++c) {
      double x = v[c][i];
      for (int64_t k = 0; k < k_count; ++k) x -= r[k * r_stride + c] * q[k * m + i];
      v[c][i] = x;
    }
}

[[gnu::always_inline]] inline void subtract_body(const double* q, int64_t m, int64_t k_count, const double* r,
                                                 int64_t r_stride, double* const* v, int count, int64_t lo,
                                                 int64_t hi) {
  if (count == kGroup) return subtract_fixed<kGroup>(q, m, k_count, r, r_stride, v, lo, hi);
  for (int c = 0; c < count; ++c) subtract_fixed<1>(q, m, k_count, r + c, r_stride, v + c, lo, hi);
}

void dots_generic(const double* a, const double* const* b, int count, int64_t n, double* out) {
  dots_body(a, b, count, n, out);
}
void subtract_generic(const double* q, int64_t m, int64_t k_count, const double* r, int64_t r_stride,
                      double* const* v, int count, int64_t lo, int64_t hi) {
  subtract_body(q, m, k_count, r, r_stride, v, count, lo, hi);
}
#if defined(__x86_64__)
[[gnu::target("avx2,avx512f,avx512vl")]] void dots_avx512(const double* a, const double* const* b, int count,
                                                             int64_t n, double* out) {
  dots_body(a, b, count, n, out);
}
[[gnu::target("avx2,avx512f,avx512vl")]] void subtract_avx512(const double* q, int64_t m, int64_t k_count,
                                                                 const double* r, int64_t r_stride, double* const* v,
                                                                 int count, int64_t lo, int64_t hi) {
  subtract_body(q, m, k_count, r, r_stride, v, count, lo, hi);
}
#endif

struct Kernels {
  decltype(&dots_generic) dots = dots_generic;
  decltype(&subtract_generic) subtract = subtract_generic;
};
Kernels kernels() {
#if defined(__x86_64__)
  if (active_cpu_isa() == CpuIsa::kAvx512) return {dots_avx512, subtract_avx512};
#endif
  return {};
}

double dot(const Kernels& k, const double* a, const double* b, int64_t n) {
  double out = 0;
  k.dots(a, &b, 1, n, &out);
  return out;
}

constexpr int64_t kRowBlock = 512;     // rows per parallel block of the projection update
constexpr int64_t kColumnTile = 48;    // finished columns per pass of the update: 48 × 512 rows × 8 B = 192 KiB
constexpr int64_t kPanelColumns = 32;  // columns orthonormalised together

}  // namespace

void orthonormalize_columns(std::vector<double>& a, int64_t m, int64_t n) {
  // Block classical Gram-Schmidt, twice ("twice is enough": as accurate as Householder for Q). Columns go in panels
  // of kPanelColumns: a panel is first projected off every finished column, twice, as two matrix products (one
  // parallel region each: R = Qᵀ·P over the finished columns, P −= Q·R over row blocks), then orthonormalised
  // column by column inside the panel (small, serial). Every sum has a fixed order, so the result depends neither on
  // the thread count nor on the kernel family.
  const Kernels k = kernels();
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
        parallel_for(0, j0, grain, [&](int64_t kk) {  // R[kk][·] = q_kkᵀ·P, eight panel columns per pass over q_kk
          const double* q = a.data() + kk * m;
          for (int64_t c = 0; c < width; c += kDotGroup) {
            const int count = static_cast<int>(std::min<int64_t>(kDotGroup, width - c));
            const double* cols[kDotGroup] = {};
            for (int j = 0; j < count; ++j) cols[j] = panel + (c + j) * m;
            k.dots(q, cols, count, m, r.data() + kk * width + c);
          }
        });
        parallel_for(0, blocks, grain, [&](int64_t b) {  // P −= Q·R on rows [lo, hi)
          const int64_t lo = b * kRowBlock, hi = std::min(m, lo + kRowBlock);
          // Finished columns in tiles that stay in L2 while every panel column uses them; per element the
          // subtractions still run in k order (the tiles go in order, and a double store is exact).
          for (int64_t k0 = 0; k0 < j0; k0 += kColumnTile) {
            const int64_t k_count = std::min(kColumnTile, j0 - k0);
            for (int64_t c = 0; c < width; c += kGroup) {
              const int count = static_cast<int>(std::min<int64_t>(kGroup, width - c));
              double* cols[kGroup] = {};
              for (int j = 0; j < count; ++j) cols[j] = panel + (c + j) * m;
              k.subtract(a.data() + k0 * m, m, k_count, r.data() + k0 * width + c, width, cols, count, lo, hi);
            }
          }
        });
      }
    }
    std::vector<double> rp(static_cast<size_t>(width));
    for (int64_t c = 0; c < width; ++c) {
      double* v = panel + c * m;
      for (int pass = 0; pass < 2 && c > 0; ++pass) {
        for (int64_t j = 0; j < c; ++j) rp[static_cast<size_t>(j)] = dot(k, panel + j * m, v, m);
        k.subtract(panel, m, c, rp.data(), 1, &v, 1, 0, m);
      }
      const double norm = std::sqrt(dot(k, v, v, m));
      if (!(norm > 1e-300))
        throw FormatError("orthogonal init: column " + std::to_string(j0 + c) + " is linearly dependent");
      for (int64_t i = 0; i < m; ++i) v[i] /= norm;
    }
  }
}

}  // namespace hx
