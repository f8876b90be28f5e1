#!/usr/bin/env bash
# The coordinator's hash-chained audit log (STATE/audit.log) over real
# processes and mutual TLS on 127.0.0.1:
#   1. a round with two clients and a probe in the cohort that sends refused
#      updates (over the clip norm, a bad loss) and one accepted; an admin
#      pauses and resumes. `fedc audit verify` passes; `fedc audit show --json`
#      has each certificate's first contact once (with its SHA-256), every
#      refused update with its reason, every accepted one with payload SHA-256
#      and norm, the published version with its parent, the admin actions,
#      start and stop.
#   2. a restart on the same state: the chain goes on (one log, verified
#      whole), the clients' certificates are not recorded again, version 2
#      names version 1 as its parent; a second coordinator on the same state
#      is refused (it would fork the chain); a protocol 1.4 client is
#      refused at check-in (it knows only manifest format 1).
#      `show --kind model --last 2` gives the last two models (issue 21:
#      --last was applied before --kind), a misspelt --kind is refused, and
#      `stop` has start's fields.
#   3. tampering with copies: an edited record, two records swapped, one
#      removed, the file cut mid-record: `fedc audit verify` exits 1 and names
#      the line; the coordinator refuses to start on the edited copy.
#   4. anchoring (security review, finding 7): every version's signed
#      manifest names the log's head when it was signed and the model record
#      names the manifest: `verify --pki` passes and reports the records
#      after the newest signature as unanchored. The review's rewrite (records
#      dropped, the rest re-chained) passes the chain check alone and fails
#      `verify --pki` naming the record; so does a log cut before the newest
#      anchor.
#   5. a crafted record with a newline and ESC in a field (the chain is
#      unkeyed: anyone can write one): `show` prints them escaped.
set -euo pipefail
. "$(dirname "$0")/lib.sh" "$@"
. "$(dirname "$0")/_data.sh"
make_tmp
PROBE="$BUILD_DIR/fedc_probe"
make_pki "$T/pki" aud a b evil
make_idx "$T" 100 2
ADMIN=(--pki "$T/pki" --name root)
S=$T/state

stop_all() {
  kill -TERM "$COORD_PID"
  wait "$COORD_PID" || fail "coordinator exited non-zero on SIGTERM"
  kill -KILL "${CL[@]}" 2>/dev/null || true
}
show() { "$FEDC" audit show --state "$S" --json; }

# ---- 1. a round with refusals and admin actions ----
start_coordinator --pki "$T/pki" --federation aud --state "$S" --model 784-10 --rounds 1 --min-clients 3 \
  --cohort 3 --min-updates 2 --poll-ms 100 --round-timeout-ms 30000 --pickup-timeout-ms 30000
start_idx_clients a b
start_bg probe "$PROBE" --coordinator "$COORD_ADDR" --pki "$T/pki" --name evil --mode poison
PROBE_PID=$BG_PID
wait "$PROBE_PID" || fail "probe: $(grep '"ok":false' "$T/probe.log")"
wait_completed 1 || fail "round 1 did not complete"
"$FEDC" round pause --coordinator "$COORD_ADDR" "${ADMIN[@]}" >/dev/null
"$FEDC" round resume --coordinator "$COORD_ADDR" "${ADMIN[@]}" >/dev/null
stop_all

"$FEDC" audit verify --state "$S" >"$T/v1.txt" || fail "verify after round 1: $(cat "$T/v1.txt")"
assert_contains "$T/v1.txt" "chain intact"
show >"$T/a1.jsonl"
n=$(wc -l <"$T/a1.jsonl")
"$FEDC" audit verify --state "$S" --json | jq -e --argjson n "$n" '.intact and .records == $n' >/dev/null ||
  fail "verify --json: $("$FEDC" audit verify --state "$S" --json)"
for who in a b evil root; do
  c=$(jq -s --arg w "$who" '[.[] | select(.kind == "contact" and .name == $w and (.cert_sha256 | length) == 64)] | length' "$T/a1.jsonl")
  [ "$c" = 1 ] || fail "first contact of $who recorded $c times"
done
jq -s -e '[.[] | select(.kind == "update" and .client == "evil" and .outcome == "refused")] |
  length >= 3 and any(.reason | test("clip norm")) and any(.reason | test("train_loss"))' "$T/a1.jsonl" >/dev/null ||
  fail "the probe's refused updates are not on record: $(grep evil "$T/a1.jsonl")"
jq -s -e '[.[] | select(.kind == "update" and .outcome == "accepted" and .round == 1 and (.sha256 | length) == 64 and .norm > 0)] |
  map(.client) | sort == ["a", "b", "evil"]' "$T/a1.jsonl" >/dev/null || fail "accepted updates of round 1 missing"
