#!/usr/bin/env bash
# One cohort member lies in every federated evaluation (a hostile review's
# attack, 2026-12-06): three honest `fedc client`s hold out 50 examples each;
# fedc_probe --mode eval-poison reports the task's example cap (10,000, the
# default), none correct, the largest loss and every example predicted as
# one class, inside every bound the coordinator checks. Before, its report
# was summed as is: the published accuracy was 1.4% and the class
# proportions 98% its own, so the drift check tripped a hold. Now each
# report counts for at most twice the lower median member's examples
# and its mean loss for at most 4 x the lower median member's
# (fc_eval_stats_combine): every completed evaluation's examples are the
# honest 150 + 100, the liar's one class at most 100 of the predictions,
# and the published mean loss under 10 (the liar's 100 a value made it 41).
set -euo pipefail
. "$(dirname "$0")/lib.sh" "$@"
. "$(dirname "$0")/_data.sh"
make_tmp
PROBE="$BUILD_DIR/fedc_probe"
make_pki "$T/pki" itest a b c p
make_idx "$T" 200 3
ADMIN=(--pki "$T/pki" --name root)
start_coordinator --pki "$T/pki" --federation itest --model 784-10 --min-clients 4 --cohort 4 --min-updates 4 \
  --poll-ms 100 --round-timeout-ms 30000 --pickup-timeout-ms 30000 --eval-every 1 --eval-cohort 4 --eval-min 4 \
  --eval-timeout-ms 30000 --state "$T/s" --rounds 3
for i in 0 1 2; do
  n=$(echo a b c | cut -d' ' -f$((i + 1)))
  start_bg "client-$n" "$FEDC" client --coordinator "$COORD_ADDR" --pki "$T/pki" --name "$n" \
    --data "idx:$T/img$i.idx,$T/lbl$i.idx" --model 784-10 --eval-fraction 0.25
done
start_bg probe "$PROBE" --coordinator "$COORD_ADDR" --pki "$T/pki" --name p --mode eval-poison
wait_for bash -c "jq -s -e '[.[] | select(.eval.outcome == \"completed\")] | length >= 2' '$T/s/rounds.jsonl' \
  >/dev/null 2>&1" 180 || fail "two evaluations did not complete: $(cat "$T/s/rounds.jsonl" 2>/dev/null)"
grep -q '"step":"eval-poison"' "$T/probe.log" || fail "the probe never reported an evaluation: $(cat "$T/probe.log")"
jq -c 'select(.eval.outcome == "completed") | .eval | {clients, examples, correct, loss_sum, class_counts}' \
  "$T/s/rounds.jsonl"
# Every completed evaluation with the liar in it (4 clients): its weight is
# capped at 2 x 50; honest clients hold out 50 each (200 x 0.25).
jq -s -e '[.[] | select(.eval.outcome == "completed" and .eval.clients == 4) | .eval] | length >= 1 and all(
  .examples <= 250.001 and .examples >= 249.999 and
  (.class_counts | max) <= 150.001 and .loss_sum / .examples <= 10)' "$T/s/rounds.jsonl" >/dev/null ||
  fail "the liar's report was not capped at twice the median: $(jq -c 'select(.eval) | .eval' "$T/s/rounds.jsonl")"
echo "PASS: a lying evaluation report counts for at most twice the median member"
