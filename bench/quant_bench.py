#!/usr/bin/env python3
"""Quantization benchmark: hxforge's codecs against PyTorch implementations of the same schemes, and the memory
`hxforge quantize` needs on a ~4 GB checkpoint.

Prints a comparison table. For every scheme (int8, fp8, fp6, fp5, int4 = HQQ with up to 20 solver iterations):
  * hxforge GB/s: bench/quant_bench (Google Benchmark) running the scheme's fast path and packing over every tensor
    `hxforge quantize --scheme S` gives that scheme, read from the mapped checkpoint, on --threads OpenMP threads;
    GB/s counts the bf16 input bytes;
  * torch GB/s: a PyTorch (Debian torch 1.13, float32 CPU, torch.set_num_threads(--threads)) implementation of the
    same scheme — torchao's _f32_to_floatx_unpacked bit algorithm for fp8/fp6/fp5 (torch 1.13 has no float8 dtype;
    e4m3fn after clamping to ±448 is that algorithm with 4/3 bits), hqq's Quantizer.quantize + proximal solver for
    int4 — plus the same packing, on a sample of the same tensors (--torch-sample-mb), against hxforge on exactly
    that sample;
  * peak anonymous memory (RssAnon sampled every 5 ms from /proc; the mapped input is file-backed and does not
    count) and wall time of the whole `hxforge quantize` writing its output, and of a --dry-run (no writing).
Goals (issue 4): int8/FP8 >= 1.5 GB/s, FP6/FP5 >= 1.0, HQQ >= 0.15 on 2 threads; >= 5x torch; <= 512 MiB anonymous.

usage: bench/quant_bench.py --hxforge build/hxforge --bench build/bench/quant_bench [--workdir /tmp/hxforge-qbench]
       [--threads 2] [--torch-sample-mb 400] [--torch-sample-mb-int4 100] [--layers 2] [--schemes int8,fp8,fp6,fp5,int4]
The model is `hxforge synth --arch hxa079 --preset reka-flash-3 --layers 2 --realistic` (4.1 GB of bf16; made once
and kept in --workdir). Build the benchmark with -DHXFORGE_BUILD_BENCH=ON.
"""
import argparse
import json
import os
import re
import shutil
import struct
import subprocess
import sys
import threading
import time

GOALS = {"int8": 1.5, "fp8": 1.5, "fp6": 1.0, "fp5": 1.0, "int4": 0.15}
TORCH_PYTHON = "/usr/bin/python3"


# ---- running things ----

def run_sampled(cmd, env):
    """Runs cmd, returning (seconds, peak RssAnon bytes)."""
    peak = [0]
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)

    def sample():
        while proc.poll() is None:
            try:
                with open(f"/proc/{proc.pid}/status") as f:
                    m = re.search(r"RssAnon:\s+(\d+) kB", f.read())
                    if m:
                        peak[0] = max(peak[0], int(m.group(1)) * 1024)
            except OSError:
                pass
            time.sleep(0.005)

    t = threading.Thread(target=sample)
    t.start()
    _, err = proc.communicate()
    t.join()
    if proc.returncode != 0:
        sys.exit(f"{' '.join(cmd)} failed ({proc.returncode}): {err.decode()[-2000:]}")
    return time.perf_counter() - start, peak[0]


def env_threads(threads):
    env = dict(os.environ)
    env["OMP_NUM_THREADS"] = str(threads)
    return env


def make_model(args, path):
    if os.path.exists(os.path.join(path, "config.json")):
        return
    print(f"making the benchmark model in {path} (hxforge synth, once) ...", flush=True)
    subprocess.run([args.hxforge, "synth", "--quiet", "--arch", "hxa079", "--preset", "reka-flash-3", "--layers",
                    str(args.layers), "--realistic", "--seed", "1", "--out", path], check=True)


def plan_of(args, model, scheme, report):
    """Tensor names and input bytes `hxforge quantize --scheme` gives `scheme` (from a dry run's report)."""
    subprocess.run([args.hxforge, "quantize", "--quiet", model, "--scheme", scheme, "--dry-run", "--report", report],
                   check=True, env=env_threads(args.threads))
    with open(report) as f:
        r = json.load(f)
    return [(t["name"], t["bytes_in"]) for t in r["tensors"] if t["scheme"] == scheme]


