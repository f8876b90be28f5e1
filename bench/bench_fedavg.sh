#!/usr/bin/env bash
# bench_fedavg.sh - FedAvg aggregation against its baselines in one run:
# bench_aggregate (fold, digest and both, on 1 and 2 threads; DRAM memcpy and
# naive C), then bench/fedavg_baselines.py on the same sizes (a
# reimplementation of Flower's aggregate_inplace and a NumPy weighted loop,
# Debian's python3-numpy), then one line per fedc figure with its ratios:
#   {"bench":"fedavg_vs","what":W,"threads":T,"gb_per_s":..,"ratio_vs_dram":..,
#    "vs_flower":..,"vs_numpy":..}
# All lines also go to OUT/bench_fedavg.jsonl (default: a new directory
# bench_fedavg.<date> here), with the load average when the run began.
#
#   [OUT=dir] bench/bench_fedavg.sh BUILD_DIR [updates=100] [params=1000000] [reps=5]
set -euo pipefail
B=${1:?usage: bench_fedavg.sh BUILD_DIR [updates] [params] [reps]}
K=${2:-100}
N=${3:-1000000}
R=${4:-5}
HERE=$(cd "$(dirname "$0")" && pwd)
OUT=${OUT:-$PWD/bench_fedavg.$(date -u +%Y%m%d-%H%M%S)}
mkdir -p "$OUT"
PY=/usr/bin/python3
[ -x "$PY" ] || PY=python3
load=$(cut -d' ' -f1 /proc/loadavg)
{
  "$B/bench_aggregate" "$K" "$N" "$R"
  "$PY" "$HERE/fedavg_baselines.py" "$K" "$N" "$R"
} >"$OUT/raw.jsonl"
jq -c --argjson load "$load" '. + {load_avg_1m: $load}' "$OUT/raw.jsonl" | tee "$OUT/bench_fedavg.jsonl"
jq -s -c '
  (map(select(.what == "flower_aggregate_inplace"))[0].gb_per_s) as $fl
  | (map(select(.what == "numpy_weighted_loop"))[0].gb_per_s) as $np
  | .[] | select(.what == "fold" or .what == "digest" or .what == "together")
  | {bench: "fedavg_vs", what, threads, gb_per_s, ratio_vs_dram,
     vs_flower: ((.gb_per_s / $fl) * 1000 | round / 1000), vs_numpy: ((.gb_per_s / $np) * 1000 | round / 1000)}
' "$OUT/raw.jsonl" | tee -a "$OUT/bench_fedavg.jsonl"
