// The fused row kernels of the per-row-scale codecs (int8.cc, fp8.cc, fpx.cc): one pass over a row's stored values
// for its absolute maximum, one more that scales, rounds, stores the codes and sums the error statistics, 16 values
// at a time in registers — no f32 copy of the row and no dequantized row in memory.
//
// Design goals:
//  * One source for both fast paths: the kernels are written on GCC vector extensions of 16 lanes (one zmm in the
//    HX_QUANT_AVX512 compilation, four xmm in the baseline one, the same operations in the same order), so the two
//    compilations give the same bits, as codec.h asks; hxforge_quant is built with -ffp-contract=off.
//  * Equal to the scalar references bit for bit (the tests of each codec check it): the element arithmetic is that of
//    ClampedMinifloat / round_half_even_small, lane by lane.
//  * The same error statistics as row_error() (codec.cc): element i of a row goes to float lane i % 16 in column
//    order, the lanes are added in double in lane order; a padded last chunk adds exact zeros.
//  * BF16 rows (what checkpoints hold) are read where they lie and widened in registers; the absolute maximum of a
//    BF16 row is an integer maximum over its 16-bit patterns (sign cleared), 32 values per zmm.
// Non-goals: hand-written intrinsics (the compiler's vector code is within a few percent of them here and stays
// portable to clang, which builds the sanitizer and fuzz targets); HQQ (hqq.cc has its own group kernels).
//
// Internal to quant/ (and its tests). The vectors live only inside always-inlined kernels, so GCC's -Wpsabi note
// about passing 64-byte vectors between functions concerns no interface (CMakeLists.txt silences it).
#pragma once

#include <algorithm>
#include <bit>
#include <cstdint>
#include <cstring>
#include <vector>

#include "quant/codec.h"

namespace hx::rowvec {

constexpr int kLanes = 16;
using F32x16 = float __attribute__((vector_size(64)));
using I32x16 = int32_t __attribute__((vector_size(64)));
using U32x16 = uint32_t __attribute__((vector_size(64)));
using U16x16 = uint16_t __attribute__((vector_size(32)));
using U8x16 = uint8_t __attribute__((vector_size(16)));
using I8x16 = int8_t __attribute__((vector_size(16)));
static_assert(sizeof(F32x16) == kLanes * sizeof(float) && sizeof(U8x16) == kLanes, "16 lanes");

HX_QUANT_INLINE F32x16 splat(float v) { return F32x16{} + v; }
HX_QUANT_INLINE F32x16 where(I32x16 mask, F32x16 a, F32x16 b) { return mask ? a : b; }
HX_QUANT_INLINE U32x16 where(I32x16 mask, U32x16 a, U32x16 b) { return mask ? a : b; }
HX_QUANT_INLINE F32x16 abs16(F32x16 x) {
  return std::bit_cast<F32x16>(std::bit_cast<U32x16>(x) & 0x7fffffffu);
}

// 16 stored values as f32: F32 copied, BF16 widened (a bf16 is the high half of an f32).
HX_QUANT_INLINE F32x16 load16(const float* p) {
  F32x16 v;
  std::memcpy(&v, p, sizeof v);
  return v;
}
HX_QUANT_INLINE F32x16 load16(const uint16_t* p) {
  U16x16 h;
  std::memcpy(&h, p, sizeof h);
  // Each bf16 interleaved above a zero half: one vpermi2w on AVX-512 (a conversion to 32-bit lanes and a shift take
  // five instructions there with GCC 12).
  const U16x16 zeros = {};
  return std::bit_cast<F32x16>(__builtin_shufflevector(zeros, h, 0, 16, 1, 17, 2, 18, 3, 19, 4, 20, 5, 21, 6, 22, 7, 23,
                                                       8, 24, 9, 25, 10, 26, 11, 27, 12, 28, 13, 29, 14, 30, 15, 31));
}
// The last n < 16 values of a row, the other lanes zero.
template <typename In>
HX_QUANT_INLINE F32x16 load_partial16(const In* p, int64_t n) {
  In padded[kLanes] = {};
  std::memcpy(padded, p, static_cast<size_t>(n) * sizeof(In));
  return load16(padded);
}

// The largest |x| of a row as f32 bits (integer order of the patterns with the sign cleared is the order of |x| for
// finite values, and every inf/NaN lies above 0x7f800000); codec.cc's finite_abs_max does the same on f32 rows.
HX_QUANT_INLINE uint32_t max_abs_bits(const uint16_t* x, int64_t n) {
  uint16_t max_bits = 0;
  for (int64_t i = 0; i < n; ++i) {
    const uint16_t a = static_cast<uint16_t>(x[i] & 0x7fffu);
    max_bits = a > max_bits ? a : max_bits;
  }
  return static_cast<uint32_t>(max_bits) << 16;
}
HX_QUANT_INLINE uint32_t max_abs_bits(const float* x, int64_t n) {
  uint32_t max_bits = 0;
  for (int64_t i = 0; i < n; ++i) {
    const uint32_t a = std::bit_cast<uint32_t>(x[i]) & 0x7fffffffu;
    max_bits = a > max_bits ? a : max_bits;
  }
  return max_bits;
}

// row_error()'s statistics, one lane per column % 16.
struct ErrorLanes {
  F32x16 abs_sum{}, sq_err{}, sq_ref{}, max_err{};

