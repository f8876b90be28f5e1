#!/usr/bin/env bash
# async_compare.sh - synchronous rounds against asynchronous buffers (FedBuff,
# issue 25) on one simulated fleet, through `fedc sim` (real processes over
# mTLS): Fashion-MNIST, 100 clients, Dirichlet(0.5), MLP 784-200-200-10, each
# client's tasks slowed by the device-speed model (compute 300 ms and network
# 100 ms medians, lognormal sigma 0.5; 20% stragglers 10x slower).
#
# One JSON line per run: the wall time, versions and bytes uploaded (accepted
# updates' bytes_in, abandoned rounds' too) until the central test accuracy
# first reaches TARGET, or the best accuracy if it never does; the machine's
# load average (1 min) at the start, at the end and its mean over the run's
# one-second samples; the uploads refused up to that point, by reason, from the
# coordinator's log (not in uploaded_mib, in either mode); and wire_in_mib, the
# TCP bytes the coordinator received on its clients' connections until then
# (`ss`), which does count what refused streams sent before being cut.
#   sync        cohort 10, a round waits for all 10 (deadline 60 s)
#   sync-DL     cohort 10, min-updates 7, deadline DL ms (late updates dropped)
#   async-C-K   --async-concurrency C, --async-buffer K
#
#   bench/async_compare.sh BUILD_DIR [TARGET [ROUNDS [SEEDS [RUNS]]]]
#   defaults: 0.83, 120, "1", "sync sync-2000 async-20-10"
# Environment (all optional):
#   SYNC_ARGS, ASYNC_ARGS  extra `fedc sim` arguments for sync-* / async-* runs
#                          (word-split), e.g. ASYNC_ARGS="--server-optimizer avgm"
#   MONITOR_NICE           the sim's evaluation of each version runs at this nice value
#                          (default 10: an observer, it must not slow the federation it
#                          measures; every version is kept, so none is missed however late)
#   TAG                    appended to the run name in the JSON line ("async-20-10+TAG")
#   KEEP                   a folder: each run's rounds.csv, rounds.jsonl, audit log and
#                          coordinator log are kept in KEEP/RUN-sSEED (default: not kept)
#   WORK                   scratch folder (default a mktemp folder under /tmp)
#   STOP_AT_TARGET         1 (default): stop the federation once TARGET is reached
set -euo pipefail
B=${1:?usage: async_compare.sh BUILD_DIR [TARGET [ROUNDS [SEEDS [RUNS]]]]}
TARGET=${2:-0.83}
ROUNDS=${3:-120}
read -r -a SEEDS <<<"${4:-1}"
read -r -a RUNS <<<"${5:-sync sync-2000 async-20-10}"
read -r -a XSYNC <<<"${SYNC_ARGS:-}"
read -r -a XASYNC <<<"${ASYNC_ARGS:-}"
if [ -n "${WORK:-}" ]; then
  T=$WORK
  mkdir -p "$T"
else
  T=$(mktemp -d /tmp/fedc-async.XXXXXX)
  trap 'rm -rf "$T"' EXIT
fi
load1() { cut -d' ' -f1 /proc/loadavg; }
for seed in "${SEEDS[@]}"; do
  for run in "${RUNS[@]}"; do
    args=(--clients 100 --cohort 10 --rounds "$ROUNDS" --seed "$seed" --alpha 0.5 --device-speed 300:100:0.5
      --stragglers 0.2 --coordinator-opt=--upload-rate=0 --monitor-nice "${MONITOR_NICE:-10}" --keep-versions 0)
    case $run in
    sync) args+=("${XSYNC[@]}") ;;
    sync-*) args+=(--min-updates 7 --round-timeout-ms "${run#sync-}" "${XSYNC[@]}") ;;
    async-*-*)
      c=${run#async-}
      args+=(--mode async "--coordinator-opt=--async-concurrency=${c%-*}" "--coordinator-opt=--async-buffer=${c#*-}"
        "${XASYNC[@]}")
      ;;
    *) echo "async_compare: unknown run '$run'" >&2; exit 2 ;;
    esac
    name=$run${TAG:++$TAG}
    echo "async_compare: $name seed $seed..." >&2
    rm -rf "$T/out" 2>/dev/null || rm -rf "$T/out" || true
    l0=$(load1)
    "$B/fedc" sim --out "$T/out" "${args[@]}" >"$T/run.out" 2>"$T/run.err" &
    pid=$!
    : >"$T/loads"
    : >"$T/conns"
    # Once a second: the load, and the bytes the coordinator has received on
    # each of its live connections (TCP bytes_received, `ss`: TLS records of
    # check-ins, download requests and uploads, refused ones included; a
    # connection's last count stays once it closes); stop the federation once
    # TARGET is reached.
    while kill -0 "$pid" 2>/dev/null; do
      now=$(date +%s%3N)
      if [ -f "$T/out/coordinator.port" ]; then
        ss -Htin state established "( sport = :$(cat "$T/out/coordinator.port") )" 2>/dev/null |
          awk -v ts="$now" '/^[0-9]/ { peer = $4 } match($0, /bytes_received:[0-9]+/) {
            print ts, peer, substr($0, RSTART + 15, RLENGTH - 15) }' >>"$T/conns" || true
      fi
      echo "$now $(load1)" >>"$T/loads"
      if [ "${STOP_AT_TARGET:-1}" = 1 ] && [ -f "$T/out/rounds.csv" ] &&
        awk -F, -v t="$TARGET" 'NR > 1 && $3 + 0 >= t { f = 1 } END { exit !f }' "$T/out/rounds.csv"; then
        sleep 1
        kill -TERM "$pid" 2>/dev/null || true
        break
      fi
      sleep 1
    done
    rc=0
    wait "$pid" || rc=$?
    if [ ! -s "$T/out/rounds.csv" ] || [ ! -s "$T/out/state/rounds.jsonl" ]; then
      echo "async_compare: $name seed $seed failed (status $rc)" >&2
      tail -5 "$T/run.err" >&2
      continue
    fi
    l1=$(load1)
    python3 "$(dirname "$0")/async_compare_summary.py" "$T/out" "$TARGET" "$name" "$seed" "$l0" "$l1" "$T/loads" \
      "$T/conns" \
      "${args[*]}" || echo "async_compare: $name seed $seed: no summary" >&2
    if [ -n "${KEEP:-}" ]; then
      k="$KEEP/$name-s$seed"
      mkdir -p "$k"
      cp "$T/out/rounds.csv" "$T/out/state/rounds.jsonl" "$T/out/logs/coordinator.log" "$k/" 2>/dev/null || true
      cp -r "$T/out/state/"audit* "$k/" 2>/dev/null || true
    fi
    rm -rf "$T/out" 2>/dev/null || rm -rf "$T/out" || true
  done
done
