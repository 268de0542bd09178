// A checkpoint opened for reading, whatever its format, and the streaming writer interface shared by all formats.
//
// Design goals: every reader returns the same thing — an ordered list of named zero-copy tensor views plus
// metadata — so inspect, repack, convert, quantize and the forward pass never care where bytes came from; every
// writer takes tensor *specs* first (so headers can be computed before any data exists) and then pulls bytes tensor
// by tensor from a source callback, so a model larger than RAM streams through. Non-goals: in-place editing,
// writing tensors whose size is unknown in advance.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "formats/tensor.h"

namespace hx {

class MappedFile;

enum class CheckpointFormat { kSafetensors, kPth, kPthLegacy };
const char* format_name(CheckpointFormat f);  // "safetensors", "pth", "pth-legacy" (cli.md inspect --json)

// A leaf of a .pth object tree that is not a tensor (str, int, float, bool, None), kept for inspect.
struct NonTensorLeaf {
  std::string path;   // '/'-joined, like tensor names
  std::string type;   // "str", "int", "float", "bool", "NoneType"
  std::string value;  // Python repr-like text
};

struct Checkpoint {
  CheckpointFormat format = CheckpointFormat::kSafetensors;
  std::string path;                            // what the user named: a file or a folder
  std::vector<std::string> files;              // the files the tensors come from (shards, the .pth)
  std::vector<NamedTensor> tensors;            // file order (safetensors: by offset; pth: pickle order)
  std::map<std::string, std::string> metadata;  // safetensors __metadata__; empty for .pth
  std::vector<NonTensorLeaf> other_leaves;     // .pth only
  std::string config_json_path;                // config.json beside the weights, "" if none

  const NamedTensor* find(const std::string& name) const;  // nullptr if absent; O(log n) after open
  std::shared_ptr<const void> name_index;  // owned by find()
};

// Opens any MODEL / PATH of cli.md: a .safetensors file; a folder with model.safetensors or
// model.safetensors.index.json + shards; a .pth/.pt/.bin PyTorch file (zip or legacy). The format is decided by
// content (magic bytes), not by extension. Stops at the first problem: FormatError / UnsupportedError / IoError.
Checkpoint open_checkpoint(const std::string& path);

// Every problem found in the file's structure (inspect --check): never throws for bad input, returns one sentence
// per problem naming the file and tensor. An empty list means the file loads.
std::vector<std::string> check_checkpoint_structure(const std::string& path);

// ---- writing ----
struct TensorSpec {
  std::string name;
  DType dtype = DType::kF32;
  Shape shape;
  uint64_t nbytes() const;  // contiguous byte size; throws FormatError on overflow / sub-byte misfit
};

// Writes the contiguous little-endian bytes of tensor `index` by calling `sink` one or more times with exactly
// specs[index].nbytes() bytes in total (writers check the count and fail naming the tensor otherwise).
using ByteSink = std::function<void(std::span<const std::byte>)>;
using TensorSource = std::function<void(size_t index, const ByteSink& sink)>;

// Specs and a source for existing views (repack): the views' bytes are streamed in C order.
std::vector<TensorSpec> specs_of(const std::vector<NamedTensor>& tensors);
TensorSource source_of(const std::vector<NamedTensor>& tensors);

}  // namespace hx
