// The hostile corpus for the .pth reader: malformed zip containers, lying pickles, forbidden globals and broken
// legacy files, each built byte by byte here (independently of the writer under test). Every case must be refused
// by read_pth with FormatError / UnsupportedError (exit status 3) whose message names the file and the specific
// problem; nothing may crash. Runs under ASan/UBSan in the sanitizer build.
#include <gtest/gtest.h>
#include <zlib.h>

#include <cstring>
#include <functional>
#include <string>
#include <vector>

#include "formats/errors.h"
#include "formats/pth.h"
#include "formats/zip.h"
#include "tests/support/test_support.h"

namespace hx {
namespace {

using Bytes = std::vector<std::byte>;

void append(Bytes& b, std::string_view s) {
  for (char c : s) b.push_back(static_cast<std::byte>(c));
}
void append_le(Bytes& b, uint64_t v, int n) {
  for (int i = 0; i < n; ++i) b.push_back(static_cast<std::byte>((v >> (8 * i)) & 0xFF));
}
void put_le(Bytes& b, size_t at, uint64_t v, int n) {
  for (int i = 0; i < n; ++i) b.at(at + static_cast<size_t>(i)) = static_cast<std::byte>((v >> (8 * i)) & 0xFF);
}
Bytes bytes_of(std::string_view s) {
  Bytes b;
  append(b, s);
  return b;
}

// ---- pickles, op by op ----
class Pk {
 public:
  Pk& op(uint8_t o) { return raw(&o, 1); }
  Pk& proto() { return op(0x80).op(2); }
  Pk& stop() { return op('.'); }
  Pk& mark() { return op('('); }
  Pk& str(std::string_view s) {
    op('X');
    append_le(b_, s.size(), 4);
    append(b_, s);
    return *this;
  }
  Pk& global(std::string_view module, std::string_view name) {
    op('c');
    append(b_, module);
    op('\n');
    append(b_, name);
    return op('\n');
  }
  Pk& integer(int64_t v) {
    op('J');
    append_le(b_, static_cast<uint64_t>(v), 4);
    return *this;
  }
  Pk& ints(const std::vector<int64_t>& v) {
    mark();
    for (int64_t x : v) integer(x);
    return op('t');
  }
  Pk& bytes(const Bytes& more) {
    b_.insert(b_.end(), more.begin(), more.end());
    return *this;
  }
  Pk& raw(const void* p, size_t n) {
    const auto* c = static_cast<const std::byte*>(p);
    b_.insert(b_.end(), c, c + n);
    return *this;
  }
  Bytes done() const { return b_; }

