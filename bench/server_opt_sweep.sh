#!/usr/bin/env bash
# server_opt_sweep.sh - Fashion-MNIST accuracy of the server optimizers
# (issue 11): 100 clients, Dirichlet(0.5), 10 per round, MLP 784-200-200-10,
# E=1, B=32, client lr 0.05, through `fedc sim` (real processes, mTLS).
#
#   phase grid:  seed 1, 100 rounds, each optimizer's server lr grid
#   phase final: the chosen lr of each, 300 rounds, seeds 1-3
# One JSON line per run on stdout: accuracy at rounds 100 and 300, the worst
# round after round 50, and the run's wall time.
#
#   bench/server_opt_sweep.sh BUILD_DIR grid|final [CONFIG...]
#   CONFIG: name:optimizer:lr[:beta1] e.g. adam:adam:0.01
set -euo pipefail
B=${1:?usage: server_opt_sweep.sh BUILD_DIR grid|final [CONFIG...]}
PHASE=${2:?grid or final}
shift 2
T=$(mktemp -d /tmp/fedc-sopt.XXXXXX)
trap 'rm -rf "$T"' EXIT
if [ $# -gt 0 ]; then CONFIGS=("$@")
elif [ "$PHASE" = grid ]; then
  CONFIGS=(avgm-0.1:avgm:0.1 avgm-0.3:avgm:0.3 avgm-1:avgm:1.0
           adam-0.003:adam:0.003 adam-0.01:adam:0.01 adam-0.03:adam:0.03
           yogi-0.003:yogi:0.003 yogi-0.01:yogi:0.01 yogi-0.03:yogi:0.03)
else CONFIGS=(fedavg:sgd:1.0); fi
if [ "$PHASE" = grid ]; then ROUNDS=100; SEEDS=(1); else ROUNDS=300; SEEDS=(1 2 3); fi
for cfg in "${CONFIGS[@]}"; do
  IFS=: read -r name opt lr beta1 <<<"$cfg"
  for seed in "${SEEDS[@]}"; do
    extra=()
    [ -n "${beta1:-}" ] && extra=(--server-beta1 "$beta1")
    echo "server_opt_sweep: $name seed $seed, $ROUNDS rounds..." >&2
    start=$SECONDS
    "$B/fedc" sim --clients 100 --cohort 10 --rounds "$ROUNDS" --seed "$seed" --json --out "$T/$name-$seed" \
      --server-optimizer "$opt" --server-lr "$lr" "${extra[@]}" >"$T/run.jsonl" 2>"$T/run.err" ||
      { tail -5 "$T/run.err" >&2; continue; }
    jq -s -c --arg name "$name" --arg opt "$opt" --argjson lr "$lr" --argjson seed "$seed" --argjson wall $((SECONDS - start)) '
      {bench: "server_opt", name: $name, optimizer: $opt, server_lr: $lr, seed: $seed, rounds: length,
       acc_r100: (map(select(.round == 100)) | .[0].accuracy),
       acc_r300: (map(select(.round == 300)) | .[0].accuracy // null),
       worst_after_50: (map(select(.round > 50)) | min_by(.accuracy) | {round, accuracy}),
       median_last_20: (.[-20:] | map(.accuracy) | sort | .[10]), wall_s: $wall}' "$T/run.jsonl"
  done
done
