// The zip container of PyTorch `.pth` files: a bounds-checked reader over a memory map and a streaming writer.
//
// Design goals:
//   - Reader: trusts nothing. The end-of-central-directory record (EOCD) is searched for in the last 64 KiB + 22
//     bytes; ZIP64 records and extra fields are honoured (records and offsets beyond 4 GiB); every central-directory
//     entry is bounds-checked and cross-checked against its local header (name, method, sizes); records may not
//     overlap (the "overlapping files" zip bomb) nor reach into the central directory. STORED records come back as
//     zero-copy views into the map; DEFLATE records are inflated into a buffer of exactly the declared size, refused
//     when that size is beyond a limit or beyond what DEFLATE can encode (ratio 1032:1), and never inflated past it.
//     CRC-32 is checked for everything materialised (inflated records, STORED records up to kZipSmallRecordBytes
//     such as data.pkl) and, on request (ZipReadOptions::verify_stored_crc), for large STORED tensor records too.
//   - Writer: what `torch.load` reads: STORED records whose data is 64-byte aligned through an "FB" padding extra
//     field in the local header (as torch's own writer does, so that readers can mmap tensors), CRC-32 computed while
//     streaming and patched into the local header afterwards, ZIP64 fields when sizes or offsets need them, written
//     through AtomicOutputFile so a failed run leaves nothing behind.
// Non-goals: multi-disk archives, encryption, compression methods other than STORED/DEFLATE, writing compressed
// records, archive comments, modification times (the writer stamps 1980-01-01 so output is reproducible).
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "formats/tensor.h"

namespace hx {

class AtomicOutputFile;

// The EOCD is 22 bytes and may be followed by a comment of at most 65535 bytes.
inline constexpr uint64_t kZipEocdSize = 22;
inline constexpr uint64_t kZipMaxEocdSearch = 0xFFFF + kZipEocdSize;
// STORED records up to this size (data.pkl, byteorder, version, small tensors) always get their CRC-32 checked.
inline constexpr uint64_t kZipSmallRecordBytes = uint64_t{1} << 20;
// Default bound on one inflated record (the declared uncompressed size is checked before anything is allocated).
inline constexpr uint64_t kZipDefaultMaxInflatedBytes = uint64_t{4} << 30;
// DEFLATE cannot expand more than 1032:1 (a 258-byte match coded in 2 bits), plus a little for tiny streams.
inline constexpr uint64_t kZipMaxDeflateRatio = 1032;
inline constexpr uint64_t kZipDeflateRatioSlack = 4096;
// torch aligns record data to 64 bytes (caffe2/serialize kFieldAlignment).
inline constexpr uint64_t kZipAlignment = 64;

struct ZipReadOptions {
  bool verify_stored_crc = false;  // also CRC-check STORED records larger than kZipSmallRecordBytes
  uint64_t max_inflated_bytes = kZipDefaultMaxInflatedBytes;
};

struct ZipEntry {
  std::string name;
  uint16_t method = 0;  // 0 STORED, 8 DEFLATE (others are refused when the archive is opened)
  uint16_t flags = 0;   // general purpose bit flags of the central directory
  uint32_t crc32 = 0;
  uint64_t compressed_size = 0;
  uint64_t uncompressed_size = 0;
  uint64_t local_header_offset = 0;
  uint64_t data_offset = 0;  // first byte of the record's data: local header + 30 + name length + extra length
};

class ZipArchive {
 public:
  // Maps `path` and parses its central directory; throws IoError (cannot open) or FormatError / UnsupportedError
  // naming the file and the record.
  static ZipArchive open(const std::string& path, const ZipReadOptions& options = {});
  // The same over bytes kept alive by `owner` (fuzzing, tests); `display_name` stands for the file in messages.
  static ZipArchive from_bytes(std::span<const std::byte> bytes, std::shared_ptr<const void> owner,
                               std::string display_name, const ZipReadOptions& options = {});

  const std::string& display_name() const { return display_name_; }
  const std::vector<ZipEntry>& entries() const { return entries_; }  // central directory order
  const ZipEntry* find(std::string_view name) const;                  // nullptr when absent

  // The record's uncompressed bytes: a view into the map for STORED records, an owned buffer for DEFLATE ones.
  // CRC-32 is checked as described above; a mismatch throws FormatError naming the record and both values.
  Storage read(const ZipEntry& entry) const;
  // read() of the record called `name`; FormatError naming `name` when it is absent.
  Storage read(std::string_view name) const;

 private:
  ZipArchive() = default;
  void parse();
  std::string where(const std::string& record) const;  // "file: zip record 'name'"

  std::string display_name_;
  std::span<const std::byte> bytes_;
  std::shared_ptr<const void> owner_;
  ZipReadOptions options_;
  std::vector<ZipEntry> entries_;
  std::unordered_map<std::string, size_t> index_;
};

// zlib's CRC-32 over any number of bytes (chunked for zlib's 32-bit lengths); `crc` continues a running value.
uint32_t zip_crc32(std::span<const std::byte> data, uint32_t crc = 0);

struct ZipWriterOptions {
  uint64_t alignment = kZipAlignment;  // record data starts on a multiple of this (1 = no padding)
  bool force_zip64 = false;            // write ZIP64 fields even where 32 bits suffice (tests of the ZIP64 paths)
};

// Streams STORED records into `out`: begin_record(name, size), write() exactly `size` bytes, end_record(); then
// finish() writes the central directory. The caller commits `out`.
class ZipWriter {
 public:
  explicit ZipWriter(AtomicOutputFile& out, ZipWriterOptions options = {});
  ZipWriter(const ZipWriter&) = delete;
  ZipWriter& operator=(const ZipWriter&) = delete;

  void begin_record(const std::string& name, uint64_t size);
  void write(std::span<const std::byte> data);  // FormatError when it goes past the size given to begin_record
  void end_record();                            // FormatError when fewer bytes came; patches the CRC-32
  void add_record(const std::string& name, std::span<const std::byte> data);  // begin + write + end
  void finish();

 private:
  struct Record {
    std::string name;
    uint64_t size = 0;
    uint64_t header_offset = 0;
    uint32_t crc32 = 0;
  };
  AtomicOutputFile& out_;
  ZipWriterOptions options_;
  std::vector<Record> records_;
  bool in_record_ = false;
  bool finished_ = false;
  uint64_t written_in_record_ = 0;
  uint32_t running_crc_ = 0;
};

}  // namespace hx
