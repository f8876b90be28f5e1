#!/usr/bin/env bash
# Differential privacy on Fashion-MNIST: 1,000 clients (Dirichlet 0.5), 50
# expected per round (Poisson rate 0.05 under DP), MLP 784-200-200-10, for
# noise multipliers 0 (no DP), 0.5, 1.0 (clip 0.5) and adaptive clipping
# (z 1.0, quantile 0.5 from clip 0.1), with and without secure aggregation.
# Prints one JSON line per configuration: accuracy at rounds 100 and R and
# epsilon at delta 1e-5 (what rounds.jsonl recorded).
#
#   bench/dp_sweep.sh FEDC OUTDIR [ROUNDS=300] [plain|secagg|all] [CONFIG...]
#   CONFIG: nodp z0.5 z1.0 adaptive (default: all four)
set -euo pipefail
FEDC=${1:?usage: dp_sweep.sh FEDC OUTDIR [ROUNDS] [plain|secagg|all] [CONFIG...]}
OUT=${2:?}
ROUNDS=${3:-300}
MODES=${4:-all}
shift $(($# < 4 ? $# : 4))
CONFIGS=("$@")
[ ${#CONFIGS[@]} -gt 0 ] || CONFIGS=(nodp z0.5 z1.0 adaptive)
mkdir -p "$OUT"
COMMON=(--clients 1000 --cohort 50 --rounds "$ROUNDS" --poll-ms 2000 --partition dirichlet --alpha 0.5 --seed 1
  --round-timeout-ms 120000 --json)
case $MODES in all) MODES="plain secagg" ;; esac
for mode in $MODES; do
  SA=()
  # SecAgg+ among ~50: 16 neighbours, threshold 9 (fedc secagg-params for
  # n 50, 5% dropout, 5% corrupt finds k in this range).
  [ "$mode" = secagg ] && SA=(--secagg --secagg-neighbors 16 --secagg-threshold 9)
  for cfg in "${CONFIGS[@]}"; do
    case $cfg in
    nodp) ARGS=(--clip-norm 0.5) ;;
    z0.5) ARGS=(--clip-norm 0.5 --dp-noise 0.5) ;;
    z1.0) ARGS=(--clip-norm 0.5 --dp-noise 1.0) ;;
    adaptive) ARGS=(--clip-norm 0.1 --dp-noise 1.0 --dp-adaptive-quantile 0.5) ;;
    *) echo "unknown config $cfg" >&2 && exit 2 ;;
    esac
    dir="$OUT/$mode-$cfg"
    rm -rf "$dir"
    echo "dp_sweep: $mode $cfg -> $dir" >&2
    if ! "$FEDC" sim --out "$dir" "${COMMON[@]}" "${SA[@]}" "${ARGS[@]}" >"$dir.jsonl" 2>"$dir.err"; then
      echo "dp_sweep: $mode $cfg failed: $(tail -3 "$dir.err")" >&2
      continue
    fi
    python3 - "$dir" "$mode" "$cfg" "$ROUNDS" <<'EOF'
import json, sys
d, mode, cfg, R = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
sim = [json.loads(l) for l in open(d + ".jsonl") if l.startswith("{")]
acc = {r["round"]: r["accuracy"] for r in sim}
st = [json.loads(l) for l in open(d + "/state/rounds.jsonl")]
done = [r for r in st if r.get("outcome") == "completed"]
def eps_at(n):
    return done[n - 1].get("dp_epsilon", 0) if len(done) >= n else None
secs = sum(r["seconds"] for r in sim)
print(json.dumps({"bench": "dp_sweep", "mode": mode, "config": cfg, "rounds": len(sim),
                  "acc_r100": acc.get(100), "acc_final": acc.get(R), "eps_r100": eps_at(100), "eps_final": eps_at(R),
                  "final_clip": done[-1].get("dp_clip") if done else None,
                  "abandoned": sum(1 for r in st if r.get("outcome") != "completed"),
                  "mean_round_s": round(secs / max(1, len(sim)), 3)}))
EOF
  done
done
