#!/usr/bin/env bash
# bench_secagg_round.sh - end-to-end round time with and without secure
# aggregation: `fedc sim` with N real client processes (default 100), all of
# them in every round (cohort = N), over mutual TLS on 127.0.0.1, the MLP
# 784-200-200-10 on Fashion-MNIST, R rounds each (default 4). The baseline is
# the same federation in plaintext, measured in the same run.
#
# Prints one JSON line per mode and one with the ratio:
#   {"bench":"secagg_round","mode":"plaintext"|"secagg","clients":N,
#    "median_round_s":..,"rounds":R,"bytes_per_round":..}
#   {"bench":"secagg_round","ratio_time":..,"ratio_bytes":..}
# Round 1 is left out of the median (process start-up and first connections).
#
#   bench/bench_secagg_round.sh BUILD_DIR [N] [R]
set -euo pipefail
B=${1:?usage: bench_secagg_round.sh BUILD_DIR [N] [R]}
N=${2:-100}
R=${3:-4}
T=$(mktemp -d /tmp/fedc-bench-sa.XXXXXX)
trap 'rm -rf "$T"' EXIT

run() { # MODE ARGS...
  local mode=$1
  shift
  echo "bench_secagg_round: $mode, $N clients, $R rounds..." >&2
  "$B/fedc" sim --clients "$N" --cohort "$N" --rounds "$R" --seed 1 --json --out "$T/$mode" "$@" \
    >"$T/$mode.jsonl" 2>"$T/$mode.err" || { tail -20 "$T/$mode.err" >&2; exit 1; }
  jq -s --arg mode "$mode" --argjson n "$N" '
    (.[1:] | map(.seconds) | sort) as $s
    | {bench: "secagg_round", mode: $mode, clients: $n, rounds: length,
       median_round_s: $s[(($s | length) / 2 | floor)],
       bytes_per_round: ((.[1:] | map(.bytes) | add) / (.[1:] | length) | floor),
       participants: (map(.participants) | min)}' "$T/$mode.jsonl"
}
plain=$(run plaintext)
secure=$(run secagg --secagg)
echo "$plain" | jq -c .
echo "$secure" | jq -c .
jq -n -c --argjson p "$plain" --argjson s "$secure" \
  '{bench: "secagg_round", clients: $p.clients, ratio_time: ($s.median_round_s / $p.median_round_s),
    ratio_bytes: ($s.bytes_per_round / $p.bytes_per_round)}'
