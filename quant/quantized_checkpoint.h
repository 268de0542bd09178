// Quantized checkpoints: safetensors files whose quantized weights are stored packed, with their scales and zeros
// as sibling tensors, and a description of every quantized tensor in `__metadata__` (schemas/
// quantized-checkpoint.schema.json is the JSON Schema of that description).
//
// On disk, for a weight X.weight of shape [out, in] quantized with scheme S (layouts in the codec headers):
//   X.weight        the packed codes   int8: I8 [out, in]        fp8: F8_E4M3 [out, in]
//                                      fp6: U8 [out, in·6/8]     fp5: U8 [out, in·5/8]      (portable or torchao-tc)
//                                      int4: U8 [out, in/2] (portable) or I32 [in/8, out] (gemlite)
//   X.weight.scale  int8 / fp8: F32 [out] (fp8 per tensor: F32 [1]); fp6 / fp5: [out] in X's dtype;
//                   int4: F32 [out, in/G] (portable) or F16 [in/G, out] (gemlite)
//   X.weight.zero   int4 only: F32 [out, in/G] (hqq's zero) or F16 [in/G, out] (gemlite's additive offset)
//   __metadata__["quantization"] = JSON text:
//     {"format_version": 1, "producer": "hxforge 0.1.0", "policy": "attn-int8-mlp-int4",
//      "tensors": {"X.weight": {"scheme": "int4", "layout": "portable", "group_size": 64,
//                               "shape": [out, in], "dtype": "BF16"}, …}}
//     (fp8 entries add "scale_mode": "row" | "tensor"; "note" may say why a tensor fell back to another scheme)
// Every other tensor is stored unchanged. Readers learn which tensors are quantized from the description alone,
// never from names or dtypes.
//
// Design goals:
//  * Streaming write: the quantizer pulls one tensor at a time from the mapped input and hands its packed bytes to
//    the safetensors writer in row blocks; the largest buffers are one row block (portable layouts) or one tensor's
//    codes (torchao-tc, gemlite, whose packing mixes rows). Output bytes do not depend on the thread count.
//  * Strict read: read_quantization() checks every described tensor's parts — present, dtype, shape, group size,
//    layout — and throws FormatError / UnsupportedError naming the file, the tensor, what was expected and what was
//    found (exit 3); check_quantization() lists every problem instead of stopping at the first (inspect --check).
// Non-goals: re-quantizing a quantized checkpoint; quantizing anything but 2-D matmul weights.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "formats/checkpoint.h"
#include "quant/codec.h"
#include "quant/fp8.h"
#include "quant/hqq.h"

namespace hx {

// Readers accept format versions 1..kQuantFormatVersion; a newer file is refused with a message saying so.
inline constexpr int kQuantFormatVersion = 1;
inline constexpr const char* kQuantMetadataKey = "quantization";

struct QuantizedTensorEntry {
  std::string name;  // the original tensor's name, which the packed tensor keeps
  QuantScheme scheme = QuantScheme::kInt8;
  QuantLayout layout = QuantLayout::kPortable;
  int group_size = 0;                           // int4 only
  Fp8ScaleMode fp8_scale = Fp8ScaleMode::kPerRow;  // fp8 only
  Shape shape;                                  // the original [out, in]
  DType dtype = DType::kBF16;                   // the original dtype (F32, BF16 or F16)
  std::string note;                             // why the scheme or layout differs from the one asked for, if it does
};

struct QuantizationDescription {
  int format_version = kQuantFormatVersion;
  std::string producer;
  std::string policy;  // what was asked for: a scheme, a preset or a policy file
  std::vector<QuantizedTensorEntry> tensors;

