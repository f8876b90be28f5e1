#!/usr/bin/env bash
# Coordinator replicas on etcd (issue 23): a 3-member etcd cluster on
# 127.0.0.1 over mutual TLS (certificates from `fedc pki`), two `fedc
# coordinator --etcd` replicas sharing one state directory, three clients
# given both replicas' addresses (a gRPC target list, pick_first: only the
# leader listens).
#   1. SIGKILL of the leader mid-federation: the standby takes over (lease TTL
#      2 s) and publishes the next version; no version is published twice or
#      skipped (etcd's pointer >= state.json >= the history, a model file for
#      every version, the audit log's signed manifests match the files;
#      `fedc ha verify` agrees, here and after each step below).
#   2. The killed replica comes back as a standby; SIGSTOP of the new leader
#      past its TTL: the standby takes over and publishes; SIGCONT: the old
#      leader finds itself deposed (its lease is gone: it never writes again),
#      logs it, stops serving and stands by again.
#      `fedc status` through the address list shows the new leader and etcd's health.
#   3. One etcd member killed: versions keep coming.
#   4. A second member killed (quorum lost): the leader is suspended (it
#      tells clients to retry: tests/integration/test_quorum.sh) for its
#      --etcd-quorum-hold of 3 s, then steps down; no version is published;
#      the member restarted: a replica leads and publishes. The shared audit chain
#      verifies, with a "leader" record for each takeover.
# Skipped (77) without etcd/etcdctl (apt-get install etcd-server etcd-client).
set -euo pipefail
. "$(dirname "$0")/lib.sh" "$@"
. "$(dirname "$0")/_data.sh"
make_tmp
make_pki "$T/pki" itest a b c

# ---- etcd: 3 members, clients over https with client certificates ----
. "$(dirname "$0")/_etcd.sh"
etcd_cluster 3
# plaintext to a non-loopback etcd is refused before anything starts
"$FEDC" coordinator --pki "$T/pki" --federation itest --state "$T/x" --etcd 10.0.0.1:2379 >"$T/refused.log" 2>&1 &&
  fail "a plaintext non-loopback etcd was accepted"
assert_contains "$T/refused.log" "not a loopback address"

# ---- two replicas sharing one state directory ----
make_idx "$T" 120 3
PA=$(free_port) PB=$(free_port)
replica() { # NAME PORT
  start_bg "rep-$1" "$FEDC" coordinator --pki "$T/pki" --federation itest --state "$T/state" \
    --listen "127.0.0.1:$2" --port-file "$T/$1.port" --model 784-10 --rounds 0 \
    --min-clients 2 --cohort 2 --min-updates 2 --poll-ms 100 --round-timeout-ms 8000 \
    --etcd "$ETCD" --etcd-lease-ttl 2 --etcd-quorum-hold 3 --etcd-ca "$T/pki/ca.crt" --etcd-cert "$T/pki/coordinator.crt" \
    --etcd-key "$T/pki/coordinator.key" --log info
  eval "PID_$1=$BG_PID"
}
replica A "$PA"
wait_for test -s "$T/A.port" 20 || fail "replica A never led: $(tail -5 "$T/rep-A.log")"
replica B "$PB"
wait_for grep -q "standby: /fedc/itest/leader is held by" "$T/rep-B.log" 20 || fail "B is not standing by"
[ ! -e "$T/B.port" ] || fail "the standby listens"

ADDR="127.0.0.1:$PA,127.0.0.1:$PB"
i=0
for n in a b c; do
  start_bg "client-$n" "$FEDC" client --coordinator "$ADDR" --pki "$T/pki" --name "$n" \
    --data "idx:$T/img$i.idx,$T/lbl$i.idx" --model 784-10 --eval-fraction 0 --log info
  i=$((i + 1))
done

# etcd's model pointer. etcdctl's 2 s command timeout can run out on a loaded
# machine (once under ASan in CI): a read that times out is tried again.
pointer() {
  local out i
  for i in 1 2 3; do
    out=$("${ETCDCTL[@]}" get --print-value-only /fedc/itest/model) && { jq -r .version <<<"$out"; return 0; }
    sleep 0.5
  done
  fail "etcd's model pointer could not be read"
}
wait_version() { # N TIMEOUT: until etcd's pointer is at N or more
  wait_for bash -c "v=\$($(printf '%q ' "${ETCDCTL[@]}") get --print-value-only /fedc/itest/model | jq -r .version); [ \"\${v:-0}\" -ge $1 ]" "$2"
}
wait_version 2 60 || fail "no version 2 from the first leader: $(tail -5 "$T/rep-A.log")"

# ---- 1. SIGKILL of the leader ----
V=$(pointer)
kill -KILL "$PID_A"
t0=$(date +%s.%N)
wait_for test -s "$T/B.port" 15 || fail "B did not take over: $(tail -8 "$T/rep-B.log")"
t1=$(date +%s.%N)
wait_version $((V + 1)) 60 || fail "B published nothing after taking over: $(tail -8 "$T/rep-B.log")"
t2=$(date +%s.%N)
echo "failover: leader SIGKILL -> standby serving $(awk "BEGIN{print $t1 - $t0}") s, -> next version $(awk "BEGIN{print $t2 - $t0}") s"
rm -f "$T/A.port"
# fedc status, through the same address list, answers from the new leader
st=$("$FEDC" status --coordinator "$ADDR" --pki "$T/pki" --name root --json) || fail "fedc status failed"
[ "$(json_get "$st" .replica.role)" = leader ] || fail "status: $st"
case $(json_get "$st" .replica.leader) in *"127.0.0.1:$PB") ;; *) fail "status names another leader: $st" ;; esac
[ "$(json_get "$st" .replica.etcd_ok)" = true ] || fail "status: etcd not healthy: $st"
"$FEDC" status --coordinator "$ADDR" --pki "$T/pki" --name root | grep -q "^etcd: *healthy" || fail "status text"

