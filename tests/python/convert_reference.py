#!/usr/bin/python3
"""An independent check of a converted hxa079 / hxa07i student, for the convert_*_test.cc suites.

  convert_reference.py values STUDENT_DIR
      Recomputes every tensor of a safetensors student with numpy, in float64, from the formulas of
      ../shared/reference/hybrid-arch.md §4 and ../shared/spec/hxa07i.md — not from hxforge's code:
        * which rule a tensor gets comes from this script's own table of names (w0 → RADLADS w0, ?2 → orthogonal·0.1,
          receptance ← 0.5·q_proj of the same layer, TICA o_proj → zeros, …), and is compared with manifest.json;
        * transferred weights: round_bf16(f32(teacher) · f32(factor)), bit for bit;
        * copies: the teacher's bytes;
        * seeded inits: the documented generator (splitmix64, Box-Muller) re-implemented here, then numpy's LAPACK
          QR with torch.nn.init.orthogonal_'s sign fix. Random and transcendental values must agree within one bf16
          ulp (the two computations round differently in the last bits of a double), the rest exactly.
      Prints "OK <counts>" or every difference, and exits 1 on a difference.

  convert_reference.py pth MODEL.pth STUDENT_DIR
      torch.load(MODEL.pth, weights_only=True) must give the RWKV-LM names and shapes of hybrid-arch.md §3.1 for the
      student's config, with the same values as the safetensors student STUDENT_DIR (same teacher and seed).
"""
import json
import math
import os
import re
import struct
import sys

import numpy as np

M64 = (1 << 64) - 1


# ---- the seeded generator, as convert/init_rules.h documents it ----
def mix(x):
    x = (x + 0x9E3779B97F4A7C15) & M64
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & M64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & M64
    return x ^ (x >> 31)


def stream_key(seed, name):
    h = 0xCBF29CE484222325 ^ mix(seed ^ 0x68786F7267650000)
    for c in name.encode():
        h = ((h ^ c) * 0x100000001B3) & M64
    return mix(h)


def uniform(key, counter):
    return ((mix(key ^ mix(counter)) >> 11) + 0.5) * 2.0 ** -53


def normal(key, index):
    u1, u2 = uniform(key, 2 * index), uniform(key, 2 * index + 1)
    return math.sqrt(-2.0 * math.log(u1)) * math.cos(2.0 * math.pi * u2)


def normal_matrix(key, rows, cols):
    return np.array([normal(key, i) for i in range(rows * cols)], dtype=np.float64).reshape(rows, cols)


def orthogonal(key, rows, cols, gain):
    """torch.nn.init.orthogonal_ on our normal matrix: QR of A (Aᵀ if rows < cols), sign fix, times gain."""
    a = normal_matrix(key, rows, cols)
    m = a.T if rows < cols else a
    q, r = np.linalg.qr(m)
    q = q * np.sign(np.diag(r))
    return (q.T if rows < cols else q) * gain


def radlads_gain(rows, cols):
    return math.sqrt(rows / cols) if rows > cols else 1.0


# ---- bf16 ----
def f32_to_bf16_bits(x):
    u = np.asarray(x, dtype=np.float32).view(np.uint32).astype(np.uint64)
    return ((u + 0x7FFF + ((u >> 16) & 1)) >> 16).astype(np.uint16)


def bf16_bits_to_f32(b):
    return (b.astype(np.uint32) << 16).view(np.float32)


# ---- safetensors, read with nothing but the format description ----
def read_safetensors(path):
    with open(path, "rb") as f:
        data = f.read()
    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8:8 + n])
    base = 8 + n
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        begin, end = info["data_offsets"]
        out[name] = (info["dtype"], info["shape"], data[base + begin:base + end])
    return out


def read_folder(path):
    if os.path.isfile(path):
        return read_safetensors(path)
    out = {}
    for f in sorted(os.listdir(path)):
        if f.endswith(".safetensors"):
            out.update(read_safetensors(os.path.join(path, f)))
    return out


