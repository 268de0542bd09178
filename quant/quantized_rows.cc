// The row decoders of quantized tensors (quant/quantized_rows.h): per-scheme row kernels (plain loops compiled for
// the baseline ISA and for AVX-512, chosen at run time like the codecs') and the tile walk of each layout.
#include "quant/quantized_rows.h"

#include <algorithm>
#include <array>
#include <cstring>
#include <vector>

#include "formats/errors.h"
#include "quant/hqq.h"
#include "quant/int8.h"
#include "quant/quantized_checkpoint.h"

namespace hx {
namespace {

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
void int4_group_generic(const uint8_t* q, int64_t n, float s, float z, float* out) {
  int4_group_kernel(q, n, s, z, out);
}
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

QuantizedRows::QuantizedRows(const Checkpoint& checkpoint, const QuantizedTensorEntry& e)
    : scheme_(e.scheme),
      layout_(e.layout),
      fp8_scale_(e.fp8_scale),
      group_size_(e.group_size),
      scale_dtype_(e.dtype),
      rows_(e.shape.at(0)),
      cols_(e.shape.at(1)) {
  const QuantizedParts parts = quantized_parts(e, checkpoint.path);  // throws for an inconsistent entry
  std::vector<std::shared_ptr<const void>> owners;
  auto data = [&](const TensorSpec& spec) {
    const NamedTensor* t = checkpoint.find(spec.name);
    if (!t)
      throw FormatError(in_file(checkpoint.path, "tensor '" + spec.name + "' (a part of quantized '" + e.name +
                                                     "') is missing; expected " + std::string(dtype_name(spec.dtype)) +
                                                     " " + shape_to_string(spec.shape)));
    if (t->view.dtype != spec.dtype || t->view.shape != spec.shape || !t->view.is_contiguous())
      throw FormatError(
          in_file(checkpoint.path, "tensor '" + spec.name + "' (a part of quantized '" + e.name +
                                       "') does not match; expected " + std::string(dtype_name(spec.dtype)) + " " +
                                       shape_to_string(spec.shape) + ", found " +
                                       std::string(dtype_name(t->view.dtype)) + " " + shape_to_string(t->view.shape)));
    check_view_in_bounds(t->view, in_file(checkpoint.path, "tensor '" + spec.name + "'"));
    owners.push_back(t->view.storage.owner);
    stored_bytes_ += t->view.nbytes();
    return t->view.contiguous_bytes().data();
  };
  packed_ = data(parts.packed);
  scales_ = data(parts.scale);
  if (parts.zero) zeros_ = data(*parts.zero);
  owner_ = std::make_shared<std::vector<std::shared_ptr<const void>>>(std::move(owners));
  if (scheme_ == QuantScheme::kFp8 || scheme_ == QuantScheme::kInt8) scale_dtype_ = DType::kF32;
  if ((scheme_ == QuantScheme::kFp6 || scheme_ == QuantScheme::kFp5) && layout_ == QuantLayout::kTorchaoTc &&
      !fpx_tc_shape_ok(rows_, cols_))
    throw FormatError(in_file(checkpoint.path, "tensor '" + e.name +
                                                   "': torchao-tc FPx weights need rows and "
                                                   "columns that are multiples of 64, found " +
                                                   shape_to_string(e.shape)));
  if ((scheme_ == QuantScheme::kFp6 || scheme_ == QuantScheme::kFp5) && layout_ == QuantLayout::kPortable &&
      cols_ % fpx_block_codes(fpx_format_of(scheme_)) != 0)
    throw FormatError(in_file(checkpoint.path, "tensor '" + e.name +
                                                   "': portable FPx weights need whole blocks per "
                                                   "row, found " +
                                                   std::to_string(cols_) + " columns"));
  if (scheme_ == QuantScheme::kInt4 && (!hqq_group_size_ok(group_size_) || cols_ % group_size_ != 0))
    throw FormatError(in_file(checkpoint.path, "tensor '" + e.name +
                                                   "': int4 weights need a group size of 32, 64, "
                                                   "128 or 256 that divides the columns, found group " +
                                                   std::to_string(group_size_) + " and " + std::to_string(cols_) +
                                                   " columns"));
}

void QuantizedRows::decode_f32(int64_t row_begin, int64_t row_end, int64_t col_begin, int64_t col_end, float* dst,
                               int64_t dst_stride) const {
  switch (scheme_) {
    case QuantScheme::kInt8:
      return decode_int8(row_begin, row_end, col_begin, col_end, dst, dst_stride);
    case QuantScheme::kFp8:
      return decode_fp8(row_begin, row_end, col_begin, col_end, dst, dst_stride);
    case QuantScheme::kFp6:
    case QuantScheme::kFp5:
      return decode_fpx(row_begin, row_end, col_begin, col_end, dst, dst_stride);
    case QuantScheme::kInt4:
      return decode_int4(row_begin, row_end, col_begin, col_end, dst, dst_stride);
  }
}

std::string QuantizedRows::describe() const {
  std::string what;
  switch (scheme_) {
    case QuantScheme::kInt8:
      what = "int8 (row scales)";
      break;
    case QuantScheme::kFp8:
      what = fp8_scale_ == Fp8ScaleMode::kPerRow ? "fp8 e4m3fn (row scales)" : "fp8 e4m3fn (tensor scale)";
      break;
    case QuantScheme::kFp6:
    case QuantScheme::kFp5:
      what = std::string(scheme_ == QuantScheme::kFp6 ? "fp6 e3m2 (" : "fp5 e2m2 (") +
             std::string(layout_name(layout_)) + ")";
      break;
    case QuantScheme::kInt4:
      what = "int4 hqq g" + std::to_string(group_size_) + " (" + std::string(layout_name(layout_)) + ")";
      break;
  }
  return shape_text(what.c_str(), rows_, cols_);
}

// ---- int8 ----

void QuantizedRows::decode_int8(int64_t row_begin, int64_t row_end, int64_t col_begin, int64_t col_end, float* dst,
                                int64_t dst_stride) const {
  const auto kernel = quant_use_avx512() ? int8_decode_avx512 : int8_decode_generic;
  const auto* codes = reinterpret_cast<const int8_t*>(packed_);
  for (int64_t r = row_begin; r < row_end; ++r)
    kernel(codes + r * cols_ + col_begin, col_end - col_begin, load_f32(scales_ + 4 * r),
           dst + (r - row_begin) * dst_stride);
}

// ---- fp8 ----

void QuantizedRows::decode_fp8(int64_t row_begin, int64_t row_end, int64_t col_begin, int64_t col_end, float* dst,
                               int64_t dst_stride) const {
  const float* table = e4m3_table().data();
  const auto* codes = reinterpret_cast<const uint8_t*>(packed_);
  for (int64_t r = row_begin; r < row_end; ++r) {
    const float scale = load_f32(scales_ + (fp8_scale_ == Fp8ScaleMode::kPerRow ? 4 * r : 0));
    table_decode(codes + r * cols_ + col_begin, col_end - col_begin, table, scale, dst + (r - row_begin) * dst_stride);
  }
}

// ---- fp6 / fp5 ----

float QuantizedRows::fpx_row_scale(int64_t r) const {
  if (scale_dtype_ == DType::kF32) return load_f32(scales_ + 4 * r);
  const uint16_t bits = load_u16(scales_ + 2 * r);
  return scale_dtype_ == DType::kF16 ? f16_to_f32(bits) : bf16_to_f32(bits);
}

void QuantizedRows::decode_fpx(int64_t row_begin, int64_t row_end, int64_t col_begin, int64_t col_end, float* dst,
                               int64_t dst_stride) const {
  const FpxFormat format = fpx_format_of(scheme_);
  const float* table = fpx_table(format).data();
  const auto* packed = reinterpret_cast<const uint8_t*>(packed_);
  thread_local std::vector<uint8_t> codes;
  const BlockRange blocks = whole_blocks(col_begin, col_end, cols_, fpx_block_codes(format));
  codes.resize(static_cast<size_t>(blocks.end - blocks.begin));
  for (int64_t r = row_begin; r < row_end; ++r) {
    if (layout_ == QuantLayout::kTorchaoTc) {
      fpx_unpack_tc(packed, rows_, cols_, format, r, col_begin, col_end - col_begin,
                    codes.data() + (col_begin - blocks.begin));
    } else {
      fpx_unpack_row(packed + r * fpx_packed_row_bytes(cols_, format), blocks.begin, blocks.end - blocks.begin, format,
                     codes.data());
    }
    table_decode(codes.data() + (col_begin - blocks.begin), col_end - col_begin, table, fpx_row_scale(r),
                 dst + (r - row_begin) * dst_stride);
  }
}

// ---- int4 ----

void QuantizedRows::decode_int4(int64_t row_begin, int64_t row_end, int64_t col_begin, int64_t col_end, float* dst,
                                int64_t dst_stride) const {
  if (layout_ == QuantLayout::kGemlite) {
    // Words are [cols/8][rows]: walk a word row (8 columns) across the rows of the tile.
    for (int64_t r = row_begin; r < row_end; ++r) {
      float* out = dst + (r - row_begin) * dst_stride;
      for (int64_t c = col_begin; c < col_end; ++c) {
        uint32_t word;
        std::memcpy(&word, packed_ + 4 * ((c / 8) * rows_ + r), 4);
        const int64_t g = c / group_size_;
        const float scale = f16_to_f32(load_u16(scales_ + 2 * (g * rows_ + r)));
        const float offset = f16_to_f32(load_u16(zeros_ + 2 * (g * rows_ + r)));
        out[c - col_begin] = static_cast<float>((word >> (4 * (c % 8))) & 0x0f) * scale + offset;
      }
    }
    return;
  }
  const int64_t groups = cols_ / group_size_;
  const auto kernel = quant_use_avx512() ? int4_group_avx512 : int4_group_generic;
  thread_local std::vector<uint8_t> codes;
  const BlockRange blocks = whole_blocks(col_begin, col_end, cols_, 2);
  codes.resize(static_cast<size_t>(blocks.end - blocks.begin));
  const auto* packed = reinterpret_cast<const uint8_t*>(packed_);
  for (int64_t r = row_begin; r < row_end; ++r) {
    int4_unpack_row(packed + r * (cols_ / 2), blocks.begin, blocks.end - blocks.begin, codes.data());
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

}  // namespace hx