v1=$(jq -r 'select(.round == 1) | .sha256' "$S/rounds.jsonl")
v0=$(jq -s -r '.[] | select(.kind == "model" and .version == 0) | .sha256' "$T/a1.jsonl")
jq -s -e --arg v1 "$v1" --arg v0 "$v0" 'any(.[]; .kind == "model" and .version == 1 and .round == 1 and .sha256 == $v1 and .parent == $v0)' \
  "$T/a1.jsonl" >/dev/null || fail "model v1 (sha $v1, parent $v0) not on record"
jq -s -e '[.[] | select(.kind == "admin") | .action] == ["pause", "resume"]' "$T/a1.jsonl" >/dev/null ||
  fail "admin actions: $(grep admin "$T/a1.jsonl")"
jq -s -e '(.[0].kind == "model") and any(.[]; .kind == "start") and (last.kind == "stop")' "$T/a1.jsonl" >/dev/null ||
  fail "start/stop records"
# Every accepted update was on record before the model that used it.
jq -s -e '(map(.kind == "update" and .outcome == "accepted" and .round == 1) | rindex(true)) <
  (map(.kind == "model" and .version == 1) | index(true))' "$T/a1.jsonl" >/dev/null || fail "update recorded after its model"

# ---- 2. a restart continues the chain ----
start_coordinator --pki "$T/pki" --federation aud --state "$S" --model 784-10 --rounds 2 --min-clients 2 \
  --cohort 2 --min-updates 2 --poll-ms 100 --round-timeout-ms 30000
start_idx_clients a b
# A second coordinator on the same state would fork the chain: refused.
rc=0
timeout 20 "$FEDC" coordinator --pki "$T/pki" --federation aud --state "$S" --model 784-10 --listen 127.0.0.1:0 \
  >/dev/null 2>"$T/second.err" || rc=$?
[ "$rc" != 0 ] && grep -q "another coordinator is running on this state directory" "$T/second.err" ||
  fail "a second coordinator on the same state: status $rc, $(cat "$T/second.err")"
# A 1.4 client checks manifests but knows only format 1: refused at check-in.
"$PROBE" --coordinator "$COORD_ADDR" --pki "$T/pki" --name evil --mode call --method /fedc.v1.Coordinator/CheckIn \
  --protocol 1.4 --want 9 >"$T/old.json" || fail "a 1.4 client was not refused: $(cat "$T/old.json")"
grep -q "signed in format 2 (fedc protocol 1.5); the client speaks 1.4" "$T/old.json" ||
  fail "1.4 refusal unclear: $(cat "$T/old.json")"
wait_completed 2 || fail "round 2 did not complete after the restart"
stop_all
"$FEDC" audit verify --state "$S" >"$T/v2.txt" || fail "verify after the restart: $(cat "$T/v2.txt")"
show >"$T/a2.jsonl"
[ "$(wc -l <"$T/a2.jsonl")" -gt "$n" ] || fail "nothing appended after the restart"
cmp -s <(head -n "$n" "$T/a2.jsonl") "$T/a1.jsonl" || fail "the restart rewrote earlier records"
[ "$(jq -s '[.[] | select(.kind == "start")] | length' "$T/a2.jsonl")" = 2 ] || fail "not two start records"
for who in a b; do
  [ "$(jq -s --arg w "$who" '[.[] | select(.kind == "contact" and .name == $w)] | length' "$T/a2.jsonl")" = 1 ] ||
    fail "$who's certificate recorded again after the restart"
done
v2parent=$(jq -s -r '.[] | select(.kind == "model" and .version == 2) | .parent' "$T/a2.jsonl")
[ "$v2parent" = "$v1" ] || fail "model v2's parent $v2parent is not v1 $v1"
"$FEDC" audit show --state "$S" --last 1 --json | jq -e '.kind == "stop"' >/dev/null || fail "show --last 1"
[ "$("$FEDC" audit show --state "$S" --last 3 --json | wc -l)" = 3 ] || fail "show --last 3"
"$FEDC" audit show --state "$S" --kind model >"$T/models.txt"
[ "$(wc -l <"$T/models.txt")" = 3 ] || fail "show --kind model: $(cat "$T/models.txt")"

# --last counts the records --kind selects; a misspelt kind is refused.
"$FEDC" audit show --state "$S" --kind model --last 2 --json >"$T/last2.jsonl"
jq -s -e 'map(.version) == [1, 2]' "$T/last2.jsonl" >/dev/null ||
  fail "show --kind model --last 2: $(cat "$T/last2.jsonl")"
