// Internal interface between the attention driver (attention.cc) and its per-ISA kernels (the portable ones in
// attention.cc, attention_avx512.cc). Not part of the public API.
//
// A work item is one query head × a block of up to kQueryLanes queries. The driver transposes the block's queries
// into `qt` [head_dim][kQueryLanes] (lane = query of the block, unused lanes zero), so that a vector of lanes holds
// one dimension of every query; scores and probabilities live in [keys][kQueryLanes], one row per key.
// Both kernel families compute every output as the same chain of IEEE operations (each product rounded, then added,
// in the order stated), so the portable and AVX-512 paths agree bit for bit and a query's result does not depend on
// which other queries share its block.
#pragma once

#include <cstdint>

namespace hx::attention {

constexpr int kQueryLanes = 16;  // queries per block: one zmm of f32 lanes

// s[j][lane] = Σ_{i = 0..d-1} qt[i][lane] · k[j][i]   (s = 0; s = s + product, i increasing), for j < keys.
using ScoresKernel = void (*)(const float* qt, const float* k, int64_t k_stride, int64_t keys, int64_t d, float* s);
// out[lane][i] = Σ_{j = begin[lane] .. end[lane]-1} p[j][lane] · v[j][i]   (from 0.0f, j increasing), for lane < rows;
// out rows are out_stride floats apart.
using ValuesKernel = void (*)(const float* p, int rows, const int64_t* begin, const int64_t* end, const float* v,
                              int64_t v_stride, int64_t d, float* out, int64_t out_stride);

// With f32 activations, scores → probabilities in place for lanes < rows, lane over its keys [begin, end):
// s = s · scale; p = exp(s - max) / Σ exp(s - max) with vector_exp.h's exp, the sum in increasing key order.
using SoftmaxKernel = void (*)(float* s, int rows, const int64_t* begin, const int64_t* end, float scale);

struct KernelSet {
  ScoresKernel scores;
  SoftmaxKernel softmax;
  ValuesKernel values;
};

const KernelSet& avx512_kernels();  // only valid when cpu_supports(CpuIsa::kAvx512)

}  // namespace hx::attention
