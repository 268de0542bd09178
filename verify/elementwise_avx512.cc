// AVX-512 version of the forward pass's SwiGLU combine (elementwise.cc's glu with f32 activations): the same
// operations as the portable loop, 16 values at a time, with vector_exp_avx512.h's twin of the exponential, so both
// give the same bits (tests/verify_kernels_test.cc compares them). Only called after cpu_supports(CpuIsa::kAvx512).
#include <cstdint>

#include "verify/vector_exp_avx512.h"

namespace hx {

using namespace hx::vexp512;

// out[i] = (g / (1 + exp(-g))) · up[i], g = gate[i].
HX_TARGET_AVX512 void glu_silu_avx512(const float* gate, const float* up, float* out, int64_t n) {
  for (int64_t i0 = 0; i0 < n; i0 += 16) {
    const __mmask16 mask = n - i0 >= 16 ? __mmask16{0xffff} : static_cast<__mmask16>((1u << (n - i0)) - 1);
    const __m512 g = _mm512_maskz_loadu_ps(mask, gate + i0);
    const __m512 u = _mm512_maskz_loadu_ps(mask, up + i0);
    const __m512 minus_g =  // -g as the portable code's unary minus: the sign bit flipped
        _mm512_castsi512_ps(_mm512_xor_si512(_mm512_castps_si512(g), _mm512_set1_epi32(INT32_MIN)));
    const __m512 activated = div(g, add(splat(1.0f), exp16(minus_g)));
    _mm512_mask_storeu_ps(out + i0, mask, mul(activated, u));
  }
}

}  // namespace hx
