#!/usr/bin/env bash
# The aggregator tier, first slice (issue 23): a 3-member etcd cluster on
# 127.0.0.1 over mutual TLS, one leader (`fedc coordinator --etcd ... --aggregator-tier`),
# two aggregators (`fedc aggregator`, certificates `fedc pki issue --role
# aggregator`), six clients; all real processes, certificates from `fedc pki`.
#   1. Rounds publish, and every update the leader counted came through an
#      aggregator: each accepted "update" record of the audit log names one,
#      both aggregators carried updates, and the leader took "partial" records
#      only (no direct upload).
#   2. Role checks: an aggregator's certificate cannot check in as a client.
#      The client checks the aggregator's identity: a registry entry that
#      names ag1's address under another aggregator's name is refused in the
#      handshake by the clients sent there.
#   3. SIGKILL of one aggregator mid-federation: its lease expires, the leader
#      drops it from the registry (its clients' updates of the open round are
#      lost), and rounds keep publishing with the rest, all through ag1.
#   4. SIGTERM of the other: it exits 0 and revokes its lease (its key is gone
#      at once, the leader drops it).
#   5. `fedc status` (--json and text) on the leader lists both replicas (a
#      standby runs beside the leader) from etcd's P/replicas/ and each
#      aggregator with its load (clients assigned and counted, partials,
#      updates, last seen); a killed aggregator, then a stopped standby, is
#      gone from it.
# Skipped (77) without etcd/etcdctl (apt-get install etcd-server etcd-client).
set -euo pipefail
. "$(dirname "$0")/lib.sh" "$@"
. "$(dirname "$0")/_data.sh"
make_tmp

# ---- PKI, data, etcd: 3 members, clients over https with client certificates ----
. "$(dirname "$0")/_tier.sh"
tier_setup itest "a b c d e f" "ag1 ag2" 120 3
"$FEDC" pki verify --ca "$T/pki/ca.crt" --cert "$T/pki/aggregator-ag1.crt" >/dev/null ||
  fail "the aggregator certificate does not verify"

# What the tier refuses in this slice is refused at start, in one sentence.
"$FEDC" coordinator --pki "$T/pki" --federation itest --state "$T/x" --model 784-10 --aggregator-tier \
  --listen 127.0.0.1:0 >"$T/refused.log" 2>&1 && fail "--aggregator-tier without --etcd was accepted"
assert_contains "$T/refused.log" "--aggregator-tier cannot be combined with a coordinator without --etcd"

# ---- the leader ----
PL=$(free_port)
start_bg leader "$FEDC" coordinator --pki "$T/pki" --federation itest --state "$T/state" \
  --listen "127.0.0.1:$PL" --port-file "$T/leader.port" --model 784-10 --rounds 0 \
  --min-clients 6 --cohort 6 --min-updates 2 --poll-ms 100 --round-timeout-ms 6000 \
  "${ETCD_TLS[@]}" --etcd-lease-ttl 2 --aggregator-tier --log info
LEADER_PID=$BG_PID
wait_for test -s "$T/leader.port" 20 || fail "the leader never led: $(tail -5 "$T/leader.log")"
# A standby replica (same store): it registers in P/replicas/ and waits.
PS=$(free_port)
start_bg standby "$FEDC" coordinator --pki "$T/pki" --federation itest --state "$T/state" \
  --listen "127.0.0.1:$PS" --port-file "$T/standby.port" --model 784-10 --rounds 0 \
  --min-clients 6 --cohort 6 --min-updates 2 --poll-ms 100 --round-timeout-ms 6000 \
  "${ETCD_TLS[@]}" --etcd-lease-ttl 2 --aggregator-tier --log info
STANDBY_PID=$BG_PID
wait_for grep -q "standby: /fedc/itest/leader is held by" "$T/standby.log" 20 || fail "no standby"
status_json() { "$FEDC" status --coordinator "127.0.0.1:$PL" --pki "$T/pki" --name root --json; }

# ---- two aggregators ----
aggregator() { # NAME
  start_bg "agg-$1" "$FEDC" aggregator --pki "$T/pki" --name "$1" --coordinator "127.0.0.1:$PL" \
    --listen 127.0.0.1:0 --port-file "$T/$1.port" "${ETCD_TLS[@]}" --etcd-lease-ttl 2 --log info
  eval "PID_$1=$BG_PID"
}
aggregator ag1
aggregator ag2
wait_for test -s "$T/ag1.port" 20 || fail "ag1 did not start: $(tail -5 "$T/agg-ag1.log")"
wait_for test -s "$T/ag2.port" 20 || fail "ag2 did not start: $(tail -5 "$T/agg-ag2.log")"
wait_for "${ETCDCTL[@]}" get /fedc/itest/aggregators/ag2 --print-value-only 10 || fail "ag2 not registered"
"${ETCDCTL[@]}" get /fedc/itest/aggregators/ag1 --print-value-only | grep -q "^127.0.0.1:$(cat "$T/ag1.port") spiffe://itest/aggregator/ag1$" ||
  fail "ag1's registry value: $("${ETCDCTL[@]}" get /fedc/itest/aggregators/ag1 --print-value-only)"
