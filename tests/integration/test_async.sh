#!/usr/bin/env bash
# Asynchronous buffered aggregation (--mode async, issue 25) with real
# processes over mutual TLS:
#   - a version is published every K = 2 accepted updates, each buffer
#     record carrying its staleness histogram; never more than C = 3 clients
#     hold a task;
#   - a slow client (its training held until the test releases it) that
#     trained from version 0 is refused once the federation is 2 versions on
#     (--max-staleness 1), with both versions in the refusal;
#   - a client killed mid-training frees its slot at its task deadline
#     (expired) and the federation goes on;
#   - the coordinator is SIGKILLed with one update in the open buffer and
#     restarted: the update is replayed (counted once: every update the audit
#     log accepted is in exactly one published buffer or the open one); a
#     record in the log the replay refuses is skipped, later ones still count;
#   - a publish that fails with an I/O error keeps the buffer's log and
#     publishes the same updates once the error passes (none lost);
#   - a replayed record the aggregator refuses (a robust arena of K = 1
#     after a restart with a smaller buffer) is not counted by the engine.
# Refused at start with a sentence, nothing written: SecAgg, DP, a robust rule
# a buffer cannot satisfy, ,fedbuff with a robust rule, a bad --staleness.
set -euo pipefail
. "$(dirname "$0")/lib.sh" "$@"
. "$(dirname "$0")/_data.sh"
. "$(dirname "$0")/_async.sh"
make_tmp

make_pki "$T/pki" itest a b slow gone
make_idx "$T" 60 4
STATE="$T/state"
COORD_ARGS=(--pki "$T/pki" --federation itest --state "$STATE" --model 784-10 --rounds 0 --mode async --min-clients 1
  --async-concurrency 3 --async-buffer 2 --max-staleness 1 --poll-ms 100 --round-timeout-ms 8000
  --client-ttl-ms 120000)

# Refusals at start: one sentence each, nothing written.
for extra in "--secagg" "--dp-noise-multiplier 1 --clip-norm 1 --cohort 0 --cohort-fraction 0.5"; do
  # shellcheck disable=SC2086
  if "$FEDC" coordinator "${COORD_ARGS[@]}" --state "$T/refused" --listen 127.0.0.1:0 $extra >"$T/refused.log" 2>&1; then
    fail "async with $extra started"
  fi
  grep -q "async mode cannot run" "$T/refused.log" || fail "async with $extra: $(cat "$T/refused.log")"
  [ ! -e "$T/refused" ] || fail "a refused start left $T/refused"
done
# A robust rule whose precondition a buffer of K = 2 cannot meet.
"$FEDC" coordinator "${COORD_ARGS[@]}" --state "$T/refused" --aggregator krum --agg-f 1 --listen 127.0.0.1:0 \
  >"$T/refused.log" 2>&1 && fail "krum over a buffer of 2 started"
grep -q "over an async buffer of 2 updates could never aggregate" "$T/refused.log" || fail "krum: $(cat "$T/refused.log")"
[ ! -e "$T/refused" ] || fail "a refused start left $T/refused"
# ,fedbuff rescales a weighted mean: a robust rule ignores the weights.
"$FEDC" coordinator "${COORD_ARGS[@]}" --state "$T/refused" --aggregator median --staleness poly,fedbuff \
  --listen 127.0.0.1:0 >"$T/refused.log" 2>&1 && fail "median with ,fedbuff started"
grep -q "fedbuff rescales a weighted mean" "$T/refused.log" || fail "median ,fedbuff: $(cat "$T/refused.log")"
[ ! -e "$T/refused" ] || fail "a refused start left $T/refused"
"$FEDC" coordinator "${COORD_ARGS[@]}" --staleness poly:0 --listen 127.0.0.1:0 >"$T/refused.log" 2>&1 &&
  fail "--staleness poly:0 accepted"
grep -q "staleness" "$T/refused.log" || fail "--staleness poly:0: $(cat "$T/refused.log")"

start_coordinator "${COORD_ARGS[@]}"
async_admin

# The slow client takes its task on version 0 first; its training is held
# until the federation is 3 versions on (within its 8 s deadline).
held_slow 2
status | jq -e '.async.training == 1 and .async.concurrency == 3' >/dev/null || fail "training: $(status)"
client a 0
A_PID=$BG_PID
client b 1
B_PID=$BG_PID
wait_for bash -c "'$FEDC' status ${ADMIN[*]} --json | jq -e '.global_version >= 3' >/dev/null" 60 ||
  fail "no version 3 with a and b"
