// The zip reader and writer on their own: writer -> reader round trips (alignment, CRC patching, ZIP64), archives
// made by Python's zipfile (DEFLATE, comments, data descriptors), the writer's own refusals, and the speed of
// zlib's CRC-32 (which decides whether verifying large STORED records is affordable).
#include <gtest/gtest.h>

#include <chrono>
#include <cstring>
#include <iostream>
#include <numeric>
#include <string>
#include <vector>

#include "formats/errors.h"
#include "formats/mapped_file.h"
#include "formats/zip.h"
#include "tests/support/test_support.h"

namespace hx {
namespace {

using Bytes = std::vector<std::byte>;

Bytes pattern(size_t n, uint8_t seed) {
  Bytes b(n);
  for (size_t i = 0; i < n; ++i) b[i] = static_cast<std::byte>((i * 131 + seed) & 0xFF);
  return b;
}

std::string as_string(std::span<const std::byte> b) { return std::string(reinterpret_cast<const char*>(b.data()), b.size()); }

TEST(ZipCrc32, StandardCheckValueAndChaining) {
  const std::string check = "123456789";
  const auto bytes = std::as_bytes(std::span(check.data(), check.size()));
  EXPECT_EQ(zip_crc32(bytes), 0xCBF43926u);  // the CRC-32 check value of the ISO-HDLC / zip polynomial
  EXPECT_EQ(zip_crc32(bytes.subspan(4), zip_crc32(bytes.first(4))), 0xCBF43926u);
  EXPECT_EQ(zip_crc32({}), 0u);
}

TEST(ZipCrc32, Throughput) {
  // Reported, not tuned: tells whether ZipReadOptions::verify_stored_crc is cheap next to reading from disk.
  const Bytes data = pattern(size_t{256} << 20, 3);
  const auto start = std::chrono::steady_clock::now();
  uint32_t crc = 0;
  constexpr int kRounds = 4;
  for (int i = 0; i < kRounds; ++i) crc = zip_crc32(data, crc);
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  const double gib_per_s = kRounds * 0.25 / seconds;
  std::cout << "zlib crc32: " << gib_per_s << " GiB/s (crc " << crc << ")\n";
  RecordProperty("crc32_gib_per_s", std::to_string(gib_per_s));
  EXPECT_GT(gib_per_s, 0.1);
}

struct Written {
  std::string name;
  Bytes data;
};

void write_zip(const std::string& path, const std::vector<Written>& records, ZipWriterOptions options = {}) {
  AtomicOutputFile out(path, true);
  ZipWriter zip(out, options);
  for (const auto& r : records) {
    zip.begin_record(r.name, r.data.size());
    // Stream in uneven pieces so the running CRC is exercised.
    for (size_t pos = 0; pos < r.data.size(); pos += 1000)
      zip.write(std::span(r.data).subspan(pos, std::min<size_t>(1000, r.data.size() - pos)));
    zip.end_record();
  }
  zip.finish();
  out.commit();
}

class ZipRoundTrip : public ::testing::TestWithParam<bool> {};

TEST_P(ZipRoundTrip, WriterOutputReadsBackAlignedWithValidCrcs) {
  const bool zip64 = GetParam();
  const std::vector<Written> records = {{"root/data.pkl", pattern(333, 1)},
                                        {"root/empty", {}},
                                        {"root/data/0", pattern(100000, 2)},
                                        {"root/data/1", pattern(64, 3)},
                                        {"root/na\xc3\xafve", pattern(5, 4)}};
  test::TempDir dir;
  const std::string path = dir.file("a.zip");
  ZipWriterOptions options;
  options.force_zip64 = zip64;
  write_zip(path, records, options);

  ZipReadOptions strict;
  strict.verify_stored_crc = true;
  const ZipArchive zip = ZipArchive::open(path, strict);
  ASSERT_EQ(zip.entries().size(), records.size());
  for (size_t i = 0; i < records.size(); ++i) {
    const ZipEntry& e = zip.entries()[i];
    SCOPED_TRACE(records[i].name);
    EXPECT_EQ(e.name, records[i].name);
    EXPECT_EQ(e.method, 0);
    EXPECT_EQ(e.uncompressed_size, records[i].data.size());
    EXPECT_EQ(e.crc32, zip_crc32(records[i].data));
    EXPECT_EQ(e.data_offset % kZipAlignment, 0u);
    const Storage s = zip.read(e);
    EXPECT_EQ(Bytes(s.bytes.begin(), s.bytes.end()), records[i].data);
  }
  EXPECT_EQ(zip.find("root/data/1"), &zip.entries()[3]);
  EXPECT_EQ(zip.find("root/data/2"), nullptr);
  EXPECT_THROW(zip.read("root/data/2"), FormatError);

  // Python's zipfile agrees (its testzip() checks every CRC; ZIP64 fields included).
  const auto r = test::run_command("/usr/bin/python3 -c \"import zipfile,sys; z=zipfile.ZipFile(sys.argv[1]); "
                                   "assert z.testzip() is None; print(len(z.infolist()), z.read('root/data/1')[:2].hex())\" " +
                                   test::shell_quote(path));
  EXPECT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("5 0386"), std::string::npos) << r.output;
}

INSTANTIATE_TEST_SUITE_P(Zip, ZipRoundTrip, ::testing::Values(false, true),
                         [](const auto& param_info) { return param_info.param ? "Zip64" : "Plain"; });

TEST(ZipReader, ReadsPythonZipfileArchivesWithDeflateCommentsAndDescriptors) {
  test::TempDir dir;
  const std::string path = dir.file("py.zip");
  // Written to an unseekable pipe, zipfile uses data descriptors (flag bit 3) for every record.
  const auto r = test::run_command(
      "/usr/bin/python3 -c \"import zipfile,sys,io\n"
      "class Pipe(io.RawIOBase):\n"
      "  def __init__(s,f): s.f=f\n"
      "  def writable(s): return True\n"
      "  def write(s,b): return s.f.write(b)\n"
      "f=open(sys.argv[1],'wb'); z=zipfile.ZipFile(Pipe(f),'w')\n"
      "z.writestr(zipfile.ZipInfo('r/deflated'), b'abc'*10000, compress_type=zipfile.ZIP_DEFLATED)\n"
      "z.writestr(zipfile.ZipInfo('r/stored'), bytes(range(256)), compress_type=zipfile.ZIP_STORED)\n"
      "z.writestr(zipfile.ZipInfo('r/empty_deflated'), b'', compress_type=zipfile.ZIP_DEFLATED)\n"
      "z.comment=b'a comment with PK\\\\x05\\\\x06 inside'; z.close()\" " +
      test::shell_quote(path));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  const ZipArchive zip = ZipArchive::open(path);
  ASSERT_EQ(zip.entries().size(), 3u);
  EXPECT_NE(zip.entries()[0].flags & 0x8, 0) << "expected data descriptors";
  EXPECT_EQ(zip.entries()[0].method, 8);
  std::string abc;
  for (int i = 0; i < 10000; ++i) abc += "abc";
  EXPECT_EQ(as_string(zip.read("r/deflated").bytes), abc);
  const Storage stored = zip.read("r/stored");
  ASSERT_EQ(stored.bytes.size(), 256u);
  for (size_t i = 0; i < 256; ++i) EXPECT_EQ(std::to_integer<size_t>(stored.bytes[i]), i);
  EXPECT_TRUE(zip.read("r/empty_deflated").bytes.empty());
}

TEST(ZipReader, StoredRecordsAreZeroCopyViewsIntoTheMap) {
  test::TempDir dir;
  write_zip(dir.file("z.zip"), {{"a/x", pattern(5000, 9)}});
  const ZipArchive zip = ZipArchive::open(dir.file("z.zip"));
  const Storage s = zip.read("a/x");
  const auto file = std::static_pointer_cast<const MappedFile>(s.owner);
  EXPECT_EQ(s.bytes.data(), file->bytes().data() + zip.entries()[0].data_offset);
}

TEST(ZipReader, FromBytesNamesTheGivenFile) {
  const Bytes junk = pattern(100, 0);
  try {
    ZipArchive::from_bytes(junk, nullptr, "memory.zip");
    FAIL();
  } catch (const FormatError& e) {
    EXPECT_EQ(std::string(e.what()).rfind("memory.zip: no end-of-central-directory record", 0), 0u) << e.what();
  }
}

TEST(ZipWriter, RefusesWrongByteCountsAndMisuse) {
  test::TempDir dir;
  AtomicOutputFile out(dir.file("w.zip"), false);
  ZipWriter zip(out);
  zip.begin_record("r/a", 4);
  EXPECT_THROW(zip.begin_record("r/b", 1), FormatError);  // one record at a time
  const Bytes five(5);
  try {
    zip.write(five);
    FAIL();
  } catch (const FormatError& e) {
    EXPECT_NE(std::string(e.what()).find("zip record 'r/a': got more than the declared 4 bytes"), std::string::npos);
  }
  zip.write(std::span(five).first(3));
  try {
    zip.end_record();
    FAIL();
  } catch (const FormatError& e) {
    EXPECT_NE(std::string(e.what()).find("zip record 'r/a': got 3 bytes, declared 4"), std::string::npos);
  }
  EXPECT_THROW(ZipWriter(out, ZipWriterOptions{1 << 20, false}), FormatError);  // padding must fit one extra field
}

TEST(ZipWriter, AlignmentOneMeansNoPadding) {
  test::TempDir dir;
  write_zip(dir.file("u.zip"), {{"r/a", pattern(7, 1)}, {"r/b", pattern(9, 2)}}, ZipWriterOptions{1, false});
  const ZipArchive zip = ZipArchive::open(dir.file("u.zip"));
  // 30-byte header + 3-byte name + 4-byte empty padding field.
  EXPECT_EQ(zip.entries()[0].data_offset, 37u);
  EXPECT_EQ(as_string(zip.read("r/b").bytes), as_string(pattern(9, 2)));
}

}  // namespace
}  // namespace hx
