// Streaming safetensors writer: one file, or a folder of HF-named shards plus model.safetensors.index.json.
//
// Specs are validated and the header computed before any byte is pulled from the source, so a bad spec fails before
// anything is written; bytes then stream tensor by tensor through AtomicOutputFile with their count checked.
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <set>
#include <utility>

#include "formats/errors.h"
#include "formats/mapped_file.h"
#include "formats/safetensors.h"
#include "formats/safetensors_internal.h"

namespace hx {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;
using st_internal::first_invalid_utf8;

// A spec checked and sized: what the header and the byte counting need.
struct PlannedTensor {
  size_t index;  // into the caller's specs (what the source is called with)
  uint64_t nbytes;
};

void require_utf8(const std::string& text, const std::string& path, const std::string& what) {
  if (const auto bad = first_invalid_utf8(text))
    throw FormatError(in_file(path, what + " is not valid UTF-8 (byte " +
                                        st_internal::byte_hex(static_cast<unsigned char>(text[*bad])) + " at offset " +
                                        std::to_string(*bad) + "); safetensors headers are UTF-8 JSON"));
}

std::vector<PlannedTensor> plan(const std::string& path, const std::vector<TensorSpec>& specs,
                                const std::map<std::string, std::string>& metadata) {
  for (const auto& [key, value] : metadata) {
    require_utf8(key, path, "__metadata__ key '" + key + "'");
    require_utf8(value, path, "__metadata__ value of '" + key + "'");
  }
  std::set<std::string> names;
  std::vector<PlannedTensor> planned;
  planned.reserve(specs.size());
  for (size_t i = 0; i < specs.size(); ++i) {
    const TensorSpec& s = specs[i];
    const std::string where = "tensor '" + s.name + "': ";
    require_utf8(s.name, path, "tensor name '" + s.name + "'");
    if (s.name == "__metadata__")
      throw FormatError(in_file(path, "a tensor cannot be named '__metadata__' (the key safetensors reserves)"));
    if (!names.insert(s.name).second) throw FormatError(in_file(path, "two tensors are named '" + s.name + "'"));
    const bool in_table = static_cast<size_t>(s.dtype) < static_cast<size_t>(DType::kCount);
    if (!in_table || !dtype_info(s.dtype).in_safetensors)
      throw UnsupportedError(in_file(
          path, where + "dtype " +
                    (in_table ? std::string(dtype_name(s.dtype)) : "#" + std::to_string(static_cast<int>(s.dtype))) +
                    " has no safetensors name"));
    if (s.shape.size() > kSafetensorsMaxRank)
      throw FormatError(in_file(path, where + "shape has " + std::to_string(s.shape.size()) +
                                          " dimensions, more than the limit of " +
                                          std::to_string(kSafetensorsMaxRank)));
    uint64_t numel = 0;
    if (!checked_numel(s.shape, &numel))
      throw FormatError(in_file(path, where + "shape " + shape_to_string(s.shape) +
                                          " has a negative dimension or more elements than fit in 64 bits"));
    const auto nbytes = dtype_bytes_for(s.dtype, numel);
    if (!nbytes)
      throw FormatError(in_file(path, where + std::string(dtype_name(s.dtype)) + " " + shape_to_string(s.shape) +
                                          " does not fill a whole number of bytes or overflows 64 bits"));
    planned.push_back(PlannedTensor{i, *nbytes});
  }
  return planned;
}

// The header JSON of one file, tensors in the given order with contiguous offsets, padded with spaces so that the
// data buffer starts at a multiple of kSafetensorsHeaderAlignment.
std::string build_header(const std::string& path, const std::vector<TensorSpec>& specs,
                         const std::vector<PlannedTensor>& tensors,
                         const std::map<std::string, std::string>& metadata) {
  std::string h = "{";
  if (!metadata.empty()) h += "\"__metadata__\":" + json(metadata).dump();  // string -> string object
  uint64_t offset = 0;
  for (const PlannedTensor& t : tensors) {
    const TensorSpec& s = specs[t.index];
    if (h.size() > 1) h += ',';
    h += json(s.name).dump();
    h += ":{\"dtype\":\"";
    h += dtype_name(s.dtype);
    h += "\",\"shape\":[";
    for (size_t d = 0; d < s.shape.size(); ++d) {
      if (d) h += ',';
      h += std::to_string(s.shape[d]);
    }
    h += "],\"data_offsets\":[" + std::to_string(offset) + ",";
    if (__builtin_add_overflow(offset, t.nbytes, &offset))
      throw FormatError(in_file(path, "tensor '" + s.name + "': the data would end past 2^64 bytes"));
    h += std::to_string(offset) + "]}";
  }
  h += '}';
  const size_t padded =
      (h.size() + kSafetensorsHeaderAlignment - 1) / kSafetensorsHeaderAlignment * kSafetensorsHeaderAlignment;
  h.append(padded - h.size(), ' ');
  if (h.size() > kSafetensorsMaxHeaderBytes)
    throw FormatError(in_file(path, "the header would be " + std::to_string(h.size()) + " bytes, more than the " +
                                        std::to_string(kSafetensorsMaxHeaderBytes) + " readers accept"));
  return h;
}

// Writes one safetensors file at `path` through AtomicOutputFile; the source is asked for each tensor in turn and
// must give exactly its byte count. Messages name `display_path` (where the file will finally live).
void write_one_file(const std::string& path, const std::string& display_path, const std::string& header,
                    const std::vector<TensorSpec>& specs, const std::vector<PlannedTensor>& tensors,
                    const TensorSource& source, bool overwrite) {
  AtomicOutputFile out(path, overwrite);
  std::byte length_prefix[8];
  for (int i = 0; i < 8; ++i) length_prefix[i] = static_cast<std::byte>((uint64_t{header.size()} >> (8 * i)) & 0xFF);
  out.write(length_prefix);
  out.write(std::as_bytes(std::span<const char>(header.data(), header.size())));
  for (const PlannedTensor& t : tensors) {
    const TensorSpec& s = specs[t.index];
    uint64_t written = 0;
    const auto describe = [&] {
      return "tensor '" + s.name + "' (" + std::string(dtype_name(s.dtype)) + " " + shape_to_string(s.shape) + ", " +
             std::to_string(t.nbytes) + " bytes)";
    };
    const ByteSink sink = [&](std::span<const std::byte> chunk) {
      if (chunk.size() > t.nbytes - written)
        throw FormatError(in_file(
            display_path, "the source gave more than the " + std::to_string(t.nbytes) + " bytes of " + describe()));
      out.write(chunk);
      written += chunk.size();
    };
    source(t.index, sink);
    if (written != t.nbytes)
      throw FormatError(in_file(display_path, "the source gave " + std::to_string(written) + " of the " +
                                                  std::to_string(t.nbytes) + " bytes of " + describe()));
  }
  out.commit();
}

// Greedy packing in spec order, as transformers does: a shard is closed when the next tensor would push it past
// the limit; a tensor larger than the limit gets a shard of its own.
std::vector<std::vector<PlannedTensor>> pack_shards(const std::vector<PlannedTensor>& tensors, uint64_t max_bytes) {
  std::vector<std::vector<PlannedTensor>> shards(1);
  uint64_t filled = 0;
  for (const PlannedTensor& t : tensors) {
    if (!shards.back().empty() && (t.nbytes > max_bytes || filled > max_bytes - t.nbytes)) {
      shards.emplace_back();
      filled = 0;
    }
    shards.back().push_back(t);
    filled += t.nbytes;
  }
  return shards;
}

void fsync_dir(const std::string& dir) {
  const int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd >= 0) {
    ::fsync(fd);
    ::close(fd);
  }
}

