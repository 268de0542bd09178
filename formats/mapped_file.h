// Read-only memory maps of checkpoint files, and the atomic output file every writer goes through.
//
// Design goals: readers never copy tensor bytes — they hand out views into a MappedFile kept alive by shared_ptr;
// writers never leave a half-written file under the requested name (temporary name in the same folder, fsync,
// rename — cli.md). Non-goals: Windows, writable maps.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <span>
#include <string>

#include "formats/tensor.h"

namespace hx {

class MappedFile {
 public:
  // Maps the whole file read-only; throws IoError naming the path when it cannot be opened or mapped.
  static std::shared_ptr<const MappedFile> open(const std::string& path);
  ~MappedFile();
  MappedFile(const MappedFile&) = delete;
  MappedFile& operator=(const MappedFile&) = delete;

  const std::string& path() const { return path_; }
  std::span<const std::byte> bytes() const { return {static_cast<const std::byte*>(data_), size_}; }
  uint64_t size() const { return size_; }
  int fd() const { return fd_; }
  // madvise(MADV_SEQUENTIAL / MADV_WILLNEED) hints for a byte range; no-ops on failure.
  void advise_sequential(uint64_t offset, uint64_t length) const;
  // Drops the pages of a range from this mapping (MADV_DONTNEED): streaming readers call it on what they are done
  // with so that resident memory stays bounded on models larger than RAM.
  void release(uint64_t offset, uint64_t length) const;

 private:
  MappedFile() = default;
  std::string path_;
  void* data_ = nullptr;
  uint64_t size_ = 0;
  int fd_ = -1;
};

// Where bytes inside a live MappedFile come from: its descriptor (open as long as the MappedFile lives, so as long as
// the caller holds a view of it) and the file offset of the first byte. Bulk byte movers (SHA-256, copies into an
// output file) read through the descriptor (pread, copy_file_range) instead of touching the mapping: reading a file
// mapping costs about twice the CPU of read(2) on the virtual machines this runs on (the mapping has 4 KiB page-table
// entries, each a nested page walk; read(2) copies through the kernel's huge-page direct map), measured with
// bench/io_bench.py. Returns std::nullopt for bytes that are not wholly inside one live mapping.
struct FileSpan {
  int fd = -1;
  uint64_t offset = 0;
  const std::string* path = nullptr;  // for error messages
};
std::optional<FileSpan> mapped_file_span(std::span<const std::byte> bytes);

// Calls consume() on [offset, offset + length) of the file in chunks read with pread into a per-thread buffer;
// IoError naming the file on a read error or a short file.
void read_file_chunks(const FileSpan& file, uint64_t length,
                      const std::function<void(std::span<const std::byte>)>& consume);

// The bytes of `v` in C order, chunk by chunk, like for_each_contiguous_chunk — but a contiguous view of a live mapping
// is read with read_file_chunks (1 MiB chunks, whole elements) instead of through the mapping.
void for_each_stored_chunk(const TensorView& v, size_t chunk_bytes,
                           const std::function<void(std::span<const std::byte>)>& consume);

// A file written under a temporary name in the destination folder and renamed over `path` by commit().
// Destroying it without commit() removes the temporary file. Writes are unbuffered large write(2) calls.
class AtomicOutputFile {
 public:
  // Refuses to replace an existing `path` unless `overwrite` (cli.md: --force).
  AtomicOutputFile(std::string path, bool overwrite);
  ~AtomicOutputFile();
  AtomicOutputFile(const AtomicOutputFile&) = delete;
  AtomicOutputFile& operator=(const AtomicOutputFile&) = delete;

  // Bytes that lie in a live MappedFile are copied file to file by the kernel (copy_file_range), never through the
  // mapping; anything else with write(2).
  void write(std::span<const std::byte> data);
  void write_zeros(uint64_t count);
  // Overwrites bytes already written at `offset` (pwrite) without moving position(): writers patch fields they only
  // know after streaming (a zip record's CRC-32). The range must lie inside [0, position()).
  void write_at(uint64_t offset, std::span<const std::byte> data);
  uint64_t position() const { return position_; }
  const std::string& path() const { return path_; }
  void commit();  // fsync, rename over path, fsync the folder

 private:
  void write_from_memory(std::span<const std::byte> data);
  bool copy_from_file(const FileSpan& source, uint64_t length);  // false: the kernel cannot, nothing was copied
  std::string path_, temp_path_;
  int fd_ = -1;
  void start_writeback();  // see write()
  uint64_t position_ = 0;
  uint64_t writeback_started_ = 0;  // bytes [0, this) are already handed to the disk
  bool committed_ = false;
};

// True when `path` exists (file or folder).
bool path_exists(const std::string& path);

}  // namespace hx
