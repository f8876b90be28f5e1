#!/usr/bin/env bash
# Identity misuse (issue 24): one client identity used from two connections
# at once (two `fedc client --name a` processes with the same certificate).
#  - without --refuse-concurrent-identity both are served; the concurrency is
#    counted (fedc clients: concurrent > 0, fedc_identity_concurrent_total)
#    and audited ("identity" record, event concurrent, refused false);
#  - with it, calls of the second connection are refused while the first is
#    active: refused_concurrent > 0, fedc_identity_refused_total > 0, an
#    "identity" audit record with refused true, and the second client's log
#    names the reason;
#  - with it, a client stopped gracefully (SIGTERM: it says Leave) and
#    started again at once, from a new port, is served: the Leave ended the
#    old connection, so the restart is not a second device.
set -euo pipefail
. "$(dirname "$0")/lib.sh" "$@"
. "$(dirname "$0")/_data.sh"
make_tmp

make_pki "$T/pki" itest a b
make_idx "$T" 50 2
ADMIN=(--pki "$T/pki" --name root)

run() { # TAG, extra coordinator args...
  local tag=$1
  shift
  start_coordinator --pki "$T/pki" --federation itest --state "$T/state-$tag" --model 784-10 --rounds 1 \
    --min-clients 3 --poll-ms 100 --metrics-listen 127.0.0.1:0 "$@"
  start_bg "a1-$tag" "$FEDC" client --coordinator "$COORD_ADDR" --pki "$T/pki" --name a \
    --data "idx:$T/img0.idx,$T/lbl0.idx" --model 784-10
  wait_for bash -c "'$FEDC' clients --coordinator $COORD_ADDR ${ADMIN[*]} --json | jq -e 'select(.identity == \"a\")' >/dev/null" 30 ||
    fail "client a never seen ($tag)"
  start_bg "a2-$tag" "$FEDC" client --coordinator "$COORD_ADDR" --pki "$T/pki" --name a \
    --data "idx:$T/img1.idx,$T/lbl1.idx" --model 784-10
  wait_for bash -c "'$FEDC' clients --coordinator $COORD_ADDR ${ADMIN[*]} --json | jq -e 'select(.identity == \"a\" and .concurrent > 0)' >/dev/null" 30 ||
    fail "two connections of a not counted as concurrent ($tag): $("$FEDC" clients --coordinator "$COORD_ADDR" "${ADMIN[@]}" --json)"
  "$FEDC" clients --coordinator "$COORD_ADDR" "${ADMIN[@]}" --json > "$T/clients-$tag.json"
  local mport
  mport=$(grep -o 'metrics on [^ ]*:[0-9]*' "$T/coord.log" | tail -n 1 | sed 's/.*://')
  curl -s "http://127.0.0.1:$mport/metrics" > "$T/metrics-$tag.txt"
  kill -TERM "$COORD_PID"
  set +e; wait "$COORD_PID" 2>/dev/null; set -e
  grep '"kind":"identity"' "$T/state-$tag/audit.log" > "$T/identity-$tag.audit" || fail "no identity audit record ($tag)"
}

run plain
jq -s -e 'map(select(.identity == "a"))[0] | .concurrent > 0 and .refused_concurrent == 0' "$T/clients-plain.json" \
  >/dev/null || fail "plain: $(cat "$T/clients-plain.json")"
grep -Eq '^fedc_identity_concurrent_total [1-9]' "$T/metrics-plain.txt" || fail "plain: $(grep identity "$T/metrics-plain.txt")"
grep -qx 'fedc_identity_refused_total 0' "$T/metrics-plain.txt" || fail "plain: $(grep identity "$T/metrics-plain.txt")"
jq -s -e 'any(.client == "a" and .event == "concurrent" and .refused == false)' "$T/identity-plain.audit" >/dev/null ||
  fail "plain audit: $(cat "$T/identity-plain.audit")"

run refuse --refuse-concurrent-identity
jq -s -e 'map(select(.identity == "a"))[0] | .concurrent > 0 and .refused_concurrent > 0' "$T/clients-refuse.json" \
  >/dev/null || fail "refuse: $(cat "$T/clients-refuse.json")"
grep -Eq '^fedc_identity_refused_total [1-9]' "$T/metrics-refuse.txt" || fail "refuse: $(grep identity "$T/metrics-refuse.txt")"
jq -s -e 'any(.client == "a" and .event == "concurrent" and .refused == true)' "$T/identity-refuse.audit" >/dev/null ||
  fail "refuse audit: $(cat "$T/identity-refuse.audit")"
grep -q "already connected from another address" "$T/a2-refuse.log" || fail "the second client was not told why: $(tail -n 5 "$T/a2-refuse.log")"
# A graceful restart inside the concurrency window is not refused: a
# federation running rounds (so a has heard answers and says Leave on SIGTERM).
start_coordinator --pki "$T/pki" --federation itest --state "$T/state-restart" --model 784-10 --rounds 1000 \
  --min-clients 1 --cohort 1 --min-updates 1 --poll-ms 100 --refuse-concurrent-identity
start_bg a1-restart "$FEDC" client --coordinator "$COORD_ADDR" --pki "$T/pki" --name a \
  --data "idx:$T/img0.idx,$T/lbl0.idx" --model 784-10
A1=$BG_PID
wait_for bash -c "[ \"\$('$FEDC' status --coordinator $COORD_ADDR ${ADMIN[*]} --json | jq -r .rounds_completed)\" -ge 2 ]" 30 ||
  fail "no rounds with a (restart)"
kill -TERM "$A1"
wait "$A1" || fail "a did not stop cleanly on SIGTERM ($?): $(tail -n 3 "$T/a1-restart.log")"
assert_contains "$T/coord.log" "client a left (stopped)"
start_bg a2-restart "$FEDC" client --coordinator "$COORD_ADDR" --pki "$T/pki" --name a \
  --data "idx:$T/img0.idx,$T/lbl0.idx" --model 784-10
A2=$BG_PID
sleep 2 # about 20 check-ins at --poll-ms 100: the first would have been refused
kill -0 "$A2" 2>/dev/null || fail "the restarted client a exited: $(tail -n 3 "$T/a2-restart.log")"
grep -q "already connected from another address" "$T/a2-restart.log" &&
  fail "a graceful restart was refused as a concurrent identity"
"$FEDC" clients --coordinator "$COORD_ADDR" "${ADMIN[@]}" --json >"$T/clients-restart.json"
jq -s -e 'map(select(.identity == "a"))[0] | .refused_concurrent == 0' "$T/clients-restart.json" >/dev/null ||
  fail "restart: $(cat "$T/clients-restart.json")"
kill -TERM "$COORD_PID"
set +e; wait "$COORD_PID" 2>/dev/null; set -e
echo "PASS identity_misuse"
