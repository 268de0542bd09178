// Shared between pth.cc (zip format, writer) and pth_legacy.cc; not part of the public API.
#pragma once

#include <functional>
#include <memory>
#include <span>
#include <string>

#include "formats/checkpoint.h"
#include "formats/pickle.h"

namespace hx::pth_detail {

// Returns the bytes of a storage persistent id, already trimmed to its declared size; `tensor` names the first
// tensor that uses it (for messages).
using StorageResolver = std::function<Storage(const PyStorageRef& ref, const std::string& tensor)>;

// The dtype and byte size a storage persistent id declares (UntypedStorage counts bytes as U8).
DType storage_dtype(const PyStorageRef& ref);
uint64_t storage_declared_bytes(const PyStorageRef& ref, const std::string& file);

// Flattens the pickle's object tree into out->tensors (bounds-checked views) and out->other_leaves.
void flatten_pickle(const PickleResult& pickle, const std::string& file, const StorageResolver& resolve,
                    Checkpoint* out);

Checkpoint read_legacy(std::span<const std::byte> bytes, const std::shared_ptr<const void>& owner,
                       const std::string& file);

}  // namespace hx::pth_detail
