// open_checkpoint / check_checkpoint_structure: decide the format of a MODEL / PATH (cli.md) by its content and
// hand it to the right reader.
#include <sys/stat.h>

#include <cstring>
#include <filesystem>
#include <fstream>

#include "formats/checkpoint.h"
#include "formats/errors.h"
#include "formats/pth.h"
#include "formats/safetensors.h"

namespace hx {
namespace {

enum class FileKind { kSafetensors, kPth, kUnknown };

// Reads up to 16 bytes; IoError when the file cannot be read at all.
std::vector<std::byte> read_head(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  if (!f) throw IoError(in_file(path, "cannot open: " + errno_text(errno)));
  std::vector<std::byte> head(16);
  f.read(reinterpret_cast<char*>(head.data()), static_cast<std::streamsize>(head.size()));
  head.resize(static_cast<size_t>(f.gcount()));
  return head;
}

FileKind kind_of(const std::vector<std::byte>& head) {
  if (detect_pth_kind(head) != PthKind::kUnknown) return FileKind::kPth;
  // safetensors: u64 header length, then JSON that must start with '{'.
  if (head.size() >= 9 && head[8] == std::byte{'{'}) return FileKind::kSafetensors;
  return FileKind::kUnknown;
}

std::string describe_head(const std::vector<std::byte>& head) {
  static const char* digits = "0123456789abcdef";
  std::string hex;
  for (size_t i = 0; i < std::min<size_t>(head.size(), 8); ++i) {
    hex += digits[std::to_integer<int>(head[i]) >> 4];
    hex += digits[std::to_integer<int>(head[i]) & 15];
    hex += ' ';
  }
  return head.empty() ? "an empty file" : "first bytes " + hex;
}

[[noreturn]] void unknown_format(const std::string& path, const std::vector<std::byte>& head) {
  throw FormatError(in_file(path, "not a safetensors or PyTorch checkpoint: expected an 8-byte header length and '{' "
                                  "(safetensors), a zip archive or a legacy torch.save pickle; found " +
                                  describe_head(head)));
}

bool is_directory(const std::string& path) {
  struct stat st {};
  return ::stat(path.c_str(), &st) == 0 && S_ISDIR(st.st_mode);
}

void require_safetensors_folder(const std::string& dir) {
  if (!is_safetensors_folder(dir))
    throw FormatError(in_file(dir, std::string("folder holds neither ") + kSafetensorsSingleFileName + " nor " +
                                       kSafetensorsIndexFileName));
}

std::string config_beside(const std::string& file) {
  const auto config = std::filesystem::path(file).parent_path() / "config.json";
  return std::filesystem::exists(config) ? config.string() : "";
}

}  // namespace

Checkpoint open_checkpoint(const std::string& path) {
  if (is_directory(path)) {
    require_safetensors_folder(path);
    return read_safetensors_folder(path);
  }
  const auto head = read_head(path);
  switch (kind_of(head)) {
    case FileKind::kSafetensors: {
      Checkpoint c = read_safetensors_file(path);
      c.config_json_path = config_beside(path);
      return c;
    }
    case FileKind::kPth: {
      Checkpoint c = read_pth(path);
      c.config_json_path = config_beside(path);
      return c;
    }
    case FileKind::kUnknown: break;
  }
  unknown_format(path, head);
}

std::vector<std::string> check_checkpoint_structure(const std::string& path) {
  if (is_directory(path)) {
    if (!is_safetensors_folder(path))
      return {in_file(path, std::string("folder holds neither ") + kSafetensorsSingleFileName + " nor " +
                                kSafetensorsIndexFileName)};
    return check_safetensors_folder(path);
  }
  const auto head = read_head(path);
  switch (kind_of(head)) {
    case FileKind::kSafetensors: return check_safetensors_file(path);
    case FileKind::kPth:
      try {  // the pickle stream has no independent parts: the first problem is the only reliable one
        PthReadOptions options;
        options.verify_crc = true;
        read_pth(path, options);
        return {};
      } catch (const FormatError& e) {
        return {e.what()};
      } catch (const UnsupportedError& e) {
        return {e.what()};
      }
    case FileKind::kUnknown: break;
  }
  try {
    unknown_format(path, head);
  } catch (const FormatError& e) {
    return {e.what()};
  }
}

}  // namespace hx
