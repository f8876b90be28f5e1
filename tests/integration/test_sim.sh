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
#    before anything is written to --out;
#  - what a run leaves (issue 21): config.json with every option, the seed and
#    the fedc version; curve.gp whose title summarises the settings; JSON on
#    stdout only with --json (always in rounds.jsonl), else one plain line per
#    round on stderr; no copy of the data left behind (the clients read their
#    parts of one shared copy, as data/partition.csv says); a last line with
#    the folder and its size;
#  - --keep-versions 2 --keep-every 3 leaves exactly v0 v3 v6 v7 (optimizer
#    state of v6 v7 only, with the model average --model-average asked the
#    coordinator for), a kept version whose parent is gone still passes
#    `fedc model verify`, and a coordinator restarts on the pruned state;
#  - secure aggregation with DP noise: train_loss is unknown (empty in
#    rounds.csv, null in rounds.jsonl and in the coordinator's history), and
#    epsilon is in every round's line, rounds.csv and the plot.
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
SMALL=(--clients 3 --cohort 3 --rounds 3 --model logreg --partition iid --poll-ms 20)

CSV_HEADER="round,version,accuracy,loss,train_loss,participants,bytes,seconds,epsilon,fed_accuracy,fed_loss,backdoor"
for run in 1 2; do
  # Run 1 with --json, run 2 without (and with a clip norm).
  extra=(--json)
  [ "$run" = 2 ] && extra=(--clip-norm 1000 --keep-versions 0)
  start_sim "ok$run" "${SMALL[@]}" "${extra[@]}"
  wait_for coordinator_argv "ok$run" 60 || fail "run $run: no coordinator started: $(cat "$T/ok$run.err")"
  coordinator_argv "ok$run" >"$T/ok$run.argv" || fail "run $run: the coordinator exited early"
  if [ "$run" = 1 ]; then
    ! grep -qx -- --clip-norm "$T/ok$run.argv" || fail "run 1: --clip-norm passed without being asked for"
  else
    grep -A1 -x -- --clip-norm "$T/ok$run.argv" | grep -qx 1000 || fail "run 2: --clip-norm 1000 not passed on"
  fi
  wait_sim "ok$run"
  [ "$SIM_RC" = 0 ] || fail "run $run: fedc sim exited $SIM_RC: $(tail -n 5 "$T/ok$run.err")"
  out=$T/ok$run
  # JSON on stdout only with --json; always in rounds.jsonl.
  if [ "$run" = 1 ]; then
    [ "$(wc -l <"$T/ok$run.out")" -eq 3 ] || fail "run $run: not 3 JSON lines: $(cat "$T/ok$run.out")"
    cmp -s "$T/ok$run.out" "$out/rounds.jsonl" || fail "run 1: stdout is not rounds.jsonl"
    ! grep -q "accuracy .*%" "$T/ok$run.err" || fail "run 1: per-round text lines with --json"
  else
    [ ! -s "$T/ok$run.out" ] || fail "run 2: stdout without --json: $(head -n 3 "$T/ok$run.out")"
    [ "$(grep -c "^fedc sim: round [0-9]/3  accuracy [0-9.]*%  loss [0-9.]*  3 clients  [0-9.]*s" \
      "$T/ok$run.err")" = 3 ] || fail "run 2: not one progress line per round: $(cat "$T/ok$run.err")"
    ! grep -q $'\r' "$T/ok$run.err" || fail "run 2: carriage returns on stderr"
  fi
  jq -s -e '[.[].round] == [1, 2, 3] and all(.[]; .accuracy > 0 and .accuracy <= 1 and .version >= 1
    and .train_loss > 0 and .epsilon == null)' "$out/rounds.jsonl" >/dev/null ||
    fail "run $run: bad round lines: $(cat "$out/rounds.jsonl")"
  csv=$out/rounds.csv
  [ "$(head -n 1 "$csv")" = "$CSV_HEADER" ] || fail "run $run: rounds.csv header: $(head -n 1 "$csv")"
  [ "$(tail -n +2 "$csv" | cut -d, -f1 | tr '\n' ' ')" = "1 2 3 " ] || fail "run $run: rounds.csv: $(cat "$csv")"
  # The last line: rounds, where the results are, how large.
  tail -n 1 "$T/ok$run.err" | grep -q "^fedc sim: 3 rounds in [0-9.]*s; results in $out ([0-9.]* [KMG]iB: .*state/ keeps 4 of 4 model versions)$" ||
    fail "run $run: last line: $(tail -n 1 "$T/ok$run.err")"
  # config.json: every option, the seed, the version, the exact command lines.
  jq -e --arg out "$out" '.fedc_version == "0.1.0" and .seed == 1 and .options.out == $out
    and .options.clients == 3 and .options.cohort == 3 and .options.rounds == 3 and .options.model == "logreg"
    and .options.partition == "iid" and .options["keep-every"] == 10
    and .coordinator.server_optimizer == "sgd lr=1" and .command[0:2] == ["fedc", "sim"]
    and .coordinator.command[1] == "coordinator" and .client_command[1] == "client"' "$out/config.json" >/dev/null ||
    fail "run $run: config.json: $(cat "$out/config.json")"
  # ... every option of --help is a key of "options".
  for flag in $("$FEDC" sim --help | grep -o -- '--[a-z][a-z0-9-]*' | sort -u); do
    case $flag in --help | --OPTION | --audit-log) continue ;; esac # the last two: --coordinator-opt's example
    jq -e --arg k "${flag#--}" '.options | has($k)' "$out/config.json" >/dev/null ||
      fail "run $run: config.json has no option ${flag#--}"
  done
  if [ "$run" = 2 ]; then
    jq -e '.options["clip-norm"] == 1000 and .options.json == false and .options["keep-versions"] == 0
      and (.coordinator.command | index("--keep-versions") == null)' "$out/config.json" >/dev/null ||
      fail "run 2: config.json: $(jq -c .options "$out/config.json")"
  else
    jq -e '.options["keep-versions"] == 5 and .options.json == true
      and (.coordinator.command | index("--keep-versions")) as $i | .coordinator.command[$i + 1] == "5"' \
      "$out/config.json" >/dev/null || fail "run 1: config.json: $(jq -c .options "$out/config.json")"
  fi
  # The plot's title summarises the settings (gnuplot may be absent: the script is there).
  grep -q "^set title '3 clients, 3 per round, iid, logreg, E=1 B=32 lr=0.05, sgd lr=1, seed 1' noenhanced$" \
    "$out/curve.gp" || fail "run $run: curve.gp title: $(grep title "$out/curve.gp")"
  if command -v gnuplot >/dev/null; then [ -s "$out/curve.png" ] || fail "run $run: no curve.png"; fi
  # One shared copy of the data, gone after the run; the split is described.
  [ "$(ls "$out/data")" = partition.csv ] || fail "run $run: data/ holds $(ls "$out/data")"
  [ "$(tail -n +2 "$out/data/partition.csv" | cut -d, -f2 | paste -sd+ | bc)" = 60000 ] ||
    fail "run $run: partition.csv does not add up to 60000: $(cat "$out/data/partition.csv")"
  n1=$(grep '^c0001,' "$out/data/partition.csv" | cut -d, -f2)
  grep -q "^fedc client c0001: $n1 examples" "$out/logs/client-c0001.log" ||
    fail "run $run: client c0001 does not hold its $n1 examples: $(head -n 1 "$out/logs/client-c0001.log")"
