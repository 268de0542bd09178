// The matrix-product driver: y (=|+=) x · Wᵀ with W decoded tile by tile.
//
// Loop nest (Goto-style, with the roles of the operands fixed by the layout y[T][N] = x[T][K] · W[N][K]ᵀ):
//   for each block of kRowsPerBlock token rows:                      (serial)
//     pack x rows into A panels for every k chunk                    (shared, read-only afterwards)
//     parallel_for over blocks of kPanelsPerBlock·nr output features:
//       for each k chunk (kc_cells cells):
//         for each nr-wide panel of W: decode the W tile, pack it into a B panel (stays in L1),
//           for each mr-row A panel (from L2): micro-kernel into the block's C buffer (load_c after chunk 0),
//             interleaved with prefetches of the next W tile
//       write the C buffer to y (= or +=)
// Every output element is one chain over k = 0..K-1 in order (chunks continue the chain through the C buffer),
// so neither the thread count, nor the blocking, nor the number of tokens changes a bit of the result.
// matmul_many runs several products of one x (Q/K/V, gate/up) as one call: x is packed once and the blocks of all the
// weight matrices share one parallel loop (one fork/join instead of three, and small matrices like K and V of a GQA
// layer no longer leave a thread idle at the end of their own loop).
#include <algorithm>
#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#include "formats/errors.h"
#include "formats/float_convert.h"
#include "formats/parallel.h"
#include "verify/gemm_internal.h"
#include "verify/kernels.h"

namespace hx {
namespace {

constexpr int64_t kRowsPerBlock = 256;     // token rows packed at once: rows·K·4 bytes of A (4 MiB for K = 4096)
constexpr int64_t kPanelsPerBlock = 2;     // nr-wide panels per parallel work item (1 when that leaves too few items)
constexpr int64_t kBlocksPerThread = 4;    // work items per thread below which blocks shrink to one panel
constexpr int64_t kLongChunkCells = 2048;  // k chunk when the tokens fit one micro-tile: tile + panel ≤ 768 KiB (L2)

int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

const gemm::KernelSet& choose_kernels(bool bf16) {
  if (active_cpu_isa() == CpuIsa::kAvx512 && (!bf16 || cpu_supports_bf16_dot())) return gemm::avx512_kernels(bf16);
  return gemm::generic_kernels(bf16);
}

// Geometry of one call, shared by the packing and the blocks.
struct Plan {
  const gemm::KernelSet* ks;
  int64_t tokens, k_in;
  int64_t k_per_cell;  // 1 (f32) or 2 (bf16 pairs)
  int64_t kc_cells;
  int64_t chunk_k;  // k values per chunk
  int64_t chunks;
  int64_t block_cols;  // output features per parallel work item

