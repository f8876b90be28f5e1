#!/usr/bin/env bash
# Resumable transfers (issue 26, protocol 1.10). One `fedc client` reaches the
# coordinator through a TCP proxy on 127.0.0.1 (tests/integration/cutproxy.py)
# that cuts the link once at 90% of the 16 MB model download (784-5000-10:
# 15,900,040 bytes, 16 chunks of 1 MiB) and once at 90% of the 16 MB update
# upload. Both transfers resume from the last chunk the other side has,
# within the round, instead of starting over: the chunks sent twice (those
# at or after the resumed offset that had already crossed the cut link) are
# at most 2 each way, and the round completes with the update accepted (its
# SHA-256 over the whole update checked as for any upload). The coordinator
# logs the resumed download, the audit record of the update names
# resumed_from, and /metrics counts both.
# Without resumable transfers the client fetched and uploaded from byte 0
# again: no resumed download, no resumed_from, and 14+ chunks sent twice.
set -euo pipefail
. "$(dirname "$0")/lib.sh" "$@"
. "$(dirname "$0")/_data.sh"
make_tmp

make_pki "$T/pki" itest a
make_idx "$T" 100 1
TOTAL=15900040 # 4 x (784 x 5000 + 5000 + 5000 x 10 + 10)
CHUNK=1048576
CUT=$((TOTAL * 9 / 10))

start_coordinator --pki "$T/pki" --federation itest --state "$T/state" --model 784-5000-10 --rounds 1 \
  --min-clients 1 --cohort 1 --min-updates 1 --poll-ms 100 --round-timeout-ms 300000 \
  --pickup-timeout-ms 300000 --metrics-listen 127.0.0.1:0 --log info
start_bg proxy python3 "$(dirname "$0")/cutproxy.py" --target "$COORD_ADDR" --port-file "$T/proxy.port" \
  --cut-down "$CUT" --cut-up "$CUT"
wait_for test -s "$T/proxy.port" 20 || fail "proxy did not start"
PROXY=127.0.0.1:$(cat "$T/proxy.port")

start_bg client-a "$FEDC" client --coordinator "$PROXY" --pki "$T/pki" --name a \
  --data "idx:$T/img0.idx,$T/lbl0.idx" --model 784-5000-10 --eval-fraction 0 --rounds 1 --log info
CLIENT=$BG_PID
wait_for bash -c "jq -e 'select(.outcome == \"completed\")' '$T/state/rounds.jsonl' >/dev/null 2>&1" 240 ||
  fail "round 1 did not complete: $(tail -5 "$T/coord.log") / $(tail -5 "$T/client-a.log")"

# Both cuts happened, each at 90%.
down_cut=$(jq -r 'select(.event == "cut" and .dir == "down") | .delivered' "$T/proxy.log")
up_cut=$(jq -r 'select(.event == "cut" and .dir == "up") | .delivered' "$T/proxy.log")
[ "$down_cut" = "$CUT" ] || fail "the download was not cut: $(cat "$T/proxy.log")"
[ "$up_cut" = "$CUT" ] || fail "the upload was not cut: $(cat "$T/proxy.log")"

# Download: resumed where it was cut. The chunks sent twice are those from the
# resumed offset up to the bytes the cut link had delivered (which include a
# few KiB of TLS and HTTP/2 framing and earlier calls: an upper bound).
line=$(grep -o "model download for client/a resumed at byte [0-9]* of $TOTAL" "$T/coord.log" | head -1) ||
  fail "the model download was not resumed: $(grep -i 'download\|fetch' "$T/coord.log" | tail -5)"
from=$(echo "$line" | awk '{print $8}')
resent=$(((down_cut - from + CHUNK - 1) / CHUNK))
echo "download: cut at $down_cut wire bytes, resumed at byte $from, chunks sent twice <= $resent"
[ "$from" -gt 0 ] && [ "$resent" -le 2 ] || fail "download re-sent $resent chunks (resumed at $from, cut at $down_cut)"

# Upload: the accepted update's audit record says where it resumed.
"$FEDC" audit show --state "$T/state" --json >"$T/audit.jsonl"
from=$(jq -r 'select(.kind == "update" and .client == "a" and .outcome == "accepted") | .resumed_from // 0' \
  "$T/audit.jsonl")
[ -n "$from" ] || fail "no accepted update from a: $(grep update "$T/audit.jsonl")"
resent=$(((up_cut - from + CHUNK - 1) / CHUNK))
echo "upload: cut at $up_cut wire bytes, resumed at byte $from, chunks sent twice <= $resent"
[ "$from" -gt 0 ] && [ "$resent" -le 2 ] || fail "upload re-sent $resent chunks (resumed at $from, cut at $up_cut)"
assert_contains "$T/coord.log" "upload from a resumed at byte $from of $TOTAL"
assert_contains "$T/client-a.log" "upload resumes at byte $from of $TOTAL"
jq -e 'select(.round == 1) | .participants == 1' "$T/state/rounds.jsonl" >/dev/null ||
  fail "round 1 should count the resumed update: $(cat "$T/state/rounds.jsonl")"

# The operator sees both in /metrics.
mport=$(grep -o 'metrics on http://127.0.0.1:[0-9]*' "$T/coord.log" | head -1 | sed 's/.*://') ||
  fail "no metrics address in the log"
curl -s "http://127.0.0.1:$mport/metrics" >"$T/metrics.txt"
grep -q '^fedc_transfers_resumed_total{direction="upload"} 1$' "$T/metrics.txt" ||
  fail "upload resume not counted: $(grep resumed "$T/metrics.txt")"
grep -q '^fedc_transfers_resumed_total{direction="download"} 1$' "$T/metrics.txt" ||
  fail "download resume not counted: $(grep resumed "$T/metrics.txt")"

wait "$CLIENT" || true
kill -TERM "$COORD_PID"
wait "$COORD_PID" || true
echo "PASS"
