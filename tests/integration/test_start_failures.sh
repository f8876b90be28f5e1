#!/usr/bin/env bash
# A coordinator start that fails on an input leaves the state directory as it
# was (issue 21, item 2). Before, `--pki nope --state s2` wrote an unsigned v0
# into s2 and only then failed on the certificate, and the corrected command
# was refused ("s2/models/v000000.manifest is missing"); a wrong --federation
# left an empty s5/models; a port in use left a whole new state. For each:
# the failed start exits 1 with one line saying what is wrong, the state
# directory does not exist afterwards, and the corrected command starts. A
# failed start against an existing state directory leaves every file of it
# unchanged (no audit record, no state.json rewrite).
set -euo pipefail
. "$(dirname "$0")/lib.sh" "$@"
make_tmp

"$FEDC" pki init --dir "$T/pki" --federation demo >/dev/null

# failed_start STATE EXPECTED ARGS... : exit 1, the last stderr line contains
# EXPECTED, nothing else on stderr but log lines, STATE absent afterwards.
failed_start() {
  local state=$1 expected=$2 rc=0
  shift 2
  timeout 20 "$FEDC" coordinator --state "$state" --grace-ms 0 "$@" >/dev/null 2>"$T/err" || rc=$?
  [ "$rc" -ne 124 ] || fail "coordinator $* started"
  [ "$rc" -eq 1 ] || fail "coordinator $*: exit $rc, not 1: $(cat "$T/err")"
  tail -n 1 "$T/err" | grep -qF -- "$expected" || fail "coordinator $*: expected '$expected', got: $(cat "$T/err")"
  # Anything before the refusal is one of our log lines, never gRPC's dump.
  if grep -v -- '^fedc coordinator: ' "$T/err" | grep -qvE '^[0-9T:.-]+Z (INFO|WARN) '; then
    fail "coordinator $*: stray output before the refusal: $(cat "$T/err")"
  fi
  [ ! -e "$state" ] || fail "coordinator $*: left $(find "$state" | tr '\n' ' ')"
}

# started STATE ARGS... : the corrected command serves, then stops cleanly.
started() {
  local state=$1
  shift
  start_coordinator --pki "$T/pki" --state "$state" "$@"
  kill "$COORD_PID"
  wait "$COORD_PID" || fail "coordinator on $state did not stop cleanly"
  [ -f "$state/models/v000000.manifest" ] || fail "corrected start in $state has no signed v0"
}

# 1. A typo in --pki.
failed_start "$T/s2" "nope/ca.crt" --pki "$T/nope" --listen 127.0.0.1:0
started "$T/s2"

# 2. A federation the certificates are not for.
failed_start "$T/s5" "is for federation 'demo', this coordinator serves 'other'" \
  --pki "$T/pki" --federation other --listen 127.0.0.1:0
started "$T/s5" --federation demo

# 3. A port in use (held by a running coordinator), and a metrics port in use.
start_coordinator --pki "$T/pki" --state "$T/s1"
failed_start "$T/s6" "cannot listen on $COORD_ADDR: Address already in use" --pki "$T/pki" --listen "$COORD_ADDR"
grep -q "No address added" "$T/err" && fail "gRPC's error dump reached the operator: $(cat "$T/err")"
[ "$(wc -l <"$T/err")" -eq 1 ] || fail "port in use: more than one line: $(cat "$T/err")"
failed_start "$T/s6" "metrics_listen '$COORD_ADDR': cannot listen: Address already in use" \
  --pki "$T/pki" --listen 127.0.0.1:0 --metrics-listen "$COORD_ADDR"
kill "$COORD_PID"
wait "$COORD_PID" || true
started "$T/s6"

# An existing state directory: a failed start changes none of its files.
snapshot() { (cd "$1" && find . -print0 | sort -z | xargs -0 ls -ld --time-style=+%s.%N && find . -type f -print0 |
  sort -z | xargs -0 sha256sum); }
snapshot "$T/s2" >"$T/before"
for args in "--pki $T/nope" "--pki $T/pki --federation other"; do
  rc=0
  # shellcheck disable=SC2086 # args is split on purpose
  timeout 20 "$FEDC" coordinator --state "$T/s2" --listen 127.0.0.1:0 $args >/dev/null 2>"$T/err" || rc=$?
  [ "$rc" -eq 1 ] || fail "coordinator $args on an existing state: exit $rc: $(cat "$T/err")"
  snapshot "$T/s2" >"$T/after"
  diff "$T/before" "$T/after" >&2 || fail "coordinator $args changed the existing state directory"
done
started "$T/s2"
echo "PASS start failures"
