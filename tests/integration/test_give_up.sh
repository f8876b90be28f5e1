#!/usr/bin/env bash
# A client whose trainer fails gives that round up (Leave with the round,
# protocol 1.19) and stays in the federation. Plaintext synchronous rounds,
# three clients, cohort 3, min_updates 2, a 30 s round deadline; client c's
# trainer fails while $T/fail-c exists (--train-fail-if).
#   rounds 1-2  c fails (and the rounds that start before the test lets it
#               work again, if any: a prefix of the ten): it gives each such round up, the cohort
#               shrinks to 2 and the round completes with a and b as soon as
#               both are in, well inside its 30 s deadline (before 1.19 each
#               waited the whole deadline for c); the coordinator logs and
#               audits each give-up with its round, and only those;
#   round 10    c's trainer has worked again for rounds: c is still live and
#               selected (it never left), and the round has all three.
# (A give-up of a round a client holds no task of, or a second one, is
# covered by tests/unit/test_engine_leave.c: the runtime never sends it.)
set -euo pipefail
. "$(dirname "$0")/lib.sh" "$@"
. "$(dirname "$0")/_data.sh"
. "$(dirname "$0")/_cohort.sh"
make_tmp
NAMES=(a b c)
make_pki "$T/pki" gu "${NAMES[@]}"
make_idx "$T" 100 3

start_coordinator --pki "$T/pki" --federation gu --state "$T/state" --model 784-10 --rounds 10 --min-clients 3 \
  --cohort 3 --min-updates 2 --poll-ms 100 --round-timeout-ms 30000 --log info
ADMIN=(--coordinator "$COORD_ADDR" --pki "$T/pki" --name root)
touch "$T/fail-c"
CLIENT_ARGS=(--train-delay-ms 500) # rounds of 0.5 s or more
cohort_client a
cohort_client b
cohort_client c --train-fail-if "$T/fail-c"

wait_rounds 2 50
rm -f "$T/fail-c"
wait_rounds 10 90
"$FEDC" rounds "${ADMIN[@]}" --json >"$T/rounds.jsonl"
# The rounds c gave up: every one completed with a and b, inside its
# deadline (not a speed bound: without the give-up each closes at it).
jq -s -e 'length == 10 and all(.outcome == "completed") and ([.[] | select(.participants == 2)] | length >= 2 and
  all(.ended_unix_ms - .started_unix_ms < 30000)) and all(.participants == 2 or .participants == 3) and
  ([.[] | .participants] | . == sort) and .[9].participants == 3' "$T/rounds.jsonl" >/dev/null ||
  fail "rounds: $(cat "$T/rounds.jsonl")"
GAVE=$(jq -s -c '[.[] | select(.participants == 2) | .round]' "$T/rounds.jsonl")
echo "rounds given up by c, ms each: $(jq -s -c '[.[] | select(.participants == 2) | .ended_unix_ms - .started_unix_ms]' "$T/rounds.jsonl")"
for r in $(jq -r '.[]' <<<"$GAVE"); do
  assert_contains "$T/coord.log" "client c gave up round $r (its task failed): the round no longer waits for it"
done
assert_contains "$T/client-c.log" "train-fail-if"
jq -s -e --argjson gave "$GAVE" '[.[] | select(.kind == "leave")] | all(.client == "c" and .reason == "task failed"
  and .outcome == "dropped") and map(.round) == $gave' "$T/state/audit.log" >/dev/null ||
  fail "audit of c's give-ups (rounds $GAVE): $(grep '"leave"' "$T/state/audit.log")"
kill -TERM "$COORD_PID"
wait "$COORD_PID" || fail "coordinator exited non-zero on SIGTERM"
"$FEDC" audit verify --state "$T/state" >"$T/verify.txt" 2>&1 || fail "audit chain: $(cat "$T/verify.txt")"
echo "PASS give up (rounds given up: $GAVE)"
