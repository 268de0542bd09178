// Helpers of the forward-pass tests: oracle tensors as f32, logit comparisons (max |Δ|, top-1 agreement, KL), and
// model folders assembled in a TempDir. Header-only; includes neither arch/model_config.h nor verify/kernels.h.
#pragma once

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <span>
#include <string>
#include <vector>

#include "formats/checkpoint.h"
#include "formats/float_convert.h"
#include "formats/safetensors.h"
#include "tests/support/test_support.h"

namespace hx::test {

// A tensor of a safetensors file as f32 values (any float dtype; I64 token ids convert by value).
struct LoadedTensor {
  Shape shape;
  std::vector<float> values;
};

inline LoadedTensor tensor_f32(const Checkpoint& file, const std::string& name) {
  const NamedTensor* t = file.find(name);
  if (!t) throw std::runtime_error(file.path + ": no tensor '" + name + "'");
  const std::vector<std::byte> bytes = to_contiguous_bytes(t->view);
  LoadedTensor out{t->view.shape, std::vector<float>(t->view.numel())};
  convert_to_f32(t->view.dtype, bytes.data(), out.values.data(), out.values.size());
  return out;
}

inline std::vector<int64_t> token_ids(const Checkpoint& file, const std::string& name = "input_ids") {
  const LoadedTensor t = tensor_f32(file, name);
  return std::vector<int64_t>(t.values.begin(), t.values.end());
}

// How two [T, V] logit matrices compare.
struct LogitAgreement {
  double max_abs = 0;      // max |a - b| over every element
  double top1 = 0;         // fraction of positions whose argmax agrees
  double max_kl = 0;       // max over positions of KL(softmax(reference) || softmax(other)), nats
  int64_t positions = 0;
};

inline std::vector<double> log_softmax(std::span<const float> row) {
  const double max_value = *std::max_element(row.begin(), row.end());
  double sum = 0;
  for (float v : row) sum += std::exp(v - max_value);
  const double log_sum = std::log(sum) + max_value;
  std::vector<double> out(row.size());
  for (size_t i = 0; i < row.size(); ++i) out[i] = row[i] - log_sum;
  return out;
}

inline LogitAgreement compare_logits(std::span<const float> reference, std::span<const float> other, int64_t vocab) {
  LogitAgreement a;
  EXPECT_EQ(reference.size(), other.size());
  a.positions = static_cast<int64_t>(std::min(reference.size(), other.size())) / vocab;
  int64_t agree = 0;
  for (int64_t t = 0; t < a.positions; ++t) {
    const auto r = reference.subspan(static_cast<size_t>(t * vocab), static_cast<size_t>(vocab));
    const auto o = other.subspan(static_cast<size_t>(t * vocab), static_cast<size_t>(vocab));
    for (int64_t i = 0; i < vocab; ++i) a.max_abs = std::max(a.max_abs, std::fabs(double(r[i]) - double(o[i])));
    agree += std::max_element(r.begin(), r.end()) - r.begin() == std::max_element(o.begin(), o.end()) - o.begin();
    const auto lr = log_softmax(r), lo = log_softmax(o);
    double kl = 0;
    for (int64_t i = 0; i < vocab; ++i) kl += std::exp(lr[i]) * (lr[i] - lo[i]);
    a.max_kl = std::max(a.max_kl, kl);
  }
  a.top1 = a.positions ? static_cast<double>(agree) / static_cast<double>(a.positions) : 0.0;
  return a;
}

inline std::string describe(const LogitAgreement& a) {
  char text[160];
  std::snprintf(text, sizeof text, "max|Δ| %.3g, top-1 %.4f over %lld positions, max KL %.3g", a.max_abs, a.top1,
                static_cast<long long>(a.positions), a.max_kl);
  return text;
}

inline double max_abs_difference(std::span<const float> a, std::span<const float> b) {
  EXPECT_EQ(a.size(), b.size());
  double m = 0;
  for (size_t i = 0; i < std::min(a.size(), b.size()); ++i) m = std::max(m, std::fabs(double(a[i]) - double(b[i])));
  return m;
}

inline double max_abs(std::span<const float> a) {
  double m = 0;
  for (float v : a) m = std::max(m, std::fabs(double(v)));
  return m;
}

// A folder holding the oracle's gemma4-tiny weights (symlinked) beside `config_file` copied as config.json.
inline void gemma_folder_with_config(const TempDir& dir, const std::string& config_file) {
  const std::string src = oracle_dir() + "/gemma4-tiny";
  std::filesystem::create_symlink(src + "/model.safetensors", dir.file("model.safetensors"));
  std::filesystem::copy_file(src + "/" + config_file, dir.file("config.json"));
}

}  // namespace hx::test
