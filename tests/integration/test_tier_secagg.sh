#!/usr/bin/env bash
# Secure aggregation through the aggregator tier publishes the same model bits
# as one process (issue 23, protocol 1.16). The leader runs the SecAgg+ stages
# (keys, shares, consistency, unmasking); the aggregators take the masked
# inputs and hand the leader their sums mod 2^32 per instance, which add up
# to the one sum a single coordinator makes (integer addition mod 2^32 does not
# care about order or grouping). The clients draw their rounding from the
# task's seed (--secagg-seeded-rounding, research), so the two runs send the
# same quantized inputs under different masks.
#   A. Distributed: a 3-member etcd cluster, a leader and a standby with
#      --aggregator-tier --secagg, three aggregators, six clients; three rounds.
#   B. One process with the same seed and options, the same six clients.
# Then versions 0-3 match (`fedc model verify --json`), A's masked inputs came
# through two aggregators or more per round in partials, and an aggregator
# saw masked inputs only (no plaintext update).
# Also: a plaintext upload to a SecAgg round's aggregator is refused; a
# robust rule without --secagg is refused with the tier.
# Skipped (77) without etcd/etcdctl (apt-get install etcd-server etcd-client).
set -euo pipefail
. "$(dirname "$0")/lib.sh" "$@"
. "$(dirname "$0")/_data.sh"
make_tmp

CLIENTS="a b c d e f"
make_pki "$T/pki" itest $CLIENTS
for g in ag1 ag2 ag3; do
  "$FEDC" pki issue --dir "$T/pki" --role aggregator --name "$g" >/dev/null || fail "pki issue --role aggregator failed"
done
make_idx "$T" 120 6
export OPENBLAS_NUM_THREADS=1 # one BLAS thread: each client's training is the same floats in both runs
COMMON=(--pki "$T/pki" --federation itest --model 784-10 --rounds 3 --min-clients 6 --cohort 6 --min-updates 6
  --poll-ms 100 --round-timeout-ms 60000 --secagg --log info)

start_clients() { # ADDR TAG
  local i=0
  for n in $CLIENTS; do
    start_bg "client-$2-$n" "$FEDC" client --coordinator "$1" --pki "$T/pki" --name "$n" \
      --data "idx:$T/img$i.idx,$T/lbl$i.idx" --model 784-10 --eval-fraction 0 --secagg-seeded-rounding --log info
    eval "CPID_$2_$n=$BG_PID"
    i=$((i + 1))
  done
}
stop_clients() { # TAG
  for n in $CLIENTS; do
    local v="CPID_$1_$n"
    kill -TERM "${!v}" 2>/dev/null || true
    wait "${!v}" 2>/dev/null || true
  done
}
weights_sha() { # STATE VERSION
  local f
  f="$1/models/$(printf 'v%06d' "$2")"
  "$FEDC" model verify "$f.safetensors" --manifest "$f.manifest" --pki "$T/pki" --json | jq -r .sha256
}

. "$(dirname "$0")/_etcd.sh"
etcd_cluster 3
ETCD_TLS=(--etcd "$ETCD" --etcd-ca "$T/pki/ca.crt" --etcd-cert "$T/pki/coordinator.crt" --etcd-key "$T/pki/coordinator.key")

# A robust rule needs every update, or SecAgg buckets: refused without --secagg.
"$FEDC" coordinator --pki "$T/pki" --federation itest --state "$T/x" --model 784-10 --aggregator median \
  --listen 127.0.0.1:0 "${ETCD_TLS[@]}" --aggregator-tier >"$T/refused.log" 2>&1 &&
  fail "--aggregator-tier with median and no --secagg was accepted"
assert_contains "$T/refused.log" "a robust aggregation rule without --secagg"

# ---- A. distributed ----
PL=$(free_port)
start_bg leader "$FEDC" coordinator "${COMMON[@]}" --state "$T/dist" --listen "127.0.0.1:$PL" \
  --port-file "$T/leader.port" "${ETCD_TLS[@]}" --etcd-lease-ttl 2 --aggregator-tier