// A temporary folder beside the destination, removed with its content unless released.
class TempFolder {
 public:
  TempFolder(const fs::path& parent, const std::string& name) {
    std::string templ = (parent / ("." + name + ".tmp-XXXXXX")).string();
    if (!mkdtemp(templ.data())) throw IoError(in_file(templ, "cannot create a temporary folder: " + errno_text(errno)));
    path_ = templ;
    ::chmod(path_.c_str(), 0755);  // mkdtemp makes it private; the output is an ordinary folder
  }
  ~TempFolder() {
    if (path_.empty()) return;
    std::error_code ec;
    fs::remove_all(path_, ec);
  }
  TempFolder(const TempFolder&) = delete;
  TempFolder& operator=(const TempFolder&) = delete;
  const std::string& path() const { return path_; }
  void release() { path_.clear(); }

 private:
  std::string path_;
};

// Refuses to let --force replace a folder that holds subfolders: a checkpoint folder never does, a mistyped --out
// (a home folder, a project) usually does.
void require_replaceable(const std::string& path) {
  std::error_code ec;
  if (!fs::is_directory(path, ec)) return;
  for (const auto& entry : fs::directory_iterator(path, ec))
    if (entry.is_directory(ec))
      throw UsageError(in_file(path, "refusing to replace this folder: it holds the subfolder '" +
                                         entry.path().filename().string() + "', so it is not a checkpoint folder"));
}