  const QuantizedTensorEntry* find(const std::string& name) const;
  nlohmann::json to_json() const;
  // Parses the JSON text of __metadata__["quantization"]; `source` ("model.safetensors") prefixes every error.
  static QuantizationDescription parse(const std::string& text, const std::string& source);
};

inline std::string scale_tensor_name(const std::string& name) { return name + ".scale"; }
inline std::string zero_tensor_name(const std::string& name) { return name + ".zero"; }

// The tensors an entry is stored as: packed codes, scale, and (int4) zero, with their dtypes and shapes.
struct QuantizedParts {
  TensorSpec packed;
  TensorSpec scale;
  std::optional<TensorSpec> zero;
};
// Throws FormatError / UnsupportedError (naming `source` and the tensor) when the entry is inconsistent: shape not
// 2-D, unsupported dtype, group size or layout not allowed for the scheme, in not divisible as the layout needs.
QuantizedParts quantized_parts(const QuantizedTensorEntry& entry, const std::string& source);

// ---- reading ----

// The checkpoint's description, or nullopt when its metadata has none (an ordinary checkpoint). Validates every
// described tensor against the file and throws at the first problem (FormatError / UnsupportedError, exit 3).
std::optional<QuantizationDescription> read_quantization(const Checkpoint& checkpoint);
// Every problem read_quantization would throw for, one sentence each; empty when the file is valid.
std::vector<std::string> check_quantization(const Checkpoint& checkpoint);

// The dequantized values of a described tensor, [out, in] row-major f32 (tests, small tensors; the forward pass
// uses quant/quantized_rows.h through verify/quantized_matrix.h instead).
std::vector<float> dequantize_tensor(const Checkpoint& checkpoint, const QuantizedTensorEntry& entry);

// ---- writing ----

// One matrix quantized as `entry` says (the codec of its scheme, then its layout's packing): the packed codes go to
// `packed` in row blocks (at once for torchao-tc and gemlite, whose packing mixes rows); the result holds the scale
// and zero tensors' bytes and the error statistics. `rows_done` is told as rows are finished.
struct QuantizedMatrix {
  std::vector<std::byte> scale, zero;  // zero is empty except for int4
  ErrorStats error;
  int hqq_iterations = 0;
};
QuantizedMatrix quantize_matrix(const FloatRows& w, const QuantizedTensorEntry& entry, const HqqOptions& hqq,
                                const ByteSink& packed, const std::function<void(uint64_t rows)>& rows_done = {});

// What happens to one tensor of the input: copied as it is (no entry) or quantized as the entry says.
struct TensorPlan {
  std::string name;
  std::optional<QuantizedTensorEntry> quantize;
  std::string note;  // why a tensor the table allows to quantize is kept, if it is
};

// cli.md `quantize --report`: one row per output weight (kept tensors have scheme "keep" and zero error).
struct TensorReport {
  std::string name;
  std::string scheme;  // "int8" … "int4", or "keep"
  std::string layout;
  ErrorStats error;
  std::string sha256;  // of the stored tensor (the packed codes for a quantized one)
  uint64_t bytes_in = 0, bytes_out = 0;  // the original tensor; everything stored for it (codes, scale, zero)
  double seconds = 0;                    // wall time to quantize (or copy) it and hand it to the writer
  int hqq_iterations = 0;
  std::string note;
};

struct QuantizeOptions {
  std::string policy;                           // recorded in the description
  std::string producer = "hxforge";
  HqqOptions hqq;                               // group_size is taken from each entry
  std::map<std::string, std::string> metadata;  // further __metadata__ entries (the input's)
  bool overwrite = false;
  // Called after each tensor (and with bytes as they stream) for a progress line.
  std::function<void(uint64_t tensors_done, uint64_t bytes_in_done)> progress;
};

struct QuantizeResult {
  QuantizationDescription description;
  std::vector<TensorReport> tensors;
  uint64_t bytes_in = 0, bytes_out = 0;
};

// Quantizes `input` into the safetensors file `out_file` following `plan` (every input tensor once, in the order
// wanted in the output). Atomic (formats/safetensors.h); throws FormatError for non-finite weights or a plan that
// does not fit the tensors, IoError when writing fails. An empty `out_file` is a dry run: everything is computed
// and reported, nothing is written.
QuantizeResult write_quantized_checkpoint(const Checkpoint& input, const std::vector<TensorPlan>& plan,
                                          const std::string& out_file, const QuantizeOptions& options);

// The `quantization_config` block for config.json (transformers' convention of a quant_method plus settings).
nlohmann::json quantization_config_json(const QuantizationDescription& description);

// The report as cli.md fixes it: {"scheme", "tensors": [{"name", "scheme", "max_abs_err", "mean_abs_err", "nmse",
// "snr_db", "sha256", …}]} (non-finite figures, an exact tensor's SNR, become null).
nlohmann::json report_json(const std::string& scheme, const QuantizeResult& result);

}  // namespace hx
