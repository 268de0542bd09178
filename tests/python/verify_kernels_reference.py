#!/usr/bin/python3
"""PyTorch references for tests/verify_kernels_test.cc, computed at test time with the local (Debian) torch.

  verify_kernels_reference.py OP DIR

reads DIR/params.json and the inputs DIR/<name>.bin, writes the outputs DIR/<name>.bin. Every .bin is raw
little-endian float32 (float64 when the name ends in "_f64"), C order; shapes come from params.json. The formulas
are the ones of transformers' modeling code (Gemma4RMSNorm, LlamaRMSNorm, rotate_half RoPE with the default and
proportional inv_freq, eager attention) and of a plain float64 token loop for the RWKV-7 recurrence.

OPs: rms_norm, rope, attention, activations, rwkv7, rwkv7_pieces
"""
import json
import os
import sys

import numpy as np
import torch
import torch.nn.functional as F


def load(folder, name, shape):
    dtype = np.float64 if name.endswith("_f64") else np.float32
    data = np.fromfile(os.path.join(folder, name + ".bin"), dtype="<" + np.dtype(dtype).str[1:])
    return torch.from_numpy(data.copy()).reshape(shape)


def save(folder, name, tensor):
    dtype = np.float64 if name.endswith("_f64") else np.float32
    tensor = tensor.detach().to(torch.float64 if dtype == np.float64 else torch.float32).contiguous()
    tensor.numpy().astype("<" + np.dtype(dtype).str[1:]).tofile(os.path.join(folder, name + ".bin"))


def rms_norm(folder, p):
    dt = getattr(torch, p["dtype"])
    rows, dim, eps = p["rows"], p["dim"], p["eps"]
    x = load(folder, "x", (rows, dim)).to(dt)
    w = load(folder, "w", (dim,)).to(dt)
    if p["style"] == "gemma":  # Gemma4RMSNorm: fp32 math, weight used directly, one cast at the end
        xf = x.float()
        y = xf * torch.pow(xf.pow(2).mean(-1, keepdim=True) + eps, -0.5)
        if p["weighted"]:
            y = y * w.float()
        y = y.type_as(x)
    else:  # LlamaRMSNorm: normalise in fp32, cast to the input dtype, then weight * hidden
        h = x.to(torch.float32)
        h = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + eps)
        y = h.to(dt)
        if p["weighted"]:
            y = w * y
    save(folder, "y", y)


