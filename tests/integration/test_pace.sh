#!/usr/bin/env bash
# Pace steering over the real wire (issue 26, protocol 1.8): a coordinator
# that wants 2 check-ins a second from 4 `fedc client` processes polling
# every 100 ms steers them (each is told a slot about 2 s out, and the
# round's members a slot for after their round), says so in `fedc status
# --json`, and the federation still completes every round with full cohorts,
# none abandoned; the last round is not steered, so every client hears DONE
# within the drain and exits 0, and the coordinator exits 0.
set -euo pipefail
. "$(dirname "$0")/lib.sh" "$@"
. "$(dirname "$0")/_data.sh"
make_tmp
make_pki "$T/pki" itest dev1 dev2 dev3 dev4
make_idx "$T" 100 4
ADMIN=(--pki "$T/pki" --name root)
ROUNDS=4

start_coordinator --pki "$T/pki" --federation itest --state "$T/state" --model 784-10 --rounds "$ROUNDS" \
  --exit-when-done --min-clients 4 --cohort 2 --min-updates 2 --poll-ms 100 --pickup-timeout-ms 8000 \
  --pace-rate 2 --pace-min-rate 0
PIDS=()
for i in 1 2 3 4; do
  start_bg "client-dev$i" "$FEDC" client --coordinator "$COORD_ADDR" --pki "$T/pki" --name "dev$i" --json \
    --data "idx:$T/img$((i - 1)).idx,$T/lbl$((i - 1)).idx" --model 784-10
  PIDS+=("$BG_PID")
done
wait_for bash -c "'$FEDC' status --coordinator '$COORD_ADDR' ${ADMIN[*]} --json |
  jq -e '.eligibility.pace.steering and .eligibility.pace.window_ms >= 1000 and .eligibility.seen == 4'" 60 ||
  fail "pace steering not reported on: $("$FEDC" status --coordinator "$COORD_ADDR" "${ADMIN[@]}" --json)"

wait_for bash -c "! kill -0 $COORD_PID 2>/dev/null" 300 || fail "the federation did not finish"
rc=0
wait "$COORD_PID" || rc=$?
[ "$rc" = 0 ] || fail "coordinator exited $rc"
for p in "${PIDS[@]}"; do
  wait_for bash -c "! kill -0 $p 2>/dev/null" 60 || fail "a client did not finish"
  rc=0
  wait "$p" || rc=$?
  [ "$rc" = 0 ] || fail "a client exited $rc"
done
jq -s -e --argjson n "$ROUNDS" '([.[] | select(.outcome == "completed" and .participants == 2)] | length == $n) and
  ([.[] | select(.outcome == "abandoned")] | length == 0)' "$T/state/rounds.jsonl" >/dev/null ||
  fail "rounds: $(cat "$T/state/rounds.jsonl")"
grep -q "drain complete: every live client heard DONE" "$T/coord.log" || fail "the drain did not complete"
for i in 1 2 3 4; do grep -q '"event":"done"' "$T/client-dev$i.log" || fail "dev$i did not hear DONE"; done
echo "rounds: $(jq -s -c 'map({round, participants})' "$T/state/rounds.jsonl")"
