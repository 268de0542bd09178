// Run-time choice of the kernel family (formats/cpu_isa.h): cpuid (through GCC/Clang's __builtin_cpu_supports, which
// also checks that the OS saves the AVX-512 registers), overridable by HXFORGE_FORCE_ISA or force_cpu_isa() so that
// the portable path can be tested on an AVX-512 machine.
#include <algorithm>
#include <atomic>
#include <cctype>
#include <cstdlib>
#include <string>

#include "formats/errors.h"
#include "formats/cpu_isa.h"

#if defined(__x86_64__) || defined(__i386__)
#include <cpuid.h>
#endif

namespace hx {
namespace {

bool detect_avx512() {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_cpu_init();
  unsigned eax = 0, ebx = 0, ecx = 0, edx = 0;  // F16C straight from cpuid: clang's builtin does not know it
  const bool f16c = __get_cpuid(1, &eax, &ebx, &ecx, &edx) && (ecx & bit_F16C) != 0;
  return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
         __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("fma") &&
         f16c;
#else
  return false;
#endif
}

bool detect_bf16_dot() {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_cpu_init();
  return detect_avx512() && __builtin_cpu_supports("avx512bf16");
#else
  return false;
#endif
}

constexpr int kNotForced = -1;
std::atomic<int> g_forced{kNotForced};  // a CpuIsa value, or kNotForced

// HXFORGE_FORCE_ISA, parsed once. Errors are remembered and re-thrown on every call so that none is lost.
struct EnvironmentChoice {
  std::optional<CpuIsa> isa;
  std::string error;
};

const EnvironmentChoice& environment_choice() {
  static const EnvironmentChoice choice = [] {
    EnvironmentChoice c;
    const char* value = std::getenv("HXFORGE_FORCE_ISA");
    if (value == nullptr || *value == '\0') return c;
    c.isa = cpu_isa_from_name(value);
    if (!c.isa) c.error = std::string("HXFORGE_FORCE_ISA=") + value + " is not one of: generic, avx512";
    return c;
  }();
  return choice;
}

}  // namespace

std::string_view cpu_isa_name(CpuIsa isa) {
  switch (isa) {
    case CpuIsa::kGeneric:
      return "generic";
    case CpuIsa::kAvx512:
      return "avx512";
  }
  return "?";
}

std::optional<CpuIsa> cpu_isa_from_name(std::string_view name) {
  std::string lower(name);
  std::transform(lower.begin(), lower.end(), lower.begin(), [](unsigned char c) { return std::tolower(c); });
  if (lower == "generic") return CpuIsa::kGeneric;
  if (lower == "avx512") return CpuIsa::kAvx512;
  return std::nullopt;
}

bool cpu_supports(CpuIsa isa) {
  static const bool avx512 = detect_avx512();
  return isa == CpuIsa::kGeneric || avx512;
}

bool cpu_supports_bf16_dot() {
  static const bool bf16 = detect_bf16_dot();
  return bf16;
}

CpuIsa active_cpu_isa() {
  const int forced = g_forced.load(std::memory_order_relaxed);
  if (forced != kNotForced) return static_cast<CpuIsa>(forced);
  const EnvironmentChoice& env = environment_choice();
  if (!env.error.empty()) throw UsageError(env.error);
  if (env.isa) {
    if (!cpu_supports(*env.isa)) {
      throw UnsupportedError("HXFORGE_FORCE_ISA=" + std::string(cpu_isa_name(*env.isa)) +
                             " asks for kernels this CPU cannot run");
    }
    return *env.isa;
  }
  return cpu_supports(CpuIsa::kAvx512) ? CpuIsa::kAvx512 : CpuIsa::kGeneric;
}

void force_cpu_isa(std::optional<CpuIsa> isa) {
  if (isa && !cpu_supports(*isa)) {
    throw UnsupportedError("cannot force the " + std::string(cpu_isa_name(*isa)) +
                           " kernels: this CPU does not support them");
  }
  g_forced.store(isa ? static_cast<int>(*isa) : kNotForced, std::memory_order_relaxed);
}

}  // namespace hx
