// Zip writer (see zip.h): STORED records, 64-byte aligned data, CRC-32 patched in after streaming, ZIP64 on demand.
#include <array>

#include "formats/errors.h"
#include "formats/mapped_file.h"
#include "formats/zip.h"

namespace hx {
namespace {

constexpr uint32_t kSentinel32 = 0xFFFFFFFF;
constexpr uint16_t kSentinel16 = 0xFFFF;
constexpr uint16_t kVersionDefault = 20;  // 2.0: STORED, folders
constexpr uint16_t kVersionZip64 = 45;    // 4.5: ZIP64
constexpr uint16_t kFlagUtf8Name = 1 << 11;
constexpr uint16_t kDosDate1980 = (0 << 9) | (1 << 5) | 1;  // 1980-01-01: a valid, reproducible timestamp
constexpr uint16_t kPaddingExtraId = 0x4246;               // "FB", torch's alignment padding field
constexpr uint64_t kLocalHeaderSize = 30;
constexpr uint64_t kCrcOffsetInLocalHeader = 14;
constexpr uint64_t kMaxAlignment = 1 << 14;

// Little-endian field appender.
class LeBuffer {
 public:
  void u16(uint16_t v) { put(v, 2); }
  void u32(uint32_t v) { put(v, 4); }
  void u64(uint64_t v) { put(v, 8); }
  void bytes(std::string_view s) {
    for (char c : s) data_.push_back(static_cast<std::byte>(c));
  }
  void fill(size_t n, char c) { data_.insert(data_.end(), n, static_cast<std::byte>(c)); }
  std::span<const std::byte> span() const { return data_; }
  size_t size() const { return data_.size(); }

