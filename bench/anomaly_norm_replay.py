#!/usr/bin/env python3
"""Replay the norm feature of the update anomaly score (coordinator/anomaly.c)
on the update norms an anomaly_sweep.sh run logged (STATE/audit.log, one
`update` record per accepted update), with a chosen MAD floor, to see which
flags the norm alone gives. Only the norm: the cosines need the updates.

  bench/anomaly_norm_replay.py [--floor 0.05,0.2] RUN_DIR...

One JSON line per run and floor: honest flagged client-rounds, each
attacker's first flagged round (null: never), the highest honest ewma.
The rule is the module's: z = |norm - median| / max(1.4826 MAD, floor x
median), ewma = 0.7 ewma + 0.3 min(z, 10), flagged at ewma >= 5.
"""
import argparse, collections, json, statistics

ap = argparse.ArgumentParser()
ap.add_argument("--floor", default="0.05,0.2")
ap.add_argument("--threshold", type=float, default=5.0)
ap.add_argument("runs", nargs="+")
args = ap.parse_args()
for d in args.runs:
    try:
        byz = set(json.load(open(f"{d}/byzantine.json"))["clients"])
    except (OSError, ValueError, KeyError):
        byz = set()
    rounds = collections.defaultdict(dict)
    for line in open(f"{d}/state/audit.log"):
        r = json.loads(line)
        if r.get("kind") == "update" and r.get("outcome") == "accepted":
            rounds[r["round"]][r["client"]] = r["norm"]
    for floor in (float(f) for f in args.floor.split(",")):
        ewma, first, honest, top = collections.defaultdict(float), {}, 0, 0.0
        for rnd in sorted(rounds):
            ids = list(rounds[rnd])
            v = [rounds[rnd][i] for i in ids]
            med = statistics.median(v)
            scale = max(1.4826 * statistics.median([abs(x - med) for x in v]), floor * med + 1e-12)
            for i, x in zip(ids, v):
                ewma[i] = 0.7 * ewma[i] + 0.3 * min(abs(x - med) / scale, 10.0)
                if i not in byz:
                    top = max(top, ewma[i])
                if ewma[i] >= args.threshold:
                    if i in byz:
                        first.setdefault(i, rnd)
                    else:
                        honest += 1
        print(json.dumps({"run": d, "floor": floor, "rounds": len(rounds), "honest_flags": honest,
                          "first_flag": {i: first.get(i) for i in sorted(byz)}, "max_honest_ewma": round(top, 2)}))
