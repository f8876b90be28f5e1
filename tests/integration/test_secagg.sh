#!/usr/bin/env bash
# Secure aggregation (SecAgg+) over real processes and mutual TLS on
# 127.0.0.1: a coordinator with --secagg and six clients (cohort 6, the
# complete graph k = 5, threshold t = 4).
#
#   round 1  a misbehaving cohort member (fedc_probe --mode secagg-bad) sends
#            submissions for another round and stage, malformed keys, keys
#            under another client's certificate, a bad signature, an
#            oversized message, a plaintext upload and a masked one before its
#            stage: each is refused with its own status; it then vanishes
#            and the round completes with the other five.
#   rounds 2-6  client f is SIGKILLed at each stage in turn (advertise,
#            shares, masked, consistency, unmask): it halts before sending
#            that stage's message (--drop-halt), the test kills it, and the
#            round completes with the survivors; `fedc rounds` shows per stage
#            how many clients remained.
#   round 7  all six again.
# The federation learns (loss falls), and a killed client never stalls it
# past the stage deadlines.
set -euo pipefail
. "$(dirname "$0")/lib.sh" "$@"
. "$(dirname "$0")/_data.sh"
. "$(dirname "$0")/_cohort.sh"
make_tmp
PROBE="$BUILD_DIR/fedc_probe"
NAMES=(a b c d e f)

make_pki "$T/pki" sa "${NAMES[@]}" p
make_idx "$T" 150 6

start_coordinator --pki "$T/pki" --federation sa --state "$T/state" --model 784-10 --secagg \
  --rounds 7 --min-clients 6 --cohort 6 --min-updates 4 --poll-ms 100 --client-ttl-ms 1500 \
  --round-timeout-ms 6000 --secagg-stage-ms 2500 --log info --metrics-listen 127.0.0.1:0
ADMIN=(--coordinator "$COORD_ADDR" --pki "$T/pki" --name root)

completed() { "$FEDC" status "${ADMIN[@]}" --json | jq -r .rounds_completed; }

# fedc secagg-params: Bell et al.'s conditions. FCP's published semi-honest 72 / 24 is below the floor fedc
# clients keep (2t > k + 1, issue 20): the curious-coordinator search now meets it (230 / 116) and says what it
# gives up against a lying one (one colluding neighbour beats it).
p=$("$FEDC" secagg-params --clients 1000 --dropout 0.33 --corrupt 0.05 --threat honest --json)
jq -e '.neighbors == 230 and .threshold == 116 and .safe and .clients_accept and .lying_coordinator_colluders == 0
  and (.source | test("Bell"))' <<<"$p" >/dev/null || fail "secagg-params 1000/0.33/0.05: $p"
"$FEDC" secagg-params --clients 1000 --dropout 0.33 --corrupt 0.05 --threat honest | grep -q "gives up: a coordinator" ||
  fail "secagg-params --threat honest does not say what it gives up"
"$FEDC" secagg-params --clients 6 --dropout 0.2 --corrupt 0 --json | jq -e '.neighbors == 4 and .threshold == 3' \
  >/dev/null || fail "secagg-params for a cohort of 6"
# This test's own choice (the complete graph, t = 4) survives the one dropout it injects per round.
"$FEDC" secagg-params --clients 6 --neighbors 5 --threshold 4 --dropout 0.2 --corrupt 0 --json |
  jq -e '.safe and .complete_graph' >/dev/null || fail "k = 5, t = 4 for 6 clients with one dropout"
"$FEDC" secagg-params --clients 10 --neighbors 9 --threshold 5 --corrupt 0.1 >/dev/null &&
  fail "t = 5 of 9 with a corrupt client was called safe"
"$FEDC" secagg-params --clients 100 --dropout 0.45 --corrupt 0.45 2>"$T/sp.err" && fail "infeasible parameters accepted"
grep -q "no safe parameters" "$T/sp.err" || fail "no reason for infeasible parameters: $(cat "$T/sp.err")"
rc=0; "$FEDC" secagg-params --clients 2 2>/dev/null || rc=$?
[ "$rc" = 2 ] || fail "secagg-params --clients 2 exited $rc, not 2 (usage)"

# A client with no round running cannot submit.
"$PROBE" --coordinator "$COORD_ADDR" --pki "$T/pki" --name f --mode call \
  --method /fedc.v1.Coordinator/SecAggSubmit --want 9 > "$T/idle.json" ||
  fail "SecAggSubmit with no round: $(cat "$T/idle.json")"
grep -q "no secure-aggregation round" "$T/idle.json" || fail "no reason given: $(cat "$T/idle.json")"

# A client too old for secure aggregation (protocol 1.1) is refused at check-in, not selected.
"$PROBE" --coordinator "$COORD_ADDR" --pki "$T/pki" --name f --mode call --protocol 1.1 \
  --method /fedc.v1.Coordinator/CheckIn --want 9 > "$T/old.json" || fail "a 1.1 client checked in: $(cat "$T/old.json")"
