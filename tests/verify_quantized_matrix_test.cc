// Quantized tensors in the forward pass (quant/quantized_rows.h, verify/quantized_matrix.h): for every scheme and
// layout, a tensor written by the quantizer and read back decodes — in any tile, through the forward pass's weight
// factory, and inside the matrix product — to exactly the codec's dequantized values.
#include <gtest/gtest.h>

#include <cmath>
#include <random>

#include "formats/errors.h"
#include "quant/hqq.h"
#include "quant/int8.h"
#include "quant/quantized_checkpoint.h"
#include "quant/quantized_rows.h"
#include "tests/quant_test_helpers.h"
#include "verify/model_weights.h"
#include "verify/quantized_matrix.h"

namespace hx {
namespace {

using test::run_hxforge;
using test::shell_quote;
using test::TempDir;

struct Encoding {
  const char* name;
  QuantScheme scheme;
  QuantLayout layout;
  int group_size;
  Fp8ScaleMode fp8_scale;
};
const Encoding kEncodings[] = {
    {"int8", QuantScheme::kInt8, QuantLayout::kPortable, 0, Fp8ScaleMode::kPerRow},
    {"fp8_row", QuantScheme::kFp8, QuantLayout::kPortable, 0, Fp8ScaleMode::kPerRow},
    {"fp8_tensor", QuantScheme::kFp8, QuantLayout::kPortable, 0, Fp8ScaleMode::kPerTensor},
    {"fp6", QuantScheme::kFp6, QuantLayout::kPortable, 0, Fp8ScaleMode::kPerRow},
    {"fp6_tc", QuantScheme::kFp6, QuantLayout::kTorchaoTc, 0, Fp8ScaleMode::kPerRow},
    {"fp5", QuantScheme::kFp5, QuantLayout::kPortable, 0, Fp8ScaleMode::kPerRow},
    {"fp5_tc", QuantScheme::kFp5, QuantLayout::kTorchaoTc, 0, Fp8ScaleMode::kPerRow},
    {"int4_g64", QuantScheme::kInt4, QuantLayout::kPortable, 64, Fp8ScaleMode::kPerRow},
    {"int4_g128", QuantScheme::kInt4, QuantLayout::kPortable, 128, Fp8ScaleMode::kPerRow},
    {"int4_g32_gemlite", QuantScheme::kInt4, QuantLayout::kGemlite, 32, Fp8ScaleMode::kPerRow},
};

void PrintTo(const Encoding& e, std::ostream* os) { *os << e.name; }

constexpr int64_t kRows = 128, kCols = 384;

// A checkpoint with a quantized "w" and a plain [4, 64] F32 "b", written by the quantizer and opened again.
struct Written {
  TempDir dir;
  Checkpoint checkpoint;
  QuantizedTensorEntry entry;
  std::vector<float> original;
};

std::unique_ptr<Written> write_one(const Encoding& enc, DType dtype) {
  auto out = std::make_unique<Written>();
  out->original = quant_test::hard_matrix(kRows, kCols, 77);
  std::vector<std::byte> w_bytes(out->original.size() * dtype_element_size(dtype));
  convert_from_f32(dtype, out->original.data(), w_bytes.data(), out->original.size());
  convert_to_f32(dtype, w_bytes.data(), out->original.data(), out->original.size());  // what the file holds
  const std::vector<float> plain(4 * 64, 0.25f);
  const std::string input = out->dir.file("in.safetensors");
  write_safetensors(input, {TensorSpec{"b", DType::kF32, {4, 64}}, TensorSpec{"w", dtype, {kRows, kCols}}},
                    [&](size_t i, const ByteSink& sink) {
                      if (i == 0)
                        sink(std::as_bytes(std::span<const float>(plain)));
                      else
                        sink(w_bytes);
                    });
  const Checkpoint in = read_safetensors_file(input);
  QuantizedTensorEntry e;
  e.name = "w";
  e.scheme = enc.scheme;
  e.layout = enc.layout;
  e.group_size = enc.group_size;
  e.fp8_scale = enc.fp8_scale;
  e.shape = {kRows, kCols};
  e.dtype = dtype;
  const std::string path = out->dir.file("q.safetensors");
  write_quantized_checkpoint(in, {TensorPlan{"b", std::nullopt, ""}, TensorPlan{"w", e, ""}}, path, QuantizeOptions{});
  out->checkpoint = read_safetensors_file(path);
  const auto description = read_quantization(out->checkpoint);
  EXPECT_TRUE(description.has_value());
  out->entry = *description->find("w");
  return out;
}

std::vector<float> decode_tile(const WeightMatrix& m, int64_t r0, int64_t r1, int64_t c0, int64_t c1) {
  std::vector<float> tile(static_cast<size_t>((r1 - r0) * (c1 - c0)), NAN);
  m.decode_f32(r0, r1, c0, c1, tile.data(), c1 - c0);
  return tile;
}

class QuantizedWeights : public ::testing::TestWithParam<Encoding> {};

TEST_P(QuantizedWeights, EveryTileDecodesToTheCodecsDequantizedValues) {
  for (DType dtype : {DType::kBF16, DType::kF16}) {
    const auto written = write_one(GetParam(), dtype);
    const std::vector<float> want = dequantize_tensor(written->checkpoint, written->entry);
    const QuantizedWeightMatrix matrix{QuantizedRows(written->checkpoint, written->entry)};
    ASSERT_EQ(matrix.rows(), kRows);
    ASSERT_EQ(matrix.cols(), kCols);
    // The matrix product's tiles (64 rows, columns from multiples of 128), the whole matrix, and ragged ranges.
    const int64_t ranges[][4] = {{0, 64, 0, 128},  {64, 128, 256, 384}, {0, kRows, 0, kCols}, {3, 70, 8, 200},
                                 {127, 128, 1, 2}, {10, 11, 383, 384},  {5, 9, 100, 131}};
    quant_test::for_each_isa([&] {
      for (const auto& range : ranges) {
        const std::vector<float> tile = decode_tile(matrix, range[0], range[1], range[2], range[3]);
        for (int64_t r = range[0]; r < range[1]; ++r) {
          for (int64_t c = range[2]; c < range[3]; ++c) {
            const float got = tile[static_cast<size_t>((r - range[0]) * (range[3] - range[2]) + (c - range[2]))];
            ASSERT_EQ(std::bit_cast<uint32_t>(got), std::bit_cast<uint32_t>(want[static_cast<size_t>(r * kCols + c)]))
                << matrix.describe() << " at (" << r << ", " << c << "), tile " << range[0] << ":" << range[1] << " x "
                << range[2] << ":" << range[3];
          }
        }
      }
    });
    // And the dequantized values are close to the original (a loose sanity bound; quant_checkpoint_test has the
    // per-scheme error limits).
    double err = 0, ref = 0;
    for (size_t i = 0; i < want.size(); ++i) {
      err += (want[i] - written->original[i]) * (want[i] - written->original[i]);
      ref += written->original[i] * written->original[i];
    }
    EXPECT_LT(err / ref, 0.05) << matrix.describe();
  }
}

TEST_P(QuantizedWeights, TheForwardPassFactoryFindsThemAndTheProductMatchesDenseWeights) {
  const auto written = write_one(GetParam(), DType::kBF16);
  const auto w = make_weight(written->checkpoint, "w", WeightLayout::kOutIn, {kRows, kCols});
  EXPECT_EQ(w->describe().rfind(scheme_name(GetParam().scheme), 0), 0u) << w->describe();
  EXPECT_THROW(make_weight(written->checkpoint, "w", WeightLayout::kOutIn, {kRows, kCols + 128}), FormatError);
  // y = x·Wᵀ through the quantized matrix equals the product with the dequantized matrix stored densely.
  const std::vector<float> dequantized = dequantize_tensor(written->checkpoint, written->entry);
  const DenseWeights dense(DType::kF32, dequantized.data(), kRows, kCols);
  std::mt19937 rng(3);
  std::normal_distribution<float> normal;
  const int64_t tokens = 5;
  std::vector<float> x(static_cast<size_t>(tokens * kCols));
  for (auto& v : x) v = normal(rng);
  std::vector<float> y_quant(static_cast<size_t>(tokens * kRows)), y_dense(y_quant.size());
  matmul(x.data(), tokens, *w, y_quant.data());
  matmul(x.data(), tokens, dense, y_dense.data());
  EXPECT_EQ(y_quant, y_dense);
}

INSTANTIATE_TEST_SUITE_P(Encodings, QuantizedWeights, ::testing::ValuesIn(kEncodings),
                         [](const auto& param_info) { return std::string(param_info.param.name); });

// The codec's dequantized values of an original tensor, computed from the codec APIs alone (not from the file).
std::vector<float> codec_dequantized(const TensorView& original, const QuantizedTensorEntry& e) {
  const FloatRows w = FloatRows::from_view(original, e.name);
  const int64_t rows = w.rows(), cols = w.cols();
  std::vector<float> out(static_cast<size_t>(rows * cols));
  std::vector<float> scales(static_cast<size_t>(rows));
  switch (e.scheme) {
    case QuantScheme::kInt8: {
      std::vector<int8_t> q(out.size());
      int8_quantize_rows(w, 0, rows, q.data(), scales.data());
      for (size_t i = 0; i < out.size(); ++i) out[i] = int8_decode(q[i], scales[i / static_cast<size_t>(cols)]);
      break;
    }
    case QuantScheme::kFp8: {
      std::vector<uint8_t> q(out.size());
      const bool per_row = e.fp8_scale == Fp8ScaleMode::kPerRow;
      const float tensor_scale = per_row ? 0.0f : fp8_scale_for_amax(fp8_tensor_amax(w));
      fp8_quantize_rows(w, 0, rows, e.fp8_scale, tensor_scale, q.data(), scales.data());
      for (size_t i = 0; i < out.size(); ++i)
        out[i] = fp8_decode(q[i], per_row ? scales[i / static_cast<size_t>(cols)] : tensor_scale);
      break;
    }
    case QuantScheme::kFp6:
    case QuantScheme::kFp5: {
      const FpxFormat f = fpx_format_of(e.scheme);
      std::vector<uint8_t> q(out.size());
      fpx_quantize_rows(w, f, 0, rows, e.dtype, q.data(), scales.data());
      for (size_t i = 0; i < out.size(); ++i)
        out[i] = fpx_code_value(q[i], f) * fpx_stored_scale(scales[i / static_cast<size_t>(cols)], e.dtype);
      break;
    }
    case QuantScheme::kInt4: {
      HqqOptions options;
      options.group_size = e.group_size;
      const HqqFit fit = hqq_fit(w, options);
      std::vector<uint8_t> q(out.size());
      hqq_encode_rows(w, fit, 0, rows, q.data());
      for (size_t i = 0; i < out.size(); ++i) {
        const size_t g = i / static_cast<size_t>(cols) * static_cast<size_t>(fit.groups_per_row()) +
                         (i % static_cast<size_t>(cols)) / static_cast<size_t>(e.group_size);
        out[i] = e.layout == QuantLayout::kGemlite
                     ? static_cast<float>(q[i]) * f16_to_f32(gemlite_scale_bits(fit.scale[g])) +
                           f16_to_f32(gemlite_offset_bits(fit.scale[g], fit.zero[g]))
                     : hqq_decode(q[i], fit.scale[g], fit.zero[g]);
      }
      break;
    }
  }
  return out;
}

// A whole synthetic model quantized by the CLI: every described tensor decodes, through the forward pass's
// factory, to exactly what the codecs make of the original weights.
TEST(QuantizedWeightsOfAModel, EveryMatrixDecodesToTheCodecsValuesOfTheOriginal) {
  TempDir dir;
  ASSERT_EQ(
      run_hxforge("synth --quiet --arch hxa079 --preset tiny --realistic --seed 2 --out " + shell_quote(dir.file("m")))
          .exit_code,
      0);
  const Checkpoint original = open_checkpoint(dir.file("m"));
  for (const char* args :
       {"--scheme int8", "--scheme fp8", "--scheme fp8 --fp8-scale tensor", "--scheme fp6",
        "--scheme fp5 --layout torchao-tc", "--scheme int4", "--scheme int4 --layout gemlite --group-size 128"}) {
    SCOPED_TRACE(args);
    const std::string out = dir.file("q");
    const auto r = run_hxforge("quantize --quiet --force " + shell_quote(dir.file("m")) + " " + args + " --out " +
                               shell_quote(out));
    ASSERT_EQ(r.exit_code, 0) << r.output;
    const Checkpoint q = open_checkpoint(out);
    const auto description = read_quantization(q);
    ASSERT_TRUE(description.has_value());
    ASSERT_GT(description->tensors.size(), 20u);
    for (const QuantizedTensorEntry& e : description->tensors) {
      const std::vector<float> want = codec_dequantized(original.find(e.name)->view, e);
      ASSERT_EQ(dequantize_tensor(q, e), want) << e.name;
      const auto matrix = make_weight(q, e.name, WeightLayout::kOutIn, e.shape);
      ASSERT_EQ(decode_tile(*matrix, 0, e.shape[0], 0, e.shape[1]), want) << e.name << " " << matrix->describe();
    }
  }
}

TEST(QuantizedWeightsFactory, PlainTensorsOfAQuantizedFileStayDense) {
  const auto written = write_one(kEncodings[0], DType::kBF16);
  // "b" is not described: the factory passes, and the plain path reads it.
  const auto b = make_weight(written->checkpoint, "b", WeightLayout::kOutIn, {4, 64});
  EXPECT_NE(b->describe().find("F32"), std::string::npos) << b->describe();
}

}  // namespace
}  // namespace hx