wait_for grep -q "aggregator ag2 registered" "$T/leader.log" 10 || fail "the leader did not read ag2 from etcd"

# ---- 2a. an aggregator certificate cannot check in as a client ----
"$FEDC" client --coordinator "127.0.0.1:$PL" --ca "$T/pki/ca.crt" --cert "$T/pki/aggregator-ag1.crt" \
  --key "$T/pki/aggregator-ag1.key" --data "idx:$T/img0.idx,$T/lbl0.idx" --model 784-10 --eval-fraction 0 \
  --rounds 1 >"$T/agg-as-client.log" 2>&1 && fail "an aggregator certificate trained as a client"
grep -qi "role\|permission" "$T/agg-as-client.log" || fail "no role refusal: $(tail -3 "$T/agg-as-client.log")"

# ---- clients ----
start_clients "127.0.0.1:$PL" main

pointer() { "${ETCDCTL[@]}" get --print-value-only /fedc/itest/model | jq -r .version; }
wait_version() { # N TIMEOUT: until etcd's pointer is at N or more
  wait_for bash -c "v=\$($(printf '%q ' "${ETCDCTL[@]}") get --print-value-only /fedc/itest/model | jq -r .version); [ \"\${v:-0}\" -ge $1 ]" "$2"
}

# ---- 1. rounds publish, every counted update through an aggregator ----
wait_version 3 90 || fail "no version 3: $(tail -8 "$T/leader.log")"
check_through_aggregators() { # every accepted update names an aggregator; prints the aggregators seen
  python3 - "$T/state/audit.log" <<'PY'
import json, sys
seen, n = set(), 0
for line in open(sys.argv[1]):
    r = json.loads(line)
    if r["kind"] == "update" and r.get("outcome") == "accepted":
        n += 1
        if not r.get("aggregator"): sys.exit(f"update of {r.get('client')} round {r.get('round')} came in directly")
        seen.add(r["aggregator"])
if n == 0: sys.exit("no accepted update at all")
print(" ".join(sorted(seen)))
PY
}
seen=$(check_through_aggregators) || fail "audit: $seen"
[ "$seen" = "ag1 ag2" ] || fail "updates went through '$seen', not both aggregators"
grep -q '"kind":"partial"' "$T/state/audit.log" || fail "no partial in the audit log"
grep -q "partial from aggregator ag1 accepted" "$T/leader.log" || fail "no partial from ag1"
grep -q "partial from aggregator ag2 accepted" "$T/leader.log" || fail "no partial from ag2"
grep -q "taken" "$T/agg-ag2.log" || fail "ag2 took no upload"
! grep -q "update from .* accepted (" "$T/leader.log" || fail "the leader took an update directly"
"$FEDC" audit verify --state "$T/state" --pki "$T/pki" >"$T/verify.txt" 2>&1 || fail "audit chain: $(cat "$T/verify.txt")"

# ---- 5a. fedc status: the replicas in etcd, the aggregators with their load ----
st=$(status_json) || fail "fedc status failed"
python3 - "$st" "127.0.0.1:$PL" "127.0.0.1:$PS" "127.0.0.1:$(cat "$T/ag1.port")" "127.0.0.1:$(cat "$T/ag2.port")" <<'PY' ||
import json, sys, time
st = json.loads(sys.argv[1]); r = st["replica"]
lead, stand, a1, a2 = sys.argv[2:6]
reps = {m["address"]: m for m in r["replicas"]}
assert r["replicas_error"] == "", r["replicas_error"]
assert set(reps) == {lead, stand}, f"replicas listed: {r['replicas']}"
assert reps[lead]["role"] == "leader" and reps[stand]["role"] == "standby", r["replicas"]
assert reps[lead]["id"] == r["leader"], (reps[lead], r["leader"])
assert all(m["lease"] > 0 for m in r["replicas"]), r["replicas"]
assert r["aggregator_tier"] is True
aggs = {a["name"]: a for a in r["aggregators"]}
assert set(aggs) == {"ag1", "ag2"}, f"aggregators listed: {r['aggregators']}"
assert aggs["ag1"]["address"] == a1 and aggs["ag2"]["address"] == a2, r["aggregators"]
now = time.time() * 1000
for a in aggs.values():
    # Three rounds or more published, every update through a partial (1.): each
    # aggregator has submitted and been counted, and polled the leader lately.
    assert a["partials_accepted"] >= 1 and a["updates_counted"] >= a["partials_accepted"], a
    assert a["updates_counted"] <= 6 * st["round"], a
    assert 0 <= a["counted"] <= a["assigned"] <= 6, a
    assert 0 < a["last_seen_unix_ms"] <= now + 1000, a
    assert a["round"] <= st["round"], a
