// libFuzzer target: the safetensors header parser and layout validation, on bytes in memory.
//
// Beyond "no crash, no leak, no UB" it checks the reader's contract: check_safetensors_bytes reports no problem
// exactly when read_safetensors_bytes succeeds, the first problem it reports is the message read_* throws, only
// FormatError / UnsupportedError (exit 3) come out, and every view of an accepted file lies inside the input.
// Seeds: corpus/safetensors/ holds three tiny valid files (F32/BF16/I64 with __metadata__; F4/F6/F8 and an empty
// tensor; no tensors at all), written by a few lines of Python json + struct in the writer's conventions.
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <span>
#include <string>

#include "formats/errors.h"
#include "formats/safetensors.h"
#include "formats/sha256.h"

namespace {

[[noreturn]] void contract_broken(const std::string& what) {
  std::fprintf(stderr, "safetensors reader contract broken: %s\n", what.c_str());
  std::abort();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::span<const std::byte> bytes(reinterpret_cast<const std::byte*>(data), size);
  const std::string name = "fuzz.safetensors";
  const std::vector<std::string> problems = hx::check_safetensors_bytes(bytes, name);
  try {
    const hx::Checkpoint ck = hx::read_safetensors_bytes(bytes, name, nullptr);
    if (!problems.empty()) contract_broken("read succeeded but check reported: " + problems.front());
    const std::byte* begin = bytes.data();
    const std::byte* end = begin + bytes.size();
    for (const hx::NamedTensor& t : ck.tensors) {
      hx::check_view_in_bounds(t.view, t.name);
      const auto span = t.view.storage.bytes;
      if (!span.empty() && (span.data() < begin || span.data() + span.size() > end))
        contract_broken("tensor '" + t.name + "' points outside the input");
      if (span.size() != t.view.nbytes()) contract_broken("tensor '" + t.name + "' has the wrong byte count");
      (void)hx::sha256_tensor(t.view);  // touches every byte: ASan sees any stray read
    }
  } catch (const hx::Error& e) {
    if (e.code() != hx::ExitCode::kInvalidInput) contract_broken(std::string("unexpected error class: ") + e.what());
    if (problems.empty()) contract_broken(std::string("read threw but check found nothing: ") + e.what());
    if (problems.front() != e.what())
      contract_broken("first problem '" + problems.front() + "' differs from the thrown '" + e.what() + "'");
  }
  return 0;
}
