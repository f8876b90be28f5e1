#!/usr/bin/env bash
# Device eligibility (issue 26, protocol 1.8): a federation that requires
# charging devices with at least 50% battery selects only those. Four real
# `fedc client` processes over mutual TLS: dev1 reports charging at 80%
# (eligible), dev2 reports 80% but not charging, dev3 reports nothing (as a
# client before 1.8 would: it meets no requirement), dev4 reads its state
# from a --device-state file that first says "not charging". Rounds run with
# dev1 alone; dev2 and dev3 are told "not eligible: <reason>" and never get a
# task; `fedc status --json` counts 4 seen, 1 eligible, 2 not charging, 1 not
# reported, and /metrics serves the same counts as fedc_devices_seen,
# fedc_devices_eligible and fedc_devices_not_eligible{reason}. Then dev4's file says it is plugged in: it is selected, and
# status counts 2 eligible. A bad --battery is refused in one line, and a
# check-in reporting a battery of 150% (fedc_probe) INVALID_ARGUMENT.
set -euo pipefail
. "$(dirname "$0")/lib.sh" "$@"
. "$(dirname "$0")/_data.sh"
make_tmp
make_pki "$T/pki" itest dev1 dev2 dev3 dev4 probe
make_idx "$T" 100 4
ADMIN=(--pki "$T/pki" --name root)

rc=0
"$FEDC" client --coordinator 127.0.0.1:1 --pki "$T/pki" --name dev1 --battery 150 >"$T/bad.out" 2>&1 || rc=$?
[ "$rc" = 2 ] || fail "--battery 150 exited $rc, not 2"
[ "$(wc -l <"$T/bad.out")" = 1 ] || fail "--battery 150: not one line: $(cat "$T/bad.out")"
assert_contains "$T/bad.out" "--battery: bad value '150'"

start_coordinator --pki "$T/pki" --federation itest --state "$T/state" --model 784-10 --rounds 1000 \
  --min-clients 1 --cohort 4 --min-updates 1 --poll-ms 100 --pickup-timeout-ms 2000 \
  --require-charging --min-battery 50 --metrics-listen 127.0.0.1:0
client() { # NAME PART FLAGS...
  local n=$1 p=$2
  shift 2
  start_bg "client-$n" "$FEDC" client --coordinator "$COORD_ADDR" --pki "$T/pki" --name "$n" --json \
    --data "idx:$T/img$p.idx,$T/lbl$p.idx" --model 784-10 "$@"
}
printf 'charging=0   # a script keeps this current\nbattery=90\nfree_storage=1000000\n' >"$T/dev4.state"
client dev1 0 --charging --battery 80
client dev2 1 --battery 80
client dev3 2
client dev4 3 --device-state "$T/dev4.state"

status() { "$FEDC" status --coordinator "$COORD_ADDR" "${ADMIN[@]}" --json; }
wait_for bash -c "'$FEDC' status --coordinator '$COORD_ADDR' ${ADMIN[*]} --json |
  jq -e '.eligibility.seen == 4 and .rounds_completed >= 3'" 120 || fail "no 3 rounds with 4 devices seen: $(status)"
S=$(status)
echo "status: $(printf '%s' "$S" | jq -c .eligibility)"
printf '%s' "$S" | jq -e '.eligibility.eligible == 1 and .eligibility.by_reason.not_charging == 2 and
  .eligibility.by_reason.not_reported == 1 and .eligibility.by_reason.low_battery == 0' >/dev/null ||
  fail "eligibility counts wrong: $(printf '%s' "$S" | jq -c .eligibility)"
printf '%s' "$S" | jq -e '.eligibility.policy | test("charging") and test("battery >= 50%")' >/dev/null ||
  fail "policy not shown: $(printf '%s' "$S" | jq -c .eligibility)"