rc=0
"$FEDC" audit show --state "$S" --kind updte >"$T/kind.out" 2>"$T/kind.err" || rc=$?
[ "$rc" = 2 ] && grep -q "unknown --kind 'updte' (contact, admin, update, " "$T/kind.err" ||
  fail "--kind updte: status $rc, $(cat "$T/kind.err" "$T/kind.out")"
# stop has the fields docs/operations.md lists for start and stop.
jq -s -e 'map(select(.kind == "stop")) | length == 2 and all(.federation == "aud" and .aggregator == "fedavg" and
  (.sha256 | length) == 64) and map(.version) == [1, 2]' "$T/a2.jsonl" >/dev/null ||
  fail "stop records: $(grep '"stop"' "$T/a2.jsonl")"

# ---- 3. tampering ----
L=$S/audit.log
tamper() { # NAME: copy the state to $T/NAME, return the copy's log path in $C
  rm -rf "$T/$1"
  cp -r "$S" "$T/$1"
  C=$T/$1/audit.log
}
broken() { # NAME LINE WORDS
  local rc=0
  "$FEDC" audit verify --state "$T/$1" >"$T/$1.txt" || rc=$?
  [ "$rc" = 1 ] || fail "$1: verify exited $rc: $(cat "$T/$1.txt")"
  grep -q "BROKEN at line $2: .*$3" "$T/$1.txt" || fail "$1: want line $2 ($3): $(cat "$T/$1.txt")"
}
ln=$(grep -n '"outcome":"refused"' "$L" | head -1 | cut -d: -f1)
tamper edited
sed -i "${ln}s/\"outcome\":\"refused\"/\"outcome\":\"accepted\"/" "$C"
broken edited "$ln" "was changed"
tamper swapped
awk 'NR == 3 { keep = $0; next } NR == 4 { print; print keep; next } { print }' "$L" >"$C"
broken swapped 3 "missing or out of order"
tamper removed
sed -i '5d' "$C"
broken removed 5 "missing or out of order"
tamper cut
head -c $(($(stat -c %s "$L") - 20)) "$L" >"$C"
broken cut "$(wc -l <"$L")" "incomplete"
rc=0
timeout 20 "$FEDC" coordinator --pki "$T/pki" --federation aud --state "$T/edited" --model 784-10 \
  --listen 127.0.0.1:0 >/dev/null 2>"$T/edited-start.err" || rc=$?
[ "$rc" != 0 ] && grep -q "audit log .* is broken at line $ln" "$T/edited-start.err" ||
  fail "coordinator started on a tampered audit log (status $rc): $(cat "$T/edited-start.err")"

# ---- 4. anchoring: the signed manifests against the log ----
# Each model record names its manifest; each manifest names the head before it.
jq -s -e '[.[] | select(.kind == "model")] | length == 3 and all((.manifest_sha256 | length) == 64)' "$T/a2.jsonl" \
  >/dev/null || fail "model records without manifest_sha256: $(grep '"model"' "$T/a2.jsonl")"
manifest_text() { sed -n '/BEGIN FEDC SIGNED MESSAGE/,/END FEDC SIGNED MESSAGE/p' "$1" | sed '1d;$d' | base64 -d; }
manifest_text "$S/models/v000002.manifest" | grep -q '^audit [0-9]* [0-9a-f]\{64\}$' ||
  fail "v2's manifest has no audit line: $(manifest_text "$S/models/v000002.manifest")"
"$FEDC" audit verify --state "$S" --pki "$T/pki" >"$T/anch.txt" || fail "verify --pki: $(cat "$T/anch.txt")"
grep -q "anchored by signed manifests (the newest: model v2; 3 manifests, 3 with an anchor)" "$T/anch.txt" ||
  fail "verify --pki: $(cat "$T/anch.txt")"
total=$(wc -l <"$L")
"$FEDC" audit verify --state "$S" --pki "$T/pki" --json >"$T/anch.json"
jq -e --argjson n "$total" '.intact and .anchors.anchored_by_version == 2 and .anchors.signed_manifests == 3 and
  .anchors.anchored_records > 1 and .anchors.unanchored_records >= 2 and
  .anchors.anchored_records + .anchors.unanchored_records == $n' "$T/anch.json" >/dev/null ||
  fail "verify --pki --json: $(cat "$T/anch.json")"
# The records after the newest anchor are v2's model record onwards.
anchored=$(jq .anchors.anchored_records "$T/anch.json")
sed -n "$((anchored + 1))p" "$L" | jq -e '.kind == "model" and .version == 2' >/dev/null ||
  fail "record $((anchored + 1)) (the first unanchored) is not v2's model record"
