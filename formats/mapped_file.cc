#include "formats/mapped_file.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <filesystem>
#include <map>
#include <mutex>
#include <vector>

#include "formats/errors.h"

namespace hx {
namespace {

// Live mappings by first byte, for mapped_file_span(). Mappings never overlap, so the candidate for an address is the
// last mapping starting at or before it.
struct MappingRegistry {
  std::mutex mutex;
  std::map<const std::byte*, const MappedFile*> by_start;
};
MappingRegistry& mapping_registry() {
  static MappingRegistry registry;
  return registry;
}

}  // namespace

std::optional<FileSpan> mapped_file_span(std::span<const std::byte> bytes) {
  if (bytes.empty()) return std::nullopt;
  auto& registry = mapping_registry();
  std::lock_guard lock(registry.mutex);
  auto it = registry.by_start.upper_bound(bytes.data());
  if (it == registry.by_start.begin()) return std::nullopt;
  --it;
  const MappedFile& file = *it->second;
  const uint64_t offset = static_cast<uint64_t>(bytes.data() - it->first);
  if (offset > file.size() || bytes.size() > file.size() - offset) return std::nullopt;
  return FileSpan{file.fd(), offset, &file.path()};
}

void read_file_chunks(const FileSpan& file, uint64_t length,
                      const std::function<void(std::span<const std::byte>)>& consume) {
  // 1 MiB: stays in L2 between the read and the consumer, and amortises the system call.
  constexpr size_t kChunkBytes = size_t{1} << 20;
  thread_local std::vector<std::byte> buffer(kChunkBytes);
  // Keeps 16–32 MiB ahead of the reads in flight (POSIX_FADV_WILLNEED starts them and returns): a file on disk then
  // streams while the consumer works on the chunk before, instead of the disk idling during every consume().
  constexpr uint64_t kPrefetchBytes = uint64_t{32} << 20;
  uint64_t advised = 0;
  uint64_t done = 0;
  while (done < length) {
    if (advised < length && advised - done < kPrefetchBytes / 2) {
      const uint64_t upto = std::min(length, done + kPrefetchBytes);
      ::posix_fadvise(file.fd, static_cast<off_t>(file.offset + advised), static_cast<off_t>(upto - advised),
                      POSIX_FADV_WILLNEED);  // advisory: a failure only loses the overlap
      advised = upto;
    }
    // Every chunk but the last is full (consumers may rely on whole elements), whatever pread returns at a time.
    const size_t want = static_cast<size_t>(std::min<uint64_t>(kChunkBytes, length - done));
    size_t filled = 0;
    while (filled < want) {
      const uint64_t at = file.offset + done + filled;
      const ssize_t n = ::pread(file.fd, buffer.data() + filled, want - filled, static_cast<off_t>(at));
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0)
        throw IoError(in_file(*file.path, "read failed at byte " + std::to_string(at) + ": " +
                                              (n == 0 ? std::string("unexpected end of file") : errno_text(errno))));
      filled += static_cast<size_t>(n);
    }
    consume(std::span<const std::byte>(buffer.data(), want));
    done += want;
  }
}

void for_each_stored_chunk(const TensorView& v, size_t chunk_bytes,
                           const std::function<void(std::span<const std::byte>)>& consume) {
  if (v.is_contiguous() && v.nbytes() > 0) {
    const auto bytes = v.contiguous_bytes();
    if (const auto file = mapped_file_span(bytes)) return read_file_chunks(*file, bytes.size(), consume);
  }
  for_each_contiguous_chunk(v, chunk_bytes, consume);
}

