// Folders: model.safetensors, or model.safetensors.index.json plus the shards its weight_map names.
//
// The index is untrusted like the shards: its weight_map must agree with the shards exactly (every mapped tensor in
// the named shard, every shard tensor mapped to that shard, no tensor in two shards), shard names must be plain file
// names inside the folder (no "..", no '/'), and metadata.total_size, when present, must equal the tensors' bytes.
#include <filesystem>
#include <set>
#include <utility>

#include "formats/errors.h"
#include "formats/mapped_file.h"
#include "formats/safetensors.h"
#include "formats/safetensors_internal.h"

namespace hx {
namespace st_internal {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

// A valid index nests two levels (root, weight_map / metadata); deeper nesting is tolerated a little (other tools
// add keys) but not without bound.
constexpr size_t kMaxIndexJsonDepth = 8;
// The index has no arrays of interest; this only bounds hostile ones.
constexpr size_t kMaxIndexArrayLength = 1 << 20;
// The index lists the same names as the shards' headers, so the header limit is ample for it too.
constexpr uint64_t kMaxIndexBytes = kSafetensorsMaxHeaderBytes;

std::string join(const std::string& dir, const std::string& name) { return (fs::path(dir) / name).string(); }

bool is_regular_file(const std::string& path) {
  std::error_code ec;
  return fs::is_regular_file(path, ec);  // follows symlinks: the Hugging Face cache links snapshots to blobs
}

// A shard named by the index must be a file directly inside the folder.
bool is_plain_file_name(const std::string& name) {
  return !name.empty() && name != "." && name != ".." &&
         name.find_first_of(std::string("/\\\0", 3)) == std::string::npos;
}

std::optional<Checkpoint> load_file(const std::string& path, Problems& problems) {
  const auto file = MappedFile::open(path);
  const auto header = parse_safetensors(file->bytes(), path, problems);
  if (!header) return std::nullopt;
  return checkpoint_from(*header, file->bytes(), path, file);
}

class ShardedReader {
 public:
  ShardedReader(const std::string& dir, Problems& problems)
      : dir_(dir), index_path_(join(dir, kSafetensorsIndexFileName)), problems_(problems) {}

  std::optional<Checkpoint> run() {
    const size_t problems_before = problems_.size();
    const auto index = parse_index();
    if (!index) return std::nullopt;

    // shard file name -> tensors the index puts there (std::map: shards are read in file-name order)
    std::map<std::string, std::vector<std::string>> tensors_of_shard;
    std::map<std::string, std::string> shard_of_tensor;
    for (const auto& [tensor, shard] : index->at("weight_map").items()) {
      if (!shard.is_string()) {
        fail("weight_map maps tensor '" + tensor + "' to " + json_kind(shard) + ", expected a shard file name");
        continue;
      }
      const std::string shard_name = shard.get<std::string>();
      if (!is_plain_file_name(shard_name)) {
        fail("weight_map maps tensor '" + tensor + "' to '" + shard_name +
             "', which is not a plain file name inside the folder");
        continue;
      }
      tensors_of_shard[shard_name].push_back(tensor);
      shard_of_tensor[tensor] = shard_name;
    }
    const std::optional<uint64_t> total_size = read_total_size(*index);

    std::vector<std::pair<std::string, Checkpoint>> shards;  // (shard file name, its tensors)
    for (const auto& [shard_name, tensors] : tensors_of_shard) {
      const std::string path = join(dir_, shard_name);
      if (!is_regular_file(path)) {
        fail("weight_map maps " + std::to_string(tensors.size()) + " tensor(s), e.g. '" + tensors.front() +
             "', to shard '" + shard_name + "', which does not exist in the folder");
        continue;
      }
      if (auto ck = load_file(path, problems_)) shards.emplace_back(shard_name, std::move(*ck));
    }

    // Cross-check the index against what the shards hold.
    std::map<std::string, std::string> found_in;  // tensor -> shard it was first found in
    for (const auto& [shard_name, ck] : shards) {
      std::set<std::string> here;
      for (const NamedTensor& t : ck.tensors) {
        here.insert(t.name);
        if (const auto it = found_in.find(t.name); it != found_in.end()) {
          fail("tensor '" + t.name + "' is in shard '" + it->second + "' and in shard '" + shard_name + "'");
          continue;
        }
        found_in[t.name] = shard_name;
        const auto mapped = shard_of_tensor.find(t.name);
        if (mapped == shard_of_tensor.end())
          fail("tensor '" + t.name + "' of shard '" + shard_name + "' is not in weight_map");
        else if (mapped->second != shard_name)
          fail("tensor '" + t.name + "' is in shard '" + shard_name + "', but weight_map maps it to '" +
               mapped->second + "'");
      }
      for (const std::string& tensor : tensors_of_shard.at(shard_name))
        if (!here.count(tensor))
          fail("weight_map maps tensor '" + tensor + "' to shard '" + shard_name + "', which does not contain it");
    }

    if (problems_.size() != problems_before) return std::nullopt;
    uint64_t bytes = 0;
    for (const auto& [shard_name, ck] : shards)
      for (const NamedTensor& t : ck.tensors) bytes += t.view.nbytes();  // cannot overflow: all are in mapped files
    if (total_size && *total_size != bytes)
      fail("metadata.total_size is " + std::to_string(*total_size) + ", but the shards' tensors hold " +
           std::to_string(bytes) + " bytes");
    if (problems_.size() != problems_before) return std::nullopt;

    Checkpoint out;
    out.format = CheckpointFormat::kSafetensors;
    if (!shards.empty()) out.metadata = shards.front().second.metadata;
    for (auto& [shard_name, ck] : shards) {
      out.files.push_back(ck.path);
      for (NamedTensor& t : ck.tensors) out.tensors.push_back(std::move(t));
    }
    return out;
  }

