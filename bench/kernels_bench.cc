// Benchmarks of the verify/ CPU kernels: the matrix product on LLM shapes (f32 and bf16 modes, stored weight dtypes,
// both kernel families), the machine's FMA / vdpbf16ps peak for reference, attention and the RWKV-7 recurrence.
//
// Threads: OpenMP's (set OMP_NUM_THREADS); every result carries a "threads" counter. GFLOP/s counts 2·T·K·N per
// product over wall-clock time; "CPU" is the process's CPU time (all threads), which on a shared, busy machine gives a
// steadier figure: GFLOP per CPU-second × threads. bench/gemm_vs_torch.py runs this binary and PyTorch side by side.
//
// Peak: BM_FmaPeak runs, on every thread, 16 independent chains of `vfmadd231ps zmm` (16 lanes × 2 flops each) for
// 2^24 iterations — more chains than FMA latency × FMA pipes, so the loop is throughput-bound — and counts
// 2·16·16 flops per iteration. BM_Bf16DotPeak does the same with `vdpbf16ps` (16 lanes × 2 pairs × 2 flops).
#include <benchmark/benchmark.h>

#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#if defined(__x86_64__)
// GCC 12 flags the deliberately undefined vectors of its own intrinsic headers once inlined (GCC bug 105593).
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif
#include <immintrin.h>
#endif

#include "formats/float_convert.h"
#include "formats/parallel.h"
#include "verify/kernels.h"

