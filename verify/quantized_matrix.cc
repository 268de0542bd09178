// The forward pass's view of quantized matrices (verify/quantized_matrix.h).
#include "verify/quantized_matrix.h"

#include <mutex>
#include <optional>

#include "formats/errors.h"
#include "quant/quantized_checkpoint.h"

namespace hx {
namespace {

// read_quantization parses and checks the whole description; a model asks for hundreds of matrices of one file, so
// the last checked description is kept, keyed by the file and its exact metadata text.
struct CheckedDescription {
  std::string path, text;
  std::shared_ptr<const QuantizationDescription> description;
};

std::shared_ptr<const QuantizationDescription> checked_description(const Checkpoint& checkpoint,
                                                                   const std::string& text) {
  static std::mutex mutex;
  static CheckedDescription last;
  {
    std::lock_guard<std::mutex> lock(mutex);
    if (last.description && last.path == checkpoint.path && last.text == text) return last.description;
  }
  auto description = std::make_shared<const QuantizationDescription>(*read_quantization(checkpoint));  // throws
  std::lock_guard<std::mutex> lock(mutex);
  last = {checkpoint.path, text, description};
  return description;
}

}  // namespace

QuantizedWeightMatrix::QuantizedWeightMatrix(QuantizedRows rows)
    : WeightMatrix(rows.rows(), rows.cols()), rows_(std::move(rows)) {}

void QuantizedWeightMatrix::decode_f32(int64_t row_begin, int64_t row_end, int64_t col_begin, int64_t col_end,
                                       float* dst, int64_t dst_stride) const {
  rows_.decode_f32(row_begin, row_end, col_begin, col_end, dst, dst_stride);
}

std::unique_ptr<WeightMatrix> make_quantized_matrix(const Checkpoint& checkpoint, const std::string& name,
                                                    WeightLayout layout, const Shape& rows_cols) {
  const auto it = checkpoint.metadata.find(kQuantMetadataKey);
  if (it == checkpoint.metadata.end()) return nullptr;
  const auto description = checked_description(checkpoint, it->second);
  const QuantizedTensorEntry* entry = description->find(name);
  if (!entry) return nullptr;
  if (layout != WeightLayout::kOutIn)
    throw UnsupportedError(in_file(checkpoint.path, "tensor '" + name +
                                                        "' is quantized but is read as an [in, out] "
                                                        "matrix; only [out, in] matmul weights can be quantized"));
  if (entry->shape != rows_cols)
    throw FormatError(in_file(checkpoint.path, "tensor '" + name + "' has wrong shape; expected " +
                                                   shape_to_string(rows_cols) + ", got " +
                                                   shape_to_string(entry->shape) + " (its quantization entry)"));
  return std::make_unique<QuantizedWeightMatrix>(QuantizedRows(checkpoint, *entry));
}

}  // namespace hx
