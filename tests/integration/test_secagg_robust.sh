#!/usr/bin/env bash
# Secure aggregation against misbehaving cohort members (issue 20, finding 2),
# over real processes and mutual TLS on 127.0.0.1. The cohort is every
# selectable client (--cohort 0 --cohort-fraction 1): complete graph, t a
# majority of each neighbourhood.
#
#   rounds 1-2  a..e honest, f sends bad unmask shares (fedc client
#               --byzantine-unmask): each round completes (its bad shares are
#               corrected), f alone is named in the round's record and the
#               audit log; after its second offence (--secagg-offence-limit 2)
#               f is left out of selection.
#   round 3     g and h join; f stays out (it is live, just not selected).
#               h advertises its keys under a certificate carrying its own
#               identity from another CA (--byzantine-advertise-cert): the
#               coordinator refuses it at submission (PERMISSION_DENIED, naming
#               the foreign CA), and the round completes with the six others
#               (a..e, g); no one is named.
# Before the fix: a bad unmask share among the first t abandoned the round,
# blaming an honest owner, and h's neighbours all aborted over its
# certificate ("only 1 clients left after the shares stage").
set -euo pipefail
. "$(dirname "$0")/lib.sh" "$@"
. "$(dirname "$0")/_data.sh"
. "$(dirname "$0")/_cohort.sh"
make_tmp
NAMES=(a b c d e f g h)

make_pki "$T/pki" sar "${NAMES[@]}"
# Another CA of the same federation name, issuing h's identity.
"$FEDC" pki init --dir "$T/foreign" --federation sar >/dev/null || fail "foreign pki init"
"$FEDC" pki issue --dir "$T/foreign" --role client --name h >/dev/null || fail "foreign pki issue"
make_idx "$T" 150 8

start_coordinator --pki "$T/pki" --federation sar --state "$T/state" --model 784-10 --secagg \
  --rounds 3 --min-clients 6 --cohort 0 --cohort-fraction 1 --min-updates 4 --poll-ms 100 --client-ttl-ms 1500 \
  --round-timeout-ms 6000 --secagg-stage-ms 2500 --secagg-offence-limit 2 --secagg-offence-exclude-s 3600 \
  --log info
ADMIN=(--coordinator "$COORD_ADDR" --pki "$T/pki" --name root)

round_rec() { "$FEDC" rounds "${ADMIN[@]}" --json | jq -c --argjson r "$1" 'select(.round == $r)'; }

# ---- rounds 1-2: f sends bad unmask shares ----
cohort_client f --byzantine-unmask
for n in a b c d e; do cohort_client "$n"; done
wait_rounds 2 90
for r in 1 2; do
  rec=$(round_rec "$r")
  jq -e '.outcome == "completed" and .selected == 6 and .participants == 6 and .secagg_blamed == ["f"]' \
    <<<"$rec" >/dev/null || fail "round $r with f's bad unmask shares: $rec"
done
assert_contains "$T/client-f.log" "research attacker"
grep -q "f sent bad unmask shares" "$T/coord.log" || fail "the coordinator did not name f"
# Never an honest client: no other name in any blame line.
if grep "sent bad unmask shares" "$T/coord.log" | grep -v ": f sent bad unmask shares" | grep -q .; then
  fail "an honest client was named: $(grep 'sent bad unmask shares' "$T/coord.log")"
fi
"$FEDC" audit show --state "$T/state" --kind secagg_blame --json >"$T/blame.jsonl"
jq -s -e 'length == 2 and all(.client == "f") and (map(.offences) == [1, 2]) and .[0].excluded_s == 0 and
  .[1].excluded_s == 3600' "$T/blame.jsonl" >/dev/null || fail "audit records of the blame: $(cat "$T/blame.jsonl")"

# ---- round 3: f is excluded; g joins, and h advertises its keys under a
# foreign CA's certificate. Paused (no round could start anyway: five
# selectable) until both have checked in, so the round has both.
"$FEDC" round pause "${ADMIN[@]}" >/dev/null || fail "pause"
cohort_client g
cohort_client h --byzantine-advertise-cert "$T/foreign/client-h.crt" --byzantine-advertise-key "$T/foreign/client-h.key"
wait_for bash -c "[ \"\$('$FEDC' status ${ADMIN[*]} --json | jq -r .clients_active)\" -ge 8 ]" 30 ||
  fail "g and h did not check in: $("$FEDC" status "${ADMIN[@]}" --json)"
"$FEDC" round resume "${ADMIN[@]}" >/dev/null || fail "resume"
wait_rounds 3 90
rec=$(round_rec 3)
jq -e '.outcome == "completed" and .selected == 7 and .participants == 6 and .secagg_remaining[0] == 6 and
  (has("secagg_blamed") | not)' <<<"$rec" >/dev/null || fail "round 3 without f, with h's foreign certificate: $rec"
# f kept checking in (it is live) but was not selected: the inputs are the six others'.
"$FEDC" audit show --state "$T/state" --kind update --json >"$T/updates.jsonl"
jq -s -e '[.[] | select(.round == 3 and .outcome == "accepted") | .client] | sort == ["a","b","c","d","e","g"]' \
  "$T/updates.jsonl" >/dev/null || fail "round 3's inputs: $(jq -c 'select(.round == 3)' "$T/updates.jsonl")"
grep "advertise stage message from h refused" "$T/coord.log" | grep -q "foreign CA" ||
  fail "no refusal naming the foreign CA: $(grep 'from h' "$T/coord.log" | head -3)"
grep -q "foreign CA" "$T/client-h.log" || fail "h was not told why: $(tail -5 "$T/client-h.log")"
# No honest client aborted over h's certificate.
for n in a b c d e g; do
  if grep -q "does not verify" "$T/client-$n.log"; then fail "client $n aborted over h's certificate"; fi
done
"$FEDC" rounds "${ADMIN[@]}" >"$T/rounds.txt"
assert_contains "$T/rounds.txt" "bad unmask shares: f"
kill -TERM "$COORD_PID"
wait "$COORD_PID" || fail "coordinator exited non-zero on SIGTERM"
jq -s -e '.[0].secagg_blamed == ["f"] and .[1].secagg_blamed == ["f"] and (.[2] | has("secagg_blamed") | not)' \
  "$T/state/rounds.jsonl" >/dev/null || fail "rounds.jsonl lacks secagg_blamed: $(cat "$T/state/rounds.jsonl")"
echo "PASS secagg_robust"
