// cuBLAS, loaded on first use with dlopen instead of linked: hxforge is one binary for CPU and GPU work, and linking
// libcublas/libcublasLt (≈ 0.7 GB of shared objects) made every start of every subcommand — `inspect`, `repack`, a
// CPU `run` — pay ≈ 0.75 s and ≈ 95 MiB of anonymous memory for the loader's relocations, measured on this machine.
// The functions below have exactly the declarations of cublas_api.h (the compiler checks each definition against
// them), so the GPU code calls cuBLAS as usual; each resolves its real symbol once. CUDA's runtime is linked
// statically (it opens the driver lazily itself).
//
// Non-goal: cuBLASLt (add its entry points here when the GEMMs move to it).
#include <cublas_v2.h>
#include <dlfcn.h>

#include <mutex>
#include <string>

#include "formats/errors.h"

namespace hx {
namespace {

// The SONAME of the CUDA 13 cuBLAS this code is compiled against; found through LD_LIBRARY_PATH / ld.so.cache.
constexpr const char* kCublasLibrary = "libcublas.so.13";

void* cublas_library() {
  static void* handle = nullptr;
  static std::string error;
  static std::once_flag once;
  std::call_once(once, [] {
    handle = dlopen(kCublasLibrary, RTLD_NOW | RTLD_LOCAL);
    if (!handle) error = dlerror();
  });
  if (!handle)
    throw UnsupportedError(std::string("--device cuda: cannot load cuBLAS (") + kCublasLibrary + "): " + error +
                           "; add the folder holding it to LD_LIBRARY_PATH");
  return handle;
}

template <typename Fn>
Fn cublas_symbol(const char* name) {
  void* symbol = dlsym(cublas_library(), name);
  if (!symbol)
    throw UnsupportedError(std::string("--device cuda: ") + kCublasLibrary + " has no symbol " + name +
                           " (a cuBLAS older than the CUDA 13 headers hxforge was built with?)");
  return reinterpret_cast<Fn>(symbol);
}

}  // namespace
}  // namespace hx

// Each definition's signature is the header's (a mismatch is a compile error: conflicting declaration).
#define HX_CUBLAS_RESOLVE(name) static const auto real = hx::cublas_symbol<decltype(&::name)>(#name);
// cublasGemmEx and cublasGemmStridedBatchedEx have C++ overloads in the header: name the C entry point's type.
#define HX_CUBLAS_RESOLVE_AS(name, type) static const auto real = hx::cublas_symbol<type>(#name);
using GemmExFn = cublasStatus_t (*)(cublasHandle_t, cublasOperation_t, cublasOperation_t, int, int, int, const void*,
                                    const void*, cudaDataType, int, const void*, cudaDataType, int, const void*, void*,
                                    cudaDataType, int, cublasComputeType_t, cublasGemmAlgo_t);
using GemmStridedBatchedExFn = cublasStatus_t (*)(cublasHandle_t, cublasOperation_t, cublasOperation_t, int, int, int,
                                                  const void*, const void*, cudaDataType, int, long long int,
                                                  const void*, cudaDataType, int, long long int, const void*, void*,
                                                  cudaDataType, int, long long int, int, cublasComputeType_t,
                                                  cublasGemmAlgo_t);

extern "C" {

cublasStatus_t CUBLASWINAPI cublasCreate_v2(cublasHandle_t* handle) {
  HX_CUBLAS_RESOLVE(cublasCreate_v2)
  return real(handle);
}

cublasStatus_t CUBLASWINAPI cublasDestroy_v2(cublasHandle_t handle) {
  HX_CUBLAS_RESOLVE(cublasDestroy_v2)
  return real(handle);
}

cublasStatus_t CUBLASWINAPI cublasSetStream_v2(cublasHandle_t handle, cudaStream_t stream) {
  HX_CUBLAS_RESOLVE(cublasSetStream_v2)
  return real(handle, stream);
}

cublasStatus_t CUBLASWINAPI cublasSetMathMode(cublasHandle_t handle, cublasMath_t mode) {
  HX_CUBLAS_RESOLVE(cublasSetMathMode)
  return real(handle, mode);
}

cublasStatus_t CUBLASWINAPI cublasSetWorkspace_v2(cublasHandle_t handle, void* workspace, size_t bytes) {
  HX_CUBLAS_RESOLVE(cublasSetWorkspace_v2)
  return real(handle, workspace, bytes);
}

const char* CUBLASWINAPI cublasGetStatusString(cublasStatus_t status) {
  HX_CUBLAS_RESOLVE(cublasGetStatusString)
  return real(status);
}

cublasStatus_t CUBLASWINAPI cublasGemmEx(cublasHandle_t handle, cublasOperation_t transa, cublasOperation_t transb,
                                         int m, int n, int k, const void* alpha, const void* A, cudaDataType Atype,
                                         int lda, const void* B, cudaDataType Btype, int ldb, const void* beta,
                                         void* C, cudaDataType Ctype, int ldc, cublasComputeType_t computeType,
                                         cublasGemmAlgo_t algo) {
  HX_CUBLAS_RESOLVE_AS(cublasGemmEx, GemmExFn)
  return real(handle, transa, transb, m, n, k, alpha, A, Atype, lda, B, Btype, ldb, beta, C, Ctype, ldc, computeType,
              algo);
}

cublasStatus_t CUBLASWINAPI cublasGemmStridedBatchedEx(cublasHandle_t handle, cublasOperation_t transa,
                                                       cublasOperation_t transb, int m, int n, int k,
                                                       const void* alpha, const void* A, cudaDataType Atype, int lda,
                                                       long long int strideA, const void* B, cudaDataType Btype,
                                                       int ldb, long long int strideB, const void* beta, void* C,
                                                       cudaDataType Ctype, int ldc, long long int strideC,
                                                       int batchCount, cublasComputeType_t computeType,
                                                       cublasGemmAlgo_t algo) {
  HX_CUBLAS_RESOLVE_AS(cublasGemmStridedBatchedEx, GemmStridedBatchedExFn)
  return real(handle, transa, transb, m, n, k, alpha, A, Atype, lda, strideA, B, Btype, ldb, strideB, beta, C, Ctype,
              ldc, strideC, batchCount, computeType, algo);
}

}  // extern "C"
