#!/usr/bin/env bash
# Differential privacy (DP-FedAvg) over real processes and mutual TLS on
# 127.0.0.1: a coordinator with --dp-noise-multiplier, Poisson sampling at
# rate 0.5 over 4 clients, clip 1, delta 1e-5 and a target epsilon.
#   - configurations whose guarantee would be void are refused, each with
#     its reason (a fixed-size cohort, secure aggregation with fewer than 2
#     survivors to carry the noise, no clip);
#   - rounds record the epsilon spent, rising; it equals `fedc dp-budget`
#     for the same rate, noise and rounds;
#   - the federation stops before a round would pass the target, and says so;
#   - a restart keeps the spent budget (and stays stopped).
set -euo pipefail
. "$(dirname "$0")/lib.sh" "$@"
. "$(dirname "$0")/_data.sh"
make_tmp
NAMES=(a b c d)
make_pki "$T/pki" dp "${NAMES[@]}"
make_idx "$T" 100 4
BASE=(--pki "$T/pki" --federation dp --model 784-10 --min-clients 4 --min-updates 1 --poll-ms 100
  --round-timeout-ms 5000 --pickup-timeout-ms 2000 --client-ttl-ms 60000 --log info)
refused() { # WHAT ARGS...
  local what=$1
  shift
  if timeout 20 "$FEDC" coordinator "${BASE[@]}" --state "$T/bad" "$@" 2>"$T/refused.err"; then fail "accepted: $*"; fi
  grep -q "$what" "$T/refused.err" || fail "no reason ($what) for $*: $(cat "$T/refused.err")"
}
refused "Poisson subsampling" --dp-noise-multiplier 1 --cohort 4
refused "it must be at least 2" --dp-noise-multiplier 1 --cohort 0 --cohort-fraction 0.5 --secagg
refused "clip_norm > 0" --dp-noise-multiplier 1 --cohort 0 --cohort-fraction 0.5 --clip-norm 0
refused "dp_delta" --dp-noise-multiplier 1 --cohort 0 --cohort-fraction 0.5 --dp-delta 2
refused "invalid value 'nan'" --dp-noise-multiplier nan --cohort 0 --cohort-fraction 0.5
refused "invalid value '-1'" --dp-noise-multiplier -1 --cohort 0 --cohort-fraction 0.5
refused "below what a single round spends" --dp-noise-multiplier 1 --cohort 0 --cohort-fraction 0.5 \
  --dp-target-epsilon 0.01

PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
DP=(--dp-noise-multiplier 1.0 --cohort 0 --cohort-fraction 0.5 --clip-norm 1 --dp-delta 1e-5 --dp-target-epsilon 6
  --listen "127.0.0.1:$PORT" --state "$T/state")
start_coordinator "${BASE[@]}" "${DP[@]}"
ADMIN=(--coordinator "$COORD_ADDR" --pki "$T/pki" --name root)
for i in 0 1 2 3; do
  start_bg "client-${NAMES[$i]}" "$FEDC" client --coordinator "$COORD_ADDR" --pki "$T/pki" --name "${NAMES[$i]}" \
    --data "idx:$T/img$i.idx,$T/lbl$i.idx" --model 784-10
done
wait_for bash -c "'$FEDC' status ${ADMIN[*]} --json | jq -e '.state == \"done\"' >/dev/null" 120 ||
  fail "the federation did not stop at its privacy budget: $("$FEDC" status "${ADMIN[@]}" --json)"
st=$("$FEDC" status "${ADMIN[@]}" --json)
n=$(jq .rounds_completed <<<"$st")
eps=$(jq .dp_epsilon <<<"$st")
[ "$n" -ge 2 ] || fail "only $n rounds before the budget: $st"
jq -e '.dp | test("stopped: privacy budget")' <<<"$st" >/dev/null || fail "no reason for stopping: $st"
assert_contains "$T/coord.log" "federation stops: privacy budget"
# What was spent is what fedc dp-budget says for n rounds, and one more would pass 6.
want=$("$FEDC" dp-budget --population 4 --cohort 2 --noise 1.0 --rounds "$n" --delta 1e-5 --json | jq .epsilon)
more=$("$FEDC" dp-budget --population 4 --cohort 2 --noise 1.0 --rounds $((n + 1)) --delta 1e-5 --json | jq .epsilon)
awk "BEGIN{d=$eps-$want; exit !(d < 1e-6 && d > -1e-6 && $eps <= 6 && $more > 6)}" ||
  fail "epsilon $eps after $n rounds; dp-budget says $want, then $more"
# Per round, rising.
"$FEDC" rounds "${ADMIN[@]}" --json >"$T/rounds.jsonl"
jq -s -e 'map(select(.outcome == "completed") | .dp_epsilon) | . == sort and length > 1 and .[0] > 0' \
  "$T/rounds.jsonl" >/dev/null || fail "dp_epsilon per round: $(cat "$T/rounds.jsonl")"
[ -f "$T/state/dp.json" ] || fail "no dp.json"
# Uniform weights: each client (100 examples) weighs 1, so one client moves the
# sum by at most the clip norm whatever it claims (examples == participants).
jq -s -e 'map(select(.outcome == "completed") | .examples == .participants) | all' "$T/rounds.jsonl" >/dev/null ||
  fail "weights are not uniform under DP: $(cat "$T/rounds.jsonl")"

# The privacy budget is a hard limit: raising the round budget runs nothing.
"$FEDC" round start --rounds 5 "${ADMIN[@]}" --json >/dev/null || fail "round start"
for i in 0 1 2 3; do # the clients were told DONE and left: bring them back
  start_bg "client2-${NAMES[$i]}" "$FEDC" client --coordinator "$COORD_ADDR" --pki "$T/pki" --name "${NAMES[$i]}" \
    --data "idx:$T/img$i.idx,$T/lbl$i.idx" --model 784-10
done
sleep 4
[ "$("$FEDC" status "${ADMIN[@]}" --json | jq .rounds_completed)" = "$n" ] ||
  fail "rounds ran past the privacy budget: $("$FEDC" status "${ADMIN[@]}" --json)"

# A restart remembers the spent budget and stays stopped.
kill -TERM "$COORD_PID"
wait "$COORD_PID" || true
start_coordinator "${BASE[@]}" "${DP[@]}"
st2=$("$FEDC" status "${ADMIN[@]}" --json)
jq -e --argjson e "$eps" '.dp_epsilon == $e and (.dp | test("stopped"))' <<<"$st2" >/dev/null ||
  fail "after a restart: $st2"
echo "PASS dp"
