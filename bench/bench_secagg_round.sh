#!/usr/bin/env bash
# bench_secagg_round.sh - end-to-end round time with and without secure
# aggregation: `fedc sim` with N real client processes (default 100), all of
# them in every round (cohort = N), over mutual TLS on 127.0.0.1, the MLP
# 784-200-200-10 on Fashion-MNIST, R rounds each (default 4). The baseline is
# the same federation in plaintext, measured in the same run, right before;
# with REPEATS > 1 the pair is run that many times (plaintext, secagg,
# plaintext, secagg, ...) and the summary takes medians over the pairs.
#
# Prints one JSON line per mode and run, one with each run's ratio, and a
# summary:
#   {"bench":"secagg_round","run":i,"mode":"plaintext"|"secagg","clients":N,
#    "median_round_s":..,"rounds":R,"bytes_per_round":..,"participants":..,
#    "stages_s":{...},"cpu_s":..,"load1":..}
#   {"bench":"secagg_round","run":i,"ratio_time":..,"ratio_cpu":..,"ratio_bytes":..}
#   {"bench":"secagg_round","summary":true,"runs":REPEATS,"median_ratio_time":..,...}
# stages_s: median seconds of each stage over the rounds measured, from the
# coordinator's log (secagg: advertise = training + key advertisement, then
# shares, masked, consistency, unmask, and finalize = unmasking to the
# published model; plaintext has only the round); cpu_s: CPU seconds (user + system) of the whole run, sim,
# coordinator and clients, start-up included (ratio_cpu: secagg's over plaintext's, next to ratio_time: a
# ratio_time above ratio_cpu is waiting, one near it is work); load1: the 1-minute load average when the mode started (the
# machine is shared). Round 1 is left out of the medians (process start-up
# and first connections). The SecAgg graph is the coordinator's default
# unless SECAGG_ARGS says otherwise (e.g. SECAGG_ARGS="--secagg-neighbors 99"
# for the complete graph at 100 clients). COORD_ARGS: fedc sim options for
# both modes (e.g. COORD_ARGS="--coordinator-opt=--upload-slots=32").
# The per-round records of every run (`fedc sim --json`, one line per round),
# their stderr and coordinator logs are kept in OUT (default
# bench_secagg_round.<date> here).
#
#   [OUT=dir] bench/bench_secagg_round.sh BUILD_DIR [N] [R] [REPEATS]
set -euo pipefail
B=${1:?usage: bench_secagg_round.sh BUILD_DIR [N] [R] [REPEATS]}
N=${2:-100}
R=${3:-4}
REPEATS=${4:-1}
read -r -a EXTRA <<<"${SECAGG_ARGS:-}"
read -r -a BOTH <<<"${COORD_ARGS:-}"
OUT=${OUT:-$PWD/bench_secagg_round.$(date -u +%Y%m%d-%H%M%S)}
mkdir -p "$OUT"
T=$(mktemp -d /tmp/fedc-bench-sa.XXXXXX)
trap 'rm -rf "$T"' EXIT

# Median stage seconds over rounds >= 2 from a coordinator log.
stages() { # LOG
  python3 - "$1" <<'PY'
import json, re, statistics, sys
from datetime import datetime
def ts(line):
    return datetime.strptime(line[:23], "%Y-%m-%dT%H:%M:%S.%f").timestamp()
marks = {}
order = ["started", "advertise", "shares", "masked", "consistency", "unmask", "completed"]
for line in open(sys.argv[1], errors="replace"):
    m = re.search(r"round (\d+)(?: started|: (\w+) stage closed| completed)", line)
    if not m:
        continue
    r = int(m.group(1))
    what = m.group(2) or ("started" if " started" in line else "completed")
    marks.setdefault(r, {})[what] = ts(line)
per = {}
for r, mk in marks.items():
    if r < 2 or "completed" not in mk or "started" not in mk:
        continue
    seq = [(w, mk[w]) for w in order if w in mk]
    if len(seq) > 2:  # secure aggregation: each stage from the close of the one before
        for (a, ta), (b, tb) in zip(seq, seq[1:]):
            per.setdefault("finalize" if b == "completed" else b, []).append(tb - ta)
    per.setdefault("round", []).append(mk["completed"] - mk["started"])
print(json.dumps({k: round(statistics.median(v), 3) for k, v in per.items()}))
PY
}

run() { # I MODE ARGS...
  local i=$1 mode=$2
  shift 2
  local load
  load=$(cut -d' ' -f1 /proc/loadavg)
  echo "bench_secagg_round: run $i, $mode, $N clients, $R rounds (load $load)..." >&2
  rm -rf "$T/$mode"
  local cpu
  # CPU seconds (user + system) of the whole run: the sim, its coordinator and
  # every client process (each waited for by its parent, so counted here).
  cpu=$({
    TIMEFORMAT='%U %S'
    time "$B/fedc" sim --clients "$N" --cohort "$N" --rounds "$R" --seed 1 --json --out "$T/$mode" \
      ${BOTH[@]+"${BOTH[@]}"} "$@" >"$T/$mode.jsonl" 2>"$T/$mode.err"
  } 2>&1) || { tail -20 "$T/$mode.err" >&2; exit 1; }
  cpu=$(awk '{printf "%.2f", $1 + $2}' <<<"$cpu")
  cp "$T/$mode.jsonl" "$OUT/$mode.$i.jsonl"
  cp "$T/$mode.err" "$OUT/$mode.$i.err"
  cp "$T/$mode/logs/coordinator.log" "$OUT/$mode.$i.coordinator.log" 2>/dev/null || true
  jq -s -c --arg mode "$mode" --argjson n "$N" --argjson i "$i" --argjson st "$(stages "$T/$mode/logs/coordinator.log")" \
    --argjson load "$load" --argjson cpu "$cpu" '
    (.[1:] | map(.seconds) | sort) as $s
    | {bench: "secagg_round", run: $i, mode: $mode, clients: $n, rounds: length,
       median_round_s: $s[(($s | length) / 2 | floor)],
       bytes_per_round: ((.[1:] | map(.bytes) | add) / (.[1:] | length) | floor),
       participants: (map(.participants) | min), stages_s: $st, cpu_s: $cpu, load1: $load}' "$T/$mode.jsonl"
}

ratios=()
for i in $(seq 1 "$REPEATS"); do
  plain=$(run "$i" plaintext)
  secure=$(run "$i" secagg --secagg ${EXTRA[@]+"${EXTRA[@]}"})
  echo "$plain"
  echo "$secure"
  r=$(jq -n -c --argjson p "$plain" --argjson s "$secure" --argjson i "$i" \
    '{bench: "secagg_round", run: $i, clients: $p.clients, ratio_time: ($s.median_round_s / $p.median_round_s),
      ratio_cpu: ($s.cpu_s / $p.cpu_s), ratio_bytes: ($s.bytes_per_round / $p.bytes_per_round)}')
  echo "$r"
  ratios+=("$r")
done
printf '%s\n' "${ratios[@]}" | jq -s -c --argjson n "$N" '
  def median: sort | .[(length / 2 | floor)];
  {bench: "secagg_round", summary: true, clients: $n, runs: length,
   median_ratio_time: (map(.ratio_time) | median), ratios_time: map(.ratio_time),
   median_ratio_cpu: (map(.ratio_cpu) | median),
   median_ratio_bytes: (map(.ratio_bytes) | median)}'
