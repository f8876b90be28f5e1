#!/usr/bin/env bash
# A whole federation over real processes and mutual TLS on 127.0.0.1:
# coordinator + 3 clients (logistic regression on IID thirds of a small
# Fashion-MNIST-shaped data set made here), 3 rounds; then the admin CLI:
# status, rounds, model get (hash-verified), pause/resume, and role checks.
set -euo pipefail
. "$(dirname "$0")/lib.sh" "$@"
. "$(dirname "$0")/_data.sh"
make_tmp
PROBE="$BUILD_DIR/fedc_probe"

make_pki "$T/pki" itest a b c

# Tiny data: 3 x 200 examples of 784 features, written as plain IDX.
make_idx "$T" 200 3

start_coordinator --pki "$T/pki" --federation itest --state "$T/state" --model 784-10 \
  --rounds 3 --min-clients 3 --cohort 3 --min-updates 3 --poll-ms 100 --round-timeout-ms 30000 --log info
ADMIN=(--coordinator "$COORD_ADDR" --pki "$T/pki" --name root)
# Paused: clients connect but no round starts until resume.
"$FEDC" round pause "${ADMIN[@]}" --json | jq -e '.paused == true' >/dev/null || fail "pause"

for i in 0 1 2; do
  name=$(echo a b c | cut -d' ' -f$((i+1)))
  start_bg "client-$name" "$FEDC" client --coordinator "$COORD_ADDR" --pki "$T/pki" --name "$name" \
    --data "idx:$T/img$i.idx,$T/lbl$i.idx" --model 784-10 --eval-fraction 0 --json # all 200 train
done

wait_for bash -c "'$FEDC' status ${ADMIN[*]} --json | jq -e '.clients_active == 3' >/dev/null" 30 ||
  fail "clients did not check in"
sleep 1
"$FEDC" status "${ADMIN[@]}" --json | jq -e '.rounds_completed == 0 and .state == "waiting" and .paused' >/dev/null ||
  fail "a round ran while paused: $("$FEDC" status "${ADMIN[@]}" --json)"
"$FEDC" round resume "${ADMIN[@]}" --json | jq -e '.paused == false' >/dev/null || fail "resume"
wait_for bash -c "'$FEDC' status ${ADMIN[*]} --json | jq -e '.rounds_completed >= 3' >/dev/null" 60 ||
  fail "federation did not complete 3 rounds"

st=$("$FEDC" status "${ADMIN[@]}" --json)
[ "$(json_get "$st" state)" = done ] || fail "state is not done: $st"
[ "$(json_get "$st" global_version)" = 3 ] || fail "global version is not 3: $st"
[ "$(json_get "$st" model_params)" = 7850 ] || fail "model params: $st"

"$FEDC" rounds "${ADMIN[@]}" --json > "$T/rounds.jsonl"
[ "$(wc -l < "$T/rounds.jsonl")" = 3 ] || fail "expected 3 round records"
jq -e 'select(.outcome == "completed" and .participants == 3 and .examples == 600)' "$T/rounds.jsonl" \
  | grep -c round | grep -qx 3 || fail "round records lack participants/examples: $(cat "$T/rounds.jsonl")"
# Training actually learns: the mean train loss falls from round 1 to round 3.
l1=$(sed -n 1p "$T/rounds.jsonl" | jq .mean_train_loss); l3=$(sed -n 3p "$T/rounds.jsonl" | jq .mean_train_loss)
awk "BEGIN{exit !($l3 < $l1)}" || fail "train loss did not fall: $l1 -> $l3"

# The built-in trainer's evaluate callback ran on each downloaded global model,
# locally: accuracy on the client's own data rises from v0 to v2.
a0=$(grep '^{' "$T/client-a.log" | jq -r 'select(.event == "evaluated" and .model_version == 0) | .accuracy')
a2=$(grep '^{' "$T/client-a.log" | jq -r 'select(.event == "evaluated" and .model_version == 2) | .accuracy')
[ -n "$a0" ] && [ -n "$a2" ] || fail "no evaluated events in client-a.log"
awk "BEGIN{exit !($a2 > $a0)}" || fail "local accuracy did not rise: $a0 -> $a2"

