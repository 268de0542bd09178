// Internal interface between the matrix-product driver (gemm.cc) and its per-ISA kernels (gemm_generic.cc,
// gemm_avx512.cc). Not part of the public API.
//
// The driver owns blocking, packing of x, threading and the write-out; a kernel set owns the two hot pieces:
// packing a decoded tile of W into the micro-kernel's panel layout, and the micro-kernel itself.
//
// Panel layouts, in "cells" of 32 bits (kF32: one float = one k; kBF16: two bf16 = k pair (2p, 2p+1), even k in the
// low half, which is the operand layout of vdpbf16ps):
//   A panel (x):  [k_cells][mr]   cells of mr consecutive token rows  (packed by the driver, any ISA)
//   B panel (W):  k_cells × nr cells of nr consecutive output rows, in a layout of the kernel set's choosing
//                 (AVX-512: [k_cells][nr]; generic bf16: each cell's two halves in separate rows)
// The micro-kernel computes C[mr][nr] (row stride ldc) = (load_c ? C : 0) + A·B, k in increasing order, so a chain
// of calls over consecutive k chunks is the same sum as one call over all of k.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <memory>

#include "verify/kernels.h"

namespace hx::gemm {

struct KernelSet {
  const char* name;
  int mr;        // token rows per micro-tile (the micro-kernel handles any 1 ≤ rows ≤ mr)
  int nr;        // output features per micro-tile
  int kc_cells;  // cells per k chunk (kc_cells · k_per_cell is a multiple of WeightMatrix::kWeightTileColAlign)
  bool bf16;     // cells are bf16 pairs (else f32)

  // Transposes a decoded tile — `rows` ≤ nr rows of `k_cells` cells, row stride `tile_stride` cells (float or
  // uint16 pairs) — into one B panel (k_cells × nr cells); rows ≥ `rows` become zeros.
  void (*pack_b)(const void* tile, int64_t tile_stride, int rows, int64_t k_cells, void* panel);
  // C[rows][nr] = (load_c ? C : 0) + A[k_cells][rows] · B[k_cells][nr]; A rows are packed with stride `rows`.
  void (*micro_kernel)(int64_t k_cells, const void* a_panel, const void* b_panel, float* c, int64_t ldc, bool load_c,
                       int rows);
  // Packs a full tile of mr rows of n f32 activations (row stride x_stride) into its A panel: [cells][mr rows],
  // a cell one f32, or in bf16 sets a bf16 pair rounded as formats/float_convert.h's f32_to_bf16 (odd n: the last
  // pair's high half zero). Null where the caller's scalar loop does it; scalar packing was 30-45 % of a product
  // with few outputs (the k/v projections).
  void (*pack_a_tile)(const float* x, int64_t x_stride, int64_t n, uint32_t* panel);
};

const KernelSet& generic_kernels(bool bf16);
const KernelSet& avx512_kernels(bool bf16);  // only valid when cpu_supports(kAvx512) (and bf16 dot for bf16)

// Fast decoders of dense rows used by DenseWeights on the AVX-512 path; false when `dtype` has none (then the
// caller decodes portably). Bit-identical to formats/float_convert.h's conversions (NaN payloads aside).
bool avx512_decode_row_f32(DType dtype, const std::byte* src, int64_t n, float* dst);
bool avx512_decode_row_bf16(DType dtype, const std::byte* src, int64_t n, uint16_t* dst);

// 64-byte aligned scratch memory that only grows (one per thread, reused across calls).
class ScratchBuffer {
 public:
  void* get(size_t bytes) {
    if (bytes > capacity_) {
      capacity_ = (bytes + 4095) & ~size_t{4095};
      memory_.reset(static_cast<std::byte*>(std::aligned_alloc(64, capacity_)));
      if (!memory_) throw std::bad_alloc();
    }
    return memory_.get();
  }

 private:
  struct Free {
    void operator()(std::byte* p) const { std::free(p); }
  };
  std::unique_ptr<std::byte, Free> memory_;
  size_t capacity_ = 0;
};

}  // namespace hx::gemm
