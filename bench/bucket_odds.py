#!/usr/bin/env python3
"""Robustness odds of secure-aggregation buckets (docs/design.md, "Robust and
secure together"): a cohort of N with A attackers is shuffled and cut into
floor(N / s) buckets of at least s (as coord_secagg.c does). For each attacker
share and bucket size: the mean number of buckets holding an attacker, and the
chance that a round leaves a clean majority of buckets (what the median needs).
One JSON line per case.

    bench/bucket_odds.py [N=50] [TRIALS=20000]
"""
import json
import random
import sys

n = int(sys.argv[1]) if len(sys.argv) > 1 else 50
trials = int(sys.argv[2]) if len(sys.argv) > 2 else 20000
rng = random.Random(1)
for frac in (0.05, 0.10, 0.20):
    a = round(frac * n)
    for s in (3, 5, 10):
        nb = n // s
        sizes = [n // nb + (i < n % nb) for i in range(nb)]
        spoiled = clean = 0
        for _ in range(trials):
            who = [1] * a + [0] * (n - a)
            rng.shuffle(who)
            at = bad = 0
            for z in sizes:
                bad += any(who[at:at + z])
                at += z
            spoiled += bad
            clean += bad < nb / 2
        print(json.dumps({"bench": "bucket_odds", "cohort": n, "attackers": a, "bucket": s, "buckets": nb,
                          "mean_spoiled": round(spoiled / trials, 2),
                          "p_clean_majority": round(clean / trials, 3)}))
