#!/usr/bin/env bash
# fedprox_sweep.sh - FedAvg against FedProx (Li et al. 2020) on Fashion-MNIST
# with strong label skew (issue 22): 100 clients, Dirichlet(0.1), 10 per
# round, 5 local epochs, B=32, client lr 0.05, MLP 784-200-200-10, through
# `fedc sim` (real processes over mTLS). mu = 0 is FedAvg.
#
# One JSON line per run on stdout: accuracy at rounds 100 and 300, the worst
# round after round 50, the median of the last 20 rounds and the wall time.
# Runs go seed by seed (every mu for seed 1, then seed 2, ...), so a sweep cut
# short still compares the methods on the seeds it finished.
#
#   bench/fedprox_sweep.sh BUILD_DIR [ROUNDS [SEEDS [MUS]]]
#   defaults: 300 rounds, seeds "1 2 3", mus "0 0.001 0.01 0.1"
set -euo pipefail
B=${1:?usage: fedprox_sweep.sh BUILD_DIR [ROUNDS [SEEDS [MUS]]]}
ROUNDS=${2:-300}
read -r -a SEEDS <<<"${3:-1 2 3}"
read -r -a MUS <<<"${4:-0 0.001 0.01 0.1}"
T=$(mktemp -d /tmp/fedc-prox.XXXXXX)
trap 'rm -rf "$T"' EXIT
for seed in "${SEEDS[@]}"; do
  for mu in "${MUS[@]}"; do
    echo "fedprox_sweep: mu $mu seed $seed, $ROUNDS rounds..." >&2
    start=$SECONDS
    "$B/fedc" sim --clients 100 --cohort 10 --rounds "$ROUNDS" --seed "$seed" --alpha 0.1 --epochs 5 \
      --prox-mu "$mu" --json --out "$T/run-$mu-$seed" >"$T/run.jsonl" 2>"$T/run.err" ||
      { tail -5 "$T/run.err" >&2; continue; }
    rm -rf "$T/run-$mu-$seed"
    jq -s -c --argjson mu "$mu" --argjson seed "$seed" --argjson wall $((SECONDS - start)) '
      {bench: "fedprox", method: (if $mu == 0 then "fedavg" else "fedprox" end), prox_mu: $mu, seed: $seed,
       alpha: 0.1, epochs: 5, clients: 100, cohort: 10, rounds: length,
       acc_r100: (map(select(.round == 100)) | .[0].accuracy // null),
       acc_r300: (map(select(.round == 300)) | .[0].accuracy // null),
       worst_after_50: (map(select(.round > 50)) | min_by(.accuracy) | {round, accuracy}),
       median_last_20: (.[-20:] | map(.accuracy) | sort | .[10]), wall_s: $wall}' "$T/run.jsonl"
  done
done
