# _tier.sh - what the aggregator-tier tests share (sourced after lib.sh,
# _data.sh and make_tmp; needs etcd, else the test skips with 77 in _etcd.sh):
#   tier_setup FED "CLIENTS" "AGGREGATORS" EXAMPLES ETCD_MEMBERS
#       a PKI for federation FED with a client certificate per name in CLIENTS
#       (kept in $CLIENTS) and an aggregator certificate per name in
#       AGGREGATORS, an idx shard of EXAMPLES per client ($T/img<i>.idx,
#       $T/lbl<i>.idx), an etcd cluster of ETCD_MEMBERS (_etcd.sh: $ETCD,
#       $ETCDCTL) and ETCD_TLS, the etcd options of coordinators and aggregators
#   start_clients ADDR TAG [ARGS...]
#       one `fedc client` per name on its shard against ADDR, extra ARGS
#       appended; pids in CPID_<TAG>_<name> and appended to CPIDS
#   stop_clients TAG      SIGTERM and reap them
#   stop_pids PID...      SIGTERM and reap these (gone already: fine)
#   weights_sha STATE V   SHA-256 of version V's weights in STATE, checked
#                         against its signed manifest (`fedc model verify`)
#   byz_round TAG ADD WAIT_FOR ARGS...
#       a leader (BASE plus ARGS) with ag1 honest and ag2 adding ADD to every
#       model word of its masked partial sums (`--byzantine-add`, research),
#       then the clients; passes once the leader's log says WAIT_FOR (within
#       60 s), ag2 says it lied, and no version 1 was published
#   same_bits DIST SINGLE LAST [TAG]
#                         versions 0..LAST of both stores have the same weight
#                         digests, and LAST is not version 0 (training moved it)
tier_setup() {
  local fed=$1 aggs=$3 examples=$4 members=$5 g n=0
  CLIENTS=$2
  # shellcheck disable=SC2086 # word-split on purpose: one name each
  make_pki "$T/pki" "$fed" $CLIENTS
  for g in $aggs; do
    "$FEDC" pki issue --dir "$T/pki" --role aggregator --name "$g" >/dev/null || fail "pki issue --role aggregator failed"
  done
  for g in $CLIENTS; do n=$((n + 1)); done
  make_idx "$T" "$examples" "$n"
  . "$(dirname "$0")/_etcd.sh"
  etcd_cluster "$members"
  ETCD_TLS=(--etcd "$ETCD" --etcd-ca "$T/pki/ca.crt" --etcd-cert "$T/pki/coordinator.crt"
    --etcd-key "$T/pki/coordinator.key")
}

CPIDS=()
start_clients() { # ADDR TAG [ARGS...]
  local addr=$1 tag=$2 i=0 n
  shift 2
  for n in $CLIENTS; do
    start_bg "client-$tag-$n" "$FEDC" client --coordinator "$addr" --pki "$T/pki" --name "$n" \
      --data "idx:$T/img$i.idx,$T/lbl$i.idx" --model 784-10 --eval-fraction 0 --log info "$@"
    eval "CPID_${tag}_$n=$BG_PID"
    CPIDS+=("$BG_PID")
    i=$((i + 1))
  done
}

stop_pids() { # PID...
  local p
  for p in "$@"; do
    kill -TERM "$p" 2>/dev/null || true
    wait "$p" 2>/dev/null || true
  done
}

stop_clients() { # TAG
  local n v
  for n in $CLIENTS; do
    v="CPID_${1}_$n"
    stop_pids "${!v}"
  done
}

byz_round() { # TAG ADD WAIT_FOR ARGS...
  local tag=$1 add=$2 want=$3 pl g extra
  shift 3
  "${ETCDCTL[@]}" del --prefix /fedc/itest >/dev/null
  pl=$(free_port)
  start_bg "leader-$tag" "$FEDC" coordinator "${BASE[@]}" --state "$T/$tag" --listen "127.0.0.1:$pl" \
    --port-file "$T/$tag.port" "${ETCD_TLS[@]}" --etcd-lease-ttl 2 --aggregator-tier "$@"
  wait_for test -s "$T/$tag.port" 20 || fail "$tag: the leader never led"
  for g in ag1 ag2; do
    extra=()
    [ "$g" = ag2 ] && extra=(--byzantine-add "$add")
    start_bg "agg-$tag-$g" "$FEDC" aggregator --pki "$T/pki" --name "$g" --coordinator "127.0.0.1:$pl" \
      --listen 127.0.0.1:0 "${ETCD_TLS[@]}" --etcd-lease-ttl 2 --log info "${extra[@]}"
    wait_for grep -q "aggregator $g registered" "$T/leader-$tag.log" 20 || fail "$tag: $g not registered"
  done
  start_clients "127.0.0.1:$pl" "$tag"
  wait_for grep -q "$want" "$T/leader-$tag.log" 60 ||
    fail "$tag: the lying aggregator's sum was not refused: $(grep -v DEBUG "$T/leader-$tag.log" | tail -6)"
  grep -q "research: added $add" "$T/agg-$tag-ag2.log" || fail "$tag: ag2 did not lie"
  [ ! -e "$T/$tag/models/v000001.safetensors" ] || fail "$tag: a round with the lying aggregator's sum was published"
  stop_clients "$tag"
}

same_bits() { # DIST SINGLE LAST [TAG]
  local v d s tag=${4:+$4: }
  for ((v = 0; v <= $3; v++)); do
    d=$(weights_sha "$1" $v) || fail "${tag}verify distributed v$v"
    s=$(weights_sha "$2" $v) || fail "${tag}verify single v$v"
    [ -n "$d" ] && [ "$d" != null ] || fail "${tag}no digest of distributed v$v"
    [ "$d" = "$s" ] || fail "${tag}version $v differs: distributed $d, one process $s"
  done
  [ "$(weights_sha "$2" 0)" != "$(weights_sha "$2" "$3")" ] || fail "${tag}version $3 is version 0: no training"
}

weights_sha() { # STATE VERSION
  local f
  f="$1/models/$(printf 'v%06d' "$2")"
  "$FEDC" model verify "$f.safetensors" --manifest "$f.manifest" --pki "$T/pki" --json | jq -r .sha256
}
