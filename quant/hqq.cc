#include "quant/hqq.h"

#include <algorithm>
#include <cstring>
#include <limits>
#include <type_traits>

#include "formats/errors.h"
#include "formats/parallel.h"
#include "quant/row_vectors.h"

namespace hx {
namespace {

constexpr int kLanes = 16;  // group sums: element j of a group goes to lane j % 16

// ---- the power function ----

// Constants of x^p: p split into a 12-bit head (so that head·e is exact for any float exponent e) and the rest,
// and p / ln 2 for the logarithm's fraction part.
struct PowConstants {
  float p, p_head, p_tail, p_over_ln2;
  explicit PowConstants(float exponent) : p(exponent) {
    p_head = std::bit_cast<float>(std::bit_cast<uint32_t>(exponent) & 0xfffff800u);
    p_tail = exponent - p_head;  // exact: the low 12 bits of p
    p_over_ln2 = static_cast<float>(static_cast<double>(exponent) / 0.69314718055994530942);
  }
};

// The solver's kernels run on GCC vector extensions of 16 floats (one zmm; four xmm on the baseline ISA), the
// scalar reference on plain floats; pow_kernel is written once for both through these overloads. Vectors of 64
// bytes never cross a non-inlined call on the baseline ISA, so GCC's note about their ABI does not apply (the
// warning is switched off at the top of the file).
using F32x16 = float __attribute__((vector_size(64)));
using I32x16 = int32_t __attribute__((vector_size(64)));
static_assert(sizeof(F32x16) == kLanes * sizeof(float), "one lane per group-sum lane");

HX_QUANT_INLINE int32_t as_int(float x) { return std::bit_cast<int32_t>(x); }
HX_QUANT_INLINE I32x16 as_int(F32x16 x) { return std::bit_cast<I32x16>(x); }
HX_QUANT_INLINE float as_float(int32_t x) { return std::bit_cast<float>(x); }
HX_QUANT_INLINE F32x16 as_float(I32x16 x) { return std::bit_cast<F32x16>(x); }
HX_QUANT_INLINE float to_float(int32_t x) { return static_cast<float>(x); }
HX_QUANT_INLINE F32x16 to_float(I32x16 x) { return __builtin_convertvector(x, F32x16); }
HX_QUANT_INLINE int32_t to_int(float x) { return static_cast<int32_t>(x); }
HX_QUANT_INLINE I32x16 to_int(F32x16 x) { return __builtin_convertvector(x, I32x16); }
template <typename T>
HX_QUANT_INLINE T where(bool mask, T a, T b) { return mask ? a : b; }
template <typename T>
HX_QUANT_INLINE T where(I32x16 mask, T a, T b) { return mask ? a : b; }
template <typename F>
HX_QUANT_INLINE F splat(float v) { return F{} + v; }  // float, or the vector of 16 copies
template <typename I>
HX_QUANT_INLINE I splat_int(int32_t v) { return I{} + v; }

// x^p = 2^(p·log2 x) with log2 x = e + ln(m)/ln 2, m ∈ (√½, √2]: ln(m) = 2·atanh(t), t = (m−1)/(m+1), by its odd
// series; p·e is split (head·e exact) so that the integer part n of the exponent is taken without error, and 2^g
// for the remaining |g| ≲ 0.52 comes from e^(g·ln 2)'s Taylor series to degree 7. Float arithmetic without
// branches, so the solver vectorises around it.
template <typename F>
HX_QUANT_INLINE F pow_kernel(F x, const PowConstants& k) {
  using I = decltype(as_int(x));
  const auto tiny = x < 0x1p-126f;  // zero and subnormals: scale into the normal range first
  const F xs = where(tiny, x * 0x1p23f, x);
  const I bits = as_int(xs);
  I e = ((bits >> 23) & 0xff) - 127 - where(tiny, splat_int<I>(23), splat_int<I>(0));
  F m = as_float((bits & 0x007fffff) | 0x3f800000);
  const auto upper = m > 1.41421356f;
  m = where(upper, m * 0.5f, m);
  e = where(upper, e + 1, e);
  const F f = m - 1.0f;  // exact
  const F t = f / (2.0f + f);
  const F t2 = t * t;
  const F series = ((((t2 * (1.0f / 11) + 1.0f / 9) * t2 + 1.0f / 7) * t2 + 1.0f / 5) * t2 + 1.0f / 3) * t2;
  const F ln_m = 2.0f * t + 2.0f * t * series;
  const F ef = to_float(e);
  const F head = k.p_head * ef;  // exact
  const F rest = k.p_tail * ef + k.p_over_ln2 * ln_m;
  const F n = round_half_even_small(head + rest);
  const F g = (head - n) + rest;  // head − n exact
  const F u = g * 0.69314718f;
  const F poly =
      ((((((u * (1.0f / 5040) + 1.0f / 720) * u + 1.0f / 120) * u + 1.0f / 24) * u + 1.0f / 6) * u + 0.5f) * u + 1.0f) * u + 1.0f;
  const F two_n = as_float((to_int(n) + 127) << 23);
  return where(x == 0.0f, splat<F>(std::numeric_limits<float>::infinity()), poly * two_n);
}

// ---- the solver, 16 lanes at a time ----

HX_QUANT_INLINE F32x16 load16(const float* p) {
  F32x16 v;
  std::memcpy(&v, p, sizeof(v));
  return v;
}

// 16 bf16 values widened in registers (a bf16 is the high half of an f32): the solver reads BF16 rows directly
// instead of converting each row again in every iteration.
using U16x16 = uint16_t __attribute__((vector_size(32)));
HX_QUANT_INLINE F32x16 load16(const uint16_t* p) {
  U16x16 h;
  std::memcpy(&h, p, sizeof(h));
  // Each bf16 interleaved above a zero half: one vpermi2w on AVX-512 (a conversion to 32-bit lanes and a shift take
  // five instructions there with GCC 12).
  const U16x16 zeros = {};
  return std::bit_cast<F32x16>(__builtin_shufflevector(zeros, h, 0, 16, 1, 17, 2, 18, 3, 19, 4, 20, 5, 21, 6, 22, 7, 23,
                                                       8, 24, 9, 25, 10, 26, 11, 27, 12, 28, 13, 29, 14, 30, 15, 31));
}

HX_QUANT_INLINE F32x16 abs16(F32x16 x) { return as_float(as_int(x) & 0x7fffffff); }

// clamp(round_half_even(w·s' + z), 0, 15), computed as round_half_even(clamp(w·s' + z, 0, 15)): rounding is
// monotonic and 0 and 15 are integers, so both give the same integer. (Negative values clamp to +0; a −0 code
// needs w·s' + z to be −0 exactly, and dequantizes to the same value as +0.)
HX_QUANT_INLINE F32x16 quantize_codes16(F32x16 w, float multiplier, float zero) {
  F32x16 v = w * multiplier + zero;
  v = where(v < 0.0f, splat<F32x16>(0.0f), where(v > 15.0f, splat<F32x16>(15.0f), v));
  return round_half_even_small(v);
}

// The sum of 16 float lanes in double, in a fixed tree: lane l + lane l+8, then l + l+4, l + l+2, l + l+1. The
// reference folds its lane arrays in the same order (fold_lanes), so both paths give the same bits.
using F64x8 = double __attribute__((vector_size(64)));
using F64x4 = double __attribute__((vector_size(32)));
using F64x2 = double __attribute__((vector_size(16)));
using F32x8 = float __attribute__((vector_size(32)));

HX_QUANT_INLINE double fold16(F32x16 v) {
  const F32x8 lo = __builtin_shufflevector(v, v, 0, 1, 2, 3, 4, 5, 6, 7);
  const F32x8 hi = __builtin_shufflevector(v, v, 8, 9, 10, 11, 12, 13, 14, 15);
  const F64x8 a = __builtin_convertvector(lo, F64x8) + __builtin_convertvector(hi, F64x8);
  const F64x4 b = __builtin_shufflevector(a, a, 0, 1, 2, 3) + __builtin_shufflevector(a, a, 4, 5, 6, 7);
  const F64x2 c = __builtin_shufflevector(b, b, 0, 1) + __builtin_shufflevector(b, b, 2, 3);
  return c[0] + c[1];
}

// Whether any lane of a comparison result is set: an OR tree of the halves (a loop over lanes would extract them
// one by one).
using I32x8 = int32_t __attribute__((vector_size(32)));
using I32x4 = int32_t __attribute__((vector_size(16)));
HX_QUANT_INLINE bool any_lane(I32x16 mask) {
  const I32x8 a = __builtin_shufflevector(mask, mask, 0, 1, 2, 3, 4, 5, 6, 7) |
                  __builtin_shufflevector(mask, mask, 8, 9, 10, 11, 12, 13, 14, 15);
  const I32x4 b = __builtin_shufflevector(a, a, 0, 1, 2, 3) | __builtin_shufflevector(a, a, 4, 5, 6, 7);
  return (b[0] | b[1] | b[2] | b[3]) != 0;
}

// table[index[l]] for each lane (one vpermps on AVX-512). GCC has a builtin for a variable shuffle; clang (the
// fuzz/sanitizer build) lacks it, and its loop form vectorises to the same permute.
HX_QUANT_INLINE F32x16 lookup16(F32x16 table, I32x16 index) {
#if defined(__clang__)
  F32x16 r;
  for (int l = 0; l < kLanes; ++l) r[l] = table[index[l] & 15];
  return r;
#else
  return __builtin_shuffle(table, index);
#endif
}

// Below this |d| no lane can shrink: |d| − |d|^p/β > 0 exactly when |d| > β^(−1/(1−p)) (p = lp − 1 < 0), and 0.1 %
// below that bound the difference is negative by far more than pow's and the products' rounding, so relu gives 0
// whether or not the power is evaluated. For trained weights |d| (at most half a quantization step) is almost
// always far below it (≈ 0.17 for β = 10), so the kernel skips the power for a whole vector when it may; the
// reference always evaluates it, and the two agree bit for bit.
float shrink_threshold(float beta_inverse, float exponent) {
  return static_cast<float>(std::pow(static_cast<double>(beta_inverse), 1.0 / (1.0 - static_cast<double>(exponent))) * 0.999);
}

// The group means of up to 8 groups at once: for each group, its 16 lanes folded in double by fold16's tree
// (a[i] = l[i] + l[i+8], b[i] = a[i] + a[i+4], c[i] = b[i] + b[i+2], c[0] + c[1]) and divided by the group size —
// the same additions of the same operands as fold16, lane by lane, with the groups side by side in the vectors
// (8 groups cost about as much as 2 folds one at a time). Writes `count` (≤ 8) means to `out`.
HX_QUANT_INLINE void group_means8(const F32x16 sums[8], int count, int group_size, float* out) {
  F64x8 a[8];
  for (int g = 0; g < 8; ++g) {
    const F32x8 lo = __builtin_shufflevector(sums[g], sums[g], 0, 1, 2, 3, 4, 5, 6, 7);
    const F32x8 hi = __builtin_shufflevector(sums[g], sums[g], 8, 9, 10, 11, 12, 13, 14, 15);
    a[g] = __builtin_convertvector(lo, F64x8) + __builtin_convertvector(hi, F64x8);
  }
  F64x8 b[4];  // groups 2i and 2i+1: their b[0..3] side by side
  for (int i = 0; i < 4; ++i)
    b[i] = __builtin_shufflevector(a[2 * i], a[2 * i + 1], 0, 1, 2, 3, 8, 9, 10, 11) +
           __builtin_shufflevector(a[2 * i], a[2 * i + 1], 4, 5, 6, 7, 12, 13, 14, 15);
  F64x8 c[2];  // groups 4i .. 4i+3: their c[0..1]
  for (int i = 0; i < 2; ++i)
    c[i] = __builtin_shufflevector(b[2 * i], b[2 * i + 1], 0, 1, 4, 5, 8, 9, 12, 13) +
           __builtin_shufflevector(b[2 * i], b[2 * i + 1], 2, 3, 6, 7, 10, 11, 14, 15);
  const F64x8 total = __builtin_shufflevector(c[0], c[1], 0, 2, 4, 6, 8, 10, 12, 14) +
                      __builtin_shufflevector(c[0], c[1], 1, 3, 5, 7, 9, 11, 13, 15);
  const F32x8 means = __builtin_convertvector(total / static_cast<double>(group_size), F32x8);
  std::memcpy(out, &means, static_cast<size_t>(count) * sizeof(float));
}

// One solver iteration over the groups of one row: updates `zero` in place, returns Σ|W − W_r| of the row (summed
// in 16 float lanes over the whole row — lane = column % 16 — and folded once; it only decides when to stop).
// Each group is first computed as if nothing shrinks (W_e = 0, so W − W_e = W exactly); only when its largest |d|
// reaches the threshold is it computed again with the shrink (see shrink_threshold). Groups go 8 at a time: one
// threshold test for the 8 (each group tested on its own only when one of them reaches it) and one fold for their
// means (group_means8); a group's new zero is stored after the batch, since the shrink pass still needs the old one.
template <typename In>  // float, or uint16_t for BF16 bits
HX_QUANT_INLINE double row_iteration_kernel(const In* x, int64_t cols, int group_size, const float* multiplier,
                                            float* zero, float beta_inverse, float threshold, const PowConstants& k) {
  constexpr int kBatch = 8;
  const F32x16 all_codes = {0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15};
  F32x16 error_lanes = {};
  const int64_t groups = cols / group_size;
  for (int64_t g0 = 0; g0 < groups; g0 += kBatch) {
    const int count = static_cast<int>(std::min<int64_t>(kBatch, groups - g0));
    F32x16 zero_lanes[kBatch] = {}, largest[kBatch] = {}, largest_of_batch = {};
    for (int b = 0; b < count; ++b) {
      const float s = multiplier[g0 + b], z = zero[g0 + b];
      const In* xg = x + (g0 + b) * group_size;
      // W_r = (W_q − z) / s' takes one of 16 values per group: divide once per group (the same quotients, so the
      // same bits), then look each one up by its code (one vpermps on AVX-512).
      const F32x16 dequantized = (all_codes - z) / s;
      F32x16 sum = {}, top = {};
      for (int j = 0; j < group_size; j += kLanes) {
        const F32x16 w = load16(xg + j);
        const F32x16 wq = quantize_codes16(w, s, z);
        const F32x16 ad = abs16(w - lookup16(dequantized, to_int(wq)));
        error_lanes += ad;
        top = where(ad > top, ad, top);
        sum += wq - w * s;
      }
      zero_lanes[b] = sum;
      largest[b] = top;
      largest_of_batch = where(top > largest_of_batch, top, largest_of_batch);
    }
    if (any_lane(largest_of_batch >= threshold)) {  // rare: the groups that reach it again, with the shrink
      for (int b = 0; b < count; ++b) {
        if (!any_lane(largest[b] >= threshold)) continue;
        const float s = multiplier[g0 + b], z = zero[g0 + b];
        const In* xg = x + (g0 + b) * group_size;
        const F32x16 dequantized = (all_codes - z) / s;
        F32x16 sum = {};
        for (int j = 0; j < group_size; j += kLanes) {
          const F32x16 w = load16(xg + j);
          const F32x16 wq = quantize_codes16(w, s, z);
          const F32x16 d = w - lookup16(dequantized, to_int(wq));
          F32x16 shrunk = abs16(d) - beta_inverse * pow_kernel(abs16(d), k);
          shrunk = where(shrunk > 0.0f, shrunk, splat<F32x16>(0.0f));
          const F32x16 we = as_float(as_int(shrunk) | (as_int(d) & int32_t(0x80000000u)));  // sign(d)·relu(…)
          sum += wq - (w - we) * s;
        }
        zero_lanes[b] = sum;
      }
    }
    group_means8(zero_lanes, count, group_size, zero + g0);
  }
  return fold16(error_lanes);
}

template <typename In>
double row_iteration_generic(const In* x, int64_t cols, int gs, const float* mult, float* zero, float bi,
                             float threshold, const PowConstants& k) {
  return row_iteration_kernel(x, cols, gs, mult, zero, bi, threshold, k);
}
template <typename In>
HX_QUANT_AVX512 double row_iteration_avx512(const In* x, int64_t cols, int gs, const float* mult, float* zero,
                                            float bi, float threshold, const PowConstants& k) {
  return row_iteration_kernel(x, cols, gs, mult, zero, bi, threshold, k);
}

// The reference's fold of its lane arrays: the tree of fold16, one element at a time.
double fold_lanes(const float lanes[kLanes]) {
  double a[8], b[4], c[2];
  for (int i = 0; i < 8; ++i) a[i] = static_cast<double>(lanes[i]) + static_cast<double>(lanes[i + 8]);
  for (int i = 0; i < 4; ++i) b[i] = a[i] + a[i + 4];
  for (int i = 0; i < 2; ++i) c[i] = b[i] + b[i + 2];
  return c[0] + c[1];
}

struct GroupInit {
  float multiplier, zero;
};

HX_QUANT_INLINE GroupInit init_group(float mn, float mx) {
  mn += 0.0f;  // −0 → +0 (see hqq.h)
  mx += 0.0f;
  const float denom = mx - mn;
  float s = (1.0f / denom) * 15.0f;
  if (std::fabs(denom) <= 1e-4f) s = 1.0f;
  s = std::min(s, 2e4f);
  return {s, round_half_even(-mn * s) + 0.0f};
}

// ---- initialisation and encoding kernels ----

// Min and max per group (16 lanes, then the lanes), and the initial parameters; x is the stored row (BF16) or f32.
template <typename In>
HX_QUANT_INLINE void row_init_kernel(const In* x, int64_t cols, int group_size, float* multiplier, float* zero) {
  for (int64_t g = 0; g < cols / group_size; ++g) {
    const In* xg = x + g * group_size;
    F32x16 mn = load16(xg), mx = mn;
    for (int j = kLanes; j < group_size; j += kLanes) {
      const F32x16 v = load16(xg + j);
      mn = where(v < mn, v, mn);
      mx = where(v > mx, v, mx);
    }
    float lo = mn[0], hi = mx[0];
    for (int l = 1; l < kLanes; ++l) {
      lo = std::min(lo, mn[l]);
      hi = std::max(hi, mx[l]);
    }
    const GroupInit init = init_group(lo, hi);
    multiplier[g] = init.multiplier;
    zero[g] = init.zero;
  }
}

template <typename In>
void row_init_generic(const In* x, int64_t cols, int gs, float* mult, float* zero) {
  row_init_kernel(x, cols, gs, mult, zero);
}
template <typename In>
HX_QUANT_AVX512 void row_init_avx512(const In* x, int64_t cols, int gs, float* mult, float* zero) {
  row_init_kernel(x, cols, gs, mult, zero);
}

// Codes of one row and its error statistics (rowvec::ErrorLanes: the figures of row_error()), fused: kPacked stores
// the portable layout (two codes per byte, the even column in the low nibble), otherwise one code per byte.
// The code's integer comes from the bits of q + 1.5·2^23 (q is integral): a float→int conversion followed by the
// byte store would be folded into a float→uint8 one, which GCC does not vectorise.
template <bool kPacked, typename In>
HX_QUANT_INLINE ErrorStats row_encode_kernel(const In* x, int64_t cols, int group_size, const float* multiplier,
                                             const float* zero, const float* scale, uint8_t* out) {
  using U8x16 = uint8_t __attribute__((vector_size(16)));
  using U16x8 = uint16_t __attribute__((vector_size(16)));
  using U8x8 = uint8_t __attribute__((vector_size(8)));
  using U32x16 = uint32_t __attribute__((vector_size(64)));
  constexpr float kMagic = 12582912.0f;  // 1.5 · 2^23
  rowvec::ErrorLanes lanes;
  for (int64_t g = 0; g < cols / group_size; ++g) {
    const float s = multiplier[g], z = zero[g], inv = scale[g];
    for (int j = 0; j < group_size; j += kLanes) {
      const int64_t i = g * group_size + j;
      const F32x16 w = load16(x + i);
      const F32x16 q = quantize_codes16(w, s, z);
      lanes.add(w, (q - z) * inv);
      const U8x16 codes = __builtin_convertvector(std::bit_cast<U32x16>(q + kMagic) - std::bit_cast<uint32_t>(kMagic), U8x16);
      if constexpr (kPacked) {
        const U16x8 pairs = std::bit_cast<U16x8>(codes);  // code 2j in the low byte, 2j+1 in the high one
        const U8x8 bytes = __builtin_convertvector((pairs & 0x0f) | ((pairs >> 4) & 0xf0), U8x8);
        std::memcpy(out + i / 2, &bytes, sizeof bytes);
      } else {
        std::memcpy(out + i, &codes, sizeof codes);
      }
    }
  }
  return lanes.finish(cols);
}

template <bool kPacked, typename In>
ErrorStats row_encode_generic(const In* x, int64_t cols, int gs, const float* mult, const float* zero,
                              const float* scale, uint8_t* out) {
  return row_encode_kernel<kPacked>(x, cols, gs, mult, zero, scale, out);
}
template <bool kPacked, typename In>
HX_QUANT_AVX512 ErrorStats row_encode_avx512(const In* x, int64_t cols, int gs, const float* mult, const float* zero,
                                             const float* scale, uint8_t* out) {
  return row_encode_kernel<kPacked>(x, cols, gs, mult, zero, scale, out);
}

// Rows [row_begin, row_end) encoded: row row_begin + i to out + i·cols (codes) or out + i·cols/2 (packed).
template <bool kPacked>
ErrorStats encode_rows(const FloatRows& w, const HqqFit& fit, int64_t row_begin, int64_t row_end, uint8_t* out) {
  const bool avx512 = quant_use_avx512();
  const int64_t groups_per_row = fit.groups_per_row();
  const int64_t out_row_bytes = kPacked ? w.cols() / 2 : w.cols();
  return rowvec::for_each_stored_row(w, row_begin, row_end, [&](int64_t r, const auto* x) {
    using In = std::remove_cv_t<std::remove_pointer_t<decltype(x)>>;
    const size_t first = static_cast<size_t>(r * groups_per_row);
    return (avx512 ? row_encode_avx512<kPacked, In> : row_encode_generic<kPacked, In>)(
        x, w.cols(), fit.group_size, &fit.multiplier[first], &fit.zero[first], &fit.scale[first],
        out + (r - row_begin) * out_row_bytes);
  });
}

void check_group_size(const FloatRows& w, int group_size) {
  if (!hqq_group_size_ok(group_size))
    throw UsageError("int4 group size " + std::to_string(group_size) + " is not one of 32, 64, 128, 256");
  if (w.cols() % group_size != 0)
    throw UsageError(w.label() + ": int4 group size " + std::to_string(group_size) + " does not divide in = " +
                     std::to_string(w.cols()));
}

HqqFit empty_fit(const FloatRows& w, int group_size) {
  HqqFit fit;
  fit.rows = w.rows();
  fit.cols = w.cols();
  fit.group_size = group_size;
  const size_t groups = static_cast<size_t>(w.rows() * (w.cols() / group_size));
  fit.multiplier.resize(groups);
  fit.zero.resize(groups);
  return fit;
}

void finish_fit(HqqFit* fit) {
  fit->scale.resize(fit->multiplier.size());
  for (size_t i = 0; i < fit->multiplier.size(); ++i) fit->scale[i] = 1.0f / fit->multiplier[i];
}

}  // namespace

bool hqq_group_size_ok(int group_size) {
  return group_size == 32 || group_size == 64 || group_size == 128 || group_size == 256;
}

float hqq_pow(float x, float exponent) { return pow_kernel(x, PowConstants(exponent)); }

// ---- scalar reference: the tensor-wide steps of hqq, one group and one element at a time ----

uint8_t hqq_encode_reference(float w, float multiplier, float zero) {
  const float q = round_half_even(w * multiplier + zero);
  return static_cast<uint8_t>(std::clamp(q, 0.0f, static_cast<float>(kHqqMaxCode)));
}

HqqFit hqq_fit_reference(const FloatRows& w, const HqqOptions& options) {
  check_group_size(w, options.group_size);
  const int gs = options.group_size;
  HqqFit fit = empty_fit(w, gs);
  const int64_t groups_per_row = w.cols() / gs;
  std::vector<float> x(static_cast<size_t>(w.cols()));
  auto group_values = [&](int64_t group) {  // W of one group (the row is re-read; this is the slow path)
    w.read_row(group / groups_per_row, x.data());
    return x.data() + (group % groups_per_row) * gs;
  };
  const int64_t groups = static_cast<int64_t>(fit.zero.size());
  for (int64_t g = 0; g < groups; ++g) {
    const float* v = group_values(g);
    finite_abs_max(v, gs, w, g / groups_per_row);
    const GroupInit init = init_group(*std::min_element(v, v + gs), *std::max_element(v, v + gs));
    fit.multiplier[static_cast<size_t>(g)] = init.multiplier;
    fit.zero[static_cast<size_t>(g)] = init.zero;
  }
  if (options.optimize) {
    const PowConstants k(static_cast<float>(options.lp_norm - 1.0));
    double beta = options.beta, best = 1e4;
    const double count = static_cast<double>(w.rows()) * static_cast<double>(w.cols());
    for (int it = 0; it < options.max_iterations; ++it) {
      const float beta_inverse = static_cast<float>(1.0 / beta);
      double total = 0;
      for (int64_t row = 0; row < w.rows(); ++row) {
        float error_lane[kLanes] = {};  // Σ|W − W_r| of the row, lane = column % 16
        for (int64_t g = row * groups_per_row; g < (row + 1) * groups_per_row; ++g) {
          const float* v = group_values(g);
          const float s = fit.multiplier[static_cast<size_t>(g)], z = fit.zero[static_cast<size_t>(g)];
          float zero_lane[kLanes] = {};
          for (int j = 0; j < gs; ++j) {
            // W_q, W_r, W_e and the mean's term, op by op as hqq writes them.
            const float wq = std::clamp(round_half_even(v[j] * s + z), 0.0f, static_cast<float>(kHqqMaxCode));
            const float wr = (wq - z) / s;
            const float d = v[j] - wr;
            const float shrunk = std::max(std::fabs(d) - beta_inverse * hqq_pow(std::fabs(d), k.p), 0.0f);
            const float we = d > 0 ? shrunk : (d < 0 ? -shrunk : 0.0f);
            error_lane[j % kLanes] += std::fabs(d);
            zero_lane[j % kLanes] += wq - (v[j] - we) * s;
          }
          fit.zero[static_cast<size_t>(g)] = static_cast<float>(fold_lanes(zero_lane) / gs);
        }
        total += fold_lanes(error_lane);
      }
      beta *= options.kappa;
      const double error = total / count;
      fit.mean_abs_error.push_back(error);
      ++fit.iterations;
      if (error < best)
        best = error;
      else
        break;  // after the update, as hqq's legacy solver does
    }
  }
  finish_fit(&fit);
  return fit;
}

void hqq_encode_rows_reference(const FloatRows& w, const HqqFit& fit, int64_t row_begin, int64_t row_end,
                               uint8_t* codes) {
  std::vector<float> x(static_cast<size_t>(w.cols()));
  const int64_t groups_per_row = fit.groups_per_row();
  for (int64_t r = row_begin; r < row_end; ++r) {
    w.read_row(r, x.data());
    for (int64_t c = 0; c < w.cols(); ++c) {
      const size_t g = static_cast<size_t>(r * groups_per_row + c / fit.group_size);
      codes[(r - row_begin) * w.cols() + c] = hqq_encode_reference(x[static_cast<size_t>(c)], fit.multiplier[g], fit.zero[g]);
    }
  }
}

// ---- fast path ----

HqqFit hqq_fit(const FloatRows& w, const HqqOptions& options) {
  check_group_size(w, options.group_size);
  const int gs = options.group_size;
  HqqFit fit = empty_fit(w, gs);
  const int64_t groups_per_row = w.cols() / gs;
  const bool avx512 = quant_use_avx512();
  rowvec::for_each_stored_row(w, 0, w.rows(), [&](int64_t r, const auto* x) {
    using In = std::remove_cv_t<std::remove_pointer_t<decltype(x)>>;
    rowvec::checked_abs_max(rowvec::max_abs_bits(x, w.cols()), w, r);  // refuses inf/NaN, naming row and column
    const size_t first = static_cast<size_t>(r * groups_per_row);
    (avx512 ? row_init_avx512<In> : row_init_generic<In>)(x, w.cols(), gs, &fit.multiplier[first], &fit.zero[first]);
    return ErrorStats{};
  });
  if (options.optimize) {
    const PowConstants k(static_cast<float>(options.lp_norm - 1.0));
    double beta = options.beta, best = 1e4;
    const double count = static_cast<double>(w.rows()) * static_cast<double>(w.cols());
    std::vector<double> row_error(static_cast<size_t>(w.rows()));
    for (int it = 0; it < options.max_iterations; ++it) {
      const float beta_inverse = static_cast<float>(1.0 / beta);
      const float threshold = shrink_threshold(beta_inverse, k.p);
      // BF16 rows straight from storage; each row's error lands in its own slot (summed below in row order).
      rowvec::for_each_stored_row(w, 0, w.rows(), [&](int64_t r, const auto* x) {
        using In = std::remove_cv_t<std::remove_pointer_t<decltype(x)>>;
        const size_t first = static_cast<size_t>(r * groups_per_row);
        row_error[static_cast<size_t>(r)] = (avx512 ? row_iteration_avx512<In> : row_iteration_generic<In>)(
            x, w.cols(), gs, &fit.multiplier[first], &fit.zero[first], beta_inverse, threshold, k);
        return ErrorStats{};
      });
      double total = 0;
      for (double e : row_error) total += e;  // row order: independent of the thread count
      beta *= options.kappa;
      const double error = total / count;
      fit.mean_abs_error.push_back(error);
      ++fit.iterations;
      if (error < best)
        best = error;
      else
        break;
    }
  }
  finish_fit(&fit);
  return fit;
}

ErrorStats hqq_encode_rows(const FloatRows& w, const HqqFit& fit, int64_t row_begin, int64_t row_end, uint8_t* codes) {
  return encode_rows<false>(w, fit, row_begin, row_end, codes);
}

ErrorStats hqq_encode_pack_rows(const FloatRows& w, const HqqFit& fit, int64_t row_begin, int64_t row_end,
                                uint8_t* packed) {
  return encode_rows<true>(w, fit, row_begin, row_end, packed);
}

// ---- packings ----

void int4_pack_row(const uint8_t* codes, int64_t n, uint8_t* packed) {
  for (int64_t j = 0; j < n / 2; ++j)
    packed[j] = static_cast<uint8_t>((codes[2 * j] & 0x0f) | ((codes[2 * j + 1] & 0x0f) << 4));
}

void int4_unpack_row(const uint8_t* packed_row, int64_t col_begin, int64_t n, uint8_t* codes) {
  const uint8_t* src = packed_row + col_begin / 2;
  for (int64_t j = 0; j < n / 2; ++j) {
    codes[2 * j] = src[j] & 0x0f;
    codes[2 * j + 1] = src[j] >> 4;
  }
}

void gemlite_pack_rows(const uint8_t* codes, int64_t row_begin, int64_t row_end, int64_t rows, int64_t cols,
                       uint32_t* words) {
  for (int64_t r = row_begin; r < row_end; ++r) {
    const uint8_t* q = codes + (r - row_begin) * cols;
    for (int64_t j = 0; j < cols / 8; ++j) {
      uint32_t word = 0;
      for (int i = 0; i < 8; ++i) word |= static_cast<uint32_t>(q[8 * j + i] & 0x0f) << (4 * i);
      words[j * rows + r] = word;
    }
  }
}

uint8_t gemlite_code_at(const uint32_t* words, int64_t rows, int64_t r, int64_t c) {
  return static_cast<uint8_t>((words[(c / 8) * rows + r] >> (4 * (c % 8))) & 0x0f);
}

uint16_t gemlite_scale_bits(float scale) { return f32_to_f16(scale); }
uint16_t gemlite_offset_bits(float scale, float zero) { return f32_to_f16(-zero * scale); }

}  // namespace hx
