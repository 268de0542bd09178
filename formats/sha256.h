// SHA-256 of tensors as cli.md defines it: the bytes in C order, contiguous, little-endian, so that the same tensor
// hashes the same in every format (a strided .pth view hashes as its contiguous copy).
#pragma once

#include <array>
#include <cstdint>
#include <span>
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

std::string to_hex(const Digest& d);
Digest sha256_bytes(std::span<const std::byte> data);
Digest sha256_tensor(const TensorView& v);
// Hashes many tensors on the OpenMP team (one tensor per task, largest first); result i belongs to tensors[i].
std::vector<Digest> sha256_tensors(const std::vector<NamedTensor>& tensors);

}  // namespace hx