"$FEDC" status --coordinator "$COORD_ADDR" "${ADMIN[@]}" >"$T/status.txt"
assert_contains "$T/status.txt" "eligible:        1 of 4 active"
assert_contains "$T/status.txt" "2 not_charging"
MPORT=$(grep -o "metrics on http://127.0.0.1:[0-9]*" "$T/coord.log" | head -1 | sed 's/.*://')
[ -n "$MPORT" ] || fail "no metrics listener logged"
curl -fsS "http://127.0.0.1:$MPORT/metrics" >"$T/metrics.txt" || fail "cannot scrape /metrics"
mval() { awk -v k="$1" '$1 == k { print $2 }' "$T/metrics.txt"; }
for kv in fedc_devices_seen=4 fedc_devices_eligible=1 'fedc_devices_not_eligible{reason="not_charging"}=2' \
  'fedc_devices_not_eligible{reason="not_reported"}=1' 'fedc_devices_not_eligible{reason="low_battery"}=0' \
  'fedc_devices_not_eligible{reason="metered"}=0'; do
  [ "$(mval "${kv%=*}")" = "${kv##*=}" ] || fail "metrics: ${kv%=*} is '$(mval "${kv%=*}")', not ${kv##*=}: $(grep fedc_devices "$T/metrics.txt")"
done

wait_for grep -q '"event":"not_eligible"' "$T/client-dev3.log" 30 || fail "dev3 was not told it is not eligible"
grep '"event":"not_eligible"' "$T/client-dev2.log" | grep -q '"detail":"not eligible: not charging"' ||
  fail "dev2 was not told 'not eligible: not charging'"
grep '"event":"not_eligible"' "$T/client-dev3.log" | grep -q 'did not report its device state' ||
  fail "dev3 was not told why"
grep -q '"event":"uploaded"' "$T/client-dev1.log" || fail "dev1 (eligible) never uploaded"
for n in dev2 dev3 dev4; do
  if grep -q '"event":"task"' "$T/client-$n.log"; then fail "$n (not eligible) was given a task"; fi
done

# dev4's owner plugs it in: its next check-in reports it, and it is selected.
printf 'charging=1\nbattery=90\nfree_storage=1000000\n' >"$T/dev4.state.new"
mv "$T/dev4.state.new" "$T/dev4.state"
wait_for grep -q '"event":"uploaded"' "$T/client-dev4.log" 60 || fail "dev4 was not selected once charging"
wait_for bash -c "'$FEDC' status --coordinator '$COORD_ADDR' ${ADMIN[*]} --json |
  jq -e '.eligibility.eligible == 2 and .eligibility.by_reason.not_charging == 1'" 30 ||
  fail "status does not count dev4 eligible: $(status | jq -c .eligibility)"
for n in dev2 dev3; do
  if grep -q '"event":"task"' "$T/client-$n.log"; then fail "$n (not eligible) was given a task"; fi
done
# Every round's cohort held only eligible devices: 1 before dev4 plugged in, at most 2 after (whether a
# round after it holds both depends on when each last checked in: under load, rounds of 1 each happen).
"$FEDC" rounds --coordinator "$COORD_ADDR" "${ADMIN[@]}" --json >"$T/rounds.json"
jq -s -e 'all(.[]; .selected <= 2)' "$T/rounds.json" >/dev/null ||
  fail "cohorts: $(jq -c '{round, selected}' "$T/rounds.json" | tr '\n' ' ')"
echo "rounds: $(jq -s -c 'group_by(.selected) | map({selected: .[0].selected, rounds: length})' "$T/rounds.json")"
# A device state our clients never send (a battery of 150%) is refused in one line; the identity keeps working.
# (Last: the probe is live for client_ttl_ms and would count in the figures above.)
"$BUILD_DIR/fedc_probe" --coordinator "$COORD_ADDR" --pki "$T/pki" --name probe --mode bad-device >"$T/probe.out" ||
  fail "bad device state: $(cat "$T/probe.out")"
grep -q '"step":"bad-battery".*battery_percent 150 is out of range' "$T/probe.out" || fail "$(cat "$T/probe.out")"
