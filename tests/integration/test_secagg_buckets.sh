#!/usr/bin/env bash
# Robust aggregation together with secure aggregation (bucketing), over real
# processes and mutual TLS on 127.0.0.1: a coordinator with --secagg
# --aggregator median --secagg-bucket 3 and six clients (cohort 6: two random
# buckets of 3, each its own SecAgg instance, complete graph, threshold 2).
#
#   Clients e and f vanish from the masked stage in every round. The buckets
#   are drawn anew each round (the coordinator's debug log lists them):
#   - e and f in one bucket: that bucket keeps 1 < t = 2 inputs, so it alone
#     is dropped; the round completes with the median of the other bucket's
#     mean (3 inputs; clients left per stage 6>6>3>3>3);
#   - e and f in different buckets: both buckets keep 2 = t inputs and the
#     round completes with both means (4 inputs; 6>6>4>4>4).
#   Each round is checked against what its own buckets imply.
# Then a second federation in which client a attacks outside the clip
# (--byzantine signflip:1000 --byzantine-unclipped): its bucket's mean is over
# the clip, so that bucket alone is dropped each round and the other's 3
# inputs make the model.
# Then a third in which client a claims weight 4 in its masked input
# (--byzantine-weight 4: what a client not running our code can do): its
# bucket's unmasked weights add up to 6 for 3 inputs (refused as an
# inconsistent sum), so that bucket alone is dropped each round.
# Refused at start, with a reason: buckets smaller than 3, a bucket larger
# than the cohort, and a rule whose precondition the buckets can never meet
# (Krum with f = 1 needs 5 buckets; a cohort of 6 in buckets of 3 makes 2).
set -euo pipefail
. "$(dirname "$0")/lib.sh" "$@"
. "$(dirname "$0")/_data.sh"
make_tmp
NAMES=(a b c d e f)
ROUNDS=4

make_pki "$T/pki" bk "${NAMES[@]}"
make_idx "$T" 150 6

refused() { # WHAT PATTERN ARGS...: the coordinator exits 1 at start with PATTERN
  local what=$1 pat=$2 rc=0
  shift 2
  timeout 20 "$FEDC" coordinator --pki "$T/pki" --federation bk --state "$T/bad" --model 784-10 --secagg \
    --cohort 6 --min-clients 6 --listen 127.0.0.1:0 "$@" >/dev/null 2>"$T/bad.err" || rc=$?
  [ "$rc" != 0 ] && grep -q -- "$pat" "$T/bad.err" || fail "$what: status $rc, $(cat "$T/bad.err")"
}
refused "bucket of 2" "secagg-bucket" --aggregator median --secagg-bucket 2
refused "bucket above the cohort" "no more than the cohort" --aggregator median --secagg-bucket 7
refused "krum on 2 buckets" "2 secure-aggregation buckets" --aggregator krum --agg-f 1 --secagg-bucket 3

# federation K ROUNDS WHO ARGS...: coordinator (median over buckets of 3,
# state $T/stateK) and the six clients, those whose name matches the regex
# WHO run with ARGS; waits until ROUNDS rounds ended and writes
# $T/roundsK.jsonl. Client pids in CLIENTS.
federation() {
  local k=$1 rounds=$2 who=$3 i n
  shift 3
  start_coordinator --pki "$T/pki" --federation bk --state "$T/state$k" --model 784-10 --secagg \
    --aggregator median --secagg-bucket 3 --rounds "$rounds" --min-clients 6 --cohort 6 --min-updates 3 \
    --poll-ms 100 --client-ttl-ms 3000 --round-timeout-ms 8000 --secagg-stage-ms 2500 --log debug
  ADMIN=(--coordinator "$COORD_ADDR" --pki "$T/pki" --name root)
  CLIENTS=()
  for i in "${!NAMES[@]}"; do
    n=${NAMES[$i]}
    local extra=()
    [[ $n =~ ^($who)$ ]] && extra=("$@")
    start_bg "client$k-$n" "$FEDC" client --coordinator "$COORD_ADDR" --pki "$T/pki" --name "$n" \
      --data "idx:$T/img$i.idx,$T/lbl$i.idx" --model 784-10 --log info "${extra[@]}"
    CLIENTS+=("$BG_PID")
  done
  wait_for bash -c "[ \"\$('$FEDC' status ${ADMIN[*]} --json | jq -r '.rounds_completed + .rounds_abandoned')\" -ge $rounds ]" \
    120 || fail "$rounds rounds did not end: $("$FEDC" status "${ADMIN[@]}" --json)"
  "$FEDC" rounds "${ADMIN[@]}" --json >"$T/rounds$k.jsonl"
}
federation "" "$ROUNDS" "e|f" --secagg-drop masked:1