def as_f32(entry):
    dtype, shape, raw = entry
    if dtype == "BF16":
        return bf16_bits_to_f32(np.frombuffer(raw, dtype=np.uint16)).reshape(shape)
    if dtype == "F32":
        return np.frombuffer(raw, dtype=np.float32).reshape(shape)
    raise ValueError("dtype " + dtype)


# ---- what the spec says each student tensor is ----
def expected_rule(local, rwkv_layer):
    """(kind, details) from hybrid-arch.md §4 / hxa07i.md, by the tensor's local name."""
    transfers = {"receptance.weight": ("q_proj.weight", 0.5), "key.weight": ("k_proj.weight", 0.5),
                 "value.weight": ("v_proj.weight", 0.3), "output.weight": ("o_proj.weight", 0.5),
                 "receptance.bias": ("q_proj.bias", 0.5), "key.bias": ("k_proj.bias", 0.5),
                 "value.bias": ("v_proj.bias", 0.3)}
    if not local.startswith("self_attn.") or not rwkv_layer:
        return ("copy", None)
    leaf = local[len("self_attn."):]
    if leaf in transfers:
        return ("scale", transfers[leaf])
    tica = {"tica.q_proj.weight": ("normal", 0.02), "tica.k_proj.weight": ("normal", 0.02),
            "tica.v_proj.weight": ("normal", 0.02), "tica.o_proj.weight": ("constant", 0.0),
            "tica.q_norm.weight": ("constant", 1.0), "tica.k_norm.weight": ("constant", 1.0),
            "tica.g1": ("constant", 0.0), "tica.g2": ("orthogonal", 0.1)}
    if leaf in tica:
        return tica[leaf]
    if leaf in ("w0", "a0"):
        return ("radlads_" + leaf, None)
    if leaf in ("v0", "k0"):
        return ("constant", 0.73)
    if leaf == "r_k":
        return ("constant", -0.04)
    if re.fullmatch(r"[wavkg]1", leaf):
        return ("constant", 0.0)
    if re.fullmatch(r"[wavkg]2", leaf):
        return ("orthogonal", 0.1)
    if leaf in ("r_norm.weight", "k_norm.weight"):
        return ("norm", None)
    raise ValueError("no spec rule for " + local)


def radlads_vectors(layer, n_layer, c, n):
    idx = np.arange(c, dtype=np.float64)
    linear = idx / (c - 1) - 0.5
    zz = ((idx % n) - (n - 1) / 2) / ((n - 1) / 2)
    zigzag = zz * np.abs(zz)
    r01 = layer / (n_layer - 1)
    www = -6 + 6 * (idx / (c - 1)) ** (1 + r01 ** 0.3)
    return www + 0.5 + zigzag * 2.5, -0.19 + zigzag * 0.3 + linear * 0.4


def text_config(cfg):
    return cfg.get("text_config", cfg)


