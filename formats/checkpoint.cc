#include "formats/checkpoint.h"

#include <algorithm>

#include "formats/errors.h"

namespace hx {

const char* format_name(CheckpointFormat f) {
  switch (f) {
    case CheckpointFormat::kSafetensors: return "safetensors";
    case CheckpointFormat::kPth: return "pth";
    case CheckpointFormat::kPthLegacy: return "pth-legacy";
  }
  return "unknown";
}

namespace {
// Sorted (name, index) pairs, built on first use.
using NameIndex = std::vector<std::pair<std::string_view, size_t>>;
}  // namespace

const NamedTensor* Checkpoint::find(const std::string& name) const {
  auto index = std::static_pointer_cast<const NameIndex>(name_index);
  if (!index || index->size() != tensors.size()) {
    auto built = std::make_shared<NameIndex>();
    built->reserve(tensors.size());
    for (size_t i = 0; i < tensors.size(); ++i) built->emplace_back(tensors[i].name, i);
    std::sort(built->begin(), built->end());
    // find() is logically const: the index is a cache of `tensors`.
    const_cast<Checkpoint*>(this)->name_index = built;
    index = built;
  }
  auto it = std::lower_bound(index->begin(), index->end(), std::pair<std::string_view, size_t>(name, 0));
  if (it == index->end() || it->first != name) return nullptr;
  return &tensors[it->second];
}

uint64_t TensorSpec::nbytes() const {
  uint64_t numel = 0;
  if (!checked_numel(shape, &numel))
    throw FormatError("tensor '" + name + "': shape " + shape_to_string(shape) + " is negative or overflows 64 bits");
  const auto bytes = dtype_bytes_for(dtype, numel);
  if (!bytes)
    throw FormatError("tensor '" + name + "': " + std::to_string(numel) + " elements of " +
                      std::string(dtype_name(dtype)) + " do not fill whole bytes or overflow 64 bits");
  return *bytes;
}

std::vector<TensorSpec> specs_of(const std::vector<NamedTensor>& tensors) {
  std::vector<TensorSpec> specs;
  specs.reserve(tensors.size());
  for (const auto& t : tensors) specs.push_back({t.name, t.view.dtype, t.view.shape});
  return specs;
}

TensorSource source_of(const std::vector<NamedTensor>& tensors) {
  // 8 MiB chunks: large enough for full-speed write(2) calls, small enough to keep gathers of strided views in cache.
  constexpr size_t kChunkBytes = size_t{8} << 20;
  return [&tensors](size_t index, const ByteSink& sink) {
    for_each_contiguous_chunk(tensors.at(index).view, kChunkBytes, sink);
  };
}

}  // namespace hx