def rope(folder, p):
    dt = getattr(torch, p["dtype"])
    d, theta = p["head_dim"], p["theta"]
    if p["type"] == "default":
        inv_freq = 1.0 / (theta ** (torch.arange(0, d, 2, dtype=torch.int64).float() / d))
    else:  # _compute_proportional_rope_parameters: denominator is the full head dim, the rest do not rotate
        rope_angles = int(p["partial_rotary_factor"] * d // 2)
        inv_rot = 1.0 / (theta ** (torch.arange(0, 2 * rope_angles, 2, dtype=torch.int64).float() / d))
        nope = d // 2 - rope_angles
        inv_freq = torch.cat((inv_rot, torch.zeros(nope))) if nope > 0 else inv_rot
    positions = torch.tensor(p["positions"], dtype=torch.int64)[None, :]
    inv_expanded = inv_freq[None, :, None].float()
    freqs = (inv_expanded @ positions[:, None, :].float()).transpose(1, 2)[0]  # [T, d/2]
    emb = torch.cat((freqs, freqs), dim=-1)
    cos, sin = emb.cos().to(dt), emb.sin().to(dt)
    tokens, heads = len(p["positions"]), p["heads"]
    x = load(folder, "x", (tokens, heads, d)).to(dt)

    def rotate_half(t):
        return torch.cat((-t[..., d // 2:], t[..., : d // 2]), dim=-1)

    y = (x * cos[:, None, :]) + (rotate_half(x) * sin[:, None, :])
    save(folder, "inv_freq", inv_freq)
    save(folder, "cos", cos)
    save(folder, "sin", sin)
    save(folder, "y", y)


def attention(folder, p):
    dt = getattr(torch, p["dtype"])
    hq, hk, d, tokens, length = p["q_heads"], p["kv_heads"], p["head_dim"], p["tokens"], p["cache_len"]
    q = load(folder, "q", (tokens, hq, d)).to(dt).transpose(0, 1)
    k = load(folder, "k", (length, hk, d)).to(dt).transpose(0, 1).repeat_interleave(hq // hk, dim=0)  # repeat_kv
    v = load(folder, "v", (length, hk, d)).to(dt).transpose(0, 1).repeat_interleave(hq // hk, dim=0)
    scores = torch.matmul(q, k.transpose(1, 2)) * p["scale"]
    q_pos = torch.arange(tokens)[:, None] + (length - tokens)
    k_pos = torch.arange(length)[None, :]
    allowed = k_pos <= q_pos
    if p["window"] > 0:
        allowed &= k_pos > q_pos - p["window"]
    mask = torch.zeros(tokens, length, dtype=dt).masked_fill(~allowed, torch.finfo(dt).min)
    softmax_dtype = torch.float64 if dt == torch.float64 else torch.float32  # eager: softmax in fp32, then .to(dt)
    probs = F.softmax(scores + mask, dim=-1, dtype=softmax_dtype).to(dt)
    save(folder, "out_f64" if dt == torch.float64 else "out", torch.matmul(probs, v).transpose(0, 1))


def activations(folder, p):
    n = p["n"]
    x = load(folder, "x", (n,))
    up = load(folder, "up", (n,))
    save(folder, "gelu_tanh", F.gelu(x, approximate="tanh"))
    save(folder, "silu", F.silu(x))
    save(folder, "sigmoid", torch.sigmoid(x))
    save(folder, "softplus", F.softplus(x))
    save(folder, "softcap", p["cap"] * torch.tanh(x / p["cap"]))
    save(folder, "swiglu", F.silu(x) * up)
    save(folder, "geglu", F.gelu(x, approximate="tanh") * up)


def rwkv7(folder, p):
    tokens, heads, n = p["tokens"], p["heads"], p["head_dim"]
    shape = (tokens, heads, n)
    r, decay, k, v, kk, a = (load(folder, name, shape).double() for name in ("r", "decay", "k", "v", "kk", "a"))
    state = load(folder, "state", (heads, n, n)).double().clone()
    y = torch.zeros(shape, dtype=torch.float64)
    for t in range(tokens):  # the recurrence as written in hybrid-arch.md §1.2, one token at a time
        for h in range(heads):
            s = state[h]
            sa = (-kk[t, h]) @ s                                    # sa_j = Σ_i (−kk_i) S[i][j]
            s = decay[t, h][:, None] * s + (kk[t, h] * a[t, h])[:, None] * sa[None, :] + k[t, h][:, None] * v[t, h][None, :]
            state[h] = s
            y[t, h] = r[t, h] @ s                                   # y_j = Σ_i r_i S[i][j]
    save(folder, "y_f64", y)
    save(folder, "state_out_f64", state)


def rwkv7_pieces(folder, p):
    tokens, heads, n = p["tokens"], p["heads"], p["head_dim"]
    shape = (tokens, heads, n)
    z, k, a, r, v, y = (load(folder, name, shape) for name in ("z", "k", "a", "r", "v", "y"))
    bonus = load(folder, "bonus", (heads, n))
    w = -F.softplus(-z) - 0.5
    save(folder, "omega", w)
    save(folder, "decay", torch.exp(-torch.exp(w)))
    save(folder, "kk", F.normalize(k, dim=-1, p=2.0, eps=1e-12))
    save(folder, "k_scaled", k * (1 - w + a))
    save(folder, "out", y * n ** -0.5 + ((r * k * bonus).sum(dim=-1, keepdim=True) * v))


def main():
    op, folder = sys.argv[1], sys.argv[2]
    with open(os.path.join(folder, "params.json")) as f:
        params = json.load(f)
    torch.set_num_threads(1)
    {"rms_norm": rms_norm, "rope": rope, "attention": attention, "activations": activations, "rwkv7": rwkv7,
     "rwkv7_pieces": rwkv7_pieces}[op](folder, params)
    print("OK", op)


if __name__ == "__main__":
    main()