# Every version is on disk as safetensors carrying its hash; model get verifies it.
for v in 0 1 2 3; do [ -f "$T/state/models/v00000$v.safetensors" ] || fail "missing model v$v"; done
"$FEDC" model get "${ADMIN[@]}" --version 2 --out "$T/v2.safetensors" --json > "$T/get.json"
sha=$(jq -r .sha256 "$T/get.json")
sed -n 2p "$T/rounds.jsonl" | jq -e --arg s "$sha" '.sha256 == $s' >/dev/null || fail "model v2 hash differs from round 2's"
"$FEDC" model get "${ADMIN[@]}" --version 2 --out "$T/v2.safetensors" 2>"$T/err" && fail "overwrote an existing file"

# The initial model is reachable explicitly (version 0), and "latest" is v3.
"$FEDC" model get "${ADMIN[@]}" --version 0 --out "$T/v0.safetensors" --json | jq -e '.version == 0' >/dev/null ||
  fail "model get --version 0 did not return the initial model"
"$FEDC" model get "${ADMIN[@]}" --out "$T/latest.safetensors" --json | jq -e '.version == 3' >/dev/null ||
  fail "model get without --version did not return the latest (v3)"
cmp -s "$T/v0.safetensors" "$T/latest.safetensors" && fail "v0 and v3 are the same file"

# Role checks over the wire: an admin cannot call client methods and vice versa.
"$PROBE" --coordinator "$COORD_ADDR" --pki "$T/pki" --name root --role admin --mode call \
  --method /fedc.v1.Coordinator/CheckIn --want 7 > "$T/role1.json" || fail "admin calling CheckIn: $(cat "$T/role1.json")"
grep -q "role 'client'" "$T/role1.json" || fail "PERMISSION_DENIED does not name the role: $(cat "$T/role1.json")"
"$PROBE" --coordinator "$COORD_ADDR" --pki "$T/pki" --name a --mode call \
  --method /fedc.v1.Admin/Status --want 7 > "$T/role2.json" || fail "client calling Status: $(cat "$T/role2.json")"
if "$FEDC" status --coordinator "$COORD_ADDR" --pki "$T/pki" --cert "$T/pki/client-a.crt" --key "$T/pki/client-a.key" \
  2> "$T/role3.err"; then fail "client certificate could call fedc status"; fi
grep -qi "role" "$T/role3.err" || fail "fedc status with a client cert: $(cat "$T/role3.err")"
# Unknown method and wrong protocol version.
"$PROBE" --coordinator "$COORD_ADDR" --pki "$T/pki" --name a --mode call --method /fedc.v1.Coordinator/Nope \
  --want 12 > /dev/null || fail "unknown method not UNIMPLEMENTED"
"$PROBE" --coordinator "$COORD_ADDR" --pki "$T/pki" --name a --mode call --method /fedc.v1.Coordinator/CheckIn \
  --protocol 2.0 --want 9 > "$T/ver.json" || fail "protocol 2.0 not FAILED_PRECONDITION: $(cat "$T/ver.json")"

# Clients were told DONE and exited: raise the budget and bring them back.
"$FEDC" round start --rounds 1 "${ADMIN[@]}" --json | jq -e '.round_budget == 4' >/dev/null || fail "start --rounds 1"
for i in 0 1 2; do
  name=$(echo a b c | cut -d' ' -f$((i+1)))
  start_bg "client2-$name" "$FEDC" client --coordinator "$COORD_ADDR" --pki "$T/pki" --name "$name" \
    --data "idx:$T/img$i.idx,$T/lbl$i.idx" --model 784-10 --json
done
wait_for bash -c "'$FEDC' status ${ADMIN[*]} --json | jq -e '.rounds_completed >= 4' >/dev/null" 60 ||
  fail "extra round did not run"

# Clean shutdown on SIGTERM: exits 0 and saves state.
kill -TERM "$COORD_PID"
wait "$COORD_PID" || fail "coordinator exited non-zero on SIGTERM"
jq -e '.version == 4 and .completed == 4' "$T/state/state.json" >/dev/null || fail "state.json: $(cat "$T/state/state.json")"
echo "PASS federation"
