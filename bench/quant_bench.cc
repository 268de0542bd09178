// Throughput of the quantization codecs (quant/): each scheme's fast path plus its layout's packing, run over the
// weights `hxforge quantize` would give that scheme, straight from the memory-mapped checkpoint — what the CLI does
// minus hashing and writing. bench/quant_bench.py runs this next to a PyTorch implementation of every scheme on the
// same tensors.
//
// Input: HXFORGE_QUANT_BENCH_MODEL names a checkpoint (any MODEL hxforge opens); HXFORGE_QUANT_BENCH_TENSORS, when
// set, is a comma-separated list of tensor names to use instead of every tensor the scheme's plan quantizes.
// Without a model, a realistic synthetic [4096, 4096] bf16 matrix set (Student-t values, outlier columns) stands in.
// Threads: OpenMP's (set OMP_NUM_THREADS). "bytes_per_second" counts the input (bf16) bytes over wall-clock time.
#include <benchmark/benchmark.h>

#include <cmath>
#include <cstdlib>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include "arch/model_config.h"
#include "formats/checkpoint.h"
#include "formats/parallel.h"
#include "quant/policy.h"
#include "quant/quantized_checkpoint.h"

namespace hx {
namespace {

struct Workload {
  std::unique_ptr<Checkpoint> checkpoint;      // the mapped model, when one is given
  std::vector<std::vector<uint16_t>> owned;    // the synthetic matrices otherwise
  std::vector<std::pair<FloatRows, QuantizedTensorEntry>> matrices;
  uint64_t bytes = 0;
};

std::vector<std::string> split_names(const char* list) {
  std::vector<std::string> out;
  std::stringstream in(list);
  for (std::string name; std::getline(in, name, ',');)
    if (!name.empty()) out.push_back(name);
  return out;
}

QuantizedTensorEntry entry_for(const std::string& name, const Shape& shape, DType dtype, QuantScheme scheme,
                               QuantLayout layout) {
  QuantizedTensorEntry e;
  e.name = name;
  e.shape = shape;
  e.dtype = dtype;
  e.scheme = scheme;
  e.layout = layout;
  e.group_size = scheme == QuantScheme::kInt4 ? kHqqDefaultGroupSize : 0;
  return e;
}

Workload load_workload(QuantScheme scheme, QuantLayout layout) {
  Workload w;
  const char* model = std::getenv("HXFORGE_QUANT_BENCH_MODEL");
  if (model && *model) {
    w.checkpoint = std::make_unique<Checkpoint>(open_checkpoint(model));
    const Checkpoint& c = *w.checkpoint;
    std::vector<std::string> names;
    if (const char* list = std::getenv("HXFORGE_QUANT_BENCH_TENSORS"); list && *list) {
      names = split_names(list);
    } else {  // what the CLI's plan gives this scheme
      QuantRequest request;
      request.scheme = scheme;
      request.layout = layout;
      for (const TensorPlan& p : plan_quantization(c, config_for_checkpoint(c), {}, request))
        if (p.quantize && p.quantize->scheme == scheme) names.push_back(p.name);
    }
    for (const std::string& name : names) {
      const NamedTensor* t = c.find(name);
      if (!t) throw std::runtime_error("no tensor '" + name + "' in " + std::string(model));
      QuantizedTensorEntry e = entry_for(name, t->view.shape, t->view.dtype, scheme, layout);
      if (scheme == QuantScheme::kInt4 && e.shape[1] % e.group_size != 0) continue;  // the plan would fall back
      w.matrices.emplace_back(FloatRows::from_view(t->view, name), e);
      w.bytes += t->view.nbytes();
    }
    return w;
  }
  // Synthetic stand-in: four [4096, 4096] bf16 matrices, heavy-tailed with 16 outlier columns.
  const int64_t rows = 4096, cols = 4096;
  for (int m = 0; m < 4; ++m) {
    std::vector<uint16_t> bits(static_cast<size_t>(rows * cols));
    uint64_t s = 0x9E3779B97F4A7C15ull * static_cast<uint64_t>(m + 1);
    for (size_t i = 0; i < bits.size(); ++i) {
      s = s * 6364136223846793005ull + 1442695040888963407ull;
      const float u = (static_cast<float>(s >> 40) + 0.5f) * 0x1p-24f;  // (0, 1)
      float v = 0.02f * std::tan(3.14159265f * (u - 0.5f)) * 0.3f;       // Cauchy-like tails, clipped below
      v = std::fmax(-1.0f, std::fmin(1.0f, v));
      if (i % static_cast<size_t>(cols) % 256 == 7) v *= 20.0f;          // outlier input columns
      bits[i] = f32_to_bf16(v);
    }
    w.owned.push_back(std::move(bits));
    const std::string name = "synthetic." + std::to_string(m);
    w.matrices.emplace_back(FloatRows(DType::kBF16, w.owned.back().data(), rows, cols, 0, name),
                            entry_for(name, {rows, cols}, DType::kBF16, scheme, layout));
    w.bytes += static_cast<uint64_t>(rows * cols * 2);
  }
  return w;
}

void BM_Quantize(benchmark::State& state, QuantScheme scheme, QuantLayout layout) {
  const Workload w = load_workload(scheme, layout);
  if (w.matrices.empty()) {
    state.SkipWithError("no tensor of this scheme in the model");
    return;
  }
  uint64_t packed_bytes = 0;
  const ByteSink discard = [&](std::span<const std::byte> b) { packed_bytes += b.size(); };
  for (auto _ : state) {
    for (const auto& [rows, entry] : w.matrices) benchmark::DoNotOptimize(quantize_matrix(rows, entry, HqqOptions{}, discard));
  }
  state.SetBytesProcessed(static_cast<int64_t>(w.bytes) * static_cast<int64_t>(state.iterations()));
  state.counters["threads"] = max_threads();
  state.counters["tensors"] = static_cast<double>(w.matrices.size());
  state.counters["input_GB"] = static_cast<double>(w.bytes) * 1e-9;
}

const int registered = [] {
  struct Case {
    const char* name;
    QuantScheme scheme;
    QuantLayout layout;
  };
  const Case cases[] = {
      {"int8", QuantScheme::kInt8, QuantLayout::kPortable},   {"fp8", QuantScheme::kFp8, QuantLayout::kPortable},
      {"fp6", QuantScheme::kFp6, QuantLayout::kPortable},     {"fp5", QuantScheme::kFp5, QuantLayout::kPortable},
      {"fp6_tc", QuantScheme::kFp6, QuantLayout::kTorchaoTc}, {"int4", QuantScheme::kInt4, QuantLayout::kPortable},
      {"int4_gemlite", QuantScheme::kInt4, QuantLayout::kGemlite},
  };
  for (const Case& c : cases) {
    benchmark::RegisterBenchmark((std::string("BM_Quantize/") + c.name).c_str(), BM_Quantize, c.scheme, c.layout)
        ->Unit(benchmark::kMillisecond)
        ->UseRealTime()
        ->MinTime(0.5);
  }
  return 0;
}();

}  // namespace
}  // namespace hx

BENCHMARK_MAIN();
