#!/usr/bin/env bash
# Every rejection the coordinator owes a bad update, over the real wire, while
# the round goes on for everyone else: wrong round, wrong model version, wrong
# shape, NaN, Inf, L2 norm over the clip norm, SHA-256 mismatch, stream that
# ends early, oversized message, zero examples, a tensor name with a newline,
# a forged log line and an ESC (neither the coordinator's log nor `fedc audit
# show` may print them raw: security review, finding 6), duplicate upload. Then a
# client SIGKILLed in the middle of its upload: the round still completes
# with the others at its deadline.
set -euo pipefail
. "$(dirname "$0")/lib.sh" "$@"
. "$(dirname "$0")/_data.sh"
make_tmp
PROBE="$BUILD_DIR/fedc_probe"

make_pki "$T/pki" itest a b evil
# --upload-burst 50: the probe's dozen bad uploads in one round are over the
# default per-identity upload rate (10 at once), which would refuse the later
# ones as rate-limited before their own check.
make_idx "$T" 100 2

start_coordinator --pki "$T/pki" --federation itest --state "$T/state" --model 784-10 --rounds 2 \
  --min-clients 3 --cohort 3 --min-updates 2 --clip-norm 5 --poll-ms 100 --round-timeout-ms 8000 --upload-burst 50 \
  --pickup-timeout-ms 8000
ADMIN=(--coordinator "$COORD_ADDR" --pki "$T/pki" --name root)

# Round 1: the probe is in the cohort and tries every bad upload first.
start_bg probe1 "$PROBE" --coordinator "$COORD_ADDR" --pki "$T/pki" --name evil --mode rejections
PROBE1=$BG_PID
for i in 0 1; do
  name=$(echo a b | cut -d' ' -f$((i+1)))
  start_bg "client-$name" "$FEDC" client --coordinator "$COORD_ADDR" --pki "$T/pki" --name "$name" \
    --data "idx:$T/img$i.idx,$T/lbl$i.idx" --model 784-10
done
wait "$PROBE1" || fail "a rejection did not get its status: $(grep '"ok":false' "$T/probe1.log")"
for step in wrong-round wrong-version wrong-shape nan inf over-clip-norm hash-mismatch ends-early \
            tiny-chunks oversize-message zero-examples hostile-name good-upload duplicate; do
  grep -q "\"step\":\"$step\".*\"ok\":true" "$T/probe1.log" || fail "step $step missing or wrong"
done
# Each refusal names its reason.
grep -q '"step":"nan".*NaN' "$T/probe1.log" || fail "NaN refusal does not say NaN"
grep -q '"step":"over-clip-norm".*clip norm' "$T/probe1.log" || fail "norm refusal does not name the clip norm"
grep -q '"step":"wrong-shape".*fc1.weight' "$T/probe1.log" || fail "shape refusal does not name the tensor"
grep -q '"step":"ends-early".*ended early' "$T/probe1.log" || fail "short stream refusal unclear"
grep -q '"step":"duplicate".*already uploaded' "$T/probe1.log" || fail "duplicate refusal unclear"
assert_contains "$T/coord.log" "upload from evil rejected"
# The hostile tensor name: refused naming the rule, and nowhere a raw ESC or
# a line the peer wrote.
no_forgery() { # FILE WHAT
  if grep -q $'\x1b' "$1"; then fail "$2 holds a raw ESC: $(grep -a -n $'\x1b' "$1" | cat -v)"; fi
  if grep -q '^2026-01-01T00:00:00.000Z INFO  admin: forged' "$1"; then fail "$2 holds the forged line"; fi
}
no_forgery "$T/coord.log" "the coordinator's log"
"$FEDC" audit show --state "$T/state" >"$T/show.txt" || fail "audit show: $(cat "$T/show.txt")"
no_forgery "$T/show.txt" "fedc audit show"
# (The audit log records an identity's first 4 refusals per interval in full and
# counts the rest in a `refusals` record: this one is the probe's 12th.)
grep -q 'upload from evil rejected: tensor 0: name missing.*not of \[A-Za-z0-9_.-\]' "$T/coord.log" ||
  fail "the hostile name's refusal is not in the coordinator's log"
grep -q '"step":"hostile-name".*not of \[A-Za-z0-9_.-\]' "$T/probe1.log" || fail "hostile name refusal unclear"

wait_for bash -c "'$FEDC' rounds ${ADMIN[*]} --json | jq -e 'select(.round == 1) | .outcome == \"completed\"' >/dev/null" 30 ||
  fail "round 1 did not complete"
"$FEDC" rounds "${ADMIN[@]}" --json | jq -e 'select(.round == 1) | .participants == 3' >/dev/null ||
  fail "round 1 should count a, b and the probe's one good update"

# Round 2: the probe dies (SIGKILL) half way through its upload.
start_bg probe2 "$PROBE" --coordinator "$COORD_ADDR" --pki "$T/pki" --name evil --mode die-mid-upload --chunk 4096
PROBE2=$BG_PID
set +e; wait "$PROBE2"; prc=$?; set -e
[ "$prc" = 137 ] || fail "probe should have died by SIGKILL (status $prc)"
wait_for bash -c "'$FEDC' rounds ${ADMIN[*]} --json | jq -e 'select(.round == 2) | .outcome == \"completed\"' >/dev/null" 30 ||
  fail "round 2 did not complete without the killed client"
"$FEDC" rounds "${ADMIN[@]}" --json | jq -e 'select(.round == 2) | .participants == 2 and .selected == 3' >/dev/null ||
  fail "round 2: $("$FEDC" rounds "${ADMIN[@]}" --json)"
grep -q "upload from evil broke off after" "$T/coord.log" || fail "broken stream not logged"
kill -0 "$COORD_PID" || fail "coordinator died"
kill -TERM "$COORD_PID"; wait "$COORD_PID" 2>/dev/null || true

# A model of 6.4 MB: uploads from 4 MiB are hashed on a thread beside the
# transfer over the staging slot (coord_upload.c), not on the event thread.
# The same refusals hold there: a wrong SHA-256 is DATA_LOSS naming both
# digests, NaN/Inf and a short stream are refused, and a good upload counts.
start_coordinator --pki "$T/pki" --federation itest --state "$T/state-big" --model 784-2000-10 --rounds 1 \
  --min-clients 1 --cohort 1 --min-updates 1 --clip-norm 5 --poll-ms 100 --round-timeout-ms 30000 \
  --upload-burst 50 --pickup-timeout-ms 30000
start_bg probe-big "$PROBE" --coordinator "$COORD_ADDR" --pki "$T/pki" --name evil --mode rejections
wait "$BG_PID" || true
for step in nan inf hash-mismatch ends-early good-upload; do
  grep -q "\"step\":\"$step\".*\"ok\":true" "$T/probe-big.log" || fail "6.4 MB model: step $step missing or wrong"
done
grep -q '"step":"hash-mismatch".*SHA-256 mismatch: got [0-9a-f]*, header says' "$T/probe-big.log" ||
  fail "6.4 MB model: the hash refusal does not name both digests: $(grep hash-mismatch "$T/probe-big.log")"
ADMIN=(--coordinator "$COORD_ADDR" --pki "$T/pki" --name root)
wait_for bash -c "'$FEDC' rounds ${ADMIN[*]} --json |
  jq -e 'select(.round == 1) | .outcome == \"completed\" and .participants == 1' >/dev/null" 30 ||
  fail "6.4 MB model: the probe's good update did not complete round 1"
echo "PASS rejections"
