#!/usr/bin/env bash
# etcd loses quorum under coordinator replicas (issue 23): a 3-member etcd
# cluster on 127.0.0.1 with mutual TLS on client and peer ports from a CA of
# its own (the recipe of deploy/k8s-ha/kustomization.yaml: members with one
# coordinator-role certificate, the coordinator with a client-role one), two `fedc coordinator --etcd` replicas sharing one state
# directory (lease TTL 2 s, --etcd-quorum-hold 60), two clients given both
# addresses.
#   0. Probes: the standby answers /healthz and /readyz ("standby", 200) on
#      its metrics address without listening on the client port; the
#      leader's /readyz says "ready" (deploy/k8s-ha's probes rely on both).
#   1. Two members killed: the leader's lease cannot be renewed; it is
#      suspended (logged; `fedc status` says "suspended"), keeps listening,
#      and answers check-ins UNAVAILABLE with a retry time, which the client
#      logs and waits out. While quorum is lost no version is published: no
#      model file, no state.json change, no "model" audit record.
#   2. Both members back: etcd renews the lease, the same replica leads again
#      (same fencing revision, no takeover; or, when quorum was lost under
#      its pointer write, it steps down once etcd answers and an election
#      resumes), and versions continue with no gap: every version from 1 to the last has its file and one completed
#      line in rounds.jsonl, state.json and etcd's pointer agree, and the
#      audit chain verifies.
#   3. `fedc ha verify` finds etcd and the store consistent (live, then
#      stopped), and catches a pointer with another SHA-256 and a missing
#      model file.
# Skipped (77) without etcd/etcdctl (apt-get install etcd-server etcd-client).
set -euo pipefail
. "$(dirname "$0")/lib.sh" "$@"
. "$(dirname "$0")/_data.sh"
command -v etcd >/dev/null && command -v etcdctl >/dev/null ||
  { echo "SKIP: etcd and etcdctl are needed (apt-get install etcd-server etcd-client)"; exit 77; }
make_tmp

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

make_pki "$T/pki" qtest a b
E="$T/etcd-ca"
"$FEDC" pki init --dir "$E" --federation fedc-etcd >/dev/null || fail "etcd CA"
"$FEDC" pki issue --dir "$E" --role coordinator --name etcd >/dev/null || fail "etcd member certificate"
"$FEDC" pki issue --dir "$E" --role client --name coordinator >/dev/null || fail "etcd client certificate"

EC=() EP=()
for i in 1 2 3; do EC+=("$(free_port)"); EP+=("$(free_port)"); done
CLUSTER="e1=https://127.0.0.1:${EP[0]},e2=https://127.0.0.1:${EP[1]},e3=https://127.0.0.1:${EP[2]}"
ETCD_PIDS=()
start_etcd() { # index 0..2 (a restarted member finds its data directory and rejoins)
  local i=$1 n=$(($1 + 1))
  start_bg "etcd$n" etcd --name "e$n" --data-dir "$T/etcd$n" \
    --listen-client-urls "https://127.0.0.1:${EC[$i]}" --advertise-client-urls "https://127.0.0.1:${EC[$i]}" \
    --listen-peer-urls "https://127.0.0.1:${EP[$i]}" --initial-advertise-peer-urls "https://127.0.0.1:${EP[$i]}" \
    --initial-cluster "$CLUSTER" --initial-cluster-state new --initial-cluster-token "fedc-q-$$" \
    --client-cert-auth --trusted-ca-file "$E/ca.crt" --cert-file "$E/coordinator-etcd.crt" \
    --key-file "$E/coordinator-etcd.key" --peer-client-cert-auth --peer-trusted-ca-file "$E/ca.crt" \
    --peer-cert-file "$E/coordinator-etcd.crt" --peer-key-file "$E/coordinator-etcd.key"
  ETCD_PIDS[$i]=$BG_PID
}
for i in 0 1 2; do start_etcd $i; done
ETCD="127.0.0.1:${EC[0]},127.0.0.1:${EC[1]},127.0.0.1:${EC[2]}"
ETCDCTL=(etcdctl --endpoints "$ETCD" --cacert "$E/ca.crt" --cert "$E/client-coordinator.crt"
  --key "$E/client-coordinator.key" --command-timeout 2s)
wait_for "${ETCDCTL[@]}" endpoint health 30 || fail "etcd cluster not healthy"

