#!/usr/bin/python3
"""hxforge's reference forward pass against PyTorch on a ~1.1 B-parameter Llama-shaped bf16 model (CPU).

  bench/forward_vs_torch.py --hxforge build/hxforge [--threads N] [--prefill 256] [--decode 16] [--dir /tmp/fwd-bench]

Makes (once, in --dir) a bf16 safetensors checkpoint of TinyLlama-1.1B's shape (22 layers, hidden 2048, 32 heads of
64, 4 KV heads, MLP 5632, vocab 32000, untied head; random N(0, 1/fan_in) weights) with a writer of its own, then
measures, with the same thread count for everyone:
  * hxforge run --compute f32 and --compute bf16: prefill of T tokens in one call, then D decode steps of one token
    (`--prefill T`, timings from --json), and the peak anonymous / file-backed resident memory of the process
    (RssAnon / RssFile sampled from /proc) — weights are read from the mapped file, so RssAnon stays far below the
    checkpoint size;
  * a PyTorch bf16 implementation of the same model written here (Debian torch, eager ops, KV cache, weights viewed
    from the mapped file with torch.frombuffer, no copy): the same prefill and decode steps.
  * with --timing build/bench/forward_timing, hxforge again in one process per mode: the first prefill call (cold:
    it also pays the first touch of every page of the mapped checkpoint, as `hxforge run` does) and the best of
    further prefills on fresh states (warm: pages mapped — the state the torch side is timed in, after its warm-up).
Each measurement is the best of --repeats runs. Prints a table; the goal is hxforge bf16 ≥ 1× torch bf16.
"""
import argparse
import json
import math
import mmap
import os
import struct
import subprocess
import sys
import threading
import time
import warnings

import numpy as np

CONFIG = {
    "architectures": ["LlamaForCausalLM"], "model_type": "llama", "dtype": "bfloat16",
    "vocab_size": 32000, "hidden_size": 2048, "intermediate_size": 5632, "num_hidden_layers": 22,
    "num_attention_heads": 32, "num_key_value_heads": 4, "head_dim": 64, "hidden_act": "silu",
    "rope_parameters": {"rope_type": "default", "rope_theta": 10000.0}, "rms_norm_eps": 1e-5,
    "tie_word_embeddings": False, "attention_bias": False, "mlp_bias": False, "max_position_embeddings": 2048,
    "bos_token_id": 1, "eos_token_id": 2,
}


def tensor_shapes(cfg):
    d, f, v = cfg["hidden_size"], cfg["intermediate_size"], cfg["vocab_size"]
    hd = cfg["head_dim"]
    q, kv = cfg["num_attention_heads"] * hd, cfg["num_key_value_heads"] * hd
    shapes = [("model.embed_tokens.weight", [v, d])]
    for i in range(cfg["num_hidden_layers"]):
        p = f"model.layers.{i}."
        shapes += [(p + "input_layernorm.weight", [d]), (p + "post_attention_layernorm.weight", [d]),
                   (p + "self_attn.q_proj.weight", [q, d]), (p + "self_attn.k_proj.weight", [kv, d]),
                   (p + "self_attn.v_proj.weight", [kv, d]), (p + "self_attn.o_proj.weight", [d, q]),
                   (p + "mlp.gate_proj.weight", [f, d]), (p + "mlp.up_proj.weight", [f, d]),
                   (p + "mlp.down_proj.weight", [d, f])]
    shapes += [("model.norm.weight", [d]), ("lm_head.weight", [v, d])]
    return shapes


def to_bf16_bits(x):  # float32 array -> uint16 bf16 bits, round to nearest even
    u = x.view(np.uint32)
    return ((u + 0x7FFF + ((u >> 16) & 1)) >> 16).astype(np.uint16)


def write_model(folder, cfg, seed=0):
    os.makedirs(folder, exist_ok=True)
    path = os.path.join(folder, "model.safetensors")
    if os.path.exists(path):
        return path
    shapes = tensor_shapes(cfg)
    header, offset = {"__metadata__": {"format": "pt"}}, 0
    for name, shape in shapes:
        n = 2 * math.prod(shape)
        header[name] = {"dtype": "BF16", "shape": shape, "data_offsets": [offset, offset + n]}
        offset += n
    blob = json.dumps(header).encode()
    blob += b" " * (-len(blob) % 8)
    rng = np.random.default_rng(seed)
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(struct.pack("<Q", len(blob)) + blob)
        for name, shape in shapes:
            count = math.prod(shape)
            if len(shape) == 1:  # norm weights
                values = (1.0 + 0.1 * rng.standard_normal(count, dtype=np.float32)).astype(np.float32)
                f.write(to_bf16_bits(values).tobytes())
                continue
            scale = 1.0 if "embed" in name else 1.0 / math.sqrt(shape[1])
            for start in range(0, count, 1 << 25):
                chunk = rng.standard_normal(min(1 << 25, count - start), dtype=np.float32) * np.float32(scale)
                f.write(to_bf16_bits(chunk).tobytes())
    os.replace(tmp, path)
    with open(os.path.join(folder, "config.json"), "w") as f:
        json.dump(cfg, f, indent=1)
    return path


