// AVX-512 kernels of causal attention (see attention_internal.h for the layouts and the exact sums), compiled per
// function with target attributes; only called after cpu_supports(CpuIsa::kAvx512).
//
// Scores: one zmm holds one dimension of the block's 16 queries, so a key's 16 scores are one chain of vmulps +
// vaddps over the head dimension; 8 keys are in flight at once to hide the add latency.
// Softmax: 16 queries at once, with vector_exp.h's exponential rewritten op for op in AVX-512.
// Values: 4 queries × 64 dimensions (16 accumulators) per pass over the keys, each value row loaded once for the 4.
// Products and sums go through vector_exp_avx512.h's add/mul (no FMA contraction), so the sums stay identical to the
// portable kernels'.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wuninitialized"  // GCC bug 105593, see gemm_avx512.cc
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif
#include <immintrin.h>

#include <algorithm>

#include "verify/attention_internal.h"
#include "verify/vector_exp_avx512.h"

namespace hx::attention {
namespace {

using namespace hx::vexp512;

constexpr int kKeysInFlight = 8;
constexpr int kQueriesPerPass = 4;
constexpr int kVectorsPerPass = 4;  // 64 dimensions

template <int Keys>
HX_TARGET_AVX512 void scores_of_keys(const float* qt, const float* k, int64_t k_stride, int64_t d, float* s) {
  __m512 acc[Keys];
#pragma GCC unroll 8
  for (int j = 0; j < Keys; ++j) acc[j] = _mm512_setzero_ps();
  for (int64_t i = 0; i < d; ++i) {
    const __m512 q = _mm512_load_ps(qt + i * kQueryLanes);
#pragma GCC unroll 8
    for (int j = 0; j < Keys; ++j) acc[j] = add(acc[j], mul(q, _mm512_set1_ps(k[j * k_stride + i])));
  }
#pragma GCC unroll 8
  for (int j = 0; j < Keys; ++j) _mm512_store_ps(s + j * kQueryLanes, acc[j]);
}

HX_TARGET_AVX512 void scores(const float* qt, const float* k, int64_t k_stride, int64_t keys, int64_t d, float* s) {
  int64_t j = 0;
  for (; j + kKeysInFlight <= keys; j += kKeysInFlight) {
    scores_of_keys<kKeysInFlight>(qt, k + j * k_stride, k_stride, d, s + j * kQueryLanes);
  }
  for (; j < keys; ++j) scores_of_keys<1>(qt, k + j * k_stride, k_stride, d, s + j * kQueryLanes);
}

// The 16 lanes at once; a lane outside its keys keeps its max and adds nothing (as the portable lane-by-lane loop).
HX_TARGET_AVX512 void softmax(float* s, int rows, const int64_t* begin, const int64_t* end, float scale) {
  alignas(64) int32_t lane_begin[kQueryLanes] = {}, lane_end[kQueryLanes] = {};  // lanes ≥ rows: empty ranges
  int64_t j_begin = begin[0], j_end = end[0];
  for (int lane = 0; lane < rows; ++lane) {
    lane_begin[lane] = static_cast<int32_t>(begin[lane]);
    lane_end[lane] = static_cast<int32_t>(end[lane]);
    j_begin = std::min(j_begin, begin[lane]);
    j_end = std::max(j_end, end[lane]);
  }
  const __m512i first = _mm512_load_si512(lane_begin), last = _mm512_load_si512(lane_end);
  const auto in_range = [&](int64_t j) HX_TARGET_AVX512 {
    const __m512i key = _mm512_set1_epi32(static_cast<int32_t>(j));
    return static_cast<__mmask16>(_mm512_cmpge_epi32_mask(key, first) & _mm512_cmplt_epi32_mask(key, last));
  };
  __m512 max_score = splat(-__builtin_inff());
  for (int64_t j = j_begin; j < j_end; ++j) {
    const __m512 value = mul(_mm512_load_ps(s + j * kQueryLanes), splat(scale));
    _mm512_store_ps(s + j * kQueryLanes, value);
    const __mmask16 larger = in_range(j) & _mm512_cmp_ps_mask(max_score, value, _CMP_LT_OQ);
    max_score = _mm512_mask_mov_ps(max_score, larger, value);
  }
  __m512 sum = _mm512_setzero_ps();
  for (int64_t j = j_begin; j < j_end; ++j) {
    const __m512 e = exp16(sub(_mm512_load_ps(s + j * kQueryLanes), max_score));
    _mm512_store_ps(s + j * kQueryLanes, e);
    sum = add(sum, _mm512_maskz_mov_ps(in_range(j), e));
  }
  for (int64_t j = j_begin; j < j_end; ++j) {
    _mm512_store_ps(s + j * kQueryLanes, div(_mm512_load_ps(s + j * kQueryLanes), sum));
  }
}

// Up to kQueriesPerPass queries (lanes lane0 …) × dims [c0, c0 + 64) ∩ [0, d).
template <int Queries>
HX_TARGET_AVX512 void values_pass(const float* p, int lane0, const int64_t* begin, const int64_t* end, const float* v,
                                  int64_t v_stride, int64_t d, int64_t c0, float* out, int64_t out_stride) {
  __mmask16 mask[kVectorsPerPass];
  for (int x = 0; x < kVectorsPerPass; ++x) {
    const int64_t valid = std::clamp<int64_t>(d - c0 - 16 * x, 0, 16);
    mask[x] = static_cast<__mmask16>((1u << valid) - 1);
  }
  __m512 acc[Queries][kVectorsPerPass];
  int64_t j_begin = begin[lane0], j_end = end[lane0];
  for (int q = 0; q < Queries; ++q) {
#pragma GCC unroll 4
    for (int x = 0; x < kVectorsPerPass; ++x) acc[q][x] = _mm512_setzero_ps();
    j_begin = std::min(j_begin, begin[lane0 + q]);
    j_end = std::max(j_end, end[lane0 + q]);
  }
  for (int64_t j = j_begin; j < j_end; ++j) {
    __m512 row[kVectorsPerPass];
#pragma GCC unroll 4
    for (int x = 0; x < kVectorsPerPass; ++x) row[x] = _mm512_maskz_loadu_ps(mask[x], v + j * v_stride + c0 + 16 * x);
#pragma GCC unroll 4
    for (int q = 0; q < Queries; ++q) {
      if (j < begin[lane0 + q] || j >= end[lane0 + q]) continue;  // outside this query's keys: no term at all
      const __m512 weight = _mm512_set1_ps(p[j * kQueryLanes + lane0 + q]);
#pragma GCC unroll 4
      for (int x = 0; x < kVectorsPerPass; ++x) acc[q][x] = add(acc[q][x], mul(weight, row[x]));
    }
  }
  for (int q = 0; q < Queries; ++q) {
#pragma GCC unroll 4
    for (int x = 0; x < kVectorsPerPass; ++x) {
      _mm512_mask_storeu_ps(out + (lane0 + q) * out_stride + c0 + 16 * x, mask[x], acc[q][x]);
    }
  }
}

HX_TARGET_AVX512 void values(const float* p, int rows, const int64_t* begin, const int64_t* end, const float* v,
                             int64_t v_stride, int64_t d, float* out, int64_t out_stride) {
  for (int lane0 = 0; lane0 < rows; lane0 += kQueriesPerPass) {
    const int queries = std::min(kQueriesPerPass, rows - lane0);
    for (int64_t c0 = 0; c0 < d; c0 += 16 * kVectorsPerPass) {
      switch (queries) {
        case 1:
          values_pass<1>(p, lane0, begin, end, v, v_stride, d, c0, out, out_stride);
          break;
        case 2:
          values_pass<2>(p, lane0, begin, end, v, v_stride, d, c0, out, out_stride);
          break;
        case 3:
          values_pass<3>(p, lane0, begin, end, v, v_stride, d, c0, out, out_stride);
          break;
        default:
          values_pass<4>(p, lane0, begin, end, v, v_stride, d, c0, out, out_stride);
          break;
      }
    }
  }
}

}  // namespace

const KernelSet& avx512_kernels() {
  static const KernelSet set{scores, softmax, values};
  return set;
}

}  // namespace hx::attention
