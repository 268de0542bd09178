// libFuzzer target: the zip reader (end records, ZIP64, central directory, local headers, DEFLATE, CRC) and the
// whole .pth reader on top of it (zip and legacy formats), on bytes in memory.
//
// Beyond "no crash, no leak, no UB, bounded memory" it checks the reader's contract: only FormatError /
// UnsupportedError (exit 3) come out; every entry of an accepted archive lies inside the input, ahead of the central
// directory, without overlapping another; a record's bytes have exactly its declared size; and every tensor of an
// accepted checkpoint lies inside its storage. Inflation is capped at 1 MiB per record to keep runs fast.
// Seeds: corpus/zip/ holds the small oracle .pth files written by torch 2.11 (zip with data descriptors, legacy,
// the malicious one), plus archives from hxforge's own writer (plain and ZIP64-forced) and one with DEFLATE records.
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <span>
#include <string>

#include "formats/errors.h"
#include "formats/pth.h"
#include "formats/zip.h"

namespace {

[[noreturn]] void contract_broken(const std::string& what) {
  std::fprintf(stderr, "zip reader contract broken: %s\n", what.c_str());
  std::abort();
}

constexpr uint64_t kMaxInflate = uint64_t{1} << 20;

void check_archive(std::span<const std::byte> bytes) {
  hx::ZipReadOptions options;
  options.verify_stored_crc = true;
  options.max_inflated_bytes = kMaxInflate;
  const hx::ZipArchive zip = hx::ZipArchive::from_bytes(bytes, nullptr, "fuzz.zip", options);
  for (const hx::ZipEntry& e : zip.entries()) {
    if (e.data_offset > bytes.size() || e.compressed_size > bytes.size() - e.data_offset)
      contract_broken("entry '" + e.name + "' lies outside the input");
    if (zip.find(e.name) != &e) contract_broken("find() disagrees for '" + e.name + "'");
  }
  for (const hx::ZipEntry& e : zip.entries()) {
    hx::Storage s;
    try {
      s = zip.read(e);
    } catch (const hx::Error& err) {
      if (err.code() != hx::ExitCode::kInvalidInput) contract_broken(std::string("wrong error class: ") + err.what());
      continue;
    }
    if (s.bytes.size() != e.uncompressed_size) contract_broken("record '" + e.name + "' has the wrong size");
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::span<const std::byte> bytes(reinterpret_cast<const std::byte*>(data), size);
  try {
    check_archive(bytes);
  } catch (const hx::Error& e) {
    if (e.code() != hx::ExitCode::kInvalidInput) contract_broken(std::string("wrong error class: ") + e.what());
  }
  try {
    hx::PthReadOptions options;
    options.max_inflated_bytes = kMaxInflate;
    const hx::Checkpoint ck = hx::read_pth_bytes(bytes, nullptr, "fuzz.pth", options);
    for (const auto& t : ck.tensors) {
      try {
        hx::check_view_in_bounds(t.view, t.name);
      } catch (const hx::Error&) {
        contract_broken("accepted tensor '" + t.name + "' lies outside its storage");
      }
      if (t.view.nbytes() <= kMaxInflate) (void)hx::to_contiguous_bytes(t.view);
    }
  } catch (const hx::Error& e) {
    if (e.code() != hx::ExitCode::kInvalidInput) contract_broken(std::string("wrong error class: ") + e.what());
  }
  return 0;
}
