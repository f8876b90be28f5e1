#!/usr/bin/env bash
# Keys first (--secagg-keys-first, protocol 1.18) over real processes and
# mutual TLS on 127.0.0.1: each client advertises its keys and sends its
# shares while it trains (Bonawitz et al. 2017: rounds 0 and 1 do not depend
# on the input), so the key stages hide behind training. Six clients, cohort
# 6, the complete graph k = 5, t = 4; every training takes 800 ms longer (a
# device's pace, and time for the test to act between rounds).
#   round 1  client f's training is held (--train-hold): the advertise and
#            shares stages close while it still trains, which cannot happen
#            when keys follow training (f has advertised nothing then); it is
#            released only after one stage deadline past the shares stage,
#            and its masked input still counts: the round has all six.
#   round 2  client e's trainer fails (--train-fail-if) after its keys went
#            out: it drops out after sharing, its pairwise masks are rebuilt
#            at unmasking and the round completes with five ([6,6,5,5,5]);
#            e gives its task up (Leave with the round, protocol 1.19), so
#            the masked stage does not wait for it: the round ends before
#            its training deadline (audited, e still live).
#   round 3  client d is SIGKILLed while it trains: the same.
#   round 4  d halts before advertising (--secagg-drop advertise:1
#            --drop-halt), so the advertise stage waits for the deadline,
#            and e's trainer fails meanwhile: e stops its key stages and
#            sends no shares ([5,4,4,4,4]).
#   round 5  all six again; the loss fell and the audit chain is intact.
# And the option is refused without --secagg.
set -euo pipefail
. "$(dirname "$0")/lib.sh" "$@"
. "$(dirname "$0")/_data.sh"
. "$(dirname "$0")/_cohort.sh"
make_tmp
NAMES=(a b c d e f)

make_pki "$T/pki" kf "${NAMES[@]}"
make_idx "$T" 150 6

rc=0
"$FEDC" coordinator --pki "$T/pki" --federation kf --state "$T/x" --model 784-10 --secagg-keys-first \
  --listen 127.0.0.1:0 >"$T/refused.log" 2>&1 || rc=$?
[ "$rc" != 0 ] || fail "--secagg-keys-first without --secagg was accepted"
assert_contains "$T/refused.log" "it needs secagg"

start_coordinator --pki "$T/pki" --federation kf --state "$T/state" --model 784-10 --secagg --secagg-keys-first \
  --secagg-neighbors 5 --secagg-threshold 4 --rounds 5 --min-clients 6 --cohort 6 --min-updates 4 --poll-ms 100 \
  --client-ttl-ms 3000 --round-timeout-ms 6000 --secagg-stage-ms 2500 --log info
ADMIN=(--coordinator "$COORD_ADDR" --pki "$T/pki" --name root)
closed() { # ROUND STAGE: until the coordinator closed that stage of that round
  wait_for grep -q "round $1: $2 stage closed" "$T/coord.log" 40 || fail "round $1: no $2 stage: $(tail -5 "$T/coord.log")"
}
CLIENT_ARGS=(--train-delay-ms 800)

touch "$T/go-d"
for n in a b c; do cohort_client "$n"; done
cohort_client d --train-hold "$T/go-d"
D_PID=$BG_PID
cohort_client e --train-fail-if "$T/fail-e"
cohort_client f --train-hold "$T/release-f"

# ---- round 1: the key stages close while f trains ----
closed 1 shares
sleep 3 # past the shares stage's close plus --secagg-stage-ms: the masked stage is still open
grep -q "round 1: masked stage closed" "$T/coord.log" && fail "round 1's masked stage closed while f was held"
grep -q "secure aggregation done" "$T/client-f.log" && fail "f finished round 1 while held"
touch "$T/release-f"
closed 1 masked
touch "$T/fail-e" # e trained round 1 (its masked input is in): it fails from now on
wait_rounds 1
expect_round 6 "[6,6,6,6,6]" "round 1 with f held through the key stages"

# ---- round 2: e's training fails after its keys went out ----
closed 2 masked
rm -f "$T/fail-e" "$T/go-d" # d trained round 2: from now on it holds
wait_rounds 2
expect_round 5 "[6,6,5,5,5]" "round 2 with e's trainer failing after sharing"
assert_contains "$T/client-e.log" "train-fail-if"
grep -q "round 2: unmasked 5 inputs (.* masks removed" "$T/coord.log" ||
  fail "round 2's unmasking: $(grep "round 2: unmasked" "$T/coord.log")"
assert_contains "$T/coord.log" "client e gave up round 2 (its task failed): no later secure-aggregation stage waits for it"
jq -s -e '[.[] | select(.kind == "leave" and .client == "e")] | length == 1 and .[0].reason == "task failed" and
  .[0].round == 2 and .[0].secagg == "withdrawn"' "$T/state/audit.log" >/dev/null ||
  fail "audit of e's give-up: $(grep '"leave"' "$T/state/audit.log")"
# Without the give-up the masked stage waits for e until the training
# deadline (--round-timeout-ms 6000 from the round's start) plus one stage.
d2=$("$FEDC" rounds "${ADMIN[@]}" --json | sed -n 2p | jq '.ended_unix_ms - .started_unix_ms')
[ "$d2" -lt 6000 ] || fail "round 2 took $d2 ms: its masked stage waited for e's deadline"
echo "round 2, e's trainer failing after sharing: $d2 ms"

# ---- round 3: d dies while it trains ----
closed 3 shares
kill -KILL "$D_PID"
t0=$SECONDS
wait_rounds 3
expect_round 5 "[6,6,5,5,5]" "round 3 with d killed while training"
# The masked stage waited for the round's training deadline plus one stage, no more.
[ $((SECONDS - t0)) -le 15 ] || fail "round 3 took $((SECONDS - t0)) s after d died"

# ---- round 4: e's training fails while its key stages wait for d ----
touch "$T/fail-e" # round 4 cannot start before d is back: 5 of 6 live
cohort_client d --secagg-drop advertise:1 --drop-halt
D_PID=$BG_PID
wait_for grep -q "halted before the advertise stage" "$T/client-d.log" 40 || fail "d did not halt in round 4"
wait_rounds 4
expect_round 4 "[5,4,4,4,4]" "round 4, e's trainer failing before the shares stage opened"
grep -q "round 4: keys first: the key stages stopped (secure aggregation: our training failed)" "$T/client-e.log" ||
  fail "e did not stop its key stages: $(grep "round 4" "$T/client-e.log")"

# ---- round 5: everyone ----
kill -KILL "$D_PID"
rm -f "$T/fail-e"
mv "$T/client-d.log" "$T/client-d-4.log"
cohort_client d
wait_rounds 5
expect_round 6 "[6,6,6,6,6]" "round 5 with all six"
"$FEDC" rounds "${ADMIN[@]}" --json >"$T/rounds.jsonl"
l1=$(sed -n 1p "$T/rounds.jsonl" | jq .mean_train_loss)
l5=$(sed -n 5p "$T/rounds.jsonl" | jq .mean_train_loss)
awk "BEGIN{exit !($l5 < $l1)}" || fail "train loss did not fall: $l1 -> $l5"
kill -TERM "$COORD_PID"
wait "$COORD_PID" || fail "coordinator exited non-zero on SIGTERM"
"$FEDC" audit verify --state "$T/state" >"$T/verify.txt" 2>&1 || fail "audit chain: $(cat "$T/verify.txt")"
echo "PASS secagg keys first"
