#!/usr/bin/env bash
# The coordinator is SIGKILLed mid-federation and restarted on the same state
# directory: it continues from its last completed model version (same file,
# same SHA-256), never reuses a round id, and the clients, which kept retrying
# with backoff, finish the federation.
set -euo pipefail
. "$(dirname "$0")/lib.sh" "$@"
. "$(dirname "$0")/_data.sh"
make_tmp

make_pki "$T/pki" itest a b
make_idx "$T" 100 2
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
COORD_ARGS=(--pki "$T/pki" --federation itest --state "$T/state" --model 784-10 --rounds 6 --min-clients 2
  --cohort 2 --min-updates 2 --poll-ms 100 --listen "127.0.0.1:$PORT")

start_coordinator "${COORD_ARGS[@]}"
ADMIN=(--coordinator "127.0.0.1:$PORT" --pki "$T/pki" --name root)
for i in 0 1; do
  name=$(echo a b | cut -d' ' -f$((i+1)))
  start_bg "client-$name" "$FEDC" client --coordinator "127.0.0.1:$PORT" --pki "$T/pki" --name "$name" \
    --data "idx:$T/img$i.idx,$T/lbl$i.idx" --model 784-10
done
wait_for bash -c "'$FEDC' status ${ADMIN[*]} --json | jq -e '.rounds_completed >= 2' >/dev/null" 60 ||
  fail "first rounds did not complete"
kill -KILL "$COORD_PID"
set +e; wait "$COORD_PID" 2>/dev/null; set -e
V=$(jq -r .version "$T/state/state.json")
SHA=$(jq -r .sha256 "$T/state/state.json")
NEXT=$(jq -r .next_round "$T/state/state.json")
[ "$V" -ge 2 ] || fail "state.json version $V after 2 completed rounds"
echo "killed at version $V (next round $NEXT)"

start_coordinator "${COORD_ARGS[@]}"
assert_contains "$T/coord.log" "resuming from $T/state: model v$V"
# The restarted coordinator serves the same version with the same hash.
"$FEDC" model get "${ADMIN[@]}" --version "$V" --out "$T/v.safetensors" --json | jq -e --arg s "$SHA" '.sha256 == $s' \
  >/dev/null || fail "version $V changed across the restart"
wait_for bash -c "'$FEDC' status ${ADMIN[*]} --json | jq -e '.rounds_completed >= 6' >/dev/null" 90 ||
  fail "federation did not finish after the restart"
st=$("$FEDC" status "${ADMIN[@]}" --json)
[ "$(json_get "$st" global_version)" = 6 ] || fail "final version: $st"
# Round ids are unique and increasing; completed rounds produced versions 1..6 in order.
jq -s -e '[.[].round] as $r | ($r | unique | length) == ($r | length) and $r == ($r | sort)' "$T/state/rounds.jsonl" \
  >/dev/null || fail "round ids repeat: $(cat "$T/state/rounds.jsonl")"
jq -s -e '[.[] | select(.outcome == "completed") | .version] == [1,2,3,4,5,6]' "$T/state/rounds.jsonl" >/dev/null ||
  fail "versions not contiguous: $(cat "$T/state/rounds.jsonl")"
jq -s -e --argjson n "$NEXT" '[.[] | select(.round >= $n)] | length >= 1' "$T/state/rounds.jsonl" >/dev/null ||
  fail "no round after the restart used an id >= $NEXT"
echo "PASS restart"
