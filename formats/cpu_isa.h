// Run-time choice of the CPU kernel family, shared by every library that has hand-vectorised kernels: quant/'s
// codecs and verify/'s matrix product both follow the one choice made here.
//
// Design goals: one switch for the whole process (detected from cpuid, overridable by the environment variable
// HXFORGE_FORCE_ISA or by force_cpu_isa(), so that the portable path can be tested on an AVX-512 machine); it lives
// in formats/ because it sits below every library that uses it (formats ← arch ← quant ← verify).
// Non-goals: per-thread choices; families other than the two below (other CPUs take the portable path).
#pragma once

#include <cstdint>
#include <optional>
#include <string_view>

namespace hx {

// The kernel families. kAvx512 needs AVX-512 F/BW/VL/DQ + FMA + F16C; verify's bf16-mode product additionally needs
// AVX512_BF16 and otherwise uses the generic bf16 kernels (same results, see verify/kernels.h matmul()).
enum class CpuIsa : uint8_t { kGeneric, kAvx512 };

std::string_view cpu_isa_name(CpuIsa isa);                       // "generic", "avx512"
std::optional<CpuIsa> cpu_isa_from_name(std::string_view name);  // case-insensitive
bool cpu_supports(CpuIsa isa);                                   // what this CPU and OS can run
bool cpu_supports_bf16_dot();                                    // AVX512_BF16 (vdpbf16ps) on top of kAvx512
// The family the kernels use now: the forced one (force_cpu_isa, else the environment variable HXFORGE_FORCE_ISA,
// read once) or the best supported one. Throws UsageError for an unknown HXFORGE_FORCE_ISA value and
// UnsupportedError when it names a family this CPU cannot run.
CpuIsa active_cpu_isa();
// Forces a family for the whole process (std::nullopt: back to HXFORGE_FORCE_ISA / detection). Throws
// UnsupportedError when the CPU cannot run it. Not meant to be flipped while kernels run on other threads.
void force_cpu_isa(std::optional<CpuIsa> isa);

}  // namespace hx
