#!/usr/bin/env bash
# CLI input that used to be accepted silently or hang a command:
#  - a --config file that is not a mapping (e.g. "rounds 3" without the colon
#    is one YAML scalar) or that uses an alias must be refused at start-up,
#    not ignored while the coordinator runs on defaults;
#  - `fedc sim --min-updates M` with M > --clients can never complete a round:
#    refused at once instead of waiting forever;
#  - `fedc coordinator` with an unknown option or an option missing its value
#    says so in one line (it printed getopt's "coordinator: ..." line and the
#    whole usage); every subcommand names the nearest option to a misspelt
#    one, in one line;
#  - `fedc coordinator --port-file F` that cannot be written is an error (it
#    only warned, and whoever waits for F waited forever), and F is written
#    through a fresh temporary file: a symlink planted at F.tmp is not followed;
#  - `fedc client --parts 3 --part 0` without --partition trained on all the
#    data with no warning: refused in one line.
set -euo pipefail
. "$(dirname "$0")/lib.sh" "$@"
make_tmp

expect_refusal() { # FILE TEXT
  local rc=0
  timeout 10 "$FEDC" coordinator --config "$1" --insecure-for-testing --listen 127.0.0.1:0 --state "$T/s" \
    2>"$T/err" >/dev/null || rc=$?
  [ "$rc" -ne 0 ] || fail "config $1 was accepted"
  [ "$rc" -ne 124 ] || fail "config $1 was accepted: the coordinator started with it"
  grep -q -- "$2" "$T/err" || fail "refusal of $1 does not say '$2': $(cat "$T/err")"
}
printf 'rounds 3\nmin-clients 2\n' > "$T/nocolon.yaml"
expect_refusal "$T/nocolon.yaml" "nocolon.yaml:1: not a mapping of options"
printf 'lr: &x 0.1\nmomentum: *x\n' > "$T/alias.yaml"
expect_refusal "$T/alias.yaml" "alias.yaml:2: aliases are not supported"

rc=0
timeout 20 "$FEDC" sim --clients 2 --cohort 1 --min-updates 3 --out "$T/sim" 2>"$T/sim.err" || rc=$?
[ "$rc" -ne 124 ] || fail "fedc sim with --min-updates > --clients did not return"
[ "$rc" -eq 2 ] || fail "fedc sim with --min-updates > --clients: exit $rc: $(cat "$T/sim.err")"
grep -q -- "--min-updates" "$T/sim.err" || fail "sim refusal does not name --min-updates: $(cat "$T/sim.err")"

one_line_refusal() { # TEXT ARGS... : exit 2, exactly one stderr line, equal to TEXT
  local text=$1 rc=0
  shift
  timeout 5 "$FEDC" coordinator --insecure-for-testing --listen 127.0.0.1:0 --state "$T/s" "$@" \
    >/dev/null 2>"$T/err" || rc=$?
  [ "$rc" -ne 124 ] || fail "coordinator $* started"
  [ "$rc" -eq 2 ] || fail "coordinator $*: exit $rc, not 2: $(cat "$T/err")"
  [ "$(cat "$T/err")" = "$text" ] || fail "coordinator $*: expected '$text', got: $(cat "$T/err")"
  [ ! -e "$T/s" ] || fail "coordinator $*: the state directory was created before the refusal"
}
one_line_refusal "fedc coordinator: unknown option --xyz; fedc coordinator --help lists them" --xyz
one_line_refusal "fedc coordinator: unknown option --xyz; fedc coordinator --help lists them" --xyz=3
one_line_refusal "fedc coordinator: unknown option -q; fedc coordinator --help lists them" -q
one_line_refusal "fedc coordinator: option --rounds needs a value" --rounds
one_line_refusal "fedc coordinator: option --config needs a value" --config
one_line_refusal "fedc coordinator: unknown option --rouds (did you mean --rounds?); fedc coordinator --help lists them" \
  --rouds 3
