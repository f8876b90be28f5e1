#!/usr/bin/env bash
# Secure aggregation's default neighbour graph and certificate checks (issue
# 27) over real processes and mutual TLS on 127.0.0.1, ten clients:
#   - all ten in every round (--min-updates 10): the coordinator takes k and
#     t from Bell et al.'s bounds for 5% corrupt (one client) and 10% dropout,
#     6 neighbours and threshold 5 instead of the complete graph's 9 / 6,
#     says so, and the rounds complete with every client; each client checks
#     at most its 6 neighbours' certificates per round;
#   - the complete graph asked for (--secagg-neighbors 9): each client checks
#     its 9 neighbours' certificates in round 1 and none again in rounds 2 and
#     3 (the same certificates, verified before), as its log says;
#   - --secagg-corrupt / --secagg-dropout outside [0, 1) are refused at start
#     with one line naming the option, before the state directory is made.
set -euo pipefail
. "$(dirname "$0")/lib.sh" "$@"
. "$(dirname "$0")/_data.sh"
make_tmp
NAMES=(a b c d e f g h i j)
make_pki "$T/pki" sag "${NAMES[@]}"
make_idx "$T" 60 10

# run NAME ROUNDS ARGS...: a coordinator and the ten clients (log info) until ROUNDS completed.
# These rounds take under a second each, five FetchModel/SecAggSubmit calls per
# client: --call-rate 10 keeps the per-identity limit out of the picture.
run() {
  local name=$1 rounds=$2 i
  shift 2
  start_coordinator --pki "$T/pki" --federation sag --state "$T/$name" --model 784-10 --secagg --rounds "$rounds" \
    --min-clients 10 --cohort 10 --min-updates 10 --poll-ms 100 --round-timeout-ms 30000 --secagg-stage-ms 10000 \
    --call-rate 10 --log info "$@"
  local pids=()
  for i in "${!NAMES[@]}"; do
    start_bg "$name-${NAMES[$i]}" "$FEDC" client --coordinator "$COORD_ADDR" --pki "$T/pki" --name "${NAMES[$i]}" \
      --data "idx:$T/img$i.idx,$T/lbl$i.idx" --model 784-10 --log info
    pids+=("$BG_PID")
  done
  wait_completed "$rounds" 120 || fail "$name: $rounds rounds did not complete"
  for i in "${pids[@]}"; do wait "$i" || fail "$name: a client exited non-zero"; done
  kill -TERM "$COORD_PID"
  wait "$COORD_PID" || fail "$name: coordinator exited non-zero on SIGTERM"
  mv "$T/coord.log" "$T/$name-coord.log"
}

# ---- the default graph ----
run sparse 2
grep -q "secure aggregation over 10 clients, 6 neighbours each, threshold 5 (Bell et al.'s bounds for 5% corrupt, 10% dropout and min_updates 10)" "$T/sparse-coord.log" ||
  fail "sparse: no default graph line: $(grep 'secure aggregation over' "$T/sparse-coord.log")"
jq -s -e 'length == 2 and all(.[]; .outcome == "completed" and .participants == 10)' "$T/sparse/rounds.jsonl" \
  >/dev/null || fail "sparse: rounds: $(cat "$T/sparse/rounds.jsonl")"
n=$(cat "$T"/sparse-*.log | grep -c "secure aggregation done .*certificates: [0-6] checked") || true
[ "$n" = 20 ] || fail "sparse: certificate counts: $(grep -h 'secure aggregation done' "$T"/sparse-*.log)"

# ---- the complete graph: each neighbour's certificate checked once ----
run complete 3 --secagg-neighbors 9
grep -q "secure aggregation over 10 clients, 9 neighbours each, threshold 6$" "$T/complete-coord.log" ||
  fail "complete: $(grep 'secure aggregation over' "$T/complete-coord.log")"
for n in "${NAMES[@]}"; do
  f=$T/complete-$n.log
  grep -q "round 1: secure aggregation done .*certificates: 9 checked, 0 verified in an earlier round" "$f" ||
    fail "complete: round 1 of $n: $(grep 'secure aggregation done' "$f")"
  for r in 2 3; do
    grep -q "round $r: secure aggregation done .*certificates: 0 checked, 9 verified in an earlier round" "$f" ||
      fail "complete: round $r of $n: $(grep 'secure aggregation done' "$f")"
  done
done

# ---- the assumptions are fractions ----
for opt in --secagg-corrupt=1 --secagg-dropout=1.5 --secagg-dropout=-0.1; do
  rc=0
  "$FEDC" coordinator --pki "$T/pki" --federation sag --state "$T/never" --secagg "$opt" >"$T/refused.out" 2>&1 || rc=$?
  [ "$rc" = 2 ] && [ "$(wc -l <"$T/refused.out")" = 1 ] && o=${opt%%=*} && grep -q "'${o#--}'" "$T/refused.out" ||
    fail "$opt: status $rc: $(cat "$T/refused.out")"
done
[ ! -e "$T/never" ] || fail "a refused coordinator made its state directory"
echo "PASS secagg_graph"
