#!/usr/bin/env bash
# A refused upload is retried (issue 27, the default round). With one staging
# slot, probe `a` holds it mid-upload; probe `b` then uploads, is refused
# "busy: no aggregation slot free, retry in N ms" (UNAVAILABLE with a retry
# time), waits as told and is accepted once `a` is done. Both updates count
# and the round completes with 2 participants. Before the fix the probe tried
# once, so `bench/bench_round.sh` with 100 clients never completed a round on
# the default options (95 of 100 uploads refused).
# Then the default slot count: with no --upload-slots, the coordinator
# derives it from --upload-memory-mib and the model's size, and says so.
set -euo pipefail
. "$(dirname "$0")/lib.sh" "$@"
make_tmp
PROBE="$BUILD_DIR/fedc_probe"

make_pki "$T/pki" itest a b
ADMIN_PKI=(--pki "$T/pki" --name root)

start_coordinator --pki "$T/pki" --federation itest --state "$T/state" --model 784-10 --rounds 1 \
  --min-clients 2 --cohort 2 --min-updates 2 --poll-ms 100 --round-timeout-ms 60000 --pickup-timeout-ms 60000 \
  --upload-slots 1
start_bg probe-a "$PROBE" --coordinator "$COORD_ADDR" --pki "$T/pki" --name a --mode hold-upload --hold-ms 3000
pa=$BG_PID
start_bg probe-b "$PROBE" --coordinator "$COORD_ADDR" --pki "$T/pki" --name b --mode good \
  --upload-after "$T/go-b"
pb=$BG_PID
wait_for grep -q '"step":"holding"' "$T/probe-a.log" 60 || fail "probe a never held its upload"
touch "$T/go-b"
set +e
wait "$pb"
rb=$?
wait "$pa"
ra=$?
set -e
[ "$ra" = 0 ] || fail "probe a failed: $(cat "$T/probe-a.log")"
[ "$rb" = 0 ] || fail "probe b's upload was not retried until accepted: $(cat "$T/probe-b.log")"
grep -q '"step":"retry","code":14' "$T/probe-b.log" || fail "probe b was never refused busy: $(cat "$T/probe-b.log")"
# The refusal reaches the client as the coordinator said it: a status with a
# retry time comes over a working connection, so the client does not probe
# the coordinator (a TCP + TLS handshake per refused client) and put its own
# diagnosis ("coordinator at ... unavailable: ...") in place of the reason.
grep -q '"step":"retry","code":14,"retry_after_ms":[0-9]*,"detail":"coordinator busy: no aggregation slot free' \
  "$T/probe-b.log" || fail "the busy refusal's reason was replaced: $(grep '"retry"' "$T/probe-b.log")"
assert_contains "$T/coord.log" "no aggregation slot free"
wait_for bash -c "'$FEDC' status --coordinator $COORD_ADDR ${ADMIN_PKI[*]} --json |
  jq -e '.rounds_completed == 1' >/dev/null" 60 || fail "round did not complete"
jq -s -e '.[0].outcome == "completed" and .[0].participants == 2' "$T/state/rounds.jsonl" >/dev/null ||
  fail "round 1 should complete with both updates: $(cat "$T/state/rounds.jsonl")"
kill -TERM "$COORD_PID"
wait "$COORD_PID" || true

# Default: slots from the memory budget. 784-10 is 7,850 floats (31,400 bytes):
# 1 MiB / 31,400 = 33 slots; 10 GiB would be 341,962, capped at 1,024.
start_coordinator --pki "$T/pki" --federation itest --state "$T/state2" --model 784-10 --rounds 1 \
  --min-clients 5 --upload-memory-mib 1
wait_for grep -q "upload staging: 33 slots" "$T/coord.log" 20 ||
  fail "coordinator did not derive 33 slots from 1 MiB: $(grep -i staging "$T/coord.log")"
kill -TERM "$COORD_PID"
wait "$COORD_PID" || true
start_coordinator --pki "$T/pki" --federation itest --state "$T/state3" --model 784-10 --rounds 1 \
  --min-clients 5 --upload-memory-mib 10240
wait_for grep -q "upload staging: 1024 slots" "$T/coord.log" 20 ||
  fail "coordinator did not cap the slots at 1024: $(grep -i staging "$T/coord.log")"
kill -TERM "$COORD_PID"
wait "$COORD_PID" || true
echo "test_upload_busy: ok"
