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
# Then the refusals over the wire (fedc_probe modes resume, resume-other):
# a's upload ends at half its chunks and is kept; b, in the same round,
# sends the same header (a zero delta of the same model: the same SHA-256)
# at a's offset and is refused (nothing is kept for b: it cannot splice its
# bytes onto a's); a's resumes with another SHA-256, other meta, an offset
# beyond and one below the bytes kept are refused, each losing nothing; the
# right one is accepted and the round counts both updates. A model download
# asked from byte 1000 (not a chunk boundary) is refused.
set -euo pipefail
. "$(dirname "$0")/lib.sh" "$@"
. "$(dirname "$0")/_data.sh"
. "$(dirname "$0")/_resume.sh"
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
check_upload_resumed "$T/state" "$up_cut" "$TOTAL" "$CHUNK"

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

# ---- refusals over the wire ----
make_pki "$T/pki2" itest a b
PROBE="$BUILD_DIR/fedc_probe"
start_coordinator --pki "$T/pki2" --federation itest --state "$T/state2" --model 784-10 --rounds 1 \
  --min-clients 2 --cohort 2 --min-updates 2 --poll-ms 100 --round-timeout-ms 120000 --pickup-timeout-ms 120000
# UploadOffset is a client's call: an admin certificate is refused before the
# handler (PERMISSION_DENIED), and a client's malformed request (no SHA-256)
# is refused with a sentence (INVALID_ARGUMENT); without a certificate the
# handshake already fails for every method (test_tls.sh).
"$PROBE" --coordinator "$COORD_ADDR" --pki "$T/pki2" --name root --role admin --mode call \
  --method /fedc.v1.Coordinator/UploadOffset --want 7 > "$T/uo-admin.json" || fail "admin UploadOffset: $(cat "$T/uo-admin.json")"
"$PROBE" --coordinator "$COORD_ADDR" --pki "$T/pki2" --name b --mode call \
  --method /fedc.v1.Coordinator/UploadOffset --want 3 > "$T/uo-empty.json" || fail "empty UploadOffset: $(cat "$T/uo-empty.json")"
assert_contains "$T/uo-empty.json" "sha256 must be 32 bytes"
start_bg probe-a "$PROBE" --coordinator "$COORD_ADDR" --pki "$T/pki2" --name a --mode resume \
  --resume-after "$T/go-a"
pa=$BG_PID
start_bg probe-b "$PROBE" --coordinator "$COORD_ADDR" --pki "$T/pki2" --name b --mode resume-other \
  --upload-after "$T/go-b"
pb=$BG_PID
wait_for grep -q '"step":"cut"' "$T/probe-a.log" 60 || fail "probe a never cut its upload: $(cat "$T/probe-a.log")"
assert_contains "$T/probe-a.log" "(kept: resume it with UploadOffset)"
touch "$T/go-b"
wait "$pb" || fail "probe b: $(cat "$T/probe-b.log")"
assert_contains "$T/probe-b.log" "no partial upload kept for this identity"
touch "$T/go-a"
wait "$pa" || fail "probe a: $(grep '"ok":false\|offset' "$T/probe-a.log")"
grep -q '"step":"upload-offset","offset":16384' "$T/probe-a.log" || fail "a's offset: $(grep offset "$T/probe-a.log")"
for why in "another update than the bytes kept" "meta (version, examples, loss, flags) differs" \
  "is beyond the 16384 bytes received" "is below the 16384 bytes received" \
  "start_offset 1000 is not a chunk boundary"; do
  assert_contains "$T/probe-a.log" "$why"
done
wait_for bash -c "jq -e 'select(.outcome == \"completed\") | .participants == 2' '$T/state2/rounds.jsonl' >/dev/null 2>&1" 60 ||
  fail "round with the resumed update did not complete: $(cat "$T/state2/rounds.jsonl" 2>/dev/null)"
"$FEDC" audit show --state "$T/state2" --json |
  jq -s -e '[.[] | select(.kind == "update" and .outcome == "accepted")] | map({client, r: (.resumed_from // 0)}) |
    sort_by(.client) == [{"client": "a", "r": 16384}, {"client": "b", "r": 0}]' >/dev/null ||
  fail "accepted updates: $("$FEDC" audit show --state "$T/state2" --json | grep update)"
kill -TERM "$COORD_PID"
wait "$COORD_PID" || true
echo "PASS"
