#!/usr/bin/env bash
# The built-in client trains the coordinator's model (issue 21, item 4).
# Before, a client whose --model differed printed "trainer failed" every
# round and went on for ever. Now:
#   1. coordinator on 784-32-10, client started with --model 784-10: the
#      client warns once, trains 784-32-10, its update is accepted and the
#      round completes; the client ends 0 when the federation is done;
#   2. coordinator on 100-10 (100 inputs), client data of 784 features: the
#      client exits 1 with one sentence naming both and what to change;
#   3. the same client without --model trains the coordinator's model without
#      a warning.
set -euo pipefail
. "$(dirname "$0")/lib.sh" "$@"
. "$(dirname "$0")/_data.sh"
make_tmp
make_pki "$T/pki" shapes a b
make_idx "$T" 100 1
DATA="idx:$T/img0.idx,$T/lbl0.idx"
ONE=(--rounds 1 --min-clients 1 --cohort 1 --min-updates 1 --poll-ms 100 --round-timeout-ms 30000)

# 1. Adapts, with a warning.
start_coordinator --pki "$T/pki" --federation shapes --state "$T/s1" --model 784-32-10 "${ONE[@]}"
rc=0
timeout 60 "$FEDC" client --coordinator "$COORD_ADDR" --pki "$T/pki" --name a --data "$DATA" --model 784-10 \
  >"$T/a.log" 2>&1 || rc=$?
[ "$rc" = 0 ] || fail "client with --model 784-10 on a 784-32-10 coordinator: exit $rc: $(cat "$T/a.log")"
assert_contains "$T/a.log" "the coordinator's model is 784-32-10, not --model 784-10: training 784-32-10"
[ "$(grep -c "the coordinator's model is" "$T/a.log")" = 1 ] || fail "warned more than once: $(cat "$T/a.log")"
assert_contains "$T/a.log" "round 1: uploaded"
grep -q "trainer failed" "$T/a.log" && fail "trainer failed: $(cat "$T/a.log")"
assert_contains "$T/coord.log" "round 1 completed"
kill "$COORD_PID"
wait "$COORD_PID" || true

# 2. A model the data cannot feed: one sentence, exit 1, no retrying.
start_coordinator --pki "$T/pki" --federation shapes --state "$T/s2" --model 100-10 "${ONE[@]}"
rc=0
timeout 60 "$FEDC" client --coordinator "$COORD_ADDR" --pki "$T/pki" --name b --data "$DATA" >"$T/b.log" 2>&1 || rc=$?
[ "$rc" -ne 124 ] || fail "client on a model its data cannot feed kept running: $(tail -5 "$T/b.log")"
[ "$rc" = 1 ] || fail "client on a 100-input model: exit $rc: $(cat "$T/b.log")"
assert_contains "$T/b.log" "fedc client b: the coordinator's model 100-10 takes 100 inputs, this client's data has 784: start the coordinator with a --model for this data"
grep -q "trainer failed\|not --model" "$T/b.log" && fail "unexpected lines: $(cat "$T/b.log")"
kill "$COORD_PID"
wait "$COORD_PID" || true

# 3. No --model: the coordinator's, silently.
start_coordinator --pki "$T/pki" --federation shapes --state "$T/s3" --model 784-16-10 "${ONE[@]}"
rc=0
timeout 60 "$FEDC" client --coordinator "$COORD_ADDR" --pki "$T/pki" --name a --data "$DATA" >"$T/c.log" 2>&1 || rc=$?
[ "$rc" = 0 ] || fail "client without --model: exit $rc: $(cat "$T/c.log")"
assert_contains "$T/c.log" "model the coordinator's"
assert_contains "$T/c.log" "round 1: uploaded"
grep -q "not --model" "$T/c.log" && fail "warned without --model: $(cat "$T/c.log")"
kill "$COORD_PID"
wait "$COORD_PID" || true
echo "PASS client model"
