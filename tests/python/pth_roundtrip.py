#!/usr/bin/python3
"""Round trips between hxforge's .pth reader/writer and the local (Debian) torch, for formats_pth_roundtrip_test.

  pth_roundtrip.py make OUTDIR
      Writes .pth files with torch.save (zip and legacy formats: views, shared storages, every dtype this torch
      has, nested containers, parameters, a module state dict) plus a legacy file whose storages carry the old
      view metadata, and OUTDIR/manifest.json describing every tensor as torch.load(weights_only=True) sees it.
  pth_roundtrip.py check FILE EXPECTED.json
      torch.load(FILE, weights_only=True) and compare each tensor's dtype, shape and SHA-256 of its contiguous
      little-endian bytes with EXPECTED.json ({name: {"dtype", "shape", "sha256"}}); prints "OK <count>" or
      the differences and exits 1.
"""
import collections
import hashlib
import io
import json
import os
import pickle
import struct
import sys

import torch


def contiguous_bytes(t):
    t = t.detach().contiguous()
    if t.dtype == torch.bfloat16:
        t = t.view(torch.int16)  # numpy has no bfloat16; same bits
    return t.cpu().numpy().tobytes()


def sha256(t):
    return hashlib.sha256(contiguous_bytes(t)).hexdigest()


def dtype_name(dt):
    return str(dt).replace("torch.", "")


def flatten(obj, path, tensors, leaves):
    if isinstance(obj, torch.Tensor):
        tensors.append((path if path else "tensor", obj))
    elif isinstance(obj, dict):
        for k, v in obj.items():
            flatten(v, f"{path}/{k}" if path else str(k), tensors, leaves)
    elif isinstance(obj, (list, tuple)):
        for i, v in enumerate(obj):
            flatten(v, f"{path}/{i}" if path else str(i), tensors, leaves)
    else:
        leaves.append({"path": path, "type": type(obj).__name__, "value": obj})


def describe(path):
    # These files were just written here, so a full load is safe; torch 1.13's weights-only unpickler lacks BINFLOAT,
    # which the float leaves of nested() need.
    obj = torch.load(path, weights_only=False)
    tensors, leaves = [], []
    flatten(obj, "", tensors, leaves)
    groups = {}
    out = []
    for name, t in tensors:
        storage = t.storage()
        key = (storage.data_ptr(), storage.nbytes()) if storage.nbytes() else ("empty", name)
        out.append({
            "path": name,
            "dtype": dtype_name(t.dtype),
            "shape": list(t.shape),
            "stride": list(t.stride()),
            "storage_offset": t.storage_offset(),
            "storage_nbytes": storage.nbytes(),
            "storage_group": groups.setdefault(key, len(groups)),
            "sha256_contiguous": sha256(t),
        })
    return {"tensors": out, "non_tensor_leaves": leaves}


def every_dtype():
    g = torch.Generator().manual_seed(7)
    base = torch.randn(3, 4, generator=g) * 100
    d = collections.OrderedDict()
    for dt in [torch.float32, torch.float64, torch.float16, torch.bfloat16, torch.complex64, torch.complex128]:
        d[dtype_name(dt)] = base.to(dt)
    for dt in [torch.int8, torch.uint8, torch.int16, torch.int32, torch.int64]:
        d[dtype_name(dt)] = torch.randint(-128 if dt != torch.uint8 else 0, 127, (2, 5), generator=g).to(dt)
    d["int64_extremes"] = torch.tensor([-2**63, 2**63 - 1, 0, -1], dtype=torch.int64)
    d["bool"] = torch.tensor([[True, False, True], [False, False, True]])
    d["float32_special"] = torch.tensor([0.0, -0.0, float("inf"), -float("inf"), float("nan"), 1e-45])
    return d


def views():
    base = torch.arange(60, dtype=torch.float32)
    m = base.view(6, 10)
    return {
        "offset_view": base[7:19].view(3, 4),
        "transposed": m.t(),
        "column": m[:, 3],
        "shared_a": base[:20].view(4, 5),
        "shared_b": base[10:30].view(5, 4),
        "strided": m[::2, 1::3],
        "scalar": torch.tensor(3.5),
        "empty": torch.zeros(0, 4, dtype=torch.float16),
        "bf16_view": torch.arange(16, dtype=torch.bfloat16)[4:12].view(2, 4).t(),
    }


def nested():
    g = torch.Generator().manual_seed(11)
    return {
        "layers": [{"w": torch.randn(2, 3, generator=g), "b": torch.randn(2, generator=g)} for _ in range(2)],
        "pair": (torch.ones(2, dtype=torch.int32), torch.zeros(1, dtype=torch.float64)),
        "param": torch.nn.Parameter(torch.randn(4, generator=g)),
        "meta": {"name": "tiny", "version": 3, "scale": 0.25, "flags": [True, None]},
    }


