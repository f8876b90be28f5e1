#!/usr/bin/env bash
# Held check-ins (issue 27, coord_ci_park.c): a client waiting for a round is
# answered the moment the round opens, not at its next poll.
#   1. --poll-ms 20000 (waiting clients are told to come back in 20 s),
#      min-clients 2: two clients each send one CheckIn. Neither can have a
#      task when it arrives (the first is alone; the second makes the round
#      start at the driver's next tick), so without holding the first answer
#      of each is WAIT. Held, each first answer is TRAIN.
#   2. The same with --checkin-hold-ms 0 (the old behaviour): the first
#      client's first answer is WAIT with retry 20000 ms.
#   3. A lone client with a short hold: answered WAIT with the short retry
#      (ask again at once, and be held again), not the 20 s poll.
# Real processes over mutual TLS on 127.0.0.1, certificates from `fedc pki`.
set -euo pipefail
. "$(dirname "$0")/lib.sh" "$@"
make_tmp
PROBE="$BUILD_DIR/fedc_probe"
make_pki "$T/pki" itest a b c
checkin() { # NAME OUT: one CheckIn, its answer in OUT
  "$PROBE" --coordinator "$COORD_ADDR" --pki "$T/pki" --name "$1" --mode call \
    --method /fedc.v1.Coordinator/CheckIn --want 0 >"$2" 2>&1
}
action() { jq -r 'select(.step == "checkin") | .action' "$1"; }
retry() { jq -r 'select(.step == "checkin") | .retry_after_ms' "$1"; }
COMMON=(--pki "$T/pki" --federation itest --model 784-10 --rounds 1 --min-clients 2 --cohort 2 --min-updates 2
  --poll-ms 20000 --round-timeout-ms 30000)

# ---- 1. held: both first answers are tasks ----
start_coordinator "${COMMON[@]}" --state "$T/s1" --checkin-hold-ms 8000
checkin a "$T/a1.out" &
PA=$!
sleep 0.3
checkin b "$T/b1.out" || fail "b's check-in: $(cat "$T/b1.out")"
wait "$PA" || fail "a's check-in: $(cat "$T/a1.out")"
[ "$(action "$T/a1.out")" = 2 ] || fail "a's first check-in was not answered with its task: $(cat "$T/a1.out")"
[ "$(action "$T/b1.out")" = 2 ] || fail "b's first check-in was not answered with its task: $(cat "$T/b1.out")"
grep -q "round 1 started: 2 of 2 live clients selected" "$T/coord.log" || fail "no round: $(tail -3 "$T/coord.log")"
kill -TERM "$COORD_PID"
wait "$COORD_PID" || fail "coordinator exit $? after held check-ins: $(tail -3 "$T/coord.log")"

# ---- 2. not held (--checkin-hold-ms 0): the first answer is WAIT, come back in 20 s ----
start_coordinator "${COMMON[@]}" --state "$T/s2" --checkin-hold-ms 0
checkin a "$T/a2.out" || fail "a's check-in: $(cat "$T/a2.out")"
[ "$(action "$T/a2.out")" = 1 ] && [ "$(retry "$T/a2.out")" = 20000 ] ||
  fail "unheld check-in: $(cat "$T/a2.out")"
kill -TERM "$COORD_PID"
wait "$COORD_PID" || true

# ---- 3. a lone client, a short hold: WAIT with the short retry ----
start_coordinator "${COMMON[@]}" --state "$T/s3" --checkin-hold-ms 300
checkin c "$T/c3.out" || fail "c's check-in: $(cat "$T/c3.out")"
[ "$(action "$T/c3.out")" = 1 ] && [ "$(retry "$T/c3.out")" -lt 1000 ] ||
  fail "a held check-in that timed out: $(cat "$T/c3.out")"
echo "PASS"
