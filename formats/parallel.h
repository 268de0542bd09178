// The one OpenMP helper of hxforge.
//
// parallel_for(begin, end, grain, f) calls f(i) for every i in [begin, end) on the OpenMP team, serially when the
// range is below `grain` or when already inside a parallel region (no nested oversubscription). Work is split in
// static chunks so that results that depend on the split (there should be none) are at least reproducible.
#pragma once

#include <cstdint>

#ifdef _OPENMP
#include <omp.h>
#endif

namespace hx {

inline int max_threads() {
#ifdef _OPENMP
  return omp_get_max_threads();
#else
  return 1;
#endif
}

template <typename F>
void parallel_for(int64_t begin, int64_t end, int64_t grain, F&& f) {
  if (end <= begin) return;
#ifdef _OPENMP
  if (end - begin >= grain && !omp_in_parallel() && omp_get_max_threads() > 1) {
#pragma omp parallel for schedule(static)
    for (int64_t i = begin; i < end; ++i) f(i);
    return;
  }
#endif
  for (int64_t i = begin; i < end; ++i) f(i);
}

// Like parallel_for with dynamic scheduling: for items of very different cost (hashing tensors of mixed sizes).
template <typename F>
void parallel_for_dynamic(int64_t begin, int64_t end, F&& f) {
  if (end <= begin) return;
#ifdef _OPENMP
  if (end - begin > 1 && !omp_in_parallel() && omp_get_max_threads() > 1) {
#pragma omp parallel for schedule(dynamic, 1)
    for (int64_t i = begin; i < end; ++i) f(i);
    return;
  }
#endif
  for (int64_t i = begin; i < end; ++i) f(i);
}

}  // namespace hx
