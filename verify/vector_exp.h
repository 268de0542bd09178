// exp(x) for 4 floats at a time (one SSE register), in portable GCC/Clang vector extensions, for the element-wise ops
// whose cost is their exponentials (SiLU in the MLP, the softmax of attention).
//
// Design goals
//  * One definition of the arithmetic for every caller and ISA: only IEEE +, −, ×, comparisons and bit moves, each
//    rounded on its own, so a value is the same whether it is computed in a vector with others or alone
//    (exp_scalar() runs the same lanes), and the portable and AVX-512 kernel families that share these ops agree bit
//    for bit. Include it only from code compiled for the baseline ISA (no FMA there to contract a·b + c into).
//  * Accurate enough to replace libm's expf next to PyTorch's: Cody–Waite reduction x = n·ln2 + r with a two-part
//    ln2, Cephes' degree-7 polynomial on |r| ≤ ln2/2, scaling by 2^n in two exact steps (so subnormal results round
//    once). Measured ≤ 2 ulps from the correctly rounded exp over [-104, 88.7] (tests/verify_kernels_test.cc).
//  * Special values as expf: exp(-inf) = 0, exp(+inf) = inf, overflow to inf above 88.72, 0 below -104, NaN stays NaN.
// Non-goals: other functions (tanh, log1p stay libm calls where they are rare); faster-but-rougher variants.
#pragma once

#include <cstdint>
#include <cstring>

namespace hx::vexp {

// 16-byte vectors: the baseline x86-64 ISA's native width, so GCC keeps every operation (comparisons and selects
// included) in SSE registers; wider vectors would be split, partly into scalar code.
constexpr int kLanes = 4;
using F32x4 = float __attribute__((vector_size(16)));
using I32x4 = int32_t __attribute__((vector_size(16)));

[[gnu::always_inline]] inline F32x4 splat(float v) { return F32x4{} + v; }

// mask ? a : b, lane by lane (mask lanes are all ones or all zeros, as vector comparisons produce them).
[[gnu::always_inline]] inline F32x4 select(I32x4 mask, F32x4 a, F32x4 b) {
  I32x4 ia, ib;
  std::memcpy(&ia, &a, sizeof ia);
  std::memcpy(&ib, &b, sizeof ib);
  const I32x4 bits = (mask & ia) | (~mask & ib);
  F32x4 out;
  std::memcpy(&out, &bits, sizeof out);
  return out;
}

[[gnu::always_inline]] inline F32x4 exp4(F32x4 x) {
  constexpr float kLog2e = 1.44269504088896341f;
  constexpr float kRoundMagic = 12582912.0f;  // 1.5·2^23: t + magic - magic rounds t to an integer (nearest even)
  constexpr float kLn2Hi = 0.693359375f;      // ln 2 in 9 bits, so n·kLn2Hi is exact for |n| < 2^15
  constexpr float kLn2Lo = -2.12194440e-4f;   // ln 2 - kLn2Hi
  constexpr float kLowest = -104.0f;          // exp(-104) < 2^-150: rounds to 0
  constexpr float kHighest = 89.0f;           // exp(89) > FLT_MAX: overflows to inf
  const I32x4 below = x < kLowest;
  const I32x4 nan = x != x;
  const F32x4 xc = select(below, splat(kLowest), select(x > kHighest, splat(kHighest), select(nan, splat(0), x)));

  const F32x4 n = (xc * kLog2e + kRoundMagic) - kRoundMagic;
  F32x4 r = xc - n * kLn2Hi;
  r = r - n * kLn2Lo;
  F32x4 p = splat(1.9875691500e-4f);
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  const F32x4 y = (p * (r * r) + r) + 1.0f;

  // y · 2^n as y · 2^(n - h) · 2^h with h = n / 2: both factors are normal for n in [-150, 129], the first product is
  // exact and the second rounds once (a subnormal or an overflow).
  const I32x4 ni = __builtin_convertvector(n, I32x4);
  const I32x4 half = ni / 2;
  const I32x4 bits_a = (ni - half + 127) << 23, bits_b = (half + 127) << 23;
  F32x4 scale_a, scale_b;
  std::memcpy(&scale_a, &bits_a, sizeof scale_a);
  std::memcpy(&scale_b, &bits_b, sizeof scale_b);
  const F32x4 result = (y * scale_a) * scale_b;
  return select(nan, x, select(below, splat(0), result));
}

// The same arithmetic for one value (lane 0 of a vector).
[[gnu::always_inline]] inline float exp_scalar(float x) { return exp4(splat(x))[0]; }

}  // namespace hx::vexp
