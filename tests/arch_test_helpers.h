// Helpers shared by the arch_*_test.cc files: synthetic checkpoints built from tensor lists, JSON files, printing.
#pragma once

#include <fstream>
#include <ostream>
#include <sstream>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "arch/arch.h"
#include "arch/model_config.h"
#include "formats/checkpoint.h"
#include "formats/tensor.h"
#include "tests/support/test_support.h"

namespace hx {

// gtest prints a ModelConfig as the config.json it would write (plus what config.json does not carry).
inline void PrintTo(const ModelConfig& cfg, std::ostream* os) {
  *os << "naming=" << (cfg.naming == TensorNaming::kRwkvLm ? "rwkv-lm" : "hf") << " prefix='" << cfg.tensor_prefix
      << "' " << to_config_json(cfg).dump();
}

namespace test {

// A named tensor of zeros backed by its own buffer.
inline NamedTensor zero_tensor(const std::string& name, const Shape& shape, DType dtype = DType::kBF16) {
  uint64_t numel = 0;
  checked_numel(shape, &numel);
  std::vector<std::byte> bytes(numel * dtype_element_size(dtype));
  return {name, TensorView::contiguous(dtype, shape, Storage::owned(std::move(bytes)))};
}

// A view with a shape and a dtype but no bytes: enough for the table checks, which never read data.
inline TensorView shape_only(const Shape& shape, DType dtype = DType::kBF16) {
  TensorView v;
  v.dtype = dtype;
  v.shape = shape;
  v.strides = contiguous_strides(shape);
  return v;
}

// A checkpoint holding exactly the expected tensors (the optional ones too when asked), zero-filled when small;
// tensors above `max_bytes_each` get a view without bytes (only names, shapes and dtypes are looked at then).
inline Checkpoint checkpoint_of(const std::vector<ExpectedTensor>& expected, bool include_optional,
                                uint64_t max_bytes_each = uint64_t{1} << 20) {
  Checkpoint c;
  c.path = "synthetic.safetensors";
  for (const ExpectedTensor& e : expected) {
    if (!e.required && !include_optional) continue;
    uint64_t numel = 0;
    checked_numel(e.shape, &numel);
    if (numel * 2 <= max_bytes_each) c.tensors.push_back(zero_tensor(e.name, e.shape));
    else c.tensors.push_back({e.name, shape_only(e.shape)});
  }
  return c;
}

inline nlohmann::json read_json(const std::string& path) {
  std::ifstream in(path);
  std::stringstream s;
  s << in.rdbuf();
  return nlohmann::json::parse(s.str());
}

inline std::string gemma_tiny_config_path() { return oracle_dir() + "/gemma4-tiny/config.json"; }
inline std::string llama_tiny_config_path() { return oracle_dir() + "/llama-tiny/config.json"; }

}  // namespace test
}  // namespace hx
