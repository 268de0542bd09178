// cuda_model.h cuda_causal_attention: one attention call on host arrays, so tests can hold the tensor-core kernel
// (attention_tc.cu) against the f32 kernels (attention.cu) over shapes no small model reaches, and benches can time
// it alone.
#include <string>
#include <vector>

#include "formats/errors.h"
#include "verify/cuda/cuda_internal.h"

namespace hx {

std::vector<float> cuda_causal_attention(const CudaAttentionProblem& p, std::span<const float> q,
                                         std::span<const float> k, std::span<const float> v, bool tensor_cores) {
  std::string why;
  if (!cuda_device_available(&why)) throw UnsupportedError("cuda_causal_attention: " + why);
  const size_t q_floats = static_cast<size_t>(p.tokens * p.q_heads * p.head_dim);
  const size_t kv_floats = static_cast<size_t>(p.cache_len * p.kv_heads * p.head_dim);
  if (q.size() != q_floats || k.size() != kv_floats || v.size() != kv_floats)
    throw UsageError("cuda_causal_attention: q, k, v hold " + std::to_string(q.size()) + ", " +
                     std::to_string(k.size()) + ", " + std::to_string(v.size()) + " floats; the shape needs " +
                     std::to_string(q_floats) + ", " + std::to_string(kv_floats) + ", " + std::to_string(kv_floats));
  const auto upload = [](std::span<const float> host) {
    cuda::DeviceBuffer d(host.size_bytes());
    cuda::check(cudaMemcpy(d.get(), host.data(), host.size_bytes(), cudaMemcpyHostToDevice), "attention inputs");
    return d;
  };
  const cuda::DeviceBuffer dq = upload(q), dk = upload(k), dv = upload(v);
  cuda::DeviceBuffer out(q_floats * sizeof(float));
  cuda::AttentionShape shape;
  shape.q_heads = p.q_heads, shape.kv_heads = p.kv_heads, shape.head_dim = p.head_dim;
  shape.scale = p.scale, shape.sliding_window = p.sliding_window, shape.tensor_cores = tensor_cores;
  cuda::causal_attention(shape, dq.f32(), p.tokens, dk.f32(), dv.f32(), p.cache_len, out.f32(), nullptr);
  std::vector<float> host(q_floats);
  cuda::check(cudaMemcpy(host.data(), out.get(), host.size() * sizeof(float), cudaMemcpyDeviceToHost),
              "running the attention kernel");
  return host;
}

}  // namespace hx
