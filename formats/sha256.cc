#include "formats/sha256.h"

#include <openssl/evp.h>

#include <algorithm>
#include <memory>
#include <numeric>
#include <utility>

#include "formats/errors.h"
#include "formats/mapped_file.h"
#include "formats/parallel.h"

namespace hx {
namespace {

// 4 MiB: large enough that OpenSSL runs at full speed, small enough to stay in L2/L3 for strided gathers.
constexpr size_t kHashChunkBytes = size_t{4} << 20;

}  // namespace

Sha256Stream::Sha256Stream() : ctx_(EVP_MD_CTX_new()) {
  if (!ctx_ || EVP_DigestInit_ex(ctx_, EVP_sha256(), nullptr) != 1) {
    EVP_MD_CTX_free(ctx_);
    throw Error(ExitCode::kIo, "OpenSSL could not initialise SHA-256");
  }
}

Sha256Stream::~Sha256Stream() { EVP_MD_CTX_free(ctx_); }

void Sha256Stream::update(std::span<const std::byte> data) {
  if (EVP_DigestUpdate(ctx_, data.data(), data.size()) != 1) throw Error(ExitCode::kIo, "SHA-256 update failed");
}

Digest Sha256Stream::finish() {
  Digest d{};
  unsigned len = 0;
  if (EVP_DigestFinal_ex(ctx_, d.data(), &len) != 1 || len != d.size())
    throw Error(ExitCode::kIo, "SHA-256 final failed");
  return d;
}

Sha256Beside::Sha256Beside() : worker_([this] { run(); }) {}

Sha256Beside::~Sha256Beside() {
  drain();
  {
    std::lock_guard lock(mutex_);
    stop_ = true;
  }
  changed_.notify_all();
  worker_.join();
}

void Sha256Beside::start(std::span<const std::byte> chunk) {
  wait();
  {
    std::lock_guard lock(mutex_);
    pending_ = chunk;
    busy_ = true;
  }
  changed_.notify_all();
}

void Sha256Beside::wait() {
  std::unique_lock lock(mutex_);
  changed_.wait(lock, [&] { return !busy_; });
  if (error_) std::rethrow_exception(std::exchange(error_, nullptr));
}

void Sha256Beside::drain() noexcept {
  std::unique_lock lock(mutex_);
  changed_.wait(lock, [&] { return !busy_; });
}

Digest Sha256Beside::finish() {
  wait();
  return hash_.finish();
}

void Sha256Beside::run() {
  std::unique_lock lock(mutex_);
  for (;;) {
    changed_.wait(lock, [&] { return busy_ || stop_; });
    if (!busy_) return;  // stop_ with nothing pending
    const std::span<const std::byte> chunk = pending_;
    lock.unlock();
    std::exception_ptr error;
    try {
      hash_.update(chunk);
    } catch (...) {
      error = std::current_exception();
    }
    lock.lock();
    error_ = error;
    busy_ = false;
    changed_.notify_all();
  }
}

std::string to_hex(const Digest& d) {
  static const char* digits = "0123456789abcdef";
  std::string s(64, '0');
  for (size_t i = 0; i < d.size(); ++i) {
    s[2 * i] = digits[d[i] >> 4];
    s[2 * i + 1] = digits[d[i] & 15];
  }
  return s;
}

Digest sha256_bytes(std::span<const std::byte> data) {
  Sha256Stream h;
  h.update(data);
  return h.finish();
}

Digest sha256_tensor(const TensorView& v) {
  Sha256Stream h;
  for_each_stored_chunk(v, kHashChunkBytes, [&](std::span<const std::byte> c) { h.update(c); });
  return h.finish();
}

std::vector<Digest> sha256_tensors(const std::vector<NamedTensor>& tensors) {
  std::vector<Digest> out(tensors.size());
  std::vector<size_t> order(tensors.size());
  std::iota(order.begin(), order.end(), 0);
  // Largest first so that the long tail of small tensors fills the gaps (LPT scheduling).
  std::stable_sort(order.begin(), order.end(),
                   [&](size_t a, size_t b) { return tensors[a].view.nbytes() > tensors[b].view.nbytes(); });
  std::vector<std::string> errors(tensors.size());
  parallel_for_dynamic(0, static_cast<int64_t>(order.size()), [&](int64_t k) {
    const size_t i = order[static_cast<size_t>(k)];
    try {
      out[i] = sha256_tensor(tensors[i].view);
    } catch (const std::exception& e) {
      errors[i] = e.what();
    }
  });
  for (size_t i = 0; i < errors.size(); ++i)
    if (!errors[i].empty()) throw Error(ExitCode::kIo, "hashing tensor '" + tensors[i].name + "': " + errors[i]);
  return out;
}

}  // namespace hx
