#!/usr/bin/python3
"""fedavg_baselines.py - the Python baselines of bench_aggregate, on the same
sizes (K updates of N float32, 4 distinct sources reused round robin, weights
1 + u % 7), best of `reps`, one JSON line each:

  flower_aggregate_inplace  a reimplementation of Flower's
      flwr.server.strategy.aggregate.aggregate_inplace (Flower 1.x,
      framework/py/flwr/server/strategy/aggregate.py), written here from its
      behaviour (Apache-2.0), not a copy of its code: every update arrives as the
      bytes of np.save (as Flower's Parameters carry it) and is turned back
      into an array with np.load (parameters_to_ndarrays); the first is
      multiplied in place by its scaling factor num_examples / total, each
      later one is multiplied in place by its factor and added in place into
      the running result (np.multiply / np.add with out=). Like Flower, it
      checks nothing (no NaN/Inf, no norm) and hashes nothing.
  numpy_weighted_loop  acc += w * x over the arrays already in memory, then
      acc /= sum(w): the plainest weighted mean in NumPy (one temporary per
      update).
Each line also has the least CPU seconds of a rep (time.process_time) and
the rate per CPU second, which a machine shared with other jobs moves less
than the wall time.

Run with Debian's python3-numpy (/usr/bin/python3).

  fedavg_baselines.py [updates=100] [params=1000000] [reps=5]
"""
import io
import json
import sys
import time

import numpy as np


def np_bytes(a):
    b = io.BytesIO()
    np.save(b, a, allow_pickle=False)
    return b.getvalue()


def from_bytes(b):
    return np.load(io.BytesIO(b), allow_pickle=False)


def flower_like_aggregate_inplace(results):
    """results: list of (list of np.save bytes, num_examples)."""
    total = sum(n for _, n in results)
    factors = np.asarray([n / total for _, n in results])

    def try_inplace(x, y, op):
        if np.can_cast(y, x.dtype, casting="same_kind"):
            return op(x, y, out=x)
        return op(x, np.array(y, x.dtype), out=x)

    params = [try_inplace(from_bytes(t), factors[0], np.multiply) for t in results[0][0]]
    for i, (tensors, _) in enumerate(results[1:], start=1):
        res = [try_inplace(from_bytes(t), factors[i], np.multiply) for t in tensors]
        params = [try_inplace(p, r, np.add) for p, r in zip(params, res)]
    return params


def numpy_weighted_loop(arrays, weights):
    acc = np.zeros_like(arrays[0])
    for x, w in zip(arrays, weights):
        acc += np.float32(w) * x
    acc /= np.float32(sum(weights))
    return acc


def main():
    k = int(sys.argv[1]) if len(sys.argv) > 1 else 100
    n = int(sys.argv[2]) if len(sys.argv) > 2 else 1000000
    reps = int(sys.argv[3]) if len(sys.argv) > 3 else 5
    i = np.arange(n, dtype=np.uint64)
    src = [(((i * 2654435761) + s) % 1000).astype(np.float32) * np.float32(1e-6) for s in range(4)]
    weights = [1 + u % 7 for u in range(k)]
    gb = k * n * 4 / 1e9
    # Flower's inputs: the serialized arrays, one per update (the bytes objects
    # are shared round robin like the C bench's sources; np.load copies them).
    blobs = [np_bytes(a) for a in src]
    results = [([blobs[u % 4]], weights[u]) for u in range(k)]
    arrays = [src[u % 4] for u in range(k)]
    for name, fn in (("flower_aggregate_inplace", lambda: flower_like_aggregate_inplace(results)),
                     ("numpy_weighted_loop", lambda: numpy_weighted_loop(arrays, weights))):
        best = cpu = 1e9
        for _ in range(reps):
            c0, t0 = time.process_time(), time.perf_counter()
            out = fn()
            best = min(best, time.perf_counter() - t0)
            cpu = min(cpu, time.process_time() - c0)
        out = out[0] if isinstance(out, list) else out
        print(json.dumps({"bench": "aggregate", "what": name, "threads": 1, "updates": k, "params": n,
                          "seconds": round(best, 4), "gb_per_s": round(gb / best, 3),
                          "cpu_seconds": round(cpu, 4), "gb_per_cpu_s": round(gb / cpu, 3),
                          "numpy": np.__version__, "check": float(out[1])}), flush=True)


if __name__ == "__main__":
    main()
