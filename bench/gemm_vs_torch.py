#!/usr/bin/python3
"""hxforge's CPU matrix product against PyTorch's, same shapes, same thread count.

Prints one table row per shape y[T, N] = x[T, K] · W[N, K]ᵀ:
  * ours f32   — MatmulCompute::kF32 with bf16 weights decoded on the fly (the checkpoints' dtype), GFLOP/s and the
                 share of the machine's f32 FMA peak (BM_FmaPeak: 16 independent vfmadd231ps zmm chains per thread);
  * torch f32  — torch.matmul of float32 tensors (Debian's torch uses its generic BLAS here: slow, for scale only);
  * ours bf16  — MatmulCompute::kBF16 (vdpbf16ps), bf16 weights, and its share of the vdpbf16ps peak;
  * torch bf16 — torch.matmul of bfloat16 tensors (oneDNN), and ours / torch.
The machine may be shared: every number is the best of --rounds rounds, and each round times ours and torch's back to
back, so a disturbance hits both. GFLOP/s counts 2·T·K·N.

usage: bench/gemm_vs_torch.py --bench build/bench/kernels_bench [--threads 2] [--rounds 3] [--no-torch-f32]
"""
import argparse
import json
import os
import subprocess
import sys
import time

import torch

SHAPES = [(256, 4096, 4096), (1, 4096, 4096), (256, 1536, 6144), (256, 6144, 1536), (64, 6144, 6144)]


def run_bench(binary, threads, pattern, min_time):
    env = dict(os.environ, OMP_NUM_THREADS=str(threads))
    out = subprocess.run([binary, "--benchmark_filter=" + pattern, "--benchmark_format=json",
                          "--benchmark_min_time=%g" % min_time], env=env, check=True, capture_output=True, text=True)
    return {b["name"]: b for b in json.loads(out.stdout)["benchmarks"]}


def ours(binary, threads, t, k, n, bf16, min_time):
    name = "BM_Matmul/T:%d/K:%d/N:%d/wdtype:1/bf16:%d/avx512:1/real_time" % (t, k, n, bf16)
    result = run_bench(binary, threads, "^" + name + "$", min_time)
    return result[name]["GFLOP/s"] if name in result else float("nan")


def torch_gflops(t, k, n, dtype, min_seconds):
    x = torch.randn(t, k).to(dtype)
    w = torch.randn(n, k).to(dtype)
    torch.matmul(x, w.t())
    best, start = float("inf"), time.perf_counter()
    while True:
        t0 = time.perf_counter()
        torch.matmul(x, w.t())
        best = min(best, time.perf_counter() - t0)
        if time.perf_counter() - start > min_seconds:
            break
    return 2.0 * t * k * n / best / 1e9


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bench", required=True, help="path of the kernels_bench executable")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--min-time", type=float, default=0.5, help="seconds per measurement")
    parser.add_argument("--no-torch-f32", action="store_true", help="skip torch's (slow) float32 matmul")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    peaks = run_bench(args.bench, args.threads, "BM_FmaPeak|BM_Bf16DotPeak", 0.5)
    fma_peak = peaks["BM_FmaPeak/real_time"]["GFLOP/s"]
    dot_peak = peaks["BM_Bf16DotPeak/real_time"]["GFLOP/s"]
    print("threads %d; f32 FMA peak %.0f GFLOP/s; vdpbf16ps peak %.0f GFLOP/s; torch %s" %
          (args.threads, fma_peak, dot_peak, torch.__version__))
    header = "%-20s %18s %10s %18s %10s %8s" % ("T x K x N", "ours f32", "torch f32", "ours bf16", "torch bf16",
                                               "bf16 ratio")
    print(header)
    print("-" * len(header))
    for t, k, n in SHAPES:
        best = {"f32": 0.0, "bf16": 0.0, "torch_f32": 0.0, "torch_bf16": 0.0}
        for _ in range(args.rounds):
            best["f32"] = max(best["f32"], ours(args.bench, args.threads, t, k, n, 0, args.min_time))
            if not args.no_torch_f32:
                best["torch_f32"] = max(best["torch_f32"], torch_gflops(t, k, n, torch.float32, args.min_time))
            best["bf16"] = max(best["bf16"], ours(args.bench, args.threads, t, k, n, 1, args.min_time))
            best["torch_bf16"] = max(best["torch_bf16"], torch_gflops(t, k, n, torch.bfloat16, args.min_time))
        print("%-20s %7.1f (%3.0f %%) %10s %7.1f (%3.0f %%) %10.1f %8.2f" % (
            "%d x %d x %d" % (t, k, n), best["f32"], 100 * best["f32"] / fma_peak,
            "-" if args.no_torch_f32 else "%.1f" % best["torch_f32"], best["bf16"], 100 * best["bf16"] / dot_peak,
            best["torch_bf16"], best["bf16"] / best["torch_bf16"]))
        sys.stdout.flush()


if __name__ == "__main__":
    main()