done

# Pruning: 7 rounds, keep the last 2 versions and every 3rd. Adam keeps
# optimizer state beside each version (v1..v7); the pruned ones lose it too.
start_sim prune --clients 2 --cohort 2 --rounds 7 --model logreg --partition iid --poll-ms 50 --keep-versions 2 \
  --keep-every 3 --server-optimizer adam --server-lr 0.01 --model-average 0.5
wait_sim prune
[ "$SIM_RC" = 0 ] || fail "prune: fedc sim exited $SIM_RC: $(tail -n 5 "$T/prune.err")"
jq -e '.options."model-average" == 0.5 and (.coordinator.command | index("--model-average") != null)' \
  "$T/prune/config.json" >/dev/null || fail "prune: --model-average not passed on: $(cat "$T/prune/config.json")"
models=$T/prune/state/models
for v in 6 7; do
  head -c 2048 "$models/v00000$v.opt.safetensors" | grep -aq '"avg":{"dtype":"F32","shape":\[7850\]' ||
    fail "prune: no model average in the state of v$v: $(head -c 300 "$models/v00000$v.opt.safetensors")"
done
list() { (cd "$models" && ls $1 2>/dev/null | sed 's/^v0*\([0-9]\)/\1/; s/\..*//' | sort -n | tr '\n' ' '); }
[ "$(list 'v*[0-9].safetensors')" = "0 3 6 7 " ] || fail "prune: models kept: $(ls "$models")"
[ "$(list 'v*.manifest')" = "0 3 6 7 " ] || fail "prune: manifests kept: $(ls "$models")"
[ "$(list 'v*.opt.safetensors')" = "6 7 " ] || fail "prune: optimizer states kept: $(ls "$models")"
grep -q "state/ keeps 4 of 8 model versions)$" "$T/prune.err" || fail "prune: last line: $(tail -n 1 "$T/prune.err")"
# v3's parent v2 is gone: v3 still verifies against its own signed manifest.
"$FEDC" model verify "$models/v000003.safetensors" --manifest "$models/v000003.manifest" --pki "$T/prune/pki" \
  --version 3 >"$T/verify.out" 2>&1 || fail "prune: model verify v3: $(cat "$T/verify.out")"
