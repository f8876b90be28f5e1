#!/usr/bin/env bash
# An async buffer log that cannot be read at start is never overwritten (a
# hostile review's finding: the coordinator treated it as "no log" and the
# next update restarted the log from its header, erasing updates clients
# had been told were accepted). Client a's update is in the open buffer's
# log (K 2); the coordinator is killed; at the restart the log cannot be
# opened (a directory stands in its place): a's next update is refused with
# the reason, and nothing is written there. With the log back in place, the
# next restart replays a's first update.
set -euo pipefail
. "$(dirname "$0")/lib.sh" "$@"
. "$(dirname "$0")/_data.sh"
. "$(dirname "$0")/_async.sh"
make_tmp

make_pki "$T/pki" itest a
make_idx "$T" 60 1
STATE="$T/state"
ARGS=(--pki "$T/pki" --federation itest --state "$STATE" --model 784-10 --rounds 0 --mode async --min-clients 1
  --async-concurrency 2 --async-buffer 2 --poll-ms 100 --round-timeout-ms 20000 --upload-rate 0)
start_coordinator "${ARGS[@]}"
async_admin
client a 0
wait_for bash -c "'$FEDC' status ${ADMIN[*]} --json | jq -e '.async.buffered == 1' >/dev/null" 30 ||
  fail "a's update never reached the buffer: $(status)"
kill -KILL "$BG_PID" "$COORD_PID"
set +e; wait "$BG_PID" "$COORD_PID" 2>/dev/null; set -e
[ -s "$STATE/async_buffer.log" ] || fail "no buffer log"
SIZE=$(stat -c %s "$STATE/async_buffer.log")
mv "$STATE/async_buffer.log" "$T/kept.log"
mkdir "$STATE/async_buffer.log"

start_coordinator "${ARGS[@]}"
async_admin
client a 0
wait_for grep -q "async buffer log .* cannot be opened" "$T/coord.log" 30 || fail "no error for the unreadable log"
wait_for grep -q "could not be read or cut: updates are refused" "$T/coord.log" 30 ||
  fail "a's update was not refused with the reason: $(tail -5 "$T/coord.log")"
status | jq -e '.async.buffered == 0' >/dev/null || fail "an update counted with no log to keep it: $(status)"
[ -d "$STATE/async_buffer.log" ] && [ -z "$(ls -A "$STATE/async_buffer.log")" ] || fail "the log's place was touched"
kill -KILL "$BG_PID" "$COORD_PID"
set +e; wait "$BG_PID" "$COORD_PID" 2>/dev/null; set -e

rmdir "$STATE/async_buffer.log"
mv "$T/kept.log" "$STATE/async_buffer.log"
[ "$(stat -c %s "$STATE/async_buffer.log")" = "$SIZE" ] || fail "the log changed size"
start_coordinator "${ARGS[@]}"
async_admin
wait_for grep -q "1 updates of the buffer open before the restart replayed" "$T/coord.log" 30 ||
  fail "the kept update was not replayed: $(grep -i 'buffer log\|replayed' "$T/coord.log" | tail -3)"
status | jq -e '.async.buffered == 1' >/dev/null || fail "replayed buffer: $(status)"
echo "ok: an unreadable buffer log refused updates and was kept; replayed once readable"
