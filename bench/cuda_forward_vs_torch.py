#!/usr/bin/python3
"""hxforge's CUDA forward pass against transformers on the same random bf16 weights, same GPU, same run.

  bench/cuda_forward_vs_torch.py --hxforge build/hxforge --timing build/bench/cuda_forward_timing \\
      [--models llama-reka8,gemma4-e2b,hxa079-reka8,hxa07i-e2b] [--prefill 2048] [--decode 64] [--dir /tmp/cuda-bench]

For each model: `hxforge synth` writes a bf16 checkpoint of the shape (once, in --dir); cuda_forward_timing measures
hxforge (prefill of T tokens in one call after a warm-up, best of 3; then D decode steps of one token with the
caches carried); transformers (when importable, and only for the architectures it has: llama, gemma4) loads the
same folder in bf16 with attn_implementation eager and sdpa and measures the same prefill and decode steps (KV
cache, batch 1). Prints one JSON line per measurement and a table; decode is also given as a fraction of the HBM
roofline (weight bytes per token / bandwidth, --bandwidth GB/s, 3350 for an H100 SXM).
"""
import argparse
import json
import os
import subprocess
import sys
import time

MODELS = {  # name: (arch, preset, layers or None)
    "llama-reka8": ("llama", "reka-flash-3", 8),
    "gemma4-e2b": ("gemma4", "gemma4-e2b", None),
    "hxa079-reka8": ("hxa079", "reka-flash-3", 8),
    "hxa07i-e2b": ("hxa07i", "gemma4-e2b", None),
}


def synth(hxforge, name, folder):
    arch, preset, layers = MODELS[name]
    if os.path.exists(os.path.join(folder, "config.json")):
        return True
    os.makedirs(os.path.dirname(folder), exist_ok=True)
    cmd = [hxforge, "synth", "--arch", arch, "--preset", preset, "--seed", "1", "--out", folder, "-q"]
    if layers:
        cmd += ["--layers", str(layers)]
    start = time.time()
    r = subprocess.run(cmd, capture_output=True, text=True)
    print(f"# synth {name}: rc {r.returncode} in {time.time() - start:.1f} s {r.stderr.strip()[-300:]}", flush=True)
    return r.returncode == 0


def hxforge_timing(timing, folder, prefill, decode, compute):
    r = subprocess.run([timing, folder, "--prefill", str(prefill), "--decode", str(decode), "--compute", compute],
                       capture_output=True, text=True)
    if r.returncode != 0:
        return {"error": r.stderr.strip()[-500:]}
    return json.loads(r.stdout)


def torch_timing(folder, prefill, decode, attn, repeats=3):
    import torch
    from transformers import AutoModelForCausalLM
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.bfloat16, attn_implementation=attn).cuda().eval()
    vocab = model.config.get_text_config().vocab_size
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(0, vocab, (1, prefill + decode), generator=g).cuda()
    best = 1e30
    with torch.inference_mode():
        for r in range(repeats + 1):
            torch.cuda.synchronize()
            start = time.perf_counter()
            out = model(ids[:, :prefill], use_cache=True, logits_to_keep=1)  # as hxforge: the last row only
            torch.cuda.synchronize()
            if r > 0:
                best = min(best, time.perf_counter() - start)
        past = out.past_key_values
        torch.cuda.synchronize()
        start = time.perf_counter()
        for t in range(prefill, prefill + decode):
            out = model(ids[:, t:t + 1], past_key_values=past, use_cache=True)
            past = out.past_key_values
        torch.cuda.synchronize()
        decode_seconds = time.perf_counter() - start
    del model
    torch.cuda.empty_cache()
    return {"engine": f"transformers {attn}", "prefill_tokens_per_second": prefill / best,
            "decode_tokens_per_second": decode / decode_seconds if decode else 0.0}


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--hxforge", required=True)
    p.add_argument("--timing", required=True)
    p.add_argument("--models", default="llama-reka8,gemma4-e2b")
    p.add_argument("--prefill", type=int, default=2048)
    p.add_argument("--decode", type=int, default=64)
    p.add_argument("--dir", default="/tmp/cuda-bench")
    p.add_argument("--bandwidth", type=float, default=3350.0, help="HBM GB/s for the decode roofline")
    p.add_argument("--no-torch", action="store_true")
    args = p.parse_args()
    rows = []
    for name in args.models.split(","):
        folder = os.path.join(args.dir, name)
        if not synth(args.hxforge, name, folder):
            continue
        for compute in ("bf16",):
            h = hxforge_timing(args.timing, folder, args.prefill, args.decode, compute)
            h.update({"name": name, "engine": f"hxforge cuda {compute}"})
            if "gpu_weight_bytes" in h:
                roofline = args.bandwidth * 1e9 / h["gpu_weight_bytes"]
                h["decode_roofline_tokens_per_second"] = roofline
                h["decode_fraction_of_roofline"] = h["decode_tokens_per_second"] / roofline
            print(json.dumps(h), flush=True)
            rows.append(h)
        if args.no_torch or MODELS[name][0] not in ("llama", "gemma4"):
            continue
        for attn in ("eager", "sdpa"):
            try:
                t = torch_timing(folder, args.prefill, args.decode, attn)
            except Exception as e:  # noqa: BLE001 - report and go on with the next engine
                t = {"engine": f"transformers {attn}", "error": repr(e)[-500:]}
            t["name"] = name
            print(json.dumps(t), flush=True)
            rows.append(t)
    print(f"\n{'model':<14} {'engine':<22} {'prefill tok/s':>14} {'decode tok/s':>13} {'roofline':>9}")
    for r in rows:
        if "error" in r:
            print(f"{r['name']:<14} {r['engine']:<22} error: {r['error'][:80]}")
            continue
        frac = r.get("decode_fraction_of_roofline")
        print(f"{r['name']:<14} {r['engine']:<22} {r['prefill_tokens_per_second']:>14.0f} "
              f"{r['decode_tokens_per_second']:>13.1f} {'' if frac is None else f'{100 * frac:8.0f}%':>9}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
