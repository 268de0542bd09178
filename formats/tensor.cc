#include "formats/tensor.h"

#include <cstring>

#include "formats/errors.h"

namespace hx {

Storage Storage::owned(std::vector<std::byte> data) {
  auto holder = std::make_shared<std::vector<std::byte>>(std::move(data));
  Storage s;
  s.bytes = std::span<const std::byte>(holder->data(), holder->size());
  s.owner = holder;
  return s;
}

Shape contiguous_strides(const Shape& shape) {
  Shape strides(shape.size());
  int64_t running = 1;
  for (size_t i = shape.size(); i-- > 0;) {
    strides[i] = running;
    running *= std::max<int64_t>(shape[i], 1);
  }
  return strides;
}

std::string shape_to_string(const Shape& shape) {
  std::string s = "[";
  for (size_t i = 0; i < shape.size(); ++i) {
    if (i) s += ", ";
    s += std::to_string(shape[i]);
  }
  return s + "]";
}

bool checked_numel(const Shape& shape, uint64_t* out) {
  uint64_t n = 1;
  for (int64_t d : shape) {
    if (d < 0) return false;
    if (__builtin_mul_overflow(n, static_cast<uint64_t>(d), &n)) return false;
  }
  *out = n;
  return true;
}

TensorView TensorView::contiguous(DType dtype, Shape shape, Storage storage) {
  TensorView v;
  v.dtype = dtype;
  v.strides = contiguous_strides(shape);
  v.shape = std::move(shape);
  v.storage = std::move(storage);
  return v;
}

uint64_t TensorView::numel() const {
  uint64_t n = 0;
  return checked_numel(shape, &n) ? n : 0;
}

uint64_t TensorView::nbytes() const { return dtype_bytes_for(dtype, numel()).value_or(0); }

bool TensorView::is_contiguous() const {
  int64_t expected = 1;
  for (size_t i = shape.size(); i-- > 0;) {
    if (shape[i] == 1) continue;  // torch ignores the stride of size-1 dims
    if (shape[i] == 0) return true;
    if (strides[i] != expected) return false;
    expected *= shape[i];
  }
  return true;
}

std::span<const std::byte> TensorView::contiguous_bytes() const {
  const uint64_t n = nbytes();
  if (n == 0) return {};
  const uint64_t start = static_cast<uint64_t>(storage_offset) * dtype_element_size(dtype);
  return storage.bytes.subspan(start, n);
}

void check_view_in_bounds(const TensorView& v, const std::string& what) {
  if (v.shape.size() != v.strides.size())
    throw FormatError(what + ": shape " + shape_to_string(v.shape) + " and strides " + shape_to_string(v.strides) +
                      " have different ranks");
  uint64_t numel = 0;
  if (!checked_numel(v.shape, &numel))
    throw FormatError(what + ": shape " + shape_to_string(v.shape) + " has a negative dimension or overflows 64 bits");
  if (v.storage_offset < 0) throw FormatError(what + ": negative storage offset " + std::to_string(v.storage_offset));
  const auto total = dtype_bytes_for(v.dtype, numel);
  if (!total)
    throw FormatError(what + ": " + std::to_string(numel) + " elements of " + std::string(dtype_name(v.dtype)) +
                      " do not fill whole bytes or overflow 64 bits");
  if (numel == 0) return;
  const uint32_t es = dtype_element_size(v.dtype);
  uint64_t end_byte = 0;  // one past the last byte addressed
  if (es == 0) {          // sub-byte dtypes are only ever stored densely
    if (!v.is_contiguous() || v.storage_offset != 0)
      throw FormatError(what + ": a sub-byte dtype (" + std::string(dtype_name(v.dtype)) + ") must be contiguous at offset 0");
    end_byte = *total;
  } else {
    uint64_t last = static_cast<uint64_t>(v.storage_offset);
    for (size_t i = 0; i < v.shape.size(); ++i) {
      if (v.strides[i] < 0) throw FormatError(what + ": negative stride " + std::to_string(v.strides[i]));
      uint64_t span = 0;
      if (__builtin_mul_overflow(static_cast<uint64_t>(v.shape[i] - 1), static_cast<uint64_t>(v.strides[i]), &span) ||
          __builtin_add_overflow(last, span, &last))
        throw FormatError(what + ": strides " + shape_to_string(v.strides) + " overflow 64 bits");
    }
    if (__builtin_add_overflow(last, 1, &last) || __builtin_mul_overflow(last, es, &end_byte))
      throw FormatError(what + ": extent overflows 64 bits");
  }
  if (end_byte > v.storage.bytes.size())
    throw FormatError(what + ": needs " + std::to_string(end_byte) + " bytes of storage (offset " +
                      std::to_string(v.storage_offset) + ", shape " + shape_to_string(v.shape) + ", strides " +
                      shape_to_string(v.strides) + "), found " + std::to_string(v.storage.bytes.size()));
}

void for_each_contiguous_chunk(const TensorView& v, size_t chunk_bytes,
                               const std::function<void(std::span<const std::byte>)>& consume) {
  const uint64_t total = v.nbytes();
  if (total == 0) return;
  if (v.is_contiguous()) {
    const auto bytes = v.contiguous_bytes();
    for (uint64_t pos = 0; pos < total; pos += chunk_bytes)
      consume(bytes.subspan(pos, std::min<uint64_t>(chunk_bytes, total - pos)));
    return;
  }
  // Strided: walk the index space in C order with an odometer; copy runs along the last dimension.
  const uint32_t es = dtype_element_size(v.dtype);
  const size_t rank = v.shape.size();
  const int64_t inner = v.shape[rank - 1];
  const int64_t inner_stride = v.strides[rank - 1];
  std::vector<std::byte> scratch(std::max<size_t>(chunk_bytes, es));
  size_t filled = 0;
  std::vector<int64_t> index(rank, 0);
  const std::byte* base = v.storage.bytes.data();
  const uint64_t rows = v.numel() / static_cast<uint64_t>(inner);
  for (uint64_t row = 0; row < rows; ++row) {
    int64_t offset = v.storage_offset;
    for (size_t d = 0; d + 1 < rank; ++d) offset += index[d] * v.strides[d];
    for (int64_t j = 0; j < inner; ++j) {
      if (filled + es > scratch.size()) {
        consume(std::span<const std::byte>(scratch.data(), filled));
        filled = 0;
      }
      std::memcpy(scratch.data() + filled, base + static_cast<uint64_t>(offset + j * inner_stride) * es, es);
      filled += es;
    }
    for (size_t d = rank - 1; d-- > 0;) {  // advance the odometer over the outer dims
      if (++index[d] < v.shape[d]) break;
      index[d] = 0;
    }
  }
  if (filled) consume(std::span<const std::byte>(scratch.data(), filled));
}

std::vector<std::byte> to_contiguous_bytes(const TensorView& v) {
  std::vector<std::byte> out;
  out.reserve(v.nbytes());
  for_each_contiguous_chunk(v, 1 << 20, [&](std::span<const std::byte> c) { out.insert(out.end(), c.begin(), c.end()); });
  return out;
}

}  // namespace hx
