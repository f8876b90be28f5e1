"""Float32 safetensors files as dicts of NumPy arrays, in the layout fedc reads and writes
(common/safetensors.c): an 8-byte little-endian header length, a JSON header
{name: {dtype, shape, data_offsets}} (optional "__metadata__" of strings),
then the tensors back to back. fedc orders a model's tensors by data offset,
so write() keeps the dict's order and read() returns it in file order."""
import json
import struct

import numpy as np


def write(path, tensors, metadata=None):
    header, blobs, off = {}, [], 0
    if metadata:
        header["__metadata__"] = {str(k): str(v) for k, v in metadata.items()}
    for name, value in tensors.items():
        arr = np.ascontiguousarray(value, dtype="<f4")
        header[name] = {"dtype": "F32", "shape": list(arr.shape), "data_offsets": [off, off + arr.nbytes]}
        blobs.append(arr.tobytes())
        off += arr.nbytes
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * (-len(h) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)))
        f.write(h)
        for b in blobs:
            f.write(b)


def read(path):
    """{name: float32 array} in file (offset) order, and the metadata dict."""
    with open(path, "rb") as f:
        data = f.read()
    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8:8 + n])
    meta = header.pop("__metadata__", {}) or {}
    base = 8 + n
    out = {}
    for name, e in sorted(header.items(), key=lambda kv: kv[1]["data_offsets"][0]):
        if e["dtype"] != "F32":
            raise ValueError("%s: tensor %s is %s, not F32" % (path, name, e["dtype"]))
        s, t = e["data_offsets"]
        out[name] = np.frombuffer(data[base + s:base + t], dtype="<f4").reshape(e["shape"]).copy()
    return out, meta
