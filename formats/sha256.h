// SHA-256 of tensors as cli.md defines it: the bytes in C order, contiguous, little-endian, so that the same tensor
// hashes the same in every format (a strided .pth view hashes as its contiguous copy).
#pragma once

#include <array>
#include <condition_variable>
#include <cstdint>
#include <exception>
#include <mutex>
#include <span>
#include <thread>
#include <string>
#include <vector>

#include "formats/tensor.h"

struct evp_md_ctx_st;  // OpenSSL's EVP_MD_CTX, so that callers need no OpenSSL header

namespace hx {

using Digest = std::array<uint8_t, 32>;

// SHA-256 over bytes that arrive in pieces (writers hash what they stream). OpenSSL (SHA-NI where the CPU has it);
// IoError-class errors if OpenSSL fails.
class Sha256Stream {
 public:
  Sha256Stream();
  ~Sha256Stream();
  Sha256Stream(const Sha256Stream&) = delete;
  Sha256Stream& operator=(const Sha256Stream&) = delete;
  void update(std::span<const std::byte> data);
  Digest finish();  // once

 private:
  evp_md_ctx_st* ctx_;
};

// A Sha256Stream fed on a thread of its own, so that a writer hashes a chunk while it writes the same chunk
// (the two together were a converter's whole cost per copied byte): start(chunk), do the other work, wait(). The
// chunk must stay valid and unchanged until wait() returns. One chunk in flight at a time.
class Sha256Beside {
 public:
  Sha256Beside();
  ~Sha256Beside();
  Sha256Beside(const Sha256Beside&) = delete;
  Sha256Beside& operator=(const Sha256Beside&) = delete;
  void start(std::span<const std::byte> chunk);  // waits for the previous chunk first
  void wait();                                   // rethrows what the hashing threw
  void drain() noexcept;                         // waits, dropping any error (for unwinding: the chunk may die next)
  Digest finish();                               // waits, then the digest of every chunk given; once

 private:
  void run();
  Sha256Stream hash_;
  std::mutex mutex_;
  std::condition_variable changed_;
  std::span<const std::byte> pending_;
  bool busy_ = false, stop_ = false;
  std::exception_ptr error_;
  std::thread worker_;  // last: starts after everything it uses exists
};

std::string to_hex(const Digest& d);
Digest sha256_bytes(std::span<const std::byte> data);
Digest sha256_tensor(const TensorView& v);
// Hashes many tensors on the OpenMP team (one tensor per task, largest first); result i belongs to tensors[i].
std::vector<Digest> sha256_tensors(const std::vector<NamedTensor>& tensors);

}  // namespace hx
