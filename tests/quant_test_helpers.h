// Helpers of the quant_* tests: oracle fixtures, test matrices with the rows that break codecs, and running a check
// on every kernel family this CPU has (the codecs' fast paths are compiled for the baseline ISA and for AVX-512).
#pragma once

#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <optional>
#include <random>
#include <string>
#include <vector>

#include "formats/checkpoint.h"
#include "formats/float_convert.h"
#include "formats/safetensors.h"
#include "tests/support/test_support.h"
#include "formats/cpu_isa.h"

namespace hx::quant_test {

inline Checkpoint load_oracle(const std::string& file) {
  return read_safetensors_file(test::oracle_dir() + "/quant/" + file);
}

inline const TensorView& oracle_view(const Checkpoint& c, const std::string& name) {
  const NamedTensor* t = c.find(name);
  if (!t) throw std::runtime_error("oracle tensor '" + name + "' missing from " + c.path);
  return t->view;
}

// The raw elements of a tensor whose dtype is T-sized (U8 codes, F32 values, F16 bits as uint16_t).
template <typename T>
std::vector<T> oracle_raw(const Checkpoint& c, const std::string& name) {
  const TensorView& v = oracle_view(c, name);
  if (dtype_element_size(v.dtype) != sizeof(T)) throw std::runtime_error(name + ": element size differs");
  const auto bytes = v.contiguous_bytes();
  std::vector<T> out(bytes.size() / sizeof(T));
  std::memcpy(out.data(), bytes.data(), bytes.size());
  return out;
}

inline std::vector<float> oracle_f32(const Checkpoint& c, const std::string& name) {
  const TensorView& v = oracle_view(c, name);
  std::vector<float> out(v.numel());
  convert_to_f32(v.dtype, v.contiguous_bytes().data(), out.data(), out.size());
  return out;
}

// Runs `check` once per kernel family this CPU runs (generic always, AVX-512 when present), forcing it meanwhile.
template <typename F>
void for_each_isa(F&& check) {
  for (CpuIsa isa : {CpuIsa::kGeneric, CpuIsa::kAvx512}) {
    if (!cpu_supports(isa)) continue;
    force_cpu_isa(isa);
    SCOPED_TRACE(std::string("kernels: ") + std::string(cpu_isa_name(isa)));
    check();
    force_cpu_isa(std::nullopt);
  }
}

// A [rows, cols] f32 matrix of N(0, sigma²) values whose first rows are the cases that break codecs:
//   0 all zero · 1 a single non-zero · 2 one outlier 1000× the rest · 3 f32 subnormals (|x| < 2^-126) ·
//   4 a constant · 5 all negative · 6 heavy tails (Student-t, 3 dof) · 7 values of very different magnitudes.
inline std::vector<float> hard_matrix(int64_t rows, int64_t cols, uint32_t seed, float sigma = 0.02f) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> normal(0.0f, sigma);
  std::student_t_distribution<float> student(3.0f);
  std::vector<float> w(static_cast<size_t>(rows * cols));
  for (auto& v : w) v = normal(rng);
  auto row = [&](int64_t r) { return w.data() + r * cols; };
  if (rows > 0) std::fill(row(0), row(0) + cols, 0.0f);
  if (rows > 1) {
    std::fill(row(1), row(1) + cols, 0.0f);
    row(1)[cols / 3] = 1.0f;
  }
  if (rows > 2) row(2)[cols / 2] = 1000.0f * sigma;
  if (rows > 3)
    for (int64_t c = 0; c < cols; ++c) row(3)[c] = normal(rng) * 1e-39f;
  if (rows > 4) std::fill(row(4), row(4) + cols, 0.0123f);
  if (rows > 5)
    for (int64_t c = 0; c < cols; ++c) row(5)[c] = -std::fabs(row(5)[c]) - 1e-3f;
  if (rows > 6)
    for (int64_t c = 0; c < cols; ++c) row(6)[c] = student(rng) * 0.01f;
  if (rows > 7)
    for (int64_t c = 0; c < cols; ++c) row(7)[c] = normal(rng) * std::ldexp(1.0f, static_cast<int>(c % 40) - 20);
  return w;
}

// The same matrix stored as bf16 bits (what checkpoints hold) and read back as f32.
inline std::vector<uint16_t> to_bf16(const std::vector<float>& w) {
  std::vector<uint16_t> out(w.size());
  for (size_t i = 0; i < w.size(); ++i) out[i] = f32_to_bf16(w[i]);
  return out;
}

}  // namespace hx::quant_test
