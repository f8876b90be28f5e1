#!/usr/bin/env bash
# `fedc sim --byzantine F:backdoor[:GAMMA]` (Bagdasaryan et al. 2020) on the
# real Fashion-MNIST over mutual TLS on 127.0.0.1:
#  - the attacker (1 of 10, in every round's cohort) poisons 30% of its data
#    with the pixel trigger and says so in its log; every round of rounds.csv
#    and rounds.jsonl carries a backdoor success rate, and the progress line
#    shows it;
#  - model replacement (gamma 10, clipped to the clip norm 10 by the
#    attacker's own clip stage) plants the backdoor within 3 rounds: success
#    above 30% while the main task still learns (measured: 51% at round 3,
#    accuracy 77%);
#  - the same attacker skipping its clip stage (--byzantine-unclipped, gamma
#    100) is refused by the coordinator's clip norm every round, and the
#    backdoor does not take (measured: 3-5%, the clean model's rate);
#  - without a backdoor attack the column is empty (JSON null).
set -euo pipefail
. "$(dirname "$0")/lib.sh" "$@"
make_tmp
DATA=/usr/share/datasets/fashion-mnist
[ -f "$DATA/train-images-idx3-ubyte.gz" ] || fail "Fashion-MNIST is not installed in $DATA"

run() { # NAME ARGS...
  local name=$1
  shift
  timeout -s TERM 300 "$FEDC" sim --out "$T/$name" --data-dir "$DATA" --clients 10 --cohort 10 \
    --clients-per-process 5 "$@" >"$T/$name.out" 2>"$T/$name.err" ||
    fail "sim $name: $(tail -n 5 "$T/$name.err")"
}

run replace --rounds 3 --byzantine 0.1:backdoor:10 --json
attacker=$(jq -r '.clients[0]' "$T/replace/byzantine.json")
grep -qh "fedc client $attacker: backdoor: [0-9]* of [0-9]* examples carry the trigger, labelled 0" \
  "$T/replace/logs/"clients-*.log || fail "$attacker does not poison its data"
head -n 1 "$T/replace/rounds.csv" | grep -q ',backdoor$' || fail "no backdoor column: $(head -n 1 "$T/replace/rounds.csv")"
[ "$(tail -n +2 "$T/replace/rounds.csv" | cut -d, -f12 | grep -c '^0\.[0-9]*$')" = 3 ] ||
  fail "not 3 rounds with a backdoor rate: $(cat "$T/replace/rounds.csv")"
[ "$(jq -s 'map(select(.backdoor | type == "number")) | length' "$T/replace/rounds.jsonl")" = 3 ] ||
  fail "rounds.jsonl: $(cat "$T/replace/rounds.jsonl")"
bd=$(tail -n 1 "$T/replace.out" | jq .backdoor)
acc=$(tail -n 1 "$T/replace.out" | jq .accuracy)
awk "BEGIN{exit !($bd > 0.3 && $acc > 0.5)}" || fail "model replacement: backdoor $bd, accuracy $acc at round 3"
grep -q "backdoor success" "$T/replace/curve.gp" || fail "no backdoor curve in curve.gp"

# The attacker that skips its clip: refused (the round completes with the 9 others).
run refused --rounds 2 --byzantine 0.1:backdoor:100 --byzantine-unclipped --min-updates 9 --round-timeout-ms 15000
refusals=$(grep -c "upload from $attacker rejected: update L2 norm [0-9.]* exceeds the clip norm 10" \
  "$T/refused/logs/coordinator.log" || true)
[ "$refusals" = 2 ] || fail "$refusals refusals of $attacker's unclipped update, not 2"
grep -q 'round 2/2  accuracy [0-9.]*%  backdoor [0-9.]*%' "$T/refused.err" || fail "no backdoor on the progress line"
bd_refused=$(tail -n 1 "$T/refused/rounds.csv" | cut -d, -f12)
awk "BEGIN{exit !($bd_refused < 0.2)}" || fail "refused attacker: backdoor still $bd_refused"

# No backdoor attack: the column is there and empty.
run none --rounds 1 --byzantine 0.1:signflip --json
[ "$(tail -n 1 "$T/none/rounds.csv" | cut -d, -f12)" = "" ] || fail "backdoor rate without a backdoor attack"
[ "$(tail -n 1 "$T/none.out" | jq .backdoor)" = null ] || fail "JSON backdoor without a backdoor attack"
echo "model replacement: backdoor $bd, accuracy $acc at round 3; refused unclipped: backdoor $bd_refused"
echo "PASS sim_backdoor"
