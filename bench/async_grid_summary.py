#!/usr/bin/env python3
"""async_grid_summary.py - issue 25's verdict from bench/async_grid.sh's JSON lines.

Per seed and async cell: the median wall time and uploaded MiB to the target over its runs, each against the
median of the same file's synchronous runs of that seed (BASE, default sync-1000), and whether the goal (at least
2x as fast, no more bytes) holds on the medians. A run that never reached the target counts as infinitely slow.
One JSON line per seed and cell with --json.

    bench/async_grid_summary.py GRID.jsonl [--base sync-1000] [--json]
"""
import argparse
import collections
import json
import statistics
import sys


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("grid")
    ap.add_argument("--base", default="sync-1000")
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args()
    runs = collections.defaultdict(list)
    with open(a.grid) as f:
        for line in f:
            line = line.strip()
            if line.startswith("{"):
                r = json.loads(line)
                runs[(r["seed"], r["run"])].append(r)
    secs = lambda rs: statistics.median(r["seconds"] if r["reached"] else float("inf") for r in rs)
    mib = lambda rs: statistics.median(r["uploaded_mib"] for r in rs)
    verdicts = []
    for seed in sorted({s for s, _ in runs}):
        base = runs.get((seed, a.base))
        if not base:
            continue
        bs, bm = secs(base), mib(base)
        if not a.json:
            print(f"seed {seed}: {a.base} x{len(base)}: median {bs:.1f} s, {bm:.0f} MiB")
        for (s, run), rs in sorted(runs.items()):
            if s != seed or run == a.base or run.startswith("sync"):
                continue
            speed, byt = bs / secs(rs), mib(rs) / bm
            ok = speed >= 2 and byt <= 1
            verdicts.append(ok)
            per = [[r["seconds"], r["uploaded_mib"], r["reached"]] for r in rs]
            if a.json:
                print(json.dumps({"seed": seed, "run": run, "runs": len(rs), "base_runs": len(base),
                                  "seconds": secs(rs), "uploaded_mib": mib(rs), "base_seconds": bs, "base_mib": bm,
                                  "speedup": round(speed, 3), "bytes_ratio": round(byt, 3), "goal_met": ok,
                                  "each": per}))
            else:
                print(f"  {run} x{len(rs)}: {speed:.2f}x as fast, {byt:.2f}x the bytes {'(goal met)' if ok else ''}"
                      f"  runs: {per}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
