#!/usr/bin/env bash
# Update anomaly detection over the real wire (issue 24, "Anomaly and drift
# detection"): a coordinator with --anomaly-policy exclude, five honest
# clients and one sign-flip attacker (`fedc client --byzantine signflip`),
# every live client selected each round (--cohort 0 --cohort-fraction 1).
#  - the attacker has the top score from round 1 and is flagged in round 2
#    (one round's score is capped, so one odd round flags no one):
#    rounds.jsonl and `fedc rounds --json` name it in the round's anomaly
#    statistics, with norms and cosines;
#  - the audit log has an "anomaly" record for it, action exclude, with its score
#    and the feature that gave it (a lone sign flip: not collusion);
#  - it is excluded: later rounds have 5 participants, its cool-down shows
#    in `fedc clients --json`, where its score is above the threshold and
#    every honest client's is below it and below the attacker's;
#  - the scores survive a restart (STATE/anomaly.json): `fedc clients` after
#    a restart shows the same attacker score;
#  - the metrics endpoint counts the flag and the exclusion;
#  - a client certificate calling `fedc clients` is refused for its role;
#  - a damaged anomaly.json refuses the start, naming it, and writes nothing.
set -euo pipefail
. "$(dirname "$0")/lib.sh" "$@"
. "$(dirname "$0")/_data.sh"
make_tmp

make_pki "$T/pki" itest a b c d e evil
make_idx "$T" 100 6
ADMIN=(--pki "$T/pki" --name root)
COORD_ARGS=(--pki "$T/pki" --federation itest --state "$T/state" --model 784-10 --rounds 5 --min-clients 5
  --cohort 0 --cohort-fraction 1 --min-updates 5 --poll-ms 100 --round-timeout-ms 30000 --pickup-timeout-ms 30000
  --anomaly-policy exclude --anomaly-threshold 5 --anomaly-cooldown-s 3600 --metrics-listen 127.0.0.1:0)

start_coordinator "${COORD_ARGS[@]}"
# Paused until all six have checked in, so round 1 has every one of them.
"$FEDC" round pause --coordinator "$COORD_ADDR" "${ADMIN[@]}" >/dev/null
start_bg client-evil "$FEDC" client --coordinator "$COORD_ADDR" --pki "$T/pki" --name evil \
  --data "idx:$T/img5.idx,$T/lbl5.idx" --model 784-10 --byzantine signflip
start_idx_clients a b c d e
wait_for bash -c "'$FEDC' clients --coordinator $COORD_ADDR ${ADMIN[*]} --json | jq -s -e 'length == 6' >/dev/null" 30 ||
  fail "not every client was seen: $("$FEDC" clients --coordinator "$COORD_ADDR" "${ADMIN[@]}")"
"$FEDC" round resume --coordinator "$COORD_ADDR" "${ADMIN[@]}" >/dev/null

wait_for bash -c "'$FEDC' status --coordinator $COORD_ADDR ${ADMIN[*]} --json | jq -e '.rounds_completed == 5' >/dev/null" 180 ||
  fail "5 rounds did not complete: $(cat "$T/state/rounds.jsonl" 2>/dev/null)"

R=$T/state/rounds.jsonl
jq -s -e '.[0].participants == 6 and .[0].anomaly.inputs == 6 and .[0].anomaly.flagged == []
  and .[0].anomaly.top.client == "evil" and (.[0].anomaly.norm | length) == 3' "$R" >/dev/null ||
  fail "round 1: $(head -n 1 "$R")"
jq -s -e '.[1].participants == 6 and .[1].anomaly.flagged == ["evil"] and .[1].anomaly.top.client == "evil"' "$R" \
  >/dev/null || fail "round 2 does not flag the attacker: $(cat "$R")"
jq -s -e '[.[2:][] | .participants == 5 and .anomaly.flagged == []] | all' "$R" >/dev/null ||
  fail "the attacker was not excluded after round 2 (or an honest client was flagged): $(cat "$R")"
"$FEDC" rounds --coordinator "$COORD_ADDR" "${ADMIN[@]}" --json > "$T/rounds.json"
jq -s -e '.[0].anomaly.top.client == "evil" and .[1].anomaly.flagged == ["evil"] and .[0].anomaly.top.score > 10
  and .[0].anomaly.cos_prev == null and .[1].anomaly.cos_prev != null' "$T/rounds.json" >/dev/null || fail "fedc rounds --json: $(cat "$T/rounds.json")"