  int64_t chunk_begin(int64_t c) const { return c * chunk_k; }
  int64_t chunk_end(int64_t c) const { return std::min(k_in, (c + 1) * chunk_k); }
  int64_t chunk_cells(int64_t c) const { return ceil_div(chunk_end(c) - chunk_begin(c), k_per_cell); }
};

// One product of the call: its weights, its output and its share of the parallel work items.
struct Target {
  const WeightMatrix* w;
  float* y;
  int64_t y_stride;
  int64_t n_out;
  int64_t first_block, blocks;
};

// A panels of rows [m0, m0 + rows) for chunk c, laid out tile after tile: tile i (rows i·mr …) is [cells][tile rows].
void pack_a_chunk(const Plan& plan, const float* x, int64_t x_stride, int64_t m0, int64_t rows, int64_t c, void* slot) {
  const int64_t mr = plan.ks->mr;
  const int64_t k0 = plan.chunk_begin(c), k1 = plan.chunk_end(c), cells = plan.chunk_cells(c);
  for (int64_t tile0 = 0; tile0 < rows; tile0 += mr) {
    const int64_t tile_rows = std::min(mr, rows - tile0);
    const int64_t offset = tile0 * cells;  // in cells
    const int64_t tile_cells = plan.ks->bf16 ? (k1 - k0 + 1) / 2 : k1 - k0;
    if (plan.ks->pack_a_tile && tile_rows == mr && tile_cells == cells) {
      plan.ks->pack_a_tile(x + (m0 + tile0) * x_stride + k0, x_stride, k1 - k0, static_cast<uint32_t*>(slot) + offset);
      continue;
    }
    if (plan.ks->bf16) {
      // Round the tile's row segments in contiguous (vectorisable) passes, then write the panel cell by cell, each
      // cell's rows as consecutive 32-bit pairs (sequential stores, a few sequential read streams).
      thread_local std::vector<uint32_t> rounded;  // [tile_rows][cells]: bf16 pairs, even k in the low half
      rounded.resize(static_cast<size_t>(tile_rows * cells));
      for (int64_t m = 0; m < tile_rows; ++m) {
        const float* src = x + (m0 + tile0 + m) * x_stride + k0;
        uint32_t* row = rounded.data() + m * cells;
        const int64_t pairs = (k1 - k0) / 2;
        for (int64_t cell = 0; cell < pairs; ++cell) {
          row[cell] = f32_to_bf16(src[2 * cell]) | static_cast<uint32_t>(f32_to_bf16(src[2 * cell + 1])) << 16;
        }
        if (pairs < cells) row[pairs] = f32_to_bf16(src[2 * pairs]);  // odd K: the last pair's high half is zero
      }
      uint32_t* dst = static_cast<uint32_t*>(slot) + offset;
      for (int64_t cell = 0; cell < cells; ++cell) {
        const uint32_t* column = rounded.data() + cell;
        for (int64_t m = 0; m < tile_rows; ++m) dst[cell * tile_rows + m] = column[m * cells];
      }
      continue;
    }
    float* dst = static_cast<float*>(slot) + offset;
    for (int64_t m = 0; m < tile_rows; ++m) {
      const float* src = x + (m0 + tile0 + m) * x_stride;
      for (int64_t cell = 0; cell < cells; ++cell) dst[cell * tile_rows + m] = src[k0 + cell];
    }
  }
}

void run_block(const Plan& plan, const Target& target, const std::byte* a_packed, int64_t a_slot_cells, int64_t m0,
               int64_t rows, int64_t block, bool accumulate) {
  const gemm::KernelSet& ks = *plan.ks;
  const WeightMatrix& w = *target.w;
  float* y = target.y;
  const int64_t y_stride = target.y_stride;
  const int64_t n0 = block * plan.block_cols;
  const int64_t cols = std::min(plan.block_cols, target.n_out - n0);
  const int64_t panels = ceil_div(cols, ks.nr);
  const int64_t ldc = plan.block_cols;
  const int64_t max_cells = plan.kc_cells;

  thread_local gemm::ScratchBuffer tile_buffer, panel_buffer, c_buffer;
  void* tile = tile_buffer.get(static_cast<size_t>(ks.nr * max_cells) * 4);
  void* panel = panel_buffer.get(static_cast<size_t>(max_cells * ks.nr) * 4);
  float* c_tile = static_cast<float*>(c_buffer.get(static_cast<size_t>(rows * ldc) * sizeof(float)));

  // Tiles of W in the order they are decoded: chunk by chunk, panel by panel.
  struct Tile {
    int64_t r0, r1, k0, k1;
  };
  const int64_t tiles = plan.chunks * panels;
  const auto tile_at = [&](int64_t i) {
    const int64_t c = i / panels, p = i % panels;
    return Tile{n0 + p * ks.nr, std::min(n0 + cols, n0 + (p + 1) * ks.nr), plan.chunk_begin(c), plan.chunk_end(c)};
  };
  const int64_t m_tiles = ceil_div(rows, ks.mr);
  for (int64_t i = 0; i < tiles; ++i) {
    const int64_t c = i / panels, p = i % panels;
    const Tile tile_now = tile_at(i);
    const int64_t cells = plan.chunk_cells(c);
    const std::byte* a_chunk = a_packed + static_cast<size_t>(c * a_slot_cells) * 4;
    const Tile ahead = i + 1 < tiles ? tile_at(i + 1) : Tile{0, 0, 0, 0};
    const int64_t tile_rows_now = tile_now.r1 - tile_now.r0;
    int64_t stored_stride = 0;  // in bytes
    const std::byte* stored =
        w.stored_rows(ks.bf16 ? DType::kBF16 : DType::kF32, tile_now.r0, tile_now.k0, &stored_stride);
    const bool whole_cells = stored_stride % 4 == 0 && reinterpret_cast<uintptr_t>(stored) % 4 == 0 &&
                             (tile_now.k1 - tile_now.k0) % plan.k_per_cell == 0;
    if (stored && whole_cells) {
      // Already in the compute format (and in whole cells): pack straight from the weights, no decoded copy.
      ks.pack_b(stored, stored_stride / 4, static_cast<int>(tile_rows_now), cells, panel);
    } else if (ks.bf16) {
      auto* t = static_cast<uint16_t*>(tile);
      w.decode_bf16(tile_now.r0, tile_now.r1, tile_now.k0, tile_now.k1, t, 2 * max_cells);
      if ((tile_now.k1 - tile_now.k0) % 2 != 0) {  // odd K: the last pair's high half is zero, as in the A panel
        for (int64_t r = 0; r < tile_rows_now; ++r) {
          t[r * 2 * max_cells + (tile_now.k1 - tile_now.k0)] = 0;
        }
      }
      ks.pack_b(tile, max_cells, static_cast<int>(tile_rows_now), cells, panel);
    } else {
      w.decode_f32(tile_now.r0, tile_now.r1, tile_now.k0, tile_now.k1, static_cast<float*>(tile), max_cells);
      ks.pack_b(tile, max_cells, static_cast<int>(tile_rows_now), cells, panel);
    }
    // Prefetch the next tile a few rows per micro-kernel call, so its bytes arrive while this tile is computed
    // (measured at T = 256: +10 %; one burst of all its prefetches before the calls gained only +3 %).
    const int64_t prefetch_rows = ceil_div(ahead.r1 - ahead.r0, m_tiles);
    for (int64_t m = 0; m < m_tiles; ++m) {
      const int64_t tile0 = m * ks.mr;
      const int tile_rows = static_cast<int>(std::min<int64_t>(ks.mr, rows - tile0));
      const int64_t from = ahead.r0 + m * prefetch_rows;
      if (from < ahead.r1) w.prefetch(from, std::min(ahead.r1, from + prefetch_rows), ahead.k0, ahead.k1);
      ks.micro_kernel(cells, a_chunk + static_cast<size_t>(tile0 * cells) * 4, panel, c_tile + tile0 * ldc + p * ks.nr,
                      ldc, c > 0, tile_rows);
    }
  }
  for (int64_t m = 0; m < rows; ++m) {
    float* out = y + (m0 + m) * y_stride + n0;
    const float* in = c_tile + m * ldc;
    if (accumulate) {
      for (int64_t n = 0; n < cols; ++n) out[n] += in[n];
    } else {
      std::memcpy(out, in, static_cast<size_t>(cols) * sizeof(float));
    }
  }
}

}  // namespace

void matmul(const float* x, int64_t tokens, int64_t x_stride, const WeightMatrix& w, float* y, int64_t y_stride,
            const MatmulOptions& options) {
  const MatmulOutput output{&w, y, y_stride};
  matmul_many(x, tokens, x_stride, std::span<const MatmulOutput>(&output, 1), options);
}

void matmul_many(const float* x, int64_t tokens, int64_t x_stride, std::span<const MatmulOutput> outputs,
                 const MatmulOptions& options) {
  if (outputs.empty()) return;
  const int64_t k_in = outputs[0].w->cols();
  for (const MatmulOutput& o : outputs) {
    if (tokens < 0 || x_stride < k_in || o.y_stride < o.w->rows() || o.w->cols() != k_in) {
      throw UsageError("matmul with " + o.w->describe() + ": bad tokens " + std::to_string(tokens) +
                       ", strides (x " + std::to_string(x_stride) + ", y " + std::to_string(o.y_stride) +
                       ") or input width (" + std::to_string(o.w->cols()) + " next to " + std::to_string(k_in) + ")");
    }
  }
  if (tokens == 0) return;
  if (k_in == 0) {  // empty sums
    if (!options.accumulate) {
      for (const MatmulOutput& o : outputs) {
        for (int64_t t = 0; t < tokens; ++t) std::fill_n(o.y + t * o.y_stride, o.w->rows(), 0.0f);
      }
    }
    return;
  }

  Plan plan{};
  plan.ks = &choose_kernels(options.compute == MatmulCompute::kBF16);
  plan.tokens = tokens;
  plan.k_in = k_in;
  plan.k_per_cell = plan.ks->bf16 ? 2 : 1;
  plan.kc_cells = plan.ks->kc_cells;
  if (tokens <= plan.ks->mr) {
    // One micro-tile of tokens uses each B panel once, so it need not stay in L1: long chunks read every weight row
    // as one long run, which memory streams much better than many short pieces (decode steps, T = 1).
    const int64_t whole_row = ceil_div(ceil_div(k_in, plan.k_per_cell), plan.ks->kc_cells) * plan.ks->kc_cells;
    plan.kc_cells = std::min(whole_row, kLongChunkCells);
  }
  plan.chunk_k = plan.kc_cells * plan.k_per_cell;
  plan.chunks = ceil_div(k_in, plan.chunk_k);
  int64_t panels = 0;
  for (const MatmulOutput& o : outputs) panels += ceil_div(o.w->rows(), plan.ks->nr);
  plan.block_cols = (panels >= kPanelsPerBlock * kBlocksPerThread * max_threads() ? kPanelsPerBlock : 1) * plan.ks->nr;
  std::vector<Target> targets;
  int64_t blocks = 0;
  for (const MatmulOutput& o : outputs) {
    if (o.w->rows() == 0) continue;
    targets.push_back(Target{o.w, o.y, o.y_stride, o.w->rows(), blocks, ceil_div(o.w->rows(), plan.block_cols)});
    blocks += targets.back().blocks;
  }
  if (blocks == 0) return;

  const int64_t rows_per_block = std::max<int64_t>(plan.ks->mr, kRowsPerBlock / plan.ks->mr * plan.ks->mr);
  thread_local gemm::ScratchBuffer a_buffer;
  for (int64_t m0 = 0; m0 < tokens; m0 += rows_per_block) {
    const int64_t rows = std::min(rows_per_block, tokens - m0);
    const int64_t slot_cells = rows * plan.kc_cells;  // each chunk's A panels, in 32-bit cells
    auto* a_packed = static_cast<std::byte*>(a_buffer.get(static_cast<size_t>(plan.chunks * slot_cells) * 4));
    parallel_for(0, plan.chunks, 4, [&](int64_t c) {
      pack_a_chunk(plan, x, x_stride, m0, rows, c, a_packed + static_cast<size_t>(c * slot_cells) * 4);
    });
    // Dynamic scheduling: which thread computes a block never changes its bits, and on a shared machine a
    // descheduled thread should not hold back half of the blocks.
    // (A decoder may throw: a corrupt quantised tensor, no memory; parallel_for_dynamic rethrows it here.)
    parallel_for_dynamic(0, blocks, [&](int64_t block) {
      size_t i = 0;
      while (block >= targets[i].first_block + targets[i].blocks) ++i;
      run_block(plan, targets[i], a_packed, slot_cells, m0, rows, block - targets[i].first_block, options.accumulate);
    });
  }
}

void add_bias(float* y, int64_t tokens, int64_t dim, const float* bias) {
  for (int64_t t = 0; t < tokens; ++t) {
    for (int64_t n = 0; n < dim; ++n) y[t * dim + n] += bias[n];
  }
}

}  // namespace hx
