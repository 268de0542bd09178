#include "quant/quantized_weights.h"

#include <algorithm>
#include <array>
#include <cstring>
#include <mutex>
#include <vector>

#include "formats/errors.h"
#include "quant/hqq.h"
#include "quant/int8.h"
#include "quant/quantized_checkpoint.h"
#include "verify/model_weights.h"

namespace hx {
namespace {

float load_f32(const std::byte* p) {
  float v;
  std::memcpy(&v, p, 4);
  return v;
}

uint16_t load_u16(const std::byte* p) {
  uint16_t v;
  std::memcpy(&v, p, 2);
  return v;
}

std::string shape_text(const char* what, int64_t rows, int64_t cols) {
  return std::string(what) + " [" + std::to_string(rows) + ", " + std::to_string(cols) + "]";
}

// ---- row kernels (plain loops, compiled for both ISAs) ----

HX_QUANT_INLINE void int8_decode_kernel(const int8_t* q, int64_t n, float scale, float* out) {
  for (int64_t i = 0; i < n; ++i) out[i] = static_cast<float>(q[i]) * scale;
}
void int8_decode_generic(const int8_t* q, int64_t n, float scale, float* out) { int8_decode_kernel(q, n, scale, out); }
HX_QUANT_AVX512 void int8_decode_avx512(const int8_t* q, int64_t n, float scale, float* out) {
  int8_decode_kernel(q, n, scale, out);
}

// Codes through a table of values, times a scale: fp8 (256 entries) and FPx (64).
HX_QUANT_INLINE void table_decode_kernel(const uint8_t* codes, int64_t n, const float* table, float scale, float* out) {
  for (int64_t i = 0; i < n; ++i) out[i] = table[codes[i]] * scale;
}
void table_decode_generic(const uint8_t* c, int64_t n, const float* t, float s, float* out) {
  table_decode_kernel(c, n, t, s, out);
}
HX_QUANT_AVX512 void table_decode_avx512(const uint8_t* c, int64_t n, const float* t, float s, float* out) {
  table_decode_kernel(c, n, t, s, out);
}

void table_decode(const uint8_t* codes, int64_t n, const float* table, float scale, float* out) {
  (quant_use_avx512() ? table_decode_avx512 : table_decode_generic)(codes, n, table, scale, out);
}

// (q − z) · s over one group's codes.
HX_QUANT_INLINE void int4_group_kernel(const uint8_t* q, int64_t n, float scale, float zero, float* out) {
  for (int64_t i = 0; i < n; ++i) out[i] = (static_cast<float>(q[i]) - zero) * scale;
}
void int4_group_generic(const uint8_t* q, int64_t n, float s, float z, float* out) { int4_group_kernel(q, n, s, z, out); }
HX_QUANT_AVX512 void int4_group_avx512(const uint8_t* q, int64_t n, float s, float z, float* out) {
  int4_group_kernel(q, n, s, z, out);
}

// Widens [col_begin, col_end) to whole blocks of `block` columns (the last may end at cols).
struct BlockRange {
  int64_t begin, end;
};
BlockRange whole_blocks(int64_t col_begin, int64_t col_end, int64_t cols, int64_t block) {
  return {col_begin / block * block, std::min(cols, (col_end + block - 1) / block * block)};
}

const std::array<float, 256>& e4m3_table() {
  static const std::array<float, 256> table = [] {
    std::array<float, 256> t{};
    for (uint32_t c = 0; c < 256; ++c) t[c] = fp8_decode(static_cast<uint8_t>(c), 1.0f);
    return t;
  }();
  return table;
}

const std::array<float, 64>& fpx_table(FpxFormat f) {
  static const std::array<std::array<float, 64>, 2> tables = [] {
    std::array<std::array<float, 64>, 2> t{};
    for (uint32_t c = 0; c < 64; ++c) {
      t[0][c] = fpx_code_value(static_cast<uint8_t>(c), FpxFormat::kE3M2);
      t[1][c] = fpx_code_value(static_cast<uint8_t>(c), FpxFormat::kE2M2);
    }
    return t;
  }();
  return tables[f == FpxFormat::kE3M2 ? 0 : 1];
}

}  // namespace

// ---- Int8RowScaled ----

Int8RowScaled::Int8RowScaled(const void* codes, const void* scales, int64_t rows, int64_t cols,
                             std::shared_ptr<const void> owner)
    : WeightMatrix(rows, cols),
      codes_(static_cast<const int8_t*>(codes)),
      scales_(static_cast<const std::byte*>(scales)),
      owner_(std::move(owner)) {}

void Int8RowScaled::decode_f32(int64_t row_begin, int64_t row_end, int64_t col_begin, int64_t col_end, float* dst,
                               int64_t dst_stride) const {
  const auto kernel = quant_use_avx512() ? int8_decode_avx512 : int8_decode_generic;
  for (int64_t r = row_begin; r < row_end; ++r)
    kernel(codes_ + r * cols() + col_begin, col_end - col_begin, load_f32(scales_ + 4 * r),
           dst + (r - row_begin) * dst_stride);
}

std::string Int8RowScaled::describe() const { return shape_text("int8 (row scales)", rows(), cols()); }

// ---- Fp8RowScaled ----

Fp8RowScaled::Fp8RowScaled(const void* codes, const void* scales, Fp8ScaleMode mode, int64_t rows, int64_t cols,
                           std::shared_ptr<const void> owner)
    : WeightMatrix(rows, cols),
      codes_(static_cast<const uint8_t*>(codes)),
      scales_(static_cast<const std::byte*>(scales)),
      mode_(mode),
      owner_(std::move(owner)) {}

void Fp8RowScaled::decode_f32(int64_t row_begin, int64_t row_end, int64_t col_begin, int64_t col_end, float* dst,
                              int64_t dst_stride) const {
  const float* table = e4m3_table().data();
  for (int64_t r = row_begin; r < row_end; ++r) {
    const float scale = load_f32(scales_ + (mode_ == Fp8ScaleMode::kPerRow ? 4 * r : 0));
    table_decode(codes_ + r * cols() + col_begin, col_end - col_begin, table, scale, dst + (r - row_begin) * dst_stride);
  }
}

std::string Fp8RowScaled::describe() const {
  return shape_text(mode_ == Fp8ScaleMode::kPerRow ? "fp8 e4m3fn (row scales)" : "fp8 e4m3fn (tensor scale)", rows(),
                    cols());
}

// ---- FpxRowScaled ----

FpxRowScaled::FpxRowScaled(FpxFormat format, QuantLayout layout, const void* packed, const void* scales,
                           DType scale_dtype, int64_t rows, int64_t cols, std::shared_ptr<const void> owner)
    : WeightMatrix(rows, cols),
      format_(format),
      layout_(layout),
      packed_(static_cast<const uint8_t*>(packed)),
      scales_(static_cast<const std::byte*>(scales)),
      scale_dtype_(scale_dtype),
      owner_(std::move(owner)) {
  if (layout == QuantLayout::kTorchaoTc && !fpx_tc_shape_ok(rows, cols))
    throw UsageError("torchao-tc FPx weights need rows and columns that are multiples of 64");
  if (layout == QuantLayout::kPortable && cols % fpx_block_codes(format) != 0)
    throw UsageError("portable FPx weights need whole blocks per row");
}

float FpxRowScaled::row_scale(int64_t r) const {
  if (scale_dtype_ == DType::kF32) return load_f32(scales_ + 4 * r);
  const uint16_t bits = load_u16(scales_ + 2 * r);
  return scale_dtype_ == DType::kF16 ? f16_to_f32(bits) : bf16_to_f32(bits);
}

void FpxRowScaled::decode_f32(int64_t row_begin, int64_t row_end, int64_t col_begin, int64_t col_end, float* dst,
                              int64_t dst_stride) const {
  const float* table = fpx_table(format_).data();
  thread_local std::vector<uint8_t> codes;
  const BlockRange blocks = whole_blocks(col_begin, col_end, cols(), fpx_block_codes(format_));
  codes.resize(static_cast<size_t>(blocks.end - blocks.begin));
  for (int64_t r = row_begin; r < row_end; ++r) {
    if (layout_ == QuantLayout::kTorchaoTc) {
      fpx_unpack_tc(packed_, rows(), cols(), format_, r, col_begin, col_end - col_begin,
                    codes.data() + (col_begin - blocks.begin));
    } else {
      fpx_unpack_row(packed_ + r * fpx_packed_row_bytes(cols(), format_), blocks.begin, blocks.end - blocks.begin,
                     format_, codes.data());
    }
    table_decode(codes.data() + (col_begin - blocks.begin), col_end - col_begin, table, row_scale(r),
                 dst + (r - row_begin) * dst_stride);
  }
}

std::string FpxRowScaled::describe() const {
  return shape_text((std::string(format_ == FpxFormat::kE3M2 ? "fp6 e3m2 " : "fp5 e2m2 ") + "(" +
                     std::string(layout_name(layout_)) + ")").c_str(), rows(), cols());
}

// ---- Int4Grouped ----

Int4Grouped::Int4Grouped(QuantLayout layout, int group_size, const void* packed, const void* scales, const void* zeros,
                         int64_t rows, int64_t cols, std::shared_ptr<const void> owner)
    : WeightMatrix(rows, cols),
      layout_(layout),
      group_size_(group_size),
      packed_(static_cast<const std::byte*>(packed)),
      scales_(static_cast<const std::byte*>(scales)),
      zeros_(static_cast<const std::byte*>(zeros)),
      owner_(std::move(owner)) {
  if (!hqq_group_size_ok(group_size) || cols % group_size != 0)
    throw UsageError("int4 weights need a group size of 32, 64, 128 or 256 that divides the columns");
}

void Int4Grouped::decode_f32(int64_t row_begin, int64_t row_end, int64_t col_begin, int64_t col_end, float* dst,
                             int64_t dst_stride) const {
  const int64_t groups = cols() / group_size_;
  if (layout_ == QuantLayout::kGemlite) {
    // Words are [cols/8][rows]: walk a word row (8 columns) across the rows of the tile.
    for (int64_t r = row_begin; r < row_end; ++r) {
      float* out = dst + (r - row_begin) * dst_stride;
      for (int64_t c = col_begin; c < col_end; ++c) {
        uint32_t word;
        std::memcpy(&word, packed_ + 4 * ((c / 8) * rows() + r), 4);
        const int64_t g = c / group_size_;
        const float scale = f16_to_f32(load_u16(scales_ + 2 * (g * rows() + r)));
        const float offset = f16_to_f32(load_u16(zeros_ + 2 * (g * rows() + r)));
        out[c - col_begin] = static_cast<float>((word >> (4 * (c % 8))) & 0x0f) * scale + offset;
      }
    }
    return;
  }
  const auto kernel = quant_use_avx512() ? int4_group_avx512 : int4_group_generic;
  thread_local std::vector<uint8_t> codes;
  const BlockRange blocks = whole_blocks(col_begin, col_end, cols(), 2);
  codes.resize(static_cast<size_t>(blocks.end - blocks.begin));
  const auto* packed = reinterpret_cast<const uint8_t*>(packed_);
  for (int64_t r = row_begin; r < row_end; ++r) {
    int4_unpack_row(packed + r * (cols() / 2), blocks.begin, blocks.end - blocks.begin, codes.data());
    float* out = dst + (r - row_begin) * dst_stride;
    for (int64_t c = col_begin; c < col_end;) {  // one group (or the part of it inside the tile) at a time
      const int64_t g = c / group_size_;
      const int64_t end = std::min(col_end, (g + 1) * group_size_);
      const int64_t index = r * groups + g;
      kernel(codes.data() + (c - blocks.begin), end - c, load_f32(scales_ + 4 * index), load_f32(zeros_ + 4 * index),
             out + (c - col_begin));
      c = end;
    }
  }
}

std::string Int4Grouped::describe() const {
  return shape_text(("int4 hqq g" + std::to_string(group_size_) + " (" + std::string(layout_name(layout_)) + ")").c_str(),
                    rows(), cols());
}

// ---- from a checkpoint ----

std::unique_ptr<WeightMatrix> make_quantized_weight(const Checkpoint& checkpoint, const QuantizedTensorEntry& e) {
  const QuantizedParts parts = quantized_parts(e, checkpoint.path);
  std::shared_ptr<const void> owner;
  auto data = [&](const TensorSpec& spec) {
    const NamedTensor* t = checkpoint.find(spec.name);
    if (!t || t->view.dtype != spec.dtype || t->view.shape != spec.shape || !t->view.is_contiguous())
      throw FormatError(in_file(checkpoint.path, "tensor '" + spec.name + "' is missing or does not match " +
                                                     std::string(dtype_name(spec.dtype)) + " " +
                                                     shape_to_string(spec.shape)));
    owner = t->view.storage.owner;
    return static_cast<const void*>(t->view.contiguous_bytes().data());
  };
  const int64_t rows = e.shape[0], cols = e.shape[1];
  const void* packed = data(parts.packed);
  const void* scale = data(parts.scale);
  switch (e.scheme) {
    case QuantScheme::kInt8: return std::make_unique<Int8RowScaled>(packed, scale, rows, cols, owner);
    case QuantScheme::kFp8: return std::make_unique<Fp8RowScaled>(packed, scale, e.fp8_scale, rows, cols, owner);
    case QuantScheme::kFp6:
    case QuantScheme::kFp5:
      return std::make_unique<FpxRowScaled>(fpx_format_of(e.scheme), e.layout, packed, scale, e.dtype, rows, cols, owner);
    case QuantScheme::kInt4: {
      const void* zero = data(*parts.zero);
      return std::make_unique<Int4Grouped>(e.layout, e.group_size, packed, scale, zero, rows, cols, owner);
    }
  }
  throw UsageError("unknown quantization scheme");
}

namespace {

std::unique_ptr<WeightMatrix> quantized_encoding(const Checkpoint& checkpoint, const std::string& name,
                                                 WeightLayout layout, const Shape& rows_cols) {
  if (!checkpoint.metadata.count(kQuantMetadataKey)) return nullptr;
  const std::optional<QuantizationDescription> description = read_quantization(checkpoint);  // strict: throws
  const QuantizedTensorEntry* entry = description->find(name);
  if (!entry) return nullptr;
  if (layout != WeightLayout::kOutIn)
    throw UnsupportedError(in_file(checkpoint.path, "tensor '" + name + "' is quantized but is read as an [in, out] "
                                                    "matrix; only [out, in] matmul weights can be quantized"));
  if (entry->shape != rows_cols)
    throw FormatError(in_file(checkpoint.path, "tensor '" + name + "' has wrong shape; expected " +
                                                   shape_to_string(rows_cols) + ", got " + shape_to_string(entry->shape) +
                                                   " (its quantization entry)"));
  return make_quantized_weight(checkpoint, *entry);
}

}  // namespace

void register_quantized_weight_encodings() {
  static std::once_flag once;  // idempotent: a second registration would only be asked second
  std::call_once(once, [] { register_weight_encoding("hxforge quantized", quantized_encoding); });
}

}  // namespace hx