 private:
  void put(uint64_t v, int n) {
    for (int i = 0; i < n; ++i) data_.push_back(static_cast<std::byte>((v >> (8 * i)) & 0xFF));
  }
  std::vector<std::byte> data_;
};

uint16_t name_flags(const std::string& name) {
  for (unsigned char c : name)
    if (c >= 0x80) return kFlagUtf8Name;
  return 0;
}

}  // namespace

ZipWriter::ZipWriter(AtomicOutputFile& out, ZipWriterOptions options) : out_(out), options_(options) {
  if (options_.alignment == 0) options_.alignment = 1;
  if (options_.alignment > kMaxAlignment)  // the padding must fit one 16-bit extra field
    throw FormatError(in_file(out_.path(), "zip alignment " + std::to_string(options_.alignment) + " exceeds " +
                                               std::to_string(kMaxAlignment)));
}

void ZipWriter::begin_record(const std::string& name, uint64_t size) {
  if (in_record_ || finished_)
    throw FormatError(in_file(out_.path(), "zip record '" + name + "' begun while another is open or after finish"));
  if (name.empty() || name.size() > 0xFFFF)
    throw FormatError(in_file(out_.path(), "zip record name of " + std::to_string(name.size()) + " bytes"));
  Record r;
  r.name = name;
  r.size = size;
  r.header_offset = out_.position();
  const bool zip64 = options_.force_zip64 || size >= kSentinel32;

  LeBuffer h;
  h.u32(0x04034b50);
  h.u16(zip64 ? kVersionZip64 : kVersionDefault);
  h.u16(name_flags(name));
  h.u16(0);  // STORED
  h.u16(0);  // time 00:00
  h.u16(kDosDate1980);
  h.u32(0);  // CRC-32, patched by end_record()
  h.u32(zip64 ? kSentinel32 : static_cast<uint32_t>(size));
  h.u32(zip64 ? kSentinel32 : static_cast<uint32_t>(size));
  h.u16(static_cast<uint16_t>(name.size()));
  const uint64_t zip64_extra = zip64 ? 4 + 16 : 0;
  // The padding field's 4-byte header is always written; its payload brings the data to the alignment.
  const uint64_t unpadded_end = r.header_offset + kLocalHeaderSize + name.size() + zip64_extra + 4;
  const uint64_t padding = (options_.alignment - unpadded_end % options_.alignment) % options_.alignment;
  h.u16(static_cast<uint16_t>(zip64_extra + 4 + padding));
  h.bytes(name);
  if (zip64) {
    h.u16(0x0001);
    h.u16(16);
    h.u64(size);  // uncompressed
    h.u64(size);  // compressed
  }
  h.u16(kPaddingExtraId);
  h.u16(static_cast<uint16_t>(padding));
  h.fill(padding, 'Z');
  out_.write(h.span());

  records_.push_back(std::move(r));
  in_record_ = true;
  written_in_record_ = 0;
  running_crc_ = 0;
}

void ZipWriter::write(std::span<const std::byte> data) {
  if (!in_record_) throw FormatError(in_file(out_.path(), "zip data written outside a record"));
  const Record& r = records_.back();
  if (data.size() > r.size - written_in_record_)
    throw FormatError(in_file(out_.path(), "zip record '" + r.name + "': got more than the declared " +
                                               std::to_string(r.size) + " bytes"));
  running_crc_ = zip_crc32(data, running_crc_);
  out_.write(data);
  written_in_record_ += data.size();
}

void ZipWriter::end_record() {
  if (!in_record_) throw FormatError(in_file(out_.path(), "zip end_record() without begin_record()"));
  Record& r = records_.back();
  if (written_in_record_ != r.size)
    throw FormatError(in_file(out_.path(), "zip record '" + r.name + "': got " + std::to_string(written_in_record_) +
                                               " bytes, declared " + std::to_string(r.size)));
  r.crc32 = running_crc_;
  LeBuffer crc;
  crc.u32(r.crc32);
  out_.write_at(r.header_offset + kCrcOffsetInLocalHeader, crc.span());
  in_record_ = false;
}

void ZipWriter::add_record(const std::string& name, std::span<const std::byte> data) {
  begin_record(name, data.size());
  write(data);
  end_record();
}

void ZipWriter::finish() {
  if (in_record_ || finished_) throw FormatError(in_file(out_.path(), "zip finish() with a record open or twice"));
  const uint64_t cd_offset = out_.position();
  LeBuffer cd;
  for (const Record& r : records_) {
    const bool big_size = options_.force_zip64 || r.size >= kSentinel32;
    const bool big_offset = options_.force_zip64 || r.header_offset >= kSentinel32;
    const uint16_t extra = static_cast<uint16_t>((big_size || big_offset) ? 4 + (big_size ? 16 : 0) + (big_offset ? 8 : 0) : 0);
    cd.u32(0x02014b50);
    cd.u16(kVersionZip64);  // made by: 4.5, MS-DOS attributes
    cd.u16(extra ? kVersionZip64 : kVersionDefault);
    cd.u16(name_flags(r.name));
    cd.u16(0);  // STORED
    cd.u16(0);
    cd.u16(kDosDate1980);
    cd.u32(r.crc32);
    cd.u32(big_size ? kSentinel32 : static_cast<uint32_t>(r.size));
    cd.u32(big_size ? kSentinel32 : static_cast<uint32_t>(r.size));
    cd.u16(static_cast<uint16_t>(r.name.size()));
    cd.u16(extra);
    cd.u16(0);  // comment
    cd.u16(0);  // disk
    cd.u16(0);  // internal attributes
    cd.u32(0);  // external attributes
    cd.u32(big_offset ? kSentinel32 : static_cast<uint32_t>(r.header_offset));
    cd.bytes(r.name);
    if (extra) {
      cd.u16(0x0001);
      cd.u16(static_cast<uint16_t>(extra - 4));
      if (big_size) {
        cd.u64(r.size);
        cd.u64(r.size);
      }
      if (big_offset) cd.u64(r.header_offset);
    }
  }
  out_.write(cd.span());
  const uint64_t cd_size = cd.size();
  const uint64_t count = records_.size();
  const bool zip64 = options_.force_zip64 || count >= kSentinel16 || cd_size >= kSentinel32 || cd_offset >= kSentinel32;

  LeBuffer end;
  if (zip64) {
    const uint64_t record_offset = out_.position();
    end.u32(0x06064b50);
    end.u64(44);  // size of the rest of this record
    end.u16(kVersionZip64);
    end.u16(kVersionZip64);
    end.u32(0);  // this disk
    end.u32(0);  // disk with the central directory
    end.u64(count);
    end.u64(count);
    end.u64(cd_size);
    end.u64(cd_offset);
    end.u32(0x07064b50);  // locator
    end.u32(0);
    end.u64(record_offset);
    end.u32(1);  // total disks
  }
  end.u32(0x06054b50);
  end.u16(0);
  end.u16(0);
  end.u16(zip64 ? kSentinel16 : static_cast<uint16_t>(count));
  end.u16(zip64 ? kSentinel16 : static_cast<uint16_t>(count));
  end.u32(zip64 ? kSentinel32 : static_cast<uint32_t>(cd_size));
  end.u32(zip64 ? kSentinel32 : static_cast<uint32_t>(cd_offset));
  end.u16(0);  // comment length
  out_.write(end.span());
  finished_ = true;
}

}  // namespace hx
