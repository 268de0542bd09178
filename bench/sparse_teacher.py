#!/usr/bin/python3
"""Extends a layered teacher (a folder: config.json + safetensors) to N layers whose weights are all zero, written as
a sparse file: the header is real, the data a hole that takes no disk blocks.

Why: the full-depth benchmark of issue #5 (a 44-layer reka-flash-3 teacher, ~42 GB) and its ~43 GB student do not
both fit on a machine with ~60 GB of free disk. With this teacher the whole conversion still runs at full depth
(every tensor mapped, transformed, hashed and written; the student is real data on disk), which is what the
memory bound is about. Its reads cost nothing (holes read as zeros from memory), so the time of such a run is NOT
a throughput figure against `cp`: measure that on a real teacher (bench/convert_bench.sh).

    bench/sparse_teacher.py SMALL_TEACHER N OUT

Layer i's tensors are layer 0's names with the index replaced, in the same dtypes and shapes; the other tensors
(embedding, final norm, head) are kept. config.json gets num_hidden_layers = N. For teachers whose layers are all
alike (Llama/Reka); a config with per-layer lists (Gemma's layer_types) is refused.
"""
import json
import os
import re
import struct
import sys


def read_header(path):
    with open(path, "rb") as f:
        (size,) = struct.unpack("<Q", f.read(8))
        return json.loads(f.read(size))


def main():
    if len(sys.argv) != 4:
        sys.exit(__doc__)
    source, layers, out = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    index_path = os.path.join(source, "model.safetensors.index.json")
    files = ["model.safetensors"]
    if os.path.exists(index_path):
        with open(index_path) as f:
            files = sorted(set(json.load(f)["weight_map"].values()))
    entries = {}
    for name in files:
        for key, value in read_header(os.path.join(source, name)).items():
            if key != "__metadata__":
                entries[key] = value
    layer = re.compile(r"^(.*\.layers\.)(\d+)(\..*)$")
    template = {k: v for k, v in entries.items() if (m := layer.match(k)) and m.group(2) == "0"}
    others = {k: v for k, v in entries.items() if not layer.match(k)}
    if not template:
        sys.exit(f"{source}: no tensors named '*.layers.0.*' to repeat")

    header, offset = {}, 0

    def add(name, spec):
        nonlocal offset
        size = spec["data_offsets"][1] - spec["data_offsets"][0]
        header[name] = {"dtype": spec["dtype"], "shape": spec["shape"], "data_offsets": [offset, offset + size]}
        offset += size

    for name, spec in others.items():
        if ".embed" in name:
            add(name, spec)
    for i in range(layers):
        for name, spec in template.items():
            m = layer.match(name)
            add(f"{m.group(1)}{i}{m.group(3)}", spec)
    for name, spec in others.items():
        if ".embed" not in name:
            add(name, spec)

    os.makedirs(out, exist_ok=False)
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    with open(os.path.join(out, "model.safetensors"), "wb") as f:
        f.write(struct.pack("<Q", len(text)) + text)
        f.truncate(8 + len(text) + offset)  # the data: a hole, zeros when read
    with open(os.path.join(source, "config.json")) as f:
        config = json.load(f)
    if any(isinstance(v, list) and len(v) == config["num_hidden_layers"] for v in config.values()):
        sys.exit(f"{source}/config.json has per-layer lists (e.g. layer_types): only uniform teachers are extended")
    config["num_hidden_layers"] = layers
    with open(os.path.join(out, "config.json"), "w") as f:
        json.dump(config, f, indent=1)
    print(f"{out}: {layers} layers, {offset / 1e9:.2f} GB of zero weights in a sparse file")


if __name__ == "__main__":
    main()