touch "$T/release-slow"
wait_for grep -q '"event": *"rejected"' "$T/client-slow.log" 30 || fail "slow client's stale update not refused"
grep '"event": *"rejected"' "$T/client-slow.log" | head -1 | grep -q "trained from version 0 is" ||
  fail "stale refusal without versions: $(grep rejected "$T/client-slow.log")"
grep '"event": *"rejected"' "$T/client-slow.log" | head -1 | grep -q "max staleness 1" ||
  fail "stale refusal without the bound: $(grep rejected "$T/client-slow.log")"
status | jq -e '.async.stale_refused >= 1' >/dev/null || fail "stale_refused: $(status)"
jq -s -e '[.[] | select(.kind == "update" and .client == "slow" and .outcome == "refused" and
  (.reason | test("versions behind")))] | length >= 1' "$STATE/audit.log" >/dev/null ||
  fail "no audited stale refusal"
# A client killed mid-training: its slot comes back at its task's deadline
# and the federation goes on. Never more than 3 hold a task.
client gone 3 --train-hold "$T/never"
GONE_PID=$BG_PID
wait_for grep -q '"event": *"task"' "$T/client-gone.log" 30 || fail "client 'gone' got no task"
kill -KILL "$GONE_PID"
set +e; wait "$GONE_PID" 2>/dev/null; set -e
V_KILL=$(status | jq -r .global_version)
status | jq -e '.async.training <= 3' >/dev/null || fail "over the concurrency cap: $(status)"
wait_for bash -c "'$FEDC' status ${ADMIN[*]} --json | jq -e '.async.expired >= 1' >/dev/null" 30 ||
  fail "the killed client's task never expired: $(status)"
wait_for bash -c "'$FEDC' status ${ADMIN[*]} --json | jq -e '.global_version >= $((V_KILL + 2))' >/dev/null" 30 ||
  fail "the federation stopped after a client was killed"
# Published buffers: 2 updates each, with their staleness histograms.
jq -s -e '[.[] | select(.outcome == "completed")] | length >= 3 and
  all(.participants == 2 and (.async.staleness_hist | add) == 2 and .async.concurrency == 3)' \
  "$STATE/rounds.jsonl" >/dev/null || fail "buffer records: $(cat "$STATE/rounds.jsonl")"

# Restart mid-buffer. Stop every client, then leave exactly one update in
# the open buffer: a alone contributes once per buffer and then waits.
kill -KILL "$SLOW_PID" "$A_PID" "$B_PID"
set +e; wait "$SLOW_PID" "$A_PID" "$B_PID" 2>/dev/null; set -e
wait_for bash -c "'$FEDC' status ${ADMIN[*]} --json | jq -e '.async.uploading == 0' >/dev/null" 30 || fail "uploads"
if [ "$(status | jq -r .async.buffered)" = 0 ]; then
  # The killed a may still hold a task of the open buffer: a process of the
  # same name checking in then gives that task up and waits for the next
  # buffer (engine_async.c), which never comes with a alone. Let the killed
  # clients' tasks expire first (--round-timeout-ms 8000).
  wait_for bash -c "'$FEDC' status ${ADMIN[*]} --json | jq -e '.async.training == 0' >/dev/null" 30 ||
    fail "the killed clients' tasks never expired: $(status)"
  client a 0
  A_PID=$BG_PID
  wait_for bash -c "'$FEDC' status ${ADMIN[*]} --json | jq -e '.async.buffered == 1' >/dev/null" 30 ||
    fail "a's update did not reach the buffer: $(status)"
fi
st=$(status)
[ "$(json_get "$st" .async.buffered)" = 1 ] || fail "buffer before the kill: $st"
V=$(json_get "$st" global_version)
[ -s "$STATE/async_buffer.log" ] || fail "no buffer log with an update in the buffer"
kill -KILL "$COORD_PID"
set +e; wait "$COORD_PID" 2>/dev/null; set -e
[ -n "${A_PID:-}" ] && kill -KILL "$A_PID" 2>/dev/null || true
ACCEPTED=$(jq -s '[.[] | select(.kind == "update" and .outcome == "accepted")] | length' "$STATE/audit.log")

