#!/usr/bin/env bash
# The metrics listener under a slow-connection flood (security review, issue
# 20, finding 4: 32 connections sending a byte every 4 s made /healthz fail
# 30 of 30 times, and the liveness probe would restart the coordinator):
#   1. 48 connections from six other loopback addresses (8 each), each sending
#      a request one byte at a time: /healthz and /metrics still answer, every
#      time; the flood's connections are closed by the coordinator (the
#      newest takes the oldest's slot, and at --metrics-request-timeout-ms
#      whatever they send), which /metrics counts by rule;
#   2. the same from the probe's own address (16 connections): /healthz
#      still answers;
#   3. the bind: ":0" is loopback; an address that is not loopback is refused
#      at start without --metrics-public, with a sentence saying so.
set -euo pipefail
. "$(dirname "$0")/lib.sh" "$@"
make_tmp
make_pki "$T/pki" flood

# flood.py PORT SOURCE... : from each source address, 8 connections that each
# start a request and then send one more header byte every 0.5 s (well inside
# any idle timeout) until the coordinator closes them. Prints "open N" once
# all are connected, then "closed K" as the coordinator closes them.
cat >"$T/flood.py" <<'PY'
import select, socket, sys, time
port, sources = int(sys.argv[1]), sys.argv[2:]
socks = []
for src in sources:
    for _ in range(8):
        s = socket.socket()
        s.bind((src, 0))
        s.connect(("127.0.0.1", port))
        s.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\nX-Slow: ")
        socks.append(s)
print("open", len(socks), flush=True)
live, closed = set(socks), 0
while live:
    for s in list(live):
        try:
            s.send(b"a")
        except OSError:
            live.discard(s); closed += 1; print("closed", closed, flush=True)
    r, _, _ = select.select(list(live), [], [], 0.5)
    for s in r:
        try:
            data = s.recv(4096)
        except OSError:
            data = b""
        if not data and s in live:
            live.discard(s); closed += 1; print("closed", closed, flush=True)
PY

start_coordinator --pki "$T/pki" --federation flood --state "$T/state" --model 784-10 --rounds 1 \
  --metrics-listen :0 --metrics-request-timeout-ms 3000
wait_for grep -q "metrics on http://127.0.0.1:[0-9]*/metrics" "$T/coord.log" 20 || fail "':0' did not bind loopback"
MPORT=$(grep -o "metrics on http://127.0.0.1:[0-9]*" "$T/coord.log" | head -1 | sed 's/.*://')
M=http://127.0.0.1:$MPORT
# (--max-time only keeps a broken listener from hanging the test.)
get() { curl -sS --max-time 20 "$M$1" 2>&1 || true; }

# ---- 1. a flood from six other addresses ----
start_bg flood1 python3 "$T/flood.py" "$MPORT" 127.0.0.2 127.0.0.3 127.0.0.4 127.0.0.5 127.0.0.6 127.0.0.7
wait_for grep -q "^open 48" "$T/flood1.log" 30 || fail "the flood did not connect"
for i in $(seq 1 10); do
  r=$(get /healthz)
  [ "$r" = ok ] || fail "/healthz under the flood, try $i: '$r'"
done
get /metrics >"$T/m1.txt"
grep -q '^fedc_round_state{' "$T/m1.txt" || fail "/metrics under the flood: $(head -3 "$T/m1.txt")"
# Every flood connection is closed by the coordinator although it never stops
# sending: none outlives the request deadline.
wait_for grep -q "^closed 48" "$T/flood1.log" 60 || fail "flood connections outlived the deadline: $(tail -1 "$T/flood1.log")"
val() { get /metrics | awk -v k="$1" '$1 == k { print $2 }'; }
[ "$(val 'fedc_http_connections_closed_total{reason="full"}')" -ge 16 ] ||
  fail "closed as full: $(get /metrics | grep http_connections)"
[ "$(val 'fedc_http_connections_closed_total{reason="deadline"}')" -ge 1 ] ||
  fail "closed at the deadline: $(get /metrics | grep http_connections)"

# ---- 2. a flood from the probe's own address ----
start_bg flood2 python3 "$T/flood.py" "$MPORT" 127.0.0.1 127.0.0.1
wait_for grep -q "^open 16" "$T/flood2.log" 30 || fail "the second flood did not connect"
for i in $(seq 1 10); do
  r=$(get /healthz)
  [ "$r" = ok ] || fail "/healthz under a flood from its own address, try $i: '$r'"
done
[ "$(val 'fedc_http_connections_closed_total{reason="per_address"}')" -ge 8 ] ||
  fail "closed per address: $(get /metrics | grep http_connections)"
wait_for grep -q "^closed 16" "$T/flood2.log" 60 || fail "second flood outlived the deadline: $(tail -1 "$T/flood2.log")"
kill -TERM "$COORD_PID"
wait "$COORD_PID" || fail "coordinator exited non-zero on SIGTERM"

# ---- 3. a listener off loopback needs --metrics-public ----
if "$FEDC" coordinator --pki "$T/pki" --federation flood --state "$T/state" --model 784-10 --listen 127.0.0.1:0 \
  --metrics-listen 0.0.0.0:0 >"$T/public.log" 2>&1; then
  fail "--metrics-listen 0.0.0.0:0 started without --metrics-public"
fi
assert_contains "$T/public.log" "is not a loopback address"
assert_contains "$T/public.log" "--metrics-public"
echo "PASS metrics_flood"
