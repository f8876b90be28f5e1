#!/usr/bin/env bash
# Device eligibility through the Python binding (issue 26, protocol 1.8):
# fedc.Client(device_state=callable) reports what the callable returns before
# each check-in. A coordinator with --require-charging runs 2 rounds; three
# Python clients over mutual TLS on 127.0.0.1: "on" says charging=True and
# trains both rounds, "off" says charging=False and is told "not eligible:
# not charging" and never given a task, "bad" has a device_state that raises:
# it reports nothing that time (a warning in its log, no crash), is told it
# did not report its device state, and is never given a task either. The two
# that are not eligible leave with the federation's end (run() returns 0).
# First, a dict that is not one (a string for a bool, a battery of 150, an
# unknown key) is refused before anything is written into the C struct.
# Skipped (exit 0 with a notice) when /usr/bin/python3 lacks cffi or numpy.
set -euo pipefail
. "$(dirname "$0")/lib.sh" "$@"
PY=/usr/bin/python3
SRC=${FEDC_SOURCE_DIR:-$(cd "$(dirname "$0")/../.." && pwd)}
if ! "$PY" -c 'import cffi, numpy' 2>/dev/null; then
  echo "SKIP python: $PY lacks cffi or numpy (scripts/install-deps.sh installs them)"
  exit 0
fi
LIB=$(cd "$BUILD_DIR" && pwd)/libfedc-client.so
SAN_ENV=() # as in test_python.sh: a sanitizer build's library needs its runtime loaded first
if nm -D "$LIB" 2>/dev/null | grep __asan_init >/dev/null; then
  SAN_ENV=(LD_PRELOAD="$(gcc -print-file-name=libasan.so)" ASAN_OPTIONS=detect_leaks=0)
fi
PYRUN=(env PYTHONPATH="$SRC/python" FEDC_CLIENT_LIB="$LIB" ${SAN_ENV[@]+"${SAN_ENV[@]}"} "$PY")
# What the callable returns is checked before anything is written: a bad dict fills nothing.
"${PYRUN[@]}" - <<'PY' || fail "device_state dict checks"
import fedc.client as fc
st = fc.ffi.new("fedc_device_state *")
fc._fill_device_state(st, {"charging": True, "idle": False, "battery": 42, "free_storage": 2 ** 40})
assert (st.charging, st.unmetered, st.idle, st.battery_percent, st.free_storage_bytes) == (1, 0, 0, 42, 2 ** 40)
for bad in ({"charging": "yes"}, {"battery": 150}, {"battery": 50.5}, {"chraging": True}, {"free_storage": -1}, [1]):
    st = fc.ffi.new("fedc_device_state *")
    try:
        fc._fill_device_state(st, dict(bad, unmetered=True) if isinstance(bad, dict) else bad)
    except (TypeError, ValueError):
        pass
    else:
        raise SystemExit("accepted %r" % (bad,))
    assert st.unmetered == 0, bad
PY
make_tmp
make_pki "$T/pki" pyel on off bad

"${PYRUN[@]}" - "$T/init.safetensors" <<'PY'
import sys, numpy as np, fedc
fedc.safetensors.write(sys.argv[1], {"dense.weight": np.ones((4, 3), np.float32),
                                     "dense.bias": np.zeros(4, np.float32)})
PY
start_coordinator --pki "$T/pki" --federation pyel --state "$T/state" --init-model "$T/init.safetensors" \
  --rounds 2 --min-clients 1 --cohort 3 --min-updates 1 --clip-norm 0 --poll-ms 100 --round-timeout-ms 30000 \
  --require-charging
CLIENT=("${PYRUN[@]}" "$SRC/tests/python/client.py" --pki "$T/pki" --coordinator "$COORD_ADDR" --mode weights)
start_bg py-off "${CLIENT[@]}" --name off --device-state charging=0,unmetered=1,battery=90,free_storage=1000000
POFF=$BG_PID
start_bg py-bad "${CLIENT[@]}" --name bad --device-state raise
PBAD=$BG_PID
# "on" starts once the others have been told they are not eligible, so they are live while rounds run.
wait_for grep -q '"detail": "not eligible: not charging"' "$T/py-off.log" 30 ||
  fail "off was not told 'not eligible: not charging': $(cat "$T/py-off.log")"
wait_for grep -q '"detail": "not eligible: .*did not report its device state' "$T/py-bad.log" 30 ||
  fail "bad was not told it reported nothing: $(cat "$T/py-bad.log")"
start_bg py-on "${CLIENT[@]}" --name on --device-state charging=1,battery=90
PON=$BG_PID
wait "$PON" || fail "python client on exited $?"
[ "$(grep -c '"kind": "uploaded"' "$T/py-on.log")" = 2 ] || fail "on (charging) did not upload twice"
assert_contains "$T/py-on.log" '"kind": "run_returned", "rounds_done": 2'
wait "$POFF" || fail "python client off exited $?"
wait "$PBAD" || fail "python client bad exited $?"
for n in off bad; do
  if grep -q '"kind": "task"' "$T/py-$n.log"; then fail "$n (not eligible) was given a task"; fi
  assert_contains "$T/py-$n.log" '"kind": "run_returned", "rounds_done": 0'
done
assert_contains "$T/py-bad.log" "device_state() raised RuntimeError: injected device_state failure"