namespace hx {
namespace {

// Cheap deterministic fill (a 64-bit LCG into [-1, 1)): generating 100 M normal variates would dominate set-up.
std::vector<float> fill(size_t n, uint64_t seed, float scale = 1.0f) {
  std::vector<float> v(n);
  uint64_t s = seed * 6364136223846793005ull + 1442695040888963407ull;
  for (float& x : v) {
    s = s * 6364136223846793005ull + 1442695040888963407ull;
    x = scale * (static_cast<float>(static_cast<int32_t>(s >> 32)) * 0x1p-31f);
  }
  return v;
}

const DType kDtypes[] = {DType::kF32, DType::kBF16, DType::kF16, DType::kF8_E4M3};

// ---- peaks -----------------------------------------------------------------------------------------------------

#if defined(__x86_64__)
__attribute__((target("avx512f,fma"), noinline)) float fma_chains(int64_t iterations, float seed) {
  __m512 acc[16];
  const __m512 b = _mm512_set1_ps(0.999999f), c = _mm512_set1_ps(1e-7f);
  for (int i = 0; i < 16; ++i) acc[i] = _mm512_set1_ps(seed + static_cast<float>(i));
  for (int64_t it = 0; it < iterations; ++it) {
#pragma GCC unroll 16
    for (int i = 0; i < 16; ++i) acc[i] = _mm512_fmadd_ps(acc[i], b, c);
  }
  __m512 sum = acc[0];
  for (int i = 1; i < 16; ++i) sum = _mm512_add_ps(sum, acc[i]);
  return _mm512_reduce_add_ps(sum);
}

__attribute__((target("avx512f,avx512bw,avx512bf16"), noinline)) float dpbf16_chains(int64_t iterations, float seed) {
  __m512 acc[16];
  const __m512bh b = (__m512bh)_mm512_set1_epi16(0x3f80), c = (__m512bh)_mm512_set1_epi16(0x3380);
  for (int i = 0; i < 16; ++i) acc[i] = _mm512_set1_ps(seed + static_cast<float>(i));
  for (int64_t it = 0; it < iterations; ++it) {
#pragma GCC unroll 16
    for (int i = 0; i < 16; ++i) acc[i] = _mm512_dpbf16_ps(acc[i], b, c);
  }
  __m512 sum = acc[0];
  for (int i = 1; i < 16; ++i) sum = _mm512_add_ps(sum, acc[i]);
  return _mm512_reduce_add_ps(sum);
}
#endif

template <bool kBf16>
void BM_Peak(benchmark::State& state) {
#if defined(__x86_64__)
  if (!cpu_supports(CpuIsa::kAvx512) || (kBf16 && !cpu_supports_bf16_dot())) {
    state.SkipWithError("needs AVX-512 (and AVX512_BF16 for vdpbf16ps)");
    return;
  }
  constexpr int64_t kIterations = int64_t{1} << 24;
  const int threads = max_threads();
  std::vector<float> sink(static_cast<size_t>(threads));
  for (auto _ : state) {
    parallel_for(0, threads, 1, [&](int64_t t) {
      sink[static_cast<size_t>(t)] =
          kBf16 ? dpbf16_chains(kIterations, static_cast<float>(t)) : fma_chains(kIterations, static_cast<float>(t));
    });
    benchmark::DoNotOptimize(sink.data());
  }
  const double flops_per_iteration = kBf16 ? 16.0 * 16 * 4 : 16.0 * 16 * 2;
  state.counters["GFLOP/s"] =
      benchmark::Counter(flops_per_iteration * kIterations * threads * 1e-9 * static_cast<double>(state.iterations()),
                         benchmark::Counter::kIsRate);
  state.counters["threads"] = threads;
#else
  state.SkipWithError("x86-64 only");
#endif
}
BENCHMARK(BM_Peak<false>)->Name("BM_FmaPeak")->UseRealTime()->MeasureProcessCPUTime()->Unit(benchmark::kMillisecond);
BENCHMARK(BM_Peak<true>)->Name("BM_Bf16DotPeak")->UseRealTime()->MeasureProcessCPUTime()->Unit(benchmark::kMillisecond);

// ---- matrix product --------------------------------------------------------------------------------------------

// Args: tokens, in, out, weight dtype (index into kDtypes), compute (0 f32, 1 bf16), family (0 generic, 1 avx512).
void BM_Matmul(benchmark::State& state) {
  const int64_t tokens = state.range(0), k_in = state.range(1), n_out = state.range(2);
  const DType dtype = kDtypes[state.range(3)];
  const MatmulCompute compute = state.range(4) ? MatmulCompute::kBF16 : MatmulCompute::kF32;
  const CpuIsa isa = state.range(5) ? CpuIsa::kAvx512 : CpuIsa::kGeneric;
  if (!cpu_supports(isa)) {
    state.SkipWithError("kernel family not supported by this CPU");
    return;
  }
  force_cpu_isa(isa);
  const auto x = fill(static_cast<size_t>(tokens * k_in), 1);
  const auto w = fill(static_cast<size_t>(n_out * k_in), 2, 0.05f);
  std::vector<uint8_t> bytes(w.size() * dtype_element_size(dtype));
  convert_from_f32(dtype, w.data(), bytes.data(), w.size());
  const DenseWeights weights(dtype, bytes.data(), n_out, k_in);
  std::vector<float> y(static_cast<size_t>(tokens * n_out));
  const MatmulOptions options{compute, false};
  matmul(x.data(), tokens, weights, y.data(), options);  // warm: scratch buffers, page faults
  for (auto _ : state) {
    matmul(x.data(), tokens, weights, y.data(), options);
    benchmark::DoNotOptimize(y.data());
    benchmark::ClobberMemory();
  }
  force_cpu_isa(std::nullopt);
  state.counters["GFLOP/s"] = benchmark::Counter(
      2.0 * tokens * k_in * n_out * static_cast<double>(state.iterations()) * 1e-9, benchmark::Counter::kIsRate);
  state.counters["threads"] = max_threads();
  state.SetLabel(std::string(cpu_isa_name(isa)) + " " + (compute == MatmulCompute::kBF16 ? "bf16" : "f32") +
                 " W=" + weights.describe());
}

void matmul_shapes(benchmark::internal::Benchmark* b) {
  b->ArgNames({"T", "K", "N", "wdtype", "bf16", "avx512"});
  // Large square (the headline shape), decode (T = 1), Gemma-4 E2B MLP up / down, a Reka-sized projection.
  const std::vector<std::vector<int64_t>> shapes = {
      {256, 4096, 4096}, {1, 4096, 4096}, {256, 1536, 6144}, {256, 6144, 1536}, {64, 6144, 6144}};
  for (const auto& s : shapes) {
    for (int64_t compute : {0, 1}) {
      b->Args({s[0], s[1], s[2], 0, compute, 1});  // f32 weights
      b->Args({s[0], s[1], s[2], 1, compute, 1});  // bf16 weights (the checkpoints' dtype)
    }
  }
  // The 1.1 B TinyLlama-shaped model of bench/forward_vs_torch.py (bf16 weights): q/o, k/v, gate/up, down, the head,
  // and a decode step of gate/up.
  const std::vector<std::vector<int64_t>> model_shapes = {{256, 2048, 2048}, {256, 2048, 256}, {256, 2048, 5632},
                                                          {256, 5632, 2048}, {256, 2048, 32000}, {1, 2048, 5632}};
  for (const auto& s : model_shapes) {
    for (int64_t compute : {0, 1}) b->Args({s[0], s[1], s[2], 1, compute, 1});
  }
  b->Args({256, 4096, 4096, 2, 0, 1});  // f16 weights
  b->Args({256, 4096, 4096, 3, 0, 1});  // fp8 e4m3 weights
  b->Args({64, 1024, 1024, 1, 0, 0});   // the portable path, for scale
  b->Args({64, 1024, 1024, 1, 1, 0});
}
BENCHMARK(BM_Matmul)->Apply(matmul_shapes)->UseRealTime()->MeasureProcessCPUTime()->Unit(benchmark::kMillisecond);

// ---- attention and RWKV-7 --------------------------------------------------------------------------------------

void BM_Attention(benchmark::State& state) {
  const int64_t tokens = state.range(0), window = state.range(1);
  const AttentionParams p{8, 1, 256, 1.0f, window, DType::kF32};  // Gemma-4 E2B sliding layer
  const auto q = fill(static_cast<size_t>(tokens * p.q_heads * p.head_dim), 3);
  const auto k = fill(static_cast<size_t>(tokens * p.head_dim), 4);
  const auto v = fill(static_cast<size_t>(tokens * p.head_dim), 5);
  std::vector<float> out(q.size());
  for (auto _ : state) {
    causal_attention(p, q.data(), tokens, k.data(), v.data(), tokens, out.data());
    benchmark::DoNotOptimize(out.data());
  }
  state.counters["threads"] = max_threads();
}
BENCHMARK(BM_Attention)
    ->ArgNames({"T", "window"})
    ->Args({512, 512})
    ->Args({2048, 512})
    ->UseRealTime()
    ->Unit(benchmark::kMillisecond);

void BM_Rwkv7(benchmark::State& state) {
  const int64_t tokens = state.range(0), heads = 32, n = 128;  // hxa07i geometry
  const size_t size = static_cast<size_t>(tokens * heads * n);
  const auto r = fill(size, 6), k = fill(size, 7), v = fill(size, 8), kk = fill(size, 9, 0.1f),
             a = fill(size, 10, 0.5f);
  std::vector<float> decay(size, 0.9f), remove(size), replace(size), y(size);
  rwkv7_removal_terms(kk.data(), a.data(), remove.data(), replace.data(), static_cast<int64_t>(size));
  std::vector<float> state_values(static_cast<size_t>(heads * n * n), 0.0f);
  const Rwkv7Inputs in{r.data(), decay.data(), k.data(), v.data(), remove.data(), replace.data()};
  for (auto _ : state) {
    rwkv7_recurrence(in, tokens, heads, n, state_values.data(), y.data());
    benchmark::DoNotOptimize(y.data());
  }
  state.counters["tokens/s"] =
      benchmark::Counter(static_cast<double>(tokens * state.iterations()), benchmark::Counter::kIsRate);
  state.counters["threads"] = max_threads();
}
BENCHMARK(BM_Rwkv7)->ArgNames({"T"})->Arg(1)->Arg(256)->UseRealTime()->Unit(benchmark::kMillisecond);

}  // namespace
}  // namespace hx

BENCHMARK_MAIN();
