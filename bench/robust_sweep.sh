#!/usr/bin/env bash
# Robust aggregation under attack on Fashion-MNIST: 100 clients (Dirichlet
# 0.5), 10 per round, MLP 784-200-200-10, 100 rounds, for each aggregator x
# {no attack, 20% sign flip, 20% ALIE, 20% Gaussian noise, 20% label flip}.
# One JSON line per run: test accuracy at the last round, the mean of the last
# five (single rounds swing by several points at 10 clients per round), and
# the best.
#
#   bench/robust_sweep.sh FEDC OUTDIR [ROUNDS=100] [AGGREGATOR...]
#
# With secure aggregation (the issue's second table): 50 clients per round,
# one SecAgg instance per random bucket of SECAGG_BUCKET (5) clients, the
# rule over the 10 buckets' means:
#   ROBUST_MODE=secagg [SECAGG_BUCKET=5] bench/robust_sweep.sh FEDC OUTDIR 100
# ATTACKS="signflip alie" limits the attacks run.
set -euo pipefail
FEDC=${1:?usage: robust_sweep.sh FEDC OUTDIR [ROUNDS] [AGGREGATOR...]}
OUT=${2:?}
ROUNDS=${3:-100}
shift $(($# < 3 ? $# : 3))
AGGS=("$@")
[ ${#AGGS[@]} -gt 0 ] || AGGS=(fedavg median trimmed_mean krum multikrum bulyan centered_clip)
read -r -a ATTACKS <<<"${ATTACKS:-none signflip alie gaussian labelflip}"
MODE=${ROBUST_MODE:-plain}
BUCKET=${SECAGG_BUCKET:-5}
case $MODE in
plain) M=(--cohort 10) ;;
secagg) M=(--cohort 50 --secagg --secagg-bucket "$BUCKET") ;;
*) echo "ROBUST_MODE is plain or secagg" >&2 && exit 2 ;;
esac
mkdir -p "$OUT"
for agg in "${AGGS[@]}"; do
  case $agg in
  trimmed_mean) A=(--aggregator trimmed_mean --agg-trim 0.2) ;;
  krum | multikrum) A=(--aggregator "$agg" --agg-f 2) ;;
  bulyan) A=(--aggregator bulyan --agg-f 1) ;; # n = 10 (clients or buckets) allows f = 1 (n >= 4f + 3)
  centered_clip) A=(--aggregator centered_clip --agg-tau 1 --agg-iters 1) ;;
  *) A=(--aggregator "$agg") ;;
  esac
  for atk in "${ATTACKS[@]}"; do
    B=()
    [ "$atk" = none ] || B=(--byzantine "0.2:$atk")
    dir="$OUT/$agg-$atk"
    [ "$MODE" = plain ] || dir="$OUT/$MODE$BUCKET-$agg-$atk"
    rm -rf "$dir"
    echo "robust_sweep: $MODE $agg $atk" >&2
    if ! "$FEDC" sim --out "$dir" --clients 100 "${M[@]}" --rounds "$ROUNDS" --partition dirichlet --alpha 0.5 \
      --seed 1 --clients-per-process 25 --poll-ms 500 --json "${A[@]}" "${B[@]}" >"$dir.jsonl" 2>"$dir.err"; then
      echo "robust_sweep: $agg $atk failed: $(tail -2 "$dir.err")" >&2
    fi
    python3 - "$dir" "$agg" "$atk" "$MODE" "$BUCKET" <<'EOF'
import json, sys
d, agg, atk, mode, bucket = sys.argv[1:6]
rows = [json.loads(l) for l in open(d + ".jsonl") if l.startswith("{")]
last5 = [r["accuracy"] for r in rows[-5:]]
extra = {"mode": mode, "bucket": int(bucket)} if mode != "plain" else {}
print(json.dumps({"bench": "robust_sweep", **extra, "aggregator": agg, "attack": atk, "rounds": len(rows),
                  "acc_final": rows[-1]["accuracy"] if rows else None,
                  "acc_last5_mean": round(sum(last5) / len(last5), 4) if last5 else None,
                  "acc_best": max(r["accuracy"] for r in rows) if rows else None}))
EOF
  done
done