# fedc model verify shows the anchor a version carries: record and head.
"$FEDC" model verify "$S/models/v000002.safetensors" --manifest "$S/models/v000002.manifest" --pki "$T/pki" --json \
  >"$T/mv.json" || fail "model verify v2: $(cat "$T/mv.json")"
jq -e --argjson s "$anchored" --arg h "$(sed -n "${anchored}p" "$L" | jq -r .hash)" \
  '.ok and .audit.records == $s and .audit.head == $h' "$T/mv.json" >/dev/null || fail "model verify: $(cat "$T/mv.json")"

# rechain < LINES > LOG: renumber and re-chain records, as someone with write
# access to the state directory can (the chain has no key).
rechain() {
  python3 -c '
import hashlib, json, sys
prev = "0" * 64
for seq, line in enumerate(sys.stdin, 1):
    rec = json.loads(line)
    del rec["hash"], rec["prev"]
    rec["seq"] = seq
    rec["prev"] = prev
    body = json.dumps(rec, separators=(",", ":"))[:-1]
    prev = hashlib.sha256(body.encode()).hexdigest()
    sys.stdout.write(body + ",\"hash\":\"" + prev + "\"}\n")
'
}
# The review's rewrite: keep 2 records at each end, drop the rest, re-chain.
tamper rechained
{ head -n 2 "$L"; tail -n 3 "$L"; } | rechain >"$C"
"$FEDC" audit verify --state "$T/rechained" >"$T/rechained.txt" || fail "re-chained log: $(cat "$T/rechained.txt")"
assert_contains "$T/rechained.txt" "5 records, chain intact" # the chain alone cannot tell
rc=0
"$FEDC" audit verify --state "$T/rechained" --pki "$T/pki" >"$T/rechained.txt" || rc=$?
[ "$rc" = 1 ] && grep -q "REWRITTEN: .*was rewritten\|REWRITTEN: .*has only 5 records" "$T/rechained.txt" ||
  fail "re-chained log with --pki: status $rc, $(cat "$T/rechained.txt")"
# Cut off before v2's anchor (whole records, a valid shorter chain).
tamper shortened
head -n $((anchored - 1)) "$L" >"$C"
"$FEDC" audit verify --state "$T/shortened" >/dev/null || fail "a shortened log is still a valid chain"
rc=0
"$FEDC" audit verify --state "$T/shortened" --pki "$T/pki" --json >"$T/shortened.json" || rc=$?
[ "$rc" = 1 ] && jq -e --argjson s "$anchored" '(.intact | not) and (.problem | test("anchors record \($s) but the log has only"))' \
  "$T/shortened.json" >/dev/null || fail "shortened log with --pki: status $rc, $(cat "$T/shortened.json")"
# A signed manifest under another version's name is named.
tamper badman
cp "$T/badman/models/v000001.manifest" "$T/badman/models/v000002.manifest"
rc=0
"$FEDC" audit verify --state "$T/badman" --pki "$T/pki" >"$T/badman.txt" || rc=$?
[ "$rc" = 1 ] && grep -q "v000002.manifest: it is the manifest of model v1" "$T/badman.txt" ||
  fail "v1's manifest as v2's: status $rc, $(cat "$T/badman.txt")"

# ---- 5. what a record says is shown escaped ----
tamper crafted
python3 -c '
import json, sys
rec = json.loads(open(sys.argv[1]).readline())
rec["reason"] = "x\n2026-01-01T00:00:00.000Z INFO  admin: forged line\x1b[31m\u009b"
print(json.dumps(rec, separators=(",", ":")))
' "$L" | rechain >"$C"
"$FEDC" audit show --state "$T/crafted" >"$T/crafted.txt" || fail "show crafted: $(cat "$T/crafted.txt")"
[ "$(wc -l <"$T/crafted.txt")" = 1 ] || fail "a record's newline started a line: $(cat -v "$T/crafted.txt")"
if grep -q $'\x1b\|\xc2\x9b' "$T/crafted.txt"; then fail "show printed a raw ESC or CSI: $(cat -v "$T/crafted.txt")"; fi
grep -qF 'reason=x\n2026-01-01T00:00:00.000Z INFO  admin: forged line\x1b[31m\u009b' "$T/crafted.txt" ||
  fail "show: $(cat -v "$T/crafted.txt")"
echo "audit: $(wc -l <"$L") records over two runs, $anchored anchored by signed manifests; edits, swaps, removals, cuts and re-chaining detected"
echo "PASS audit"
