// Uploading a quantized matrix to the GPU packed (cuda_internal.h upload_quantized): the codes as stored, scales and
// zeros widened to f32, so the GPU's kernels (quantized.cu) dequantize at the point of use.
//
// Design goals: one source of truth for layouts and values. The tensors and their shapes come from quant's own
// description (read_quantization, which validated them: a malformed file fails there with exit 3, naming the file
// and the tensor); fp6/fp5 codes are unpacked by quant's unpackers (fpx_unpack_row / fpx_unpack_tc) into one byte
// each, and their values come from quant's table (fpx_code_value), as the CPU decoder's do. int8, fp8 and portable
// int4 codes are uploaded byte for byte. Non-goal: gemlite int4 (a GPU-inference layout of other engines; it is
// decoded on the host by the caller instead).
#include <cstring>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "formats/errors.h"
#include "formats/float_convert.h"
#include "formats/parallel.h"
#include "quant/fpx.h"
#include "quant/quantized_checkpoint.h"
#include "verify/cuda/cuda_internal.h"

namespace hx::cuda {
namespace {

// The checked description of the last checkpoint asked about (a model asks for hundreds of matrices of one file).
std::shared_ptr<const QuantizationDescription> description_of(const Checkpoint& checkpoint) {
  static std::mutex mutex;
  static std::string last_path, last_text;
  static std::shared_ptr<const QuantizationDescription> last;
  const auto it = checkpoint.metadata.find(kQuantMetadataKey);
  if (it == checkpoint.metadata.end()) return nullptr;
  std::lock_guard<std::mutex> lock(mutex);
  if (!last || last_path != checkpoint.path || last_text != it->second) {
    last = std::make_shared<const QuantizationDescription>(*read_quantization(checkpoint));  // throws
    last_path = checkpoint.path;
    last_text = it->second;
  }
  return last;
}

std::span<const std::byte> part_bytes(const Checkpoint& checkpoint, const std::string& name) {
  const NamedTensor* t = checkpoint.find(name);
  if (!t) throw FormatError(in_file(checkpoint.path, "tensor '" + name + "' (a quantized part) is missing"));
  return t->view.contiguous_bytes();
}

// Scales (or zeros) of any stored float dtype as f32, `count` of them.
std::vector<float> as_f32(std::span<const std::byte> bytes, DType dtype, size_t count) {
  std::vector<float> out(count);
  for (size_t i = 0; i < count; ++i) {
    if (dtype == DType::kF32) {
      std::memcpy(&out[i], bytes.data() + 4 * i, 4);
    } else {
      uint16_t bits;
      std::memcpy(&bits, bytes.data() + 2 * i, 2);
      out[i] = dtype == DType::kF16 ? hx::f16_to_f32(bits) : hx::bf16_to_f32(bits);
    }
  }
  return out;
}

}  // namespace

bool upload_quantized(const Checkpoint& checkpoint, const std::string& name, DeviceMatrix& m, WeightStore& store) {
  const auto description = description_of(checkpoint);
  const QuantizedTensorEntry* entry = description ? description->find(name) : nullptr;
  if (!entry) return false;
  if (entry->scheme == QuantScheme::kInt4 && entry->layout != QuantLayout::kPortable) return false;
  const QuantizedParts parts = quantized_parts(*entry, checkpoint.path);
  const int64_t rows = entry->shape.at(0), cols = entry->shape.at(1);
  m.rows = rows, m.cols = cols;
  const std::span<const std::byte> packed = part_bytes(checkpoint, parts.packed.name);
  const std::span<const std::byte> scale = part_bytes(checkpoint, parts.scale.name);
  const std::string what = "'" + name + "' (" + std::string(scheme_name(entry->scheme)) + ")";

  // Per-row scales as f32 [rows] (fp8's tensor scale repeated: one kernel for both modes).
  const auto row_scales = [&] {
    if (entry->scheme == QuantScheme::kFp8 && entry->fp8_scale == Fp8ScaleMode::kPerTensor)
      return std::vector<float>(static_cast<size_t>(rows), as_f32(scale, DType::kF32, 1)[0]);
    return as_f32(scale, parts.scale.dtype, static_cast<size_t>(rows));
  };
  switch (entry->scheme) {
    case QuantScheme::kInt8:
    case QuantScheme::kFp8: {
      m.coding = entry->scheme == QuantScheme::kInt8 ? WeightCoding::kInt8 : WeightCoding::kFp8;
      m.data = store.put(packed.data(), packed.size(), what);
      const std::vector<float> s = row_scales();
      m.scales = store.put(s.data(), s.size() * sizeof(float), what + " scales");
      return true;
    }
    case QuantScheme::kFp6:
    case QuantScheme::kFp5: {
      m.coding = WeightCoding::kCodeTable;
      const FpxFormat format = fpx_format_of(entry->scheme);
      const auto* bits = reinterpret_cast<const uint8_t*>(packed.data());
      std::vector<uint8_t> codes(static_cast<size_t>(rows * cols));
      parallel_for(0, rows, 64, [&](int64_t r) {
        uint8_t* out = codes.data() + r * cols;
        if (entry->layout == QuantLayout::kTorchaoTc) {
          fpx_unpack_tc(bits, rows, cols, format, r, 0, cols, out);
        } else {
          fpx_unpack_row(bits + r * fpx_packed_row_bytes(cols, format), 0, cols, format, out);
        }
      });
      std::vector<float> table(kCodeTableSize);
      for (int c = 0; c < kCodeTableSize; ++c) table[static_cast<size_t>(c)] = fpx_code_value(uint8_t(c), format);
      m.data = store.put(codes.data(), codes.size(), what);
      m.table = store.put(table.data(), table.size() * sizeof(float), what + " code values");
      const std::vector<float> s = row_scales();
      m.scales = store.put(s.data(), s.size() * sizeof(float), what + " scales");
      return true;
    }
    case QuantScheme::kInt4: {
      m.coding = WeightCoding::kInt4;
      m.group = entry->group_size;
      const size_t groups = static_cast<size_t>(rows * (cols / entry->group_size));
      m.data = store.put(packed.data(), packed.size(), what);
      const std::vector<float> s = as_f32(scale, DType::kF32, groups);
      const std::vector<float> z = as_f32(part_bytes(checkpoint, parts.zero->name), DType::kF32, groups);
      m.scales = store.put(s.data(), s.size() * sizeof(float), what + " scales");
      m.zeros = store.put(z.data(), z.size() * sizeof(float), what + " zeros");
      return true;
    }
  }
  return false;
}

}  // namespace hx::cuda
