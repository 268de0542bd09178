#include "convert/staging.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <filesystem>
#include <system_error>

#include "formats/errors.h"

namespace hx {
namespace {

namespace fs = std::filesystem;

std::string sibling(const fs::path& final_path, const std::string& tag) {
  const fs::path parent = final_path.has_parent_path() ? final_path.parent_path() : fs::path(".");
  return (parent / ("." + final_path.filename().string() + ".hxforge-" + tag + "-" + std::to_string(::getpid())))
      .string();
}

void fsync_folder(const fs::path& folder) {
  const int fd = ::open(folder.empty() ? "." : folder.c_str(), O_RDONLY | O_DIRECTORY);
  if (fd < 0) return;
  ::fsync(fd);
  ::close(fd);
}

}  // namespace

StagingDir::StagingDir(std::string final_path, bool overwrite) : final_(std::move(final_path)), overwrite_(overwrite) {
  while (final_.size() > 1 && final_.back() == '/') final_.pop_back();
  if (final_.empty()) throw UsageError("--out is empty");
  std::error_code ec;
  if (fs::exists(final_, ec) && !overwrite_) throw UsageError(final_ + " exists; pass --force to replace it");
  staging_ = sibling(final_, "staging");
  fs::remove_all(staging_, ec);  // a leftover of an earlier run with the same pid
}

StagingDir::~StagingDir() {
  if (committed_) return;
  std::error_code ec;
  fs::remove_all(staging_, ec);
}

void StagingDir::commit() {
  std::error_code ec;
  std::string aside;
  if (fs::exists(final_, ec)) {
    if (!overwrite_) throw UsageError(final_ + " appeared while converting; pass --force to replace it");
    aside = sibling(final_, "old");
    fs::rename(final_, aside, ec);
    if (ec) throw IoError(in_file(final_, "cannot be moved aside: " + ec.message()));
  }
  fs::rename(staging_, final_, ec);
  if (ec) {
    if (!aside.empty()) fs::rename(aside, final_, ec);  // put the old output back
    throw IoError(in_file(final_, "cannot be created from " + staging_ + ": " + ec.message()));
  }
  committed_ = true;
  fsync_folder(fs::path(final_).parent_path());
  if (!aside.empty()) fs::remove_all(aside, ec);
}

}  // namespace hx
