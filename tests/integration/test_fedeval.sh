#!/usr/bin/env bash
# Federated evaluation over real processes and mutual TLS (issue 22):
# coordinator + 3 clients, an evaluation of every round's model (3 clients,
# --eval-every 1), plain, under --secagg and under DP.
#   - the coordinator's totals per evaluation (rounds.jsonl, `fedc rounds
#     --json`) equal the sum of what each client reported, read from the
#     clients' own JSON events (examples and correct exactly; the loss sum up
#     to the fixed-point rounding under SecAgg);
#   - under --secagg the coordinator never writes one client's statistics:
#     no log line, audit record or state file holds a client's examples,
#     correct count or loss sum (only the cohort's totals);
#   - the final model is evaluated before the coordinator is done (exits with
#     --exit-when-done only after), `fedc rounds` shows it, /metrics has it;
#   - under DP the totals carry noise the accountant counts (epsilon after each
#     evaluation above its round's), and without --eval-dp-noise the start is
#     refused;
#   - `fedc rounds --plot` draws the history (if gnuplot is installed).
set -euo pipefail
. "$(dirname "$0")/lib.sh" "$@"
. "$(dirname "$0")/_data.sh"
make_tmp

make_pki "$T/pki" itest a b c
make_idx "$T" 200 3
ADMIN=(--pki "$T/pki" --name root)

run() { # MODE (plain|secagg|dp)
  local mode=$1 extra=(--cohort 3)
  [ "$mode" = secagg ] && extra=(--cohort 3 --secagg --secagg-stage-ms 20000)
  # DP: Poisson sampling at rate 1 (every client every round); the evaluation's totals get noise z = 50.
  [ "$mode" = dp ] && extra=(--cohort 0 --cohort-fraction 1 --dp-noise-multiplier 1 --eval-dp-noise 50)
  rm -rf "$T/state-$mode"
  start_coordinator --pki "$T/pki" --federation itest --state "$T/state-$mode" --model 784-10 \
    --rounds 3 --min-clients 3 --min-updates 3 --poll-ms 100 --round-timeout-ms 60000 \
    --eval-every 1 --eval-cohort 3 --eval-min 3 --eval-timeout-ms 60000 --metrics-listen 127.0.0.1:0 \
    --exit-when-done --log info "${extra[@]}"
  local coord=$COORD_PID
  local i n
  i=0
  for n in a b c; do
    start_bg "client-$mode-$n" "$FEDC" client --coordinator "$COORD_ADDR" --pki "$T/pki" --name "$n" \
      --data "idx:$T/img$i.idx,$T/lbl$i.idx" --model 784-10 --eval-fraction 0.25 --json
    i=$((i + 1))
  done
  # The coordinator exits by itself once the last model's evaluation is in and every client heard DONE.
  wait_for bash -c "! kill -0 $coord 2>/dev/null" 180 || fail "$mode: coordinator did not finish"
  wait "$coord" || fail "$mode: coordinator exited non-zero"
  local R="$T/state-$mode/rounds.jsonl"
  # Three training records, three evaluation lines (one per model).
  [ "$(jq -s 'map(select(.outcome == "completed")) | length' "$R")" = 3 ] || fail "$mode: rounds: $(cat "$R")"
  [ "$(jq -s 'map(select(.eval.outcome == "completed")) | length' "$R")" = 3 ] ||
    fail "$mode: evaluations: $(cat "$R")"
  if [ "$mode" = dp ]; then
    # Noised totals, counted by the accountant: each evaluation's epsilon is
    # above its round's (it is a Gaussian mechanism without sampling on top).
    jq -s -e 'map(select(.eval)) | length == 3 and all(.[]; .eval.dp_noise == 50 and .eval.dp_epsilon > 0 and
      .eval.examples >= 0 and .eval.correct >= 0 and .eval.correct <= .eval.examples and .eval.loss_sum >= 0)' "$R" \
      >/dev/null || fail "dp: evaluation lines: $(cat "$R")"
    for r in 1 2 3; do
      jq -s -e --argjson r "$r" '(map(select(.outcome and .round == $r))[0].dp_epsilon) as $t |
        map(select(.eval and .round == $r))[0].eval.dp_epsilon > $t' "$R" >/dev/null ||
        fail "dp: round $r: the evaluation's epsilon is not above the round's: $(cat "$R")"
    done
    jq -e '.epsilon > 0' "$T/state-$mode/dp.json" >/dev/null || fail "dp: dp.json: $(cat "$T/state-$mode/dp.json")"
    mv "$T/coord.log" "$T/coord-$mode.log"
    return
  fi
  for r in 1 2 3; do
    local want have
    # What the clients reported for round r's model, from their own event lines.
    want=$(cat "$T"/client-"$mode"-*.log | grep '^{' |
      jq -s --argjson r "$r" 'map(select(.event == "eval_reported" and .round == $r)) |
        {n: length, examples: (map(.examples) | add), correct: (map(.correct) | add), loss_sum: (map(.loss_sum) | add)}')
    have=$(jq -s --argjson r "$r" 'map(select(.eval and .round == $r))[0].eval' "$R")
    [ "$(jq .n <<<"$want")" = 3 ] || fail "$mode: round $r: clients reported $(jq .n <<<"$want") times"
    jq -e -n --argjson w "$want" --argjson h "$have" \
      '$h.clients == 3 and $h.examples == $w.examples and $h.correct == $w.correct and
       (($h.loss_sum - $w.loss_sum) | fabs) <= 1e-3 * ($w.loss_sum + 1) and
       (($h.accuracy - ($w.correct / $w.examples)) | fabs) < 1e-9' >/dev/null ||
      fail "$mode: round $r: coordinator's totals $have differ from the clients' sum $want"
    # 3 clients x 50 held-out examples each (a quarter of 200).
    [ "$(jq .examples <<<"$have")" = 150 ] || fail "$mode: round $r: examples $(jq .examples <<<"$have")"
  done
  # Training used the other three quarters: 3 x 150 examples a round.
  jq -s -e 'map(select(.outcome == "completed") | .examples == 450) | all' "$R" >/dev/null ||
    fail "$mode: training examples: $(cat "$R")"
  if [ "$mode" = secagg ]; then
    jq -s -e 'map(select(.eval) | .eval.secagg_remaining == [3,3,3,3,3]) | all' "$R" >/dev/null ||
      fail "secagg: evaluation stage counts: $(cat "$R")"
    # No single client's statistics anywhere the coordinator writes: each
    # client's reported correct count and loss sum (unless equal to a
    # total, which 3 positive numbers cannot be) is absent from its log,
    # its audit log and its state files.
    grep -q "masked statistics from a accepted" "$T/coord.log" || fail "secagg: no masked report in the log"
    grep -q "results from" "$T/coord.log" && fail "secagg: the coordinator logged a client's results"
    local line
    while read -r line; do
      local c l
      c=$(jq -r '"correct \(.correct)"' <<<"$line")
      l=$(jq -r '.loss_sum' <<<"$line")
      grep -rqF "\"correct\":$(jq .correct <<<"$line")," "$T/state-$mode" "$T/coord.log" &&
        fail "secagg: a client's correct count ($c) is in the coordinator's files"
      grep -rqF "$(printf '%.4f' "$l")" "$T/state-$mode" "$T/coord.log" &&
        fail "secagg: a client's loss sum ($l) is in the coordinator's files"
    done < <(cat "$T"/client-secagg-*.log | grep '^{' | jq -c 'select(.event == "eval_reported")')
  else
    grep -q "results from a accepted" "$T/coord.log" || fail "plain: reports not logged"
  fi
  mv "$T/coord.log" "$T/coord-$mode.log"
}

