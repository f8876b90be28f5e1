#!/usr/bin/env bash
# Resumable compressed uploads (issue 26: protocol 1.9 encodings over the
# 1.10 resume). With --upload-bits 8 the 784-5000-10 update travels as
# 3,990,538 bytes (3,975,010 int8 codes and 3,882 block scales: 4 chunks of
# 1 MiB). A TCP proxy on 127.0.0.1 (cutproxy.py) cuts the upload once at
# about 90% of it. The coordinator keeps the prefix with the block decoder
# that consumed exactly those bytes (coord_resume.c), so the client resumes
# from the last chunk it has (at most 2 chunks cross twice), the round
# completes with the update accepted (the decoder saw every block once: a
# fresh decoder fed only the rest would find blocks missing at the end), and
# the audit record names resumed_from.
# Before: a cut compressed upload was not kept (UploadOffset said 0) and the
# client sent it whole again (resumed_from absent).
set -euo pipefail
. "$(dirname "$0")/lib.sh" "$@"
. "$(dirname "$0")/_data.sh"
. "$(dirname "$0")/_resume.sh"
make_tmp

make_pki "$T/pki" itest a
make_idx "$T" 100 1
TOTAL=3990538 # 3,975,010 parameters at 8 bits + 4 bytes per block of 1024
CHUNK=1048576
CUT=$((TOTAL * 9 / 10))

start_coordinator --pki "$T/pki" --federation itest --state "$T/state" --model 784-5000-10 --rounds 1 \
  --min-clients 1 --cohort 1 --min-updates 1 --poll-ms 100 --round-timeout-ms 300000 \
  --pickup-timeout-ms 300000 --upload-bits 8 --log info
start_bg proxy python3 "$(dirname "$0")/cutproxy.py" --target "$COORD_ADDR" --port-file "$T/proxy.port" \
  --cut-up "$CUT"
wait_for test -s "$T/proxy.port" 20 || fail "proxy did not start"
PROXY=127.0.0.1:$(cat "$T/proxy.port")

start_bg client-a "$FEDC" client --coordinator "$PROXY" --pki "$T/pki" --name a \
  --data "idx:$T/img0.idx,$T/lbl0.idx" --model 784-5000-10 --eval-fraction 0 --rounds 1 --log info
CLIENT=$BG_PID
wait_for bash -c "jq -e 'select(.outcome == \"completed\")' '$T/state/rounds.jsonl' >/dev/null 2>&1" 240 ||
  fail "round 1 did not complete: $(tail -5 "$T/coord.log") / $(tail -5 "$T/client-a.log")"

up_cut=$(jq -r 'select(.event == "cut" and .dir == "up") | .delivered' "$T/proxy.log")
[ "$up_cut" = "$CUT" ] || fail "the upload was not cut: $(cat "$T/proxy.log")"
assert_contains "$T/coord.log" "upload from a cut after"
check_upload_resumed "$T/state" "$up_cut" "$TOTAL" "$CHUNK"
wait "$CLIENT" || true
kill -TERM "$COORD_PID"
wait "$COORD_PID" || true
echo "PASS"
