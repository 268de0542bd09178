#!/usr/bin/python3
"""An independent float64 transcription of the Gemma-4 text stack and of hxa07i (Gemma-4 with RWKV-7 + TICA in its
full layers), for tests/verify_forward_synth_test.cc. Written from ../shared/reference/teachers.md §2 and
../shared/spec/hxa07i.md, not from the C++ code; run at test time with Debian's torch.

  forward_reference.py MODEL_DIR TOKENS OUT_DIR

MODEL_DIR holds config.json and model.safetensors or an index.json with shards (read with a reader of its own); TOKENS is a comma-separated
list of ids. Writes OUT_DIR/logits.bin (float64, [T, V]) and OUT_DIR/logits_without_tica.bin (the same model with
every TICA output dropped, so a test can show that TICA matters).
"""
import json
import math
import os
import struct
import sys

import numpy as np
import torch

torch.set_default_dtype(torch.float64)


def read_safetensors(path):
    with open(path, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(n))
        data = f.read()
    tensors = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        begin, end = info["data_offsets"]
        raw = np.frombuffer(data[begin:end], dtype=np.uint8)
        if info["dtype"] == "BF16":
            values = (raw.view("<u2").astype(np.uint32) << 16).view("<f4")
        elif info["dtype"] == "F16":
            values = raw.view("<f2")
        elif info["dtype"] == "F32":
            values = raw.view("<f4")
        else:
            raise SystemExit(f"{path}: tensor {name} has dtype {info['dtype']}, not BF16/F16/F32")
        tensors[name] = torch.from_numpy(values.astype(np.float64)).reshape(info["shape"])
    return tensors


def rms_norm(x, weight, eps):
    y = x / torch.sqrt((x * x).mean(-1, keepdim=True) + eps)
    return y * weight if weight is not None else y


def gelu_tanh(x):
    return 0.5 * x * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x ** 3)))


