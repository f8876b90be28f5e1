#!/usr/bin/env bash
# The end of a federation (issue 21 item 1): `fedc coordinator --rounds 1
# --exit-when-done` keeps serving after its last round until every live
# client has been answered DONE, then exits; the clients stop (exit 0,
# "finished") instead of retrying a coordinator that is gone for ever.
#   1. two `fedc client` processes and the C-API example (tests/embed,
#      built against the library of this build tree): all exit 0 and the
#      coordinator logs a drain that completed.
#   2. a client that checked in once and then went silent (a crash: no Leave)
#      is live but never hears DONE: the drain waits for it only until
#      --drain-ms, says whom it gave up on, and the coordinator exits 0. It
#      was in the cohort by chance or not; either way the round completes
#      (a member that misses pick-up is replaced from the live pool).
# Timeouts here are generous bounds on a hang, not measures of speed.
set -euo pipefail
. "$(dirname "$0")/lib.sh" "$@"
. "$(dirname "$0")/_data.sh"
make_tmp
SRC=${FEDC_SOURCE_DIR:-$(cd "$(dirname "$0")/../.." && pwd)}
make_pki "$T/pki" itest dev1 dev2 dev3 ghost
make_idx "$T" 100 2

# The embed example, as a device program builds it, against this build tree.
LIB=$(find "$BUILD_DIR" -maxdepth 1 -name 'libfedc-client.so' | head -1)
[ -n "$LIB" ] || fail "no libfedc-client.so in $BUILD_DIR"
SAN=""
if nm -D "$LIB" 2>/dev/null | grep __asan_init >/dev/null; then SAN="-fsanitize=address,undefined"; fi
cc -std=c11 -Wall -Wextra -Werror $SAN -I"$SRC/include" "$SRC/tests/embed/embed_example.c" -o "$T/embed" \
  -L"$BUILD_DIR" -lfedc-client || fail "embed example does not build"

# wait_exit PID NAME SECONDS: the process exits within SECONDS with status 0.
wait_exit() {
  local pid=$1 name=$2 secs=$3 rc=0
  wait_for bash -c "! kill -0 $pid 2>/dev/null" "$secs" || fail "$name still running after ${secs} s"
  wait "$pid" || rc=$?
  [ "$rc" = 0 ] || fail "$name exited $rc"
}

# ---- 1. everyone hears DONE ----
start_coordinator --pki "$T/pki" --federation itest --state "$T/state1" --model 784-10 --rounds 1 --exit-when-done \
  --min-clients 3 --cohort 2 --min-updates 2 --poll-ms 200
start_idx_clients dev1 dev2
start_bg embed env LD_LIBRARY_PATH="$BUILD_DIR" "$T/embed" "$COORD_ADDR" "$T/pki/ca.crt" "$T/pki/client-dev3.crt" \
  "$T/pki/client-dev3.key"
EMBED_PID=$BG_PID
wait_exit "$COORD_PID" coordinator 120
wait_exit "${CL[0]}" "client dev1" 60
wait_exit "${CL[1]}" "client dev2" 60
wait_exit "$EMBED_PID" "embed example" 60
assert_contains "$T/coord.log" "round 1 completed"
assert_contains "$T/coord.log" "drain complete: every live client heard DONE"
for n in dev1 dev2; do assert_contains "$T/client-$n.log" "fedc client $n: finished after"; done
if grep "unreachable" "$T/client-dev1.log" "$T/client-dev2.log" "$T/embed.log"; then
  fail "a client outlived the coordinator"
fi
echo "ok 1: 3 clients heard DONE and exited 0; the coordinator drained, then exited 0"

# ---- 2. a silent client bounds the drain, not hangs it ----
rm -f "$T/coord.log"
start_coordinator --pki "$T/pki" --federation itest --state "$T/state2" --model 784-10 --rounds 1 --exit-when-done \
  --min-clients 3 --cohort 2 --min-updates 2 --poll-ms 200 --pickup-timeout-ms 1500 --drain-ms 2000
"$BUILD_DIR/fedc_probe" --coordinator "$COORD_ADDR" --pki "$T/pki" --name ghost --mode call \
  --method /fedc.v1.Coordinator/CheckIn --want 0 >"$T/ghost.json" || fail "ghost could not check in: $(cat "$T/ghost.json")"
start_idx_clients dev1 dev2
wait_exit "$COORD_PID" coordinator 120
wait_exit "${CL[0]}" "client dev1" 60
wait_exit "${CL[1]}" "client dev2" 60
assert_contains "$T/coord.log" "round 1 completed"
assert_contains "$T/coord.log" "drain timed out after 2000 ms: 1 live client never checked in to hear DONE (ghost)"
grep -q "abandoned" "$T/coord.log" && fail "a round was abandoned: $(grep abandoned "$T/coord.log")"
echo "ok 2: the drain gave up on a silent client after --drain-ms; everyone else exited 0"
echo "PASS drain"
