#include "quant/fpx.h"

#include <algorithm>
#include <array>
#include <numeric>
#include <type_traits>

#include "formats/errors.h"
#include "formats/parallel.h"
#include "quant/row_vectors.h"

namespace hx {

const MinifloatFormat& fpx_minifloat(FpxFormat f) { return f == FpxFormat::kE3M2 ? kFormatFP6E3M2 : kFormatFP5E2M2; }
int fpx_bits(FpxFormat f) { return f == FpxFormat::kE3M2 ? 6 : 5; }
float fpx_max_normal(FpxFormat f) { return f == FpxFormat::kE3M2 ? 28.0f : 7.0f; }
int fpx_block_codes(FpxFormat f) { return f == FpxFormat::kE3M2 ? 4 : 8; }
int fpx_block_bytes(FpxFormat f) { return f == FpxFormat::kE3M2 ? 3 : 5; }

FpxFormat fpx_format_of(QuantScheme s) {
  if (s == QuantScheme::kFp6) return FpxFormat::kE3M2;
  if (s == QuantScheme::kFp5) return FpxFormat::kE2M2;
  throw UsageError("scheme " + std::string(scheme_name(s)) + " is not an FPx scheme");
}

// ---- scalar reference ----

float fpx_scale_f32_reference(const float* row, int64_t n, FpxFormat f) {
  float amax = 0;
  for (int64_t i = 0; i < n; ++i) amax = std::max(amax, std::fabs(row[i]));
  return std::max(amax, kAmaxFloor) / fpx_max_normal(f);
}

uint8_t fpx_encode_reference(float w, float scale_f32, FpxFormat f) {
  return static_cast<uint8_t>(minifloat_encode_reference(w / scale_f32, fpx_minifloat(f)));  // saturates by format
}

float fpx_code_value(uint8_t code, FpxFormat f) {
  static const auto tables = [] {
    std::array<std::array<float, 64>, 2> t{};
    for (uint32_t c = 0; c < 64; ++c) {
      t[0][c] = static_cast<float>(minifloat_decode_reference(c, kFormatFP6E3M2));
      t[1][c] = static_cast<float>(minifloat_decode_reference(c & 31u, kFormatFP5E2M2));
    }
    return t;
  }();
  return tables[f == FpxFormat::kE3M2 ? 0 : 1][code & 63u];
}

float fpx_stored_scale(float scale_f32, DType dtype) {
  switch (dtype) {
    case DType::kF16: return f16_to_f32(f32_to_f16(scale_f32));
    case DType::kBF16: return bf16_to_f32(f32_to_bf16(scale_f32));
    case DType::kF32: return scale_f32;
    default: throw UsageError("an FPx scale cannot be stored as " + std::string(dtype_name(dtype)));
  }
}

void fpx_quantize_rows_reference(const FloatRows& w, FpxFormat f, int64_t row_begin, int64_t row_end, uint8_t* codes,
                                 float* scales_f32) {
  std::vector<float> x(static_cast<size_t>(w.cols()));
  for (int64_t r = row_begin; r < row_end; ++r) {
    w.read_row(r, x.data());
    finite_abs_max(x.data(), w.cols(), w, r);  // the same refusal of inf/NaN as the fast path
    const float scale = fpx_scale_f32_reference(x.data(), w.cols(), f);
    scales_f32[r - row_begin] = scale;
    uint8_t* out = codes + (r - row_begin) * w.cols();
    for (int64_t c = 0; c < w.cols(); ++c) out[c] = fpx_encode_reference(x[static_cast<size_t>(c)], scale, f);
  }
}

// ---- fast path ----

namespace {

// Eight codes (one per byte of a little-endian 64-bit word, each below 2^kBits) squeezed into one kBits·8-bit word
// by three shift-and-merge steps — byte pairs, then 16-bit pairs, then 32-bit pairs — so that code i ends at bit
// kBits·i: the portable layout's bit stream. U is uint64_t or a vector of them (the fused kernel's 16 codes).
template <int kBits, typename U>
HX_QUANT_INLINE U squeeze8(U c) {
  constexpr uint64_t kField1 = (1u << kBits) - 1, kField2 = (1u << (2 * kBits)) - 1;
  constexpr uint64_t kField4 = (uint64_t{1} << (4 * kBits)) - 1;
  c = (c & (kField1 * 0x0001000100010001ull)) | ((c >> (8 - kBits)) & ((kField1 << kBits) * 0x0001000100010001ull));
  c = (c & (kField2 * 0x0000000100000001ull)) |
      ((c >> (16 - 2 * kBits)) & ((kField2 << (2 * kBits)) * 0x0000000100000001ull));
  return (c & kField4) | ((c >> (32 - 4 * kBits)) & (kField4 << (4 * kBits)));
}

// The store of the fused kernel for the portable layout: 16 codes → 2·kBits bytes of the packed row, squeezed in
// two 64-bit lanes (row lengths are multiples of 4 (FP6) or 8 (FP5) codes, so a row's last chunk packs whole bytes).
template <int kBits>
struct StorePacked {
  uint8_t* packed_row;
  HX_QUANT_INLINE void operator()(int64_t i, rowvec::U32x16 codes, int64_t count) const {
    using U64x2 = uint64_t __attribute__((vector_size(16)));
    const U64x2 words = squeeze8<kBits>(std::bit_cast<U64x2>(__builtin_convertvector(codes, rowvec::U8x16)));
    uint8_t* dst = packed_row + i / 8 * kBits;
    if (count == rowvec::kLanes) {
      const uint64_t lo = words[0], hi = words[1];
      std::memcpy(dst, &lo, kBits);  // little-endian: the low kBits bytes of each word
      std::memcpy(dst + kBits, &hi, kBits);
    } else {
      uint8_t staged[2 * 8];
      const uint64_t lo = words[0], hi = words[1];
      std::memcpy(staged, &lo, kBits);
      std::memcpy(staged + kBits, &hi, kBits);
      std::memcpy(dst, staged, static_cast<size_t>(count * kBits / 8));
    }
  }
};

// One row, fused (quant/row_vectors.h): the absolute maximum from the stored values, then codes (one per byte, or
// packed) and error statistics in one pass. Clamping to ±max before rounding is the same as torchao's saturation
// (every value at or beyond max becomes max).
template <class Encoder, int kBits, bool kPacked, typename In>
HX_QUANT_INLINE ErrorStats fpx_row_kernel(const FloatRows& w, int64_t r, const In* x, float max_normal,
                                          DType scale_dtype, uint8_t* out, float* scale_out) {
  using namespace rowvec;
  const int64_t n = w.cols();
  const float amax = checked_abs_max(max_abs_bits(x, n), w, r);
  const float scale = std::max(amax, kAmaxFloor) / max_normal;
  *scale_out = scale;
  const MinifloatChunk<Encoder> encode{scale, fpx_stored_scale(scale, scale_dtype), max_normal};
  if constexpr (kPacked)
    return encode_row(x, n, encode, StorePacked<kBits>{out});
  else
    return encode_row(x, n, encode, StoreCodeBytes{out});
}

// `out`: the row's codes (one per byte) or its packed bytes.
using RowKernel = ErrorStats (*)(const FloatRows&, int64_t, const void*, float, DType, uint8_t*, float*);

template <class Encoder, int kBits, bool kPacked, typename In>
ErrorStats fpx_row_generic(const FloatRows& w, int64_t r, const void* x, float max, DType dtype, uint8_t* out,
                           float* scale) {
  return fpx_row_kernel<Encoder, kBits, kPacked>(w, r, static_cast<const In*>(x), max, dtype, out, scale);
}
template <class Encoder, int kBits, bool kPacked, typename In>
HX_QUANT_AVX512 ErrorStats fpx_row_avx512(const FloatRows& w, int64_t r, const void* x, float max, DType dtype,
                                          uint8_t* out, float* scale) {
  return fpx_row_kernel<Encoder, kBits, kPacked>(w, r, static_cast<const In*>(x), max, dtype, out, scale);
}

template <bool kPacked, typename In>
RowKernel fpx_row_kernel_for(FpxFormat f, bool avx512) {
  if (f == FpxFormat::kE3M2)
    return avx512 ? fpx_row_avx512<ClampedE3M2, 6, kPacked, In> : fpx_row_generic<ClampedE3M2, 6, kPacked, In>;
  return avx512 ? fpx_row_avx512<ClampedE2M2, 5, kPacked, In> : fpx_row_generic<ClampedE2M2, 5, kPacked, In>;
}

// Rows [row_begin, row_end) through the fused kernel; row row_begin + i goes to out + i·out_row_bytes.
template <bool kPacked>
ErrorStats fpx_rows(const FloatRows& w, FpxFormat f, int64_t row_begin, int64_t row_end, DType scale_dtype,
                    uint8_t* out, int64_t out_row_bytes, float* scales_f32) {
  const bool avx512 = quant_use_avx512();
  const RowKernel bf16_kernel = fpx_row_kernel_for<kPacked, uint16_t>(f, avx512);
  const RowKernel f32_kernel = fpx_row_kernel_for<kPacked, float>(f, avx512);
  const float max_normal = fpx_max_normal(f);
  return rowvec::for_each_stored_row(w, row_begin, row_end, [&](int64_t r, const auto* x) {
    using In = std::remove_cv_t<std::remove_pointer_t<decltype(x)>>;
    const int64_t i = r - row_begin;
    const RowKernel kernel = std::is_same_v<In, uint16_t> ? bf16_kernel : f32_kernel;
    return kernel(w, r, x, max_normal, scale_dtype, out + i * out_row_bytes, scales_f32 + i);
  });
}

}  // namespace

ErrorStats fpx_quantize_rows(const FloatRows& w, FpxFormat f, int64_t row_begin, int64_t row_end, DType scale_dtype,
                             uint8_t* codes, float* scales_f32) {
  return fpx_rows<false>(w, f, row_begin, row_end, scale_dtype, codes, w.cols(), scales_f32);
}

ErrorStats fpx_quantize_pack_rows(const FloatRows& w, FpxFormat f, int64_t row_begin, int64_t row_end,
                                  DType scale_dtype, uint8_t* packed, float* scales_f32) {
  if (w.cols() % fpx_block_codes(f) != 0)
    throw UsageError(w.label() + ": the portable " + std::string(f == FpxFormat::kE3M2 ? "FP6" : "FP5") +
                     " layout needs in to be a multiple of " + std::to_string(fpx_block_codes(f)) + ", got " +
                     std::to_string(w.cols()));
  return fpx_rows<true>(w, f, row_begin, row_end, scale_dtype, packed, fpx_packed_row_bytes(w.cols(), f), scales_f32);
}

// ---- portable packing ----

int64_t fpx_packed_row_bytes(int64_t cols, FpxFormat f) { return cols / fpx_block_codes(f) * fpx_block_bytes(f); }

namespace {

// One row of the portable layout: 8 codes → kBits bytes at a time, then (FP6) a last half block of 4 codes.
template <int kBits>
void pack_row_words(const uint8_t* codes, int64_t n, uint8_t* packed) {
  constexpr uint64_t kCodeMask = 0x0101010101010101ull * ((1u << kBits) - 1);
  int64_t j = 0;
  for (; j + 8 <= n; j += 8) {
    uint64_t c;
    std::memcpy(&c, codes + j, 8);
    const uint64_t v = squeeze8<kBits>(c & kCodeMask);
    std::memcpy(packed + j / 8 * kBits, &v, kBits);  // little-endian: the low kBits bytes
  }
  if (j < n) {  // FP6 only: n % 8 == 4
    uint64_t c = 0;
    std::memcpy(&c, codes + j, static_cast<size_t>(n - j));
    const uint64_t v = squeeze8<kBits>(c & kCodeMask);
    std::memcpy(packed + j / 8 * kBits, &v, static_cast<size_t>((n - j) * kBits / 8));
  }
}

}  // namespace

void fpx_pack_row(const uint8_t* codes, int64_t n, FpxFormat f, uint8_t* packed) {
  if (f == FpxFormat::kE3M2)
    pack_row_words<6>(codes, n, packed);
  else
    pack_row_words<5>(codes, n, packed);
}

void fpx_unpack_row(const uint8_t* packed_row, int64_t col_begin, int64_t n, FpxFormat f, uint8_t* codes) {
  const int bits = fpx_bits(f), per_block = fpx_block_codes(f), block_bytes = fpx_block_bytes(f);
  const uint64_t mask = (1u << bits) - 1;
  const uint8_t* src = packed_row + col_begin / per_block * block_bytes;
  for (int64_t j = 0; j < n / per_block; ++j) {
    uint64_t v = 0;
    for (int b = 0; b < block_bytes; ++b) v |= static_cast<uint64_t>(src[j * block_bytes + b]) << (8 * b);
    for (int i = 0; i < per_block; ++i) codes[j * per_block + i] = static_cast<uint8_t>((v >> (bits * i)) & mask);
  }
}

// ---- torchao tensor-core packing ----

namespace {

// torchao _bit_interleave's bit_order for 1-, 2- and 4-bit fields (from FP6-LLM's weight_prepacking.h): output field
// p of a 32-bit word takes input field bit_order[p].
constexpr std::array<int, 32> kBitOrder1 = {1,  5,  9,  13, 17, 21, 25, 29, 3,  7,  11, 15, 19, 23, 27, 31,
                                            0,  4,  8,  12, 16, 20, 24, 28, 2,  6,  10, 14, 18, 22, 26, 30};
constexpr std::array<int, 16> kBitOrder2 = {1, 5, 9, 13, 3, 7, 11, 15, 0, 4, 8, 12, 2, 6, 10, 14};
constexpr std::array<int, 8> kBitOrder4 = {1, 5, 3, 7, 0, 4, 2, 6};

std::span<const int> bit_order(int bits) {
  if (bits == 1) return kBitOrder1;
  if (bits == 2) return kBitOrder2;
  return kBitOrder4;
}

// Where each input field goes: the inverse permutation of bit_order.
struct InverseBitOrders {
  std::array<int, 32> of1{}, of2{}, of4{};
  InverseBitOrders() {
    for (int p = 0; p < 32; ++p) of1[kBitOrder1[p]] = p;
    for (int p = 0; p < 16; ++p) of2[kBitOrder2[p]] = p;
    for (int p = 0; p < 8; ++p) of4[kBitOrder4[p]] = p;
  }
  int destination(int bits, int field) const {
    return bits == 1 ? of1[field] : bits == 2 ? of2[field] : of4[field];
  }
};
const InverseBitOrders kInverseBitOrders;

// The bit planes of a format in torchao's order (y = 1, 2, 4 where nbits has that bit), and which code bits each
// holds: (code >> shift) & ((1 << bits) - 1).
struct Plane {
  int bits;
  int shift;
};
std::array<Plane, 2> planes_of(FpxFormat f) {
  if (f == FpxFormat::kE3M2) return {Plane{2, 4}, Plane{4, 0}};
  return {Plane{1, 4}, Plane{4, 0}};
}

}  // namespace

bool fpx_tc_shape_ok(int64_t rows, int64_t cols) { return rows > 0 && cols > 0 && rows % 64 == 0 && cols % 64 == 0; }

namespace {

// What locating a bit needs, computed once per matrix.
struct TcPlane {
  int bits, shift;     // field width; which code bits the plane holds
  int per_byte_log2;   // fields per byte = 8 / bits
  uint64_t offset;     // where the plane starts in the packed bytes
};
struct TcGeometry {
  int64_t blocks_per_band;  // pass-1 blocks of 64 rows: 16 · cols/16
  TcPlane planes[2];
};

TcGeometry tc_geometry(int64_t rows, int64_t cols, FpxFormat f) {
  const auto p = planes_of(f);
  TcGeometry g{};
  g.blocks_per_band = cols;  // (cols / 16) · 16
  for (int i = 0; i < 2; ++i) {
    const int bits = p[static_cast<size_t>(i)].bits;
    g.planes[i] = {bits, p[static_cast<size_t>(i)].shift, bits == 1 ? 3 : (bits == 2 ? 2 : 1),
                   i == 0 ? 0 : static_cast<uint64_t>(rows * cols * p[0].bits / 8)};
  }
  return g;
}

// Pass 1: view(M/64, 4, 2, 8, N/16, 2, 8).permute(0, 4, 1, 5, 2, 3, 6).reshape(-1, 32, 2).permute(1, 0, 2) puts
// element (r, c) in strip 4d + g/2 (of 32) at index 2·block + g%2, with r = 64a + 16b + 8c' + d, c = 16e + 8f + g
// and block = (((a·N/16 + e)·4 + b)·2 + f)·2 + c'.
struct TcPosition {
  int64_t strip, index;
};
inline TcPosition tc_position(const TcGeometry& geo, int64_t r, int64_t c) {
  const int64_t a = r >> 6, b = (r >> 4) & 3, c1 = (r >> 3) & 1, d = r & 7;
  const int64_t e = c >> 4, f1 = (c >> 3) & 1, g = c & 7;
  const int64_t block = a * geo.blocks_per_band + e * 16 + b * 4 + f1 * 2 + c1;
  return {d * 4 + g / 2, block * 2 + (g & 1)};
}

// Then, per plane: _pack puts fields most significant first, 8/bits to a byte; a strip is exactly a quarter of pass
// 2's view(32, K, 4) rows, so pass 2 (permute(1, 0, 2).flip(2)) sends byte w of word k of strip s to position
// k·128 + 4s + (3 − w); pass 3 (_bit_interleave) permutes the fields of each 32-bit word, numbered from the most
// significant end of the word with its bytes reversed — where our field is w·(8/bits) + its place in the byte.
inline TcBitLocation tc_locate(const TcPlane& plane, TcPosition at) {
  const int64_t per_byte = int64_t{1} << plane.per_byte_log2;
  const int64_t byte_in_strip = at.index >> plane.per_byte_log2, field_in_byte = at.index & (per_byte - 1);
  const int64_t k = byte_in_strip >> 2, w = byte_in_strip & 3;
  const int to = kInverseBitOrders.destination(plane.bits, static_cast<int>(w * per_byte + field_in_byte));
  const uint64_t byte = plane.offset + static_cast<uint64_t>(k * 128 + at.strip * 4 + (3 - (to >> plane.per_byte_log2)));
  return {byte, static_cast<int>(8 - ((to & (per_byte - 1)) + 1) * plane.bits)};
}

}  // namespace

TcBitLocation fpx_tc_location(int64_t rows, int64_t cols, FpxFormat f, int plane, int64_t r, int64_t c) {
  const TcGeometry geo = tc_geometry(rows, cols, f);
  return tc_locate(geo.planes[plane], tc_position(geo, r, c));
}

void fpx_pack_tc(const uint8_t* codes, int64_t rows, int64_t cols, FpxFormat f, uint8_t* packed) {
  if (!fpx_tc_shape_ok(rows, cols))
    throw UsageError("the torchao-tc layout needs rows and columns that are multiples of 64, got [" +
                     std::to_string(rows) + ", " + std::to_string(cols) + "]");
  const TcGeometry geo = tc_geometry(rows, cols, f);
  std::fill(packed, packed + rows * cols * fpx_bits(f) / 8, uint8_t{0});
  // The elements of one 64-row band fill whole 32-bit words of each plane that no other band touches (a word draws
  // on at most 16 consecutive pass-1 blocks, a band on cols of them, a multiple of 16), so bands pack concurrently.
  parallel_for(0, rows / 64, 1, [&](int64_t band) {
    for (int64_t r = band * 64; r < band * 64 + 64; ++r) {
      for (int64_t c = 0; c < cols; ++c) {
        const uint8_t code = codes[r * cols + c];
        const TcPosition at = tc_position(geo, r, c);
        for (const TcPlane& plane : geo.planes) {
          const TcBitLocation bit = tc_locate(plane, at);
          packed[bit.byte] |= static_cast<uint8_t>(((code >> plane.shift) & ((1u << plane.bits) - 1)) << bit.shift);
        }
      }
    }
  });
}

uint8_t fpx_tc_code_at(const uint8_t* packed, int64_t rows, int64_t cols, FpxFormat f, int64_t r, int64_t c) {
  uint8_t code;
  fpx_unpack_tc(packed, rows, cols, f, r, c, 1, &code);
  return code;
}

void fpx_unpack_tc(const uint8_t* packed, int64_t rows, int64_t cols, FpxFormat f, int64_t r, int64_t col_begin,
                   int64_t n, uint8_t* codes) {
  const TcGeometry geo = tc_geometry(rows, cols, f);
  for (int64_t i = 0; i < n; ++i) {
    const TcPosition at = tc_position(geo, r, col_begin + i);
    uint32_t code = 0;
    for (const TcPlane& plane : geo.planes) {
      const TcBitLocation bit = tc_locate(plane, at);
      code |= ((packed[bit.byte] >> bit.shift) & ((1u << plane.bits) - 1)) << plane.shift;
    }
    codes[i] = static_cast<uint8_t>(code);
  }
}

// ---- the literal port of torchao's packer (reference) ----

namespace {

// Just enough of a tensor for view / permute / flip on uint8 data (C order).
struct Array {
  std::vector<uint8_t> data;
  std::vector<int64_t> shape;
};

Array permute(const Array& in, const std::vector<int>& perm) {
  const size_t rank = in.shape.size();
  std::vector<int64_t> in_strides(rank, 1), out_shape(rank);
  for (size_t d = rank - 1; d > 0; --d) in_strides[d - 1] = in_strides[d] * in.shape[d];
  for (size_t k = 0; k < rank; ++k) out_shape[k] = in.shape[static_cast<size_t>(perm[k])];
  Array out{std::vector<uint8_t>(in.data.size()), out_shape};
  std::vector<int64_t> index(rank, 0);
  for (size_t i = 0; i < out.data.size(); ++i) {
    int64_t source = 0;
    for (size_t k = 0; k < rank; ++k) source += index[k] * in_strides[static_cast<size_t>(perm[k])];
    out.data[i] = in.data[static_cast<size_t>(source)];
    for (size_t k = rank; k-- > 0;) {  // odometer over the output index
      if (++index[k] < out_shape[k]) break;
      index[k] = 0;
    }
  }
  return out;
}

Array flip_last(const Array& in) {
  Array out = in;
  const int64_t n = in.shape.back();
  for (size_t i = 0; i < in.data.size(); i += static_cast<size_t>(n))
    std::reverse(out.data.begin() + static_cast<int64_t>(i), out.data.begin() + static_cast<int64_t>(i) + n);
  return out;
}

// torchao _pack / _unpack on a flat array: byte j holds x[j·k + i] << (8 − (i+1)·bits), k = 8 / bits.
std::vector<uint8_t> pack_fields(const std::vector<uint8_t>& x, int bits) {
  const size_t k = static_cast<size_t>(8 / bits);
  std::vector<uint8_t> out(x.size() / k);
  for (size_t j = 0; j < out.size(); ++j)
    for (size_t i = 0; i < k; ++i) out[j] |= static_cast<uint8_t>(x[j * k + i] << (8 - (i + 1) * static_cast<size_t>(bits)));
  return out;
}

std::vector<uint8_t> unpack_fields(const std::vector<uint8_t>& x, int bits) {
  const size_t k = static_cast<size_t>(8 / bits);
  std::vector<uint8_t> out(x.size() * k);
  for (size_t j = 0; j < x.size(); ++j)
    for (size_t i = 0; i < k; ++i)
      out[j * k + i] = static_cast<uint8_t>((x[j] >> (8 - (i + 1) * static_cast<size_t>(bits))) & ((1u << bits) - 1));
  return out;
}

std::vector<uint8_t> bit_interleave(const std::vector<uint8_t>& bytes, int bits) {
  Array words = flip_last(Array{bytes, {static_cast<int64_t>(bytes.size() / 4), 4}});  // reshape(-1, 4).flip(1)
  std::vector<uint8_t> fields = unpack_fields(words.data, bits);
  const size_t per_word = static_cast<size_t>(32 / bits);
  const auto order = bit_order(bits);
  std::vector<uint8_t> reordered(fields.size());
  for (size_t w = 0; w < fields.size() / per_word; ++w)  // x[:, bit_order]
    for (size_t p = 0; p < per_word; ++p) reordered[w * per_word + p] = fields[w * per_word + static_cast<size_t>(order[p])];
  const std::vector<uint8_t> packed = pack_fields(reordered, bits);
  return flip_last(Array{packed, {static_cast<int64_t>(packed.size() / 4), 4}}).data;  // reshape(-1, 4).flip(1)
}

}  // namespace

std::vector<uint8_t> fpx_pack_tc_reference(const uint8_t* codes, int64_t rows, int64_t cols, FpxFormat f) {
  const int nbits = fpx_bits(f);
  // Pass 1.
  Array t{std::vector<uint8_t>(codes, codes + rows * cols), {rows / 64, 4, 2, 8, cols / 16, 2, 8}};
  t = permute(t, {0, 4, 1, 5, 2, 3, 6});
  t.shape = {rows * cols / 64, 32, 2};
  t = permute(t, {1, 0, 2});
  std::vector<uint8_t> out;
  int used_bits = 0;
  for (int y : {1, 2, 4}) {
    if (!(nbits & y)) continue;
    std::vector<uint8_t> plane(t.data.size());
    for (size_t i = 0; i < plane.size(); ++i)
      plane[i] = static_cast<uint8_t>((t.data[i] >> (nbits - used_bits - y)) & ((1u << y) - 1));
    std::vector<uint8_t> packed = pack_fields(plane, y);
    // Pass 2: view(32, -1, 4).permute(1, 0, 2).flip(2).
    Array strips{packed, {32, static_cast<int64_t>(packed.size() / 128), 4}};
    strips = flip_last(permute(strips, {1, 0, 2}));
    // Pass 3.
    const std::vector<uint8_t> interleaved = bit_interleave(strips.data, y);
    out.insert(out.end(), interleaved.begin(), interleaved.end());
    used_bits += y;
  }
  return out;
}

}  // namespace hx
