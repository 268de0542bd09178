#include "quant/quantized_checkpoint.h"


#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstring>
#include <memory>
#include <set>

#include "formats/errors.h"
#include "formats/parallel.h"
#include "formats/safetensors.h"
#include "formats/sha256.h"
#include "quant/fpx.h"
#include "quant/int8.h"

namespace hx {

using nlohmann::json;

namespace {

// ---- small helpers ----

std::string quoted(const std::string& name) { return "tensor '" + name + "'"; }

json shape_json(const Shape& s) {
  json a = json::array();
  for (int64_t d : s) a.push_back(d);
  return a;
}

// A problem found in a quantized checkpoint; `unsupported` selects UnsupportedError over FormatError.
struct Problem {
  bool unsupported;
  std::string message;
};

[[noreturn]] void throw_problem(const Problem& p) {
  if (p.unsupported) throw UnsupportedError(p.message);
  throw FormatError(p.message);
}

std::string scheme_list() {
  std::string s;
  for (QuantScheme q : kAllQuantSchemes) s += (s.empty() ? "" : ", ") + std::string(scheme_name(q));
  return s;
}

template <typename T>
std::span<const std::byte> bytes_of(const std::vector<T>& v) {
  return std::as_bytes(std::span<const T>(v));
}

}  // namespace

// ---- the description ----

const QuantizedTensorEntry* QuantizationDescription::find(const std::string& name) const {
  for (const auto& e : tensors)
    if (e.name == name) return &e;
  return nullptr;
}

json QuantizationDescription::to_json() const {
  json entries = json::object();
  for (const auto& e : tensors) {
    json j = {{"scheme", scheme_name(e.scheme)},
              {"layout", layout_name(e.layout)},
              {"shape", shape_json(e.shape)},
              {"dtype", dtype_name(e.dtype)}};
    if (e.scheme == QuantScheme::kInt4) j["group_size"] = e.group_size;
    if (e.scheme == QuantScheme::kFp8) j["scale_mode"] = fp8_scale_mode_name(e.fp8_scale);
    if (!e.note.empty()) j["note"] = e.note;
    entries[e.name] = std::move(j);
  }
  return {{"format_version", format_version}, {"producer", producer}, {"policy", policy}, {"tensors", entries}};
}

QuantizationDescription QuantizationDescription::parse(const std::string& text, const std::string& source) {
  const std::string where = source + ": __metadata__ '" + kQuantMetadataKey + "'";
  json j;
  try {
    j = json::parse(text);
  } catch (const json::exception& e) {
    throw FormatError(where + " is not valid JSON (" + e.what() + ")");
  }
  if (!j.is_object()) throw FormatError(where + " must be a JSON object, got " + j.type_name());
  QuantizationDescription d;
  if (!j.contains("format_version") || !j["format_version"].is_number_integer())
    throw FormatError(where + " has no integer 'format_version'");
  d.format_version = j["format_version"].get<int>();
  if (d.format_version > kQuantFormatVersion)
    throw UnsupportedError(where + " is format version " + std::to_string(d.format_version) +
                           "; this hxforge reads versions 1 to " + std::to_string(kQuantFormatVersion) +
                           " (the file was produced by a newer tool)");
  if (d.format_version < 1)
    throw FormatError(where + " has format_version " + std::to_string(d.format_version) + "; expected 1 to " +
                      std::to_string(kQuantFormatVersion));
  if (j.contains("producer") && j["producer"].is_string()) d.producer = j["producer"].get<std::string>();
  if (j.contains("policy") && j["policy"].is_string()) d.policy = j["policy"].get<std::string>();
  if (!j.contains("tensors") || !j["tensors"].is_object()) throw FormatError(where + " has no 'tensors' object");
  for (const auto& [name, t] : j["tensors"].items()) {
    const std::string at = source + ": " + quoted(name) + ": quantization entry";
    if (!t.is_object()) throw FormatError(at + " must be an object, got " + t.type_name());
    auto text_field = [&](const char* key) -> std::string {
      if (!t.contains(key) || !t[key].is_string()) throw FormatError(at + " has no string '" + key + "'");
      return t[key].get<std::string>();
    };
    QuantizedTensorEntry e;
    e.name = name;
    const std::string scheme = text_field("scheme");
    const auto s = scheme_from_name(scheme);
    if (!s) throw UnsupportedError(at + " has unknown scheme '" + scheme + "'; expected one of " + scheme_list());
    e.scheme = *s;
    const std::string layout = t.contains("layout") ? text_field("layout") : "portable";
    const auto l = layout_from_name(layout);
    if (!l)
      throw UnsupportedError(at + " has unknown layout '" + layout + "'; expected one of portable, torchao-tc, gemlite");
    e.layout = *l;
    if (!t.contains("shape") || !t["shape"].is_array()) throw FormatError(at + " has no 'shape' array");
    for (const auto& dim : t["shape"]) {
      if (!dim.is_number_integer() || dim.get<int64_t>() < 0)
        throw FormatError(at + " has a shape that is not a list of non-negative integers: " + t["shape"].dump());
      e.shape.push_back(dim.get<int64_t>());
    }
    const std::string dtype = text_field("dtype");
    const auto dt = dtype_from_name(dtype);
    if (!dt) throw UnsupportedError(at + " has unknown dtype '" + dtype + "'");
    e.dtype = *dt;
    if (e.scheme == QuantScheme::kInt4) {
      if (!t.contains("group_size") || !t["group_size"].is_number_integer())
        throw FormatError(at + " (int4) has no integer 'group_size'");
      const int64_t gs = t["group_size"].get<int64_t>();
      if (gs <= 0 || gs > (int64_t{1} << 20)) throw FormatError(at + " has group_size " + std::to_string(gs) + "; expected 32, 64, 128 or 256");
      e.group_size = static_cast<int>(gs);
    }
    if (e.scheme == QuantScheme::kFp8 && t.contains("scale_mode")) {
      const std::string mode = text_field("scale_mode");
      const auto m = fp8_scale_mode_from_name(mode);
      if (!m) throw UnsupportedError(at + " has unknown scale_mode '" + mode + "'; expected row or tensor");
      e.fp8_scale = *m;
    }
    if (t.contains("note") && t["note"].is_string()) e.note = t["note"].get<std::string>();
    d.tensors.push_back(std::move(e));
  }
  return d;
}

// ---- the parts of an entry ----

QuantizedParts quantized_parts(const QuantizedTensorEntry& e, const std::string& source) {
  const std::string at = source + ": " + quoted(e.name) + " (" + std::string(scheme_name(e.scheme)) + ", " +
                         std::string(layout_name(e.layout)) + ")";
  if (e.shape.size() != 2)
    throw FormatError(at + " must be a 2-D [out, in] matrix; expected 2 dimensions, got shape " + shape_to_string(e.shape));
  if (e.dtype != DType::kF32 && e.dtype != DType::kBF16 && e.dtype != DType::kF16)
    throw UnsupportedError(at + " has original dtype " + std::string(dtype_name(e.dtype)) + "; expected F32, BF16 or F16");
  const int64_t out = e.shape[0], in = e.shape[1];
  auto need_layout = [&](std::initializer_list<QuantLayout> allowed) {
    for (QuantLayout l : allowed)
      if (l == e.layout) return;
    throw UnsupportedError(at + ": layout " + std::string(layout_name(e.layout)) + " is not available for " +
                           std::string(scheme_name(e.scheme)));
  };
  auto need_multiple = [&](int64_t value, int64_t of, const char* what) {
    if (of <= 0 || value % of != 0)
      throw FormatError(at + ": " + what + " = " + std::to_string(value) + " is not a multiple of " + std::to_string(of));
  };
  QuantizedParts p;
  p.packed.name = e.name;
  p.scale.name = scale_tensor_name(e.name);
  switch (e.scheme) {
    case QuantScheme::kInt8:
      need_layout({QuantLayout::kPortable});
      p.packed.dtype = DType::kI8;
      p.packed.shape = {out, in};
      p.scale.dtype = DType::kF32;
      p.scale.shape = {out};
      break;
    case QuantScheme::kFp8:
      need_layout({QuantLayout::kPortable});
      p.packed.dtype = DType::kF8_E4M3;
      p.packed.shape = {out, in};
      p.scale.dtype = DType::kF32;
      p.scale.shape = {e.fp8_scale == Fp8ScaleMode::kPerRow ? out : 1};
      break;
    case QuantScheme::kFp6:
    case QuantScheme::kFp5: {
      const FpxFormat f = fpx_format_of(e.scheme);
      need_layout({QuantLayout::kPortable, QuantLayout::kTorchaoTc});
      if (e.layout == QuantLayout::kTorchaoTc) {
        need_multiple(out, 64, "out");
        need_multiple(in, 64, "in");
      } else {
        need_multiple(in, fpx_block_codes(f), "in");
      }
      p.packed.dtype = DType::kU8;
      p.packed.shape = {out, in * fpx_bits(f) / 8};
      p.scale.dtype = e.dtype;
      p.scale.shape = {out};
      break;
    }
    case QuantScheme::kInt4: {
      need_layout({QuantLayout::kPortable, QuantLayout::kGemlite});
      if (!hqq_group_size_ok(e.group_size))
        throw UnsupportedError(at + ": group size " + std::to_string(e.group_size) + " is not one of 32, 64, 128, 256");
      if (in % e.group_size != 0)
        throw FormatError(at + ": group size " + std::to_string(e.group_size) + " does not divide in = " + std::to_string(in));
      const int64_t groups = in / e.group_size;
      p.zero = TensorSpec{zero_tensor_name(e.name), DType::kF32, {}};
      if (e.layout == QuantLayout::kGemlite) {
        need_multiple(in, 32, "in");
        p.packed.dtype = DType::kI32;
        p.packed.shape = {in / 8, out};
        p.scale.dtype = p.zero->dtype = DType::kF16;
        p.scale.shape = p.zero->shape = {groups, out};
      } else {
        need_multiple(in, 2, "in");
        p.packed.dtype = DType::kU8;
        p.packed.shape = {out, in / 2};
        p.scale.dtype = p.zero->dtype = DType::kF32;
        p.scale.shape = p.zero->shape = {out, groups};
      }
      break;
    }
  }
  return p;
}

// ---- reading ----

namespace {

struct Parsed {
  std::optional<QuantizationDescription> description;
  std::vector<Problem> problems;
};

Parsed inspect_quantization(const Checkpoint& c, bool stop_at_first) {
  Parsed out;
  const auto it = c.metadata.find(kQuantMetadataKey);
  if (it == c.metadata.end()) return out;
  const std::string& source = c.path;
  try {
    out.description = QuantizationDescription::parse(it->second, source);
  } catch (const UnsupportedError& e) {
    out.problems.push_back({true, e.what()});
    return out;
  } catch (const FormatError& e) {
    out.problems.push_back({false, e.what()});
    return out;
  }
  std::set<std::string> seen;
  for (const QuantizedTensorEntry& e : out.description->tensors) {
    if (stop_at_first && !out.problems.empty()) break;
    if (!seen.insert(e.name).second) {
      out.problems.push_back({false, in_file(source, quoted(e.name) + " is described twice")});
      continue;
    }
    QuantizedParts parts;
    try {
      parts = quantized_parts(e, source);
    } catch (const UnsupportedError& err) {
      out.problems.push_back({true, err.what()});
      continue;
    } catch (const FormatError& err) {
      out.problems.push_back({false, err.what()});
      continue;
    }
    const std::string owner = quoted(e.name) + " (" + std::string(scheme_name(e.scheme)) + ")";
    auto check_part = [&](const TensorSpec& spec, const char* role) {
      const NamedTensor* t = c.find(spec.name);
      if (!t) {
        out.problems.push_back({false, in_file(source, "tensor '" + spec.name + "' is required but not found in file; it is the " +
                                                           role + " of " + owner + ", expected " +
                                                           std::string(dtype_name(spec.dtype)) + " " + shape_to_string(spec.shape))});
        return;
      }
      if (t->view.dtype != spec.dtype)
        out.problems.push_back({false, in_file(source, "tensor '" + spec.name + "' has wrong dtype; expected " +
                                                           std::string(dtype_name(spec.dtype)) + " (the " + role + " of " +
                                                           owner + "), got " + std::string(dtype_name(t->view.dtype)))});
      else if (t->view.shape != spec.shape)
        out.problems.push_back({false, in_file(source, "tensor '" + spec.name + "' has wrong shape; expected " +
                                                           shape_to_string(spec.shape) + " (the " + role + " of " + owner +
                                                           "), got " + shape_to_string(t->view.shape))});
      else if (!t->view.is_contiguous())
        out.problems.push_back({false, in_file(source, "tensor '" + spec.name + "' is not contiguous")});
    };
    check_part(parts.packed, "packed codes");
    check_part(parts.scale, "scale");
    if (parts.zero) {
      check_part(*parts.zero, "zero");
    } else if (c.find(zero_tensor_name(e.name))) {
      out.problems.push_back({false, in_file(source, "tensor '" + zero_tensor_name(e.name) + "' is unexpected: " + owner +
                                                         " has no zero")});
    }
  }
  return out;
}

}  // namespace

std::optional<QuantizationDescription> read_quantization(const Checkpoint& checkpoint) {
  Parsed p = inspect_quantization(checkpoint, true);
  if (!p.problems.empty()) throw_problem(p.problems.front());
  return std::move(p.description);
}

std::vector<std::string> check_quantization(const Checkpoint& checkpoint) {
  std::vector<std::string> out;
  for (const Problem& p : inspect_quantization(checkpoint, false).problems) out.push_back(p.message);
  return out;
}

std::vector<float> dequantize_tensor(const Checkpoint& c, const QuantizedTensorEntry& e) {
  const QuantizedParts parts = quantized_parts(e, c.path);
  auto bytes = [&](const TensorSpec& spec) {
    const NamedTensor* t = c.find(spec.name);
    if (!t || t->view.dtype != spec.dtype || t->view.shape != spec.shape || !t->view.is_contiguous())
      throw FormatError(in_file(c.path, "tensor '" + spec.name + "' is missing or does not match its description"));
    return t->view.contiguous_bytes().data();
  };
  const int64_t rows = e.shape[0], cols = e.shape[1];
  const std::byte* packed = bytes(parts.packed);
  const std::byte* scale = bytes(parts.scale);
  const std::byte* zero = parts.zero ? bytes(*parts.zero) : nullptr;
  const auto* u8 = reinterpret_cast<const uint8_t*>(packed);
  std::vector<float> w(static_cast<size_t>(rows * cols));
  std::vector<uint8_t> codes(static_cast<size_t>(cols));
  for (int64_t r = 0; r < rows; ++r) {
    float* out = w.data() + r * cols;
    switch (e.scheme) {
      case QuantScheme::kInt8: {
        const float s = load_f32(scale + 4 * r);
        for (int64_t k = 0; k < cols; ++k) out[k] = int8_decode(static_cast<int8_t>(u8[r * cols + k]), s);
        break;
      }
      case QuantScheme::kFp8: {
        const float s = load_f32(scale + (e.fp8_scale == Fp8ScaleMode::kPerRow ? 4 * r : 0));
        for (int64_t k = 0; k < cols; ++k) out[k] = fp8_decode(u8[r * cols + k], s);
        break;
      }
      case QuantScheme::kFp6:
      case QuantScheme::kFp5: {
        const FpxFormat f = fpx_format_of(e.scheme);
        float s = 0;
        if (e.dtype == DType::kF32) s = load_f32(scale + 4 * r);
        else if (e.dtype == DType::kF16) s = f16_to_f32(load_u16(scale + 2 * r));
        else s = bf16_to_f32(load_u16(scale + 2 * r));
        if (e.layout == QuantLayout::kTorchaoTc) {
          fpx_unpack_tc(u8, rows, cols, f, r, 0, cols, codes.data());
        } else {
          fpx_unpack_row(u8 + r * fpx_packed_row_bytes(cols, f), 0, cols, f, codes.data());
        }
        for (int64_t k = 0; k < cols; ++k) out[k] = fpx_code_value(codes[static_cast<size_t>(k)], f) * s;
        break;
      }
      case QuantScheme::kInt4: {
        const int64_t groups = cols / e.group_size;
        if (e.layout == QuantLayout::kGemlite) {
          const auto* words = reinterpret_cast<const std::byte*>(packed);
          for (int64_t k = 0; k < cols; ++k) {
            uint32_t word;
            std::memcpy(&word, words + 4 * ((k / 8) * rows + r), 4);
            const float q = static_cast<float>((word >> (4 * (k % 8))) & 0x0f);
            const int64_t g = k / e.group_size;
            out[k] = q * f16_to_f32(load_u16(scale + 2 * (g * rows + r))) + f16_to_f32(load_u16(zero + 2 * (g * rows + r)));
          }
        } else {
          int4_unpack_row(u8 + r * (cols / 2), 0, cols, codes.data());
          for (int64_t k = 0; k < cols; ++k) {
            const int64_t g = r * groups + k / e.group_size;
            out[k] = hqq_decode(codes[static_cast<size_t>(k)], load_f32(scale + 4 * g), load_f32(zero + 4 * g));
          }
        }
        break;
      }
    }
  }
  return w;
}

// ---- writing ----

namespace {

// Rows per parallel task when packing codes (each row packs on its own).
constexpr int64_t kPackGrainRows = 16;

// Rows per block of the portable layouts: about 32 M weights, so a block is at most 32 MiB of codes (held once per
// calling thread, see block_buffer) and each block is one parallel region. Every region ends when its slowest
// thread does; on a machine shared with other work a thread is often descheduled for milliseconds, so fewer,
// larger regions keep the others from waiting (4 M-weight blocks made the int8 benchmark 10x slower under a load
// of 6 on 2 cores).
int64_t block_rows_for(int64_t cols) { return std::max<int64_t>(64, (int64_t{32} << 20) / std::max<int64_t>(cols, 1)); }

// The block buffer of the calling thread, kept from one tensor to the next and never zeroed: a fresh zero-filled
// block per tensor cost a serial memset and page faults of its own, while the other threads waited.
template <typename T>
T* block_buffer(int64_t count) {
  struct Buffer {
    std::unique_ptr<std::byte[]> data;
    size_t size = 0;
  };
  thread_local Buffer b;
  const size_t bytes = static_cast<size_t>(count) * sizeof(T);
  if (bytes > b.size) {
    b.data.reset(new std::byte[bytes]);  // default-initialised: no memset
    b.size = bytes;
  }
  return reinterpret_cast<T*>(b.data.get());
}

std::vector<std::byte> f32_bytes(const std::vector<float>& v) {
  std::vector<std::byte> b(v.size() * 4);
  std::memcpy(b.data(), v.data(), b.size());
  return b;
}

std::vector<std::byte> scales_in_dtype(const std::vector<float>& v, DType dtype) {
  std::vector<std::byte> b(v.size() * dtype_element_size(dtype));
  convert_from_f32(dtype, v.data(), b.data(), v.size());
  return b;
}

}  // namespace

QuantizedMatrix quantize_matrix(const FloatRows& w, const QuantizedTensorEntry& e, const HqqOptions& hqq_options,
                                const ByteSink& packed_sink, const std::function<void(uint64_t)>& rows_done_callback) {
  QuantizedMatrix out;
  const ByteSink& emit = packed_sink;
  auto rows_done = [&](uint64_t rows) {
    if (rows_done_callback) rows_done_callback(rows);
  };
  const int64_t rows = w.rows(), cols = w.cols();
  const int64_t block = block_rows_for(cols);
  switch (e.scheme) {
    case QuantScheme::kInt8: {
      std::vector<float> scales(static_cast<size_t>(rows));
      int8_t* codes = block_buffer<int8_t>(std::min(block, rows) * cols);
      for (int64_t r0 = 0; r0 < rows; r0 += block) {
        const int64_t r1 = std::min(rows, r0 + block);
        out.error.merge(int8_quantize_rows(w, r0, r1, codes, scales.data() + r0));
        emit(std::as_bytes(std::span<const int8_t>(codes, static_cast<size_t>((r1 - r0) * cols))));
        rows_done(static_cast<uint64_t>(r1 - r0));
      }
      out.scale = f32_bytes(scales);
      break;
    }
    case QuantScheme::kFp8: {
      const bool per_row = e.fp8_scale == Fp8ScaleMode::kPerRow;
      const float tensor_scale = per_row ? 0.0f : fp8_scale_for_amax(fp8_tensor_amax(w));
      std::vector<float> scales(per_row ? static_cast<size_t>(rows) : 1, tensor_scale);
      uint8_t* codes = block_buffer<uint8_t>(std::min(block, rows) * cols);
      for (int64_t r0 = 0; r0 < rows; r0 += block) {
        const int64_t r1 = std::min(rows, r0 + block);
        out.error.merge(fp8_quantize_rows(w, r0, r1, e.fp8_scale, tensor_scale, codes,
                                          per_row ? scales.data() + r0 : nullptr));
        emit(std::as_bytes(std::span<const uint8_t>(codes, static_cast<size_t>((r1 - r0) * cols))));
        rows_done(static_cast<uint64_t>(r1 - r0));
      }
      out.scale = f32_bytes(scales);
      break;
    }
    case QuantScheme::kFp6:
    case QuantScheme::kFp5: {
      const FpxFormat f = fpx_format_of(e.scheme);
      std::vector<float> scales(static_cast<size_t>(rows));
      const int64_t row_bytes = fpx_packed_row_bytes(cols, f);
      if (e.layout == QuantLayout::kTorchaoTc) {  // the packing mixes all rows: codes of the whole tensor first
        std::vector<uint8_t> codes(static_cast<size_t>(rows * cols));
        for (int64_t r0 = 0; r0 < rows; r0 += block) {
          const int64_t r1 = std::min(rows, r0 + block);
          out.error.merge(fpx_quantize_rows(w, f, r0, r1, e.dtype, codes.data() + r0 * cols, scales.data() + r0));
          rows_done(static_cast<uint64_t>(r1 - r0));
        }
        std::vector<uint8_t> packed(static_cast<size_t>(rows * row_bytes));
        fpx_pack_tc(codes.data(), rows, cols, f, packed.data());
        emit(bytes_of(packed));
      } else {
        uint8_t* packed = block_buffer<uint8_t>(std::min(block, rows) * row_bytes);
        for (int64_t r0 = 0; r0 < rows; r0 += block) {
          const int64_t r1 = std::min(rows, r0 + block);
          out.error.merge(fpx_quantize_pack_rows(w, f, r0, r1, e.dtype, packed, scales.data() + r0));
          emit(std::as_bytes(std::span<const uint8_t>(packed, static_cast<size_t>((r1 - r0) * row_bytes))));
          rows_done(static_cast<uint64_t>(r1 - r0));
        }
      }
      out.scale = scales_in_dtype(scales, e.dtype);
      break;
    }
    case QuantScheme::kInt4: {
      HqqOptions options = hqq_options;
      options.group_size = e.group_size;
      const HqqFit fit = hqq_fit(w, options);
      out.hqq_iterations = fit.iterations;
      const int64_t groups = fit.groups_per_row();
      if (e.layout == QuantLayout::kGemlite) {  // words are [in/8, out]: the whole tensor first
        std::vector<uint8_t> codes(static_cast<size_t>(std::min(block, rows) * cols));
        std::vector<uint32_t> words(static_cast<size_t>(cols / 8 * rows), 0u);
        for (int64_t r0 = 0; r0 < rows; r0 += block) {
          const int64_t r1 = std::min(rows, r0 + block);
          out.error.merge(hqq_encode_rows(w, fit, r0, r1, codes.data()));
          parallel_for(r0, r1, kPackGrainRows, [&](int64_t r) {  // each row writes its own words
            gemlite_pack_rows(codes.data() + (r - r0) * cols, r, r + 1, rows, cols, words.data());
          });
          rows_done(static_cast<uint64_t>(r1 - r0));
        }
        emit(bytes_of(words));
        std::vector<uint16_t> scale16(static_cast<size_t>(groups * rows)), offset16(scale16.size());
        for (int64_t r = 0; r < rows; ++r) {
          for (int64_t g = 0; g < groups; ++g) {
            const size_t i = static_cast<size_t>(r * groups + g);
            scale16[static_cast<size_t>(g * rows + r)] = gemlite_scale_bits(fit.scale[i]);
            offset16[static_cast<size_t>(g * rows + r)] = gemlite_offset_bits(fit.scale[i], fit.zero[i]);
          }
        }
        const auto scale_bytes = bytes_of(scale16), offset_bytes = bytes_of(offset16);
        out.scale.assign(scale_bytes.begin(), scale_bytes.end());
        out.zero.assign(offset_bytes.begin(), offset_bytes.end());
      } else {
        uint8_t* packed = block_buffer<uint8_t>(std::min(block, rows) * cols / 2);
        for (int64_t r0 = 0; r0 < rows; r0 += block) {
          const int64_t r1 = std::min(rows, r0 + block);
          out.error.merge(hqq_encode_pack_rows(w, fit, r0, r1, packed));
          emit(std::as_bytes(std::span<const uint8_t>(packed, static_cast<size_t>((r1 - r0) * cols / 2))));
          rows_done(static_cast<uint64_t>(r1 - r0));
        }
        out.scale = f32_bytes(fit.scale);
        out.zero = f32_bytes(fit.zero);
      }
      break;
    }
  }
  return out;
}

namespace {

// The output of one quantized tensor as the writer needs it: its parts, plus the hash of the packed codes.
struct QuantizedOutput {
  QuantizedMatrix parts;
  std::string sha256;
};

QuantizedOutput quantize_tensor(const FloatRows& w, const QuantizedTensorEntry& e, const HqqOptions& hqq_options,
                                const ByteSink& sink, const std::function<void(uint64_t)>& rows_done) {
  QuantizedOutput out;
  Sha256Stream hash;
  out.parts = quantize_matrix(w, e, hqq_options, [&](std::span<const std::byte> b) {
    hash.update(b);
    sink(b);
  }, rows_done);
  out.sha256 = to_hex(hash.finish());
  return out;
}

// Which output tensor a spec index is: part 0 = the packed codes (or the kept tensor), 1 = scale, 2 = zero.
struct OutputSlot {
  size_t plan_index;
  int part;
};

}  // namespace

QuantizeResult write_quantized_checkpoint(const Checkpoint& input, const std::vector<TensorPlan>& plan,
                                          const std::string& out_file, const QuantizeOptions& options) {
  QuantizeResult result;
  result.description.producer = options.producer;
  result.description.policy = options.policy;
  std::vector<TensorSpec> specs;
  std::vector<OutputSlot> slots;
  std::vector<const NamedTensor*> inputs;
  for (size_t i = 0; i < plan.size(); ++i) {
    const TensorPlan& p = plan[i];
    const NamedTensor* t = input.find(p.name);
    if (!t) throw FormatError(in_file(input.path, "tensor '" + p.name + "' is in the quantization plan but not in the file"));
    inputs.push_back(t);
    if (!p.quantize) {
      specs.push_back(TensorSpec{t->name, t->view.dtype, t->view.shape});
      slots.push_back({i, 0});
      continue;
    }
    const QuantizedTensorEntry& e = *p.quantize;
    if (e.shape != t->view.shape || e.dtype != t->view.dtype)
      throw FormatError(in_file(input.path, quoted(p.name) + " is " + std::string(dtype_name(t->view.dtype)) + " " +
                                                shape_to_string(t->view.shape) + " but the plan says " +
                                                std::string(dtype_name(e.dtype)) + " " + shape_to_string(e.shape)));
    const QuantizedParts parts = quantized_parts(e, input.path);
    specs.push_back(parts.packed);
    slots.push_back({i, 0});
    specs.push_back(parts.scale);
    slots.push_back({i, 1});
    if (parts.zero) {
      specs.push_back(*parts.zero);
      slots.push_back({i, 2});
    }
    result.description.tensors.push_back(e);
  }

  SafetensorsWriteOptions write_options;
  write_options.overwrite = options.overwrite;
  write_options.metadata = options.metadata;
  write_options.metadata[kQuantMetadataKey] = result.description.to_json().dump();

  result.tensors.resize(plan.size());
  QuantizedOutput pending;  // the scale/zero of the quantized tensor whose codes were written last
  uint64_t tensors_done = 0, bytes_done = 0;
  auto report_progress = [&] {
    if (options.progress) options.progress(tensors_done, bytes_done);
  };
  const TensorSource source = [&](size_t index, const ByteSink& sink) {
    const OutputSlot slot = slots[index];
    const TensorPlan& p = plan[slot.plan_index];
    const NamedTensor& t = *inputs[slot.plan_index];
    TensorReport& report = result.tensors[slot.plan_index];
    if (slot.part == 0) {
      report.name = p.name;
      report.bytes_in = t.view.nbytes();
      result.bytes_in += report.bytes_in;
    }
    const auto start = std::chrono::steady_clock::now();
    auto elapsed = [&] { return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count(); };
    if (!p.quantize) {
      Sha256Stream hash;
      for_each_contiguous_chunk(t.view, size_t{4} << 20, [&](std::span<const std::byte> chunk) {
        hash.update(chunk);
        sink(chunk);
        bytes_done += chunk.size();
        report_progress();
      });
      report.scheme = "keep";
      report.note = p.note;
      report.sha256 = to_hex(hash.finish());
      report.error.count = t.view.numel();
      report.bytes_out = report.bytes_in;
      report.seconds = elapsed();
      ++tensors_done;
      report_progress();
      return;
    }
    const QuantizedTensorEntry& e = *p.quantize;
    if (slot.part == 0) {
      // A strided view (a transposed tensor in a .pth) is gathered once into a contiguous copy of this one tensor.
      const TensorView view = t.view.is_contiguous()
                                  ? t.view
                                  : TensorView::contiguous(t.view.dtype, t.view.shape,
                                                           Storage::owned(to_contiguous_bytes(t.view)));
      const FloatRows w = FloatRows::from_view(view, in_file(input.path, quoted(p.name)));
      const uint64_t row_bytes = static_cast<uint64_t>(w.cols()) * dtype_element_size(w.dtype());
      pending = quantize_tensor(w, e, options.hqq, sink, [&](uint64_t rows) {
        bytes_done += rows * row_bytes;
        report_progress();
      });
      report.scheme = scheme_name(e.scheme);
      report.layout = layout_name(e.layout);
      report.error = pending.parts.error;
      report.sha256 = pending.sha256;
      report.hqq_iterations = pending.parts.hqq_iterations;
      report.note = e.note;
      report.bytes_out = specs[index].nbytes() + pending.parts.scale.size() + pending.parts.zero.size();
      report.seconds = elapsed();
      ++tensors_done;
      report_progress();
    } else if (slot.part == 1) {
      sink(pending.parts.scale);
    } else {
      sink(pending.parts.zero);
    }
  };
  if (out_file.empty()) {  // a dry run: every tensor is quantized, measured and hashed, and the bytes dropped
    for (size_t i = 0; i < specs.size(); ++i) source(i, [](std::span<const std::byte>) {});
  } else {
    write_safetensors(out_file, specs, source, write_options);
  }
  for (const TensorReport& r : result.tensors) result.bytes_out += r.bytes_out;
  return result;
}

json quantization_config_json(const QuantizationDescription& d) {
  json schemes = json::object(), tensors = json::object();
  std::set<std::string> layouts;
  std::set<int> group_sizes;
  for (const auto& e : d.tensors) {
    const std::string s(scheme_name(e.scheme));
    schemes[s] = schemes.value(s, 0) + 1;
    tensors[e.name] = s;
    layouts.insert(std::string(layout_name(e.layout)));
    if (e.scheme == QuantScheme::kInt4) group_sizes.insert(e.group_size);
  }
  json j = {{"quant_method", "hxforge"},
            {"format_version", d.format_version},
            {"policy", d.policy},
            {"schemes", schemes},
            {"layouts", json(layouts)},
            {"tensors", tensors}};
  if (!group_sizes.empty()) j["group_sizes"] = json(group_sizes);
  return j;
}

json report_json(const std::string& scheme, const QuantizeResult& result) {
  auto finite_or_null = [](double v) { return std::isfinite(v) ? json(v) : json(nullptr); };
  json tensors = json::array();
  for (const TensorReport& r : result.tensors) {
    json t = {{"name", r.name},
              {"scheme", r.scheme},
              {"max_abs_err", r.error.max_abs_error},
              {"mean_abs_err", r.error.mean_abs_error()},
              {"nmse", finite_or_null(r.error.nmse())},
              {"snr_db", finite_or_null(r.error.snr_db())},
              {"sha256", r.sha256},
              {"bytes_in", r.bytes_in},
              {"bytes_out", r.bytes_out},
              {"seconds", r.seconds}};
    if (!r.layout.empty()) t["layout"] = r.layout;
    if (r.hqq_iterations > 0) t["hqq_iterations"] = r.hqq_iterations;
    if (!r.note.empty()) t["note"] = r.note;
    tensors.push_back(std::move(t));
  }
  return {{"scheme", scheme},
          {"policy", result.description.policy},
          {"bytes_in", result.bytes_in},
          {"bytes_out", result.bytes_out},
          {"tensors", tensors}};
}

}  // namespace hx
