// Placing weights on the GPU at load (WeightStore) and streaming the layers that do not fit (LayerStreamer); see
// cuda_internal.h for the contract.
//
// Design goals: one load path for resident and streamed layers (Uploader in cuda_model.cc; a streamed layer's
// bytes are laid out in a host image instead of GPU allocations), so a streamed layer computes with exactly the
// bytes a resident one would (tests/verify_cuda_test.cc compares logits bit for bit); copies overlap compute
// (double buffering on a second stream); no host synchronisation in a forward call. Non-goals: more than two slots, or streaming the embedding, head and PLE
// tables (they stay resident: every call touches them).
#include <algorithm>
#include <cstring>
#include <functional>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include "formats/errors.h"
#include "verify/cuda/cuda_internal.h"

namespace hx::cuda {
namespace {

constexpr size_t kPartAlignment = 256;  // cudaMalloc's alignment: every kernel's vector loads rely on ≥ 16

size_t aligned(size_t n) { return (n + kPartAlignment - 1) / kPartAlignment * kPartAlignment; }

// The views of a staged layer hold offsets in its image; point them at `base` + offset.
void rebase(LayerWeights& w, std::byte* base) {
  for_each_buffer(w, [&](DeviceBuffer& b) {
    if (b.bytes() > 0) b = DeviceBuffer::view(base + reinterpret_cast<uintptr_t>(b.get()), b.bytes());
  });
}

}  // namespace

void for_each_buffer(LayerWeights& w, const std::function<void(DeviceBuffer&)>& fn) {
  const auto matrix = [&](Matrix& m) {
    if (!m) return;
    for (DeviceBuffer* b : {&m->data, &m->scales, &m->zeros, &m->table}) fn(*b);
  };
  const auto vector = [&](DeviceVector& v) { fn(v.data); };
  AttentionWeights& a = w.attention;
  for (Matrix* m : {&a.q, &a.k, &a.v, &a.o, &a.gate_down, &a.gate_up}) matrix(*m);
  for (DeviceVector* v : {&a.q_norm, &a.k_norm, &a.q_bias, &a.k_bias, &a.v_bias, &a.o_bias}) vector(*v);
  RwkvWeights& r = w.rwkv;
  for (Matrix* m : {&r.r, &r.k, &r.v, &r.o, &r.w1, &r.w2, &r.a1, &r.a2, &r.v1, &r.v2, &r.k1, &r.k2, &r.g1, &r.g2})
    matrix(*m);
  for (DeviceVector* v : {&r.r_bias, &r.k_bias, &r.v_bias, &r.r_norm, &r.k_norm, &r.w0, &r.a0, &r.v0, &r.k0, &r.r_k})
    vector(*v);
  for (DeviceVector* v : {&w.input_norm, &w.attention_out_norm, &w.ffn_in_norm, &w.ffn_out_norm, &w.ple_norm})
    vector(*v);
  for (Matrix* m : {&w.mlp_gate, &w.mlp_up, &w.mlp_down, &w.ple_gate, &w.ple_projection}) matrix(*m);
}

// ---- WeightStore ----

DeviceBuffer WeightStore::put(const void* host, size_t bytes, const std::string& what) {
  return put_rows(host, bytes, bytes, 1, what);
}

DeviceBuffer WeightStore::put_rows(const void* host, size_t row_bytes, size_t stride, size_t count,
                                   const std::string& what) {
  const size_t bytes = row_bytes * count;
  if (staging_ == Staging::kNone) {
    DeviceBuffer d(bytes);
    check(cudaMemcpy2D(d.get(), row_bytes, host, stride, row_bytes, count, cudaMemcpyHostToDevice),
          ("uploading " + what + " to the GPU").c_str());
    bytes_on_gpu += bytes;
    return d;
  }
  const size_t offset = aligned(layer_.bytes);
  layer_.bytes = offset + bytes;
  if (staging_ == Staging::kImage) {
    layer_.image.resize(layer_.bytes);
    for (size_t r = 0; r < count; ++r) {
      std::memcpy(layer_.image.data() + offset + r * row_bytes, static_cast<const std::byte*>(host) + r * stride,
                  row_bytes);
    }
  }
  return DeviceBuffer::view(reinterpret_cast<void*>(offset), bytes);
}

void WeightStore::begin_layer(Staging staging) {
  staging_ = staging;
  layer_ = {};
}

LayerImage WeightStore::end_layer() {
  staging_ = Staging::kNone;
  return std::exchange(layer_, {});
}

// ---- LayerStreamer ----

void HostImageFree::operator()(std::byte* p) const {
  if (pinned) {
    cudaFreeHost(p);
  } else {
    delete[] p;
  }
}

LayerStreamer::~LayerStreamer() {
  if (copy_stream_) cudaStreamSynchronize(copy_stream_);  // no copy may still read the host images
  for (cudaEvent_t e : {ready_[0], ready_[1], free_[0], free_[1]}) {
    if (e) cudaEventDestroy(e);
  }
  if (copy_stream_) cudaStreamDestroy(copy_stream_);
}

void LayerStreamer::keep_streamed(int layer, LayerImage image, LayerWeights& w) {
  size_t tiled = 0;
  for_each_buffer(w, [&](DeviceBuffer& b) { tiled += aligned(b.bytes()); });
  if (tiled != aligned(image.bytes)) {  // a weight buffer for_each_buffer does not know would keep its offset
    throw std::logic_error("layer " + std::to_string(layer) + ": the weight buffers cover " + std::to_string(tiled) +
                           " of the image's " + std::to_string(image.bytes) + " bytes (for_each_buffer is stale)");
  }
  Streamed& s = streamed_.emplace_back();
  s.layer = layer;
  s.bytes = image.bytes;
  s.weights = &w;
  void* pinned = nullptr;
  if (cudaHostAlloc(&pinned, std::max<size_t>(s.bytes, 1), cudaHostAllocDefault) == cudaSuccess) {
    s.host = std::unique_ptr<std::byte[], HostImageFree>(static_cast<std::byte*>(pinned), HostImageFree{true});
  } else {
    (void)cudaGetLastError();  // pageable instead: its copies block the host, but stay correct
    s.host = std::unique_ptr<std::byte[], HostImageFree>(new std::byte[std::max<size_t>(s.bytes, 1)],
                                                         HostImageFree{false});
  }
  std::memcpy(s.host.get(), image.image.data(), s.bytes);
}

void LayerStreamer::allocate_slots() {
  if (streamed_.empty()) return;
  size_t slot_bytes[2] = {0, 0};
  for (size_t j = 0; j < streamed_.size(); ++j) slot_bytes[j % 2] = std::max(slot_bytes[j % 2], streamed_[j].bytes);
  for (int s = 0; s < 2; ++s) {
    slots_[s] = DeviceBuffer(slot_bytes[s]);
    check(cudaEventCreateWithFlags(&ready_[s], cudaEventDisableTiming), "creating a CUDA event");
    check(cudaEventCreateWithFlags(&free_[s], cudaEventDisableTiming), "creating a CUDA event");
  }
  for (size_t j = 0; j < streamed_.size(); ++j)
    rebase(*streamed_[j].weights, static_cast<std::byte*>(slots_[j % 2].get()));
  check(cudaStreamCreateWithFlags(&copy_stream_, cudaStreamNonBlocking), "creating the weight-copy stream");
}

uint64_t LayerStreamer::streamed_bytes() const {
  uint64_t total = 0;
  for (const Streamed& s : streamed_) total += s.bytes;
  return total;
}

int LayerStreamer::index_of(int layer) const {
  for (size_t j = 0; j < streamed_.size(); ++j) {
    if (streamed_[j].layer == layer) return static_cast<int>(j);
  }
  return -1;
}

// Enqueues the copy of streamed layer `index` into its slot unless the slot holds it already; the copy waits until
// the compute stream is done with the slot's previous layer.
void LayerStreamer::ensure_loaded(int index) {
  const int slot = index % 2;
  if (slot_holds_[slot] == index) return;
  const Streamed& s = streamed_[static_cast<size_t>(index)];
  check(cudaStreamWaitEvent(copy_stream_, free_[slot], 0), "ordering a weight copy after compute");
  const cudaError_t copied =
      cudaMemcpyAsync(slots_[slot].get(), s.host.get(), s.bytes, cudaMemcpyHostToDevice, copy_stream_);
  if (copied != cudaSuccess) fail("streaming layer " + std::to_string(s.layer) + "'s weights to the GPU", copied);
  check(cudaEventRecord(ready_[slot], copy_stream_), "recording a weight copy");
  slot_holds_[slot] = index;
}

void LayerStreamer::begin_call() {
  if (!streamed_.empty()) ensure_loaded(0);
}

void LayerStreamer::before_layer(int layer, cudaStream_t compute) {
  const int index = index_of(layer);
  if (index < 0) return;
  const int count = streamed_count(), slot = index % 2;
  ensure_loaded(index);
  check(cudaStreamWaitEvent(compute, ready_[slot], 0), "waiting for a layer's weights");
  // Prefetch the next streamed layer into the other slot while this one computes. After the last layer that is
  // the next call's first, unless both share this slot (an odd count): begin_call() starts that copy instead.
  const int next = (index + 1) % count;
  if (next % 2 != slot) ensure_loaded(next);
}

void LayerStreamer::after_layer(int layer, cudaStream_t compute) {
  const int index = index_of(layer);
  if (index < 0) return;
  check(cudaEventRecord(free_[index % 2], compute), "recording a layer's end");
}

}  // namespace hx::cuda
