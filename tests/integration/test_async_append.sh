#!/usr/bin/env bash
# The async buffer log appends each record in one write (coord_async.c):
# with O_APPEND a record is then placed at the end whole, so a deposed
# replica frozen between its checks and its write lands its record after
# its successor's fence and records, never split around them (stdio wrote a
# record of the 784-10 model as 3 writes: its 4 KiB buffer, the values past
# it, the rest; a successor's fence between them left bytes the replay stops
# at, cutting every record after).
# A single async coordinator under strace: one client's update in the open
# buffer; the log is written by exactly 2 calls (its header, the record),
# and they add up to the file.
set -euo pipefail
. "$(dirname "$0")/lib.sh" "$@"
. "$(dirname "$0")/_data.sh"
command -v strace >/dev/null || { echo "SKIP: no strace"; exit 77; }
make_tmp
strace -f -e trace=none true 2>/dev/null || { echo "SKIP: strace cannot trace here"; exit 77; }

make_pki "$T/pki" itest a
make_idx "$T" 60 1
STATE="$T/state"
COORD_PREFIX=(strace -f -y -qq -e trace=write,writev,pwrite64,pwritev,pwritev2 -e signal=none -o "$T/strace.txt")
start_coordinator --pki "$T/pki" --federation itest --state "$STATE" --model 784-10 --rounds 0 --mode async --min-clients 1 \
  --async-concurrency 2 --async-buffer 2 --poll-ms 100 --round-timeout-ms 20000
# The coordinator is strace's child: killed by this test's cleanup too (a
# killed strace detaches and would leave it running).
CPID=$(pgrep -P "$COORD_PID" | head -1)
[ -n "$CPID" ] || fail "no coordinator under strace"
BG_PIDS+=("$CPID")
echo "$CPID" >>"$T/.pids"
ADMIN=(--coordinator "$COORD_ADDR" --pki "$T/pki" --name root)
start_bg client-a "$FEDC" client --coordinator "$COORD_ADDR" --pki "$T/pki" --name a \
  --data "idx:$T/img0.idx,$T/lbl0.idx" --model 784-10 --json
wait_for bash -c "'$FEDC' status ${ADMIN[*]} --json | jq -e '.async.buffered == 1' >/dev/null" 60 ||
  fail "a's update did not reach the buffer"
LOG="$STATE/async_buffer.log"
[ -s "$LOG" ] || fail "no buffer log with an update in the buffer"
SIZE=$(stat -c %s "$LOG")
# Every call that wrote to the log, with what it returned.
grep -F "<$LOG>" "$T/strace.txt" | sed -n 's/.*) *= *\([0-9][0-9]*\)$/\1/p' >"$T/writes.txt"
N=$(wc -l <"$T/writes.txt")
SUM=$(awk '{ s += $1 } END { print s + 0 }' "$T/writes.txt")
[ "$SUM" = "$SIZE" ] || fail "the log's writes add up to $SUM bytes, the file has $SIZE: $(grep -F "<$LOG>" "$T/strace.txt" | cut -c1-120)"
[ "$N" = 2 ] || fail "the log (header + 1 record, $SIZE bytes) was written by $N calls, not 2: $(cat "$T/writes.txt" | tr '\n' ' ')"
kill -TERM "$CPID"
set +e; wait "$COORD_PID" 2>/dev/null; set -e
echo "PASS: the buffer log's record was appended in one call ($SIZE bytes in $N writes)"
