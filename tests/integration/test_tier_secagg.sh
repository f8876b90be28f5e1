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
#      A runs keys first (--secagg-keys-first).
#   B. One process with the same seed and options (keys after training), the
#      same six clients.
#   C, D. The same with a robust rule over SecAgg buckets (median over two
#      buckets of three, --secagg-bucket-seed so both runs draw the same
#      buckets): each bucket's members upload to one aggregator; two rounds.
# Then versions 0-3 match (`fedc model verify --json`), A's masked inputs came
# through two aggregators or more per round in partials, and an aggregator
# saw masked inputs only (no plaintext update).
# Also: what the tier cannot run (async mode) is refused at start in one sentence.
# Skipped (77) without etcd/etcdctl (apt-get install etcd-server etcd-client).
set -euo pipefail
. "$(dirname "$0")/lib.sh" "$@"
. "$(dirname "$0")/_data.sh"
make_tmp

. "$(dirname "$0")/_tier.sh"
tier_setup itest "a b c d e f" "ag1 ag2 ag3" 120 3
export OPENBLAS_NUM_THREADS=1 # one BLAS thread: each client's training is the same floats in both runs
COMMON=(--pki "$T/pki" --federation itest --model 784-10 --min-clients 6 --cohort 6 --min-updates 6
  --poll-ms 100 --round-timeout-ms 60000 --secagg --log info)

# What the tier cannot run is refused at start in one sentence.
"$FEDC" coordinator --pki "$T/pki" --federation itest --state "$T/x" --model 784-10 --mode async \
  --listen 127.0.0.1:0 "${ETCD_TLS[@]}" --aggregator-tier >"$T/refused.log" 2>&1 &&
  fail "--aggregator-tier with --mode async was accepted"
assert_contains "$T/refused.log" "--aggregator-tier cannot be combined with --mode async"

run_pair() { # TAG ROUNDS EXTRA-OPTIONS...
  local tag=$1 rounds=$2 g v
  shift 2
  local opts=("${COMMON[@]}" --rounds "$rounds" "$@")
  # ---- distributed ----
  "${ETCDCTL[@]}" del --prefix /fedc/itest >/dev/null # a new federation in the same cluster
  PL=$(free_port)
  start_bg "leader-$tag" "$FEDC" coordinator "${opts[@]}" ${DIST_ONLY[@]+"${DIST_ONLY[@]}"} --state "$T/dist-$tag" --listen "127.0.0.1:$PL" \
    --port-file "$T/leader-$tag.port" "${ETCD_TLS[@]}" --etcd-lease-ttl 2 --aggregator-tier
  local leader=$BG_PID
  wait_for test -s "$T/leader-$tag.port" 20 || fail "the leader never led: $(tail -5 "$T/leader-$tag.log")"
  PS=$(free_port)
  start_bg "standby-$tag" "$FEDC" coordinator "${opts[@]}" ${DIST_ONLY[@]+"${DIST_ONLY[@]}"} --state "$T/dist-$tag" --listen "127.0.0.1:$PS" \
    --port-file "$T/standby-$tag.port" "${ETCD_TLS[@]}" --etcd-lease-ttl 2 --aggregator-tier
  local standby=$BG_PID aggs=()
  wait_for grep -q "standby: /fedc/itest/leader is held by" "$T/standby-$tag.log" 20 || fail "no standby"
  for g in ag1 ag2 ag3; do
    start_bg "agg-$tag-$g" "$FEDC" aggregator --pki "$T/pki" --name "$g" --coordinator "127.0.0.1:$PL" \
      --listen 127.0.0.1:0 --port-file "$T/$tag-$g.port" "${ETCD_TLS[@]}" --etcd-lease-ttl 2 --log info
    aggs+=("$BG_PID")
    wait_for grep -q "aggregator $g registered" "$T/leader-$tag.log" 20 ||
      fail "$g not registered: $(tail -3 "$T/agg-$tag-$g.log")"
  done
  start_clients "127.0.0.1:$PL" "d$tag" --secagg-seeded-rounding ${DIST_CLIENTS[@]+"${DIST_CLIENTS[@]}"}
  wait_for test -e "$T/dist-$tag/models/$(printf 'v%06d' "$rounds").safetensors" 180 ||
    fail "distributed $tag: no version $rounds: $(tail -8 "$T/leader-$tag.log")"
  stop_clients "d$tag"
  python3 - "$T/dist-$tag/audit.log" "$rounds" <<'PY' || fail "distributed run $tag: not the grouping this test needs"
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
rounds = int(sys.argv[2])
for v in range(1, rounds + 1):
    assert models.get(v) == 6, f"version {v} from {models.get(v)} updates, not 6"
    assert len(aggs[v]) >= 2, f"round {v}: masked inputs through {sorted(aggs[v])} only"
    assert sum(parts[v]) == 6 and max(parts[v]) >= 2, f"round {v}: partials of {parts[v]} inputs"
print({r: sorted(a) for r, a in aggs.items()}, dict(parts))
PY
  for g in ag1 ag2 ag3; do
    grep -q "update from .* taken" "$T/agg-$tag-$g.log" && fail "aggregator $g took a plaintext update"
  done
  grep -q "masked partial from aggregator" "$T/leader-$tag.log" || fail "the leader took no masked partial"
  stop_pids "${aggs[@]}" "$standby" "$leader"
  # ---- one process, same seed and options ----
  start_coordinator "${opts[@]}" --state "$T/single-$tag"
  start_clients "$COORD_ADDR" "s$tag" --secagg-seeded-rounding
  wait_for test -e "$T/single-$tag/models/$(printf 'v%06d' "$rounds").safetensors" 180 ||
    fail "one process $tag: no version $rounds: $(tail -8 "$T/coord.log")"
  stop_clients "s$tag"
  kill -TERM "$COORD_PID" 2>/dev/null || true
  wait "$COORD_PID" 2>/dev/null || true
  # ---- the same bits ----
  same_bits "$T/dist-$tag" "$T/single-$tag" "$rounds" "$tag"
  echo "$tag: versions 0-$rounds bit-identical"
}

# A, B: one SecAgg instance over the cohort, split across the aggregators; A
# with keys first (protocol 1.18: keys and shares while training, the masked
# stage and the aggregators' take deadline to the training deadline plus a
# stage), its clients training 4 s, twice its 2 s stages (a take
# deadline of one stage from the masked stage's opening lost every input),
# B in the default order: the same bits either way.
DIST_ONLY=(--secagg-keys-first --secagg-stage-ms 2000)
DIST_CLIENTS=(--train-delay-ms 4000)
run_pair one 3
DIST_ONLY=()
DIST_CLIENTS=()
# C, D: median over two buckets of three, each bucket through one aggregator.
run_pair buckets 2 --aggregator median --secagg-bucket 3 --secagg-bucket-seed 7
grep -q "secure aggregation in 2 buckets" "$T/leader-buckets.log" || fail "not two buckets"
echo "PASS"
