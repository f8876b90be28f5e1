#!/usr/bin/env bash
# The async buffer log between coordinator replicas on etcd (issues 23 and
# 25; coord_async.c). One etcd member on 127.0.0.1 over mutual TLS, replicas
# A and B in async mode sharing one state directory, buffer K = 3 so it stays
# open:
#   1. A leads: the log starts with A's FENCE (its fencing token, the leader
#      key's create revision), then client a's update under that token.
#   2. SIGKILL A: B takes over, replays a's update (counted once) and appends
#      its own FENCE, with a higher token, before anything else.
#   3. What a replica deposed while frozen inside a write would leave: a
#      record under A's token after B's fence (made here). B is killed and a
#      new replica C replays the log: a's update counts, the late record is
#      skipped as stale and named, and C's fence follows.
# Skipped (77) without etcd/etcdctl (apt-get install etcd-server etcd-client).
set -euo pipefail
. "$(dirname "$0")/lib.sh" "$@"
. "$(dirname "$0")/_data.sh"
make_tmp
make_pki "$T/pki" itest a
. "$(dirname "$0")/_etcd.sh"
etcd_cluster 1

make_idx "$T" 60 1
STATE="$T/state"
LOG="$STATE/async_buffer.log"
PA=$(free_port) PB=$(free_port) PC=$(free_port)
replica() { # NAME PORT
  start_bg "rep-$1" "$FEDC" coordinator --pki "$T/pki" --federation itest --state "$STATE" \
    --listen "127.0.0.1:$2" --port-file "$T/$1.port" --model 784-10 --rounds 0 --mode async --min-clients 1 \
    --async-concurrency 3 --async-buffer 3 --poll-ms 100 --round-timeout-ms 30000 --client-ttl-ms 120000 \
    --etcd "$ETCD" --etcd-lease-ttl 2 --etcd-ca "$T/pki/ca.crt" --etcd-cert "$T/pki/coordinator.crt" \
    --etcd-key "$T/pki/coordinator.key" --log info
  eval "PID_$1=$BG_PID"
  wait_for test -s "$T/$1.port" 20 || fail "replica $1 never led: $(tail -5 "$T/rep-$1.log")"
}
# The log's records as lines "kind token client" (coord_async.c: header of 24
# bytes; rec_hdr of 136 bytes, token at 120, kind at 128; an update's 4n
# value bytes; a SHA-256), checked record by record.
records() {
  python3 - "$LOG" <<'PY'
import hashlib, struct, sys
d = open(sys.argv[1], "rb").read()
assert d[:8] == b"FCBUF002", d[:8]
n = struct.unpack_from("<Q", d, 16)[0]
at = 24
while at < len(d):
    token, kind = struct.unpack_from("<QI", d, at + 120)
    end = at + 136 + (4 * n if kind == 0 else 0)
    assert hashlib.sha256(d[at:end]).digest() == d[end:end + 32], "bad record at %d" % at
    print("update" if kind == 0 else "fence", token, d[at:at + 72].rstrip(b"\0").decode() or "-")
    at = end + 32
PY
}

replica A "$PA"
# Its etcd certificate comes from the federation's CA (as every test's etcd
# here): every device certificate could write etcd, and the replica says so.
grep -q "etcd certificate $T/pki/coordinator.crt is issued by the federation's CA" "$T/rep-A.log" ||
  fail "no warning that etcd trusts the federation's CA: $(head -5 "$T/rep-A.log")"
start_bg client-a "$FEDC" client --coordinator "127.0.0.1:$PA" --pki "$T/pki" --name a \
  --data "idx:$T/img0.idx,$T/lbl0.idx" --model 784-10 --json
wait_for bash -c "'$FEDC' status --coordinator 127.0.0.1:$PA --pki '$T/pki' --name root --json |
  jq -e '.async.buffered == 1' >/dev/null" 30 || fail "a's update never reached A's buffer"
