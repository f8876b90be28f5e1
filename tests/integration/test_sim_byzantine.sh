#!/usr/bin/env bash
# `fedc sim` with hosted clients and research attackers, on the real
# Fashion-MNIST over mutual TLS on 127.0.0.1:
#  - --clients-per-process 5: 10 clients in 2 processes, each client with its
#    own certificate and connection (the coordinator sees 10 identities);
#  - --byzantine 0.2:signflip picks 2 attackers by seed, lists them in
#    byzantine.json, and exactly those say so in their logs;
#  - with the coordinate-wise median the federation still learns (accuracy at
#    round 4 above 50%), and the same seed picks the same attackers;
#  - a bad --byzantine is refused with status 2.
set -euo pipefail
. "$(dirname "$0")/lib.sh" "$@"
make_tmp
DATA=/usr/share/datasets/fashion-mnist
[ -f "$DATA/train-images-idx3-ubyte.gz" ] || fail "Fashion-MNIST is not installed in $DATA"

run() { # NAME ARGS...
  local name=$1
  shift
  timeout -s TERM 120 "$FEDC" sim --out "$T/$name" --data-dir "$DATA" --clients 10 --cohort 10 --rounds 4 \
    --clients-per-process 5 --json "$@" >"$T/$name.out" 2>"$T/$name.err" ||
    fail "sim $name: $(tail -n 5 "$T/$name.err")"
}
run a --byzantine 0.2:signflip --aggregator median
ls "$T/a/logs" | grep -qx "clients-c0000-c0004.log" || fail "no group log: $(ls "$T/a/logs")"
[ "$(ls "$T/a/logs" | grep -c '^clients-')" = 2 ] || fail "not 2 client processes: $(ls "$T/a/logs")"
jq -e '.attack == "signflip" and .count == 2 and (.clients | length) == 2' "$T/a/byzantine.json" >/dev/null ||
  fail "byzantine.json: $(cat "$T/a/byzantine.json")"
for c in $(jq -r '.clients[]' "$T/a/byzantine.json"); do
  grep -qh "fedc client $c: research attacker (signflip)" "$T/a/logs/"clients-*.log || fail "$c does not attack"
done
[ "$(cat "$T/a/logs/"clients-*.log | grep -c 'research attacker')" = 2 ] || fail "not exactly 2 attackers"
# Ten distinct identities took part.
n=$(grep -o "update from c[0-9]*" "$T/a/logs/coordinator.log" | sort -u | wc -l)
[ "$n" = 10 ] || fail "$n distinct clients uploaded, not 10"
acc=$(tail -n 1 "$T/a.out" | jq .accuracy)
awk "BEGIN{exit !($acc > 0.5)}" || fail "median under 20% sign flip: accuracy $acc at round 4"
run b --byzantine 0.2:signflip --aggregator median
cmp -s <(jq -c .clients "$T/a/byzantine.json") <(jq -c .clients "$T/b/byzantine.json") ||
  fail "the same seed picked other attackers"
rc=0
"$FEDC" sim --out "$T/bad" --byzantine 0.2:bogus 2>"$T/bad.err" || rc=$?
[ "$rc" = 2 ] && grep -q -- "--byzantine" "$T/bad.err" || fail "bad --byzantine: status $rc, $(cat "$T/bad.err")"
echo "median under 20% sign flip: accuracy $acc at round 4"
echo "PASS sim_byzantine"