grep -q "parent v2" "$T/verify.out" || fail "prune: model verify: $(cat "$T/verify.out")"
# A coordinator restarts on the pruned state: v7, its manifest and its optimizer state.
start_coordinator --federation sim --pki "$T/prune/pki" --state "$T/prune/state" --model logreg --rounds 7 \
  --server-optimizer adam --server-lr 0.01 --keep-versions 2 --keep-every 3
st=$("$FEDC" status --pki "$T/prune/pki" --name sim --coordinator "$COORD_ADDR" --json) ||
  fail "prune: status after restart: $st"
[ "$(json_get "$st" global_version)" = 7 ] || fail "prune: restarted at $(json_get "$st" global_version), not v7"
kill "$COORD_PID"
# --keep-every alone would keep everything: refused, naming it.
rc=0
"$FEDC" coordinator --pki "$T/prune/pki" --federation sim --state "$T/never" --keep-every 3 2>"$T/keep.err" || rc=$?
[ "$rc" = 2 ] && grep -q "'keep-every' 3 needs 'keep-versions'" "$T/keep.err" && [ ! -e "$T/never" ] ||
  fail "--keep-every alone: status $rc, $(cat "$T/keep.err")"
rc=0
"$FEDC" sim --out "$T/never" --model-average 1 2>"$T/avg.err" || rc=$?
[ "$rc" = 2 ] && grep -q -- "--model-average" "$T/avg.err" && [ ! -e "$T/never" ] ||
  fail "--model-average 1: status $rc, $(cat "$T/avg.err")"

# Federated evaluation (issue 22): each client holds its part of the test set
# (--eval-split test); a round's row waits for its model's federated
# evaluation, a column and a curve beside the central test-set accuracy. All 4
# clients evaluate (--eval-fraction 1; 2,500 test images each, the 2 not in
# the running round first): their parts are the whole test set, so the
# example-weighted totals give the central accuracy and loss (up to a near-tie
# in the last float bit, 2 images of 10,000).
start_sim fed --clients 4 --cohort 2 --rounds 2 --model logreg --partition iid --poll-ms 50 --eval-every 1 \
  --eval-split test --eval-fraction 1 --json
wait_sim fed
[ "$SIM_RC" = 0 ] || fail "fed: fedc sim exited $SIM_RC: $(tail -n 5 "$T/fed.err")"
jq -s -e 'length == 2 and all(.[]; .fed_clients == 4 and .fed_examples == 10000
  and ((.fed_accuracy - .accuracy) | fabs) <= 0.0002 and ((.fed_loss - .loss) | fabs) <= 1e-6 * .loss)' \
  "$T/fed/rounds.jsonl" >/dev/null || fail "fed: rounds.jsonl: $(cat "$T/fed/rounds.jsonl")"
[ "$(tail -n +2 "$T/fed/rounds.csv" | cut -d, -f10 | grep -c '^0\.[0-9]')" = 2 ] ||
  fail "fed: rounds.csv has no fed_accuracy: $(cat "$T/fed/rounds.csv")"