make_idx "$T" 120 2
PA=$(free_port) PB=$(free_port) MA=$(free_port) MB=$(free_port)
replica() { # NAME PORT METRICS_PORT
  start_bg "rep-$1" "$FEDC" coordinator --pki "$T/pki" --federation qtest --state "$T/state" \
    --listen "127.0.0.1:$2" --metrics-listen "127.0.0.1:$3" --port-file "$T/$1.port" --model 784-10 --rounds 0 \
    --min-clients 2 --cohort 2 --min-updates 2 --poll-ms 100 --round-timeout-ms 8000 \
    --etcd "$ETCD" --etcd-lease-ttl 2 --etcd-quorum-hold 60 --etcd-ca "$E/ca.crt" \
    --etcd-cert "$E/client-coordinator.crt" --etcd-key "$E/client-coordinator.key" --log info
  eval "PID_$1=$BG_PID"
}
replica A "$PA" "$MA"
wait_for test -s "$T/A.port" 20 || fail "replica A never led"
replica B "$PB" "$MB"
wait_for grep -q "standby: /fedc/qtest/leader is held by" "$T/rep-B.log" 20 || fail "B is not standing by"

# ---- 0. probes on both replicas ----
probe() { curl -sf --max-time 5 "http://127.0.0.1:$1$2"; }
wait_for probe "$MB" /readyz 10 || fail "the standby does not answer /readyz"
[ "$(probe "$MB" /readyz)" = standby ] || fail "standby /readyz: $(probe "$MB" /readyz)"
[ "$(probe "$MB" /healthz)" = ok ] || fail "standby /healthz"
probe "$MB" /metrics | grep -qx "fedc_replica_standby 1" || fail "standby /metrics"
[ "$(probe "$MA" /readyz)" = ready ] || fail "leader /readyz: $(probe "$MA" /readyz)"
python3 -c 'import socket,sys; s=socket.socket(); sys.exit(0 if s.connect_ex(("127.0.0.1",int(sys.argv[1]))) else 1)' "$PB" ||
  fail "the standby listens on the client port"

ADDR="127.0.0.1:$PA,127.0.0.1:$PB"
i=0
for n in a b; do
  start_bg "client-$n" "$FEDC" client --coordinator "$ADDR" --pki "$T/pki" --name "$n" \
    --data "idx:$T/img$i.idx,$T/lbl$i.idx" --model 784-10 --eval-fraction 0 --log info
  i=$((i + 1))
done
pointer() { "${ETCDCTL[@]}" get --print-value-only /fedc/qtest/model | jq -r .version; }
wait_version() { # N TIMEOUT: until etcd's pointer is at N or more
  wait_for bash -c "v=\$($(printf '%q ' "${ETCDCTL[@]}") get --print-value-only /fedc/qtest/model | jq -r .version); [ \"\${v:-0}\" -ge $1 ]" "$2"
}
wait_version 2 60 || fail "no version 2 before the outage"
REV=$(grep -o 'fencing revision [0-9]*' "$T/rep-A.log" | head -1)

# ---- 1. quorum lost ----
kill -KILL "${ETCD_PIDS[1]}" "${ETCD_PIDS[2]}"
wait_for grep -q "suspended, publishing nothing" "$T/rep-A.log" 20 || fail "A was not suspended without quorum"
# What the store holds once A stopped leading: nothing may be added until quorum returns.
S=$(jq -r .version "$T/state/state.json")
ls "$T/state/models" >"$T/models.before"
MODELS_AUDITED=$(grep -c '"kind":"model"' "$T/state/audit.log" || true)
[ -s "$T/A.port" ] || fail "the suspended leader stopped listening"
kill -0 "$PID_A" || fail "A exited"
# The client is told to retry (UNAVAILABLE with a retry time: a pause, not a failure), twice.
retry_told() { [ "$(cat "$T"/client-*.log | grep -c "etcd has no quorum.*retry in [0-9]* ms); retrying in")" -ge "$1" ]; }
wait_for retry_told 2 30 || fail "no client was told to retry while etcd had no quorum"
grep -h "etcd has no quorum" "$T"/client-*.log | head -1
# The answer itself: UNAVAILABLE (14) with the retry time in its trailer (the lease TTL).
"$BUILD_DIR/fedc_probe" --coordinator "127.0.0.1:$PA" --pki "$T/pki" --name a --mode call \
  --method /fedc.v1.Coordinator/CheckIn --want 14 >"$T/probe.json" || fail "check-in not UNAVAILABLE: $(cat "$T/probe.json")"
grep -q '"code":14,.*"detail":"etcd has no quorum: .*","retry_after_ms":2000}' "$T/probe.json" ||
  fail "no retry time with the refusal: $(cat "$T/probe.json")"
st=$("$FEDC" status --coordinator "$ADDR" --pki "$T/pki" --name root --json) || fail "fedc status failed"
[ "$(json_get "$st" .replica.role)" = suspended ] || fail "status during the outage: $st"
[ ! -e "$T/B.port" ] || fail "the standby took over without quorum"
wait_for retry_told 4 30 || fail "clients were not told to retry again"
[ "$(jq -r .version "$T/state/state.json")" = "$S" ] || fail "state.json moved without etcd quorum"
ls "$T/state/models" | cmp -s - "$T/models.before" || fail "a model file was written without etcd quorum"
[ "$(grep -c '"kind":"model"' "$T/state/audit.log" || true)" = "$MODELS_AUDITED" ] ||
  fail "a version was announced without etcd quorum"