same=0 split=0
for r in $(seq 1 "$ROUNDS"); do
  rec=$(jq -c "select(.round == $r)" "$T/rounds.jsonl")
  b=$(grep -E "secagg: round $r: bucket [12]: [a-f]( [a-f])*$" "$T/coord.log" | sed 's/.*: bucket [12]: //')
  [ "$(wc -l <<<"$b")" = 2 ] || fail "round $r: buckets not logged: $b"
  if grep -qE '(^| )e( |$)' <<<"$b" && grep -E '(^| )e( |$)' <<<"$b" | grep -qE '(^| )f( |$)'; then
    same=$((same + 1))
    jq -e '.outcome == "completed" and .participants == 3 and .secagg_remaining == [6,6,3,3,3]' <<<"$rec" \
      >/dev/null || fail "round $r, e and f in one bucket ($b): $rec"
    grep -qE "round $r: bucket [12] of 2 dropped: .*only 1 clients left after the masked stage" "$T/coord.log" ||
      fail "round $r: the bucket of e and f was not dropped with its reason"
    assert_contains "$T/coord.log" "round $r: median over 1 bucket means (3 masked inputs, 1 of 2 buckets)"
  else
    split=$((split + 1))
    jq -e '.outcome == "completed" and .participants == 4 and .secagg_remaining == [6,6,4,4,4]' <<<"$rec" \
      >/dev/null || fail "round $r, e and f in different buckets ($b): $rec"
    assert_contains "$T/coord.log" "round $r: median over 2 bucket means (4 masked inputs, 2 of 2 buckets)"
  fi
done
# The federation learns through the buckets: loss falls from round 1 to the last.
l1=$(jq -s '.[0].mean_train_loss' "$T/rounds.jsonl")
ll=$(jq -s 'last.mean_train_loss' "$T/rounds.jsonl")
awk "BEGIN{exit !($ll < $l1)}" || fail "train loss did not fall: $l1 -> $ll"
kill -TERM "$COORD_PID"
wait "$COORD_PID" || fail "coordinator exited non-zero on SIGTERM"
kill -KILL "${CLIENTS[@]}" 2>/dev/null || true

# attacker_federation K WHY PATTERN ATTACK...: a fresh federation (state K)
# in which client a runs with ATTACK; in each of 2 rounds the bucket holding a
# is dropped, its log line matching PATTERN, and the other bucket's 3 inputs
# make the model.
attacker_federation() {
  local k=$1 why=$2 pat=$3 r ab
  shift 3
  mv "$T/coord.log" "$T/coord-$((k - 1)).log"
  federation "$k" 2 a "$@"
  for r in 1 2; do
    jq -s -e ".[] | select(.round == $r) | .outcome == \"completed\" and .participants == 3" "$T/rounds$k.jsonl" \
      >/dev/null || fail "round $r with a's bucket dropped: $(jq -c "select(.round == $r)" "$T/rounds$k.jsonl")"
    ab=$(grep -E "secagg: round $r: bucket [12]: [a-f]( [a-f])*$" "$T/coord.log" | grep -E ': (a|.* a)( |$)' |
      sed -E 's/.*bucket ([12]):.*/\1/')
    grep -qE "round $r: bucket $ab of 2 dropped: $pat" "$T/coord.log" ||
      fail "round $r: a's bucket ($ab) was not dropped for $why"
  done
  kill -TERM "$COORD_PID"
  wait "$COORD_PID" || fail "coordinator exited non-zero on SIGTERM"
  kill -KILL "${CLIENTS[@]}" 2>/dev/null || true
}
# an attacker outside the clip spoils only its own bucket
attacker_federation 2 "its norm" "the mean of its 3 inputs has L2 norm .* over the clip" \
  --byzantine signflip:1000 --byzantine-unclipped
# a client lying about its weight spoils only its own bucket
attacker_federation 3 "its weights" ".*(total weight 6|weights sum to 6 for 3 inputs)" --byzantine-weight 4
echo "rounds with e and f in one bucket: $same, in two: $split"
echo "PASS secagg_buckets"
