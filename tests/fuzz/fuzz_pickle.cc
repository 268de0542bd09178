// libFuzzer target: the safe pickle machine and the .pth object-tree flattening, on bytes in memory.
//
// Beyond "no crash, no leak, no UB, bounded memory" it checks the machine's contract: only FormatError /
// UnsupportedError (exit 3) come out; an accepted pickle consumed at most the input and ends with STOP; every object
// index it hands out is valid; and every tensor the flattener accepts lies inside the storage it was given.
// Seeds: corpus/pickle/ holds torch's data.pkl of the oracle files (dtypes with float8 / _rebuild_tensor_v3, views,
// nested leaves, a state dict with BUILD _metadata), the malicious os.system pickle, the legacy object pickle, and
// CPython protocol 4/5 pickles of plain data (FRAME, MEMOIZE, STACK_GLOBAL, EMPTY_SET).
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <span>
#include <string>
#include <vector>

#include "formats/errors.h"
#include "formats/pickle.h"
#include "formats/pth_internal.h"

namespace {

[[noreturn]] void contract_broken(const std::string& what) {
  std::fprintf(stderr, "pickle machine contract broken: %s\n", what.c_str());
  std::abort();
}

// Storage bytes for any declared size up to 1 MiB; larger declarations are refused like a missing record.
constexpr uint64_t kMaxFakeStorage = uint64_t{1} << 20;

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::span<const std::byte> bytes(reinterpret_cast<const std::byte*>(data), size);
  hx::PickleResult pickle;
  try {
    pickle = hx::parse_pickle(bytes, hx::PickleSource{"fuzz.pth", "data.pkl"});
  } catch (const hx::Error& e) {
    if (e.code() != hx::ExitCode::kInvalidInput) contract_broken(std::string("wrong error class: ") + e.what());
    return 0;
  }
  if (pickle.consumed == 0 || pickle.consumed > size || data[pickle.consumed - 1] != '.')
    contract_broken("consumed " + std::to_string(pickle.consumed) + " of " + std::to_string(size) + " bytes");
  if (pickle.root >= pickle.objects.size()) contract_broken("root out of range");
  for (const auto& o : pickle.objects)
    for (hx::ObjId id : o.items)
      if (id >= pickle.objects.size()) contract_broken("object index out of range");

  std::vector<std::vector<std::byte>> buffers;  // zero-filled storages, one per storage reference
  const hx::pth_detail::StorageResolver resolve = [&](const hx::PyStorageRef& ref, const std::string& tensor) {
    const uint64_t n = hx::pth_detail::storage_declared_bytes(ref, "fuzz.pth");
    if (n > kMaxFakeStorage) throw hx::FormatError("fuzz.pth: storage of tensor '" + tensor + "' too large for the fuzzer");
    auto owned = hx::Storage::owned(std::vector<std::byte>(n));
    return owned;
  };
  hx::Checkpoint ck;
  try {
    hx::pth_detail::flatten_pickle(pickle, "fuzz.pth", resolve, &ck);
  } catch (const hx::Error& e) {
    if (e.code() != hx::ExitCode::kInvalidInput) contract_broken(std::string("wrong error class: ") + e.what());
    return 0;
  }
  for (const auto& t : ck.tensors) {
    try {
      hx::check_view_in_bounds(t.view, t.name);
    } catch (const hx::Error&) {
      contract_broken("accepted tensor '" + t.name + "' lies outside its storage");
    }
    if (t.view.nbytes() <= kMaxFakeStorage) (void)hx::to_contiguous_bytes(t.view);  // touches every element
  }
  return 0;
}
