// Where the GPU time of forward calls goes (cuda_internal.h OpTimer, cuda_model.h take_cuda_profile), for the bench.
//
// Design goals: free when off (one cached getenv per timer); when HXFORGE_CUDA_PROFILE is set, a pair of CUDA
// events per timed operation on the call's stream, summed per category when the bench asks, so the figures are GPU
// time and include no host overhead. Non-goal: a trace (nsys is not on the device machines; this is the summary).
#include <cstdlib>
#include <map>
#include <mutex>
#include <string>
#include <vector>

#include "verify/cuda/cuda_internal.h"

namespace hx {
namespace cuda {
namespace {

struct Span {
  const char* category;
  cudaEvent_t start, stop;
};
std::mutex spans_mutex;
std::vector<Span> spans;

}  // namespace

bool profiling() {
  static const bool on = std::getenv("HXFORGE_CUDA_PROFILE") != nullptr;
  return on;
}

OpTimer::OpTimer(const CallContext& ctx, const char* category) : stream_(ctx.stream), category_(category) {
  if (!profiling()) return;
  cudaEventCreate(&start_);
  cudaEventCreate(&stop_);
  cudaEventRecord(start_, stream_);
}

OpTimer::~OpTimer() {
  if (!start_) return;
  cudaEventRecord(stop_, stream_);
  try {  // a destructor, maybe during unwinding: a span that cannot be kept is dropped, never thrown
    std::lock_guard<std::mutex> lock(spans_mutex);
    spans.push_back({category_, start_, stop_});
  } catch (...) {
    cudaEventDestroy(start_);
    cudaEventDestroy(stop_);
  }
}

}  // namespace cuda

std::string take_cuda_profile() {
  std::lock_guard<std::mutex> lock(cuda::spans_mutex);
  std::map<std::string, std::pair<double, int64_t>> totals;  // ms, count
  for (const cuda::Span& s : cuda::spans) {
    float ms = 0;
    cudaEventSynchronize(s.stop);
    cudaEventElapsedTime(&ms, s.start, s.stop);
    totals[s.category].first += ms;
    ++totals[s.category].second;
    cudaEventDestroy(s.start);
    cudaEventDestroy(s.stop);
  }
  cuda::spans.clear();
  std::string json = "{";
  for (const auto& [category, total] : totals) {
    if (json.size() > 1) json += ", ";
    json += "\"" + category + "\": {\"ms\": " + std::to_string(total.first) +
            ", \"calls\": " + std::to_string(total.second) + "}";
  }
  return json + "}";
}

}  // namespace hx
