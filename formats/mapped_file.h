// Read-only memory maps of checkpoint files, and the atomic output file every writer goes through.
//
// Design goals: readers never copy tensor bytes — they hand out views into a MappedFile kept alive by shared_ptr;
// writers never leave a half-written file under the requested name (temporary name in the same folder, fsync,
// rename — cli.md). Non-goals: Windows, writable maps.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <string>

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

// A file written under a temporary name in the destination folder and renamed over `path` by commit().
// Destroying it without commit() removes the temporary file. Writes are unbuffered large write(2) calls.
class AtomicOutputFile {
 public:
  // Refuses to replace an existing `path` unless `overwrite` (cli.md: --force).
  AtomicOutputFile(std::string path, bool overwrite);
  ~AtomicOutputFile();
  AtomicOutputFile(const AtomicOutputFile&) = delete;
  AtomicOutputFile& operator=(const AtomicOutputFile&) = delete;

  void write(std::span<const std::byte> data);
  void write_zeros(uint64_t count);
  // Overwrites bytes already written at `offset` (pwrite) without moving position(): writers patch fields they only
  // know after streaming (a zip record's CRC-32). The range must lie inside [0, position()).
  void write_at(uint64_t offset, std::span<const std::byte> data);
  uint64_t position() const { return position_; }
  const std::string& path() const { return path_; }
  void commit();  // fsync, rename over path, fsync the folder

 private:
  std::string path_, temp_path_;
  int fd_ = -1;
  uint64_t position_ = 0;
  bool committed_ = false;
};

// True when `path` exists (file or folder).
bool path_exists(const std::string& path);

}  // namespace hx
