#!/usr/bin/env bash
# `fedc sim`, the README's demo, end to end on the real Fashion-MNIST:
#  - a sim that completes its rounds exits 0 and reports every round (one JSON
#    line per round, a rounds.csv row per round), although every client exits
#    (status 0) the moment the coordinator says DONE: with --cohort = --clients
#    they all do so at once, which used to be counted as "only 0 client
#    processes left" and lost the last round's line; run twice (it was racy);
#  - without --clip-norm the coordinator is started without one (its own
#    default applies), with --clip-norm it gets the value;
#  - a client that really dies (SIGKILL mid-run) ends the sim with status 1
#    and a message naming the client and how it died;
#  - a numeric option out of range is refused with status 2, naming the option,
#    before anything is written to --out.
set -euo pipefail
. "$(dirname "$0")/lib.sh" "$@"
make_tmp

DATA=/usr/share/datasets/fashion-mnist
[ -f "$DATA/train-images-idx3-ubyte.gz" ] || fail "Fashion-MNIST is not installed in $DATA"

# start_sim NAME ARGS... : `fedc sim --out $T/NAME ARGS...` in the background,
# stdout in $T/NAME.out, stderr in $T/NAME.err, exit status in $T/NAME.rc.
# `timeout` bounds it even if this shell is SIGKILLed (the sim then stops its
# coordinator and clients itself).
start_sim() {
  local name=$1
  shift
  start_bg "$name" bash -c 'timeout -s TERM 90 "$@" >"$0.out" 2>"$0.err"; echo $? >"$0.rc"' \
    "$T/$name" "$FEDC" sim --out "$T/$name" --data-dir "$DATA" "$@"
}
# wait_sim NAME : wait for it (at most 100 s); sets SIM_RC.
wait_sim() {
  wait_for test -s "$T/$1.rc" 100 || fail "fedc sim $1 did not return"
  SIM_RC=$(cat "$T/$1.rc")
}
# coordinator_argv NAME : the running coordinator's command line, one argument a line.
coordinator_argv() {
  local pid
  pid=$(pgrep -f -- "coordinator --federation sim --pki $T/$1/pki" | head -n 1) || return 1
  tr '\0' '\n' <"/proc/$pid/cmdline"
}

# --poll-ms 20: the clients learn of DONE and exit within milliseconds of the
# last round, the moment the old sim mistook for "clients lost".
SMALL=(--clients 3 --cohort 3 --rounds 3 --model logreg --partition iid --poll-ms 20 --json)

for run in 1 2; do
  extra=()
  [ "$run" = 2 ] && extra=(--clip-norm 1000)
  start_sim "ok$run" "${SMALL[@]}" ${extra[@]+"${extra[@]}"}
  wait_for coordinator_argv "ok$run" 60 || fail "run $run: no coordinator started: $(cat "$T/ok$run.err")"
  coordinator_argv "ok$run" >"$T/ok$run.argv" || fail "run $run: the coordinator exited early"
  if [ "$run" = 1 ]; then
    ! grep -qx -- --clip-norm "$T/ok$run.argv" || fail "run 1: --clip-norm passed without being asked for"
  else
    grep -A1 -x -- --clip-norm "$T/ok$run.argv" | grep -qx 1000 || fail "run 2: --clip-norm 1000 not passed on"
  fi
  wait_sim "ok$run"
  [ "$SIM_RC" = 0 ] || fail "run $run: fedc sim exited $SIM_RC: $(tail -n 5 "$T/ok$run.err")"
  [ "$(wc -l <"$T/ok$run.out")" -eq 3 ] || fail "run $run: not 3 JSON lines: $(cat "$T/ok$run.out")"
  jq -s -e '[.[].round] == [1, 2, 3] and all(.[]; .accuracy > 0 and .accuracy <= 1 and .version >= 1)' \
    "$T/ok$run.out" >/dev/null || fail "run $run: bad round lines: $(cat "$T/ok$run.out")"
  csv=$T/ok$run/rounds.csv
  [ "$(head -n 1 "$csv")" = "round,version,accuracy,loss,train_loss,participants,bytes,seconds" ] ||
    fail "run $run: rounds.csv header: $(head -n 1 "$csv")"
  [ "$(tail -n +2 "$csv" | cut -d, -f1 | tr '\n' ' ')" = "1 2 3 " ] || fail "run $run: rounds.csv: $(cat "$csv")"
  grep -q "3 rounds in" "$T/ok$run.err" || fail "run $run: no summary line: $(tail -n 5 "$T/ok$run.err")"
done

# A client killed mid-run: the coordinator needs every client live to start a
# round, so the sim cannot finish and must say why.
start_sim dead --clients 2 --cohort 2 --min-updates 2 --rounds 1000 --model logreg --partition iid --poll-ms 100 \
  --json
wait_for test -s "$T/dead.out" 60 || fail "dead: no round reported: $(cat "$T/dead.err")"
pid=$(pgrep -f -- "client --pki $T/dead/pki --name c0001" | head -n 1) || fail "dead: no client c0001 process"
kill -KILL "$pid"
wait_sim dead
[ "$SIM_RC" = 1 ] || fail "dead: fedc sim exited $SIM_RC, not 1: $(tail -n 5 "$T/dead.err")"
grep -q "client c0001 was killed by signal 9" "$T/dead.err" ||
  fail "dead: the message does not name the dead client: $(tail -n 5 "$T/dead.err")"

# Out-of-range options: status 2, one line naming the option, nothing created.
bad_option() { # OPTION VALUE
  local rc=0
  timeout 20 "$FEDC" sim --out "$T/bad" --data-dir "$DATA" "$1" "$2" >/dev/null 2>"$T/bad.err" || rc=$?
  [ "$rc" = 2 ] || fail "fedc sim $1 $2: exit $rc, not 2: $(cat "$T/bad.err")"
  grep -q -- "$1" "$T/bad.err" || fail "fedc sim $1 $2: the message does not name $1: $(cat "$T/bad.err")"
  [ "$(wc -l <"$T/bad.err")" = 1 ] || fail "fedc sim $1 $2: not one line: $(cat "$T/bad.err")"
  [ ! -e "$T/bad" ] || fail "fedc sim $1 $2 created $T/bad"
}
bad_option --alpha -1
bad_option --alpha inf
bad_option --lr -5
bad_option --lr nan
bad_option --lr inf
bad_option --lr 0
bad_option --momentum 1
bad_option --momentum -0.5
bad_option --clip-norm -1
bad_option --epochs 0
bad_option --batch 0
bad_option --poll-ms 0
bad_option --poll-ms 9
bad_option --round-timeout-ms 999
bad_option --clients 0
bad_option --rounds 0
echo "PASS sim"