 private:
  Bytes b_;
};

struct TensorArgs {
  std::string storage_module = "torch", storage_class = "FloatStorage", key = "0", rebuild = "_rebuild_tensor_v2";
  int64_t numel = 4, offset = 0;
  std::vector<int64_t> shape = {2, 2}, strides = {2, 1};
  bool extra_arg = false;  // an 8th argument: wrong arity for _rebuild_tensor_v2
};

// The body of {"x": _rebuild_tensor_v2(('storage', FloatStorage, '0', 'cpu', 4), 0, (2, 2), (2, 1), False,
// OrderedDict())}, as torch.save writes it, after PROTO and before STOP.
Pk& tensor_dict(Pk& p, const TensorArgs& a = {}) {
  p.op('}').mark().str("x").global("torch._utils", a.rebuild).mark();
  p.mark().str("storage").global(a.storage_module, a.storage_class).str(a.key).str("cpu").integer(a.numel).op('t').op('Q');
  p.integer(a.offset).ints(a.shape).ints(a.strides).op(0x89).global("collections", "OrderedDict").op(')').op('R');
  if (a.extra_arg) p.op('N').op('N');
  return p.op('t').op('R').op('u');
}
Bytes tensor_pickle(const TensorArgs& a = {}) {
  Pk p;
  p.proto();
  tensor_dict(p, a);
  return p.stop().done();
}

Bytes float_bytes(size_t n) {
  Bytes b;
  for (size_t i = 0; i < n; ++i) append_le(b, 0x3f800000 + i, 4);
  return b;
}

// ---- zip archives with every field under control ----
struct ZipItem {
  std::string name;
  Bytes data;           // as stored in the file (compressed for method 8)
  uint16_t method = 0;
  uint16_t flags = 0;
  uint32_t crc = 0;
  uint64_t uncompressed = 0;
};
ZipItem stored(std::string name, Bytes plain) {
  const uint32_t crc = zip_crc32(plain);
  const uint64_t n = plain.size();
  return {std::move(name), std::move(plain), 0, 0, crc, n};
}
ZipItem deflated(std::string name, const Bytes& plain) {
  z_stream zs{};
  deflateInit2(&zs, 9, Z_DEFLATED, -MAX_WBITS, 9, Z_DEFAULT_STRATEGY);
  Bytes out(deflateBound(&zs, plain.size()));
  zs.next_in = reinterpret_cast<Bytef*>(const_cast<std::byte*>(plain.data()));
  zs.avail_in = static_cast<uInt>(plain.size());
  zs.next_out = reinterpret_cast<Bytef*>(out.data());
  zs.avail_out = static_cast<uInt>(out.size());
  deflate(&zs, Z_FINISH);
  out.resize(zs.total_out);
  deflateEnd(&zs);
  return {std::move(name), std::move(out), 8, 0, zip_crc32(plain), plain.size()};
}

struct BuiltZip {
  Bytes bytes;
  std::vector<size_t> local, central;
  size_t cd_offset = 0, eocd = 0;
};
BuiltZip build_zip(const std::vector<ZipItem>& items) {
  BuiltZip z;
  Bytes& b = z.bytes;
  for (const auto& it : items) {
    z.local.push_back(b.size());
    append_le(b, 0x04034b50, 4);
    append_le(b, 20, 2);
    append_le(b, it.flags, 2);
    append_le(b, it.method, 2);
    append_le(b, 0, 4);  // time, date
    append_le(b, it.crc, 4);
    append_le(b, it.data.size(), 4);
    append_le(b, it.uncompressed, 4);
    append_le(b, it.name.size(), 2);
    append_le(b, 0, 2);
    append(b, it.name);
    b.insert(b.end(), it.data.begin(), it.data.end());
  }
  z.cd_offset = b.size();
  for (size_t i = 0; i < items.size(); ++i) {
    const auto& it = items[i];
    z.central.push_back(b.size());
    append_le(b, 0x02014b50, 4);
    append_le(b, 20, 2);
    append_le(b, 20, 2);
    append_le(b, it.flags, 2);
    append_le(b, it.method, 2);
    append_le(b, 0, 4);
    append_le(b, it.crc, 4);
    append_le(b, it.data.size(), 4);
    append_le(b, it.uncompressed, 4);
    append_le(b, it.name.size(), 2);
    append_le(b, 0, 2);  // extra
    append_le(b, 0, 2);  // comment
    append_le(b, 0, 2);  // disk
    append_le(b, 0, 2);
    append_le(b, 0, 4);
    append_le(b, z.local[i], 4);
    append(b, it.name);
  }
  z.eocd = b.size();
  append_le(b, 0x06054b50, 4);
  append_le(b, 0, 4);
  append_le(b, items.size(), 2);
  append_le(b, items.size(), 2);
  append_le(b, z.eocd - z.cd_offset, 4);
  append_le(b, z.cd_offset, 4);
  append_le(b, 0, 2);
  return z;
}

// A well-formed torch-like archive: data.pkl, byteorder, data/0, version.
std::vector<ZipItem> good_items(Bytes pickle = tensor_pickle(), Bytes storage = float_bytes(4)) {
  return {stored("archive/data.pkl", std::move(pickle)), stored("archive/byteorder", bytes_of("little")),
          stored("archive/data/0", std::move(storage)), stored("archive/version", bytes_of("3\n"))};
}
BuiltZip good_zip() { return build_zip(good_items()); }
Bytes zip_with_pickle(const Bytes& pickle) { return build_zip(good_items(pickle)).bytes; }

// A legacy file: magic, protocol, sys_info, object pickle, key list, then the raw storage.
Bytes legacy_file(uint64_t protocol = 1001, bool little = true, int64_t count = 4, size_t raw_floats = 4,
                  bool magic_ok = true) {
  Pk p;
  p.proto().op(0x8a).op(10);
  const uint8_t magic[10] = {0x6c, 0xfc, 0x9c, 0x46, 0xf9, 0x20, 0x6a, 0xa8, 0x50, magic_ok ? uint8_t{0x19} : uint8_t{0x18}};
  p.raw(magic, 10).stop();
  p.proto().integer(static_cast<int64_t>(protocol)).stop();
  p.proto().op('}').mark().str("protocol_version").integer(1001).str("little_endian").op(little ? 0x88 : 0x89).op('u').stop();
  p.proto();
  {  // the object pickle: like tensor_dict but with the 6-field legacy persistent id
    p.op('}').mark().str("x").global("torch._utils", "_rebuild_tensor_v2").mark();
    p.mark().str("storage").global("torch", "FloatStorage").str("94").str("cpu").integer(4).op('N').op('t').op('Q');
    p.integer(0).ints({2, 2}).ints({2, 1}).op(0x89).global("collections", "OrderedDict").op(')').op('R');
    p.op('t').op('R').op('u').stop();
  }
  p.proto().op(']').mark().str("94").op('e').stop();
  Bytes out = p.done();
  append_le(out, static_cast<uint64_t>(count), 8);
  const Bytes raw = float_bytes(raw_floats);
  out.insert(out.end(), raw.begin(), raw.end());
  return out;
}

struct Case {
  std::string name;
  Bytes bytes;
  std::vector<std::string> expect;  // substrings of the message (any one suffices when `any_of`)
  bool unsupported = false;
  bool any_of = false;
  PthReadOptions options{};
};

std::vector<Case> hostile_cases() {
  std::vector<Case> c;
  const BuiltZip good = good_zip();
  auto mutated = [&](const std::function<void(BuiltZip&)>& f) {
    BuiltZip z = good;
    f(z);
    return z.bytes;
  };

  // ---- the zip container ----
  for (size_t cut : {size_t{10}, size_t{40}, good.bytes.size() / 2, good.cd_offset + 10, good.bytes.size() - 1}) {
    Bytes b(good.bytes.begin(), good.bytes.begin() + static_cast<std::ptrdiff_t>(cut));
    c.push_back({"truncated_at_" + std::to_string(cut), b, {"truncated", "too small"}, false, true});
  }
  c.push_back({"eocd_cd_offset_beyond_file", mutated([](BuiltZip& z) { put_le(z.bytes, z.eocd + 16, 0x7fffff00, 4); }),
               {"central directory (offset 2147483392", "does not end before"}});
  c.push_back({"eocd_claims_too_many_entries", mutated([](BuiltZip& z) {
                 put_le(z.bytes, z.eocd + 8, 5000, 2);
                 put_le(z.bytes, z.eocd + 10, 5000, 2);
               }),
               {"claims 5000 entries"}});
  c.push_back({"eocd_claims_too_few_entries", mutated([](BuiltZip& z) {
                 put_le(z.bytes, z.eocd + 8, 2, 2);
                 put_le(z.bytes, z.eocd + 10, 2, 2);
               }),
               {"bytes after its 2 entries"}});
  c.push_back({"eocd_disk_counts_disagree", mutated([](BuiltZip& z) { put_le(z.bytes, z.eocd + 8, 3, 2); }),
               {"entries on this disk"}});
  c.push_back({"central_entry_bad_signature", mutated([](BuiltZip& z) { put_le(z.bytes, z.central[1], 0x12345678, 4); }),
               {"central directory entry 1", "has signature 0x12345678"}});
  c.push_back({"central_entry_name_overruns", mutated([](BuiltZip& z) { put_le(z.bytes, z.central[3] + 28, 0xFFFF, 2); }),
               {"central directory entry 3", "overruns the central directory"}});
  c.push_back({"local_header_offset_out_of_bounds", mutated([](BuiltZip& z) { put_le(z.bytes, z.central[2] + 42, z.cd_offset + 4, 4); }),
               {"zip record 'archive/data/0'", "does not lie before the central directory"}});
  c.push_back({"local_header_wrong_signature", mutated([](BuiltZip& z) { put_le(z.bytes, z.local[2], 0x04034b51, 4); }),
               {"zip record 'archive/data/0': no local header"}});
  c.push_back({"local_header_name_mismatch", mutated([](BuiltZip& z) { z.bytes[z.local[2] + 30 + 13] = std::byte{'9'}; }),
               {"zip record 'archive/data/0': local header names it 'archive/data/9'"}});
  c.push_back({"local_header_size_mismatch", mutated([](BuiltZip& z) { put_le(z.bytes, z.local[2] + 22, 15, 4); }),
               {"zip record 'archive/data/0': local header", "disagrees with the central directory"}});
  c.push_back({"record_data_beyond_central_directory", mutated([](BuiltZip& z) {
                 for (size_t at : {z.local[3] + 18, z.local[3] + 22, z.central[3] + 20, z.central[3] + 24}) put_le(z.bytes, at, 100000, 4);
               }),
               {"zip record 'archive/version'", "runs past the start of the central directory"}});
  c.push_back({"records_overlap", mutated([](BuiltZip& z) {
                 // data/0 claims 16 more bytes, swallowing the local header of 'version' (which stays valid).
                 for (size_t at : {z.local[2] + 18, z.local[2] + 22, z.central[2] + 20, z.central[2] + 24}) put_le(z.bytes, at, 32, 4);
               }),
               {"zip records 'archive/data/0' and 'archive/version' overlap"}});
  {
    auto items = good_items();
    items.push_back(stored("archive/data/0", float_bytes(4)));
    c.push_back({"duplicate_record_name", build_zip(items).bytes, {"zip record 'archive/data/0' appears twice"}});
  }
  c.push_back({"data_pkl_bad_crc", mutated([](BuiltZip& z) {
                 z.bytes[z.local[0] + 30 + 16 + 3] ^= std::byte{0x01};  // flip a bit inside the pickle
               }),
               {"zip record 'archive/data.pkl': CRC mismatch (expected 0x", ", found 0x"}});
  {
    auto items = good_items();
    items[0] = deflated("archive/data.pkl", tensor_pickle());
    items[0].uncompressed -= 10;  // declared small, inflates larger
    items[0].crc = 0;
    c.push_back({"deflate_inflates_past_declared_size", build_zip(items).bytes, {"inflates to more than its declared"}});
  }
  {
    auto items = good_items();
    items[0] = deflated("archive/data.pkl", tensor_pickle());
    items[0].uncompressed = 0xFFFFFFF0;  // declared huge from a few hundred compressed bytes
    c.push_back({"deflate_declared_beyond_ratio", build_zip(items).bytes, {"beyond DEFLATE's maximum ratio of 1032:1"}});
  }
  {
    auto items = good_items();
    items[2] = deflated("archive/data/0", Bytes(64 * 1024, std::byte{0}));
    Case k{"deflate_declared_beyond_limit", build_zip(items).bytes, {"declares 65536 uncompressed bytes, more than the limit of 4096"}, true};
    k.options.max_inflated_bytes = 4096;
    c.push_back(k);
  }
  {
    auto items = good_items();
    items[0] = deflated("archive/data.pkl", tensor_pickle());
    items[0].data.resize(items[0].data.size() / 2);  // the DEFLATE stream is cut short
    c.push_back({"deflate_stream_truncated", build_zip(items).bytes, {"DEFLATE data ends before the stream does", "corrupt DEFLATE"}, false, true});
  }
  {
    auto items = good_items();
    items[0] = deflated("archive/data.pkl", tensor_pickle());
    items[0].data[items[0].data.size() / 2] ^= std::byte{0x5a};
    c.push_back({"deflate_corrupt_or_bad_crc", build_zip(items).bytes, {"corrupt DEFLATE", "CRC mismatch", "inflates to", "DEFLATE data ends"}, false, true});
  }
  {
    auto items = good_items();
    items[2].method = 12;
    c.push_back({"unsupported_method_bzip2", build_zip(items).bytes, {"zip record 'archive/data/0': compression method 12 (bzip2) is not supported"}, true});
  }
  {
    auto items = good_items();
    items[0].flags = 1;
    c.push_back({"encrypted_record", build_zip(items).bytes, {"zip record 'archive/data.pkl': is encrypted"}, true});
  }
  c.push_back({"zip64_sentinel_without_extra_field", mutated([](BuiltZip& z) { put_le(z.bytes, z.central[2] + 42, 0xFFFFFFFF, 4); }),
               {"zip record 'archive/data/0'", "there is no ZIP64 extra field"}});
  {
    BuiltZip z = good;  // a ZIP64 locator in front of the EOCD whose record offset lies
    Bytes locator;
    append_le(locator, 0x07064b50, 4);
    append_le(locator, 0, 4);
    append_le(locator, 0x7FFFFFFFFFFFull, 8);
    append_le(locator, 1, 4);
    z.bytes.insert(z.bytes.begin() + static_cast<std::ptrdiff_t>(z.eocd), locator.begin(), locator.end());
    c.push_back({"zip64_locator_points_nowhere", z.bytes, {"ZIP64 locator points at offset 140737488355327"}});
    put_le(z.bytes, z.eocd + 8, z.eocd - 60, 8);  // now at bytes that are not a ZIP64 record
    c.push_back({"zip64_record_missing", z.bytes, {"no ZIP64 end-of-central-directory record at offset"}});
  }

  // ---- the archive's records ----
  {
    auto items = good_items();
    items[0].name = "archive/model.pkl";
    c.push_back({"missing_data_pkl", build_zip(items).bytes, {"no 'archive/data.pkl' record"}});
  }
  {
    auto items = good_items();
    items.erase(items.begin() + 2);
    c.push_back({"missing_storage_record", build_zip(items).bytes, {"storage record 'archive/data/0' of tensor 'x' is missing"}});
  }
  {
    auto items = good_items(tensor_pickle(), float_bytes(2));
    c.push_back({"storage_record_smaller_than_declared", build_zip(items).bytes,
                 {"storage record 'archive/data/0' holds 8 bytes, but tensor 'x' declares 4 x FloatStorage (16 bytes)"}});
  }
  {
    TensorArgs a;
    a.shape = {4, 4};
    a.strides = {4, 1};
    c.push_back({"view_needs_more_than_storage", zip_with_pickle(tensor_pickle(a)), {"tensor 'x': needs 64 bytes of storage", "found 16"}});
  }
  {
    TensorArgs a;
    a.strides = {-2, 1};
    c.push_back({"negative_stride", zip_with_pickle(tensor_pickle(a)), {"tensor 'x': negative stride -2"}});
  }
  {
    TensorArgs a;
    a.offset = -1;
    c.push_back({"negative_storage_offset", zip_with_pickle(tensor_pickle(a)), {"tensor 'x': negative storage offset -1"}});
  }
  {
    TensorArgs a;
    a.shape = {0x7FFFFFFF, 0x7FFFFFFF, 0x7FFFFFFF};
    a.strides = {1, 1, 1};
    c.push_back({"shape_overflows", zip_with_pickle(tensor_pickle(a)), {"tensor 'x': shape [2147483647, 2147483647, 2147483647]", "overflows 64 bits"}});
  }
  {
    TensorArgs a;
    a.shape = {2, 2, 2};
    c.push_back({"shape_and_strides_ranks_differ", zip_with_pickle(tensor_pickle(a)), {"tensor 'x': shape [2, 2, 2] and strides [2, 1] have different ranks"}});
  }
  c.push_back({"big_endian_byteorder", [] {
                 auto items = good_items();
                 items[1] = stored("archive/byteorder", bytes_of("big"));
                 return build_zip(items).bytes;
               }(),
               {"byteorder record says 'big': big-endian .pth files are not supported"}, true});
  c.push_back({"archive_version_too_new", [] {
                 auto items = good_items();
                 items[3] = stored("archive/version", bytes_of("11\n"));
                 return build_zip(items).bytes;
               }(),
               {"archive version 11 is newer than hxforge supports (<= 10)"}, true});
  c.push_back({"first_record_outside_a_folder", [] {
                 auto items = good_items();
                 items[0].name = "data.pkl";
                 return build_zip(items).bytes;
               }(),
               {"first zip record 'data.pkl' is not inside a folder"}});

  // ---- the pickle machine ----
  c.push_back({"unknown_opcode", zip_with_pickle(Pk().proto().op('I').done()), {"unknown or unsupported opcode 0x49 in archive/data.pkl (byte 2)"}});
  c.push_back({"truncated_pickle", zip_with_pickle([] { auto b = tensor_pickle(); b.resize(b.size() - 40); return b; }()),
               {"in archive/data.pkl", "truncated"}});
  c.push_back({"pickle_without_stop", zip_with_pickle(Pk().proto().op('N').done()), {"ends without STOP"}});
  c.push_back({"stack_underflow", zip_with_pickle(Pk().proto().op('N').op(0x86).stop().done()), {"TUPLE2 pops an empty stack (stack underflow)"}});
  c.push_back({"stack_underflow_below_mark", zip_with_pickle(Pk().proto().op('N').mark().op('a').stop().done()), {"APPEND pops an empty stack"}});
  c.push_back({"setitems_without_mark", zip_with_pickle(Pk().proto().op('}').op('u').stop().done()), {"SETITEMS without a MARK"}});
  c.push_back({"mark_never_closed", zip_with_pickle(Pk().proto().mark().op('N').stop().done()), {"STOP with 1 unclosed MARK(s)"}});
  c.push_back({"binget_unset_memo", zip_with_pickle(Pk().proto().op('h').op(5).stop().done()), {"memo index 5 is not set"}});
  c.push_back({"long_binput_huge_index", zip_with_pickle(Pk().proto().op('N').op('r').raw("\xf0\xff\xff\xff", 4).stop().done()),
               {"memo index 4294967280 exceeds the limit"}});
  {
    Pk p;  // 100k nested lists: [[[[...]]]]
    p.proto();
    for (int i = 0; i < 100000; ++i) p.op(']');
    for (int i = 0; i < 100000 - 1; ++i) p.op('a');
    c.push_back({"deep_list_nesting", zip_with_pickle(p.stop().done()), {"containers nested deeper than 256"}});
  }
  {
    Pk p;  // 100k TUPLE1 wrappers: constant stack, unbounded depth
    p.proto().op(')');
    for (int i = 0; i < 100000; ++i) p.op(0x85);
    c.push_back({"deep_tuple_nesting", zip_with_pickle(p.stop().done()), {"containers nested deeper than 256"}});
  }
  {
    Pk p;  // a list that contains itself: the flattener must not loop forever
    p.proto().op(']').op('q').op(0).op('h').op(0).op('a').stop();
    c.push_back({"self_containing_list", zip_with_pickle(p.done()), {"nested deeper than 256", "reference cycle"}});
  }
  {
    Pk p;  // t(k+1) = (t(k), t(k)) 24 times: 49 objects, 2^25 nodes to flatten
    p.proto().op('}').str("k").op('N');
    for (int i = 0; i < 24; ++i) p.op('q').op(0).op('h').op(0).op(0x86);
    c.push_back({"shared_subtree_explosion", zip_with_pickle(p.op('s').stop().done()), {"object tree has more than 4194304 nodes"}});
  }
  {
    Pk p;  // the same with a 60 KB key on top: ~1M short visits, but 60 GB of path text
    p.proto().op('}').str(std::string(60000, 'k')).op('N');
    for (int i = 0; i < 20; ++i) p.op('q').op(0).op('h').op(0).op(0x86);
    c.push_back({"long_key_shared_subtree_paths", zip_with_pickle(p.op('s').stop().done()), {"object tree paths add up to more than"}});
  }
  c.push_back({"huge_string_length", zip_with_pickle(Pk().proto().op('X').raw("\xff\xff\xff\xff", 4).done()),
               {"BINUNICODE needs 4294967295 bytes but only 0 remain"}});
  c.push_back({"huge_binunicode8_length", zip_with_pickle(Pk().proto().op(0x8d).raw("\x00\x00\x00\x00\x00\x00\x00\x80", 8).done()),
               {"BINUNICODE8 needs 9223372036854775808 bytes"}});
  c.push_back({"invalid_utf8_string", zip_with_pickle(Pk().proto().op('X').raw("\x02\x00\x00\x00\xc3\x28", 6).stop().done()), {"not valid UTF-8"}});
  for (const auto& [module, name] : std::vector<std::pair<std::string, std::string>>{
           {"os", "system"}, {"builtins", "eval"}, {"torch", "load"}, {"__builtin__", "exec"}, {"posix", "system"},
           {"subprocess", "Popen"}, {"builtins", "getattr"}}) {
    const Bytes pk = Pk().proto().global(module, name).str("echo pwned").op(0x85).op('R').stop().done();
    c.push_back({"forbidden_global_" + module + "_" + name, zip_with_pickle(pk),
                 {"forbidden global '" + module + "." + name + "' in archive/data.pkl", "only torch tensor-rebuild globals"}, true});
  }
  c.push_back({"forbidden_stack_global", zip_with_pickle(Pk().proto().str("os").str("system").op(0x93).stop().done()),
               {"forbidden global 'os.system'"}, true});
  c.push_back({"reduce_on_non_callable", zip_with_pickle(Pk().proto().integer(3).op(')').op('R').stop().done()),
               {"REDUCE on an int, which is not a callable global"}});
  c.push_back({"reduce_on_storage_class", zip_with_pickle(Pk().proto().global("torch", "FloatStorage").op(')').op('R').stop().done()),
               {"calling 'torch.FloatStorage' is not supported"}, true});
  c.push_back({"newobj_of_plain_class", zip_with_pickle(Pk().proto().global("torch", "Tensor").op(')').op(0x81).stop().done()),
               {"NEWOBJ of 'torch.Tensor'"}, true});
  c.push_back({"setitem_on_list", zip_with_pickle(Pk().proto().op(']').str("k").str("v").op('s').stop().done()), {"SETITEM on a list (only dicts)"}});
  c.push_back({"append_on_tuple", zip_with_pickle(Pk().proto().op(')').op('N').op('a').stop().done()), {"APPEND to a tuple (only lists)"}});
  c.push_back({"build_on_list", zip_with_pickle(Pk().proto().op(']').op('}').op('b').stop().done()), {"BUILD on a list"}});
  c.push_back({"unhashable_dict_key", zip_with_pickle(Pk().proto().op('}').op(']').op('N').op('s').stop().done()), {"unhashable dict key of type list"}});
  {
    TensorArgs a;
    a.storage_class = "FooStorage";
    c.push_back({"unknown_storage_type", zip_with_pickle(tensor_pickle(a)), {"unsupported torch global 'torch.FooStorage' in archive/data.pkl", "an unknown storage type"}, true});
  }
  {
    TensorArgs a;
    a.storage_module = "torch.storage";
    a.storage_class = "UntypedStorage";
    a.rebuild = "_rebuild_tensor_v3";
    Pk p;  // v3 with a dtype global torch does not have in hxforge's table
    p.proto().op('}').mark().str("x").global("torch._utils", a.rebuild).mark();
    p.mark().str("storage").global(a.storage_module, a.storage_class).str("0").str("cpu").integer(16).op('t').op('Q');
    p.integer(0).ints({16}).ints({1}).op(0x89).global("collections", "OrderedDict").op(')').op('R');
    p.global("torch", "float4_e2m1fn_x2").op('t').op('R').op('u').stop();
    c.push_back({"unknown_dtype", zip_with_pickle(p.done()), {"unsupported torch global 'torch.float4_e2m1fn_x2' in archive/data.pkl", "an unknown dtype"}, true});
  }
  c.push_back({"quantized_tensor_rebuild", zip_with_pickle(Pk().proto().global("torch._utils", "_rebuild_qtensor").stop().done()),
               {"unsupported torch global 'torch._utils._rebuild_qtensor'"}, true});
  {
    TensorArgs a;
    a.extra_arg = true;
    c.push_back({"rebuild_tensor_wrong_arity", zip_with_pickle(tensor_pickle(a)), {"'torch._utils._rebuild_tensor_v2' takes 6-7 arguments, found 8"}});
  }
  {
    TensorArgs a;
    a.numel = -4;
    c.push_back({"negative_storage_size", zip_with_pickle(tensor_pickle(a)), {"storage '0' has negative size -4"}});
  }
  c.push_back({"persistent_id_module", zip_with_pickle(Pk().proto().mark().str("module").op('N').op('N').op('t').op('Q').stop().done()),
               {"persistent id 'module'"}, true});
  c.push_back({"persistent_id_not_a_tuple", zip_with_pickle(Pk().proto().integer(7).op('Q').stop().done()), {"persistent id must be a non-empty tuple, found an int"}});
  c.push_back({"bare_storage", zip_with_pickle(Pk().proto().mark().str("storage").global("torch", "FloatStorage").str("0").str("cpu").integer(4).op('t').op('Q').stop().done()),
               {"a bare storage at '' (saved without a tensor) is not supported"}, true});
  c.push_back({"protocol_too_new", zip_with_pickle(Pk().op(0x80).op(9).done()), {"pickle protocol 9"}});

  // ---- the legacy format ----
  c.push_back({"legacy_bad_magic", legacy_file(1001, true, 4, 4, false), {"legacy .pth magic number is wrong"}});
  c.push_back({"legacy_wrong_protocol", legacy_file(1002), {"legacy .pth protocol version 1002 (only 1001 is known)"}, true});
  c.push_back({"legacy_big_endian", legacy_file(1001, false), {"big-endian .pth files are not supported"}, true});
  c.push_back({"legacy_truncated_storage", legacy_file(1001, true, 4, 3), {"storage '94': 4 x FloatStorage at byte", "run past the end of the file"}});
  c.push_back({"legacy_storage_count_mismatch", legacy_file(1001, true, 3, 4), {"storage '94' holds 3 elements, but the object pickle declares 4 x FloatStorage"}});
  c.push_back({"legacy_truncated_count", [] { auto b = legacy_file(); b.resize(b.size() - 20); return b; }(),
               {"storage '94': element count at byte", "truncated"}});
  c.push_back({"legacy_truncated_pickle", [] { auto b = legacy_file(); b.resize(60); return b; }(), {"truncated", "ends without STOP"}, false, true});
  c.push_back({"not_a_checkpoint", bytes_of("GGUF, definitely not a pth"), {"not a PyTorch checkpoint"}});
  c.push_back({"empty_file_like_zip", bytes_of("PK\x05\x06"), {"too small to be a zip archive"}});
  return c;
}

void PrintTo(const Case& k, std::ostream* os) { *os << k.name; }

class PthHostile : public ::testing::TestWithParam<Case> {};

TEST_P(PthHostile, RefusedWithAMessageNamingFileAndProblem) {
  const Case& k = GetParam();
  test::TempDir dir;
  const std::string path = dir.file(k.name + ".pth");
  test::write_file_bytes(path, k.bytes);
  std::string message;
  bool was_unsupported = false;
  try {
    read_pth(path, k.options);
    FAIL() << k.name << " was accepted";
  } catch (const UnsupportedError& e) {
    message = e.what();
    was_unsupported = true;
    EXPECT_EQ(e.code(), ExitCode::kInvalidInput);
  } catch (const FormatError& e) {
    message = e.what();
    EXPECT_EQ(e.code(), ExitCode::kInvalidInput);
  }
  EXPECT_EQ(was_unsupported, k.unsupported) << message;
  EXPECT_EQ(message.rfind(path + ": ", 0), 0u) << "message must start with the file: " << message;
  if (k.any_of) {
    bool any = false;
    for (const auto& s : k.expect) any = any || message.find(s) != std::string::npos;
    EXPECT_TRUE(any) << message;
  } else {
    for (const auto& s : k.expect) EXPECT_NE(message.find(s), std::string::npos) << "missing '" << s << "' in: " << message;
  }
  // The in-memory entry point (what the fuzzers use) must refuse it the same way.
  EXPECT_THROW(read_pth_bytes(k.bytes, nullptr, path, k.options), Error);
}

INSTANTIATE_TEST_SUITE_P(Corpus, PthHostile, ::testing::ValuesIn(hostile_cases()),
                         [](const auto& param_info) { return param_info.param.name; });

TEST(PthHostileCorpus, IsLargeAndItsBaseCasesAreValid) {
  EXPECT_GE(hostile_cases().size(), 28u);
  // The unmodified builders produce files that load, so every case fails for its own reason.
  test::TempDir dir;
  test::write_file_bytes(dir.file("good.pth"), good_zip().bytes);
  const Checkpoint ck = read_pth(dir.file("good.pth"));
  ASSERT_EQ(ck.tensors.size(), 1u);
  EXPECT_EQ(ck.tensors[0].name, "x");
  EXPECT_EQ(ck.tensors[0].view.shape, (Shape{2, 2}));
  test::write_file_bytes(dir.file("legacy.pth"), legacy_file());
  const Checkpoint legacy = read_pth(dir.file("legacy.pth"));
  EXPECT_EQ(legacy.format, CheckpointFormat::kPthLegacy);
  ASSERT_EQ(legacy.tensors.size(), 1u);
  EXPECT_EQ(to_contiguous_bytes(legacy.tensors[0].view), float_bytes(4));
  // A DEFLATE data.pkl and storage within the limits read fine (zip files re-compressed by other tools).
  auto items = good_items();
  items[0] = deflated("archive/data.pkl", tensor_pickle());
  items[2] = deflated("archive/data/0", float_bytes(4));
  test::write_file_bytes(dir.file("deflated.pth"), build_zip(items).bytes);
  const Checkpoint deflated_ck = read_pth(dir.file("deflated.pth"));
  ASSERT_EQ(deflated_ck.tensors.size(), 1u);
  EXPECT_EQ(to_contiguous_bytes(deflated_ck.tensors[0].view), float_bytes(4));
}

TEST(PthDetect, ByContentNotExtension) {
  auto head = [](std::initializer_list<int> v) {
    Bytes b;
    for (int x : v) b.push_back(static_cast<std::byte>(x));
    return b;
  };
  EXPECT_EQ(detect_pth_kind(head({'P', 'K', 3, 4, 20, 0})), PthKind::kZip);
  EXPECT_EQ(detect_pth_kind(head({0x80, 2, 0x8a, 10, 0x6c, 0xfc})), PthKind::kLegacy);
  EXPECT_EQ(detect_pth_kind(head({0x80, 4, 0x95, 14, 0, 0, 0, 0, 0, 0, 0, 0x8a, 10, 0x6c})), PthKind::kLegacy);
  // A safetensors file whose header is 640 bytes long starts with 0x80 0x02 too.
  EXPECT_EQ(detect_pth_kind(head({0x80, 2, 0, 0, 0, 0, 0, 0, '{', '"'})), PthKind::kUnknown);
  EXPECT_EQ(detect_pth_kind(head({})), PthKind::kUnknown);
}

TEST(PthHostileCorpus, SharedTupleKeyReprIsBounded) {
  // {t30: 1} where t(k+1) = (t(k), t(k)): the key's repr would be 2^30 elements long; it is elided instead.
  Pk p;
  p.proto().op('}').op('N');
  for (int i = 0; i < 30; ++i) p.op('q').op(0).op('h').op(0).op(0x86);
  p.integer(1).op('s').stop();
  test::TempDir dir;
  test::write_file_bytes(dir.file("key.pth"), zip_with_pickle(p.done()));
  const Checkpoint ck = read_pth(dir.file("key.pth"));
  ASSERT_EQ(ck.other_leaves.size(), 1u);
  EXPECT_LT(ck.other_leaves[0].path.size(), 20000u);
  EXPECT_NE(ck.other_leaves[0].path.find("..."), std::string::npos);
  EXPECT_EQ(ck.other_leaves[0].value, "1");
}

TEST(PthHostileCorpus, LargeStoredRecordCrcOnlyWhenAsked) {
  // A 2 MiB storage (above kZipSmallRecordBytes) with a flipped bit: accepted by default (its CRC is not computed),
  // refused with verify_crc.
  const size_t floats = (2u << 20) / 4;
  TensorArgs a;
  a.numel = static_cast<int64_t>(floats);
  a.shape = {static_cast<int64_t>(floats)};
  a.strides = {1};
  BuiltZip z = build_zip(good_items(tensor_pickle(a), float_bytes(floats)));
  z.bytes[z.local[2] + 30 + 14 + 100] ^= std::byte{1};
  test::TempDir dir;
  test::write_file_bytes(dir.file("big.pth"), z.bytes);
  EXPECT_EQ(read_pth(dir.file("big.pth")).tensors.size(), 1u);
  PthReadOptions strict;
  strict.verify_crc = true;
  try {
    read_pth(dir.file("big.pth"), strict);
    FAIL() << "bad CRC accepted with verify_crc";
  } catch (const FormatError& e) {
    EXPECT_NE(std::string(e.what()).find("zip record 'archive/data/0': CRC mismatch"), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace hx