def state_dict():
    torch.manual_seed(5)
    m = torch.nn.Sequential(torch.nn.Embedding(10, 4), torch.nn.Linear(4, 3), torch.nn.LayerNorm(3),
                            torch.nn.BatchNorm1d(3))
    return m.state_dict()


# ---- a legacy file whose storages are *views* of a root storage (the pre-1.x form torch.load still reads) ----

class _ViewStorage:
    def __init__(self, root_key, root_numel, view_key, offset, numel):
        self.root_key, self.root_numel = root_key, root_numel
        self.view_key, self.offset, self.numel = view_key, offset, numel


class _ViewTensor:
    def __init__(self, storage, offset, size, stride):
        self.args = (storage, offset, size, stride)

    def __reduce_ex__(self, protocol):
        storage, offset, size, stride = self.args
        return (torch._utils._rebuild_tensor_v2, (storage, offset, size, stride, False, collections.OrderedDict()))


class _LegacyPickler(pickle.Pickler):
    def persistent_id(self, obj):
        if isinstance(obj, _ViewStorage):
            return ("storage", torch.FloatStorage, obj.root_key, "cpu", obj.root_numel,
                    (obj.view_key, obj.offset, obj.numel))
        return None


def write_legacy_views(path):
    root = struct.pack("<20f", *[float(i) for i in range(20)])
    view_a = _ViewStorage("root", 20, "view_a", 4, 10)   # elements 4..13
    view_b = _ViewStorage("root", 20, "view_b", 12, 8)   # elements 12..19
    obj = {"a": _ViewTensor(view_a, 2, (2, 3), (3, 1)), "b": _ViewTensor(view_b, 0, (8,), (1,)),
           "a_again": _ViewTensor(view_a, 0, (10,), (1,))}
    with open(path, "wb") as f:
        for header in (0x1950A86A20F9469CFC6C, 1001,
                       {"protocol_version": 1001, "little_endian": True,
                        "type_sizes": {"short": 2, "int": 4, "long": 8}}):
            pickle.dump(header, f, protocol=2)
        _LegacyPickler(f, protocol=2).dump(obj)
        pickle.dump(["root"], f, protocol=2)
        f.write(struct.pack("<q", 20))
        f.write(root)


def make(outdir):
    os.makedirs(outdir, exist_ok=True)
    cases = {"every_dtype": every_dtype(), "views": views(), "nested": nested(), "state_dict": state_dict()}
    manifest = {}
    for name, obj in cases.items():
        for legacy in (False, True):
            fname = f"{name}{'_legacy' if legacy else ''}.pth"
            path = os.path.join(outdir, fname)
            torch.save(obj, path, _use_new_zipfile_serialization=not legacy)
            manifest[fname] = describe(path)
            manifest[fname]["format"] = "legacy" if legacy else "zip"
    for legacy in (False, True):  # pickle protocol 4: FRAME, MEMOIZE, SHORT_BINUNICODE, STACK_GLOBAL
        fname = f"views_protocol4{'_legacy' if legacy else ''}.pth"
        path = os.path.join(outdir, fname)
        torch.save(cases["views"], path, pickle_protocol=4, _use_new_zipfile_serialization=not legacy)
        manifest[fname] = describe(path)
        manifest[fname]["format"] = "legacy" if legacy else "zip"
    path = os.path.join(outdir, "legacy_storage_views.pth")
    write_legacy_views(path)
    manifest["legacy_storage_views.pth"] = describe(path)
    manifest["legacy_storage_views.pth"]["format"] = "legacy"
    with open(os.path.join(outdir, "manifest.json"), "w") as f:
        json.dump(manifest, f, indent=1)
    print("made", len(manifest))


def check(path, expected_path):
    with open(expected_path) as f:
        expected = json.load(f)
    obj = torch.load(path, weights_only=True)
    tensors, leaves = [], []
    flatten(obj, "", tensors, leaves)
    got = dict(tensors)
    problems = []
    if list(got) != list(expected):
        problems.append(f"names differ: torch loaded {list(got)}, expected {list(expected)}")
    for name, e in expected.items():
        t = got.get(name)
        if t is None:
            continue
        if dtype_name(t.dtype) != e["dtype"]:
            problems.append(f"{name}: dtype {dtype_name(t.dtype)}, expected {e['dtype']}")
        if list(t.shape) != e["shape"]:
            problems.append(f"{name}: shape {list(t.shape)}, expected {e['shape']}")
        if sha256(t) != e["sha256"]:
            problems.append(f"{name}: sha256 {sha256(t)}, expected {e['sha256']}")
    if problems:
        print("\n".join(problems))
        sys.exit(1)
    print("OK", len(expected))


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "make":
        make(sys.argv[2])
    elif len(sys.argv) == 4 and sys.argv[1] == "check":
        check(sys.argv[2], sys.argv[3])
    else:
        print(__doc__)
        sys.exit(2)