# ---- hxforge -------------------------------------------------------------------------------------------------------

def sample_memory(pid, peaks, stop):
    while not stop.is_set():
        try:
            with open(f"/proc/{pid}/status") as f:
                for line in f:
                    key, _, value = line.partition(":")
                    if key in ("RssAnon", "RssFile", "VmRSS"):
                        peaks[key] = max(peaks.get(key, 0), int(value.split()[0]) * 1024)
        except OSError:
            break
        time.sleep(0.02)


def run_hxforge(binary, folder, tokens_file, prefill, compute, threads):
    env = dict(os.environ, OMP_NUM_THREADS=str(threads))
    cmd = [binary, "run", folder, "--tokens-file", tokens_file, "--prefill", str(prefill), "--top-k", "1", "--json",
           "--compute", compute]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, text=True)
    peaks, stop = {}, threading.Event()
    sampler = threading.Thread(target=sample_memory, args=(proc.pid, peaks, stop))
    sampler.start()
    out, err = proc.communicate()
    stop.set()
    sampler.join()
    if proc.returncode != 0:
        raise SystemExit(f"hxforge run failed ({proc.returncode}): {err}")
    result = json.loads(out)
    timing = result["timing"]
    return {"prefill_s": timing["prefill_seconds"], "decode_s": timing["decode_seconds"],
            "decode_tokens": timing["decode_tokens"], "load_s": timing["load_seconds"], "memory": peaks,
            "top1": [p["top_k"][0]["token"] for p in result["positions"]]}


def run_forward_timing(binary, folder, tokens_file, prefill, compute, threads, repeats):
    env = dict(os.environ, OMP_NUM_THREADS=str(threads))
    cmd = [binary, folder, "--tokens-file", tokens_file, "--prefill", str(prefill), "--compute", compute,
           "--repeats", str(repeats)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"forward_timing failed ({proc.returncode}): {proc.stderr}")
    r = json.loads(proc.stdout)
    return {"prefill_s": r["prefill_seconds"], "cold_prefill_s": r["cold_prefill_seconds"],
            "decode_s": r["decode_seconds"], "decode_tokens": r["decode_tokens"], "memory": {}}


# ---- PyTorch -------------------------------------------------------------------------------------------------------