// Moves the finished folder `from` to `to`. Without overwrite, never replaces anything (RENAME_NOREPLACE); with it,
// swaps atomically (RENAME_EXCHANGE) and deletes what was there. Both fall back to plain renames on file systems
// without renameat2 flags.
void install_folder(TempFolder& from, const std::string& to, bool overwrite) {
  const std::string parent = fs::path(to).parent_path().string();
  if (!overwrite) {
    if (::renameat2(AT_FDCWD, from.path().c_str(), AT_FDCWD, to.c_str(), RENAME_NOREPLACE) == 0) {
      from.release();
    } else if (errno == EEXIST) {
      throw UsageError(in_file(to, "already exists (pass --force to replace it)"));
    } else if (errno == EINVAL || errno == ENOSYS) {
      if (path_exists(to)) throw UsageError(in_file(to, "already exists (pass --force to replace it)"));
      if (::rename(from.path().c_str(), to.c_str()) != 0)
        throw IoError(in_file(to, "cannot rename " + from.path() + " to it: " + errno_text(errno)));
      from.release();
    } else {
      throw IoError(in_file(to, "cannot rename " + from.path() + " to it: " + errno_text(errno)));
    }
  } else if (!path_exists(to)) {
    if (::rename(from.path().c_str(), to.c_str()) != 0)
      throw IoError(in_file(to, "cannot rename " + from.path() + " to it: " + errno_text(errno)));
    from.release();
  } else {
    require_replaceable(to);
    if (::renameat2(AT_FDCWD, from.path().c_str(), AT_FDCWD, to.c_str(), RENAME_EXCHANGE) != 0) {
      if (errno != EINVAL && errno != ENOSYS)
        throw IoError(in_file(to, "cannot swap " + from.path() + " into place: " + errno_text(errno)));
      // No atomic exchange here: move the old output aside, then the new one in.
      TempFolder aside(fs::path(to).parent_path(), fs::path(to).filename().string() + ".old");
      const std::string old_path = aside.path() + "/old";
      if (::rename(to.c_str(), old_path.c_str()) != 0)
        throw IoError(in_file(to, "cannot move the existing output aside: " + errno_text(errno)));
      if (::rename(from.path().c_str(), to.c_str()) != 0) {
        const int err = errno;
        ::rename(old_path.c_str(), to.c_str());  // put the old output back
        throw IoError(in_file(to, "cannot rename " + from.path() + " to it: " + errno_text(err)));
      }
      from.release();
    }
    // After the exchange `from` holds the old output; its destructor deletes it.
  }
  fsync_dir(parent.empty() ? "." : parent);
}

void write_sharded(const std::string& requested, const std::vector<TensorSpec>& specs,
                   const std::vector<PlannedTensor>& tensors, const TensorSource& source,
                   const SafetensorsWriteOptions& opt) {
  fs::path folder = fs::path(requested).lexically_normal();
  if (!folder.has_filename()) folder = folder.parent_path();  // "out/" names the folder "out"
  const std::string path = folder.string();
  if (folder.filename().empty() || folder.filename() == "." || folder.filename() == "..")
    throw UsageError(in_file(requested, "is not a usable output folder name"));
  if (!opt.overwrite && path_exists(path))
    throw UsageError(in_file(path, "already exists (pass --force to replace it)"));
  fs::path parent = folder.parent_path();
  if (parent.empty()) parent = ".";

  // Every header is computed (and checked against the size limit) before anything is written.
  const auto shards = pack_shards(tensors, opt.max_shard_bytes);
  std::vector<std::string> shard_names, headers;
  for (size_t k = 0; k < shards.size(); ++k) {
    shard_names.push_back(safetensors_shard_name(k, shards.size()));
    headers.push_back(build_header((folder / shard_names[k]).string(), specs, shards[k], opt.metadata));
  }

  TempFolder temp(parent, folder.filename().string());
  json weight_map = json::object();
  uint64_t total_size = 0;
  for (size_t k = 0; k < shards.size(); ++k) {
    write_one_file((fs::path(temp.path()) / shard_names[k]).string(), (folder / shard_names[k]).string(), headers[k],
                   specs, shards[k], source, /*overwrite=*/false);
    for (const PlannedTensor& t : shards[k]) {
      weight_map[specs[t.index].name] = shard_names[k];
      total_size += t.nbytes;
    }
  }
  json index;
  index["metadata"] = {{"total_size", total_size}};
  index["weight_map"] = std::move(weight_map);
  const std::string index_text = index.dump(2) + "\n";  // transformers writes indent=2 plus a newline
  AtomicOutputFile index_file((fs::path(temp.path()) / kSafetensorsIndexFileName).string(), false);
  index_file.write(std::as_bytes(std::span<const char>(index_text.data(), index_text.size())));
  index_file.commit();
  fsync_dir(temp.path());
  install_folder(temp, path, opt.overwrite);
}

}  // namespace

std::string safetensors_shard_name(size_t index, size_t count) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "model-%05zu-of-%05zu.safetensors", index + 1, count);
  return buf;
}

void write_safetensors(const std::string& path, const std::vector<TensorSpec>& specs, const TensorSource& source,
                       const SafetensorsWriteOptions& opt) {
  const auto tensors = plan(path, specs, opt.metadata);
  if (opt.max_shard_bytes == 0) {
    const std::string header = build_header(path, specs, tensors, opt.metadata);
    write_one_file(path, path, header, specs, tensors, source, opt.overwrite);
  } else {
    write_sharded(path, specs, tensors, source, opt);
  }
}

}  // namespace hx
