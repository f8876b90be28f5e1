#!/usr/bin/env bash
# SIGTERM and SIGINT stop `fedc client` and `fedc coordinator` on a one-core
# device: both run under `taskset -c 0` with OPENBLAS_NUM_THREADS=1, so
# OpenBLAS starts no pool threads and every thread but our own signal thread
# has both signals blocked (cli_common.h). Before the signal thread existed
# nobody took them: the signal stayed pending for ever and only SIGKILL
# stopped the process. Each is asked once per signal and must exit 0 on its
# own, the coordinator saying why it shuts down.
set -euo pipefail
. "$(dirname "$0")/lib.sh" "$@"
make_tmp
. "$(dirname "$0")/_data.sh"
command -v taskset >/dev/null || fail "taskset (util-linux) is required"
make_pki "$T/pki" itest dev1
make_idx "$T" 64 1
ONE_CORE=(taskset -c 0 env OPENBLAS_NUM_THREADS=1)
# shellcheck disable=SC2034 # read by start_coordinator (lib.sh)
COORD_PREFIX=("${ONE_CORE[@]}")
ADMIN=(--coordinator "" --pki "$T/pki" --name root)

# exited PID: the process is gone or a zombie (ours, not yet reaped).
exited() {
  local st
  st=$(ps -o stat= -p "$1" 2>/dev/null) || return 0
  case $st in Z*) return 0 ;; esac
  return 1
}

# stop_with SIG PID WHAT : send SIG, wait up to 60 s for the exit, check 0.
stop_with() {
  local sig=$1 pid=$2 what=$3 rc=0
  kill -"$sig" "$pid"
  wait_for exited "$pid" 60 || fail "$what ignored SIG$sig (still running 60 s later)"
  wait "$pid" || rc=$?
  [ "$rc" = 0 ] || fail "$what exited $rc after SIG$sig, not 0"
}

for sig in TERM INT; do
  # Two clients wanted, one comes: the client idles between check-ins, the
  # state a device spends most of its time in.
  start_coordinator --pki "$T/pki" --federation itest --state "$T/state-$sig" --model 784-10 --rounds 2 \
    --min-clients 2 --cohort 2 --min-updates 2 --poll-ms 100 --log info
  ADMIN[1]=$COORD_ADDR
  start_bg "client-$sig" "${ONE_CORE[@]}" "$FEDC" client --coordinator "$COORD_ADDR" --pki "$T/pki" --name dev1 \
    --data "idx:$T/img0.idx,$T/lbl0.idx" --model 784-10
  CLIENT_PID=$BG_PID
  wait_for bash -c "'$FEDC' status ${ADMIN[*]} --json | jq -e '.clients_active == 1' >/dev/null" 60 ||
    fail "client did not check in"
  # Each really runs on one core with one OpenBLAS thread.
  for pid in "$COORD_PID" "$CLIENT_PID"; do
    [ "$(taskset -pc "$pid" | sed 's/.*: *//')" = 0 ] || fail "pid $pid is not pinned to core 0"
    tr '\0' '\n' <"/proc/$pid/environ" | grep -qx OPENBLAS_NUM_THREADS=1 || fail "pid $pid: OPENBLAS_NUM_THREADS"
  done
  stop_with "$sig" "$CLIENT_PID" "fedc client"
  stop_with "$sig" "$COORD_PID" "fedc coordinator"
  assert_contains "$T/coord.log" "shutting down"
  mv "$T/coord.log" "$T/coord-$sig.log.done"
done
echo "PASS signals"
