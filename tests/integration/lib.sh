# lib.sh - helpers for the integration tests. Each tests/integration/test_*.sh
# is run by ctest as `bash test_x.sh FEDC_BINARY BUILD_DIR` and starts with
#
#   . "$(dirname "$0")/lib.sh" "$@"
#   make_tmp
#
# Tests start the real binaries as separate processes over real mutual TLS
# on 127.0.0.1 with throwaway certificates (fedc pki init/issue into $T).
# Every background process a test starts goes through start_bg (or
# start_coordinator), so it is killed when the test ends however it ends:
#
#   - normal exit, `fail`, Ctrl-C, SIGTERM: the EXIT trap kills them with
#     SIGKILL and removes $T (set KEEP_TMP=1 to keep $T for a post-mortem);
#   - the test shell itself SIGKILLed (e.g. a harness timeout): a watchdog
#     that polls the test shell does the same, so no coordinator outlives
#     its test and holds a port.
#
# Functions:
#   make_tmp                     T=fresh dir; install cleanup
#   start_bg NAME CMD...         run CMD in the background, output to $T/NAME.log;
#                                sets BG_PID
#   start_coordinator ARGS...    fedc coordinator on 127.0.0.1:<free port>; sets
#                                COORD_PID, COORD_PORT, COORD_ADDR; words in the
#                                array COORD_PREFIX go before it (e.g. taskset -c 0)
#   emulator_for FILE            the emulator FILE needs here (qemu-aarch64 for an
#                                arm64 ELF, qemu-arm for armhf), nothing if native
#   start_target NAME FILE ARGS... start_bg NAME FILE ARGS under emulator_for FILE
#   wait_for CMD... TIMEOUT_S    poll CMD until it succeeds; 1 on timeout
#   fail MSG...                  print MSG and the tail of every log; exit 1
#   assert_contains FILE TEXT    fail unless FILE contains TEXT (fixed string)
#   json_get JSON FIELD          field of a JSON object (jq -r); FIELD may be a
#                                jq path starting with "."
#
# `fail` exits the shell it runs in: call it from the test's own shell, not
# inside $(...).

FEDC=${1:?usage: $0 FEDC_BINARY BUILD_DIR}
BUILD_DIR=${2:-}
IT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd) # this folder: PYTHONPATH="$IT_DIR" for st_floats.py
case $FEDC in /*) ;; *) FEDC=$PWD/$FEDC ;; esac
[ -x "$FEDC" ] || { echo "lib.sh: $FEDC is not an executable" >&2; exit 1; }
command -v jq >/dev/null || { echo "lib.sh: jq is required" >&2; exit 1; }

T=""
BG_PIDS=()
WATCHDOG_PID=""
COORD_PID=""
COORD_PORT=""
COORD_ADDR=""
COORD_PREFIX=()

_lib_cleanup() {
  local rc=$?
  trap - EXIT
  set +e # processes may already be gone: kill/wait failures are expected here
  [ -n "$WATCHDOG_PID" ] && kill -KILL "$WATCHDOG_PID" 2>/dev/null
  local pid
  for pid in ${BG_PIDS[@]+"${BG_PIDS[@]}"}; do kill -KILL "$pid" 2>/dev/null; done
  # Reap only what we started: a bare `wait` would also wait for the test's own jobs.
  for pid in $WATCHDOG_PID ${BG_PIDS[@]+"${BG_PIDS[@]}"}; do wait "$pid" 2>/dev/null; done
  if [ -n "$T" ] && [ -d "$T" ]; then
    if [ "${KEEP_TMP:-0}" = 1 ]; then
      echo "lib.sh: kept $T" >&2
    else
      rm -rf "$T"
    fi
  fi
  exit "$rc"
}

make_tmp() {
  T=$(mktemp -d "${TMPDIR:-/tmp}/fedc-it.XXXXXX") || { echo "lib.sh: mktemp failed" >&2; exit 1; }
  : >"$T/.pids"
  trap _lib_cleanup EXIT
  trap 'exit 130' INT
  trap 'exit 143' TERM
  # The watchdog: if this shell dies without running its traps (SIGKILL),
  # kill what it started and remove $T. $$ is the test shell, also here.
  (
    trap '' INT TERM HUP
    while kill -0 $$ 2>/dev/null; do sleep 1; done
    while read -r p; do kill -KILL "$p" 2>/dev/null; done <"$T/.pids"
    [ "${KEEP_TMP:-0}" = 1 ] || rm -rf "$T"
  ) </dev/null >/dev/null 2>&1 &
  WATCHDOG_PID=$!
}

# start_bg NAME CMD... : CMD in the background, stdout+stderr appended to
# $T/NAME.log (appended, so a restarted process keeps its earlier log).
start_bg() {
  local name=$1
  shift
  [ -n "$T" ] || { echo "lib.sh: call make_tmp first" >&2; exit 1; }
  "$@" </dev/null >>"$T/$name.log" 2>&1 &
  BG_PID=$!
  BG_PIDS+=("$BG_PID")
  echo "$BG_PID" >>"$T/.pids"
}

# start_coordinator ARGS... : `fedc coordinator --listen 127.0.0.1:0
# --port-file $T/port ARGS...`, log in $T/coord.log. Waits up to 20 s for
# the port file (written once the server listens).
start_coordinator() {
  rm -f "$T/port"
  start_bg coord ${COORD_PREFIX[@]+"${COORD_PREFIX[@]}"} "$FEDC" coordinator --listen 127.0.0.1:0 \
    --port-file "$T/port" "$@"
  COORD_PID=$BG_PID
  local deadline=$((SECONDS + 20)) port=""
  while :; do
    if [ -s "$T/port" ]; then
      port=$(tr -d ' \n\r' <"$T/port")
      case $port in '' | *[!0-9]*) ;; *) break ;; esac
    fi
    kill -0 "$COORD_PID" 2>/dev/null || fail "coordinator (pid $COORD_PID) exited before listening"
    [ "$SECONDS" -lt "$deadline" ] || fail "coordinator did not write $T/port within 20 s"
    sleep 0.1
  done
  COORD_PORT=$port
  COORD_ADDR=127.0.0.1:$port
}

# emulator_for FILE : prints the emulator that runs the program FILE on this
# machine, or nothing when it is native. Called explicitly (binfmt_misc may be
# absent) and without -L: the target's libraries come from the multiarch
# directories (cmake/toolchain-cross-common.cmake says why).
emulator_for() {
  local machine host
  machine=$(LC_ALL=C readelf -h "$1" 2>/dev/null | sed -n 's/^ *Machine: *//p')
  host=$(LC_ALL=C readelf -h /bin/sh 2>/dev/null | sed -n 's/^ *Machine: *//p')
  [ -n "$machine" ] || { echo "lib.sh: $1 is not an ELF program" >&2; return 1; }
  [ "$machine" = "$host" ] && return 0
  case $machine in
  AArch64) echo qemu-aarch64 ;;
  ARM) echo qemu-arm ;;
  *) echo "lib.sh: no emulator known for $machine ($1)" >&2; return 1 ;;
  esac
}

