// AVX-512 twins of vector_exp.h's exponential and of the plain IEEE operations around it, for the kernels that
// must match a portable kernel bit for bit (attention_avx512.cc, elementwise_avx512.cc). Include only from .cc files
// whose AVX-512 functions are called after cpu_supports(CpuIsa::kAvx512).
//
// Design goals: every operation rounds on its own as the portable code's does. The *_round_ps intrinsics (round to
// nearest, the default mode) are builtins rather than the vector `*` and `+` of the plain intrinsics, so GCC cannot
// contract a product and a sum into an FMA here; exp16 is exp4 of vector_exp.h operation for operation (same
// constants, same order), which tests/verify_kernels_test.cc checks value for value.
// Non-goals: a faster, differently rounded exponential.
#pragma once

#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wuninitialized"  // GCC bug 105593, see gemm_avx512.cc
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif
#include <immintrin.h>

#define HX_TARGET_AVX512 __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq")))

namespace hx::vexp512 {

constexpr int kRound = _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC;

HX_TARGET_AVX512 inline __m512 add(__m512 a, __m512 b) { return _mm512_add_round_ps(a, b, kRound); }
HX_TARGET_AVX512 inline __m512 sub(__m512 a, __m512 b) { return _mm512_sub_round_ps(a, b, kRound); }
HX_TARGET_AVX512 inline __m512 mul(__m512 a, __m512 b) { return _mm512_mul_round_ps(a, b, kRound); }
HX_TARGET_AVX512 inline __m512 div(__m512 a, __m512 b) { return _mm512_div_round_ps(a, b, kRound); }
HX_TARGET_AVX512 inline __m512 splat(float v) { return _mm512_set1_ps(v); }

// vector_exp.h's exp4, operation for operation (same constants, same roundings), on 16 lanes.
HX_TARGET_AVX512 inline __m512 exp16(__m512 x) {
  const __mmask16 below = _mm512_cmp_ps_mask(x, splat(-104.0f), _CMP_LT_OQ);
  const __mmask16 nan = _mm512_cmp_ps_mask(x, x, _CMP_UNORD_Q);
  const __mmask16 above = _mm512_cmp_ps_mask(x, splat(89.0f), _CMP_GT_OQ);
  __m512 xc = _mm512_mask_mov_ps(x, nan, _mm512_setzero_ps());
  xc = _mm512_mask_mov_ps(xc, above, splat(89.0f));
  xc = _mm512_mask_mov_ps(xc, below, splat(-104.0f));
  const __m512 n = sub(add(mul(xc, splat(1.44269504088896341f)), splat(12582912.0f)), splat(12582912.0f));
  __m512 r = sub(xc, mul(n, splat(0.693359375f)));
  r = sub(r, mul(n, splat(-2.12194440e-4f)));
  __m512 p = splat(1.9875691500e-4f);
  p = add(mul(p, r), splat(1.3981999507e-3f));
  p = add(mul(p, r), splat(8.3334519073e-3f));
  p = add(mul(p, r), splat(4.1665795894e-2f));
  p = add(mul(p, r), splat(1.6666665459e-1f));
  p = add(mul(p, r), splat(5.0000001201e-1f));
  const __m512 y = add(add(mul(p, mul(r, r)), r), splat(1.0f));
  const __m512i ni = _mm512_cvttps_epi32(n);
  const __m512i half = _mm512_srai_epi32(_mm512_add_epi32(ni, _mm512_srli_epi32(ni, 31)), 1);  // ni / 2 (C++)
  const __m512i bias = _mm512_set1_epi32(127);
  const __m512 scale_a = _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_add_epi32(_mm512_sub_epi32(ni, half), bias), 23));
  const __m512 scale_b = _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_add_epi32(half, bias), 23));
  const __m512 result = mul(mul(y, scale_a), scale_b);
  return _mm512_mask_mov_ps(_mm512_mask_mov_ps(result, below, _mm512_setzero_ps()), nan, x);
}

}  // namespace hx::vexp512
