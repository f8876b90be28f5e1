#!/usr/bin/env bash
# Differential privacy under secure aggregation (the distributed discrete
# Gaussian) over real processes and mutual TLS on 127.0.0.1: five clients,
# Poisson rate 1, noise multiplier 0.5, adaptive clipping, min-updates 3 (the
# fewest survivors whose noise shares add up to z).
#   - a client too old for distributed DP (protocol 1.2) is refused;
#   - client e vanishes before its masked input every round: rounds still
#     publish with the 4 survivors, whose noise multiplier on the sum the log
#     states: z_Delta = (0.5^-2 - (2 sigma_b)^-2)^-1/2 = 0.5774 (sigma_b =
#     z = 0.5: adaptive clipping's count takes its share) from any 3, so
#     0.5774 sqrt(4/3) = 0.6667 from 4;
#   - epsilon per round equals `fedc dp-budget` for the same rate and noise;
#   - the clip moves (adaptive clipping's bit rides inside the masked sum),
#     up to --dp-clip-max and no further (the range holds on this path too);
#   - the coordinator never sees an update: no "update from" line.
set -euo pipefail
. "$(dirname "$0")/lib.sh" "$@"
. "$(dirname "$0")/_data.sh"
make_tmp
PROBE="$BUILD_DIR/fedc_probe"
NAMES=(a b c d e)
make_pki "$T/pki" dps "${NAMES[@]}" old
make_idx "$T" 100 5
start_coordinator --pki "$T/pki" --federation dps --state "$T/state" --model 784-10 --secagg --rounds 4 \
  --min-clients 5 --cohort 0 --cohort-fraction 1 --min-updates 3 --dp-noise-multiplier 0.5 --dp-clip 0.05 \
  --dp-adaptive-quantile 0.5 --dp-clip-lr 0.5 --dp-clip-max 0.065 --poll-ms 100 --client-ttl-ms 3000 --round-timeout-ms 8000 \
  --secagg-stage-ms 2500 --log info
ADMIN=(--coordinator "$COORD_ADDR" --pki "$T/pki" --name root)

"$PROBE" --coordinator "$COORD_ADDR" --pki "$T/pki" --name old --mode call --protocol 1.2 \
  --method /fedc.v1.Coordinator/CheckIn --want 9 >"$T/old.json" || fail "a 1.2 client checked in: $(cat "$T/old.json")"
grep -q "distributed DP.*upgrade" "$T/old.json" || fail "no reason for the 1.2 client: $(cat "$T/old.json")"

for i in 0 1 2 3 4; do
  extra=()
  [ "${NAMES[$i]}" = e ] && extra=(--secagg-drop masked:1)
  start_bg "client-${NAMES[$i]}" "$FEDC" client --coordinator "$COORD_ADDR" --pki "$T/pki" --name "${NAMES[$i]}" \
    --data "idx:$T/img$i.idx,$T/lbl$i.idx" --model 784-10 --log info "${extra[@]}"
done
wait_for bash -c "'$FEDC' status ${ADMIN[*]} --json | jq -e '.state == \"done\"' >/dev/null" 150 ||
  fail "the federation did not finish: $("$FEDC" status "${ADMIN[@]}" --json)"
"$FEDC" rounds "${ADMIN[@]}" --json | jq -c 'select(.outcome == "completed")' >"$T/rounds.jsonl"
n=$(wc -l <"$T/rounds.jsonl")
[ "$n" = 4 ] || fail "$n rounds completed, not 4: $("$FEDC" rounds "${ADMIN[@]}" --json)"
# Four survivors each round (e vanished before its masked input).
jq -s -e 'map(.participants == 4 and .secagg_remaining[2] == 4) | all' "$T/rounds.jsonl" >/dev/null ||
  fail "survivors per round: $(jq -c '[.participants, .secagg_remaining]' "$T/rounds.jsonl")"
grep -q "distributed DP: 4 survivors added noise multiplier 0.6667 to the sum (at least 0.5774 needed, from 3" \
  "$T/coord.log" ||
  fail "no noise statement for 4 survivors: $(grep 'distributed DP' "$T/coord.log" | head -3)"
eps=$(jq -s '.[-1].dp_epsilon' "$T/rounds.jsonl")
want=$("$FEDC" dp-budget --population 5 --cohort 5 --noise 0.5 --rounds 4 --delta 1e-5 --json | jq .epsilon)
awk "BEGIN{d=$eps-$want; exit !(d < 1e-6 && d > -1e-6)}" || fail "epsilon $eps after 4 rounds; dp-budget says $want"
first=$(jq -s '.[0].dp_clip' "$T/rounds.jsonl")
last=$(jq -s '.[-1].dp_clip' "$T/rounds.jsonl")
awk "BEGIN{exit !($last != $first)}" || fail "the clip did not move: $(jq -c .dp_clip "$T/rounds.jsonl")"
# Every update is far above 0.05 (b about 0.1 with 4 of 5 counted): about x1.22 a round, so the clip reaches
# the max 0.065 by the last round (3 steps; 1.3 needs 3.9 sigma less) and never passes it.
high=$(jq -s 'map(.dp_clip) | max' "$T/rounds.jsonl")
awk "BEGIN{d=$high-0.065; exit !(d < 1e-6 && d > -1e-6)}" ||
  fail "the clip did not stop at --dp-clip-max 0.065: $(jq -c .dp_clip "$T/rounds.jsonl")"
if grep -q "update from" "$T/coord.log"; then fail "the coordinator saw a plaintext update"; fi
echo "clip per round: $(jq -s -c 'map(.dp_clip)' "$T/rounds.jsonl"), epsilon $eps"
echo "PASS dp_secagg"