# start_target NAME FILE ARGS... : start_bg NAME FILE ARGS..., under its
# emulator when FILE is built for another architecture.
start_target() {
  local name=$1 file=$2 emu
  shift 2
  emu=$(emulator_for "$file") || fail "cannot run $file here"
  if [ -n "$emu" ]; then start_bg "$name" "$emu" "$file" "$@"; else start_bg "$name" "$file" "$@"; fi
}

# wait_for CMD... TIMEOUT_S : run CMD (output discarded) every 0.2 s until it
# exits 0; returns 1 if TIMEOUT_S seconds pass first.
#   wait_for grep -q "round 3 completed" "$T/coord.log" 60 || fail "no round 3"
wait_for() {
  [ $# -ge 2 ] || { echo "lib.sh: wait_for CMD... TIMEOUT_S" >&2; exit 1; }
  local timeout=${!#}
  case $timeout in '' | *[!0-9]*) echo "lib.sh: wait_for: timeout '$timeout' is not whole seconds" >&2; exit 1 ;; esac
  local cmd=("${@:1:$#-1}")
  local deadline=$((SECONDS + timeout))
  until "${cmd[@]}" >/dev/null 2>&1; do
    [ "$SECONDS" -lt "$deadline" ] || return 1
    sleep 0.2
  done
  return 0
}

fail() {
  echo "FAIL: $*" >&2
  if [ -n "$T" ] && [ -d "$T" ]; then
    local f
    for f in "$T"/*.log "$T"/*/*.log; do
      [ -f "$f" ] || continue
      echo "---- last 40 lines of ${f#"$T"/} ----" >&2
      tail -n 40 "$f" >&2
    done
  fi
  exit 1
}

assert_contains() {
  [ -f "$1" ] || fail "assert_contains: no file $1"
  grep -qF -- "$2" "$1" || fail "$1 does not contain '$2'"
}

# json_get JSON FIELD : prints the field (raw strings, "null" if absent);
# nonzero status if JSON does not parse.
json_get() {
  case $2 in
  .*) printf '%s' "$1" | jq -r "$2" ;;
  *) printf '%s' "$1" | jq -r --arg f "$2" '.[$f]' ;;
  esac
}

# make_pki DIR FEDERATION CLIENT... : a throwaway PKI made by our own tooling:
# CA + coordinator certificate, admin "root", and one client certificate per
# name given.
make_pki() {
  local dir=$1 fed=$2
  shift 2
  "$FEDC" pki init --dir "$dir" --federation "$fed" >/dev/null || fail "pki init failed"
  "$FEDC" pki issue --dir "$dir" --role admin --name root >/dev/null || fail "pki issue admin failed"
  local c
  for c in "$@"; do "$FEDC" pki issue --dir "$dir" --role client --name "$c" >/dev/null || fail "pki issue $c failed"; done
}
