#!/usr/bin/env bash
# Failover time of coordinator replicas on etcd (issue 23): a 3-member etcd
# cluster on 127.0.0.1 over mutual TLS, two `fedc coordinator --etcd`
# replicas sharing a state directory, three clients listing both addresses;
# TRIALS times: SIGKILL the leader, time until the standby serves (its port
# file) and until etcd's model pointer moves past the version seen at the
# kill (the next published version), then restart the killed replica as the
# new standby.
#
# TIER=1: the replicas run --aggregator-tier and two `fedc aggregator`
# processes (listing both replicas) take the uploads, so the next version
# also waits for the aggregators to find the new leader and hand it partials.
#
# One JSON line per trial, then one per figure (median and max over trials):
#   {"bench":"failover","tier":0|1,"trial":N,"ttl_s":T,"serving_s":S,"next_version_s":V}
#   {"bench":"failover","tier":0|1,"figure":"next_version_s","trials":N,"median":M,"max":X,"ttl_s":T}
#
#   [TIER=1] bench/bench_failover.sh FEDC [TRIALS=10] [TTL_S=2]
# About 10 s per trial on a shared 2-core machine. Needs etcd, etcdctl, jq, python3.
set -euo pipefail
FEDC=${1:?usage: bench_failover.sh FEDC [TRIALS] [TTL_S]}
TRIALS=${2:-10}
TTL=${3:-2}
TIER=${TIER:-0}
case $FEDC in /*) ;; *) FEDC=$PWD/$FEDC ;; esac
W=$(mktemp -d /tmp/fedc-bench-failover.XXXXXX)
PIDS=()
cleanup() {
  for p in ${PIDS[@]+"${PIDS[@]}"}; do kill -KILL "$p" 2>/dev/null || true; done
  rm -rf "$W"
}
trap cleanup EXIT
bg() { # NAME CMD...
  local n=$1
  shift
  "$@" </dev/null >>"$W/$n.log" 2>&1 &
  PIDS+=($!)
  LAST=$!
  disown "$LAST" # killed on purpose: no job notices
}
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
now() { date +%s.%N; }
until_true() { # TIMEOUT CMD...
  local t=$1 end
  shift
  end=$((SECONDS + t))
  until "$@" >/dev/null 2>&1; do
    [ "$SECONDS" -lt "$end" ] || return 1
    sleep 0.05
  done
}

"$FEDC" pki init --dir "$W/pki" --federation bench >/dev/null
"$FEDC" pki issue --dir "$W/pki" --role coordinator --name etcd >/dev/null
for c in a b c; do "$FEDC" pki issue --dir "$W/pki" --role client --name "$c" >/dev/null; done
for g in ag1 ag2; do "$FEDC" pki issue --dir "$W/pki" --role aggregator --name "$g" >/dev/null; done
TIER_OPT=()
[ "$TIER" = 1 ] && TIER_OPT=(--aggregator-tier)
EC=() EP=()
for i in 0 1 2; do EC+=("$(free_port)"); EP+=("$(free_port)"); done
CL="e1=http://127.0.0.1:${EP[0]},e2=http://127.0.0.1:${EP[1]},e3=http://127.0.0.1:${EP[2]}"
for i in 0 1 2; do
  bg "etcd$i" etcd --name "e$((i + 1))" --data-dir "$W/etcd$i" \
    --listen-client-urls "https://127.0.0.1:${EC[$i]}" --advertise-client-urls "https://127.0.0.1:${EC[$i]}" \
    --listen-peer-urls "http://127.0.0.1:${EP[$i]}" --initial-advertise-peer-urls "http://127.0.0.1:${EP[$i]}" \
    --initial-cluster "$CL" --initial-cluster-state new --client-cert-auth --trusted-ca-file "$W/pki/ca.crt" \
    --cert-file "$W/pki/coordinator-etcd.crt" --key-file "$W/pki/coordinator-etcd.key"
done
ETCD="127.0.0.1:${EC[0]},127.0.0.1:${EC[1]},127.0.0.1:${EC[2]}"
CTL=(etcdctl --endpoints "$ETCD" --cacert "$W/pki/ca.crt" --cert "$W/pki/coordinator.crt"
  --key "$W/pki/coordinator.key" --command-timeout 2s)
until_true 30 "${CTL[@]}" endpoint health || { echo "etcd not healthy" >&2; exit 1; }
pointer() { "${CTL[@]}" get --print-value-only /fedc/bench/model 2>/dev/null | jq -r '.version // 0' 2>/dev/null || echo 0; }
past() { [ "$(pointer)" -gt "$1" ]; }

python3 - "$W" <<'PY'
import random, struct, sys
t = sys.argv[1]
random.seed(7)
for part in range(3):
    with open(f"{t}/img{part}.idx", "wb") as fi, open(f"{t}/lbl{part}.idx", "wb") as fl:
        fi.write(struct.pack(">IIII", 0x803, 120, 28, 28)); fl.write(struct.pack(">II", 0x801, 120))
        for i in range(120):
            y = random.randrange(10)
            px = bytearray(random.randrange(40) for _ in range(784))
            for j in range(y * 70, y * 70 + 70): px[j] = 200 + random.randrange(50)
            fi.write(px); fl.write(bytes([y]))
PY

PORT=("$(free_port)" "$(free_port)")
REP_PID=()
replica() { # 0|1
  rm -f "$W/r$1.port"
  bg "rep$1" "$FEDC" coordinator --pki "$W/pki" --federation bench --state "$W/state" \
    --listen "127.0.0.1:${PORT[$1]}" --port-file "$W/r$1.port" --model 784-10 --rounds 0 --min-clients 2 \
    --cohort 2 --min-updates 2 --poll-ms 100 --round-timeout-ms 8000 --etcd "$ETCD" --etcd-lease-ttl "$TTL" \
    --etcd-ca "$W/pki/ca.crt" --etcd-cert "$W/pki/coordinator.crt" --etcd-key "$W/pki/coordinator.key" --log warn \
    ${TIER_OPT[@]+"${TIER_OPT[@]}"}
  REP_PID[$1]=$LAST
}
replica 0
until_true 20 test -s "$W/r0.port" || { echo "no leader" >&2; exit 1; }
replica 1
if [ "$TIER" = 1 ]; then
  for g in ag1 ag2; do
    bg "agg-$g" "$FEDC" aggregator --pki "$W/pki" --name "$g" --coordinator "127.0.0.1:${PORT[0]},127.0.0.1:${PORT[1]}" \
      --listen 127.0.0.1:0 --etcd "$ETCD" --etcd-lease-ttl "$TTL" --etcd-ca "$W/pki/ca.crt" \
      --etcd-cert "$W/pki/coordinator.crt" --etcd-key "$W/pki/coordinator.key" --log warn
  done
fi
i=0
for n in a b c; do
  bg "client-$n" "$FEDC" client --coordinator "127.0.0.1:${PORT[0]},127.0.0.1:${PORT[1]}" --pki "$W/pki" \
    --name "$n" --data "idx:$W/img$i.idx,$W/lbl$i.idx" --model 784-10 --eval-fraction 0 --log error
  i=$((i + 1))
done
until_true 60 past 1 || { echo "no version published" >&2; exit 1; }

leader=0
SERVE=() NEXT=()
for t in $(seq 1 "$TRIALS"); do
  other=$((1 - leader))
  sleep 1 # a few rounds, and the standby settled
  v=$(pointer)
  kill -KILL "${REP_PID[$leader]}"
  t0=$(now)
  until_true 30 test -s "$W/r$other.port" || { echo "trial $t: no takeover" >&2; exit 1; }
  t1=$(now)
  until_true 60 past "$v" || { echo "trial $t: nothing published" >&2; exit 1; }
  t2=$(now)
  s=$(awk "BEGIN{print $t1 - $t0}")
  nv=$(awk "BEGIN{print $t2 - $t0}")
  SERVE+=("$s")
  NEXT+=("$nv")
  printf '{"bench":"failover","tier":%d,"trial":%d,"ttl_s":%d,"serving_s":%.3f,"next_version_s":%.3f}\n' "$TIER" "$t" \
    "$TTL" "$s" "$nv"
  replica "$leader"
  leader=$other
done
for fig in serving_s next_version_s; do
  if [ $fig = serving_s ]; then vals=("${SERVE[@]}"); else vals=("${NEXT[@]}"); fi
  python3 -c 'import json, statistics, sys
v = [float(x) for x in sys.argv[4:]]
print(json.dumps({"bench": "failover", "tier": int(sys.argv[3]), "figure": sys.argv[1], "trials": len(v),
                  "median": round(statistics.median(v), 3), "max": round(max(v), 3), "ttl_s": int(sys.argv[2])}))' \
    "$fig" "$TTL" "$TIER" "${vals[@]}"
done
