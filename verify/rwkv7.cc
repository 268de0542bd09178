// The RWKV-7 WKV recurrence (hxa079 / hxa07i) and the element-wise pieces around it.
//
// The state of a head is N×N floats in the fla layout S[i][j] (i = key, j = value), row-major, so every inner loop
// runs over j with unit stride (vectorisable) while sums over i stay in increasing order (deterministic).
#include <algorithm>
#include <cmath>
#include <string>
#include <vector>

#include "formats/errors.h"
#include "formats/parallel.h"
#include "verify/kernels.h"

namespace hx {

void rwkv7_recurrence(const Rwkv7Inputs& in, int64_t tokens, int64_t heads, int64_t head_dim, float* state, float* y) {
  if (tokens < 0 || heads <= 0 || head_dim <= 0) {
    throw UsageError("rwkv7_recurrence: bad shape (tokens " + std::to_string(tokens) + ", heads " +
                     std::to_string(heads) + ", head_dim " + std::to_string(head_dim) + ")");
  }
  if (!in.r || !in.decay || !in.k || !in.v || !in.remove || !in.replace) {
    throw UsageError("rwkv7_recurrence: every input (r, decay, k, v, remove, replace) is required");
  }
  const int64_t n = head_dim;
  parallel_for(0, heads, 1, [&](int64_t h) {
    float* s = state + h * n * n;
    thread_local std::vector<float> sa, acc;
    sa.resize(static_cast<size_t>(n));
    acc.resize(static_cast<size_t>(n));
    for (int64_t t = 0; t < tokens; ++t) {
      const int64_t base = (t * heads + h) * n;
      const float* r = in.r + base;
      const float* decay = in.decay + base;
      const float* k = in.k + base;
      const float* v = in.v + base;
      const float* remove = in.remove + base;
      const float* replace = in.replace + base;
      float* out = y + base;

      // sa_j = Σ_i remove_i · S[i][j]
      // (Per-row scalars are read before each inner loop, so that the compiler can vectorise over j.)
      float* sa_j = sa.data();
      float* y_j = acc.data();
      std::fill(sa.begin(), sa.end(), 0.0f);
      for (int64_t i = 0; i < n; ++i) {
        const float* row = s + i * n;
        const float remove_i = remove[i];
        for (int64_t j = 0; j < n; ++j) {
          const float product = remove_i * row[j];
          sa_j[j] = sa_j[j] + product;
        }
      }
      // S[i][j] = decay_i·S[i][j] + replace_i·sa_j + k_i·v_j, then y_j = Σ_i r_i · S[i][j] (updated state)
      std::fill(acc.begin(), acc.end(), 0.0f);
      for (int64_t i = 0; i < n; ++i) {
        float* row = s + i * n;
        const float decay_i = decay[i], replace_i = replace[i], k_i = k[i], r_i = r[i];
        for (int64_t j = 0; j < n; ++j) {
          const float kept = decay_i * row[j];
          const float replaced = replace_i * sa_j[j];
          const float written = k_i * v[j];
          const float updated = (kept + replaced) + written;
          row[j] = updated;
          const float read = r_i * updated;
          y_j[j] = y_j[j] + read;
        }
      }
      std::copy(acc.begin(), acc.end(), out);
    }
  });
}

void rwkv7_decay_from_logits(const float* z, float* omega, float* decay, int64_t n) {
  for (int64_t i = 0; i < n; ++i) {
    const float w = -softplus(-z[i]) - 0.5f;
    omega[i] = w;
    decay[i] = std::exp(-std::exp(w));
  }
}

void rwkv7_normalize_keys(const float* k, float* kk, int64_t rows, int64_t head_dim) {
  for (int64_t r = 0; r < rows; ++r) {
    const float* in = k + r * head_dim;
    float* out = kk + r * head_dim;
    double sum_squares = 0.0;
    for (int64_t i = 0; i < head_dim; ++i) sum_squares += static_cast<double>(in[i]) * in[i];
    const float norm = std::max(static_cast<float>(std::sqrt(sum_squares)), 1e-12f);  // F.normalize's eps
    for (int64_t i = 0; i < head_dim; ++i) out[i] = in[i] / norm;
  }
}

void rwkv7_removal_terms(const float* kk, const float* a, float* remove, float* replace, int64_t n) {
  for (int64_t i = 0; i < n; ++i) {
    remove[i] = -kk[i];
    replace[i] = kk[i] * a[i];
  }
}

void rwkv7_scale_keys(float* k, const float* term, const float* a, int64_t n) {
  for (int64_t i = 0; i < n; ++i) k[i] = k[i] * ((1.0f - term[i]) + a[i]);
}

void lerp_toward(float* x, const float* target, const float* gate, int64_t n) {
  for (int64_t i = 0; i < n; ++i) x[i] = x[i] + (target[i] - x[i]) * gate[i];
}

void rwkv7_output(const float* y, const float* r, const float* k, const float* v, const float* bonus, float y_scale,
                  int64_t tokens, int64_t heads, int64_t head_dim, float* out) {
  for (int64_t t = 0; t < tokens; ++t) {
    for (int64_t h = 0; h < heads; ++h) {
      const int64_t base = (t * heads + h) * head_dim;
      float bonus_sum = 0.0f;
      if (bonus) {
        for (int64_t i = 0; i < head_dim; ++i) {
          const float term = (r[base + i] * k[base + i]) * bonus[h * head_dim + i];
          bonus_sum = bonus_sum + term;
        }
      }
      for (int64_t j = 0; j < head_dim; ++j) {
        const float scaled = y[base + j] * y_scale;
        if (bonus) {
          const float added = bonus_sum * v[base + j];
          out[base + j] = scaled + added;
        } else {
          out[base + j] = scaled;
        }
      }
    }
  }
}

}  // namespace hx
