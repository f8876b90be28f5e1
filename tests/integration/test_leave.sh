#!/usr/bin/env bash
# A client stopped with Ctrl-C mid-federation costs no round (issue 21 item
# 3). Three `fedc client` processes, a cohort of 2, min_updates 2; dev1 has
# more data than the others so its training takes a while, and it gets
# SIGINT as soon as it has picked up a task. It says "stopping" (not "round
# failed (CANCELLED); retrying"), tells the coordinator it leaves and exits
# 0; the coordinator logs and audits the leave and drops dev1 at once: in the
# round it was in, it is replaced (or the round goes on without it if its
# update had already landed), and it is never selected again. Every round of
# the budget completes, none abandoned (rounds.jsonl, `fedc rounds --json`),
# and no update from dev1 is accepted after its leave. Before the Leave call
# dev1 stayed live for the liveness window: each round it was selected for
# was abandoned at the pick-up deadline, discarding dev2's accepted update.
set -euo pipefail
. "$(dirname "$0")/lib.sh" "$@"
. "$(dirname "$0")/_data.sh"
make_tmp
make_pki "$T/pki" itest dev1 dev2 dev3
make_idx "$T" 100 3
mkdir "$T/big"
make_idx "$T/big" 3000 1
ADMIN=(--pki "$T/pki" --name root)
ROUNDS=10

start_coordinator --pki "$T/pki" --federation itest --state "$T/state" --model 784-64-10 --rounds "$ROUNDS" \
  --exit-when-done --min-clients 2 --cohort 2 --min-updates 2 --poll-ms 100 --pickup-timeout-ms 3000 --epochs 2
start_bg client-dev1 "$FEDC" client --coordinator "$COORD_ADDR" --pki "$T/pki" --name dev1 --json \
  --data "idx:$T/big/img0.idx,$T/big/lbl0.idx" --model 784-64-10
DEV1=$BG_PID
OTHERS=()
for i in 2 3; do
  start_bg "client-dev$i" "$FEDC" client --coordinator "$COORD_ADDR" --pki "$T/pki" --name "dev$i" \
    --data "idx:$T/img$((i - 1)).idx,$T/lbl$((i - 1)).idx" --model 784-64-10
  OTHERS+=("$BG_PID")
done

# Mid-federation: after 2 completed rounds, the next task dev1 picks up.
wait_for bash -c "'$FEDC' status --coordinator '$COORD_ADDR' ${ADMIN[*]} --json | jq -e '.rounds_completed >= 2'" 120 ||
  fail "no 2 rounds completed"
tasks() { grep -c '"event":"task"' "$T/client-dev1.log" || true; }
seen=$(tasks)
deadline=$((SECONDS + 120))
while [ "$(tasks)" = "$seen" ]; do
  [ "$SECONDS" -lt "$deadline" ] || fail "dev1 was not selected again within 120 s"
  sleep 0.02
done
before=$(wc -l <"$T/client-dev1.log")
kill -INT "$DEV1"
wait_for bash -c "! kill -0 $DEV1 2>/dev/null" 60 || fail "dev1 did not stop within 60 s of SIGINT"
rc=0
wait "$DEV1" || rc=$?
[ "$rc" = 0 ] || fail "dev1 exited $rc after SIGINT"
assert_contains "$T/client-dev1.log" "fedc client dev1: stopped after"
assert_contains "$T/client-dev1.log" "stopping"
if tail -n +"$((before + 1))" "$T/client-dev1.log" | grep -E "retrying|round failed"; then
  fail "a stopping client talks of retrying"
fi

# The federation finishes with dev2 and dev3; the coordinator drains and exits.
wait_for bash -c "! kill -0 $COORD_PID 2>/dev/null" 180 || fail "the federation did not finish"
rc=0
wait "$COORD_PID" || rc=$?
[ "$rc" = 0 ] || fail "coordinator exited $rc"
for p in "${OTHERS[@]}"; do
  wait_for bash -c "! kill -0 $p 2>/dev/null" 60 || fail "a client did not finish"
done

grep -E "client dev1 left \(stopped\)" "$T/coord.log" || fail "the coordinator did not log dev1's leave"
jq -s -e '[.[] | select(.outcome == "abandoned")] | length == 0' "$T/state/rounds.jsonl" >/dev/null ||
  fail "rounds abandoned: $(jq -c 'select(.outcome == "abandoned")' "$T/state/rounds.jsonl")"
jq -s -e --argjson n "$ROUNDS" '[.[] | select(.outcome == "completed")] | length == $n' "$T/state/rounds.jsonl" \
  >/dev/null || fail "not $ROUNDS completed rounds: $(cat "$T/state/rounds.jsonl")"
"$FEDC" audit verify --state "$T/state" >/dev/null || fail "audit chain broken"
AUDIT=$("$FEDC" audit show --state "$T/state" --json)
LEAVE_SEQ=$(printf '%s\n' "$AUDIT" | jq -s -r '[.[] | select(.kind == "leave" and .client == "dev1")] | .[0].seq // empty')
[ -n "$LEAVE_SEQ" ] || fail "no audit record of dev1's leave"
printf '%s\n' "$AUDIT" | jq -s -e --argjson s "$LEAVE_SEQ" \
  '[.[] | select(.seq > $s and .kind == "update" and .client == "dev1" and .outcome == "accepted")] | length == 0' \
  >/dev/null || fail "an update from dev1 was accepted after it left"
echo "dev1's leave: $(printf '%s\n' "$AUDIT" | jq -s -c '[.[] | select(.kind == "leave")] | .[0] | del(.prev, .hash)')"
echo "PASS leave"
