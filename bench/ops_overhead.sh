#!/usr/bin/env bash
# Production operations' cost on round time: the same federation with the
# audit log and the metrics endpoint on (scraped every second, as Prometheus
# would) and with both off, measured in the same run, alternating.
# Fashion-MNIST, MLP 784-1024-200-10 (1.01M parameters), N clients.
# One JSON line per configuration and one with the ratio.
#
#   bench/ops_overhead.sh FEDC OUTDIR [CLIENTS=100] [ROUNDS=5]
set -euo pipefail
FEDC=${1:?usage: ops_overhead.sh FEDC OUTDIR [CLIENTS] [ROUNDS]}
OUT=${2:?}
N=${3:-100}
R=${4:-5}
mkdir -p "$OUT"
run() { # NAME ARGS...
  local name=$1 port
  shift
  rm -rf "$OUT/$name"
  echo "ops_overhead: $name" >&2
  "$FEDC" sim --out "$OUT/$name" --clients "$N" --cohort "$N" --rounds "$R" --model 784-1024-200-10 --seed 1 \
    --poll-ms 500 --json "$@" >"$OUT/$name.jsonl" 2>"$OUT/$name.err" &
  local sim=$!
  if [ "$name" = on ]; then
    # Scrape once a second while it runs (the port is in the coordinator's log).
    while kill -0 "$sim" 2>/dev/null; do
      port=$(grep -o "metrics on http://127.0.0.1:[0-9]*" "$OUT/$name/logs/coordinator.log" 2>/dev/null | sed 's/.*://' || true)
      [ -n "$port" ] && curl -fsS "http://127.0.0.1:$port/metrics" -o /dev/null 2>/dev/null || true
      sleep 1
    done
  fi
  wait "$sim"
  python3 - "$OUT/$name.jsonl" "$name" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.startswith("{")]
secs = [r["seconds"] for r in rows]
print(json.dumps({"bench": "ops_overhead", "config": sys.argv[2], "rounds": len(rows),
                  "mean_round_s": round(sum(secs) / len(secs), 3), "round_s": secs}))
PY
}
{
  run off --coordinator-opt=--audit-log=false
  run on --coordinator-opt=--audit-log=true --coordinator-opt=--metrics-listen=127.0.0.1:0
} | tee "$OUT/ops_overhead.jsonl"
python3 - "$OUT/ops_overhead.jsonl" <<'PY'
import json, sys
r = {j["config"]: j for j in map(json.loads, open(sys.argv[1]))}
print(json.dumps({"bench": "ops_overhead", "ratio_on_over_off": round(r["on"]["mean_round_s"] / r["off"]["mean_round_s"], 4)}))
PY
