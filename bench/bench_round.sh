#!/usr/bin/env bash
# bench_round.sh - coordinator memory and round time with many clients.
#
# For N in 10, 100 and 300 (default): a coordinator with a 1.01M-parameter model
# (1000-1000-10), cohort = N, and N client processes (tests' fedc_probe in
# mode "good": fetch the model, upload a zero delta; no training, so the
# round time is protocol + transport + aggregation only), all over mutual
# TLS on 127.0.0.1. Prints one JSON line per N:
#   coordinator peak RSS (VmHWM), the round's seconds (coordinator's own
#   start..end), bytes moved, the coordinator's CPU seconds from the probes' start
#   to the round's end, and the transfer floor below.
# Baseline in the same run: peak RSS of the same coordinator with the same
# model and no round (idle), so "rss_over_idle_mib" is what the clients cost.
# The coordinator runs on its default options (upload staging slots from
# --upload-memory-mib); the probes retry a refused upload when told, as the
# client runtime does ("upload_retries" counts them).
# Kept in OUT (default bench_round.<date> in the current directory): for each
# N the coordinator's rounds.jsonl (the per-round record), its log, the
# probes' steps (fetch and upload times, retries) and the JSON line.
#
#   [OUT=dir] [COORD_ARGS="..."] bench/bench_round.sh BUILD_DIR [N...]
# COORD_ARGS: extra coordinator options for an A/B in the same session
# (e.g. "--checkin-hold-ms 0": selected probes learn of the round at their
# next 200 ms poll instead of at once); echoed in the JSON line.
set -euo pipefail
B=${1:?usage: bench_round.sh BUILD_DIR [N...]}
shift
NS=("$@")
[ ${#NS[@]} -gt 0 ] || NS=(10 100 300)
OUT=${OUT:-$PWD/bench_round.$(date -u +%Y%m%d-%H%M%S)}
mkdir -p "$OUT"
FEDC=$B/fedc
read -r -a XARGS <<<"${COORD_ARGS:-}"
PROBE=$B/fedc_probe
T=$(mktemp -d /tmp/fedc-bench.XXXXXX)
pids=()
cleanup() { for p in ${pids[@]+"${pids[@]}"}; do kill -KILL "$p" 2>/dev/null || true; done; rm -rf "$T"; }
trap cleanup EXIT
maxn=0
for n in "${NS[@]}"; do [ "$n" -gt "$maxn" ] && maxn=$n; done
echo "bench_round: PKI for $maxn clients..." >&2
"$FEDC" pki init --dir "$T/pki" --federation bench >/dev/null
"$FEDC" pki issue --dir "$T/pki" --role admin --name root >/dev/null
for i in $(seq 1 "$maxn"); do "$FEDC" pki issue --dir "$T/pki" --role client --name "p$i" >/dev/null; done

hwm() { awk '/VmHWM/ {print $2}' "/proc/$1/status"; }
# CPU seconds (user + system) a process has used so far.
cpu_s() { awk -v hz="$(getconf CLK_TCK)" '{print ($14 + $15) / hz}' "/proc/$1/stat"; }

start_coord() { # N STATE
  rm -f "$T/port"
  # Every probe connects from 127.0.0.1, where a real cohort has an address
  # each: the per-address connection cap (default 256) is raised to N + 16
  # past 240 clients, and is the only option not left at its default.
  local per_addr=()
  [ "$1" -le 240 ] || per_addr=(--connections-per-address $(($1 + 16)))
  "$FEDC" coordinator --pki "$T/pki" --federation bench --state "$2" --model 1000-1000-10 --rounds 1 \
    --min-clients "$1" --cohort "$1" --min-updates "$1" --poll-ms 200 --round-timeout-ms 300000 \
    --pickup-timeout-ms 300000 ${per_addr[@]+"${per_addr[@]}"} ${XARGS[@]+"${XARGS[@]}"} --listen 127.0.0.1:0 \
    --port-file "$T/port" \
    --log info > "$T/coord-$1.log" 2>&1 &
  CP=$!
  pids+=("$CP")
  for _ in $(seq 100); do [ -s "$T/port" ] && break; sleep 0.1; done
  PORT=$(cat "$T/port")
}

# Baseline in the same run: one stream's loopback mTLS throughput (MB/s,
# mean of 128 MiB upload and download) from bench_transport; the floor for a
# round is then bytes_moved / that rate, as if all transfers were one stream.
echo "bench_round: transport baseline..." >&2
MBPS=$("$B/bench_transport" 2>/dev/null | jq -s '[.[] | select(.mib == 128) | .mb_per_s] | add / length')

# Idle baseline.
start_coord 1 "$T/state-idle"
sleep 1
IDLE_KB=$(hwm "$CP")
kill -TERM "$CP"; wait "$CP" || true

for n in "${NS[@]}"; do
  echo "bench_round: $n clients..." >&2
  start_coord "$n" "$T/state-$n"
  CPU0=$(cpu_s "$CP")
  for i in $(seq 1 "$n"); do
    "$PROBE" --coordinator "127.0.0.1:$PORT" --pki "$T/pki" --name "p$i" --mode good --chunk 1048576 \
      > "$T/probe-$n-$i.log" 2>&1 &
    pids+=("$!")
  done
  ok=0
  for _ in $(seq 600); do
    if "$FEDC" status --coordinator "127.0.0.1:$PORT" --pki "$T/pki" --name root --json 2>/dev/null |
      jq -e '.rounds_completed >= 1' >/dev/null; then ok=1; break; fi
    sleep 0.5
  done
  cp "$T/coord-$n.log" "$OUT/coord-$n.log"
  if [ "$ok" != 1 ]; then
    for f in "$T"/probe-"$n"-*.log; do sed "s|^|$(basename "$f" .log): |" "$f"; done > "$OUT/probes-$n.log"
    echo "bench_round: round with $n clients did not complete (logs: $OUT/coord-$n.log, $OUT/probes-$n.log)" >&2
    exit 1
  fi
  KB=$(hwm "$CP")
  CPU1=$(cpu_s "$CP")
  rec=$("$FEDC" rounds --coordinator "127.0.0.1:$PORT" --pki "$T/pki" --name root --json | head -1)
  kill -TERM "$CP"; wait "$CP" || true
  wait
  cp "$T/state-$n/rounds.jsonl" "$OUT/rounds-$n.jsonl"
  cp "$T/coord-$n.log" "$OUT/coord-$n.log"
  grep -h '^{' "$T"/probe-"$n"-*.log > "$OUT/probes-$n.jsonl" || true
  for f in "$T"/probe-"$n"-*.log; do { grep -v '^{' "$f" || true; } | sed "s|^|$(basename "$f" .log): |"; done > "$OUT/probes-$n.log"
  retries=$(cat "$T"/probe-"$n"-*.log | grep -c '"step":"retry"' || true)
  failed=$(grep -L '"step":"good-upload".*"ok":true' "$T"/probe-"$n"-*.log | wc -l)
  slots=$(sed -n 's/.*upload staging: \([0-9]*\) slots.*/\1/p' "$T/coord-$n.log" | head -1)
  secs=$(echo "$rec" | jq '(.ended_unix_ms - .started_unix_ms) / 1000')
  bytes=$(echo "$rec" | jq '.bytes_in + .bytes_out')
  parts=$(echo "$rec" | jq '.participants')
  floor=$(awk "BEGIN{print $bytes / 1e6 / $MBPS}")
  printf '{"bench":"round","clients":%d,"params":1011010,"participants":%d,"upload_slots":%s,"upload_retries":%d,"probes_failed":%d,"coordinator_cpu_seconds":%.2f,"coordinator_peak_rss_mib":%.1f,"idle_rss_mib":%.1f,"rss_over_idle_mib":%.1f,"round_seconds":%s,"bytes_moved":%s,"stream_mb_per_s":%.0f,"transfer_floor_seconds":%.3f,"ratio_to_floor":%.2f,"load_avg_1m":%s,"coord_args":"%s"}\n' \
    "$n" "$parts" "${slots:-null}" "$retries" "$failed" "$(awk "BEGIN{print $CPU1 - $CPU0}")" "$(awk "BEGIN{print $KB/1024}")" "$(awk "BEGIN{print $IDLE_KB/1024}")" \
    "$(awk "BEGIN{print ($KB-$IDLE_KB)/1024}")" \
    "$secs" "$bytes" "$MBPS" "$floor" "$(awk "BEGIN{print $secs / $floor}")" "$(cut -d' ' -f1 /proc/loadavg)" \
    "${COORD_ARGS:-}" |
    tee -a "$OUT/bench_round.jsonl"
done
