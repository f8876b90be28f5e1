#!/usr/bin/env bash
# Adaptive clipping under differential privacy (Andrew et al. 2021) over real
# processes and mutual TLS on 127.0.0.1: 4 clients, Poisson rate 0.5, z 0.5.
#   - what would make it void or meaningless is refused with its reason
#     (no DP, a quantile outside (0, 1), a count noise sigma_b <= z / 2);
#   - a client too old to say whether it clipped (protocol 1.2) is refused;
#   - from a clip far below every update's norm the clip rises round after
#     round, from one far above it falls: rounds.jsonl records each round's;
#   - a restart resumes the clip where it was (dp.json), not at --clip-norm;
#   - the clip stays in its range: from 100 with --dp-clip-min 60 it falls to
#     60 and no further; a range that does not hold the start, or a bound
#     without adaptive clipping, is refused; `fedc rounds` shows each round's clip.
set -euo pipefail
. "$(dirname "$0")/lib.sh" "$@"
. "$(dirname "$0")/_data.sh"
make_tmp
PROBE="$BUILD_DIR/fedc_probe"
NAMES=(a b c d)
make_pki "$T/pki" dpa "${NAMES[@]}" e
make_idx "$T" 100 4
BASE=(--pki "$T/pki" --federation dpa --model 784-10 --min-clients 4 --min-updates 1 --poll-ms 100
  --round-timeout-ms 10000 --pickup-timeout-ms 5000 --client-ttl-ms 60000 --log info)
DP=(--dp-noise-multiplier 0.5 --cohort 0 --cohort-fraction 0.5 --dp-clip-lr 0.5)
refused() { # WHAT ARGS...
  local what=$1
  shift
  if timeout 20 "$FEDC" coordinator "${BASE[@]}" --state "$T/bad" "$@" 2>"$T/refused.err"; then fail "accepted: $*"; fi
  grep -q "$what" "$T/refused.err" || fail "no reason ($what) for $*: $(cat "$T/refused.err")"
}
refused "needs dp_noise_multiplier > 0" --dp-adaptive-quantile 0.5
refused "dp_adaptive_quantile must be in" "${DP[@]}" --dp-adaptive-quantile 1.5
refused "sigma_b must exceed" "${DP[@]}" --dp-adaptive-quantile 0.5 --dp-count-noise 0.2
refused "dp_clip_lr must be" "${DP[@]}" --dp-adaptive-quantile 0.5 --dp-clip-lr 0
refused "outside its range \[0.1, 0.5\]" "${DP[@]}" --dp-adaptive-quantile 0.5 --dp-clip 1 --dp-clip-max 0.5
refused "dp_clip_min must be" "${DP[@]}" --dp-adaptive-quantile 0.5 --dp-clip-min 1e-9
refused "they need dp_adaptive_quantile" "${DP[@]}" --dp-clip-min 0.1

# run NAME CLIP ROUNDS [ARGS...]: a federation from clip CLIP until ROUNDS rounds completed.
run() {
  local name=$1 clip=$2 rounds=$3
  shift 3
  PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
  start_coordinator "${BASE[@]}" "${DP[@]}" --dp-adaptive-quantile 0.5 --dp-clip "$clip" --rounds "$rounds" \
    --listen "127.0.0.1:$PORT" --state "$T/$name" "$@"
  ADMIN=(--coordinator "$COORD_ADDR" --pki "$T/pki" --name root)
  for i in 0 1 2 3; do
    start_bg "client-$name-${NAMES[$i]}" "$FEDC" client --coordinator "$COORD_ADDR" --pki "$T/pki" \
      --name "${NAMES[$i]}" --data "idx:$T/img$i.idx,$T/lbl$i.idx" --model 784-10
  done
  wait_for bash -c "'$FEDC' status ${ADMIN[*]} --json | jq -e '.state == \"done\"' >/dev/null" 120 ||
    fail "$name: the federation did not finish: $("$FEDC" status "${ADMIN[@]}" --json)"
  "$FEDC" rounds "${ADMIN[@]}" --json | jq -c 'select(.outcome == "completed")' >"$T/$name.jsonl"
}

