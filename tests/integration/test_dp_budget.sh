#!/usr/bin/env bash
# fedc dp-budget against the independent Python reference
# (tests/tools/rdp_ref.py) on several settings, the published TensorFlow
# Privacy numbers, the target-epsilon round, and usage errors.
set -euo pipefail
. "$(dirname "$0")/lib.sh" "$@"
make_tmp
REF="$(dirname "$0")/../tools/rdp_ref.py"
# population cohort noise rounds delta
while read -r n k z t d; do
  got=$("$FEDC" dp-budget --population "$n" --cohort "$k" --noise "$z" --rounds "$t" --delta "$d" --json)
  q=$(python3 -c "print($k/$n)")
  want=$(python3 "$REF" "$q" "$z" "$t" "$d")
  jq -n -e --argjson g "$got" --argjson w "$want" '
    def close(a; b): ((a - b) | fabs) <= 1e-6 * (b | fabs) + 1e-9;
    close($g.epsilon; $w.eps) and close($g.epsilon_classic; $w.eps_classic) and $g.order == $w.order' >/dev/null ||
    fail "dp-budget $n $k $z $t $d: $got vs reference $want"
done <<'CASES'
60000 150 1.3 6000 1e-5
100000 100 1.0 30000 1e-7
1000 100 0.8 100 1e-5
5000 50 1.1 2000 1e-6
CASES
"$FEDC" dp-budget --population 60000 --cohort 150 --noise 1.3 --rounds 6000 --delta 1e-5 --json |
  jq -e '(.epsilon_classic * 10000 | round) == 9419 and .sampling == "poisson"' >/dev/null || fail "published 0.9419"
# The target: epsilon at the reported round is within it, one round more is not.
r=$("$FEDC" dp-budget --population 1000 --cohort 100 --noise 1.0 --rounds 10 --delta 1e-5 --target-epsilon 3 --json |
  jq .rounds_within_target)
[ "$r" -ge 1 ] || fail "rounds within epsilon 3: $r"
e1=$("$FEDC" dp-budget --population 1000 --cohort 100 --noise 1.0 --rounds "$r" --delta 1e-5 --json | jq .epsilon)
e2=$("$FEDC" dp-budget --population 1000 --cohort 100 --noise 1.0 --rounds $((r + 1)) --delta 1e-5 --json | jq .epsilon)
awk "BEGIN{exit !($e1 <= 3 && $e2 > 3)}" || fail "target round $r: eps $e1 then $e2"
for bad in "--population 10 --cohort 20 --noise 1 --rounds 1 --delta 1e-5" \
  "--population 10 --cohort 2 --noise 0 --rounds 1 --delta 1e-5" \
  "--population 10 --cohort 2 --noise 1 --rounds 1 --delta 1" \
  "--population 10 --cohort 2 --noise nan --rounds 1 --delta 1e-5" \
  "--population 10 --cohort 2 --noise 1 --rounds 1 --delta 1e-5 --target-epsilon -3"; do
  rc=0
  "$FEDC" dp-budget $bad 2>/dev/null || rc=$?
  [ "$rc" = 2 ] || fail "dp-budget $bad exited $rc, not 2"
done
echo "PASS dp_budget"
