#!/usr/bin/env bash
# Secure aggregation's floors (issue 20, findings 1 and 3) over real processes
# and mutual TLS on 127.0.0.1:
#   - the coordinator refuses to start with a threshold its clients would
#     refuse (cohort 6, the complete graph k = 5, t = 3: 2t <= k + 1 lets a
#     coordinator that shows two survivor lists unmask one client's update),
#     naming the rule;
#   - min_updates under secure aggregation: cohort 6, --min-updates 6, client
#     f vanishes before its masked input. The round is abandoned when the
#     masked stage closes, before any survivor list or unmask share (it used
#     to complete with 5 updates). f back with --secagg-tolerate-colluders 2
#     refuses the task (k = 5, t = 4 would need 2t > 8); with 1 it takes part
#     and the round completes with all six;
#   - the same with distributed DP (--cohort 0 --cohort-fraction 1
#     --dp-noise-multiplier 1 --min-updates 6): no sum of fewer than 6 inputs
#     is ever unmasked (it used to unmask 5, carrying z sqrt(5/6) of the noise,
#     and then abandon the round unaccounted), every unmasked sum carries at
#     least the noise multiplier the accountant counts, and every round that
#     unmasked one was accounted (dp_epsilon).
set -euo pipefail
. "$(dirname "$0")/lib.sh" "$@"
. "$(dirname "$0")/_data.sh"
. "$(dirname "$0")/_cohort.sh"
make_tmp
NAMES=(a b c d e f)
make_pki "$T/pki" saf "${NAMES[@]}"
make_idx "$T" 100 6
ADMIN=(--pki "$T/pki" --name root)
COMMON=(--pki "$T/pki" --federation saf --model 784-10 --secagg --min-clients 6 --min-updates 6 --poll-ms 100
  --client-ttl-ms 1500 --round-timeout-ms 6000 --secagg-stage-ms 2500 --log info)

# ---- start-up: a threshold clients refuse ----
rc=0
"$FEDC" coordinator --listen 127.0.0.1:0 --state "$T/s0" "${COMMON[@]}" --cohort 6 --secagg-threshold 3 \
  >"$T/refused.log" 2>&1 || rc=$?
[ "$rc" != 0 ] || fail "a coordinator with --secagg-threshold 3 for a cohort of 6 started"
grep -q "2t <= k + 1.*needs t >= 4" "$T/refused.log" || fail "no rule named: $(cat "$T/refused.log")"

CLIENT_PIDS=()
start_client() { # NAME [ARGS...]: cohort_client, its pid kept
  cohort_client "$@"
  CLIENT_PIDS+=("$BG_PID")
  F_PID=$BG_PID
}
rounds() { "$FEDC" rounds --coordinator "$COORD_ADDR" "${ADMIN[@]}" --json; }
abandoned_short() { # a round abandoned when the masked stage closed with 5 of 6
  rounds | jq -e -s 'map(select(.outcome != "completed" and (.reason | test("only 5 masked inputs, fewer than min_updates 6: nothing is unmasked")) and .secagg_remaining[2] == 5 and .secagg_remaining[3] == 0)) | length > 0' >/dev/null
}
# Every unmasked sum in the log had at least min_updates inputs.
check_unmasked() {
  if grep -o "unmasked [0-9]* inputs" "$T/coord.log" | awk '$2 < 6 { bad = 1 } END { exit !bad }'; then
    fail "a sum of fewer than 6 inputs was unmasked: $(grep 'unmasked' "$T/coord.log")"
  fi
}

# ---- min_updates, no DP ----
start_coordinator --state "$T/s1" "${COMMON[@]}" --cohort 6 --rounds 1
for n in a b c d e; do start_client "$n"; done
start_client f --secagg-drop masked:1
wait_for abandoned_short 90 || fail "no round abandoned at the masked stage: $(rounds)"
check_unmasked
grep -q "unmasked [0-9]* inputs" "$T/coord.log" && fail "something was unmasked: $(grep "unmasked [0-9]" "$T/coord.log")"
kill -KILL "$F_PID"
# A client whose owner expects two colluders refuses k = 5, t = 4.
start_client f --secagg-tolerate-colluders 2
wait_for grep -q "tolerates 2 colluding neighbours, which needs 2t > k + 1 + 2 (t >= 5)" "$T/client-f.log" 60 ||
  fail "f did not refuse t = 4: $(tail -5 "$T/client-f.log")"
kill -KILL "$F_PID"
mv "$T/client-f.log" "$T/client-f-refused.log.old"
start_client f --secagg-tolerate-colluders 1
wait_for bash -c "'$FEDC' status --coordinator '$COORD_ADDR' ${ADMIN[*]} --json | jq -e '.state == \"done\"'" 90 ||
  fail "no round completed with all six: $(rounds)"
rounds | jq -e -s 'map(select(.outcome == "completed")) | .[0] | .participants == 6 and .secagg_remaining == [6,6,6,6,6]' \
  >/dev/null || fail "the completed round: $(rounds)"
check_unmasked
grep -q "unmasked 6 inputs" "$T/coord.log" || fail "no unmasking of the six: $(grep -i secagg "$T/coord.log" | tail -5)"
kill -TERM "$COORD_PID"
wait "$COORD_PID" || fail "coordinator exited non-zero on SIGTERM"
for p in "${CLIENT_PIDS[@]}"; do kill -KILL "$p" 2>/dev/null || true; done
CLIENT_PIDS=()
mv "$T/coord.log" "$T/coord-1.log.old"
for n in "${NAMES[@]}"; do [ -f "$T/client-$n.log" ] && mv "$T/client-$n.log" "$T/client-$n-1.log.old"; done

# ---- min_updates under distributed DP ----
start_coordinator --state "$T/s2" "${COMMON[@]}" --cohort 0 --cohort-fraction 1 --dp-noise-multiplier 1 \
  --dp-clip 0.05 --rounds 2
for n in a b c d e; do start_client "$n"; done
start_client f --secagg-drop masked:1
wait_for abandoned_short 90 || fail "no DP round abandoned at the masked stage: $(rounds)"
check_unmasked
kill -KILL "$F_PID"
start_client f
wait_for bash -c "'$FEDC' status --coordinator '$COORD_ADDR' ${ADMIN[*]} --json | jq -e '.state == \"done\"'" 120 ||
  fail "the DP federation did not finish: $(rounds)"
check_unmasked
# Each unmasked sum carried at least the multiplier the accountant counts (z = 1) ...
grep -o "added noise multiplier [0-9.]* to the sum (at least [0-9.]* needed" "$T/coord.log" >"$T/noise.txt" || true
[ "$(wc -l <"$T/noise.txt")" = 2 ] || fail "noise statements: $(cat "$T/noise.txt")"
awk '{ if ($4 < 1 || $10 < 1) bad = 1 } END { exit bad }' "$T/noise.txt" || fail "too little noise: $(cat "$T/noise.txt")"
# ... and every unmasking belongs to a completed round the accountant counted.
[ "$(grep -c "unmasked [0-9]* inputs" "$T/coord.log")" = 2 ] || fail "unmaskings: $(grep unmasked "$T/coord.log")"
rounds | jq -e -s 'map(select(.outcome == "completed")) | length == 2 and all(.dp_epsilon > 0 and .participants == 6)' \
  >/dev/null || fail "accounted rounds: $(rounds)"
rounds | jq -e -s 'map(select(.outcome != "completed")) | all(has("dp_epsilon") | not)' >/dev/null ||
  fail "an abandoned round was accounted: $(rounds)"
echo "PASS secagg_floor"
