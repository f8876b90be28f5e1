# _etcd.sh - an etcd cluster on 127.0.0.1 for the integration tests (sourced
# after lib.sh, make_tmp and make_pki "$T/pki" ...): mutual TLS on the client
# port with certificates from `fedc pki`, plain HTTP between members (loopback).
#   etcd_cluster N   issues the members' certificate (role coordinator, name
#                    etcd), picks ports, starts members 0..N-1 and waits for
#                    health; sets ETCD (the client endpoints, comma separated)
#                    and ETCDCTL (an etcdctl command, as an array)
#   start_etcd I     (re)starts member I (0-based); its pid in ETCD_PIDS[I]
# A test that needs etcd skips (77) when etcd or etcdctl is missing.
command -v etcd >/dev/null && command -v etcdctl >/dev/null ||
  { echo "SKIP: etcd and etcdctl are needed (apt-get install etcd-server etcd-client)"; exit 77; }

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

EC=() EP=() ETCD_PIDS=()
start_etcd() { # I
  local i=$1 n=$(($1 + 1))
  start_bg "etcd$n" etcd --name "e$n" --data-dir "$T/etcd$n" \
    --listen-client-urls "https://127.0.0.1:${EC[$i]}" --advertise-client-urls "https://127.0.0.1:${EC[$i]}" \
    --listen-peer-urls "http://127.0.0.1:${EP[$i]}" --initial-advertise-peer-urls "http://127.0.0.1:${EP[$i]}" \
    --initial-cluster "$CLUSTER" --initial-cluster-state new --initial-cluster-token "fedc-$$" \
    --client-cert-auth --trusted-ca-file "$T/pki/ca.crt" \
    --cert-file "$T/pki/coordinator-etcd.crt" --key-file "$T/pki/coordinator-etcd.key"
  ETCD_PIDS[$i]=$BG_PID
}

etcd_cluster() { # N
  local n=$1 i
  "$FEDC" pki issue --dir "$T/pki" --role coordinator --name etcd >/dev/null || fail "pki issue etcd failed"
  CLUSTER="" ETCD=""
  for ((i = 0; i < n; i++)); do
    EC+=("$(free_port)")
    EP+=("$(free_port)")
    CLUSTER+="${CLUSTER:+,}e$((i + 1))=http://127.0.0.1:${EP[$i]}"
    ETCD+="${ETCD:+,}127.0.0.1:${EC[$i]}"
  done
  for ((i = 0; i < n; i++)); do start_etcd "$i"; done
  ETCDCTL=(etcdctl --endpoints "$ETCD" --cacert "$T/pki/ca.crt" --cert "$T/pki/coordinator.crt"
    --key "$T/pki/coordinator.key" --command-timeout 2s)
  wait_for "${ETCDCTL[@]}" endpoint health 30 || fail "etcd cluster not healthy"
}