def check_values(student_dir):
    manifest = json.load(open(os.path.join(student_dir, "manifest.json")))
    cfg = text_config(json.load(open(os.path.join(student_dir, "config.json"))))
    arch = cfg["rwkv_architecture"]
    n_layer = cfg["num_hidden_layers"]
    if arch == "hxa079":
        n, c = cfg["head_dim"], cfg["num_attention_heads"] * cfg["head_dim"]
    else:
        n, c = cfg["rwkv_head_dim"], cfg["rwkv_num_heads"] * cfg["rwkv_head_dim"]
    rwkv_layers = set(cfg["rwkv_layers"])
    qk_norm_from_teacher = arch == "hxa079"
    seed = manifest["seed"]
    student = read_folder(student_dir)
    teacher_path = manifest["teacher"]["path"]
    teacher = read_folder(teacher_path)
    problems, counts = [], {}

    def ulp_compare(name, got_bits, want_f64, exact):
        want = f32_to_bf16_bits(np.asarray(want_f64, dtype=np.float64).astype(np.float32))
        diff = np.abs(got_bits.astype(np.int64) - want.reshape(got_bits.shape).astype(np.int64))
        limit = 0 if exact else 1
        if diff.max() > limit:
            problems.append("%s: %d elements differ by more than %d bf16 ulp (max %d)" %
                            (name, int((diff > limit).sum()), limit, int(diff.max())))
        elif not exact and (diff > 0).mean() > 0.01:
            problems.append("%s: %.1f%% of elements are 1 ulp off (expected rounding-boundary cases only)" %
                            (name, 100 * (diff > 0).mean()))

    for entry in manifest["tensors"]:
        name, prov = entry["name"], entry["provenance"]
        m = re.search(r"layers\.(\d+)\.(.*)$", name)
        layer, local = (int(m.group(1)), m.group(2)) if m else (-1, name)
        kind, detail = expected_rule(local, layer in rwkv_layers)
        counts[kind] = counts.get(kind, 0) + 1
        dtype, shape, raw = student[name]
        if dtype != "BF16":
            problems.append(name + ": dtype " + dtype + ", expected BF16")
            continue
        got = np.frombuffer(raw, dtype=np.uint16).reshape(shape)
        if kind == "copy":
            src = prov.get("source", {}).get("tensor")
            if prov["kind"] != "copy" or teacher[src][2] != raw:
                problems.append(name + ": not a byte copy of the teacher's " + str(src))
            continue
        if kind == "scale":
            src_local, factor = detail
            src = prov.get("source", {}).get("tensor", "")
            if prov["kind"] != "scale" or prov["scale"] != factor or not src.endswith(src_local):
                problems.append("%s: manifest says %s, spec says %s x %s" % (name, prov, factor, src_local))
                continue
            x = as_f32(teacher[src]).astype(np.float32)
            want = f32_to_bf16_bits(x * np.float32(factor))
            if not np.array_equal(want.reshape(got.shape), got):
                problems.append(name + ": not round_bf16(f32(%s) * %s)" % (src, factor))
            continue
        if kind == "norm":  # hxa079 takes them from a qk-norm teacher; hxa07i starts them at ones
            if qk_norm_from_teacher:
                continue
            kind, detail = "constant", 1.0
        rule = prov.get("init", {}).get("rule")
        if kind == "constant":
            ulp_compare(name, got, np.full(shape, detail), exact=True)
            if rule not in ("zeros", "ones", "constant"):
                problems.append(name + ": manifest rule " + str(rule))
        elif kind in ("radlads_w0", "radlads_a0"):
            w0, a0 = radlads_vectors(layer, n_layer, c, n)
            ulp_compare(name, got.reshape(-1), w0 if kind == "radlads_w0" else a0, exact=False)
        elif kind == "orthogonal":
            rows, cols = shape
            key = stream_key(seed, prov["stream"])
            want = orthogonal(key, rows, cols, radlads_gain(rows, cols) * detail)
            ulp_compare(name, got, want, exact=False)
            # The defining property, on the stored values: orthonormal rows or columns, scaled by gain·scale.
            w = bf16_bits_to_f32(got).astype(np.float64) / (radlads_gain(rows, cols) * detail)
            gram = w @ w.T if rows <= cols else w.T @ w
            if np.abs(gram - np.eye(gram.shape[0])).max() > 0.05:
                problems.append(name + ": not orthogonal (max |WWᵀ - I| %.3g)" % np.abs(gram - np.eye(len(gram))).max())
        elif kind == "normal":
            rows, cols = shape
            key = stream_key(seed, prov["stream"])
            ulp_compare(name, got, normal_matrix(key, rows, cols) * detail * radlads_gain(rows, cols), exact=False)
    if problems:
        print("\n".join(problems))
        return 1
    print("OK", json.dumps(counts, sort_keys=True))
    return 0


