// Zip reader (see zip.h). Layout facts follow PKWARE's APPNOTE.TXT 6.3: every multi-byte field is little-endian.
#include "formats/zip.h"

#include <zlib.h>

#include <algorithm>
#include <cstring>
#include <limits>

#include "formats/errors.h"
#include "formats/mapped_file.h"

namespace hx {
namespace {

constexpr uint32_t kLocalHeaderSignature = 0x04034b50;
constexpr uint32_t kCentralHeaderSignature = 0x02014b50;
constexpr uint32_t kEocdSignature = 0x06054b50;
constexpr uint32_t kZip64EocdSignature = 0x06064b50;
constexpr uint32_t kZip64LocatorSignature = 0x07064b50;
constexpr uint64_t kLocalHeaderSize = 30;
constexpr uint64_t kCentralHeaderSize = 46;
constexpr uint64_t kZip64LocatorSize = 20;
constexpr uint64_t kZip64EocdMinSize = 56;
constexpr uint16_t kZip64ExtraId = 0x0001;
constexpr uint32_t kSentinel32 = 0xFFFFFFFF;
constexpr uint16_t kSentinel16 = 0xFFFF;
constexpr uint16_t kFlagEncrypted = 1 << 0;
constexpr uint16_t kFlagDataDescriptor = 1 << 3;
constexpr uint16_t kFlagStrongEncryption = 1 << 6;
constexpr uint16_t kMethodStored = 0;
constexpr uint16_t kMethodDeflate = 8;

std::string hex32(uint32_t v) {
  char buf[16];
  std::snprintf(buf, sizeof buf, "0x%08x", v);
  return buf;
}

const char* method_name(uint16_t method) {
  switch (method) {
    case 1: return "shrink";
    case 6: return "implode";
    case 9: return "deflate64";
    case 12: return "bzip2";
    case 14: return "lzma";
    case 93: return "zstd";
    case 95: return "xz";
    case 99: return "AES encryption";
    default: return "unknown";
  }
}

// Little-endian field reads that refuse to leave `bytes`; `what` names the structure in the error.
class LeReader {
 public:
  LeReader(std::span<const std::byte> bytes, const std::string& file) : bytes_(bytes), file_(file) {}
  void need(uint64_t offset, uint64_t length, const std::string& what) const {
    if (offset > bytes_.size() || length > bytes_.size() - offset)
      throw FormatError(in_file(file_, what + " at offset " + std::to_string(offset) + " (" + std::to_string(length) +
                                           " bytes) lies beyond the end of the file (" +
                                           std::to_string(bytes_.size()) + " bytes); truncated?"));
  }
  uint16_t u16(uint64_t offset) const { return static_cast<uint16_t>(get(offset, 2)); }
  uint32_t u32(uint64_t offset) const { return static_cast<uint32_t>(get(offset, 4)); }
  uint64_t u64(uint64_t offset) const { return get(offset, 8); }

