// The legacy (non-zip) torch.save format, `_use_new_zipfile_serialization=False` (torch/serialization.py
// _legacy_save / _legacy_load). The file is five pickles back to back, then raw storage bytes:
//   1. the magic number 0x1950A86A20F9469CFC6C (a LONG1)
//   2. the protocol version 1001
//   3. sys_info: {'protocol_version', 'little_endian', 'type_sizes'}
//   4. the object tree, whose storages are persistent ids
//      ('storage', storage_class, root_key, location, numel, view_metadata | None)
//   5. the list of storage keys, in the order their bytes follow
// and then, per key: an int64 little-endian element count followed by count x element-size raw bytes.
// Storages are zero-copy views into the map; a view_metadata (view_key, offset, size) is a slice of its root.
#include <algorithm>
#include <cstring>
#include <map>
#include <unordered_map>

#include "formats/errors.h"
#include "formats/pth.h"
#include "formats/pth_internal.h"

namespace hx::pth_detail {
namespace {

// 0x1950A86A20F9469CFC6C as pickle's LONG1 stores it: little-endian two's complement.
constexpr uint8_t kLegacyMagicLe[] = {0x6c, 0xfc, 0x9c, 0x46, 0xf9, 0x20, 0x6a, 0xa8, 0x50, 0x19};

// The bytes of one storage key: where they start and what the pickle declared for them.
struct LegacyStorage {
  DType dtype = DType::kU8;
  int64_t numel = 0;
  std::string storage_class;
  Storage bytes;
  bool read = false;  // set once the raw section delivered its bytes
};

}  // namespace

Checkpoint read_legacy(std::span<const std::byte> bytes, const std::shared_ptr<const void>& owner,
                       const std::string& file) {
  size_t pos = 0;
  auto next_pickle = [&](const char* what) {
    PickleResult r = parse_pickle(bytes.subspan(pos), PickleSource{file, std::string(what) + " pickle at byte " +
                                                                             std::to_string(pos)});
    pos += r.consumed;
    return r;
  };

  const PickleResult magic = next_pickle("the magic-number");
  const PyObject& m = magic.at(magic.root);
  if (m.kind != PyKind::kBigInt || m.text.size() != sizeof kLegacyMagicLe ||
      std::memcmp(m.text.data(), kLegacyMagicLe, sizeof kLegacyMagicLe) != 0)
    throw FormatError(in_file(file, "legacy .pth magic number is wrong (expected 0x1950a86a20f9469cfc6c): not a "
                                    "torch.save file, or corrupt"));
  const PickleResult protocol = next_pickle("the protocol-version");
  const PyObject& pv = protocol.at(protocol.root);
  if (pv.kind != PyKind::kInt || pv.int_value != static_cast<int64_t>(kPthLegacyProtocolVersion))
    throw UnsupportedError(in_file(file, "legacy .pth protocol version " +
                                         (pv.kind == PyKind::kInt ? std::to_string(pv.int_value) : std::string("?")) +
                                         " (only " + std::to_string(kPthLegacyProtocolVersion) + " is known)"));
  const PickleResult sys_info = next_pickle("the sys_info");
  const PyObject& info = sys_info.at(sys_info.root);
  if (info.kind != PyKind::kDict) throw FormatError(in_file(file, "legacy .pth sys_info is not a dict"));
  for (size_t i = 0; i + 1 < info.items.size(); i += 2) {
    const PyObject& key = sys_info.at(info.items[i]);
    const PyObject& value = sys_info.at(info.items[i + 1]);
    if (key.kind == PyKind::kStr && key.text == "little_endian" && value.kind == PyKind::kBool && !value.flag)
      throw UnsupportedError(in_file(file, "written on a big-endian machine (sys_info little_endian=False): "
                                           "big-endian .pth files are not supported"));
  }

  const PickleResult objects = next_pickle("the object");
  const PickleResult keys_pickle = next_pickle("the storage-key list");
  const PyObject& key_list = keys_pickle.at(keys_pickle.root);
  if (key_list.kind != PyKind::kList)
    throw FormatError(in_file(file, "legacy .pth storage-key list is a " + std::string(py_kind_name(key_list.kind))));

  // What the object pickle declares for each root storage key.
  std::unordered_map<std::string, LegacyStorage> storages;
  for (const PyStorageRef& ref : objects.storages) {
    auto [it, inserted] = storages.try_emplace(ref.key);
    LegacyStorage& s = it->second;
    if (inserted) {
      s.dtype = storage_dtype(ref);
      s.numel = ref.numel;
      s.storage_class = ref.storage_class;
    } else if (s.dtype != storage_dtype(ref) || s.numel != ref.numel) {
      throw FormatError(in_file(file, "storage '" + ref.key + "' is declared both as " + std::to_string(s.numel) +
                                      " x " + s.storage_class + " and as " + std::to_string(ref.numel) + " x " +
                                      ref.storage_class));
    }
  }

  // The raw section: per key, int64 element count + bytes.
  for (ObjId k : key_list.items) {
    const PyObject& key_obj = keys_pickle.at(k);
    if (key_obj.kind != PyKind::kStr)
      throw FormatError(in_file(file, "legacy .pth storage-key list holds a " + std::string(py_kind_name(key_obj.kind))));
    const std::string& key = key_obj.text;
    auto it = storages.find(key);
    if (it == storages.end())
      throw FormatError(in_file(file, "storage key '" + key + "' in the key list is not used by the object pickle"));
    LegacyStorage& s = it->second;
    if (s.read) throw FormatError(in_file(file, "storage key '" + key + "' appears twice in the key list"));
    if (bytes.size() - pos < 8)
      throw FormatError(in_file(file, "storage '" + key + "': element count at byte " + std::to_string(pos) +
                                      " lies beyond the end of the file (truncated)"));
    uint64_t count = 0;
    for (int i = 7; i >= 0; --i) count = (count << 8) | std::to_integer<uint64_t>(bytes[pos + static_cast<size_t>(i)]);
    pos += 8;
    if (count != static_cast<uint64_t>(s.numel))
      throw FormatError(in_file(file, "storage '" + key + "' holds " + std::to_string(static_cast<int64_t>(count)) +
                                      " elements, but the object pickle declares " + std::to_string(s.numel) + " x " +
                                      s.storage_class));
    const auto nbytes = dtype_bytes_for(s.dtype, count);
    if (!nbytes || *nbytes > bytes.size() - pos)
      throw FormatError(in_file(file, "storage '" + key + "': " + std::to_string(count) + " x " + s.storage_class +
                                      " at byte " + std::to_string(pos) + " run past the end of the file (" +
                                      std::to_string(bytes.size()) + " bytes; truncated)"));
    s.bytes = Storage{bytes.subspan(pos, *nbytes), owner};
    s.read = true;
    pos += *nbytes;
  }

  const StorageResolver resolve = [&](const PyStorageRef& ref, const std::string& tensor) {
    const LegacyStorage& s = storages.at(ref.key);  // every ref's key was entered above
    if (!s.read)
      throw FormatError(in_file(file, "storage '" + ref.key + "' of tensor '" + tensor +
                                      "' is missing from the storage-key list"));
    if (!ref.has_view) return s.bytes;
    const uint64_t es = std::max<uint64_t>(dtype_element_size(s.dtype), 1);
    if (ref.view_offset < 0 || ref.view_numel < 0 ||
        static_cast<uint64_t>(ref.view_offset) > s.bytes.bytes.size() / es ||
        static_cast<uint64_t>(ref.view_numel) > s.bytes.bytes.size() / es - static_cast<uint64_t>(ref.view_offset))
      throw FormatError(in_file(file, "tensor '" + tensor + "': storage view [" + std::to_string(ref.view_offset) +
                                      ", +" + std::to_string(ref.view_numel) + ") lies outside storage '" + ref.key +
                                      "' of " + std::to_string(s.numel) + " elements"));
    return Storage{s.bytes.bytes.subspan(static_cast<uint64_t>(ref.view_offset) * es,
                                         static_cast<uint64_t>(ref.view_numel) * es),
                   s.bytes.owner};
  };
  Checkpoint ck;
  ck.format = CheckpointFormat::kPthLegacy;
  flatten_pickle(objects, file, resolve, &ck);
  return ck;
}

}  // namespace hx::pth_detail