check_versions() { # every version published exactly once, in order; the store and etcd agree
  # Read in the reverse of the write order (pointer, then state.json, then
  # the history line): each may only be ahead of what was read before it.
  jq -r 'select(.outcome == "completed") | .version' "$T/state/rounds.jsonl" >"$T/versions"
  local s p want=1 v k
  s=$(jq -r .version "$T/state/state.json")
  p=$(pointer)
  [ "$p" -ge "$s" ] || fail "state.json at v$s is ahead of etcd's pointer at v$p"
  # Increasing, never repeated. A line may be missing: a leader killed after
  # state.json and before its history line loses that line (store.h), never
  # the version, whose file is checked below.
  local last=0
  while read -r v; do
    [ "$v" -gt "$last" ] || fail "a version published twice or out of order: $(tr '\n' ' ' <"$T/versions")"
    last=$v
  done <"$T/versions"
  [ "$last" -le "$s" ] || fail "rounds.jsonl has v$last, state.json only v$s"
  for k in $(seq 1 "$s"); do
    [ -e "$T/state/models/$(printf 'v%06d' "$k").safetensors" ] || fail "model file of v$k missing"
  done
  # The same, and each version's signed manifest, by the operator's checker (on the live federation).
  "$FEDC" ha verify --etcd "$ETCD" --etcd-ca "$T/pki/ca.crt" --etcd-cert "$T/pki/coordinator.crt" \
    --etcd-key "$T/pki/coordinator.key" --state "$T/state" --pki "$T/pki" >"$T/ha-verify.txt" 2>&1 ||
    fail "fedc ha verify: $(cat "$T/ha-verify.txt")"
}
check_versions

# ---- 2. SIGSTOP of the leader past its TTL ----
replica A "$PA"
wait_for grep -q "standby: /fedc/itest/leader is held by" "$T/rep-A.log" 20 || fail "A is not standing by again"
V=$(pointer)
kill -STOP "$PID_B"
wait_for test -s "$T/A.port" 15 || { kill -CONT "$PID_B"; fail "A did not take over from the stopped B"; }
# A frozen leader keeps its TCP connections: clients' calls in flight to B
# end only at their deadline (30 s for a check-in) before they reach A, so
# on a loaded machine the first round under A can take most of a minute.
wait_version $((V + 1)) 120 || { kill -CONT "$PID_B"; fail "A published nothing: $(tail -8 "$T/rep-A.log")"; }
kill -CONT "$PID_B"
wait_for grep -q "back to standby" "$T/rep-B.log" 15 || fail "B did not step down: $(tail -8 "$T/rep-B.log")"
grep -q "deposed" "$T/rep-B.log" || fail "B did not log that it was deposed"
wait_for bash -c "[ ! -e '$T/B.port' ]" 5 || fail "B still announces its port"
wait_version $((V + 2)) 60 || fail "A stopped publishing after B came back"
check_versions
wait_for grep -q "standby: /fedc/itest/leader is held by" "$T/rep-B.log" 20 || fail "B is not standing by"

# ---- 3. one etcd member killed: no stall ----
kill -KILL "${ETCD_PIDS[0]}"
V=$(pointer)
wait_version $((V + 2)) 60 || fail "no progress with one etcd member down: $(tail -8 "$T/rep-A.log")"
check_versions

# ---- 4. quorum lost: no publish, and the federation resumes by itself ----
kill -KILL "${ETCD_PIDS[1]}"
wait_for grep -q "suspended, publishing nothing" "$T/rep-A.log" 20 || fail "A was not suspended without quorum"
wait_for bash -c "[ ! -e '$T/A.port' ] && [ ! -e '$T/B.port' ]" 20 || fail "a replica still serves without etcd quorum"
S=$(jq -r .version "$T/state/state.json")
wait_for grep -q "campaigning" "$T/rep-A.log" 5 || fail "A is not campaigning"
sleep 2 # without quorum nothing may move: state.json must still be at v$S below
[ "$(jq -r .version "$T/state/state.json")" = "$S" ] || fail "a version was published without etcd quorum"
start_etcd 1
wait_for bash -c "[ -e '$T/A.port' ] || [ -e '$T/B.port' ]" 30 || fail "no replica leads after quorum returned"
wait_version $((S + 2)) 60 || fail "no progress after quorum returned"
check_versions
# One writer at a time: the shared audit chain is whole across every takeover.
"$FEDC" audit verify --state "$T/state" --pki "$T/pki" >"$T/verify.txt" 2>&1 || fail "audit chain: $(cat "$T/verify.txt")"
[ "$(grep -c '"kind":"leader"' "$T/state/audit.log")" -ge 3 ] || fail "takeovers are not in the audit log"
# No version published twice: each "model" record counts unless a
# "model_failed" follows, or a new leader took over with etcd's pointer below
# it (its announcer lost the election before the pointer moved).
python3 - "$T/state/audit.log" <<'PY' || fail "a version was announced twice without failing"
import json, sys
live = {}
for line in open(sys.argv[1]):
    r = json.loads(line)
    if r["kind"] == "model":
        live[r["version"]] = live.get(r["version"], 0) + 1
        if live[r["version"]] > 1: sys.exit(f"v{r['version']} announced again at seq {r['seq']}")
    elif r["kind"] == "model_failed":
        live[r["version"]] = 0
    elif r["kind"] == "leader" and r.get("pointer_version") is not None:
        for v in live:
            if v > r["pointer_version"]: live[v] = 0
PY
echo "PASS"
