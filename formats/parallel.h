// The one OpenMP helper of hxforge.
//
// parallel_for(begin, end, grain, f) calls f(i) for every i in [begin, end) on the OpenMP team, serially when the
// range is below `grain` or when already inside a parallel region (no nested oversubscription). Work is split in
// static chunks so that results that depend on the split (there should be none) are at least reproducible.
//
// f may throw (a corrupt tensor, a NaN weight, no memory). An exception must not leave an OpenMP region (that is
// std::terminate), so inside one the first exception is kept, the iterations not yet started are skipped, and it
// is rethrown on the calling thread after the region: the caller sees what a serial loop would have thrown, or one
// of the errors when several iterations fail.
#pragma once

#include <atomic>
#include <cstdint>
#include <exception>
#include <mutex>

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

namespace parallel_detail {

// The first exception thrown by any iteration of one parallel region.
class FirstFailure {
 public:
  bool failed() const { return failed_.load(std::memory_order_relaxed); }
  template <typename F>
  void run(F& f, int64_t i) {
    if (failed()) return;
    try {
      f(i);
    } catch (...) {
      const std::lock_guard<std::mutex> lock(mutex_);
      if (!failure_) failure_ = std::current_exception();
      failed_.store(true, std::memory_order_relaxed);
    }
  }
  void rethrow() const {
    if (failure_) std::rethrow_exception(failure_);
  }

 private:
  std::atomic<bool> failed_{false};
  std::mutex mutex_;
  std::exception_ptr failure_;
};

}  // namespace parallel_detail

template <typename F>
void parallel_for(int64_t begin, int64_t end, int64_t grain, F&& f) {
  if (end <= begin) return;
#ifdef _OPENMP
  if (end - begin >= grain && !omp_in_parallel() && omp_get_max_threads() > 1) {
    parallel_detail::FirstFailure failure;
#pragma omp parallel for schedule(static)
    for (int64_t i = begin; i < end; ++i) failure.run(f, i);
    failure.rethrow();
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
    parallel_detail::FirstFailure failure;
#pragma omp parallel for schedule(dynamic, 1)
    for (int64_t i = begin; i < end; ++i) failure.run(f, i);
    failure.rethrow();
    return;
  }
#endif
  for (int64_t i = begin; i < end; ++i) f(i);
}

}  // namespace hx
