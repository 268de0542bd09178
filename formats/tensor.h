// Tensor views over mapped files or owned buffers.
//
// Design goals: a tensor is a *view* — dtype, shape, strides (in elements), storage offset (in elements) and the
// bytes of its whole storage — that points into a memory-mapped checkpoint (zero-copy) or into an owned buffer;
// views keep their backing alive through a shared owner, so a model larger than RAM is read page by page on demand.
// Sizes are 64-bit everywhere (Gemma-4's PLE table alone has 2.35 G elements). Non-goals: arithmetic, broadcasting,
// devices — this is the currency between readers, writers, hashing and the forward pass, nothing more.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "formats/dtype.h"

namespace hx {

using Shape = std::vector<int64_t>;

// The bytes a storage holds plus whatever keeps them alive (a MappedFile, a std::vector, …).
struct Storage {
  std::span<const std::byte> bytes;
  std::shared_ptr<const void> owner;

  static Storage owned(std::vector<std::byte> data);
};

struct TensorView {
  DType dtype = DType::kF32;
  Shape shape;
  Shape strides;               // in elements; C-contiguous when built by contiguous()
  int64_t storage_offset = 0;  // in elements
  Storage storage;

  // A C-contiguous view of `storage` starting at byte 0.
  static TensorView contiguous(DType dtype, Shape shape, Storage storage);

  uint64_t numel() const;
  uint64_t nbytes() const;  // bytes of the contiguous copy
  bool is_contiguous() const;
  // The bytes of the tensor itself; valid only when is_contiguous().
  std::span<const std::byte> contiguous_bytes() const;
};

Shape contiguous_strides(const Shape& shape);
std::string shape_to_string(const Shape& shape);  // "[3, 4]"

// Product of dims with overflow and negativity checks; nullopt on overflow or a negative dim.
bool checked_numel(const Shape& shape, uint64_t* out);

// Checks that every element a view addresses lies inside its storage (sizes, strides, offset, overflow).
// Throws FormatError naming `what` (e.g. "file.pth: tensor 'w'") when it does not.
void check_view_in_bounds(const TensorView& v, const std::string& what);

// Streams the tensor's bytes in C order, contiguous, in chunks of at most `chunk_bytes` (a strided view is gathered
// into a scratch buffer of that size; a contiguous one is passed through without copying).
void for_each_contiguous_chunk(const TensorView& v, size_t chunk_bytes,
                               const std::function<void(std::span<const std::byte>)>& consume);

// The contiguous bytes of a tensor as an owned buffer (for small tensors and tests).
std::vector<std::byte> to_contiguous_bytes(const TensorView& v);

// A named tensor as readers return them; `name` follows cli.md (nested .pth paths joined with '/').
struct NamedTensor {
  std::string name;
  TensorView view;
};

}  // namespace hx
