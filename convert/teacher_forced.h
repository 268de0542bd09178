// Teacher-forced layer checks of a freshly converted student (part of `hxforge convert`'s verification).
//
// Every layer of the student is fed the teacher's own residual stream for the probe tokens (Model::forward_layer),
// next to the teacher's layer on the same input, so each layer is judged alone — an error in one layer cannot hide in,
// or leak into, the next:
//   kept       the student layer is the teacher's layer (same kind, same tensors): its output must equal the
//              teacher's bit for bit (same kernels, same weights; within kCastLayerTolerance when a --dtype cast
//              rounded its weights);
//   nope       an hxa079 GQA layer: the teacher's weights copied, the rotation removed. RoPE is the identity at
//              position 0, so the first position's output must be exact; later positions differ by design and only
//              their cosine is reported;
//   converted  the attention became RWKV-7 (+TICA): the mixer output is compared with the teacher attention output
//              it replaces — cosine reported, informative only (an untrained student is not meant to match). In an
//              RWKV-7 + TICA layer whose TICA output projection the layout initialises to zeros (a fresh hxa07i),
//              TICA must add exactly 0: the mixer output equals the RWKV-7 part bit for bit.
// Also checked: the teacher run layer by layer reproduces its own forward() hidden states exactly (one code path).
// A failure means the student computes something other than its teacher where it must not: verification failed,
// exit 1 (the teacher itself is valid input, so this is not exit 3).
// Non-goals: judging converted layers (distillation's job); long sequences (the probe is a few tokens).
#pragma once

#include <cstdint>
#include <nlohmann/json.hpp>
#include <span>
#include <string>
#include <vector>

#include "convert/plan.h"
#include "convert/student_checks.h"
#include "verify/forward.h"

namespace hx {

// A bf16 rounding of a weight moves it by ≤ 2^-9 relative; through a norm, a mixer and an MLP the layer output moves
// by a few times that, so 1 % of the layer's largest activation is a loose bound that a wrong tensor still breaks.
inline constexpr double kCastLayerTolerance = 1e-2;

enum class LayerRole : uint8_t { kKept, kNoPE, kConverted };
const char* layer_role_name(LayerRole role);  // "kept", "nope", "converted"

struct LayerComparison {
  int layer = 0;
  LayerRole role = LayerRole::kKept;
  std::string teacher_kind, student_kind;  // layer_kind_name
  bool verbatim = true;                    // every tensor of the layer was copied byte for byte
  int64_t exact_positions = 0;             // positions whose output must equal the teacher's (kept: all; nope: 1)
  double max_abs_diff = 0;                 // over those positions
  double tolerance = 0;                    // allowed max_abs_diff (0 = bit for bit)
  double output_cosine = 0;                // layer output vs the teacher's, all positions
  double mixer_cosine = 0;                 // mixer output vs the teacher attention output, all positions
  double tica_max_abs = -1;                // RWKV-7 + TICA layers: the largest |TICA contribution|; -1: no TICA
  bool tica_must_be_zero = false;          // its output projection was initialised to zeros
  bool passed = true;
  nlohmann::json to_json() const;
};

// Runs teacher and student layer by layer from the teacher's embedding (and Gemma per-layer inputs) of `teacher_run`
// (a forward() of `teacher` on `tokens` with collect_hidden and collect_ple_inputs, in `options.compute`).
// Fills `layers` (one entry per layer) and returns the "teacher_forced" check.
CheckResult check_teacher_forced(const Model& student, const Model& teacher, const ConversionPlan& plan,
                                 const ForwardResult& teacher_run, const ForwardOptions& options,
                                 std::vector<LayerComparison>* layers);

// Cosine similarity of two equally long vectors, in double; 1 when both are zero, 0 when one is.
double cosine_similarity(std::span<const float> a, std::span<const float> b);

}  // namespace hx
