#!/usr/bin/env bash
# --async-slot-ms (issue 25) with real processes over mutual TLS: with
# --async-concurrency 1, a slow client (its training held) takes the one
# slot; 500 ms later its task is released, so a fast client takes tasks and
# the federation publishes versions while the slow one still trains
# (without the release it would wait for the slow task's 20 s deadline);
# `fedc status` shows the released task; once let go, the slow client's
# update is still accepted, with its staleness in the audit log, and the
# released count returns to 0; with --staleness poly,fedbuff its buffer
# alone is scaled by its staleness weight. A new federation's first buffer waits for
# --min-clients live clients. Bad --async-slot-ms values are refused at start.
set -euo pipefail
. "$(dirname "$0")/lib.sh" "$@"
. "$(dirname "$0")/_data.sh"
. "$(dirname "$0")/_async.sh"
make_tmp

make_pki "$T/pki" itest fast slow
make_idx "$T" 60 2
# Refused at start with a sentence: a slot under 100 ms, one no shorter than
# the task deadline, and the option (or ,fedbuff) outside async mode.
for extra in "--mode async --async-slot-ms 50" "--mode async --async-slot-ms 9000 --round-timeout-ms 8000" \
  "--async-slot-ms 500" "--staleness poly,fedbuff"; do
  # shellcheck disable=SC2086
  "$FEDC" coordinator --pki "$T/pki" --federation itest --state "$T/refused" --model 784-10 --listen 127.0.0.1:0 \
    $extra >"$T/refused.log" 2>&1 && fail "$extra started"
  grep -q "async_slot_ms\|staleness ,fedbuff is for async mode" "$T/refused.log" || fail "$extra: $(cat "$T/refused.log")"
  [ ! -e "$T/refused" ] || fail "a refused start left $T/refused"
done
start_coordinator --pki "$T/pki" --federation itest --state "$T/state" --model 784-10 --rounds 0 --mode async \
  --min-clients 1 --async-concurrency 1 --async-buffer 1 --async-slot-ms 500 --max-staleness 1000 --poll-ms 100 \
  --round-timeout-ms 20000 --client-ttl-ms 120000 --staleness poly,fedbuff --log debug
async_admin
status | jq -e '.async.staleness == "poly:0.5,fedbuff"' >/dev/null || fail "staleness: $(status)"

held_slow 1
status | jq -e '.async.slot_ms == 500' >/dev/null || fail "slot_ms: $(status)"
client fast 0
FAST_PID=$BG_PID
# The slow task gives its slot up at 500 ms: the fast client trains and
# versions are published while the slow one is still held.
wait_for bash -c "'$FEDC' status ${ADMIN[*]} --json | jq -e '.global_version >= 3' >/dev/null" 15 ||
  fail "no versions while the slow task held the only slot: $(status)"
grep -q '"event": *"accepted"\|"event": *"uploaded"' "$T/client-slow.log" && fail "slow client uploaded while held"
status | jq -e '.async.released == 1 and .async.released_total >= 1 and .async.training <= 1' >/dev/null ||
  fail "released: $(status)"
"$FEDC" status "${ADMIN[@]}" | grep -q "^slots: .*after 500 ms: 1 running past it" ||
  fail "status text: $("$FEDC" status "${ADMIN[@]}")"
# Let the slow client go: its update still counts, stale, and the released
# task is no longer counted.
V=$(status | jq -r .global_version)
touch "$T/release-slow"
AUDIT="$T/state/audit.log"
wait_for bash -c "jq -s -e '[.[] | select(.kind == \"update\" and .client == \"slow\" and .outcome == \"accepted\")] | length >= 1' '$AUDIT' >/dev/null" 20 ||
  fail "the released task's update was not accepted: $(grep slow "$AUDIT" | tail -3)"
jq -s -e --argjson v "$V" '[.[] | select(.kind == "update" and .client == "slow" and .outcome == "accepted")][0] |
  .staleness >= $v' "$AUDIT" >/dev/null || fail "slow update's staleness: $(grep '"slow"' "$AUDIT" | tail -2)"
wait_for bash -c "'$FEDC' status ${ADMIN[*]} --json | jq -e '.async.released == 0' >/dev/null" 10 ||
  fail "released after the slow update: $(status)"
# ,fedbuff (K 1): a fresh update's buffer publishes unscaled; the slow
# one's is scaled by its own weight, (1+s)^-0.5: the version its buffer
# published moved the model by that times the update's audited norm (the
# weighted mean of one update is the update itself; server lr 1).
read -r S Q NORM < <(jq -s -r '[.[] | select(.kind == "update" and .client == "slow" and .outcome == "accepted")][0] |
  "\(.staleness) \(.seq) \(.norm)"' "$AUDIT")
NEXT_MODEL="[.[] | select(.kind == \"model\" and .seq > $Q)][0].version" # the buffer it was counted in
wait_for bash -c "jq -s -e '$NEXT_MODEL != null' '$AUDIT' >/dev/null" 10 || fail "no version published after seq $Q"
X=$(jq -s "$NEXT_MODEL" "$AUDIT")
for v in $((X - 1)) "$X"; do
  "$FEDC" model get "${ADMIN[@]}" --version "$v" --out "$T/v$v.safetensors" >/dev/null || fail "model get v$v"
done
PYTHONPATH="$IT_DIR" python3 - "$T/v$((X - 1)).safetensors" "$T/v$X.safetensors" "$S" "$NORM" <<'PY' || fail "v$X's step (slow update, staleness $S, norm $NORM)"
import math, sys
from st_floats import load
a, b = load(sys.argv[1]), load(sys.argv[2])
step = math.sqrt(sum((x - y) ** 2 for x, y in zip(a, b)))
want = float(sys.argv[4]) / math.sqrt(1 + int(sys.argv[3]))
print("%s: step %.6g, want %.6g (norm x (1+s)^-0.5)" % (sys.argv[2], step, want))
sys.exit(0 if abs(step - want) <= 1e-3 * want and int(sys.argv[3]) >= 1 else 1)
PY
WANT=$(awk -v s="$S" 'BEGIN { printf "%.4f", 1 / sqrt(1 + s) }')
grep -q "buffer scaled by $WANT " "$T/coord.log" || fail "slow buffer (staleness $S) not scaled by $WANT: $(grep scaled "$T/coord.log" | sort | uniq -c)"
grep -q "buffer scaled by 1.0000 " "$T/coord.log" || fail "no fresh buffer unscaled: $(grep scaled "$T/coord.log" | sort | uniq -c)"
kill "$FAST_PID" "$SLOW_PID" "$COORD_PID" 2>/dev/null || true
wait "$FAST_PID" "$SLOW_PID" "$COORD_PID" 2>/dev/null || true

# A new federation's first buffer waits for --min-clients live clients.
start_coordinator --pki "$T/pki" --federation itest --state "$T/state2" --model 784-10 --rounds 0 --mode async \
  --min-clients 2 --async-concurrency 2 --async-buffer 1 --poll-ms 100
async_admin
client fast 0
sleep 1.5
grep -q "async: the first buffer opens once 2 clients are live" "$T/coord.log" ||
  fail "no start line for the first buffer's wait: $(grep -c . "$T/coord.log") lines"
status | jq -e '.state == "waiting" and .global_version == 0' >/dev/null || fail "opened with one client: $(status)"
client slow 1
wait_for bash -c "'$FEDC' status ${ADMIN[*]} --json | jq -e '.global_version >= 1' >/dev/null" 20 ||
  fail "never opened with two clients: $(status)"
echo "ok: a released slot fed $V versions while the slow task trained; its update counted; the first buffer waited"
