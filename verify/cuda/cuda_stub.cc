// The CUDA forward pass's API in a build without CUDA (HXFORGE_CUDA=OFF, or AUTO without nvcc): every entry point
// reports "hxforge was built without CUDA" (UnsupportedError, exit 3), so callers need no #ifdef.
#include "formats/errors.h"
#include "verify/cuda/cuda_model.h"
#include "verify/forward_plan.h"

namespace hx {

namespace {
constexpr const char* kNoCuda = "hxforge was built without CUDA (configure with -DHXFORGE_CUDA=ON where nvcc exists)";
[[noreturn]] void no_cuda() { throw UnsupportedError(std::string("--device cuda: ") + kNoCuda); }
}  // namespace

bool cuda_device_available(std::string* why) {
  if (why) *why = kNoCuda;
  return false;
}

std::string take_cuda_profile() { return "{}"; }
std::vector<float> cuda_causal_attention(const CudaAttentionProblem&, std::span<const float>, std::span<const float>,
                                         std::span<const float>, bool) {
  throw UnsupportedError(kNoCuda);
}

struct CudaState::Impl {};
CudaState::CudaState() = default;
CudaState::~CudaState() = default;
CudaState::CudaState(CudaState&&) noexcept = default;
CudaState& CudaState::operator=(CudaState&&) noexcept = default;
int64_t CudaState::position() const { return 0; }
std::vector<float> CudaState::wkv(int) const { no_cuda(); }
void CudaState::reset() {}

struct CudaModel::Impl {
  ModelPlan plan;
};
CudaModel::CudaModel(const Checkpoint&, const CudaLoadOptions&) { no_cuda(); }
CudaModel::CudaModel(const Checkpoint&, const ModelConfig&, const CudaLoadOptions&) { no_cuda(); }
CudaModel::~CudaModel() = default;
CudaModel::CudaModel(CudaModel&&) noexcept = default;
CudaModel& CudaModel::operator=(CudaModel&&) noexcept = default;
const std::string& CudaModel::architecture() const { return impl_->plan.architecture; }
int64_t CudaModel::vocab_size() const { return 0; }
int64_t CudaModel::hidden_size() const { return 0; }
int CudaModel::num_layers() const { return 0; }
const ModelPlan& CudaModel::plan() const { return impl_->plan; }
std::string CudaModel::device_name() const { return {}; }
uint64_t CudaModel::device_weight_bytes() const { return 0; }
int CudaModel::streamed_layers() const { return 0; }
uint64_t CudaModel::streamed_bytes() const { return 0; }
CudaState CudaModel::new_state() const { no_cuda(); }
ForwardResult CudaModel::forward(std::span<const int64_t>, CudaState&, const ForwardOptions&, LogitRows) const {
  no_cuda();
}

}  // namespace hx