class TorchLlama:
    """Llama in bf16 as transformers computes it (LlamaRMSNorm, rotate_half RoPE with bf16 cos/sin, eager GQA
    attention with an f32 softmax, SwiGLU), weights viewed from the mapped file."""

    def __init__(self, folder, cfg):
        import torch
        self.torch = torch
        self.cfg = cfg
        path = os.path.join(folder, "model.safetensors")
        self.file = open(path, "rb")
        self.map = mmap.mmap(self.file.fileno(), 0, access=mmap.ACCESS_READ)
        (n,) = struct.unpack("<Q", self.map[:8])
        header = json.loads(self.map[8:8 + n])
        base = 8 + n
        self.w = {}
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the buffer is read-only; the weights are never written
            for name, info in header.items():
                if name == "__metadata__":
                    continue
                begin, end = info["data_offsets"]
                t = torch.frombuffer(self.map, dtype=torch.bfloat16, count=(end - begin) // 2, offset=base + begin)
                self.w[name] = t.view(info["shape"])
        hd = cfg["head_dim"]
        self.inv_freq = 1.0 / (cfg["rope_parameters"]["rope_theta"] ** (torch.arange(0, hd, 2).float() / hd))

    def rms(self, x, weight):
        xf = x.float()
        y = xf * self.torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.cfg["rms_norm_eps"])
        return weight * y.to(self.torch.bfloat16)

    def rope(self, x, positions):
        torch = self.torch
        freqs = positions.float()[:, None] * self.inv_freq[None, :]
        emb = torch.cat([freqs, freqs], -1)
        cos, sin = emb.cos().to(torch.bfloat16)[:, None, :], emb.sin().to(torch.bfloat16)[:, None, :]
        half = x.shape[-1] // 2
        rotated = torch.cat([-x[..., half:], x[..., :half]], -1)
        return x * cos + rotated * sin

    def forward(self, ids, cache):
        torch, F, cfg, w = self.torch, self.torch.nn.functional, self.cfg, self.w
        T = ids.shape[0]
        past = cache[0][0].shape[0] if cache else 0
        positions = torch.arange(past, past + T)
        H, Hkv, hd = cfg["num_attention_heads"], cfg["num_key_value_heads"], cfg["head_dim"]
        h = w["model.embed_tokens.weight"][ids]
        mask = torch.full((T, past + T), float("-inf")).triu(past + 1)
        new_cache = []
        for i in range(cfg["num_hidden_layers"]):
            p = f"model.layers.{i}."
            x = self.rms(h, w[p + "input_layernorm.weight"])
            q = self.rope(F.linear(x, w[p + "self_attn.q_proj.weight"]).view(T, H, hd), positions)
            k = self.rope(F.linear(x, w[p + "self_attn.k_proj.weight"]).view(T, Hkv, hd), positions)
            v = F.linear(x, w[p + "self_attn.v_proj.weight"]).view(T, Hkv, hd)
            if cache:
                k = torch.cat([cache[i][0], k], 0)
                v = torch.cat([cache[i][1], v], 0)
            new_cache.append((k, v))
            kr = k.repeat_interleave(H // Hkv, dim=1).transpose(0, 1)
            vr = v.repeat_interleave(H // Hkv, dim=1).transpose(0, 1)
            scores = torch.matmul(q.transpose(0, 1), kr.transpose(1, 2)) * (hd ** -0.5) + mask
            probs = torch.softmax(scores.float(), -1).to(torch.bfloat16)
            att = torch.matmul(probs, vr).transpose(0, 1).reshape(T, H * hd)
            h = h + F.linear(att, w[p + "self_attn.o_proj.weight"])
            x = self.rms(h, w[p + "post_attention_layernorm.weight"])
            m = F.silu(F.linear(x, w[p + "mlp.gate_proj.weight"])) * F.linear(x, w[p + "mlp.up_proj.weight"])
            h = h + F.linear(m, w[p + "mlp.down_proj.weight"])
        h = self.rms(h, w["model.norm.weight"])
        return F.linear(h, w["lm_head.weight"]).float(), new_cache


def run_torch(model, tokens, prefill):
    torch = model.torch
    with torch.inference_mode():
        ids = torch.tensor(tokens)
        start = time.perf_counter()
        logits, cache = model.forward(ids[:prefill], None)
        prefill_s = time.perf_counter() - start
        top1 = logits.argmax(-1).tolist()
        start = time.perf_counter()
        for t in range(prefill, len(tokens)):
            logits, cache = model.forward(ids[t:t + 1], cache)
            top1.append(int(logits.argmax(-1)))
        decode_s = time.perf_counter() - start
    return {"prefill_s": prefill_s, "decode_s": decode_s, "decode_tokens": len(tokens) - prefill, "top1": top1}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--hxforge", required=True)
    ap.add_argument("--dir", default="/tmp/hxforge-forward-bench")
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--prefill", type=int, default=256)
    ap.add_argument("--decode", type=int, default=16)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--layers", type=int, default=CONFIG["num_hidden_layers"], help="fewer layers for a quick run")
    ap.add_argument("--skip-torch", action="store_true")
    ap.add_argument("--timing", help="bench/forward_timing binary: also report hxforge's in-process warm prefill")
    ap.add_argument("--memory-model", help="also run hxforge (bf16, --memory-tokens tokens) on this larger checkpoint "
                    "and report its peak anonymous and file-backed memory")
    ap.add_argument("--memory-tokens", type=int, default=32)
    args = ap.parse_args()

    cfg = dict(CONFIG, num_hidden_layers=args.layers)
    folder = os.path.join(args.dir, f"llama-1b-{args.layers}l")
    t0 = time.perf_counter()
    path = write_model(folder, cfg)
    size = os.path.getsize(path)
    params = sum(math.prod(s) for _, s in tensor_shapes(cfg))
    print(f"model: {folder} ({params / 1e9:.2f} B parameters, {size / 2**30:.2f} GiB bf16; ready in "
          f"{time.perf_counter() - t0:.1f} s)")
    tokens = [int(x) for x in np.random.default_rng(1).integers(3, cfg["vocab_size"], args.prefill + args.decode)]
    tokens_file = os.path.join(args.dir, "tokens.txt")
    with open(tokens_file, "w") as f:
        f.write(",".join(map(str, tokens)))
    print(f"threads: {args.threads}; prefill {args.prefill} tokens, then {args.decode} decode steps; "
          f"best of {args.repeats}")

    def best(runs):
        return {"prefill_s": min(r["prefill_s"] for r in runs), "decode_s": min(r["decode_s"] for r in runs),
                "decode_tokens": runs[0]["decode_tokens"], "top1": runs[0]["top1"],
                "memory": max((r.get("memory", {}) for r in runs), key=lambda m: m.get("RssAnon", 0))}

    results = {}
    for compute in ("f32", "bf16"):
        results[f"hxforge {compute}"] = best([run_hxforge(args.hxforge, folder, tokens_file, args.prefill, compute,
                                                          args.threads) for _ in range(args.repeats)])
    if args.timing:
        for compute in ("f32", "bf16"):
            results[f"hxforge {compute} warm"] = run_forward_timing(args.timing, folder, tokens_file, args.prefill,
                                                                    compute, args.threads, args.repeats)
    if not args.skip_torch:
        import torch
        torch.set_num_threads(args.threads)
        model = TorchLlama(folder, cfg)
        run_torch(model, tokens[:8], 4)  # warm-up: first-touch of pages, oneDNN kernel selection
        results["torch bf16"] = best([run_torch(model, tokens, args.prefill) for _ in range(args.repeats)])
        results["torch bf16"]["memory"] = {}

    print()
    print(f"| {'implementation':<19} | {'prefill s':>9} | {'prefill tok/s':>13} | {'decode tok/s':>12} |"
          f" {'peak RssAnon':>12} | {'peak RssFile':>12} |")
    print(f"|{'-' * 21}|{'-' * 11}|{'-' * 15}|{'-' * 14}|{'-' * 14}|{'-' * 14}|")
    for name, r in results.items():
        mem = r.get("memory", {})
        anon = f"{mem['RssAnon'] / 2**20:.0f} MiB" if "RssAnon" in mem else "-"
        file_rss = f"{mem['RssFile'] / 2**20:.0f} MiB" if "RssFile" in mem else "-"
        decode = r["decode_tokens"] / r["decode_s"] if r["decode_tokens"] else float("nan")
        print(f"| {name:<19} | {r['prefill_s']:9.2f} | {args.prefill / r['prefill_s']:13.1f} | {decode:12.2f} |"
              f" {anon:>12} | {file_rss:>12} |")
    for name, r in results.items():
        if "cold_prefill_s" in r:
            print(f"{name}: first (cold) prefill in that process {r['cold_prefill_s']:.2f} s "
                  f"({args.prefill / r['cold_prefill_s']:.1f} tok/s)")
    if "torch bf16" in results:
        theirs = results["torch bf16"]
        print()
        for name in ("hxforge bf16", "hxforge bf16 warm"):
            if name in results:
                ours = results[name]
                print(f"{name} / torch bf16: prefill {theirs['prefill_s'] / ours['prefill_s']:.2f}x, decode "
                      f"{theirs['decode_s'] / ours['decode_s']:.2f}x (>1: hxforge faster)")
        agree = sum(a == b for a, b in zip(results["hxforge f32"]["top1"], theirs["top1"])) / len(tokens)
        print(f"top-1 agreement hxforge f32 vs torch bf16 over {len(tokens)} positions: {agree:.3f}")
    if args.memory_model:
        weights = sum(os.path.getsize(os.path.join(args.memory_model, f)) for f in os.listdir(args.memory_model)
                      if f.endswith(".safetensors")) if os.path.isdir(args.memory_model) else os.path.getsize(args.memory_model)
        ids_file = os.path.join(args.dir, "memory_tokens.txt")
        with open(ids_file, "w") as f:
            f.write(",".join(str(3 + i) for i in range(args.memory_tokens)))
        r = run_hxforge(args.hxforge, args.memory_model, ids_file, args.memory_tokens, "bf16", args.threads)
        mem = r["memory"]
        print()
        print(f"memory on {args.memory_model} ({weights / 2**30:.2f} GiB of weights), hxforge bf16 prefill of "
              f"{args.memory_tokens} tokens in {r['prefill_s']:.2f} s: peak RssAnon {mem['RssAnon'] / 2**20:.0f} MiB, "
              f"peak RssFile {mem['RssFile'] / 2**20:.0f} MiB, peak VmRSS {mem['VmRSS'] / 2**20:.0f} MiB")


if __name__ == "__main__":
    main()