def hxforge_codec_gbps(args, model, scheme, names=None):
    env = env_threads(args.threads)
    env["HXFORGE_QUANT_BENCH_MODEL"] = model
    if names:
        env["HXFORGE_QUANT_BENCH_TENSORS"] = ",".join(names)
    out = subprocess.run([args.bench, f"--benchmark_filter=BM_Quantize/{scheme}/", "--benchmark_format=json",
                          "--benchmark_min_time=0.2"],
                         check=True, env=env, capture_output=True, text=True).stdout
    b = json.loads(out)["benchmarks"][0]
    return b["bytes_per_second"] / 1e9, b["input_GB"]


# ---- the PyTorch side (run in Debian's python3, which has torch 1.13) ----

TORCH_CODE = r'''
import json, struct, sys, time
import numpy as np
import torch

path, scheme, threads = sys.argv[1], sys.argv[2], int(sys.argv[3])
names = sys.argv[4].split(",")
torch.set_num_threads(threads)

with open(path, "rb") as f:
    n = struct.unpack("<Q", f.read(8))[0]
    header = json.loads(f.read(n))
data = np.memmap(path, dtype=np.uint8, mode="r", offset=8 + n)

def tensor(name):
    h = header[name]
    assert h["dtype"] == "BF16"
    b, e = h["data_offsets"]
    a = np.frombuffer(data[b:e], dtype=np.int16).reshape(h["shape"])
    return torch.from_numpy(a).view(torch.bfloat16)

# torchao custom_fp_utils._f32_to_floatx_unpacked (v0.14), unchanged but for torch 1.13 spellings.
def f32_to_floatx_unpacked(x, ebits, mbits):
    exp_bias = (1 << (ebits - 1)) - 1
    max_int = (1 << (ebits + mbits)) - 1
    sign_mask = 1 << (ebits + mbits)
    magic_adder = (1 << (23 - mbits - 1)) - 1
    max_normal = 2 ** (((1 << ebits) - 1) - exp_bias) * (((1 << (mbits + 1)) - 1) / (2 ** mbits))
    min_normal = 2 ** (1 - exp_bias)
    denorm_exp = (127 - exp_bias) + (23 - mbits) + 1
    denorm_mask_int = denorm_exp << 23
    denorm_mask_float = torch.tensor(denorm_mask_int, dtype=torch.int32).view(torch.float32)
    x = x.view(torch.int32)
    sign = x & -2147483648
    x = x ^ sign
    x = x.view(torch.float)
    saturate_mask = x >= max_normal
    denormal_mask = torch.logical_and(torch.logical_not(saturate_mask), x < min_normal)
    normal_mask = torch.logical_not(torch.logical_or(saturate_mask, denormal_mask))
    denormal_x = x + denorm_mask_float
    denormal_x = denormal_x.view(torch.int32)
    denormal_x -= denorm_mask_int
    denormal_x = denormal_x.to(torch.uint8)
    normal_x = x.view(torch.int32)
    mant_odd = (normal_x >> (23 - mbits)) & 1
    val_to_add = ((exp_bias - 127) << 23) + magic_adder
    normal_x += val_to_add
    normal_x += mant_odd
    normal_x = normal_x >> (23 - mbits)
    normal_x = normal_x.to(torch.uint8)
    x = torch.full_like(x, max_int, dtype=torch.uint8)
    x = torch.where(denormal_mask, denormal_x, x)
    x = torch.where(normal_mask, normal_x, x)
    sign_lp = sign >> (23 + 8 - mbits - ebits)
    sign_lp = sign_lp.to(torch.uint8)
    sign_lp = sign_lp & sign_mask
    return (x | sign_lp).to(torch.uint8)

def pack_bits(codes, bits):  # hxforge's portable packing: little-endian bit stream per row
    per = 4 if bits == 6 else 8
    c = codes.reshape(-1, per).to(torch.int64)
    v = torch.zeros(c.shape[0], dtype=torch.int64)
    for i in range(per):
        v |= c[:, i] << (bits * i)
    nbytes = per * bits // 8
    return torch.stack([(v >> (8 * b)) & 255 for b in range(nbytes)], dim=1).to(torch.uint8)

def q_int8(w):
    x = w.float()
    s = x.abs().amax(1, keepdim=True).clamp(min=1e-12) / 127
    return torch.round(x / s).clamp(-127, 127).to(torch.int8), s

def q_fp8(w):
    x = w.float()
    s = x.abs().amax(1, keepdim=True).clamp(min=1e-12) / 448
    return f32_to_floatx_unpacked((x / s).clamp(-448, 448), 4, 3), s

def q_fpx(w, ebits, mbits):
    x = w.float()
    max_normal = 28.0 if ebits == 3 else 7.0
    s = x.abs().amax(1).clamp(min=1e-12) / max_normal
    codes = f32_to_floatx_unpacked(x / s.view(-1, 1), ebits, mbits)
    return pack_bits(codes, 1 + ebits + mbits), s.to(w.dtype)

# hqq 0.2.8 Quantizer.quantize(nbits=4, group_size=64, optimize=True, round_zero=True, axis=1) on CPU (float32),
# with optimize_weights_proximal_legacy; then 2 codes per byte.
def q_int4(w, group_size=64):
    W = w.float().reshape(-1, group_size)
    _min = W.min(axis=1, keepdim=True)[0]
    _max = W.max(axis=1, keepdim=True)[0]
    denom = _max - _min
    scale = 15 / denom
    scale = torch.where(denom.abs() <= 1e-4, torch.full_like(scale, 1.0), scale).clamp(max=2e4)
    zero = torch.round(-_min * scale)
    lp_norm, beta, kappa, iters = 0.7, 1e1, 1.01, 20
    best_error = 1e4
    for i in range(iters):
        W_q = torch.round(W * scale + zero).clamp(0, 15)
        W_r = (W_q - zero) / scale
        W_e = torch.sign(W - W_r) * torch.nn.functional.relu(torch.abs(W - W_r) - (1.0 / beta) * torch.pow(torch.abs(W - W_r), lp_norm - 1))
        zero = torch.mean(W_q - (W - W_e) * scale, axis=1, keepdim=True)
        beta *= kappa
        current_error = float(torch.abs(W - W_r).mean())
        if current_error < best_error:
            best_error = current_error
        else:
            break
    W_q = torch.round(W * scale + zero).clamp(0, 15).to(torch.uint8).reshape(w.shape)
    packed = W_q[:, 0::2] | (W_q[:, 1::2] << 4)
    return packed, 1.0 / scale, zero

fn = {"int8": q_int8, "fp8": q_fp8, "fp6": lambda w: q_fpx(w, 3, 2), "fp5": lambda w: q_fpx(w, 2, 2),
      "int4": q_int4}[scheme]
tensors = [tensor(n) for n in names]
total = sum(t.numel() * 2 for t in tensors)
for t in tensors:  # read the pages once (both sides read from the page cache)
    t.float().sum()
start = time.perf_counter()
for t in tensors:
    fn(t)
seconds = time.perf_counter() - start
print(json.dumps({"seconds": seconds, "bytes": total, "torch": torch.__version__}))
'''


