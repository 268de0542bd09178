// safetensors: reader (single file and sharded folder), structure checker and streaming writer.
//
// Format (huggingface/safetensors README): an 8-byte little-endian u64 N, N bytes of UTF-8 JSON that start with '{'
// (trailing spaces allowed), then the data buffer. The JSON maps each tensor name to
// {"dtype": "F32", "shape": [2, 4], "data_offsets": [BEGIN, END]} (offsets relative to the buffer) and may hold
// "__metadata__": {string: string}. A sharded checkpoint is a folder with model-0000K-of-0000N.safetensors files and
// model.safetensors.index.json ({"metadata": {"total_size": bytes}, "weight_map": {tensor: shard file}}).
//
// Design goals:
//  - Hostile input is expected. Validation follows the reference implementation (safetensors/src/tensor.rs) and adds
//    to it: header length ≤ 100 MB and inside the file; UTF-8; JSON object starting with '{'; duplicate keys
//    rejected (nlohmann silently keeps one, so the parser detects them itself); known dtypes; non-negative integer
//    dims; shape × dtype bits checked for overflow and whole bytes; END − BEGIN == size; tensors sorted by offset
//    tile the buffer exactly from 0 to its end (no overlap, no holes, no trailing bytes — no polyglot files).
//  - One validation path, two modes: read_* stops at the first problem and throws FormatError / UnsupportedError
//    (exit 3) naming file, tensor, expected and found; check_* collects every problem (inspect --check) and never
//    throws for bad content. The first problem check_* reports is exactly the message read_* throws.
//  - Zero copy: tensors are views into the MappedFile, which their Storage.owner keeps alive.
//  - The writer streams: the header is computed from the specs, then bytes are pulled tensor by tensor from the
//    source and counted; output goes through AtomicOutputFile (a sharded folder is built in a temporary sibling
//    folder and renamed into place), so a failure never leaves anything under the requested name.
//  - Output follows the conventions of the Python package: header padded with spaces to a multiple of 8 bytes,
//    `__metadata__` first, HF shard and index names, so transformers and `safetensors` load it.
// Non-goals: big-endian hosts; writing in the reference's dtype-alignment order (tensors keep spec order); reading
// files whose header exceeds the 100 MB limit the reference also refuses.
#pragma once

#include <cstddef>
#include <cstdint>
#include <map>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "formats/checkpoint.h"

namespace hx {

// The reference implementation's MAX_HEADER_SIZE: a longer header is refused before it is read (DoS resistance).
inline constexpr uint64_t kSafetensorsMaxHeaderBytes = 100'000'000;
// Most dimensions a tensor may have. No real checkpoint comes close; the cap bounds the work and memory one header
// entry can demand (the reference has no cap, safetensors-cpp allows 8).
inline constexpr size_t kSafetensorsMaxRank = 64;
// The writer pads the header so that the data buffer starts at a multiple of this (as the Python writer does).
inline constexpr uint64_t kSafetensorsHeaderAlignment = 8;

inline constexpr const char* kSafetensorsSingleFileName = "model.safetensors";
inline constexpr const char* kSafetensorsIndexFileName = "model.safetensors.index.json";

// ---- reading ----

// Maps `path` and returns its tensors ordered by offset as zero-copy views. Throws FormatError / UnsupportedError at
// the first problem, IoError when the file cannot be opened or mapped.
Checkpoint read_safetensors_file(const std::string& path);

// A folder holding model.safetensors, or model.safetensors.index.json plus its shards (model.safetensors wins when
// both exist, as in transformers). Shards are read in file-name order, tensors in offset order within each. Sets
// files, metadata (the first shard's __metadata__) and config_json_path (config.json in the folder, if present).
Checkpoint read_safetensors_folder(const std::string& dir);

// True when `dir` is a folder holding model.safetensors or model.safetensors.index.json.
bool is_safetensors_folder(const std::string& dir);

// Every structural problem, one sentence each naming the file and tensor; empty when the file loads. Problems in the
// content never throw; IoError is still thrown when `path` itself cannot be opened.
std::vector<std::string> check_safetensors_file(const std::string& path);
std::vector<std::string> check_safetensors_folder(const std::string& dir);

// The same on bytes in memory (fuzzing, tests). `name` is used in messages; `owner` keeps `bytes` alive and becomes
// every view's Storage.owner.
Checkpoint read_safetensors_bytes(std::span<const std::byte> bytes, const std::string& name,
                                  std::shared_ptr<const void> owner);
std::vector<std::string> check_safetensors_bytes(std::span<const std::byte> bytes, const std::string& name);

// ---- writing ----

struct SafetensorsWriteOptions {
  std::map<std::string, std::string> metadata;  // __metadata__ (of every shard when sharded)
  uint64_t max_shard_bytes = 0;                 // 0: one file at `path`; > 0: `path` is a folder of shards
  bool overwrite = false;                       // replace an existing output (cli.md --force)
};

// Writes `specs` (in that order, contiguous) pulling each tensor's bytes from `source`. With max_shard_bytes > 0,
// `path` is a folder: tensors are packed greedily in spec order into model-0000K-of-0000N.safetensors files of at
// most max_shard_bytes of tensor data (a larger tensor gets a shard of its own), plus model.safetensors.index.json;
// the folder is created (or, with overwrite, replaced as a whole) only once everything is written.
// Throws FormatError for invalid specs (duplicate or reserved names, bad shapes, a source that writes too few or too
// many bytes), UnsupportedError for a dtype safetensors cannot name, UsageError when `path` exists and !overwrite,
// IoError when the OS refuses; nothing is left under `path` (nor any temporary) then. With overwrite, an existing
// folder is replaced only if it has no subfolders (UsageError otherwise), so that a mistyped --out cannot delete a
// tree.
void write_safetensors(const std::string& path, const std::vector<TensorSpec>& specs, const TensorSource& source,
                       const SafetensorsWriteOptions& opt = {});

// "model-00001-of-00002.safetensors" (index is 0-based), the transformers shard naming.
std::string safetensors_shard_name(size_t index, size_t count);

}  // namespace hx