# ---- 2. quorum back: the same leader goes on, versions without a gap ----
start_etcd 1
start_etcd 2
resumed() { grep -q "leading again" "$T/rep-A.log" || grep -q "unknown outcome: stepping down" "$T/rep-A.log"; }
wait_for resumed 30 || fail "A neither led again nor stepped down after quorum returned"
if grep -q "leading again" "$T/rep-A.log"; then
  grep "leading again" "$T/rep-A.log" | grep -q "${REV}" || fail "A leads again under another fencing revision than $REV"
  wait_version $((S + 2)) 60 || fail "no progress after quorum returned"
  [ ! -e "$T/B.port" ] || fail "B took over though A's lease survived"
  if grep -q "elected leader" "$T/rep-B.log"; then fail "B was elected"; fi
  echo "quorum back: A leads again under the same fencing revision"
else
  # Quorum was lost under A's pointer write: it waited for etcd, then stepped
  # down so that the next leader (either replica) reads what landed.
  wait_for bash -c "[ -s '$T/A.port' ] || [ -s '$T/B.port' ]" 30 || fail "no replica leads after quorum returned"
  wait_version $((S + 2)) 60 || fail "no progress after quorum returned"
  echo "quorum back: a write was in flight when quorum was lost; A stepped down and a new election took over"
fi
# Read against the write order (pointer, state.json, history line): each
# may only be ahead of what was read before it.
SV=$(jq -r .version "$T/state/state.json")
P=$(pointer)
[ "$P" -ge "$SV" ] || fail "state.json at v$SV is ahead of etcd's pointer at v$P"
for k in $(seq 1 "$SV"); do
  [ -e "$T/state/models/$(printf 'v%06d' "$k").safetensors" ] || fail "model file of v$k missing"
done
# The history: increasing, never repeated, and a version missing only where
# the next leader rolled state.json forward to it (the pointer write landed
# after all, and its writer stepped down before its history line: store.h).
jq -r 'select(.outcome == "completed") | .version' "$T/state/rounds.jsonl" >"$T/versions"
sed -n 's/.*state.json rolled forward to v\([0-9]*\).*/\1/p' "$T"/rep-*.log >>"$T/versions"
sort -n "$T/versions" -o "$T/versions"
[ "$(head -1 "$T/versions")" = 1 ] || fail "rounds.jsonl does not start at v1: $(tr '\n' ' ' <"$T/versions")"
awk 'NR > 1 && $1 != prev + 1 { exit 1 } { prev = $1 }' "$T/versions" ||
  fail "a gap or repeat in the published versions: $(tr '\n' ' ' <"$T/versions")"
[ "$(tail -1 "$T/versions")" -ge $((S + 1)) ] || fail "rounds.jsonl has nothing after v$S"
"$FEDC" audit verify --state "$T/state" --pki "$T/pki" >"$T/verify.txt" 2>&1 || fail "audit chain: $(cat "$T/verify.txt")"

# ---- 3. fedc ha verify: etcd and the store agree, and a disagreement is caught ----
HAV=("$FEDC" ha verify --etcd "$ETCD" --etcd-ca "$E/ca.crt" --etcd-cert "$E/client-coordinator.crt"
  --etcd-key "$E/client-coordinator.key" --state "$T/state" --pki "$T/pki")
"${HAV[@]}" >"$T/hav.txt" 2>&1 || fail "ha verify on the live federation: $(cat "$T/hav.txt")"
cat "$T/hav.txt"
kill -TERM "$PID_A" "$PID_B"
wait "$PID_A" "$PID_B" 2>/dev/null || true
"${HAV[@]}" --json >"$T/hav.json" 2>&1 || fail "ha verify after stopping: $(cat "$T/hav.json")"
[ "$(jq -r .consistent "$T/hav.json")" = true ] || fail "ha verify --json: $(cat "$T/hav.json")"
GOOD=$("${ETCDCTL[@]}" get --print-value-only /fedc/qtest/model)
"${ETCDCTL[@]}" put /fedc/qtest/model "$(jq -c '.sha256 = ("00" * 32)' <<<"$GOOD")" >/dev/null
"${HAV[@]}" >"$T/hav.txt" 2>&1 && fail "ha verify missed a pointer with another SHA-256"
assert_contains "$T/hav.txt" "etcd's pointer names another SHA-256"
"${ETCDCTL[@]}" put /fedc/qtest/model "$GOOD" >/dev/null
mv "$T/state/models/v000002.safetensors" "$T/v2"
"${HAV[@]}" >"$T/hav.txt" 2>&1 && fail "ha verify missed a version gap"
assert_contains "$T/hav.txt" "v2: no model file"
mv "$T/v2" "$T/state/models/v000002.safetensors"
"${HAV[@]}" >/dev/null 2>&1 || fail "ha verify after the store was restored"
echo "PASS"