one_line_refusal "fedc coordinator: ambiguous option --round (--rounds, --round-timeout-ms); fedc coordinator --help lists them" \
  --round 3

# Every subcommand: a misspelt flag is one line naming the nearest one (fedc
# client printed 30 lines of usage; none suggested anything).
misspelt() { # EXPECTED ARGS...
  local want=$1 rc=0
  shift
  timeout 5 "$FEDC" "$@" >/dev/null 2>"$T/err" || rc=$?
  [ "$rc" -eq 2 ] || fail "fedc $*: exit $rc, not 2: $(cat "$T/err")"
  [ "$(cat "$T/err")" = "$want" ] || fail "fedc $*: expected '$want', got: $(cat "$T/err")"
}
for cmd in "client --partitin:--partition" "sim --clents:--clients" "status --coordnator:--coordinator" \
  "rounds --jsn:--json" "round start --rouns:--rounds" "model get --versoin:--version" \
  "model verify --manfest:--manifest" "pki issue --diir:--dir" "pki init --federaton:--federation" \
  "audit verify --sate:--state" "dp-budget --rouns:--rounds" "secagg-params --clints:--clients"; do
  args=${cmd%%:*} near=${cmd##*:} prog="fedc ${cmd%% --*}"
  case $prog in "fedc round start") prog="fedc round" ;; "fedc model get") prog="fedc model" ;;
    "fedc audit verify") prog="fedc audit" ;; esac
  # shellcheck disable=SC2086 # args is split on purpose
  misspelt "$prog: unknown option --${args##* --} (did you mean $near?); $prog --help lists them" $args 1
done
misspelt "fedc client: option --json takes no value" client --json=1

# `fedc client --parts/--part` (or --alpha, --partition-seed) without
# --partition trained on all the data without a word: refused in one line.
for args in "--parts 3 --part 0" "--part 1" "--alpha 0.1" "--partition-seed 4"; do
  rc=0
  # shellcheck disable=SC2086 # args is split on purpose
  timeout 5 "$FEDC" client --coordinator 127.0.0.1:1 --insecure-for-testing $args >/dev/null 2>"$T/err" || rc=$?
  [ "$rc" -eq 2 ] || fail "client $args without --partition: exit $rc: $(cat "$T/err")"
  [ "$(wc -l <"$T/err")" -eq 1 ] && grep -qF -- "fedc client: ${args%% *} splits the data only with --partition" \
    "$T/err" || fail "client $args: $(cat "$T/err")"
done

# --port-file in a directory that does not exist: exit 1 once the coordinator
# has stopped, naming the file.
rc=0
timeout 20 "$FEDC" coordinator --insecure-for-testing --listen 127.0.0.1:0 --state "$T/pf" --grace-ms 0 \
  --port-file "$T/no-such-dir/port" >/dev/null 2>"$T/pf.err" || rc=$?
[ "$rc" -ne 124 ] || fail "coordinator kept running although its --port-file cannot be written"
[ "$rc" -eq 1 ] || fail "unwritable --port-file: exit $rc, not 1: $(cat "$T/pf.err")"
grep -qF "cannot write port file $T/no-such-dir/port" "$T/pf.err" || fail "port file error: $(cat "$T/pf.err")"

# A symlink planted at the old fixed temporary name is left alone.
echo precious > "$T/victim"
ln -s "$T/victim" "$T/port.tmp"
start_coordinator --insecure-for-testing --state "$T/ps"
[ "$(cat "$T/victim")" = precious ] || fail "the port file write followed the symlink at $T/port.tmp"
[ -f "$T/port" ] && [ ! -L "$T/port" ] || fail "$T/port is not a regular file"
ls -A "$T" | grep -v '^port\.tmp$' | grep -q '^\.\?port\.' && fail "temporary port file left behind: $(ls -a "$T")"
kill "$COORD_PID"
wait "$COORD_PID" 2>/dev/null || true
echo "PASS cli input"