grep '"kind":"anomaly"' "$T/state/audit.log" > "$T/anomaly.audit" || fail "no anomaly audit record"
jq -s -e 'length == 1 and .[0].client == "evil" and .[0].action == "exclude" and .[0].round == 2 and .[0].ewma >= 5
  and .[0].score > 0 and .[0].excluded_s == 3600 and (.[0].feature | IN("norm", "cos_agg", "cos_prev"))
  and (.[0].cos_nn | type == "number")' "$T/anomaly.audit" >/dev/null ||
  fail "anomaly audit records: $(cat "$T/anomaly.audit")"

"$FEDC" clients --coordinator "$COORD_ADDR" "${ADMIN[@]}" --json > "$T/clients.json"
jq -s -e 'length == 6' "$T/clients.json" >/dev/null || fail "fedc clients: not 6 identities: $(cat "$T/clients.json")"
jq -s -e '(map(select(.identity == "evil"))[0]) as $e | $e.score >= 5 and $e.flags == 1 and $e.rounds == 2
  and $e.excluded_until_unix_ms > 0 and ($e.addresses | index("ipv4:127.0.0.1")) != null
  and ([.[] | select(.identity != "evil") | .score < 5 and .score < $e.score and .rounds == 5
        and .excluded_until_unix_ms == 0 and .last_seen_unix_ms > 0] | all)' "$T/clients.json" >/dev/null ||
  fail "fedc clients --json: $(cat "$T/clients.json")"
"$FEDC" clients --coordinator "$COORD_ADDR" "${ADMIN[@]}" | grep -q "^evil .* yes " ||
  fail "fedc clients table: $("$FEDC" clients --coordinator "$COORD_ADDR" "${ADMIN[@]}")"

MPORT=$(grep -o 'metrics on [^ ]*:[0-9]*' "$T/coord.log" | head -n 1 | sed 's/.*://')
[ -n "$MPORT" ] || fail "no metrics address in the coordinator's log"
curl -s "http://127.0.0.1:$MPORT/metrics" > "$T/metrics.txt"
grep -qx "fedc_anomaly_flagged_total 1" "$T/metrics.txt" || fail "metrics: $(grep anomaly "$T/metrics.txt")"
grep -qx "fedc_anomaly_excluded 1" "$T/metrics.txt" || fail "metrics: $(grep anomaly "$T/metrics.txt")"

# The Clients view is for admins: a client certificate is refused for its role.
if "$FEDC" clients --coordinator "$COORD_ADDR" --pki "$T/pki" --cert "$T/pki/client-a.crt" \
  --key "$T/pki/client-a.key" 2> "$T/role.err"; then fail "a client certificate could call fedc clients"; fi
grep -q "role 'admin'" "$T/role.err" || fail "fedc clients with a client cert: $(cat "$T/role.err")"

# The scores survive a restart.
score=$(jq -s -r 'map(select(.identity == "evil"))[0].score' "$T/clients.json")
kill -TERM "$COORD_PID"
set +e; wait "$COORD_PID" 2>/dev/null; set -e
[ -s "$T/state/anomaly.json" ] || fail "no STATE/anomaly.json"
start_coordinator "${COORD_ARGS[@]}"
"$FEDC" clients --coordinator "$COORD_ADDR" "${ADMIN[@]}" --json > "$T/clients2.json"
jq -s -e --argjson s "$score" 'map(select(.identity == "evil"))[0] | .score == $s and .excluded_until_unix_ms > 0' \
  "$T/clients2.json" >/dev/null || fail "after a restart: $(cat "$T/clients2.json") (score was $score)"

# A damaged anomaly.json refuses the start in one line and changes nothing.
kill -TERM "$COORD_PID"
set +e; wait "$COORD_PID" 2>/dev/null; set -e
echo '{"identities":[{"id":"evil","ewma":"high"}]}' > "$T/state/anomaly.json"
sum=$(md5sum < "$T/state/audit.log")
if "$FEDC" coordinator "${COORD_ARGS[@]}" --listen 127.0.0.1:0 --metrics-listen "" 2> "$T/bad.err"; then
  fail "a coordinator started on a damaged anomaly.json"
fi
grep -q "anomaly.json: identity record 0 is malformed" "$T/bad.err" || fail "damaged anomaly.json: $(cat "$T/bad.err")"
[ "$(md5sum < "$T/state/audit.log")" = "$sum" ] || fail "a refused start wrote to the audit log"
echo "PASS anomaly"