 private:
  uint64_t get(uint64_t offset, int n) const {
    need(offset, static_cast<uint64_t>(n), "field");
    uint64_t v = 0;
    for (int i = n - 1; i >= 0; --i) v = (v << 8) | std::to_integer<uint64_t>(bytes_[offset + static_cast<uint64_t>(i)]);
    return v;
  }
  std::span<const std::byte> bytes_;
  const std::string& file_;
};

// The values of a ZIP64 extended-information extra field that replace 0xFFFFFFFF fields, in APPNOTE order.
struct Zip64Fields {
  bool need_uncompressed = false, need_compressed = false, need_offset = false;
  uint64_t uncompressed = 0, compressed = 0, offset = 0;
};

// Walks the extra fields in [start, start+length) and fills the ZIP64 values that are needed.
void parse_zip64_extra(const LeReader& in, uint64_t start, uint64_t length, Zip64Fields* z, const std::string& where) {
  if (!z->need_uncompressed && !z->need_compressed && !z->need_offset) return;
  uint64_t pos = start;
  const uint64_t end = start + length;
  while (pos + 4 <= end) {
    const uint16_t id = in.u16(pos);
    const uint16_t size = in.u16(pos + 2);
    if (pos + 4 + size > end) throw FormatError(where + ": extra field " + std::to_string(id) + " overruns its header");
    if (id == kZip64ExtraId) {
      uint64_t p = pos + 4;
      const uint64_t field_end = p + size;
      auto take = [&](bool needed, uint64_t* out, const char* what) {
        if (!needed) return;
        if (p + 8 > field_end)
          throw FormatError(where + ": ZIP64 extra field of " + std::to_string(size) + " bytes lacks the " + what);
        *out = in.u64(p);
        p += 8;
      };
      take(z->need_uncompressed, &z->uncompressed, "uncompressed size");
      take(z->need_compressed, &z->compressed, "compressed size");
      take(z->need_offset, &z->offset, "local header offset");
      return;
    }
    pos += 4 + size;
  }
  throw FormatError(where + ": a size or offset is 0xFFFFFFFF but there is no ZIP64 extra field");
}

}  // namespace

uint32_t zip_crc32(std::span<const std::byte> data, uint32_t crc) {
  uLong c = crc;
  const auto* p = reinterpret_cast<const Bytef*>(data.data());
  size_t left = data.size();
  while (left > 0) {
    const size_t n = std::min<size_t>(left, size_t{1} << 30);
    c = crc32_z(c, p, n);
    p += n;
    left -= n;
  }
  return static_cast<uint32_t>(c);
}

ZipArchive ZipArchive::open(const std::string& path, const ZipReadOptions& options) {
  auto file = MappedFile::open(path);
  const auto bytes = file->bytes();
  return from_bytes(bytes, std::move(file), path, options);
}

ZipArchive ZipArchive::from_bytes(std::span<const std::byte> bytes, std::shared_ptr<const void> owner,
                                  std::string display_name, const ZipReadOptions& options) {
  ZipArchive z;
  z.bytes_ = bytes;
  z.owner_ = std::move(owner);
  z.display_name_ = std::move(display_name);
  z.options_ = options;
  z.parse();
  return z;
}

std::string ZipArchive::where(const std::string& record) const {
  return in_file(display_name_, "zip record '" + record + "'");
}

const ZipEntry* ZipArchive::find(std::string_view name) const {
  const auto it = index_.find(std::string(name));
  return it == index_.end() ? nullptr : &entries_[it->second];
}

void ZipArchive::parse() {
  const LeReader in(bytes_, display_name_);
  const uint64_t size = bytes_.size();
  auto fail = [&](const std::string& message) -> void { throw FormatError(in_file(display_name_, message)); };
  if (size < kZipEocdSize) fail("too small to be a zip archive (" + std::to_string(size) + " bytes)");

  // 1. The EOCD: the last signature whose comment reaches exactly to the end of the file.
  uint64_t eocd = std::numeric_limits<uint64_t>::max();
  const uint64_t search_floor = size > kZipMaxEocdSearch ? size - kZipMaxEocdSearch : 0;
  for (uint64_t pos = size - kZipEocdSize + 1; pos-- > search_floor;) {
    if (in.u32(pos) == kEocdSignature && pos + kZipEocdSize + in.u16(pos + 20) == size) {
      eocd = pos;
      break;
    }
  }
  if (eocd == std::numeric_limits<uint64_t>::max())
    fail("no end-of-central-directory record in the last " + std::to_string(kZipMaxEocdSearch) +
         " bytes: not a zip archive, or truncated");
  const uint16_t disk = in.u16(eocd + 4), cd_disk = in.u16(eocd + 6);
  uint64_t entries_on_disk = in.u16(eocd + 8), entry_count = in.u16(eocd + 10);
  uint64_t cd_size = in.u32(eocd + 12), cd_offset = in.u32(eocd + 16);
  uint64_t cd_limit = eocd;  // the central directory must end before this

  // 2. ZIP64: a locator right before the EOCD points at the ZIP64 EOCD record, whose values are authoritative.
  if (eocd >= kZip64LocatorSize && in.u32(eocd - kZip64LocatorSize) == kZip64LocatorSignature) {
    const uint64_t locator = eocd - kZip64LocatorSize;
    const uint64_t record = in.u64(locator + 8);
    if (in.u32(locator + 16) > 1) throw UnsupportedError(in_file(display_name_, "multi-disk zip archives are not supported"));
    if (record > locator || locator - record < kZip64EocdMinSize)
      fail("ZIP64 locator points at offset " + std::to_string(record) + ", which leaves no room for the ZIP64 " +
           "end-of-central-directory record before the locator at " + std::to_string(locator));
    if (in.u32(record) != kZip64EocdSignature)
      fail("no ZIP64 end-of-central-directory record at offset " + std::to_string(record) + " (found signature " +
           hex32(in.u32(record)) + ")");
    if (in.u32(record + 16) != 0 || in.u32(record + 20) != 0)
      throw UnsupportedError(in_file(display_name_, "multi-disk zip archives are not supported"));
    entries_on_disk = in.u64(record + 24);
    entry_count = in.u64(record + 32);
    cd_size = in.u64(record + 40);
    cd_offset = in.u64(record + 48);
    cd_limit = record;
  } else if (disk != 0 || cd_disk != 0) {
    throw UnsupportedError(in_file(display_name_, "multi-disk zip archives are not supported"));
  }
  if (entries_on_disk != entry_count)
    fail("end of central directory lists " + std::to_string(entries_on_disk) + " entries on this disk but " +
         std::to_string(entry_count) + " in total (multi-disk or corrupt)");
  if (cd_offset > cd_limit || cd_size > cd_limit - cd_offset)
    fail("central directory (offset " + std::to_string(cd_offset) + ", " + std::to_string(cd_size) +
         " bytes) does not end before the end-of-central-directory record at " + std::to_string(cd_limit));
  if (entry_count > cd_size / kCentralHeaderSize)
    fail("end of central directory claims " + std::to_string(entry_count) + " entries, but a central directory of " +
         std::to_string(cd_size) + " bytes holds at most " + std::to_string(cd_size / kCentralHeaderSize));

  // 3. Central directory entries, each cross-checked against its local header.
  entries_.reserve(entry_count);
  uint64_t pos = cd_offset;
  const uint64_t cd_end = cd_offset + cd_size;
  for (uint64_t i = 0; i < entry_count; ++i) {
    const std::string entry_where = in_file(display_name_, "central directory entry " + std::to_string(i));
    if (cd_end - pos < kCentralHeaderSize)
      fail("central directory entry " + std::to_string(i) + " at offset " + std::to_string(pos) +
           " overruns the central directory");
    if (in.u32(pos) != kCentralHeaderSignature)
      fail("central directory entry " + std::to_string(i) + " at offset " + std::to_string(pos) +
           " has signature " + hex32(in.u32(pos)) + ", expected " + hex32(kCentralHeaderSignature));
    ZipEntry e;
    e.flags = in.u16(pos + 8);
    e.method = in.u16(pos + 10);
    e.crc32 = in.u32(pos + 16);
    e.compressed_size = in.u32(pos + 20);
    e.uncompressed_size = in.u32(pos + 24);
    const uint64_t name_len = in.u16(pos + 28), extra_len = in.u16(pos + 30), comment_len = in.u16(pos + 32);
    const uint16_t start_disk = in.u16(pos + 34);
    e.local_header_offset = in.u32(pos + 42);
    if (kCentralHeaderSize + name_len + extra_len + comment_len > cd_end - pos)
      fail("central directory entry " + std::to_string(i) + " (name, extra and comment of " +
           std::to_string(name_len + extra_len + comment_len) + " bytes) overruns the central directory");
    e.name.assign(reinterpret_cast<const char*>(bytes_.data() + pos + kCentralHeaderSize), name_len);
    const std::string rec = where(e.name);
    Zip64Fields z64;
    z64.need_uncompressed = e.uncompressed_size == kSentinel32;
    z64.need_compressed = e.compressed_size == kSentinel32;
    z64.need_offset = e.local_header_offset == kSentinel32;
    parse_zip64_extra(in, pos + kCentralHeaderSize + name_len, extra_len, &z64, rec);
    if (z64.need_uncompressed) e.uncompressed_size = z64.uncompressed;
    if (z64.need_compressed) e.compressed_size = z64.compressed;
    if (z64.need_offset) e.local_header_offset = z64.offset;
    pos += kCentralHeaderSize + name_len + extra_len + comment_len;

    if (start_disk != 0 && start_disk != kSentinel16)
      throw UnsupportedError(rec + ": starts on disk " + std::to_string(start_disk) + " (multi-disk archive)");
    if (e.flags & (kFlagEncrypted | kFlagStrongEncryption))
      throw UnsupportedError(rec + ": is encrypted (general purpose flags " + hex32(e.flags) +
                             "); encrypted zip records are not supported");
    if (e.method != kMethodStored && e.method != kMethodDeflate)
      throw UnsupportedError(rec + ": compression method " + std::to_string(e.method) + " (" +
                             method_name(e.method) + ") is not supported (only 0 stored and 8 deflate)");
    if (e.method == kMethodStored && e.compressed_size != e.uncompressed_size)
      fail("zip record '" + e.name + "': stored record with compressed size " + std::to_string(e.compressed_size) +
           " != uncompressed size " + std::to_string(e.uncompressed_size));

    // Local header: same name and method; sizes/CRC equal unless deferred to a data descriptor (bit 3), where they
    // may be zero (torch's own writer does that).
    const uint64_t lh = e.local_header_offset;
    if (lh >= cd_offset || cd_offset - lh < kLocalHeaderSize)
      fail("zip record '" + e.name + "': local header offset " + std::to_string(lh) +
           " does not lie before the central directory at " + std::to_string(cd_offset));
    if (in.u32(lh) != kLocalHeaderSignature)
      fail("zip record '" + e.name + "': no local header at offset " + std::to_string(lh) + " (found signature " +
           hex32(in.u32(lh)) + ")");
    const uint16_t l_method = in.u16(lh + 8);
    const uint32_t l_crc = in.u32(lh + 14);
    uint64_t l_csize = in.u32(lh + 18), l_usize = in.u32(lh + 22);
    const uint64_t l_name_len = in.u16(lh + 26), l_extra_len = in.u16(lh + 28);
    in.need(lh + kLocalHeaderSize, l_name_len + l_extra_len, "local header of zip record '" + e.name + "'");
    const std::string_view l_name(reinterpret_cast<const char*>(bytes_.data() + lh + kLocalHeaderSize), l_name_len);
    if (l_name != e.name)
      fail("zip record '" + e.name + "': local header names it '" + std::string(l_name) + "'");
    if (l_method != e.method)
      fail("zip record '" + e.name + "': local header says method " + std::to_string(l_method) +
           ", central directory " + std::to_string(e.method));
    Zip64Fields lz;
    lz.need_uncompressed = l_usize == kSentinel32;
    lz.need_compressed = l_csize == kSentinel32;
    parse_zip64_extra(in, lh + kLocalHeaderSize + l_name_len, l_extra_len, &lz, rec + " (local header)");
    if (lz.need_uncompressed) l_usize = lz.uncompressed;
    if (lz.need_compressed) l_csize = lz.compressed;
    const bool deferred = (in.u16(lh + 6) & kFlagDataDescriptor) != 0;
    const bool all_zero = l_crc == 0 && l_csize == 0 && l_usize == 0;
    if (!(deferred && all_zero) &&
        (l_crc != e.crc32 || l_csize != e.compressed_size || l_usize != e.uncompressed_size))
      fail("zip record '" + e.name + "': local header (crc " + hex32(l_crc) + ", " + std::to_string(l_csize) + "/" +
           std::to_string(l_usize) + " bytes) disagrees with the central directory (crc " + hex32(e.crc32) + ", " +
           std::to_string(e.compressed_size) + "/" + std::to_string(e.uncompressed_size) + " bytes)");
    e.data_offset = lh + kLocalHeaderSize + l_name_len + l_extra_len;
    if (e.data_offset > cd_offset || e.compressed_size > cd_offset - e.data_offset)
      fail("zip record '" + e.name + "': data (offset " + std::to_string(e.data_offset) + ", " +
           std::to_string(e.compressed_size) + " bytes) runs past the start of the central directory at " +
           std::to_string(cd_offset) + " (file is " + std::to_string(size) + " bytes)");
    if (!index_.emplace(e.name, entries_.size()).second) fail("zip record '" + e.name + "' appears twice");
    entries_.push_back(std::move(e));
  }
  if (pos != cd_end)
    fail("central directory holds " + std::to_string(cd_end - pos) + " bytes after its " +
         std::to_string(entry_count) + " entries (the end record's entry count is wrong)");

  // 4. No two records may share bytes: overlapping records are how zip bombs multiply one compressed stream.
  std::vector<const ZipEntry*> by_offset;
  by_offset.reserve(entries_.size());
  for (const auto& e : entries_) by_offset.push_back(&e);
  std::sort(by_offset.begin(), by_offset.end(),
            [](const ZipEntry* a, const ZipEntry* b) { return a->local_header_offset < b->local_header_offset; });
  for (size_t i = 1; i < by_offset.size(); ++i) {
    const ZipEntry& prev = *by_offset[i - 1];
    if (prev.data_offset + prev.compressed_size > by_offset[i]->local_header_offset)
      fail("zip records '" + prev.name + "' and '" + by_offset[i]->name + "' overlap");
  }
}

Storage ZipArchive::read(std::string_view name) const {
  const ZipEntry* e = find(name);
  if (!e) throw FormatError(in_file(display_name_, "zip record '" + std::string(name) + "' is missing"));
  return read(*e);
}

Storage ZipArchive::read(const ZipEntry& e) const {
  const auto data = bytes_.subspan(e.data_offset, e.compressed_size);  // bounds established by parse()
  auto check_crc = [&](std::span<const std::byte> plain) {
    const uint32_t found = zip_crc32(plain);
    if (found != e.crc32)
      throw FormatError(where(e.name) + ": CRC mismatch (expected " + hex32(e.crc32) + ", found " + hex32(found) + ")");
  };
  if (e.method == kMethodStored) {
    if (options_.verify_stored_crc || e.uncompressed_size <= kZipSmallRecordBytes) check_crc(data);
    return Storage{data, owner_};
  }

  // DEFLATE: refuse sizes over the limit or beyond what DEFLATE can encode before allocating anything.
  const uint64_t declared = e.uncompressed_size;
  if (declared > options_.max_inflated_bytes)
    throw UnsupportedError(where(e.name) + ": declares " + std::to_string(declared) +
                           " uncompressed bytes, more than the limit of " + std::to_string(options_.max_inflated_bytes) +
                           " for a compressed record");
  if (declared > e.compressed_size * kZipMaxDeflateRatio + kZipDeflateRatioSlack)
    throw FormatError(where(e.name) + ": declares " + std::to_string(declared) + " bytes from " +
                      std::to_string(e.compressed_size) + " compressed bytes, beyond DEFLATE's maximum ratio of " +
                      std::to_string(kZipMaxDeflateRatio) + ":1");
  std::vector<std::byte> out(declared);
  z_stream zs{};
  if (inflateInit2(&zs, -MAX_WBITS) != Z_OK) throw FormatError(where(e.name) + ": zlib inflateInit2 failed");
  struct Ender {
    z_stream* s;
    ~Ender() { inflateEnd(s); }
  } ender{&zs};
  constexpr uint64_t kChunk = uint64_t{1} << 30;  // zlib counts in 32 bits
  uint64_t in_pos = 0, out_pos = 0;
  std::byte overflow_probe[1];
  int ret = Z_OK;
  while (ret != Z_STREAM_END) {
    if (zs.avail_in == 0 && in_pos < data.size()) {
      const uint64_t n = std::min<uint64_t>(kChunk, data.size() - in_pos);
      zs.next_in = reinterpret_cast<Bytef*>(const_cast<std::byte*>(data.data() + in_pos));
      zs.avail_in = static_cast<uInt>(n);
      in_pos += n;
    }
    bool probing = false;
    if (zs.avail_out == 0) {
      if (out_pos < declared) {
        const uint64_t n = std::min<uint64_t>(kChunk, declared - out_pos);
        zs.next_out = reinterpret_cast<Bytef*>(out.data() + out_pos);
        zs.avail_out = static_cast<uInt>(n);
        out_pos += n;
      } else {  // the declared size is full: any further output means the record lied about its size
        zs.next_out = reinterpret_cast<Bytef*>(overflow_probe);
        zs.avail_out = 1;
        probing = true;
      }
    }
    ret = inflate(&zs, Z_NO_FLUSH);
    if (probing && zs.avail_out == 0)
      throw FormatError(where(e.name) + ": inflates to more than its declared " + std::to_string(declared) + " bytes");
    if (ret == Z_STREAM_END) break;
    if (ret == Z_DATA_ERROR || ret == Z_NEED_DICT || ret == Z_MEM_ERROR)
      throw FormatError(where(e.name) + ": corrupt DEFLATE data (" + (zs.msg ? zs.msg : "zlib error") + ")");
    if (ret == Z_BUF_ERROR && zs.avail_in == 0 && in_pos == data.size())
      throw FormatError(where(e.name) + ": DEFLATE data ends before the stream does (truncated record)");
    if (probing) {  // no more output and not at the end: zlib needs more input, which is handled above
      zs.avail_out = 0;
      if (zs.avail_in == 0 && in_pos == data.size())
        throw FormatError(where(e.name) + ": DEFLATE data ends before the stream does (truncated record)");
    }
  }
  const uint64_t produced = zs.total_out;
  if (produced != declared)
    throw FormatError(where(e.name) + ": inflates to " + std::to_string(produced) + " bytes, declared " +
                      std::to_string(declared));
  check_crc(out);
  return Storage::owned(std::move(out));
}

}  // namespace hx
