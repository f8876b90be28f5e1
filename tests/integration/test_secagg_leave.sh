#!/usr/bin/env bash
# A member stopped in the middle of a secure-aggregation round says Leave,
# and no later stage waits for it (the coordinator withdraws it in the
# SecAgg core: fc_sa_server_withdraw), over real processes and mutual TLS on
# 127.0.0.1. Five clients, cohort 5, the complete graph k = 4, t = 3, and a
# stage deadline of 60 s, so a stage that waited for the stopped member
# would hold the round for a minute. In the one round, e halts before its
# masked input (--secagg-drop masked:1 --drop-halt, after it advertised and
# shared) and is then stopped with SIGTERM: its runtime says Leave, the
# coordinator logs the withdrawal and the audit log records it, the masked
# stage closes without it, its masks are rebuilt at unmasking, and the round
# completes with four ([5,5,4,4,4]) long before the stage deadline.
set -euo pipefail
. "$(dirname "$0")/lib.sh" "$@"
. "$(dirname "$0")/_data.sh"
. "$(dirname "$0")/_cohort.sh"
make_tmp
NAMES=(a b c d e)

make_pki "$T/pki" lv "${NAMES[@]}"
make_idx "$T" 150 5

start_coordinator --pki "$T/pki" --federation lv --state "$T/state" --model 784-10 --secagg \
  --secagg-neighbors 4 --secagg-threshold 3 --rounds 1 --min-clients 5 --cohort 5 --min-updates 3 --poll-ms 100 \
  --secagg-stage-ms 60000 --log info
ADMIN=(--coordinator "$COORD_ADDR" --pki "$T/pki" --name root)

for n in a b c d; do cohort_client "$n"; done
cohort_client e --secagg-drop masked:1 --drop-halt
E_PID=$BG_PID
wait_for grep -q "halted before the masked stage" "$T/client-e.log" 60 || fail "e did not halt: $(tail -5 "$T/client-e.log")"
t0=$SECONDS
kill -TERM "$E_PID"
wait_for grep -q "client e left (stopped) during secure aggregation: no later stage waits for it" "$T/coord.log" 20 ||
  fail "the coordinator did not withdraw e: $(grep -i 'e left\|client e' "$T/coord.log" | tail -5)"
wait_rounds 1 40
expect_round 4 "[5,5,4,4,4]" "the round without e, withdrawn before its masked input"
[ $((SECONDS - t0)) -le 40 ] || fail "the round took $((SECONDS - t0)) s after e left: a stage waited for it"
grep -q "round 1: masked stage closed with 4 clients" "$T/coord.log" || fail "masked stage: $(grep 'round 1' "$T/coord.log")"

"$FEDC" audit show --state "$T/state" --kind leave --json >"$T/leave.jsonl"
jq -e -s 'map(select(.client == "e" and .secagg == "withdrawn")) | length >= 1' "$T/leave.jsonl" >/dev/null ||
  fail "no audit record of e's withdrawal: $(cat "$T/leave.jsonl")"
"$FEDC" audit verify --state "$T/state" >/dev/null || fail "audit chain broken"
echo "PASS test_secagg_leave"