std::shared_ptr<const MappedFile> MappedFile::open(const std::string& path) {
  std::shared_ptr<MappedFile> f(new MappedFile());
  f->path_ = path;
  f->fd_ = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (f->fd_ < 0) throw IoError(in_file(path, "cannot open: " + errno_text(errno)));
  struct stat st {};
  if (fstat(f->fd_, &st) != 0) throw IoError(in_file(path, "cannot stat: " + errno_text(errno)));
  if (!S_ISREG(st.st_mode)) throw IoError(in_file(path, "not a regular file"));
  f->size_ = static_cast<uint64_t>(st.st_size);
  if (f->size_ > 0) {
    f->data_ = mmap(nullptr, f->size_, PROT_READ, MAP_PRIVATE, f->fd_, 0);
    if (f->data_ == MAP_FAILED) {
      f->data_ = nullptr;
      throw IoError(in_file(path, "cannot mmap " + std::to_string(f->size_) + " bytes: " + errno_text(errno)));
    }
    auto& registry = mapping_registry();
    std::lock_guard lock(registry.mutex);
    registry.by_start[static_cast<const std::byte*>(f->data_)] = f.get();
  }
  return f;
}

MappedFile::~MappedFile() {
  if (data_) {
    {
      auto& registry = mapping_registry();
      std::lock_guard lock(registry.mutex);
      registry.by_start.erase(static_cast<const std::byte*>(data_));
    }
    munmap(data_, size_);
  }
  if (fd_ >= 0) ::close(fd_);
}

namespace {
// Page-aligned sub-range of [offset, offset+length) inside a mapping of `size` bytes.
bool page_range(uint64_t size, uint64_t offset, uint64_t length, uint64_t* start, uint64_t* len, bool inner) {
  static const uint64_t page = static_cast<uint64_t>(sysconf(_SC_PAGESIZE));
  if (offset >= size) return false;
  uint64_t end = std::min(size, offset + length);
  uint64_t s = inner ? (offset + page - 1) / page * page : offset / page * page;
  uint64_t e = inner ? end / page * page : end;
  if (e <= s) return false;
  *start = s;
  *len = e - s;
  return true;
}
}  // namespace

void MappedFile::advise_sequential(uint64_t offset, uint64_t length) const {
  uint64_t s, l;
  if (data_ && page_range(size_, offset, length, &s, &l, false))
    madvise(static_cast<char*>(data_) + s, l, MADV_SEQUENTIAL | MADV_WILLNEED);
}

void MappedFile::release(uint64_t offset, uint64_t length) const {
  uint64_t s, l;  // only whole pages strictly inside the range: neighbours may still be in use
  if (data_ && page_range(size_, offset, length, &s, &l, true)) madvise(static_cast<char*>(data_) + s, l, MADV_DONTNEED);
}

bool path_exists(const std::string& path) {
  struct stat st {};
  return ::stat(path.c_str(), &st) == 0;
}

AtomicOutputFile::AtomicOutputFile(std::string path, bool overwrite) : path_(std::move(path)) {
  if (!overwrite && path_exists(path_))
    throw UsageError(in_file(path_, "already exists (pass --force to replace it)"));
  static std::atomic<unsigned> counter{0};
  const auto p = std::filesystem::path(path_);
  const std::string temp_name =
      "." + p.filename().string() + ".tmp-" + std::to_string(getpid()) + "-" + std::to_string(counter++);
  temp_path_ = (p.parent_path() / temp_name).string();
  fd_ = ::open(temp_path_.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd_ < 0) throw IoError(in_file(temp_path_, "cannot create: " + errno_text(errno)));
}

AtomicOutputFile::~AtomicOutputFile() {
  if (fd_ >= 0) ::close(fd_);
  if (!committed_) ::unlink(temp_path_.c_str());
}

void AtomicOutputFile::write(std::span<const std::byte> data) {
  // Below 1 MiB the system calls cost more than the mapping's page walks save.
  constexpr size_t kKernelCopyMinBytes = size_t{1} << 20;
  if (data.size() < kKernelCopyMinBytes || [&] {
        const auto source = mapped_file_span(data);
        return !(source && copy_from_file(*source, data.size()));
      }())
    write_from_memory(data);
  start_writeback();
}

void AtomicOutputFile::start_writeback() {
  // commit() must fsync (cli.md); starting the disk writes as the data arrives, instead of all of them at the fsync,
  // overlaps writing with producing the rest: the final fsync then waits for the last few MiB only.
  constexpr uint64_t kWritebackStepBytes = uint64_t{64} << 20;
  if (position_ - writeback_started_ < kWritebackStepBytes) return;
  // Advisory: on failure (a file system without it) the fsync in commit() still does all the work.
  ::sync_file_range(fd_, static_cast<off_t>(writeback_started_), static_cast<off_t>(position_ - writeback_started_),
                    SYNC_FILE_RANGE_WRITE);
  writeback_started_ = position_;
}