def torch_gbps(args, weights_file, scheme, names):
    out = subprocess.run([TORCH_PYTHON, "-c", TORCH_CODE, weights_file, scheme, str(args.threads), ",".join(names)],
                         check=True, capture_output=True, text=True).stdout
    r = json.loads(out.strip().splitlines()[-1])
    return r["bytes"] / r["seconds"] / 1e9, r["torch"]


def weights_file_of(model):
    for name in sorted(os.listdir(model)):
        if name.endswith(".safetensors"):
            return os.path.join(model, name)
    sys.exit(f"no .safetensors file in {model}")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--hxforge", default="build/hxforge")
    ap.add_argument("--bench", default="build/bench/quant_bench")
    ap.add_argument("--workdir", default="/tmp/hxforge-qbench")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--layers", type=int, default=2)
    ap.add_argument("--torch-sample-mb", type=float, default=400)
    ap.add_argument("--torch-sample-mb-int4", type=float, default=100, help="HQQ in torch is slow: a smaller sample")
    ap.add_argument("--schemes", default="int8,fp8,fp6,fp5,int4")
    ap.add_argument("--no-torch", action="store_true")
    ap.add_argument("--memory-schemes", default="int8,int4,fp6-tc",
                    help="full quantize runs (writing the output) whose peak RssAnon is measured")
    args = ap.parse_args()
    os.makedirs(args.workdir, exist_ok=True)
    model = os.path.join(args.workdir, f"reka-hxa079-l{args.layers}")
    make_model(args, model)
    weights = weights_file_of(model)
    size_gb = os.path.getsize(weights) / 1e9
    with open(weights, "rb") as f:  # page cache: every run reads the same warm file
        while f.read(1 << 24):
            pass

    rows = []
    for scheme in args.schemes.split(","):
        plan = plan_of(args, model, scheme, os.path.join(args.workdir, f"plan-{scheme}.json"))
        ours_all, input_gb = hxforge_codec_gbps(args, model, scheme)
        # The torch sample: tensors in file order that fit the budget (the smallest one if none does).
        budget = (args.torch_sample_mb_int4 if scheme == "int4" else args.torch_sample_mb) * 1e6
        sample, sample_bytes = [], 0
        for name, nbytes in plan:
            if sample_bytes + nbytes <= budget:
                sample.append(name)
                sample_bytes += nbytes
        if not sample and plan:
            name, nbytes = min(plan, key=lambda p: p[1])
            sample, sample_bytes = [name], nbytes
        ours_sample = torch_rate = None
        torch_version = "-"
        if not args.no_torch and sample:
            ours_sample, _ = hxforge_codec_gbps(args, model, scheme, sample)
            torch_rate, torch_version = torch_gbps(args, weights, scheme, sample)
        rows.append((scheme, input_gb, ours_all, sample_bytes / 1e9, ours_sample, torch_rate))
        print(f"  {scheme}: done", flush=True)

    memory = []
    for spec in args.memory_schemes.split(","):
        if not spec:
            continue
        scheme, _, layout = spec.partition("-")
        extra = ["--layout", {"tc": "torchao-tc", "gemlite": "gemlite"}[layout]] if layout else []
        out = os.path.join(args.workdir, "out")
        cmd = [args.hxforge, "quantize", "--quiet", model, "--scheme", scheme, *extra, "--force", "--out", out]
        seconds, peak = run_sampled(cmd, env_threads(args.threads))
        dry_seconds, dry_peak = run_sampled([args.hxforge, "quantize", "--quiet", model, "--scheme", scheme, *extra,
                                             "--dry-run"], env_threads(args.threads))
        shutil.rmtree(out, ignore_errors=True)
        memory.append((spec, seconds, peak, dry_seconds, dry_peak))

    print(f"\nhxforge quantization benchmark: {args.threads} threads, model {model} ({size_gb:.2f} GB bf16), "
          f"torch {torch_version}")
    print(f"{'scheme':<7}{'input GB':>9}{'hxforge GB/s':>14}{'goal':>6}  {'sample GB':>9}{'hxforge':>9}{'torch':>8}"
          f"{'ratio':>8}  goal 5x")
    for scheme, input_gb, ours_all, sample_gb, ours_sample, torch_rate in rows:
        ok = "ok" if ours_all >= GOALS[scheme] else "MISS"
        line = f"{scheme:<7}{input_gb:>9.2f}{ours_all:>11.3f} {ok:>3}{GOALS[scheme]:>6}  {sample_gb:>9.2f}"
        if torch_rate:
            ratio = ours_sample / torch_rate
            line += f"{ours_sample:>9.3f}{torch_rate:>8.3f}{ratio:>7.1f}x  {'ok' if ratio >= 5 else 'MISS'}"
        print(line)
    print(f"\n{'quantize run':<14}{'wall s':>8}{'GB/s':>7}{'RssAnon MiB':>13}  goal <= 512 MiB   "
          f"{'dry-run s':>9}{'GB/s':>7}{'RssAnon MiB':>13}")
    for spec, seconds, peak, dry_seconds, dry_peak in memory:
        print(f"{spec:<14}{seconds:>8.1f}{size_gb / seconds:>7.2f}{peak / 2**20:>13.0f}  "
              f"{'ok' if peak <= 512 * 2**20 else 'MISS':<16}{dry_seconds:>10.1f}{size_gb / dry_seconds:>7.2f}"
              f"{dry_peak / 2**20:>13.0f}")
    print("(quantize runs: the whole checkpoint, hashing every output tensor; the written runs include the disk.)")


if __name__ == "__main__":
    main()
