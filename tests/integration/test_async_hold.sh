#!/usr/bin/env bash
# An upload holds its place in an async buffer for a bounded time (a hostile
# review's finding: one client holding the buffer's last place by stalling
# its stream kept every version from being published). With K 1, probe
# `att` begins an upload and stops halfway for 8 s; the honest client `a`
# is refused BUFFER_FULL at first, but once att's hold (2 s) is over the
# buffer publishes without it: versions are published while att still
# holds its stream, `fedc status` shows the upload as overdue, and att's
# update, sent in the end, still counts (in a later buffer, with its
# staleness in the audit log).
set -euo pipefail
. "$(dirname "$0")/lib.sh" "$@"
. "$(dirname "$0")/_data.sh"
. "$(dirname "$0")/_async.sh"
make_tmp
PROBE="$BUILD_DIR/fedc_probe"

make_pki "$T/pki" itest a att
make_idx "$T" 60 1
start_coordinator --pki "$T/pki" --federation itest --state "$T/state" --model 784-10 --rounds 0 --mode async \
  --min-clients 1 --async-concurrency 2 --async-buffer 1 --max-staleness 1000 --poll-ms 100 \
  --round-timeout-ms 60000 --client-ttl-ms 120000 --upload-rate 0 --call-rate 0
async_admin
start_bg probe-att "$PROBE" --coordinator "$COORD_ADDR" --pki "$T/pki" --name att --mode hold-upload --hold-ms 8000
ATT_PID=$BG_PID
wait_for grep -q '"step":"holding"' "$T/probe-att.log" 30 || fail "probe att never held its upload: $(cat "$T/probe-att.log")"
HELD_AT=$SECONDS
V0=$(status | jq -r .global_version)
client a 0
# Within att's 8 s, a's updates are published: the buffer stopped waiting.
wait_for bash -c "'$FEDC' status ${ADMIN[*]} --json | jq -e '.global_version >= $V0 + 3' >/dev/null" 20 ||
  fail "no versions while att held the buffer's place: $(status)"
[ $((SECONDS - HELD_AT)) -lt 8 ] || fail "versions came only after att's hold ended ($((SECONDS - HELD_AT)) s)"
status | jq -e '.async.overdue == 1 and .async.overdue_total >= 1' >/dev/null || fail "overdue: $(status)"
"$FEDC" status "${ADMIN[@]}" | grep -q "^overdue uploads: 1 streaming past their hold" ||
  fail "status text: $("$FEDC" status "${ADMIN[@]}")"
set +e
wait "$ATT_PID"
ra=$?
set -e
[ "$ra" = 0 ] || fail "att's update, sent in the end, was not accepted: $(cat "$T/probe-att.log")"
AUDIT="$T/state/audit.log"
wait_for bash -c "jq -s -e '[.[] | select(.kind == \"update\" and .client == \"att\" and .outcome == \"accepted\")] | length == 1' '$AUDIT' >/dev/null" 10 ||
  fail "att's update not audited as accepted: $(grep '"att"' "$AUDIT" | tail -3)"
jq -s -e '[.[] | select(.kind == "update" and .client == "att" and .outcome == "accepted")][0].staleness >= 3' \
  "$AUDIT" >/dev/null || fail "att's staleness: $(grep '"att"' "$AUDIT" | tail -2)"
status | jq -e '.async.overdue == 0' >/dev/null || fail "overdue after att's commit: $(status)"
echo "ok: versions published while a stalled upload held the last place; its update counted later"