# Honest updates of this model measure about 0.5-3: 0.005 clips every one.
run up 0.005 10
# A client that cannot say whether it clipped is refused at check-in.
"$PROBE" --coordinator "$COORD_ADDR" --pki "$T/pki" --name e --mode call --protocol 1.2 \
  --method /fedc.v1.Coordinator/CheckIn --want 9 >"$T/old.json" || fail "a 1.2 client checked in: $(cat "$T/old.json")"
grep -q "adaptive clipping.*upgrade" "$T/old.json" || fail "no reason for the 1.2 client: $(cat "$T/old.json")"
jq -s -e 'length >= 4 and (map(.dp_noise) | all(. == 0.5))' "$T/up.jsonl" >/dev/null ||
  fail "rounds do not record the counted noise: $(cat "$T/up.jsonl")"
first=$(jq -s '.[0].dp_clip' "$T/up.jsonl")
last=$(jq -s '.[-1].dp_clip' "$T/up.jsonl")
n=$(wc -l <"$T/up.jsonl")
# Each round with every update clipped moves it by about exp(0.5 x 0.5) = 1.28.
awk "BEGIN{exit !($n >= 4 && $first > 0.0049 && $first < 0.0051 && $last > 2 * $first)}" ||
  fail "the clip did not rise from 0.005: $(jq -c '[.round, .dp_clip]' "$T/up.jsonl")"
saved=$(jq .clip "$T/up/dp.json")
# dp.json holds the clip after the last round's update: one step from the
# last round's, at most exp(0.5 x 0.5) either way. Upward in expectation,
# but the count is noisy (with 2-4 clients a round can read most of them as
# unclipped and step down), so its direction is not asserted.
awk "BEGIN{exit !($saved != $last && $saved <= $last * 1.2841 && $saved >= $last / 1.2841)}" ||
  fail "dp.json clip $saved is not one update past the last round's $last"

# A restart resumes from dp.json's clip, not from --dp-clip.
kill -TERM "$COORD_PID"
wait "$COORD_PID" || true
start_coordinator "${BASE[@]}" "${DP[@]}" --dp-adaptive-quantile 0.5 --dp-clip 0.005 --rounds 10 \
  --listen "127.0.0.1:$PORT" --state "$T/up"
# status prints the float clip with 4 digits: compare numbers, not strings.
got=$("$FEDC" status "${ADMIN[@]}" --json | jq -r '.dp | capture("clip (?<c>[0-9.e+-]+) adaptive").c')
awk "BEGIN{d=($got-$saved)/$saved; exit !(d < 1e-3 && d > -1e-3)}" ||
  fail "after a restart the clip is $got, not dp.json's $saved: $("$FEDC" status "${ADMIN[@]}" --json | jq .dp)"
kill -TERM "$COORD_PID"
wait "$COORD_PID" || true

# From far above every norm, it falls, down to --dp-clip-min and no further
# (each round falls by up to exp(0.5 x 0.5): 100 -> 78 -> 61 -> 60 at the fastest).
run down 100 10 --dp-clip-min 60
first=$(jq -s '.[0].dp_clip' "$T/down.jsonl")
low=$(jq -s 'map(.dp_clip) | min' "$T/down.jsonl")
n=$(wc -l <"$T/down.jsonl")
awk "BEGIN{exit !($n >= 4 && $first == 100 && $low == 60)}" ||
  fail "the clip did not fall from 100 to its minimum 60: $(jq -c '[.round, .dp_clip]' "$T/down.jsonl")"
"$FEDC" status "${ADMIN[@]}" --json | jq -r .dp | grep -q "adaptive in \[60, 1000\]" ||
  fail "status does not show the clip's range: $("$FEDC" status "${ADMIN[@]}" --json | jq .dp)"
"$FEDC" rounds "${ADMIN[@]}" >"$T/down.table"
grep -q "CLIP" "$T/down.table" && awk '$2 == "completed" && $NF == "60" {found = 1} END {exit !found}' "$T/down.table" ||
  fail "fedc rounds does not show the clip per round: $(cat "$T/down.table")"
assert_contains "$T/coord.log" "adaptive clipping: "
echo "clip up: $(jq -s -c "map(.dp_clip)" "$T/up.jsonl")"
echo "clip down: $(jq -s -c "map(.dp_clip)" "$T/down.jsonl")"
echo "PASS dp_adaptive"
