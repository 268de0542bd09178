// PickleEncoder (see pickle.h): protocol-2 output with the opcodes torch's weights-only unpickler accepts.
#include <cstring>

#include "formats/errors.h"
#include "formats/pickle.h"

namespace hx {
namespace {
constexpr uint8_t kProto = 0x80, kGlobal = 'c', kBinPut = 'q', kLongBinPut = 'r', kBinGet = 'h', kLongBinGet = 'j',
                  kMark = '(', kTuple = 't', kEmptyTuple = ')', kTuple1 = 0x85, kBinInt = 'J', kBinInt1 = 'K',
                  kBinInt2 = 'M', kLong1 = 0x8a, kBinUnicode = 'X', kNewTrue = 0x88, kNewFalse = 0x89, kNone = 'N',
                  kEmptyDict = '}', kSetItems = 'u', kReduce = 'R', kBinPersId = 'Q', kStop = '.';
}  // namespace

PickleEncoder::PickleEncoder() {
  op(kProto);
  op(2);
}

void PickleEncoder::op(uint8_t opcode) { out_.push_back(static_cast<std::byte>(opcode)); }

void PickleEncoder::raw(const void* p, size_t n) {
  const auto* b = static_cast<const std::byte*>(p);
  out_.insert(out_.end(), b, b + n);
}

static void put_le32(std::vector<std::byte>& out, uint32_t v) {
  for (int i = 0; i < 4; ++i) out.push_back(static_cast<std::byte>((v >> (8 * i)) & 0xFF));
}

void PickleEncoder::global(std::string_view module, std::string_view name) {
  const std::string key = std::string(module) + "\n" + std::string(name);
  for (const auto& [k, index] : global_memo_)
    if (k == key) {  // BINGET / LONG_BINGET of the memoized global
      if (index < 256) {
        op(kBinGet);
        op(static_cast<uint8_t>(index));
      } else {
        op(kLongBinGet);
        put_le32(out_, index);
      }
      return;
    }
  op(kGlobal);
  raw(key.data(), key.size());
  op('\n');
  const uint32_t index = next_memo_++;
  if (index < 256) {
    op(kBinPut);
    op(static_cast<uint8_t>(index));
  } else {
    op(kLongBinPut);
    put_le32(out_, index);
  }
  global_memo_.emplace_back(key, index);
}

void PickleEncoder::mark() { op(kMark); }
void PickleEncoder::tuple_from_mark() { op(kTuple); }

void PickleEncoder::tuple(size_t n) {
  if (n > 3) throw FormatError("PickleEncoder::tuple(" + std::to_string(n) + "): use mark() and tuple_from_mark()");
  op(n == 0 ? kEmptyTuple : static_cast<uint8_t>(kTuple1 + n - 1));
}

void PickleEncoder::int_tuple(const std::vector<int64_t>& values) {
  if (values.size() > 3) mark();
  for (int64_t v : values) integer(v);
  if (values.size() > 3) tuple_from_mark();
  else tuple(values.size());
}

void PickleEncoder::integer(int64_t v) {
  if (v >= 0 && v < 256) {
    op(kBinInt1);
    op(static_cast<uint8_t>(v));
  } else if (v >= 0 && v < 65536) {
    op(kBinInt2);
    op(static_cast<uint8_t>(v & 0xFF));
    op(static_cast<uint8_t>(v >> 8));
  } else if (v >= INT32_MIN && v <= INT32_MAX) {
    op(kBinInt);
    put_le32(out_, static_cast<uint32_t>(static_cast<int32_t>(v)));
  } else {  // LONG1: shortest little-endian two's complement
    uint8_t bytes[8];
    const auto u = static_cast<uint64_t>(v);
    for (int i = 0; i < 8; ++i) bytes[i] = static_cast<uint8_t>(u >> (8 * i));
    int n = 8;
    while (n > 1 && ((bytes[n - 1] == 0x00 && !(bytes[n - 2] & 0x80)) || (bytes[n - 1] == 0xFF && (bytes[n - 2] & 0x80)))) --n;
    op(kLong1);
    op(static_cast<uint8_t>(n));
    raw(bytes, static_cast<size_t>(n));
  }
}

void PickleEncoder::str(std::string_view utf8) {
  if (utf8.size() > UINT32_MAX) throw FormatError("PickleEncoder::str: string of " + std::to_string(utf8.size()) + " bytes");
  op(kBinUnicode);
  put_le32(out_, static_cast<uint32_t>(utf8.size()));
  raw(utf8.data(), utf8.size());
}

void PickleEncoder::boolean(bool v) { op(v ? kNewTrue : kNewFalse); }
void PickleEncoder::none() { op(kNone); }
void PickleEncoder::empty_dict() { op(kEmptyDict); }
void PickleEncoder::setitems() { op(kSetItems); }
void PickleEncoder::reduce() { op(kReduce); }
void PickleEncoder::binpersid() { op(kBinPersId); }

std::vector<std::byte> PickleEncoder::finish() {
  op(kStop);
  return std::move(out_);
}

}  // namespace hx
