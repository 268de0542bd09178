// PyTorch checkpoints: `torch.save` files in the zip format (torch >= 1.6) and the legacy non-zip format, read
// without Python, and written so that `torch.load(weights_only=True)` reads them back bit-exactly.
//
// Design goals:
//   - Reading: the format is decided by content (zip magic vs. legacy pickle magic), never by extension. The zip
//     root folder is whatever the first record's folder is. data.pkl runs on the safe pickle machine (pickle.h):
//     only tensor-rebuild globals, nothing executed. Storages are zero-copy views into the mapped file, and tensors
//     that share a storage get the very same Storage (same bytes, same owner), with their own offset and strides.
//     Nested dicts / lists / tuples are flattened to '/'-joined paths (`layers/1/w`); a plain state dict keeps its
//     keys (`blocks.0.att.key.weight`); a tensor saved on its own is named "tensor". str / int / float / bool / None
//     leaves go to Checkpoint::other_leaves. Every view is bounds-checked against its storage.
//   - Writing: one OrderedDict of `_rebuild_tensor_v2` calls (legacy typed storage classes, readable by torch 1.x
//     and 2.x) or, for the dtypes torch 2.x serializes through UntypedStorage (float8, uint16/32/64, complex32,
//     bits*), `_rebuild_tensor_v3` calls exactly as torch 2.x writes them; one 64-byte-aligned STORED record per
//     tensor, streamed from a TensorSource; written atomically.
// Non-goals: TorchScript archives, the pre-1.0 tar format, quantized / sparse / nested tensors, big-endian files,
// writing shared storages or strided views (writers get contiguous bytes), writing non-tensor leaves.
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "formats/checkpoint.h"
#include "formats/zip.h"

namespace hx {

// The newest zip archive `version` record hxforge knows (torch 2.x writes 3; caffe2's reader accepts up to 10).
inline constexpr int64_t kPthMaxArchiveVersion = 10;
// The legacy format's magic number and protocol version (torch/serialization.py).
inline constexpr uint64_t kPthLegacyProtocolVersion = 1001;
// Bounds on flattening the object tree: one '/'-joined name, tree nodes visited and path bytes built (shared
// subtrees count each time they are reached, so a small pickle cannot expand into an enormous tree).
inline constexpr size_t kPthMaxNameLength = size_t{64} << 10;
inline constexpr size_t kPthMaxTreeVisits = size_t{1} << 22;
inline constexpr size_t kPthMaxPathBytes = size_t{256} << 20;  // all paths built while flattening, together

enum class PthKind { kZip, kLegacy, kUnknown };
// Looks at the first (up to 16) bytes of a file: a zip local header or end record, or the legacy format's
// magic-number pickle (PROTO, optional FRAME, LONG1 of 10 bytes).
PthKind detect_pth_kind(std::span<const std::byte> head);

struct PthReadOptions {
  bool verify_crc = false;  // CRC-check every storage record, not only the small ones (zip format)
  uint64_t max_inflated_bytes = kZipDefaultMaxInflatedBytes;
};

// Reads a .pth/.pt/.bin file of either format. Throws IoError, FormatError or UnsupportedError naming the file, the
// record or tensor and what was expected and found.
Checkpoint read_pth(const std::string& path);
Checkpoint read_pth(const std::string& path, const PthReadOptions& options);
// The same over bytes kept alive by `owner` (fuzzing, tests); `display_name` stands for the file in messages.
Checkpoint read_pth_bytes(std::span<const std::byte> bytes, std::shared_ptr<const void> owner,
                          const std::string& display_name, const PthReadOptions& options = {});

struct PthWriteOptions {
  bool overwrite = false;
  std::string archive_name = "archive";  // the zip root folder
  bool force_zip64 = false;  // ZIP64 fields even for small files (tests torch's ZIP64 path without 4 GiB files)
};

// Writes `specs` as a torch-compatible zip checkpoint, pulling each tensor's contiguous bytes from `source`.
// FormatError when a source delivers the wrong byte count, UnsupportedError for dtypes torch cannot hold (F4, F6)
// or that need quantization parameters (QINT8, …), IoError from the file system.
void write_pth(const std::string& path, const std::vector<TensorSpec>& specs, const TensorSource& source,
               const PthWriteOptions& options = {});

// The data.pkl that write_pth writes for `specs`, with storage keys "0", "1", … in spec order.
std::vector<std::byte> encode_pth_state_dict(const std::vector<TensorSpec>& specs);

}  // namespace hx
