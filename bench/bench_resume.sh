#!/usr/bin/env bash
# bench_resume.sh - bytes sent again after a link cut at 90%, resumed
# (protocol 1.10) vs started over (an older fedc, or none: then the restart
# figure is the bytes that had crossed the link, its exact lower bound).
#
# One `fedc client` and a coordinator with a 16 MB model (784-5000-10,
# 15,900,040 bytes, 16 chunks of 1 MiB), over mutual TLS on 127.0.0.1 through
# tests/integration/cutproxy.py, three runs per fedc: no cut (the wire bytes a
# round needs), the model download cut once at 90%, the update upload cut once
# at 90%. Bytes sent again = the cut run's wire bytes in that direction minus
# the uncut run's (TLS and HTTP/2 framing included; so are the few extra
# calls a resume makes). One JSON line per figure:
#   {"bench":"resume","transfer":"upload","mode":"resume","payload_bytes":...,
#    "cut_at_bytes":...,"wire_bytes":...,"wire_bytes_uncut":...,
#    "resent_bytes":...,"resent_chunks":...}
#
#   bench/bench_resume.sh BUILD_DIR [OLD_FEDC]
set -euo pipefail
B=${1:?usage: bench_resume.sh BUILD_DIR [OLD_FEDC]}
OLD=${2:-}
HERE=$(cd "$(dirname "$0")" && pwd)
PROXY_PY=$HERE/../tests/integration/cutproxy.py
TOTAL=15900040
CHUNK=1048576
CUT=$((TOTAL * 9 / 10))
T=$(mktemp -d /tmp/fedc-bench-resume.XXXXXX)
pids=()
cleanup() { for p in ${pids[@]+"${pids[@]}"}; do kill -KILL "$p" 2>/dev/null || true; done; rm -rf "$T"; }
trap cleanup EXIT

"$B/fedc" pki init --dir "$T/pki" --federation bench >/dev/null
"$B/fedc" pki issue --dir "$T/pki" --role client --name a >/dev/null
python3 - "$T" <<'PY'
import random, struct, sys
t = sys.argv[1]
random.seed(7)
with open(f"{t}/img.idx", "wb") as fi, open(f"{t}/lbl.idx", "wb") as fl:
    fi.write(struct.pack(">IIII", 0x803, 100, 28, 28)); fl.write(struct.pack(">II", 0x801, 100))
    for i in range(100):
        y = random.randrange(10)
        fi.write(bytes(random.randrange(256) for _ in range(784))); fl.write(bytes([y]))
PY

# run FEDC NAME [PROXY ARGS...]: one round through the proxy; prints "up down"
# wire bytes summed over the proxy's connections.
run() {
  local fedc=$1 name=$2
  shift 2
  local d=$T/$name
  mkdir -p "$d"
  "$fedc" coordinator --listen 127.0.0.1:0 --port-file "$d/port" --pki "$T/pki" --federation bench \
    --state "$d/state" --model 784-5000-10 --rounds 1 --min-clients 1 --cohort 1 --min-updates 1 \
    --poll-ms 100 --round-timeout-ms 300000 --pickup-timeout-ms 300000 >"$d/coord.log" 2>&1 &
  local coord=$!
  pids+=("$coord")
  for _ in $(seq 200); do [ -s "$d/port" ] && break; sleep 0.1; done
  python3 "$PROXY_PY" --target "127.0.0.1:$(cat "$d/port")" --port-file "$d/proxy.port" "$@" >"$d/proxy.log" &
  local proxy=$!
  pids+=("$proxy")
  for _ in $(seq 200); do [ -s "$d/proxy.port" ] && break; sleep 0.1; done
  "$fedc" client --coordinator "127.0.0.1:$(cat "$d/proxy.port")" --pki "$T/pki" --name a \
    --data "idx:$T/img.idx,$T/lbl.idx" --model 784-5000-10 --eval-fraction 0 --rounds 1 >"$d/client.log" 2>&1 ||
    { echo "bench_resume: $name: client failed: $(tail -3 "$d/client.log")" >&2; exit 1; }
  kill -TERM "$coord"
  wait "$coord" || true
  sleep 0.5 # the proxy logs each connection's close
  kill "$proxy" 2>/dev/null || true
  wait "$proxy" 2>/dev/null || true
  jq -s -r '[.[] | select(.event == "closed")] | "\(map(.up) | add) \(map(.down) | add)"' "$d/proxy.log"
}

figure() { # transfer mode wire uncut
  local resent=$(($3 - $4))
  printf '{"bench":"resume","transfer":"%s","mode":"%s","payload_bytes":%d,"cut_at_bytes":%d,"wire_bytes":%d,"wire_bytes_uncut":%d,"resent_bytes":%d,"resent_chunks":%.2f}\n' \
    "$1" "$2" "$TOTAL" "$CUT" "$3" "$4" "$resent" "$(echo "$resent / $CHUNK" | bc -l)"
}

for mode in resume restart; do
  fedc=$B/fedc
  if [ "$mode" = restart ]; then
    if [ -z "$OLD" ]; then # lower bound: everything that crossed before the cut goes again
      printf '{"bench":"resume","transfer":"upload","mode":"restart","payload_bytes":%d,"cut_at_bytes":%d,"resent_bytes":%d,"resent_chunks":%.2f,"note":"lower bound: the bytes before the cut (no OLD_FEDC given)"}\n' \
        "$TOTAL" "$CUT" "$CUT" "$(echo "$CUT / $CHUNK" | bc -l)"
      continue
    fi
    fedc=$OLD
  fi
  read -r up0 down0 < <(run "$fedc" "$mode-uncut")
  read -r _ down1 < <(run "$fedc" "$mode-down" --cut-down "$CUT")
  read -r up2 _ < <(run "$fedc" "$mode-up" --cut-up "$CUT")
  figure download "$mode" "$down1" "$down0"
  figure upload "$mode" "$up2" "$up0"
done