wait_for test -s "$T/leader.port" 20 || fail "the leader never led: $(tail -5 "$T/leader.log")"
PS=$(free_port)
start_bg standby "$FEDC" coordinator "${COMMON[@]}" --state "$T/dist" --listen "127.0.0.1:$PS" \
  --port-file "$T/standby.port" "${ETCD_TLS[@]}" --etcd-lease-ttl 2 --aggregator-tier
wait_for grep -q "standby: /fedc/itest/leader is held by" "$T/standby.log" 20 || fail "no standby"
for g in ag1 ag2 ag3; do
  start_bg "agg-$g" "$FEDC" aggregator --pki "$T/pki" --name "$g" --coordinator "127.0.0.1:$PL" \
    --listen 127.0.0.1:0 --port-file "$T/$g.port" "${ETCD_TLS[@]}" --etcd-lease-ttl 2 --log info
  wait_for grep -q "aggregator $g registered" "$T/leader.log" 20 || fail "$g not registered: $(tail -3 "$T/agg-$g.log")"
done
start_clients "127.0.0.1:$PL" dist
wait_for test -e "$T/dist/models/v000003.safetensors" 180 || fail "distributed: no version 3: $(tail -8 "$T/leader.log")"
stop_clients dist

python3 - "$T/dist/audit.log" <<'PY' || fail "distributed run: not the grouping this test needs"
import collections, json, sys
aggs, parts, models = collections.defaultdict(set), collections.defaultdict(list), {}
for r in map(json.loads, open(sys.argv[1])):
    if r["kind"] == "update" and r.get("outcome") == "accepted":
        assert r.get("aggregator"), f"update of {r.get('client')} came in directly"
        assert r.get("masked") is True, f"update of {r.get('client')} through {r.get('aggregator')} not masked"
        aggs[r["round"]].add(r["aggregator"])
    elif r["kind"] == "partial" and r.get("outcome") == "accepted":
        parts[r["round"]].append(r["updates"])
    elif r["kind"] == "model":
        models[r["version"]] = r.get("updates")
for v in (1, 2, 3):
    assert models.get(v) == 6, f"version {v} from {models.get(v)} updates, not 6"
for rnd in (1, 2, 3):
    assert len(aggs[rnd]) >= 2, f"round {rnd}: masked inputs through {sorted(aggs[rnd])} only"
    assert sum(parts[rnd]) == 6 and max(parts[rnd]) >= 2, f"round {rnd}: partials of {parts[rnd]} inputs"
print({r: sorted(a) for r, a in aggs.items()}, dict(parts))
PY
for g in ag1 ag2 ag3; do
  grep -q "update from .* taken" "$T/agg-$g.log" && fail "aggregator $g took a plaintext update"
done
grep -q "masked input from .* taken" "$T/agg-ag1.log" "$T/agg-ag2.log" "$T/agg-ag3.log" ||
  fail "no aggregator took a masked input"
grep -q "masked partial from aggregator" "$T/leader.log" || fail "the leader took no masked partial"

# ---- B. one process, same seed and options ----
start_coordinator "${COMMON[@]}" --state "$T/single"
start_clients "$COORD_ADDR" single
wait_for test -e "$T/single/models/v000003.safetensors" 180 || fail "one process: no version 3: $(tail -8 "$T/coord.log")"
stop_clients single

# ---- the same bits ----
for v in 0 1 2 3; do
  d=$(weights_sha "$T/dist" $v) || fail "verify distributed v$v"
  s=$(weights_sha "$T/single" $v) || fail "verify single v$v"
  [ -n "$d" ] && [ "$d" != null ] || fail "no digest of distributed v$v"
  [ "$d" = "$s" ] || fail "version $v differs: distributed $d, one process $s"
done
[ "$(weights_sha "$T/single" 0)" != "$(weights_sha "$T/single" 3)" ] || fail "version 3 is version 0"
echo "PASS"
