// Device memory, CUDA error reporting and the matrix products of the CUDA forward pass (cuBLAS).
//
// Products: y = x·Wᵀ with W [N, K] row-major, i.e. in cuBLAS's column-major terms Yᵀ[N, T] = op_T(W)·Xᵀ. kF32
// computes in f32 (CUBLAS_COMPUTE_32F, default math mode: no TF32), kBF16 rounds x and W to bf16 and sums the exact
// products in f32 — the CPU's two MatmulCompute modes. A weight stored in the other dtype is converted on the fly
// in slices of rows (bounded scratch), so a bf16 model runs the f32 reference mode too; a quantized weight is
// dequantized the same way (quantized.cu). Calls of ≤ 4 tokens on bf16 or quantized weights (decode) take the
// memory-bound kernels of gemv.cu / quantized.cu instead.
#include <algorithm>
#include <stdexcept>
#include <string>

#include "formats/errors.h"
#include "verify/cuda/cuda_internal.h"
#include "verify/cuda/cuda_kernels.h"

namespace hx::cuda {
namespace {

// Elements of a weight slice converted at a time to the other dtype (256 MB as f32).
constexpr int64_t kConvertSliceElements = int64_t{64} << 20;

const char* blas_status_name(cublasStatus_t status) {
  switch (status) {
    case CUBLAS_STATUS_NOT_INITIALIZED:
      return "CUBLAS_STATUS_NOT_INITIALIZED";
    case CUBLAS_STATUS_ALLOC_FAILED:
      return "CUBLAS_STATUS_ALLOC_FAILED";
    case CUBLAS_STATUS_INVALID_VALUE:
      return "CUBLAS_STATUS_INVALID_VALUE";
    case CUBLAS_STATUS_ARCH_MISMATCH:
      return "CUBLAS_STATUS_ARCH_MISMATCH";
    case CUBLAS_STATUS_EXECUTION_FAILED:
      return "CUBLAS_STATUS_EXECUTION_FAILED";
    case CUBLAS_STATUS_NOT_SUPPORTED:
      return "CUBLAS_STATUS_NOT_SUPPORTED";
    default:
      return "cuBLAS error";
  }
}

// One cublasGemmEx over rows [n0, n0 + n) of W whose data (already in `type`) starts at `w`.
void gemm(const CallContext& ctx, const void* w, cudaDataType type, const void* x, int64_t n0, int64_t n, int64_t N,
          int64_t K, float* y, bool accumulate) {
  const float alpha = 1.0f, beta = accumulate ? 1.0f : 0.0f;
  check_blas(cublasGemmEx(ctx.blas, CUBLAS_OP_T, CUBLAS_OP_N, static_cast<int>(n), static_cast<int>(ctx.tokens),
                          static_cast<int>(K), &alpha, w, type, static_cast<int>(K), x, type, static_cast<int>(K),
                          &beta, y + n0, CUDA_R_32F, static_cast<int>(N), CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT),
             "cublasGemmEx");
}

void matmul(const CallContext& ctx, const ProductInput& x, const DeviceMatrix& w, float* y, bool accumulate) {
  const int64_t T = ctx.tokens, N = w.rows, K = w.cols;
  const bool want_bf16 = ctx.bf16;
  if (want_bf16 ? !x.bf16 : !x.f32) {
    throw std::logic_error("CUDA product: its input lacks the values of this compute mode");  // a caller's bug
  }
  // Decode-sized calls on bf16 or quantized weights: the memory-bound kernels of gemv.cu / quantized.cu.
  if (w.bf16 || w.quantized()) {
    GemvInput in;
    if (want_bf16) {
      in.bf16 = x.bf16;
    } else {
      in.f32 = x.f32;
    }
    const bool done = w.quantized() ? gemv_quantized(w.quantized_view(), in, y, T, accumulate, ctx.stream)
                                    : gemv_bf16(static_cast<const uint16_t*>(w.data.get()), in, y, T, N, K,
                                                accumulate, ctx.stream);
    if (done) return;
  }
  const void* x_in = want_bf16 ? static_cast<const void*>(x.bf16) : static_cast<const void*>(x.f32);
  const cudaDataType type = want_bf16 ? CUDA_R_16BF : CUDA_R_32F;
  if (!w.quantized() && w.bf16 == want_bf16) {
    gemm(ctx, w.data.get(), type, x_in, 0, N, N, K, y, accumulate);
    return;
  }
  // The weight is quantized or stored in the other dtype: decode or convert slices of rows, multiply each slice.
  // Slices of whole kSliceRowAlign rows: a slice that starts mid-way through that alignment hands cuBLAS an output
  // pointer (y + n0) off 16 bytes and a row count off 8, and it falls back to kernels 3-4× slower (measured: int8
  // reka8 prefill 21k tok/s with unaligned slices).
  constexpr int64_t kSliceRowAlign = 128;
  const int64_t slice_rows = std::min(
      N, std::max(kSliceRowAlign, kConvertSliceElements / std::max<int64_t>(K, 1) / kSliceRowAlign * kSliceRowAlign));
  DeviceBuffer slice(static_cast<size_t>(slice_rows * K) * (want_bf16 ? 2 : 4), ctx.stream);
  for (int64_t n0 = 0; n0 < N; n0 += slice_rows) {
    const int64_t n = std::min(slice_rows, N - n0);
    if (w.quantized()) {
      const OpTimer timer(ctx, "gemm: dequantize");
      dequantize_rows(w.quantized_view(), n0, n, want_bf16, slice.get(), ctx.stream);
    } else if (want_bf16) {
      f32_to_bf16(w.data.f32() + n0 * K, static_cast<uint16_t*>(slice.get()), n * K, ctx.stream);
    } else {
      bf16_to_f32(static_cast<const uint16_t*>(w.data.get()) + n0 * K, slice.f32(), n * K, ctx.stream);
    }
    gemm(ctx, slice.get(), type, x_in, n0, n, N, K, y, accumulate);
  }
}

}  // namespace

void fail(const std::string& what, cudaError_t error) {
  throw UnsupportedError(what + ": CUDA error " + cudaGetErrorName(error) + " (" + cudaGetErrorString(error) + ")");
}

void check_blas(cublasStatus_t status, const char* what) {
  if (status != CUBLAS_STATUS_SUCCESS) throw UnsupportedError(std::string(what) + ": " + blas_status_name(status));
}

DeviceBuffer::DeviceBuffer(size_t bytes, cudaStream_t stream) : bytes_(bytes), stream_(stream) {
  if (bytes == 0) return;
  if (stream) {
    async_ = true;
    check(cudaMallocAsync(&ptr_, bytes, stream),
          ("allocating " + std::to_string(bytes) + " bytes of GPU scratch").c_str());
  } else {
    check(cudaMalloc(&ptr_, bytes), ("allocating " + std::to_string(bytes) + " bytes of GPU memory").c_str());
  }
}

void DeviceBuffer::release() noexcept {
  if (!ptr_ || !owned_) {
    ptr_ = nullptr;
    return;
  }
  if (async_) {
    cudaFreeAsync(ptr_, stream_);
  } else {
    cudaFree(ptr_);
  }
  ptr_ = nullptr;
}

ProductInput product_input(const CallContext& ctx, const float* x, int64_t floats) {
  ProductInput in;
  in.f32 = x;
  if (ctx.bf16) f32_to_bf16(x, in.own_bf16(floats, ctx.stream), floats, ctx.stream);
  return in;
}

void project(const CallContext& ctx, const ProductInput& x, const DeviceMatrix& w, float* y, const DeviceVector* bias,
             bool accumulate) {
  if (ctx.tokens == 0) return;
  const OpTimer timer(ctx, "gemm");
  if (bias && !bias->empty()) {
    if (accumulate) {  // the bias belongs to this product, not to what y already holds
      DeviceBuffer product = ctx.take(ctx.tokens * w.rows);
      matmul(ctx, x, w, product.f32(), false);
      add_bias(product.f32(), ctx.tokens, w.rows, bias->ptr(), ctx.stream);
      add(y, product.f32(), ctx.tokens * w.rows, ctx.stream);
      return;
    }
    matmul(ctx, x, w, y, false);
    add_bias(y, ctx.tokens, w.rows, bias->ptr(), ctx.stream);
    return;
  }
  matmul(ctx, x, w, y, accumulate);
}

void project(const CallContext& ctx, const float* x, const DeviceMatrix& w, float* y, const DeviceVector* bias,
             bool accumulate) {
  if (ctx.tokens == 0) return;
  project(ctx, product_input(ctx, x, ctx.tokens * w.cols), w, y, bias, accumulate);
}

namespace {
void normalize(const CallContext& ctx, const float* x, float* y, int64_t rows, int64_t dim, const DeviceVector& weight,
               uint16_t* y_bf16) {
  if (!weight.empty() && weight.size != dim) {
    throw FormatError(in_file(ctx.plan->source, "RMSNorm weight of " + std::to_string(weight.size) +
                                                    " values for rows of " + std::to_string(dim)));
  }
  const OpTimer timer(ctx, "norm");
  rms_norm(x, y, rows, dim, weight.ptr(), ctx.eps, ctx.stream, y_bf16);
}
}  // namespace

void rms_norm_rows(const CallContext& ctx, const float* x, float* y, int64_t rows, int64_t dim,
                   const DeviceVector& weight) {
  normalize(ctx, x, y, rows, dim, weight, nullptr);
}

ProductInput rms_norm_for_products(const CallContext& ctx, const float* x, float* y, int64_t rows, int64_t dim,
                                   const DeviceVector& weight) {
  ProductInput in;
  in.f32 = y;
  normalize(ctx, x, y, rows, dim, weight, ctx.bf16 ? in.own_bf16(rows * dim, ctx.stream) : nullptr);
  return in;
}

std::vector<float> download(const CallContext& ctx, const float* device, int64_t floats) {
  std::vector<float> host(static_cast<size_t>(floats));
  check(cudaMemcpyAsync(host.data(), device, host.size() * sizeof(float), cudaMemcpyDeviceToHost, ctx.stream),
        "copying results from the GPU");
  check(cudaStreamSynchronize(ctx.stream), "running the forward pass on the GPU");
  return host;
}

}  // namespace hx::cuda
