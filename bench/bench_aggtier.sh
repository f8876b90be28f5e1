#!/usr/bin/env bash
# bench_aggtier.sh - round time with the aggregator tier (issue 23) against
# single-process mode, same run, same machine.
#
# Both modes: a 1.01M-parameter model (1000-1000-10), cohort = N (default
# 100) fedc_probe processes in mode "good" (fetch the model, upload a zero
# delta; no training: the round is protocol + transport + aggregation), all
# over mutual TLS on 127.0.0.1, coordinator options as bench/bench_round.sh.
#   single: one `fedc coordinator`, the uploads go to it.
#   tier:   1 etcd member (plaintext on loopback), a leader (`fedc coordinator
#           --etcd ... --aggregator-tier`) and A (default 3) `fedc aggregator`
#           processes; the leader assigns each probe an aggregator, the probe
#           uploads there, each aggregator submits one FedAvg partial.
# Prints one JSON line per mode (the round's seconds from the coordinator's
# own record, its CPU seconds, peak RSS, the 1-minute load average when the
# round ended) and one "ratio" line (tier / single; issue 23's goal: <= 1.2).
# The tier line also has, per aggregator: the clients the leader assigned
# (fedc status), its CPU seconds over the round, the most TCP connections it held at once (ss, sampled every
# 200 ms, between status polls), its RSS before the probes and its peak
# (VmHWM), and memory per connection: peak / most connections held, and
# (peak - before) / most connections held; and the sum of the most held.
# Then bench_etcd against the same etcd member: the leader's fenced write,
# fenced check and registry read, calls per second and latency.
# Kept in OUT (default bench_aggtier.<date>): logs, rounds records, the lines.
#
#   [OUT=dir] [COORD_EXTRA="--aggregator median"] bench/bench_aggtier.sh BUILD_DIR [N] [A]
set -euo pipefail
B=${1:?usage: bench_aggtier.sh BUILD_DIR [N] [A]}
N=${2:-100}
A=${3:-3}
OUT=${OUT:-$PWD/bench_aggtier.$(date -u +%Y%m%d-%H%M%S)}
mkdir -p "$OUT"
B=$(cd "$B" && pwd)
FEDC=$B/fedc
PROBE=$B/fedc_probe
command -v etcd >/dev/null || { echo "bench_aggtier: etcd is needed (apt-get install etcd-server)" >&2; exit 2; }
T=$(mktemp -d /tmp/fedc-bench-aggtier.XXXXXX)
pids=()
cleanup() { for p in ${pids[@]+"${pids[@]}"}; do kill -KILL "$p" 2>/dev/null || true; done; rm -rf "$T"; }
trap cleanup EXIT
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
hwm() { awk '/VmHWM/ {print $2}' "/proc/$1/status"; }
rss() { awk '/VmRSS/ {print $2}' "/proc/$1/status"; }
cpu_s() { awk -v hz="$(getconf CLK_TCK)" '{print ($14 + $15) / hz}' "/proc/$1/stat"; }
conns() { ss -Htn state established "( sport = :$1 )" 2>/dev/null | wc -l; }

echo "bench_aggtier: PKI for $N clients, $A aggregators..." >&2
"$FEDC" pki init --dir "$T/pki" --federation bench >/dev/null
"$FEDC" pki issue --dir "$T/pki" --role admin --name root >/dev/null
for i in $(seq 1 "$N"); do "$FEDC" pki issue --dir "$T/pki" --role client --name "p$i" >/dev/null; done
for g in $(seq 1 "$A"); do "$FEDC" pki issue --dir "$T/pki" --role aggregator --name "ag$g" >/dev/null; done

COORD_OPTS=(--pki "$T/pki" --federation bench --model 1000-1000-10 --rounds 1 --min-clients "$N" --cohort "$N"
  --min-updates "$N" --poll-ms 200 --round-timeout-ms 300000 --pickup-timeout-ms 300000 --log info)
[ "$N" -le 240 ] || COORD_OPTS+=(--connections-per-address $((N + 16)))
# COORD_EXTRA: more coordinator options for both modes, e.g. "--aggregator median" (the tier then relays each
# update whole: protocol 1.17).
read -r -a EXTRA <<<"${COORD_EXTRA:-}"
COORD_OPTS+=(${EXTRA[@]+"${EXTRA[@]}"})

status_json() { "$FEDC" status --coordinator "127.0.0.1:$1" --pki "$T/pki" --name root --json 2>/dev/null; }

