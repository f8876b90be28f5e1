#!/usr/bin/env bash
# async_compare.sh - synchronous rounds against asynchronous buffers (FedBuff,
# issue 25) on one simulated fleet, through `fedc sim` (real processes over
# mTLS): Fashion-MNIST, 100 clients, Dirichlet(0.5), MLP 784-200-200-10, each
# client's tasks slowed by the device-speed model (compute 300 ms and network
# 100 ms medians, lognormal sigma 0.5; 20% stragglers 10x slower).
#
# One JSON line per run: the wall time, versions and bytes uploaded (accepted
# updates' bytes_in, abandoned rounds' too) until the central test accuracy
# first reaches TARGET, or the best accuracy if it never does.
#   sync        cohort 10, a round waits for all 10 (deadline 60 s)
#   sync-DL     cohort 10, min-updates 7, deadline DL ms (late updates dropped)
#   async-C-K   --async-concurrency C, --async-buffer K
#
#   bench/async_compare.sh BUILD_DIR [TARGET [ROUNDS [SEEDS [RUNS]]]]
#   defaults: 0.83, 120, "1", "sync sync-2000 async-20-10"
set -euo pipefail
B=${1:?usage: async_compare.sh BUILD_DIR [TARGET [ROUNDS [SEEDS [RUNS]]]]}
TARGET=${2:-0.83}
ROUNDS=${3:-120}
read -r -a SEEDS <<<"${4:-1}"
read -r -a RUNS <<<"${5:-sync sync-2000 async-20-10}"
T=$(mktemp -d /tmp/fedc-async.XXXXXX)
trap 'rm -rf "$T"' EXIT
for seed in "${SEEDS[@]}"; do
  for run in "${RUNS[@]}"; do
    args=(--clients 100 --cohort 10 --rounds "$ROUNDS" --seed "$seed" --alpha 0.5 --device-speed 300:100:0.5
      --stragglers 0.2 --coordinator-opt=--upload-rate=0)
    case $run in
    sync) ;;
    sync-*) args+=(--min-updates 7 --round-timeout-ms "${run#sync-}") ;;
    async-*-*)
      c=${run#async-}
      args+=(--mode async "--coordinator-opt=--async-concurrency=${c%-*}" "--coordinator-opt=--async-buffer=${c#*-}")
      ;;
    *) echo "async_compare: unknown run '$run'" >&2; exit 2 ;;
    esac
    echo "async_compare: $run seed $seed..." >&2
    "$B/fedc" sim --out "$T/out" "${args[@]}" >"$T/run.out" 2>"$T/run.err" || { tail -5 "$T/run.err" >&2; continue; }
    python3 - "$T/out" "$TARGET" "$run" "$seed" <<'PY'
import csv, json, sys
d, target, run, seed = sys.argv[1], float(sys.argv[2]), sys.argv[3], int(sys.argv[4])
rows = list(csv.DictReader(open(f"{d}/rounds.csv")))
recs = [json.loads(l) for l in open(f"{d}/state/rounds.jsonl")]
t0 = min(r["started_unix_ms"] for r in recs)
byv = {r["version"]: r for r in recs if r.get("outcome") == "completed"}
out = {"bench": "async_compare", "run": run, "seed": seed, "target": target}
for row in rows:
    r = byv[int(row["version"])]
    if float(row["accuracy"]) >= target:
        upto = [x for x in recs if x["ended_unix_ms"] <= r["ended_unix_ms"]]
        out.update(reached=True, version=r["version"], seconds=round((r["ended_unix_ms"] - t0) / 1000, 1),
                   uploaded_mib=round(sum(x["bytes_in"] for x in upto) / 2**20, 1),
                   abandoned=sum(1 for x in upto if x["outcome"] != "completed"))
        break
else:
    out.update(reached=False, best=max(float(x["accuracy"]) for x in rows), versions=len(rows),
               seconds=round((max(x["ended_unix_ms"] for x in recs) - t0) / 1000, 1),
               uploaded_mib=round(sum(x["bytes_in"] for x in recs) / 2**20, 1))
print(json.dumps(out))
PY
    rm -rf "$T/out"
  done
done
