#!/usr/bin/python3
"""hxforge's CPU matrix product against PyTorch's, same shapes, same thread count.

Prints one table row per shape y[T, N] = x[T, K] · W[N, K]ᵀ:
  * ours f32   — MatmulCompute::kF32 with bf16 weights decoded on the fly (the checkpoints' dtype), GFLOP/s and the
                 share of the machine's f32 FMA peak (BM_FmaPeak: 16 independent vfmadd231ps zmm chains per thread);
  * torch f32  — torch.matmul of float32 tensors (Debian's torch 1.13 uses a generic BLAS here: slow, for scale);
  * ours bf16  — MatmulCompute::kBF16 (vdpbf16ps), bf16 weights, and its share of the vdpbf16ps peak;
  * torch bf16 — torch.matmul of bfloat16 tensors (oneDNN), and the ratio ours / torch.
GFLOP/s counts 2·T·K·N, per call averaged over a round of at least --min-time seconds for both sides (Google
Benchmark's mean for ours, the same loop for torch). Two tables: wall-clock, and CPU-normalised = flops · threads /
process CPU seconds, which stays meaningful when other processes share the cores (it equals the wall figure on an
idle machine, minus OpenMP spin-waiting). Every number is the best of --rounds rounds; each round times ours and torch's back to back.

usage: bench/gemm_vs_torch.py --bench build/bench/kernels_bench [--threads 2] [--rounds 3] [--no-torch-f32]
                              [--shapes 256x4096x4096,1x4096x4096 | --shapes tinyllama]
"""
import argparse
import json
import os
import subprocess
import sys
import time

import torch

SHAPES = [(256, 4096, 4096), (1, 4096, 4096), (256, 1536, 6144), (256, 6144, 1536), (64, 6144, 6144)]
# --shapes tinyllama: the products of bench/forward_vs_torch.py's 1.1 B model at T = 256 (q/o, k/v, gate/up, down,
# head) and one decode step.
TINYLLAMA_SHAPES = [(256, 2048, 2048), (256, 2048, 256), (256, 2048, 5632), (256, 5632, 2048), (256, 2048, 32000),
                    (1, 2048, 5632)]


def run_bench(binary, threads, pattern, min_time):
    """{name prefix: (wall GFLOP/s, CPU-normalised GFLOP/s)} of the benchmarks matching `pattern`."""
    env = dict(os.environ, OMP_NUM_THREADS=str(threads))
    out = subprocess.run([binary, "--benchmark_filter=" + pattern, "--benchmark_format=json",
                          "--benchmark_min_time=%g" % min_time], env=env, check=True, capture_output=True, text=True)
    results = {}
    for b in json.loads(out.stdout)["benchmarks"]:
        wall = b["GFLOP/s"]
        cpu = wall * b["real_time"] / b["cpu_time"] * threads  # same flops over CPU seconds, × threads
        results[b["name"].split("/process_time")[0]] = (wall, cpu)
    return results


def ours(binary, threads, t, k, n, bf16, min_time):
    name = "BM_Matmul/T:%d/K:%d/N:%d/wdtype:1/bf16:%d/avx512:1" % (t, k, n, bf16)
    return run_bench(binary, threads, "^" + name + "/", min_time).get(name, (float("nan"), float("nan")))


def torch_gflops(t, k, n, dtype, threads, min_seconds):
    x = torch.randn(t, k).to(dtype)
    w = torch.randn(n, k).to(dtype)
    torch.matmul(x, w.t())
    # Wall and CPU: the loop's totals over its calls, as Google Benchmark reports ours (a mean per call within a
    # round; the best single call would favour torch on a shared machine, where some calls run undisturbed). The
    # process clock of the other threads is only brought up to date at scheduler ticks, so per-call CPU deltas
    # would not be trustworthy anyway.
    calls, start, cpu_start = 0, time.perf_counter(), time.process_time()
    while True:
        torch.matmul(x, w.t())
        calls += 1
        if time.perf_counter() - start > min_seconds:
            break
    wall_per_call = (time.perf_counter() - start) / calls
    cpu_per_call = (time.process_time() - cpu_start) / calls
    flops = 2.0 * t * k * n / 1e9
    return flops / wall_per_call, flops / cpu_per_call * threads


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bench", required=True, help="path of the kernels_bench executable")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--min-time", type=float, default=0.5, help="seconds per measurement")
    parser.add_argument("--no-torch-f32", action="store_true", help="skip torch's (slow) float32 matmul")
    parser.add_argument("--shapes", default=",".join("%dx%dx%d" % s for s in SHAPES),
                        help="comma-separated TxKxN among those kernels_bench registers (default: all), or "
                             "'tinyllama' for the forward benchmark's model")
    args = parser.parse_args()
    shapes = TINYLLAMA_SHAPES if args.shapes == "tinyllama" else [
        tuple(int(v) for v in shape.split("x")) for shape in args.shapes.split(",")]
    torch.set_num_threads(args.threads)

    peaks = {"fma": (0.0, 0.0), "dot": (0.0, 0.0)}
    for _ in range(args.rounds):
        result = run_bench(args.bench, args.threads, "BM_FmaPeak|BM_Bf16DotPeak", 0.3)
        for key, name in (("fma", "BM_FmaPeak"), ("dot", "BM_Bf16DotPeak")):
            peaks[key] = tuple(max(a, b) for a, b in zip(peaks[key], result[name]))

    rows = []
    for t, k, n in shapes:
        best = {key: (0.0, 0.0) for key in ("f32", "bf16", "torch_f32", "torch_bf16")}
        for _ in range(args.rounds):
            measured = {"f32": ours(args.bench, args.threads, t, k, n, 0, args.min_time),
                        "bf16": ours(args.bench, args.threads, t, k, n, 1, args.min_time),
                        "torch_bf16": torch_gflops(t, k, n, torch.bfloat16, args.threads, args.min_time)}
            if not args.no_torch_f32:
                measured["torch_f32"] = torch_gflops(t, k, n, torch.float32, args.threads, args.min_time)
            for key, value in measured.items():
                best[key] = tuple(max(a, b) for a, b in zip(best[key], value))
        rows.append(((t, k, n), best))

    print("threads %d, torch %s" % (args.threads, torch.__version__))
    for column, title in ((0, "wall-clock GFLOP/s"), (1, "CPU-normalised GFLOP/s (flops x threads / CPU seconds)")):
        fma, dot = peaks["fma"][column], peaks["dot"][column]
        print("\n%s; f32 FMA peak %.0f, vdpbf16ps peak %.0f" % (title, fma, dot))
        header = "%-18s %16s %10s %16s %10s %8s" % ("T x K x N", "ours f32", "torch f32", "ours bf16", "torch bf16",
                                                   "bf16 ratio")
        print(header)
        print("-" * len(header))
        for (t, k, n), best in rows:
            torch_f32 = "-" if args.no_torch_f32 else "%.1f" % best["torch_f32"][column]
            print("%-18s %7.1f (%3.0f %%) %10s %7.1f (%3.0f %%) %10.1f %8.2f" % (
                "%d x %d x %d" % (t, k, n), best["f32"][column], 100 * best["f32"][column] / fma, torch_f32,
                best["bf16"][column], 100 * best["bf16"][column] / dot, best["torch_bf16"][column],
                best["bf16"][column] / best["torch_bf16"][column]))
    sys.stdout.flush()


if __name__ == "__main__":
    main()