# Starts the probes against coordinator port $1, waits for the round (mode $2),
# sampling the aggregators' connections meanwhile; sets REC, CPU_S, KB.
run_round() { # PORT MODE
  local port=$1 mode=$2 cpu0 ok=0
  cpu0=$(cpu_s "$CP")
  for i in $(seq 1 "$N"); do
    "$PROBE" --coordinator "127.0.0.1:$port" --pki "$T/pki" --name "p$i" --mode good --chunk 1048576 \
      > "$T/probe-$mode-$i.log" 2>&1 &
    pids+=("$!")
  done
  for _ in $(seq 3000); do
    for g in ${AGS[@]+"${!AGS[@]}"}; do
      c=$(conns "${AGPORT[$g]}")
      [ "$c" -le "${MAXC[$g]}" ] || MAXC[$g]=$c
    done
    if status_json "$port" | jq -e '.rounds_completed >= 1' >/dev/null; then ok=1; break; fi
    sleep 0.2
  done
  [ "$ok" = 1 ] || { echo "bench_aggtier: $mode round did not complete (logs in $OUT)" >&2; cp "$T"/*.log "$OUT/" || true; exit 1; }
  KB=$(hwm "$CP")
  CPU_S=$(awk "BEGIN{print $(cpu_s "$CP") - $cpu0}")
  LOAD=$(cut -d' ' -f1 /proc/loadavg)
  REC=$("$FEDC" rounds --coordinator "127.0.0.1:$port" --pki "$T/pki" --name root --json | head -1)
  STATUS=$(status_json "$port")
  FAILED=$(grep -L '"step":"good-upload".*"ok":true' "$T"/probe-"$mode"-*.log | wc -l)
  RETRIES=$(cat "$T"/probe-"$mode"-*.log | grep -c '"step":"retry"' || true)
}

line() { # MODE EXTRA_JSON
  local secs parts
  secs=$(jq '(.ended_unix_ms - .started_unix_ms) / 1000' <<<"$REC")
  parts=$(jq '.participants' <<<"$REC")
  printf '{"bench":"aggtier","mode":"%s","clients":%d,"params":1011010,"participants":%s,"probes_failed":%d,"upload_retries":%d,"round_seconds":%s,"coordinator_cpu_seconds":%.2f,"coordinator_peak_rss_mib":%.1f%s,"load_avg_1m":%s}\n' \
    "$1" "$N" "$parts" "$FAILED" "$RETRIES" "$secs" "$CPU_S" "$(awk "BEGIN{print $KB/1024}")" "$2" "$LOAD" |
    tee -a "$OUT/bench_aggtier.jsonl"
}

# ---- single-process mode ----
echo "bench_aggtier: single-process round, $N clients..." >&2
AGS=()
"$FEDC" coordinator "${COORD_OPTS[@]}" --state "$T/state-single" --listen 127.0.0.1:0 --port-file "$T/single.port" \
  > "$T/coord-single.log" 2>&1 &
CP=$!
pids+=("$CP")
for _ in $(seq 100); do [ -s "$T/single.port" ] && break; sleep 0.1; done
run_round "$(cat "$T/single.port")" single
SINGLE_SECS=$(jq '(.ended_unix_ms - .started_unix_ms) / 1000' <<<"$REC")
line single ""
kill -TERM "$CP"; wait "$CP" || true
cp "$T/coord-single.log" "$OUT/"
wait

# ---- the tier: 1 etcd member, a leader, A aggregators ----
echo "bench_aggtier: aggregator tier round, $N clients, $A aggregators..." >&2
EC=$(free_port) EPP=$(free_port)
etcd --name e1 --data-dir "$T/etcd" --listen-client-urls "http://127.0.0.1:$EC" \
  --advertise-client-urls "http://127.0.0.1:$EC" --listen-peer-urls "http://127.0.0.1:$EPP" \
  --initial-advertise-peer-urls "http://127.0.0.1:$EPP" --initial-cluster "e1=http://127.0.0.1:$EPP" \
  > "$T/etcd.log" 2>&1 &
pids+=("$!")
for _ in $(seq 100); do etcdctl --endpoints "127.0.0.1:$EC" endpoint health >/dev/null 2>&1 && break; sleep 0.2; done
PL=$(free_port)
"$FEDC" coordinator "${COORD_OPTS[@]}" --state "$T/state-tier" --listen "127.0.0.1:$PL" --port-file "$T/leader.port" \
  --etcd "127.0.0.1:$EC" --aggregator-tier > "$T/coord-tier.log" 2>&1 &
CP=$!
pids+=("$CP")
for _ in $(seq 200); do [ -s "$T/leader.port" ] && break; sleep 0.1; done
[ -s "$T/leader.port" ] || { echo "bench_aggtier: the leader never led" >&2; cp "$T"/*.log "$OUT/"; exit 1; }
AGS=() AGPORT=() MAXC=() IDLE=() ACPU0=()
for g in $(seq 1 "$A"); do
  "$FEDC" aggregator --pki "$T/pki" --name "ag$g" --coordinator "127.0.0.1:$PL" --listen 127.0.0.1:0 \
    --port-file "$T/ag$g.port" --etcd "127.0.0.1:$EC" --log info > "$T/agg-ag$g.log" 2>&1 &
  AGS[$g]=$!
  pids+=("$!")
done
for g in $(seq 1 "$A"); do
  for _ in $(seq 100); do [ -s "$T/ag$g.port" ] && break; sleep 0.1; done
  AGPORT[$g]=$(cat "$T/ag$g.port")
  MAXC[$g]=0
done
for _ in $(seq 100); do
  [ "$(status_json "$PL" | jq '.replica.aggregators | length')" = "$A" ] && break
  sleep 0.2
done
sleep 1
for g in $(seq 1 "$A"); do IDLE[$g]=$(rss "${AGS[$g]}"); ACPU0[$g]=$(cpu_s "${AGS[$g]}"); done
run_round "$PL" tier
extra=',"aggregators":['
sep=
for g in $(seq 1 "$A"); do
  peak=$(hwm "${AGS[$g]}")
  assigned=$(jq --arg n "ag$g" '[.replica.aggregators[] | select(.name == $n) | .assigned] | first // null' <<<"$STATUS")
  per=$(awk -v p="$peak" -v i="${IDLE[$g]}" -v c="${MAXC[$g]}" 'BEGIN{ if (c > 0) printf "%.1f", (p - i) / c; else print "null" }')
  all=$(awk -v p="$peak" -v c="${MAXC[$g]}" 'BEGIN{ if (c > 0) printf "%.1f", p / c; else print "null" }')
  acpu=$(awk "BEGIN{print $(cpu_s "${AGS[$g]}") - ${ACPU0[$g]}}")
  extra+=$(printf '%s{"name":"ag%d","clients_assigned":%s,"cpu_seconds":%.2f,"max_connections":%d,"rss_before_mib":%.1f,"peak_rss_mib":%.1f,"peak_kib_per_connection":%s,"over_idle_kib_per_connection":%s}' \
    "$sep" "$g" "$assigned" "$acpu" "${MAXC[$g]}" "$(awk "BEGIN{print ${IDLE[$g]}/1024}")" "$(awk "BEGIN{print $peak/1024}")" "$all" "$per")
  TOTALC=$((${TOTALC:-0} + ${MAXC[$g]}))
  sep=,
done
extra+="],\"max_connections_total\":${TOTALC:-0}"
TIER_SECS=$(jq '(.ended_unix_ms - .started_unix_ms) / 1000' <<<"$REC")
line tier "$extra"
printf '{"bench":"aggtier","coord_extra":"%s","single_round_seconds":%s,"tier_round_seconds":%s,"ratio_tier_to_single":%.3f,"goal":1.2,"load_avg_1m":%s}\n' \
  "${COORD_EXTRA:-}" "$SINGLE_SECS" "$TIER_SECS" "$(awk "BEGIN{print $TIER_SECS / $SINGLE_SECS}")" "$(cut -d' ' -f1 /proc/loadavg)" | tee -a "$OUT/bench_aggtier.jsonl"
# The leader's etcd traffic on the same member, after the round: one raft
# write per round (the fenced pointer move), two fenced checks, and the
# registry read every 500 ms (bench_etcd: one sequential caller, as the leader).
if [ -x "$B/bench_etcd" ]; then
  "$B/bench_etcd" "127.0.0.1:$EC" 500 "$A" | sed "s/}\$/,\"load_avg_1m\":$(cut -d' ' -f1 /proc/loadavg)}/" |
    tee -a "$OUT/bench_aggtier.jsonl"
fi
for g in $(seq 1 "$A"); do kill -TERM "${AGS[$g]}" 2>/dev/null || true; done
kill -TERM "$CP" 2>/dev/null || true
wait "$CP" || true
cp "$T"/coord-tier.log "$T"/agg-*.log "$OUT/" 2>/dev/null || true
cp "$T/state-tier/rounds.jsonl" "$OUT/rounds-tier.jsonl" 2>/dev/null || true
cp "$T/state-single/rounds.jsonl" "$OUT/rounds-single.jsonl" 2>/dev/null || true