kill -KILL "$BG_PID" 2>/dev/null || true # a stops: the buffer stays at 1 of 3
records >"$T/rec1.txt" || fail "the log does not parse: $(cat "$T/rec1.txt")"
TA=$(awk 'NR == 1 && $1 == "fence" {print $2}' "$T/rec1.txt")
[ -n "$TA" ] && [ "$TA" -gt 0 ] || fail "the log does not start with A's fence: $(cat "$T/rec1.txt")"
[ "$(sed -n 2p "$T/rec1.txt")" = "update $TA a" ] || fail "a's update not under A's token: $(cat "$T/rec1.txt")"
grep -q "fencing revision $TA" "$T/rep-A.log" || fail "A's log does not name revision $TA"

kill -KILL "$PID_A"
replica B "$PB"
wait_for bash -c "grep -q 'updates of the buffer open before the restart replayed' '$T/rep-B.log'" 20 ||
  fail "B did not replay the log: $(tail -5 "$T/rep-B.log")"
grep -q "1 updates of the buffer open before the restart replayed from .* (0 skipped, 0 stale)" "$T/rep-B.log" ||
  fail "B's replay: $(grep replayed "$T/rep-B.log")"
records >"$T/rec2.txt" || fail "the log does not parse after B"
TB=$(awk 'NR == 3 && $1 == "fence" {print $2}' "$T/rec2.txt")
[ -n "$TB" ] && [ "$TB" -gt "$TA" ] || fail "no fence of B above A's $TA after the replayed update: $(cat "$T/rec2.txt")"
[ "$(wc -l <"$T/rec2.txt")" = 3 ] || fail "B's log: $(cat "$T/rec2.txt")"

# B stops; its last fence is the log's (under heavy load B's 2 s lease can
# lapse and B fence again with a newer token, so read it back, not TB).
kill -KILL "$PID_B"
records >"$T/rec2b.txt" || fail "the log does not parse after B stopped"
TB=$(awk '$1 == "fence" {t = $2} END {print t}' "$T/rec2b.txt")
# A's late write, landing after B's fence: a's record again under A's token.
python3 - "$LOG" <<'PY'
import struct, sys
d = open(sys.argv[1], "rb").read()
n = struct.unpack_from("<Q", d, 16)[0]
at = 24 + 136 + 32  # A's fence, then a's update
open(sys.argv[1], "ab").write(d[at:at + 136 + 4 * n + 32])
PY
replica C "$PC"
wait_for bash -c "grep -q 'updates of the buffer open before the restart replayed' '$T/rep-C.log'" 20 ||
  fail "C did not replay the log"
grep -q "1 updates of the buffer open before the restart replayed from .* (0 skipped, 1 stale)" "$T/rep-C.log" ||
  fail "C's replay: $(grep -E 'replayed|stale|skipped' "$T/rep-C.log")"
grep -q "update of a skipped: written by a deposed replica (fencing token $TA, the log's fence is $TB)" \
  "$T/rep-C.log" || fail "the stale record is not named: $(grep 'async buffer log' "$T/rep-C.log")"
records >"$T/rec3.txt" || fail "the log does not parse after C"
TC=$(awk 'END {if ($1 == "fence") print $2}' "$T/rec3.txt")
[ -n "$TC" ] && [ "$TC" -gt "$TB" ] || fail "C's fence is not last and highest: $(cat "$T/rec3.txt")"
"$FEDC" status --coordinator "127.0.0.1:$PC" --pki "$T/pki" --name root --json |
  jq -e '.async.buffered == 1' >/dev/null || fail "C's buffer should hold a's one update, counted once"
jq -s -e '[.[] | select(.kind == "buffer_replayed")] | length == 2 and .[-1].stale == 1 and .[-1].updates == 1' \
  "$STATE/audit.log" >/dev/null || fail "audit: $(grep buffer_replayed "$STATE/audit.log")"
echo "PASS async_fence (tokens A $TA, B $TB, C $TC)"