  HX_QUANT_INLINE void add(F32x16 reference, F32x16 approx) {
    const F32x16 e = approx - reference;
    const F32x16 a = abs16(e);
    abs_sum += a;
    sq_err += e * e;
    sq_ref += reference * reference;
    max_err = where(max_err > a, max_err, a);
  }
  HX_QUANT_INLINE ErrorStats finish(int64_t n) const {
    ErrorStats s;
    s.count = static_cast<uint64_t>(n);
    for (int l = 0; l < kLanes; ++l) {
      s.sum_abs_error += abs_sum[l];
      s.sum_squared_error += sq_err[l];
      s.sum_squared_reference += sq_ref[l];
      s.max_abs_error = std::max(s.max_abs_error, static_cast<double>(max_err[l]));
    }
    return s;
  }
};

template <int kExpBits, int kManBits, int kBias>
constexpr int code_sign_shift(const ClampedMinifloat<kExpBits, kManBits, kBias>*) {
  return 31 - kExpBits - kManBits;  // moves the f32 sign bit to the code's
}

// ClampedMinifloat::encode on 16 lanes (the same steps; |x| ≤ max finite, x finite): the codes, and the values they
// decode to in *rounded.
template <class Encoder>
HX_QUANT_INLINE U32x16 minifloat_encode16(F32x16 x, F32x16* rounded) {
  constexpr int kShift = Encoder::kShift;
  const U32x16 u = std::bit_cast<U32x16>(x);
  const U32x16 sign = u & 0x80000000u;
  const U32x16 a = u & 0x7fffffffu;
  const F32x16 sum = std::bit_cast<F32x16>(a) + Encoder::kSubnormalMagic;
  const U32x16 sub_code = std::bit_cast<U32x16>(sum) - std::bit_cast<uint32_t>(Encoder::kSubnormalMagic);
  const F32x16 sub_value = sum - Encoder::kSubnormalMagic;
  U32x16 v = a - Encoder::kRebias;
  v += (1u << (kShift - 1)) - 1 + ((v >> kShift) & 1u);
  const U32x16 normal_code = v >> kShift;
  const F32x16 normal_value = std::bit_cast<F32x16>((normal_code << kShift) + Encoder::kRebias);
  const I32x16 subnormal = a < Encoder::kMinNormalBits;
  const U32x16 magnitude = where(subnormal, sub_code, normal_code);
  const F32x16 value = where(subnormal, sub_value, normal_value);
  *rounded = std::bit_cast<F32x16>(std::bit_cast<U32x16>(value) | sign);
  constexpr int kSignShift = code_sign_shift(static_cast<const Encoder*>(nullptr));
  return magnitude | (sign >> kSignShift);
}

// Runs one row through a chunk encoder: encode(x16, &codes16) returns the 16 dequantized values and sets the codes;
// store(i, codes16, count) writes the codes of columns [i, i + count). Returns the row's error statistics. Both are
// function objects whose operator() is HX_QUANT_INLINE (a lambda's would be compiled for the baseline ISA whenever
// GCC chose not to inline it).
template <typename In, typename Encode, typename Store>
HX_QUANT_INLINE ErrorStats encode_row(const In* x, int64_t n, Encode&& encode, Store&& store) {
  ErrorLanes lanes;
  int64_t i = 0;
  for (; i + kLanes <= n; i += kLanes) {
    const F32x16 v = load16(x + i);
    U32x16 codes;
    lanes.add(v, encode(v, &codes));
    store(i, codes, kLanes);
  }
  if (i < n) {  // zeros in the unused lanes: they encode to code 0 and add exact zeros to the statistics
    const F32x16 v = load_partial16(x + i, n - i);
    U32x16 codes;
    lanes.add(v, encode(v, &codes));
    store(i, codes, n - i);
  }
  return lanes.finish(n);
}

// The store of encode_row that keeps the low byte of each code: one byte per column at `codes`.
struct StoreCodeBytes {
  uint8_t* codes;
  HX_QUANT_INLINE void operator()(int64_t i, U32x16 c, int64_t count) const {
    const U8x16 bytes = __builtin_convertvector(c, U8x16);
    if (count == kLanes)
      std::memcpy(codes + i, &bytes, sizeof bytes);
    else
      std::memcpy(codes + i, &bytes, static_cast<size_t>(count));
  }
};

// The encoder of the minifloat codecs: x / scale clamped to ±max, rounded by ClampedMinifloat; dequantized with the
// scale as stored (FPx stores it rounded to the weights' dtype).
template <class Encoder>
struct MinifloatChunk {
  float scale, stored_scale, max_finite;
  HX_QUANT_INLINE F32x16 operator()(F32x16 v, U32x16* codes) const {
    v = v / scale;
    v = where(v < -max_finite, splat(-max_finite), where(v > max_finite, splat(max_finite), v));
    F32x16 rounded;
    *codes = minifloat_encode16<Encoder>(v, &rounded);
    return rounded * stored_scale;
  }
};

// Rows per task of for_each_stored_row: ~64 K weights (tens of microseconds), so that tasks are handed out
// dynamically — on a machine shared with other work, a thread that was descheduled for a while does not hold up the
// other, which takes the remaining tasks — while the cost of handing one out stays negligible.
inline int64_t rows_per_task(int64_t cols) { return std::max<int64_t>(1, (int64_t{1} << 16) / std::max<int64_t>(cols, 1)); }

// Row driver of the fused kernels: row_fn(r, row) for every r in [row_begin, row_end) on the OpenMP team, where
// `row` is the stored BF16 row (const uint16_t*) or, for F32/F16 matrices and misaligned BF16 rows, an f32 copy
// (const float*, thread-local);
// merges the ErrorStats row_fn returns in row order (independent of the thread count and of which thread ran which
// task), as for_each_row does.
template <typename RowFn>
ErrorStats for_each_stored_row(const FloatRows& w, int64_t row_begin, int64_t row_end, RowFn&& row_fn) {
  const int64_t count = std::max<int64_t>(row_end - row_begin, 0);
  std::vector<ErrorStats> per_row(static_cast<size_t>(count));
  const int64_t per_task = rows_per_task(w.cols());
  const bool bf16 = w.dtype() == DType::kBF16;
  auto run_task = [&](int64_t task) {
    const int64_t first = row_begin + task * per_task, last = std::min(row_end, first + per_task);
    for (int64_t r = first; r < last; ++r) {
      ErrorStats& out = per_row[static_cast<size_t>(r - row_begin)];
      const std::byte* stored = w.row_bytes(r);
      // In place when 2-byte aligned; safetensors data need not be (an odd offset in a file): then via the f32 copy.
      if (bf16 && reinterpret_cast<uintptr_t>(stored) % alignof(uint16_t) == 0) {
        out = row_fn(r, reinterpret_cast<const uint16_t*>(stored));
      } else {
        thread_local std::vector<float> x;
        x.resize(static_cast<size_t>(w.cols()));
        w.read_row(r, x.data());
        out = row_fn(r, static_cast<const float*>(x.data()));
      }
    }
  };
  const int64_t tasks = (count + per_task - 1) / per_task;
  // Below ~256 K weights a team costs more than it saves.
  if (count * w.cols() < (int64_t{1} << 18)) {
    for (int64_t t = 0; t < tasks; ++t) run_task(t);
  } else {
    parallel_for_dynamic(0, tasks, run_task);
  }
  ErrorStats total;
  for (const ErrorStats& s : per_row) total.merge(s);
  return total;
}

// The row's largest |x|, refusing inf/NaN with finite_abs_max's error (which names the row and the column).
inline float checked_abs_max(uint32_t max_bits, const FloatRows& w, int64_t r) {
  if (max_bits >= 0x7f800000u) {
    std::vector<float> row(static_cast<size_t>(w.cols()));
    w.read_row(r, row.data());
    finite_abs_max(row.data(), w.cols(), w, r);  // throws
  }
  return std::bit_cast<float>(max_bits);
}

}  // namespace hx::rowvec