 private:
  void fail(const std::string& message) { problems_.format(in_file(index_path_, message)); }

  // The index as a JSON object with a weight_map object, or nullopt after reporting why not.
  std::optional<json> parse_index() {
    const auto file = MappedFile::open(index_path_);
    if (file->size() > kMaxIndexBytes) {
      fail("index is " + std::to_string(file->size()) + " bytes, more than the limit of " +
           std::to_string(kMaxIndexBytes));
      return std::nullopt;
    }
    const std::string_view text(reinterpret_cast<const char*>(file->bytes().data()), file->size());
    if (const auto bad = first_invalid_utf8(text)) {
      fail("index is not valid UTF-8: byte " + byte_hex(static_cast<unsigned char>(text[*bad])) + " at offset " +
           std::to_string(*bad));
      return std::nullopt;
    }
    std::string error;
    auto parsed = parse_strict_json(text, JsonLimits{kMaxIndexJsonDepth, kMaxIndexArrayLength}, &error);
    if (!parsed) {
      fail("index is " + error);
      return std::nullopt;
    }
    if (!parsed->value.is_object()) {
      fail("index is " + json_kind(parsed->value) + ", expected a JSON object with a weight_map");
      return std::nullopt;
    }
    for (const auto& d : parsed->duplicates) {
      if (d.parents.size() == 1 && d.parents[0] == "weight_map")
        fail("weight_map lists tensor '" + d.key + "' more than once");
      else
        fail("the key '" + d.key + "' appears more than once" +
             (d.parents.empty() ? std::string() : " in '" + d.parents.back() + "'"));
    }
    const json& root = parsed->value;
    if (!root.contains("weight_map")) {
      fail("index has no weight_map");
      return std::nullopt;
    }
    if (!root.at("weight_map").is_object()) {
      fail("weight_map is " + json_kind(root.at("weight_map")) + ", expected an object of tensor name to shard file");
      return std::nullopt;
    }
    return std::move(parsed->value);
  }

  std::optional<uint64_t> read_total_size(const json& index) {
    if (!index.contains("metadata")) return std::nullopt;
    const json& metadata = index.at("metadata");
    if (!metadata.is_object()) {
      fail("metadata is " + json_kind(metadata) + ", expected an object");
      return std::nullopt;
    }
    if (!metadata.contains("total_size")) return std::nullopt;
    const json& total = metadata.at("total_size");
    if (const auto n = json_non_negative_integer(total)) return n;
    // Some writers store the size as a float (1240692.0); accept it only when it is an exact integer.
    constexpr double kTwoTo64 = 18446744073709551616.0;
    if (total.is_number_float()) {
      const double d = total.get<double>();
      if (d >= 0 && d < kTwoTo64 && d == static_cast<double>(static_cast<uint64_t>(d))) return static_cast<uint64_t>(d);
    }
    fail("metadata.total_size is " + (total.is_number() ? total.dump() : json_kind(total)) +
         ", expected a non-negative integer");
    return std::nullopt;
  }

  std::string dir_, index_path_;
  Problems& problems_;
};

std::optional<Checkpoint> load_folder(const std::string& dir, Problems& problems) {
  std::error_code ec;
  if (!fs::is_directory(dir, ec))
    throw IoError(in_file(dir, fs::exists(dir, ec) ? "is not a folder" : "no such folder"));
  std::optional<Checkpoint> ck;
  const std::string single = join(dir, kSafetensorsSingleFileName);
  if (is_regular_file(single)) {
    ck = load_file(single, problems);
  } else if (fs::exists(join(dir, kSafetensorsIndexFileName), ec)) {
    ck = ShardedReader(dir, problems).run();
  } else {
    problems.format(
        in_file(dir, std::string("holds neither ") + kSafetensorsSingleFileName + " nor " + kSafetensorsIndexFileName));
  }
  if (!ck) return std::nullopt;
  ck->path = dir;
  if (const std::string config = join(dir, "config.json"); is_regular_file(config)) ck->config_json_path = config;
  return ck;
}

}  // namespace
}  // namespace st_internal

using st_internal::Problems;

bool is_safetensors_folder(const std::string& dir) {
  std::error_code ec;
  return std::filesystem::is_directory(dir, ec) &&
         (std::filesystem::exists(st_internal::join(dir, kSafetensorsSingleFileName), ec) ||
          std::filesystem::exists(st_internal::join(dir, kSafetensorsIndexFileName), ec));
}

Checkpoint read_safetensors_folder(const std::string& dir) {
  Problems problems(Problems::Mode::kThrowFirst);
  return *st_internal::load_folder(dir, problems);
}

std::vector<std::string> check_safetensors_folder(const std::string& dir) {
  Problems problems(Problems::Mode::kCollectAll);
  st_internal::load_folder(dir, problems);
  return problems.take();
}

}  // namespace hx