assert sum(a["assigned"] for a in aggs.values()) <= 6, r["aggregators"]
PY
  fail "status: $st"
"$FEDC" status --coordinator "127.0.0.1:$PL" --pki "$T/pki" --name root >"$T/status.txt" || fail "fedc status (text)"
grep -q "^replicas: *2 registered" "$T/status.txt" || fail "status text: $(cat "$T/status.txt")"
grep -q "^  standby .*(address 127.0.0.1:$PS)" "$T/status.txt" || fail "status text: $(cat "$T/status.txt")"
grep -q "^aggregators: *2 registered" "$T/status.txt" || fail "status text: $(cat "$T/status.txt")"
grep -q "^  ag2 at 127.0.0.1:$(cat "$T/ag2.port"): round [0-9]* [0-9]*/[0-9]* counted; [1-9][0-9]* partials" "$T/status.txt" ||
  fail "status text: $(cat "$T/status.txt")"

# ---- 3. SIGKILL of ag2: its lease expires, the round goes on with ag1 ----
V=$(pointer)
kill -KILL "$PID_ag2"
wait_for grep -q "aggregator ag2 left the registry" "$T/leader.log" 15 ||
  fail "the leader did not drop ag2: $(tail -5 "$T/leader.log")"
st=$(status_json) || fail "fedc status failed"
[ "$(jq -r '[.replica.aggregators[].name] | join(" ")' <<<"$st")" = ag1 ] || fail "status after ag2's kill: $st"
K=$(grep -c '"kind":"update"' "$T/state/audit.log")
wait_version $((V + 2)) 90 || fail "no progress after ag2 was killed: $(tail -8 "$T/leader.log")"
# Every update counted after the kill came through ag1, and a round closed
# without ag2's clients (assigned to it until its lease ran out: lost) with
# the rest (min-updates 2).
grep '"kind":"update"' "$T/state/audit.log" | tail -n +$((K + 1)) | grep -v '"aggregator":"ag1"' &&
  fail "an update counted after the kill did not come through ag1"
python3 - "$T/state/audit.log" "$V" <<'PY' || fail "no round completed without ag2's clients"
import json, sys
short = [r for r in map(json.loads, open(sys.argv[1]))
         if r["kind"] == "model" and r["version"] > int(sys.argv[2]) and 0 < r["updates"] < 6]
sys.exit(0 if short else "every round after the kill had all 6 updates")
PY
seen=$(check_through_aggregators) || fail "audit: $seen"

# ---- 2b. the client checks the aggregator's identity ----
# A registry entry naming ag1's address as aggregator "ag3": the clients
# assigned to it reach ag1, whose certificate is not ag3's: refused.
"${ETCDCTL[@]}" put /fedc/itest/aggregators/ag3 "127.0.0.1:$(cat "$T/ag1.port") spiffe://itest/aggregator/ag3" >/dev/null
wait_for bash -c "grep -q 'server certificate is spiffe://itest/aggregator/ag1, expected spiffe://itest/aggregator/ag3' $T/client-*.log" 60 ||
  fail "no client refused ag1's certificate under ag3's name"
! grep -q "update from .* taken" <(grep -h "ag3" "$T/agg-ag1.log") || fail "ag1 took an update meant for ag3"
"${ETCDCTL[@]}" del /fedc/itest/aggregators/ag3 >/dev/null
V=$(pointer)
wait_version $((V + 1)) 90 || fail "no progress once ag3 was gone: $(tail -8 "$T/leader.log")"
"$FEDC" audit verify --state "$T/state" --pki "$T/pki" >"$T/verify.txt" 2>&1 || fail "audit chain: $(cat "$T/verify.txt")"

# ---- SIGTERM: an aggregator stops cleanly and revokes its lease ----
kill -TERM "$PID_ag1"
rc=0
wait "$PID_ag1" || rc=$?
[ "$rc" = 0 ] || fail "ag1 exited $rc on SIGTERM: $(tail -5 "$T/agg-ag1.log")"
"${ETCDCTL[@]}" get /fedc/itest/aggregators/ag1 --print-value-only | grep -q . && fail "ag1's key outlived it"
wait_for grep -q "aggregator ag1 left the registry" "$T/leader.log" 5 || fail "the leader did not drop ag1"
st=$(status_json) || fail "fedc status failed"
[ "$(jq '.replica.aggregators | length' <<<"$st")" = 0 ] || fail "status after ag1 stopped: $st"
# ---- 5b. the standby stops: its lease is revoked, it is gone from the list ----
kill -TERM "$STANDBY_PID"
wait "$STANDBY_PID" || fail "the standby exited $? on SIGTERM"
st=$(status_json) || fail "fedc status failed"
[ "$(jq -r '[.replica.replicas[].role] | join(" ")' <<<"$st")" = leader ] || fail "status after the standby left: $st"
echo "PASS"