# A record the replay must refuse (a second copy of the buffered one, which
# the log should never hold) followed by a good one of another client (a's
# or b's, whichever did not make the buffered one, made here: FORGED = 1
# update no client sent): the refused one is skipped, not a stop that cuts
# the good one off. (The buffered update is b's when a killed b's upload
# landed before the kill above: a forged record under b's name would then
# be a second refused copy; CI saw that once under ASan.)
# Then what a replica deposed while frozen inside a write leaves: a newer
# leader's FENCE (token 9) and after it a record under an older token (4,
# client c): stale, skipped, never counted.
python3 - "$STATE/async_buffer.log" <<'PY'
import hashlib, struct, sys
path = sys.argv[1]
data = open(path, "rb").read()
assert data[:8] == b"FCBUF002", data[:8]
n = struct.unpack_from("<Q", data, 16)[0]
H = 136  # rec_hdr (coord_async.c): client[72], round, examples, staleness, bytes, loss, weight, token, kind, pad
size = H + 4 * n + 32  # rec_hdr, n float32, SHA-256
rec = data[24:24 + size]
assert len(data) == 24 + size, "want exactly one record (a single coordinator writes no fence)"
assert struct.unpack_from("<QI", rec, 120) == (0, 0), "a single coordinator's update: token 0, kind update"
def record(name, token, kind, values):
    body = name.ljust(72, b"\0") + rec[72:120] + struct.pack("<QII", token, kind, 0) + values
    return body + hashlib.sha256(body).digest()
vals = rec[H:H + 4 * n]
other = b"b" if rec[:72].rstrip(b"\0") != b"b" else b"a"
out = rec + record(other, 0, 0, vals) + record(b"", 9, 1, b"") + record(b"c", 4, 0, vals)
open(path, "ab").write(out)
PY
FORGED=1
start_coordinator "${COORD_ARGS[@]}"
async_admin
# The buffered record and the forged one fill the buffer (K = 2): published
# at once as v$((V + 1)).
wait_for bash -c "'$FEDC' status ${ADMIN[*]} --json | jq -e '.global_version >= $((V + 1))' >/dev/null" 20 ||
  fail "the buffer's updates were not replayed: $("$FEDC" status "${ADMIN[@]}" --json)"
jq -s -e '[.[] | select(.kind == "buffer_replayed" and .updates == 2 and .skipped == 1 and .stale == 1)] |
  length == 1' "$STATE/audit.log" >/dev/null || fail "buffer_replayed: $(grep buffer_replayed "$STATE/audit.log")"
grep -q "update of c skipped: written by a deposed replica (fencing token 4, the log's fence is 9)" "$T/coord.log" ||
  fail "the stale record was not named: $(grep 'async buffer log' "$T/coord.log")"
jq -s -e --argjson v "$((V + 1))" '[.[] | select(.version == $v)][0] | .participants == 2' "$STATE/rounds.jsonl" \
  >/dev/null || fail "replayed buffer of v$((V + 1)): $(cat "$STATE/rounds.jsonl")"
V=$((V + 1))
# a and b again: a buffer of two fresh updates.
# Its publish fails first (models/ is not a directory for a while: an I/O
# error that passes): the buffer's log is kept, not removed, and the same
# updates are published once the store is back.
mv "$STATE/models" "$STATE/models.away"
touch "$STATE/models"
client a 0
client b 1
wait_for grep -q "finalizing round failed" "$T/coord.log" 30 || fail "the blocked publish did not fail"
[ -s "$STATE/async_buffer.log" ] || fail "a failed publish removed the buffer log"
grep -q "async buffer log .* kept" "$T/coord.log" || fail "no 'kept' line: $(tail -5 "$T/coord.log")"
rm "$STATE/models"
mv "$STATE/models.away" "$STATE/models"
wait_for bash -c "'$FEDC' status ${ADMIN[*]} --json | jq -e '.global_version >= $((V + 2))' >/dev/null" 60 ||
  fail "no version after the restart"
jq -s -e --argjson v "$((V + 1))" '[.[] | select(.version == $v)][0] | .participants == 2' "$STATE/rounds.jsonl" \
  >/dev/null || fail "buffer of v$((V + 1)): $(cat "$STATE/rounds.jsonl")"
# Nothing lost or counted twice: every accepted update (the audit log) is in
# exactly one published buffer or the open one, counted with the clients stopped.
for pid in ${BG_PIDS[@]+"${BG_PIDS[@]}"}; do [ "$pid" = "$COORD_PID" ] || kill -KILL "$pid" 2>/dev/null || true; done
wait_for bash -c "'$FEDC' status ${ADMIN[*]} --json | jq -e '.async.uploading == 0' >/dev/null" 30 || fail "uploads"
st=$("$FEDC" status "${ADMIN[@]}" --json)
BUFFERED=$(json_get "$st" .async.buffered)
ACCEPTED=$(jq -s '[.[] | select(.kind == "update" and .outcome == "accepted")] | length' "$STATE/audit.log")
COUNTED=$(jq -s '[.[] | select(.outcome == "completed") | .participants] | add' "$STATE/rounds.jsonl")
[ "$((COUNTED + BUFFERED))" = "$((ACCEPTED + FORGED))" ] ||
  fail "accepted $ACCEPTED updates (+ $FORGED made by the test), counted $COUNTED published + $BUFFERED buffered"
