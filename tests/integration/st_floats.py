"""st_floats.py - the float32 payload of a safetensors file, tensors in file
order, as one flat list: what the integration tests compare models with.
   PYTHONPATH=tests/integration python3 -c 'from st_floats import load'"""
import json
import struct


def load(path):
    b = open(path, "rb").read()
    n = struct.unpack("<Q", b[:8])[0]
    h = json.loads(b[8:8 + n])
    h.pop("__metadata__", None)
    out = []
    for name in sorted(h, key=lambda k: h[k]["data_offsets"][0]):
        s, e = h[name]["data_offsets"]
        out += struct.unpack("<%df" % ((e - s) // 4), b[8 + n + s:8 + n + e])
    return out