grep -q "upgrade" "$T/old.json" || fail "no reason for the 1.1 client: $(cat "$T/old.json")"

# ---- round 1: five honest clients and the misbehaving probe ----
for n in a b c d e; do cohort_client "$n"; done
start_bg probe "$PROBE" --coordinator "$COORD_ADDR" --pki "$T/pki" --name p --mode secagg-bad --other a
PROBE_PID=$BG_PID
wait_rounds 1
wait "$PROBE_PID" || fail "a bad secure-aggregation message was not refused as expected: $(cat "$T/probe.log")"
[ "$(grep -c '"ok":true' "$T/probe.log")" -ge 9 ] || fail "probe steps missing: $(cat "$T/probe.log")"
expect_round 5 "[5,5,5,5,5]" "round 1 with the probe dropped at advertise"
assert_contains "$T/coord.log" "refused"

# ---- rounds 2-6: f is SIGKILLed before each stage's message ----
# Clients left after each stage (advertise > shares > masked > consistency >
# unmask) and participants (whose input is in the sum) when f dies there.
declare -A WANT=(
  [advertise]='[5,5,5,5,5] 5'
  [shares]='[6,5,5,5,5] 5'
  [masked]='[6,6,5,5,5] 5'
  [consistency]='[6,6,6,5,5] 6'
  [unmask]='[6,6,6,6,5] 6'
)
round=1
for stage in advertise shares masked consistency unmask; do
  # Let the probe's liveness lapse before round 2, so the cohort is a..f.
  [ "$round" = 1 ] && sleep 2
  cohort_client f --secagg-drop "$stage:1" --drop-halt
  F_PID=$BG_PID
  wait_for grep -q "halted before the $stage stage" "$T/client-f.log" 60 ||
    fail "client f never reached the $stage stage"
  kill -KILL "$F_PID"
  t0=$SECONDS
  round=$((round + 1))
  wait_rounds "$round"
  read -r left parts <<<"${WANT[$stage]}"
  expect_round "$parts" "$left" "round $round, f killed before $stage: want $left/$parts, got"
  # The coordinator waited at most a few stage deadlines for the dead client.
  [ $((SECONDS - t0)) -le 20 ] || fail "round $round took $((SECONDS - t0)) s after f died"
  # Only this run's halt line counts next time.
  mv "$T/client-f.log" "$T/client-f-$stage.log.old"
done

# ---- round 7: everyone ----
cohort_client f
wait_rounds 7
expect_round 6 "[6,6,6,6,6]" "round 7 with all six"

"$FEDC" rounds "${ADMIN[@]}" --json > "$T/rounds.jsonl"
[ "$(jq -s 'map(select(.outcome == "completed")) | length' "$T/rounds.jsonl")" = 7 ] ||
  fail "not all 7 rounds completed: $(cat "$T/rounds.jsonl")"
# Learning through the masks: the mean train loss falls from round 1 to 7.
l1=$(sed -n 1p "$T/rounds.jsonl" | jq .mean_train_loss)
l7=$(jq -s 'map(select(.outcome == "completed")) | last | .mean_train_loss' "$T/rounds.jsonl")
awk "BEGIN{exit !($l7 < $l1)}" || fail "train loss did not fall: $l1 -> $l7"
# The table shows the per-stage column; the record survives a restart.
"$FEDC" rounds "${ADMIN[@]}" > "$T/rounds.txt"
assert_contains "$T/rounds.txt" "SECAGG LEFT"
assert_contains "$T/rounds.txt" "6>6>5>5>5"
# /metrics: how long each stage stayed open, one observation per stage closed.
MPORT=$(grep -o "metrics on http://127.0.0.1:[0-9]*" "$T/coord.log" | head -1 | sed 's/.*://')
curl -fsS "http://127.0.0.1:$MPORT/metrics" >"$T/metrics.txt"
promtool check metrics <"$T/metrics.txt" >/dev/null 2>&1 || fail "promtool: $(promtool check metrics <"$T/metrics.txt" 2>&1)"
for st in advertise share_keys masked_input consistency unmask; do
  awk -v k="fedc_secagg_stage_duration_seconds_count{stage=\"$st\"}" '$1 == k && $2 >= 7 { ok = 1 } END { exit !ok }' \
    "$T/metrics.txt" || fail "stage $st histogram: $(grep "stage=\"$st\"" "$T/metrics.txt" | tail -2)"
done
kill -TERM "$COORD_PID"
wait "$COORD_PID" || fail "coordinator exited non-zero on SIGTERM"
jq -s -e '.[2].secagg_remaining == [6,5,5,5,5]' "$T/state/rounds.jsonl" >/dev/null ||
  fail "rounds.jsonl lacks secagg_remaining: $(cat "$T/state/rounds.jsonl")"
echo "PASS secagg"