run plain
run secagg
run dp
# Under DP the evaluation's totals are published too: without its noise the start is refused.
rc=0
"$FEDC" coordinator --pki "$T/pki" --federation itest --state "$T/never" --cohort 0 --cohort-fraction 1 \
  --dp-noise-multiplier 1 --eval-every 1 2>"$T/dpeval.err" || rc=$?
[ "$rc" = 1 ] && grep -q "set eval_dp_noise" "$T/dpeval.err" && [ ! -e "$T/never" ] ||
  fail "DP evaluation without its noise: status $rc: $(cat "$T/dpeval.err")"

# The admin view of a finished state: a coordinator on it serves the history.
start_coordinator --pki "$T/pki" --federation itest --state "$T/state-plain" --model 784-10 --rounds 3 \
  --eval-every 1 --metrics-listen 127.0.0.1:0 --log info
mport=$(sed -n 's|.*metrics on http://127.0.0.1:\([0-9]*\)/metrics.*|\1|p' "$T/coord.log" | head -n 1)
[ -n "$mport" ] || fail "no metrics address in the log"
curl -fsS "http://127.0.0.1:$mport/metrics" > "$T/metrics.txt" || fail "GET /metrics"
acc3=$(jq -s 'map(select(.eval and .round == 3))[0].eval.accuracy' "$T/state-plain/rounds.jsonl")
awk -v a="$acc3" '$1 == "fedc_eval_accuracy" { found = 1; if ($2 - a > 1e-6 || a - $2 > 1e-6) exit 1 } END { exit !found }' \
  "$T/metrics.txt" || fail "/metrics: fedc_eval_accuracy is not round 3's $acc3: $(grep eval "$T/metrics.txt")"
grep -q '^fedc_evals_total{outcome="completed"} 0$' "$T/metrics.txt" || fail "/metrics: fedc_evals_total"
"$FEDC" rounds --coordinator "$COORD_ADDR" "${ADMIN[@]}" --json > "$T/rounds.json"
jq -s -e 'length == 3 and (map(.eval.outcome == "completed" and .eval.clients == 3 and .eval.accuracy > 0) | all)' \
  "$T/rounds.json" >/dev/null || fail "fedc rounds --json: $(cat "$T/rounds.json")"
"$FEDC" rounds --coordinator "$COORD_ADDR" "${ADMIN[@]}" > "$T/rounds.txt"
grep -q "EVAL ACC" "$T/rounds.txt" || fail "fedc rounds: no evaluation column: $(cat "$T/rounds.txt")"
if command -v gnuplot >/dev/null; then
  "$FEDC" rounds --coordinator "$COORD_ADDR" "${ADMIN[@]}" --plot "$T/history.png" 2>"$T/plot.err" ||
    fail "fedc rounds --plot: $(cat "$T/plot.err")"
  [ -s "$T/history.png" ] || fail "fedc rounds --plot wrote no image"
fi
echo "PASS fedeval"