def inv_freq(rope, head_dim):
    theta = rope["rope_theta"]
    if rope.get("rope_type", "default") == "proportional":
        rotated = int(rope["partial_rotary_factor"] * head_dim // 2)
        f = torch.zeros(head_dim // 2)
        f[:rotated] = 1.0 / theta ** (torch.arange(rotated) * 2.0 / head_dim)
        return f
    return 1.0 / theta ** (torch.arange(head_dim // 2) * 2.0 / head_dim)


def apply_rope(x, freqs, positions):  # x [T, heads, d], NeoX half split
    angle = positions[:, None] * freqs[None, :]
    cos = torch.cat([torch.cos(angle)] * 2, -1)[:, None, :]
    sin = torch.cat([torch.sin(angle)] * 2, -1)[:, None, :]
    half = x.shape[-1] // 2
    rotated = torch.cat([-x[..., half:], x[..., :half]], -1)
    return x * cos + rotated * sin


def attention(q, k, v, scale, window):  # q [T, H, d], k/v [T, Hkv, d]; causal, optional window, GQA
    t, heads, _ = q.shape
    group = heads // k.shape[1]
    k = k.repeat_interleave(group, dim=1)
    v = v.repeat_interleave(group, dim=1)
    scores = torch.einsum("thd,shd->hts", q, k) * scale
    i = torch.arange(t)[:, None]
    j = torch.arange(t)[None, :]
    allowed = j <= i
    if window:
        allowed = allowed & (j > i - window)
    scores = scores.masked_fill(~allowed, float("-inf"))
    return torch.einsum("hts,shd->thd", torch.softmax(scores, -1), v)


def main():
    model_dir, token_text, out_dir = sys.argv[1:4]
    cfg = json.load(open(os.path.join(model_dir, "config.json")))
    if "text_config" in cfg:  # Gemma4ForConditionalGeneration: the text keys nest, the hybrid keys may not
        merged = dict(cfg["text_config"])
        merged.update({k: v for k, v in cfg.items() if k != "text_config" and k not in merged})
        cfg = merged
    index = os.path.join(model_dir, "model.safetensors.index.json")
    if os.path.exists(index):  # sharded: every shard the weight map names
        w = {}
        for shard in sorted(set(json.load(open(index))["weight_map"].values())):
            w.update(read_safetensors(os.path.join(model_dir, shard)))
    else:
        w = read_safetensors(os.path.join(model_dir, "model.safetensors"))
    prefix = "model.language_model." if "model.language_model.embed_tokens.weight" in w else "model."
    ids = torch.tensor([int(s) for s in token_text.split(",")])
    T = len(ids)
    D = cfg["hidden_size"]
    L = cfg["num_hidden_layers"]
    eps = cfg["rms_norm_eps"]
    types = cfg["layer_types"]
    rwkv_layers = set(cfg.get("rwkv_layers", []))
    if cfg.get("rwkv_architecture", "hxa07i") != "hxa07i" and rwkv_layers:
        raise SystemExit("only hxa07i hybrids are transcribed here")
    for flag in ("rwkv_value_residual", "rwkv_key_residual", "rwkv_bonus"):
        if cfg.get(flag, False):
            raise SystemExit(f"{flag} is not transcribed (hxa07i.md [choice]: off)")
    if cfg.get("rwkv_k_scaling", "decay") != "decay":
        raise SystemExit("hxa07i scales k with the decay (hxa07i.md)")
    head_dim = cfg["head_dim"]
    global_head_dim = cfg.get("global_head_dim", head_dim)
    per_layer = {int(k): v["head_dim"] for k, v in cfg.get("per_layer_config", {}).items()}
    first_shared = L - cfg.get("num_kv_shared_layers", 0)
    P = cfg["hidden_size_per_layer_input"]
    positions = torch.arange(T, dtype=torch.float64)

    def W(name):
        return w[prefix + name]

    def layer_w(i, name):
        return w[f"{prefix}layers.{i}.{name}"]

    def run(with_tica):
        h = W("embed_tokens.weight")[ids] * math.sqrt(D)
        tok = W("embed_tokens_per_layer.weight")[ids].reshape(T, L, P) * math.sqrt(P)
        proj = (h @ W("per_layer_model_projection.weight").T * D ** -0.5).reshape(T, L, P)
        proj = rms_norm(proj, W("per_layer_projection_norm.weight"), eps)
        ple = (proj + tok) * 2 ** -0.5
        kv = {}
        for i in range(L):
            kind = types[i]
            x = rms_norm(h, layer_w(i, "input_layernorm.weight"), eps)
            if i in rwkv_layers:
                N = cfg["rwkv_head_dim"]
                Hr, Hkr = cfg["rwkv_num_heads"], cfg["rwkv_num_kv_heads"]
                a = "self_attn."
                r = (x @ layer_w(i, a + "receptance.weight").T).reshape(T, Hr, N)
                k = (x @ layer_w(i, a + "key.weight").T).reshape(T, Hkr, N)
                v = (x @ layer_w(i, a + "value.weight").T).reshape(T, Hkr, N)
                if cfg.get("enable_qk_norm", True):
                    r = rms_norm(r, layer_w(i, a + "r_norm.weight"), eps)
                    k = rms_norm(k, layer_w(i, a + "k_norm.weight"), eps)
                k = k.repeat_interleave(Hr // Hkr, dim=1)
                v = v.repeat_interleave(Hr // Hkr, dim=1)
                iclr = torch.sigmoid(layer_w(i, a + "a0") + x @ layer_w(i, a + "a1") @ layer_w(i, a + "a2")).reshape(T, Hr, N)
                z = layer_w(i, a + "w0") + torch.tanh(x @ layer_w(i, a + "w1")) @ layer_w(i, a + "w2")
                decay = torch.exp(-torch.exp(-torch.nn.functional.softplus(-z) - 0.5)).reshape(T, Hr, N)
                kk = k / torch.clamp(k.norm(dim=-1, keepdim=True), min=1e-12)
                k = k * (1 - decay + iclr)
                S = torch.zeros(Hr, N, N)
                y = torch.zeros(T, Hr, N)
                for t in range(T):
                    sa = torch.einsum("hi,hij->hj", -kk[t], S)
                    S = decay[t][:, :, None] * S + (kk[t] * iclr[t])[:, :, None] * sa[:, None, :] + k[t][:, :, None] * v[t][:, None, :]
                    y[t] = torch.einsum("hi,hij->hj", r[t], S)
                gate = torch.sigmoid(x @ layer_w(i, a + "g1")) @ layer_w(i, a + "g2")
                mix = ((y.reshape(T, Hr * N) / math.sqrt(N)) * gate) @ layer_w(i, a + "output.weight").T
                if with_tica:
                    hd, Ht, Htk = cfg["tica_head_dim"], cfg["tica_num_heads"], cfg["tica_num_kv_heads"]
                    t_ = "self_attn.tica."
                    tq = rms_norm((x @ layer_w(i, t_ + "q_proj.weight").T).reshape(T, Ht, hd), layer_w(i, t_ + "q_norm.weight"), eps)
                    tk = rms_norm((x @ layer_w(i, t_ + "k_proj.weight").T).reshape(T, Htk, hd), layer_w(i, t_ + "k_norm.weight"), eps)
                    tv = (x @ layer_w(i, t_ + "v_proj.weight").T).reshape(T, Htk, hd)
                    att = attention(tq, tk, tv, 1.0 / math.sqrt(hd), 0).reshape(T, Ht * hd)
                    tgate = torch.sigmoid(x @ layer_w(i, t_ + "g1")) @ layer_w(i, t_ + "g2")
                    mix = mix + (att * tgate) @ layer_w(i, t_ + "o_proj.weight").T
            else:
                hd = per_layer.get(i, global_head_dim if kind == "full_attention" else head_dim)
                H, Hkv = cfg["num_attention_heads"], cfg["num_key_value_heads"]
                rope = cfg["rope_parameters"][kind]
                freqs = inv_freq(rope, hd)
                q = (x @ layer_w(i, "self_attn.q_proj.weight").T).reshape(T, H, hd)
                q = apply_rope(rms_norm(q, layer_w(i, "self_attn.q_norm.weight"), eps), freqs, positions)
                if i < first_shared:
                    k = (x @ layer_w(i, "self_attn.k_proj.weight").T).reshape(T, Hkv, hd)
                    v = (x @ layer_w(i, "self_attn.v_proj.weight").T).reshape(T, Hkv, hd)
                    k = apply_rope(rms_norm(k, layer_w(i, "self_attn.k_norm.weight"), eps), freqs, positions)
                    v = rms_norm(v, None, eps)
                    kv[kind] = (k, v)  # the last non-shared layer of each type is what shared layers read
                k, v = kv[kind]
                window = cfg["sliding_window"] if kind == "sliding_attention" else 0
                mix = attention(q, k, v, 1.0, window).reshape(T, H * hd) @ layer_w(i, "self_attn.o_proj.weight").T
            h = h + rms_norm(mix, layer_w(i, "post_attention_layernorm.weight"), eps)
            x = rms_norm(h, layer_w(i, "pre_feedforward_layernorm.weight"), eps)
            m = (gelu_tanh(x @ layer_w(i, "mlp.gate_proj.weight").T) * (x @ layer_w(i, "mlp.up_proj.weight").T)) @ layer_w(i, "mlp.down_proj.weight").T
            h = h + rms_norm(m, layer_w(i, "post_feedforward_layernorm.weight"), eps)
            g = gelu_tanh(h @ layer_w(i, "per_layer_input_gate.weight").T) * ple[:, i, :]
            h = h + rms_norm(g @ layer_w(i, "per_layer_projection.weight").T, layer_w(i, "post_per_layer_input_norm.weight"), eps)
            h = h * layer_w(i, "layer_scalar")
        logits = rms_norm(h, W("norm.weight"), eps) @ W("embed_tokens.weight").T
        cap = cfg.get("final_logit_softcapping")
        return cap * torch.tanh(logits / cap) if cap else logits

    os.makedirs(out_dir, exist_ok=True)
    run(True).numpy().astype("<f8").tofile(os.path.join(out_dir, "logits.bin"))
    run(False).numpy().astype("<f8").tofile(os.path.join(out_dir, "logits_without_tica.bin"))


if __name__ == "__main__":
    main()