grep -q "using 1:10 .*title 'federated accuracy'" "$T/fed/curve.gp" || fail "fed: no curve: $(cat "$T/fed/curve.gp")"
jq -e '.client_command | index("--eval-data") != null and index("--eval-parts") != null' "$T/fed/config.json" \
  >/dev/null || fail "fed: client command: $(jq -c .client_command "$T/fed/config.json")"

# Secure aggregation with DP noise: the clients keep their training loss, so
# it is unknown; epsilon grows every round. Without --json (the progress line).
start_sim sadp --clients 8 --cohort 6 --rounds 3 --model logreg --partition iid --poll-ms 50 --secagg \
  --dp-noise 0.5
wait_sim sadp
[ "$SIM_RC" = 0 ] || fail "sadp: fedc sim exited $SIM_RC: $(tail -n 5 "$T/sadp.err")"
csv=$T/sadp/rounds.csv
[ "$(tail -n +2 "$csv" | cut -d, -f5 | tr '\n' ' ')" = "   " ] || fail "sadp: train_loss not empty: $(cat "$csv")"
tail -n +2 "$csv" | cut -d, -f9 | awk 'BEGIN { prev = 0 } !($1 > prev) { exit 1 } { prev = $1 }' ||
  fail "sadp: epsilon not given and growing per round: $(cat "$csv")"
jq -s -e 'length == 3 and all(.[]; .train_loss == null and .epsilon > 0)' "$T/sadp/rounds.jsonl" >/dev/null ||
  fail "sadp: rounds.jsonl: $(cat "$T/sadp/rounds.jsonl")"
jq -s -e 'all(.[]; .outcome != "completed" or .mean_train_loss == null)' "$T/sadp/state/rounds.jsonl" >/dev/null ||
  fail "sadp: the coordinator's history: $(cat "$T/sadp/state/rounds.jsonl")"
[ "$(grep -c "^fedc sim: round [0-9]/3  accuracy [0-9.]*%  loss [0-9.]*  epsilon [0-9.]*  " "$T/sadp.err")" = 3 ] ||
  fail "sadp: no epsilon on the progress lines: $(cat "$T/sadp.err")"
grep -q "using 1:9 .*title 'epsilon" "$T/sadp/curve.gp" || fail "sadp: no epsilon in the plot: $(cat "$T/sadp/curve.gp")"
# ... and `fedc rounds` of a coordinator restarted on that state says so: null in JSON, "-" in the table.
start_coordinator --federation sim --pki "$T/sadp/pki" --state "$T/sadp/state" --model logreg --rounds 3 --secagg \
  --dp-noise-multiplier 0.5 --cohort 0 --cohort-fraction 0.75 --min-updates 3 --min-clients 8
"$FEDC" rounds --pki "$T/sadp/pki" --name sim --coordinator "$COORD_ADDR" --json >"$T/sadp.rounds" ||
  fail "sadp: fedc rounds: $(cat "$T/sadp.rounds")"
jq -s -e '[.[] | select(.outcome == "completed")] | length == 3 and all(.[]; .mean_train_loss == null)' \
  "$T/sadp.rounds" >/dev/null || fail "sadp: fedc rounds --json: $(cat "$T/sadp.rounds")"
"$FEDC" rounds --pki "$T/sadp/pki" --name sim --coordinator "$COORD_ADDR" >"$T/sadp.table" ||
  fail "sadp: fedc rounds: $(cat "$T/sadp.table")"
[ "$(awk '$2 == "completed" { print $6 }' "$T/sadp.table" | tr '\n' ' ')" = "- - - " ] ||
  fail "sadp: fedc rounds table, LOSS column: $(cat "$T/sadp.table")"
kill "$COORD_PID"
grep -q "^set multiplot layout 2,1 title '8 clients, 6 per round, iid, logreg, .*, SecAgg, DP z=0.5, seed 1' noenhanced$" \
  "$T/sadp/curve.gp" || fail "sadp: plot title: $(grep title "$T/sadp/curve.gp")"

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
bad_option --monitor-nice 20
bad_option --monitor-nice -1
bad_option --monitor-nice x
bad_option --min-clients 0
bad_option --min-clients 21 # more than the 20 clients
bad_option --clients 0
bad_option --rounds 0
echo "PASS sim"
