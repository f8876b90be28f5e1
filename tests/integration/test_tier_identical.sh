#!/usr/bin/env bash
# The distributed federation publishes the same model bits as one process
# (issue 23), plain FedAvg with --reproducible-sum: the sums are 64-bit
# integers on a grid from the clip norm, so neither arrival order nor the
# tier's grouping into partial sums changes a bit (aggregate_fedavg.c).
#   A. Distributed: a 3-member etcd cluster, two coordinator replicas (a
#      leader and a standby) with --aggregator-tier, three aggregators, six
#      clients; three rounds, every client in every round.
#   B. One process: `fedc coordinator` alone, the same seed and options, the
#      same six clients (new processes, same data); three rounds.
# Then versions 0-3 of both stores have the same SHA-256 over their weights
# (`fedc model verify --json`), and in A each round's updates came through
# two aggregators or more, in partial sums of several updates (so the
# grouping differed from B's one sum).
# All real processes on 127.0.0.1 over mutual TLS, certificates from `fedc pki`.
# Skipped (77) without etcd/etcdctl (apt-get install etcd-server etcd-client).
set -euo pipefail
. "$(dirname "$0")/lib.sh" "$@"
. "$(dirname "$0")/_data.sh"
make_tmp

. "$(dirname "$0")/_tier.sh"
tier_setup itest "a b c d e f" "ag1 ag2 ag3" 120 3
export OPENBLAS_NUM_THREADS=1 # one BLAS thread: each client's training is the same floats in both runs
COMMON=(--pki "$T/pki" --federation itest --model 784-10 --rounds 3 --min-clients 6 --cohort 6 --min-updates 6
  --poll-ms 100 --round-timeout-ms 60000 --reproducible-sum --log info)

# What --reproducible-sum cannot hold is refused at start, in one sentence.
"$FEDC" coordinator --pki "$T/pki" --federation itest --state "$T/x" --model 784-10 --reproducible-sum \
  --aggregator median --listen 127.0.0.1:0 >"$T/refused.log" 2>&1 && fail "--reproducible-sum with median was accepted"
assert_contains "$T/refused.log" "--reproducible-sum cannot be combined with a robust aggregation rule"
"$FEDC" coordinator --pki "$T/pki" --federation itest --state "$T/x" --model 784-10 --reproducible-sum \
  --clip-norm 0 --listen 127.0.0.1:0 >"$T/refused.log" 2>&1 && fail "--reproducible-sum without a clip was accepted"
assert_contains "$T/refused.log" "--reproducible-sum cannot be combined with clip_norm 0"

# ---- A. distributed ----
PL=$(free_port)
start_bg leader "$FEDC" coordinator "${COMMON[@]}" --state "$T/dist" --listen "127.0.0.1:$PL" \
  --port-file "$T/leader.port" "${ETCD_TLS[@]}" --etcd-lease-ttl 2 --aggregator-tier
wait_for test -s "$T/leader.port" 20 || fail "the leader never led: $(tail -5 "$T/leader.log")"
grep -q "reproducible sums: int64 on the grid 2^-28" "$T/leader.log" || fail "no fixed-point grid: $(tail -5 "$T/leader.log")"
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
wait_for test -e "$T/dist/models/v000003.safetensors" 120 || fail "distributed: no version 3: $(tail -8 "$T/leader.log")"
stop_clients dist

# Every update came through an aggregator, each round through two or more,
# in partials of several updates; six updates a round.
python3 - "$T/dist/audit.log" <<'PY' || fail "distributed run: not the grouping this test needs"
import collections, json, sys
aggs, parts, models = collections.defaultdict(set), collections.defaultdict(list), {}
for r in map(json.loads, open(sys.argv[1])):
    if r["kind"] == "update" and r.get("outcome") == "accepted":
        assert r.get("aggregator"), f"update of {r.get('client')} came in directly"
        aggs[r["round"]].add(r["aggregator"])
    elif r["kind"] == "partial" and r.get("outcome") == "accepted":
        parts[r["round"]].append(r["updates"])
    elif r["kind"] == "model":
        models[r["version"]] = r.get("updates")
for v in (1, 2, 3):
    assert models.get(v) == 6, f"version {v} from {models.get(v)} updates, not 6"
for rnd in (1, 2, 3):
    assert len(aggs[rnd]) >= 2, f"round {rnd}: updates through {sorted(aggs[rnd])} only"
    assert sum(parts[rnd]) == 6 and max(parts[rnd]) >= 2, f"round {rnd}: partials of {parts[rnd]} updates"
print({r: sorted(a) for r, a in aggs.items()}, dict(parts))
PY
grep -q "partial sums with fixed_frac_bits" "$T/leader.log" && fail "a partial came with the wrong grid"

# ---- B. one process, same seed and options ----
start_coordinator "${COMMON[@]}" --state "$T/single"
start_clients "$COORD_ADDR" single
wait_for test -e "$T/single/models/v000003.safetensors" 120 || fail "one process: no version 3: $(tail -8 "$T/coord.log")"
stop_clients single

# ---- the same bits ----
same_bits "$T/dist" "$T/single" 3
echo "PASS"