"$FEDC" rounds "${ADMIN[@]}" | grep -q "STALE 0/1/2/3" || fail "fedc rounds shows no staleness column"
"$FEDC" status "${ADMIN[@]}" | grep -q "clients training" || fail "fedc status shows no async line"

# Replay into an aggregator that cannot take every record (restarted with a
# robust rule, K = 1 and C = 1: its arena has K + C = 2 rows, the log three
# records): the
# record the aggregator refuses is not counted by the engine either, so the
# published buffer's participants are the updates the model was built from.
V=$(json_get "$st" global_version)
kill -KILL "$COORD_PID"
set +e; wait "$COORD_PID" 2>/dev/null; set -e
# The log in the format before fencing tokens (FCBUF001, as an older fedc
# left it): still replayed, and rewritten in the new format before anything
# is appended to it. a's record is what a forged quantized upload left
# before uploads were bounded (every value 1: L2 norm 88.6, the clip norm
# 10): scaled onto 1.05 x the clip on replay, with a warning.
python3 - "$STATE/async_buffer.log" "$V" <<'PY'
import hashlib, struct, sys
n = 7850  # --model 784-10
out = b"FCBUF001" + struct.pack("<QQ", int(sys.argv[2]), n)
for name in (b"a", b"b", b"c"):  # rec_hdr (coord_async.c): client, round, examples, staleness, bytes, loss, weight
    vals = struct.pack("<%df" % n, *([1.0] * n)) if name == b"a" else bytes(4 * n)
    body = name.ljust(72, b"\0") + struct.pack("<QQQQdd", 1, 10, 0, 100, 0.5, 1.0) + vals
    out += body + hashlib.sha256(body).digest()
open(sys.argv[1], "wb").write(out)
PY
start_coordinator "${COORD_ARGS[@]}" --async-buffer 1 --async-concurrency 1 --aggregator median
async_admin
wait_for bash -c "'$FEDC' status ${ADMIN[*]} --json | jq -e '.global_version >= $((V + 1))' >/dev/null" 20 ||
  fail "the replayed buffer was not published: $("$FEDC" status "${ADMIN[@]}" --json)"
grep -q "update of a has L2 norm 88.6[0-9]*, past 1.05 x the clip norm 10: scaled onto it" "$T/coord.log" ||
  fail "the over-norm record was not scaled: $(grep 'async buffer log' "$T/coord.log")"
jq -s -e '[.[] | select(.kind == "buffer_replayed")][-1] | .updates == 2 and .skipped == 1 and .scaled == 1' \
  "$STATE/audit.log" \
  >/dev/null || fail "median replay: $(grep buffer_replayed "$STATE/audit.log" | tail -1)"
jq -s -e --argjson v "$((V + 1))" '[.[] | select(.version == $v)][0] | .participants == 2' "$STATE/rounds.jsonl" \
  >/dev/null || fail "the engine counted an update the aggregator refused: $(tail -1 "$STATE/rounds.jsonl")"
# The replayed version moved the model by what the scaled record allows: the
# coordinate median of a (every value 10.5 / 88.6) and b (zeros) is half of
# a, a step of 1.05 x 10 / 2 = 5.25 (unscaled, a would have moved it 44.3).
for v in "$V" "$((V + 1))"; do
  "$FEDC" model get "${ADMIN[@]}" --version "$v" --out "$T/r$v.safetensors" >/dev/null || fail "model get v$v"
done
PYTHONPATH="$IT_DIR" python3 - "$T/r$V.safetensors" "$T/r$((V + 1)).safetensors" <<'PY' || fail "the replayed version's step"
import math, sys
from st_floats import load
a, b = load(sys.argv[1]), load(sys.argv[2])
step = math.sqrt(sum((x - y) ** 2 for x, y in zip(a, b)))
print("%s: step %.6g, want 5.25 (the median of the scaled record and zeros)" % (sys.argv[2], step))
sys.exit(0 if abs(step - 5.25) <= 1e-3 * 5.25 else 1)
PY
echo "ok: $ACCEPTED accepted updates = $COUNTED in published buffers + $BUFFERED open"