def check_pth(pth_path, student_dir):
    import torch
    sd = torch.load(pth_path, weights_only=True)
    cfg = text_config(json.load(open(os.path.join(student_dir, "config.json"))))
    d, v, ffn = cfg["hidden_size"], cfg["vocab_size"], cfg["intermediate_size"]
    h, n, hk = cfg["num_attention_heads"], cfg["head_dim"], cfg["num_key_value_heads"]
    c, ck = h * n, hk * n
    ranks = {k: cfg["lora_rank_" + k] for k in ("decay", "iclr", "value_residual_mix", "key_residual_mix", "gate")}
    expected = {"emb.weight": [v, d], "head.weight": [v, d], "ln_out.weight": [d]}
    for i in range(cfg["num_hidden_layers"]):
        b = "blocks.%d." % i
        expected.update({b + "ln1.weight": [d], b + "ln2.weight": [d], b + "ffn.gate.weight": [ffn, d],
                         b + "ffn.up.weight": [ffn, d], b + "ffn.down.weight": [d, ffn]})
        if i in cfg["rwkv_layers"]:
            a = b + "att."
            expected.update({a + "receptance.weight": [c, d], a + "key.weight": [ck, d], a + "value.weight": [ck, d],
                             a + "output.weight": [d, c], a + "w0": [1, 1, c], a + "w1": [d, ranks["decay"]],
                             a + "w2": [ranks["decay"], c], a + "a0": [1, 1, c], a + "a1": [d, ranks["iclr"]],
                             a + "a2": [ranks["iclr"], c], a + "v0": [1, 1, ck],
                             a + "v1": [d, ranks["value_residual_mix"]], a + "v2": [ranks["value_residual_mix"], ck],
                             a + "k0": [1, 1, ck], a + "k1": [d, ranks["key_residual_mix"]],
                             a + "k2": [ranks["key_residual_mix"], ck], a + "g1": [d, ranks["gate"]],
                             a + "g2": [ranks["gate"], c], a + "r_k": [h, n]})
        else:
            a = b + "att."
            expected.update({a + "q_proj.weight": [c, d], a + "k_proj.weight": [ck, d], a + "v_proj.weight": [ck, d],
                             a + "o_proj.weight": [d, c]})
    got = {k: list(t.shape) for k, t in sd.items()}
    problems = []
    for k in sorted(set(expected) | set(got)):
        if got.get(k) != expected.get(k):
            problems.append("%s: expected %s, found %s" % (k, expected.get(k), got.get(k)))
    # Same values as the safetensors student: HF name ← RWKV-LM name (RWKV-Infer's RenameToHFStyle).
    hf = read_folder(student_dir)
    rename = [("blocks.", "model.layers."), (".att.", ".self_attn."), (".ffn.", ".mlp."), ("ln1.", "input_layernorm."),
              ("ln2.", "post_attention_layernorm."), ("mlp.gate.", "mlp.gate_proj."), ("mlp.up.", "mlp.up_proj."),
              ("mlp.down.", "mlp.down_proj.")]
    for k, t in sd.items():
        name = {"emb.weight": "model.embed_tokens.weight", "head.weight": "lm_head.weight",
                "ln_out.weight": "model.norm.weight"}.get(k)
        if name is None:
            name = k
            for a, b in rename:
                name = name.replace(a, b)
        if t.dtype != torch.bfloat16 or name not in hf:
            problems.append("%s: dtype %s, HF twin %s %s" % (k, t.dtype, name, "found" if name in hf else "missing"))
            continue
        if t.contiguous().view(torch.int16).numpy().tobytes() != hf[name][2]:
            problems.append("%s differs from %s of the safetensors student" % (k, name))
    if problems:
        print("\n".join(problems))
        return 1
    print("OK", len(sd))
    return 0


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "values":
        sys.exit(check_values(sys.argv[2]))
    if len(sys.argv) == 4 and sys.argv[1] == "pth":
        sys.exit(check_pth(sys.argv[2], sys.argv[3]))
    print(__doc__)
    sys.exit(2)
