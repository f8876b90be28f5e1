#!/usr/bin/env python3
"""async_compare_summary.py - one JSON line for one run of bench/async_compare.sh.

  async_compare_summary.py OUT TARGET NAME SEED LOAD_START LOAD_END LOADS_FILE CONNS_FILE ARGS

From OUT/rounds.csv (the central test accuracy of each version) and
OUT/state/rounds.jsonl (the coordinator's record of each round or buffer):
the wall time from the first round's start to the end of the first version at
TARGET (and the mean accuracy of the 5 versions up to it: a noisy curve that
spikes across TARGET once shows a lower mean), the bytes of the updates accepted until then (abandoned rounds'
included), the number of those updates, and the uploads refused until then
from the coordinator's log by reason (their streams are cut after the first message,
so their bytes are in neither mode's uploaded_mib). Not reached: the same at
the last version, with the best accuracy.
"""
import csv
import json
import sys

d, target, run, seed = sys.argv[1], float(sys.argv[2]), sys.argv[3], int(sys.argv[4])
loads = [float(x.split()[1]) for x in open(sys.argv[7]) if len(x.split()) == 2]
# (unix_ms, bytes received over all connections seen so far): each connection's
# latest count, kept after it closes.
samples, last = [], {}
for line in open(sys.argv[8]):
    f = line.split()
    if len(f) != 3:
        continue
    ts, peer, n = int(f[0]), f[1], int(f[2])
    if samples and samples[-1][0] != ts:
        samples[-1][2] = sum(last.values())
    last[peer] = n
    if not samples or samples[-1][0] != ts:
        samples.append([ts, 0, 0])
if samples:
    samples[-1][2] = sum(last.values())


def rx_mib(until_ms):
    """The coordinator's TCP bytes received at until_ms (linear between the
    samples around it; the largest sample when until_ms is None or later)."""
    xs = [x for x in samples if x[2] > 0]
    if not xs:
        return None
    if until_ms is None or until_ms >= xs[-1][0]:  # the most seen (clients close their connections at the end)
        return round(max(x[2] for x in xs) / 2**20, 1)
    if until_ms <= xs[0][0]:
        return round(xs[0][2] / 2**20, 1)
    for p, q in zip(xs, xs[1:]):
        if p[0] <= until_ms <= q[0]:
            f = (until_ms - p[0]) / (q[0] - p[0]) if q[0] > p[0] else 1.0
            return round((p[2] + f * (q[2] - p[2])) / 2**20, 1)
    return None


rows = [x for x in csv.DictReader(open(f"{d}/rounds.csv")) if x.get("accuracy")]  # not a cut last line
recs = [json.loads(line) for line in open(f"{d}/state/rounds.jsonl")]
t0 = min(r["started_unix_ms"] for r in recs)
byv = {r["version"]: r for r in recs if r.get("outcome") == "completed"}


def log_refusals():
    """(unix_ms, reason) of each upload the coordinator's log says it rejected
    (BUFFER_FULL and LATE ones are logged, not audited)."""
    import datetime
    out = []
    try:
        lines = open(f"{d}/logs/coordinator.log", errors="replace").readlines()
    except OSError:
        return out
    for line in lines:
        if " rejected: " not in line or "upload from" not in line:
            continue
        try:
            ts = datetime.datetime.strptime(line[:23], "%Y-%m-%dT%H:%M:%S.%f").replace(tzinfo=datetime.timezone.utc)
        except ValueError:
            continue
        why = line.split(" rejected: ", 1)[1]
        why = why.replace("update refused: ", "").split(":")[0].split(" (round")[0].strip()
        why = "stale: beyond max staleness" if why.startswith("update trained from version") else why[:40]
        out.append((ts.timestamp() * 1000, why))
    return out


LOGREF = log_refusals()


def refused(until_ms):
    """Uploads refused until until_ms, by reason (the coordinator's log names
    every refusal; the audit log only those of a known round)."""
    n = {}
    for ts, why in LOGREF:
        if until_ms is None or ts <= until_ms:
            n[why] = n.get(why, 0) + 1
    return n


out = {"bench": "async_compare", "run": run, "seed": seed, "target": target}
for row in rows:
    r = byv.get(int(row["version"]))
    if r and float(row["accuracy"]) >= target:
        upto = [x for x in recs if x["ended_unix_ms"] <= r["ended_unix_ms"]]
        i = rows.index(row)
        last5 = [float(x["accuracy"]) for x in rows[max(0, i - 4):i + 1]]
        out.update(reached=True, version=r["version"], mean_last5=round(sum(last5) / len(last5), 4), seconds=round((r["ended_unix_ms"] - t0) / 1000, 1),
                   uploaded_mib=round(sum(x["bytes_in"] for x in upto) / 2**20, 1),
                   updates=sum(x.get("participants", 0) for x in upto),
                   abandoned=sum(1 for x in upto if x["outcome"] != "completed"),
                   refused=refused(r["ended_unix_ms"]), wire_in_mib=rx_mib(r["ended_unix_ms"]))
        break
else:
    out.update(reached=False, best=max(float(x["accuracy"]) for x in rows), versions=len(rows),
               seconds=round((max(x["ended_unix_ms"] for x in recs) - t0) / 1000, 1),
               uploaded_mib=round(sum(x["bytes_in"] for x in recs) / 2**20, 1),
               updates=sum(x.get("participants", 0) for x in recs), refused=refused(None),
               wire_in_mib=rx_mib(None))
out.update(load_start=float(sys.argv[5]), load_end=float(sys.argv[6]),
           load_mean=round(sum(loads) / len(loads), 2) if loads else None, args=sys.argv[9])
print(json.dumps(out))