bool AtomicOutputFile::copy_from_file(const FileSpan& source, uint64_t length) {
  loff_t in_offset = static_cast<loff_t>(source.offset);
  uint64_t left = length;
  while (left > 0) {
    const ssize_t n = ::copy_file_range(source.fd, &in_offset, fd_, nullptr,
                                        static_cast<size_t>(std::min<uint64_t>(left, uint64_t{1} << 30)), 0);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && left == length && (errno == EXDEV || errno == ENOSYS || errno == EINVAL || errno == EOPNOTSUPP))
      return false;  // this kernel or file system pair cannot: the caller writes from memory instead
    if (n < 0)
      throw IoError(in_file(path_, "copy from " + *source.path + " failed at byte " + std::to_string(position_) +
                                       ": " + errno_text(errno)));
    if (n == 0)
      throw IoError(in_file(path_, "copy from " + *source.path + " stopped at byte " + std::to_string(in_offset) +
                                       ": the source file is shorter than its mapping"));
    left -= static_cast<uint64_t>(n);
    position_ += static_cast<uint64_t>(n);
  }
  return true;
}

void AtomicOutputFile::write_from_memory(std::span<const std::byte> data) {
  const std::byte* p = data.data();
  size_t left = data.size();
  while (left > 0) {
    const ssize_t n = ::write(fd_, p, std::min<size_t>(left, size_t{1} << 30));
    if (n < 0) {
      if (errno == EINTR) continue;
      throw IoError(in_file(path_, "write failed at byte " + std::to_string(position_) + ": " + errno_text(errno)));
    }
    p += n;
    left -= static_cast<size_t>(n);
    position_ += static_cast<uint64_t>(n);
  }
}

void AtomicOutputFile::write_zeros(uint64_t count) {
  static const std::vector<std::byte> zeros(1 << 16);
  while (count > 0) {
    const uint64_t n = std::min<uint64_t>(count, zeros.size());
    write_from_memory(std::span<const std::byte>(zeros.data(), n));
    count -= n;
  }
}

void AtomicOutputFile::write_at(uint64_t offset, std::span<const std::byte> data) {
  if (offset > position_ || data.size() > position_ - offset)
    throw IoError(in_file(path_, "cannot patch " + std::to_string(data.size()) + " bytes at offset " +
                                     std::to_string(offset) + ": only " + std::to_string(position_) +
                                     " bytes are written"));
  const std::byte* p = data.data();
  size_t left = data.size();
  uint64_t at = offset;
  while (left > 0) {
    const ssize_t n = ::pwrite(fd_, p, std::min<size_t>(left, size_t{1} << 30), static_cast<off_t>(at));
    if (n < 0) {
      if (errno == EINTR) continue;
      throw IoError(in_file(path_, "write failed at byte " + std::to_string(at) + ": " + errno_text(errno)));
    }
    p += n;
    left -= static_cast<size_t>(n);
    at += static_cast<uint64_t>(n);
  }
}

void AtomicOutputFile::commit() {
  if (::fsync(fd_) != 0) throw IoError(in_file(path_, "fsync failed: " + errno_text(errno)));
  if (::close(fd_) != 0) {
    fd_ = -1;
    throw IoError(in_file(path_, "close failed: " + errno_text(errno)));
  }
  fd_ = -1;
  if (::rename(temp_path_.c_str(), path_.c_str()) != 0)
    throw IoError(in_file(path_, "cannot rename " + temp_path_ + " over it: " + errno_text(errno)));
  committed_ = true;
  const auto dir = std::filesystem::path(path_).parent_path();
  const int dfd = ::open(dir.empty() ? "." : dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dfd >= 0) {
    ::fsync(dfd);
    ::close(dfd);
  }
}

}  // namespace hx
