// .pth writing (see pth.h): an OrderedDict of torch tensor-rebuild calls in data.pkl, one aligned STORED record per
// tensor streamed from a TensorSource, written atomically in the record order torch.save uses.
#include <unordered_set>

#include "formats/errors.h"
#include "formats/mapped_file.h"
#include "formats/pickle.h"
#include "formats/pth.h"
#include "formats/zip.h"

namespace hx {
namespace {

// pickle batches SETITEMS by 1000 pairs; doing the same keeps every reader's stack small.
constexpr size_t kSetItemsBatch = 1000;

// torch 2.x serializes these through UntypedStorage + an explicit dtype (_rebuild_tensor_v3): they have no legacy
// typed storage class.
bool needs_untyped_storage(DType d) { return dtype_info(d).legacy_storage.empty(); }

uint64_t spec_bytes(const TensorSpec& spec, const std::string& file) {
  uint64_t numel = 0;
  if (!checked_numel(spec.shape, &numel))
    throw FormatError(in_file(file, "tensor '" + spec.name + "': shape " + shape_to_string(spec.shape) +
                                    " has a negative dimension or overflows 64 bits"));
  const auto bytes = dtype_bytes_for(spec.dtype, numel);
  if (!bytes)
    throw FormatError(in_file(file, "tensor '" + spec.name + "': " + std::to_string(numel) + " elements of " +
                                    std::string(dtype_name(spec.dtype)) + " do not fill whole bytes"));
  return *bytes;
}

void check_writable(const TensorSpec& spec, const std::string& file) {
  const DTypeInfo& info = dtype_info(spec.dtype);
  if (info.torch_name.empty())
    throw UnsupportedError(in_file(file, "tensor '" + spec.name + "': dtype " + std::string(info.name) +
                                         " has no torch equivalent, so a .pth cannot hold it (write safetensors)"));
  if (info.kind == DKind::kQuantized)
    throw UnsupportedError(in_file(file, "tensor '" + spec.name + "': quantized dtype " + std::string(info.name) +
                                         " needs torch quantization parameters, which hxforge does not write"));
  if (!is_valid_utf8(spec.name))
    throw FormatError(in_file(file, "tensor name '" + spec.name + "' is not valid UTF-8"));
}

std::vector<std::byte> encode_state_dict(const std::vector<TensorSpec>& specs, const std::string& file) {
  std::unordered_set<std::string> names;
  PickleEncoder p;
  p.global("collections", "OrderedDict");
  p.tuple(0);
  p.reduce();
  for (size_t i = 0; i < specs.size(); ++i) {
    const TensorSpec& s = specs[i];
    check_writable(s, file);
    if (!names.insert(s.name).second) throw FormatError(in_file(file, "two tensors are named '" + s.name + "'"));
    uint64_t numel = 0;
    checked_numel(s.shape, &numel);
    const uint64_t nbytes = spec_bytes(s, file);
    const bool untyped = needs_untyped_storage(s.dtype);
    if (i % kSetItemsBatch == 0) p.mark();
    p.str(s.name);
    p.global("torch._utils", untyped ? "_rebuild_tensor_v3" : "_rebuild_tensor_v2");
    p.mark();
    {  // the storage persistent id: ('storage', class, key, 'cpu', numel) with numel in bytes for UntypedStorage
      p.mark();
      p.str("storage");
      if (untyped) p.global("torch.storage", "UntypedStorage");
      else p.global("torch", dtype_info(s.dtype).legacy_storage);
      p.str(std::to_string(i));
      p.str("cpu");
      p.integer(static_cast<int64_t>(untyped ? nbytes : numel));
      p.tuple_from_mark();
      p.binpersid();
    }
    p.integer(0);  // storage_offset
    p.int_tuple(s.shape);
    p.int_tuple(contiguous_strides(s.shape));
    p.boolean(false);  // requires_grad
    p.global("collections", "OrderedDict");  // backward_hooks
    p.tuple(0);
    p.reduce();
    if (untyped) p.global("torch", dtype_info(s.dtype).torch_name);
    p.tuple_from_mark();
    p.reduce();
    if (i % kSetItemsBatch == kSetItemsBatch - 1 || i + 1 == specs.size()) p.setitems();
  }
  return p.finish();
}

std::span<const std::byte> text_bytes(std::string_view s) { return {reinterpret_cast<const std::byte*>(s.data()), s.size()}; }

}  // namespace

std::vector<std::byte> encode_pth_state_dict(const std::vector<TensorSpec>& specs) {
  return encode_state_dict(specs, "data.pkl");
}

void write_pth(const std::string& path, const std::vector<TensorSpec>& specs, const TensorSource& source,
               const PthWriteOptions& options) {
  const std::string& root = options.archive_name;
  if (root.empty() || root.find('/') != std::string::npos || root.find('\\') != std::string::npos)
    throw UsageError("archive name '" + root + "' must be a non-empty folder name without slashes");
  const std::vector<std::byte> pickle = encode_state_dict(specs, path);
  std::vector<uint64_t> sizes;
  for (const auto& s : specs) sizes.push_back(spec_bytes(s, path));

  AtomicOutputFile out(path, options.overwrite);
  ZipWriterOptions zip_options;
  zip_options.force_zip64 = options.force_zip64;
  ZipWriter zip(out, zip_options);
  // Record order as torch.save writes it; data.pkl first, since readers take the root folder from the first record.
  zip.add_record(root + "/data.pkl", pickle);
  zip.add_record(root + "/.format_version", text_bytes("1"));
  zip.add_record(root + "/.storage_alignment", text_bytes(std::to_string(kZipAlignment)));
  zip.add_record(root + "/byteorder", text_bytes("little"));
  for (size_t i = 0; i < specs.size(); ++i) {
    const TensorSpec& s = specs[i];
    const uint64_t expected = sizes[i];
    uint64_t delivered = 0;
    zip.begin_record(root + "/data/" + std::to_string(i), expected);
    source(i, [&](std::span<const std::byte> chunk) {
      if (chunk.size() > expected - delivered)
        throw FormatError(in_file(path, "tensor '" + s.name + "': the source delivered more than the " +
                                        std::to_string(expected) + " bytes of " + std::string(dtype_name(s.dtype)) +
                                        " " + shape_to_string(s.shape)));
      zip.write(chunk);
      delivered += chunk.size();
    });
    if (delivered != expected)
      throw FormatError(in_file(path, "tensor '" + s.name + "': the source delivered " + std::to_string(delivered) +
                                      " bytes, expected " + std::to_string(expected) + " (" +
                                      std::string(dtype_name(s.dtype)) + " " + shape_to_string(s.shape) + ")"));
    zip.end_record();
  }
  zip.add_record(root + "/version", text_bytes("3\n"));
  zip.finish();
  out.commit();
}

}  // namespace hx
