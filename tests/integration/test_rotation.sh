#!/usr/bin/env bash
# Certificate rotation as docs/operations.md ("Rotating certificates") tells an
# operator to do it: each fenced block marked <!-- test_rotation.sh: NAME -->
# is taken from the document and run as written, so the document and this
# test cannot drift apart. `fedc` is the binary under test; `systemctl restart
# fedc-coordinator` restarts the test's coordinator on the same address;
# `kubectl create` is the real kubectl (offline, --dry-run=client), `kubectl
# apply -f -` keeps the Secret it is given and `kubectl rollout restart`
# restarts the coordinator from a directory holding exactly that Secret's
# files. A coordinator (unlimited rounds) and one client run throughout:
#   coordinator TLS (systemd)    it serves the new certificate, the client
#                                reconnects by itself, rounds go on
#   coordinator TLS (Kubernetes) the same, from the Secret's files only
#   model signing                new versions are signed by the new signer and
#                                the client accepts them; an old version still
#                                verifies
#   client                       the restarted client is the same identity, the
#                                audit log records the new certificate
#   a new CA (four steps)        at each step the client and admin keep working;
#                                at the end the coordinator serves the new CA's
#                                certificate and refuses the old CA's
set -euo pipefail
. "$(dirname "$0")/lib.sh" "$@"
. "$(dirname "$0")/_data.sh"
make_tmp
DOC=${FEDC_SOURCE_DIR:-$(cd "$(dirname "$0")/../.." && pwd)}/docs/operations.md
command -v kubectl >/dev/null || fail "kubectl is required (the Kubernetes step renders its Secret)"

# The document's variables: one machine holds the CA and the coordinator's
# PKI directory (as `fedc pki init` makes it), the device's is the same.
CA=$T/pki
PKI=$T/pki
DEVICE_PKI=$T/pki
ADMIN_PKI=$T/pki
make_pki "$PKI" itest dev1
make_idx "$T" 100 1
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
COORD_PKI=$PKI # the coordinator's --pki: $PKI, or the Kubernetes Secret's files
ADMIN=(--coordinator "127.0.0.1:$PORT" --pki "$PKI" --name root)

rounds_done() { "$FEDC" status "${ADMIN[@]}" --json | jq -r .rounds_completed; }
# Two more rounds than $1 complete (with one client and --min-updates 1, each
# round is an update the client made and the coordinator accepted).
rounds_past() {
  local want=$(($1 + 2))
  wait_for bash -c "[ \"\$('$FEDC' status ${ADMIN[*]} --json | jq -r .rounds_completed)\" -ge $want ]" 60 ||
    fail "$2: rounds did not reach $want (at $(rounds_done))"
}
# SHA-256 fingerprint of the certificate the coordinator presents (a full
# mutual-TLS handshake as dev1), and of a certificate file.
served_fp() {
  openssl s_client -connect "127.0.0.1:$PORT" -CAfile "$PKI/ca.crt" -cert "$DEVICE_PKI/client-dev1.crt" \
    -key "$DEVICE_PKI/client-dev1.key" -alpn h2 </dev/null 2>/dev/null | openssl x509 -noout -fingerprint -sha256
}
file_fp() { openssl x509 -in "$1" -noout -fingerprint -sha256; }
der_sha() { openssl x509 -in "$1" -outform DER | sha256sum | cut -d' ' -f1; }

start_coord() {
  start_coordinator --pki "$COORD_PKI" --federation itest --state "$T/state" --model 784-10 --rounds 0 \
    --min-clients 1 --cohort 1 --min-updates 1 --poll-ms 100 --grace-ms 500 --listen "127.0.0.1:$PORT"
}
restart_coord() {
  kill -TERM "$COORD_PID"
  wait "$COORD_PID" || fail "coordinator did not stop cleanly on SIGTERM"
  start_coord
}
start_client() {
  start_bg client-dev1 "$FEDC" client --coordinator "127.0.0.1:$PORT" --pki "$DEVICE_PKI" --name dev1 \
    --data "idx:$T/img0.idx,$T/lbl0.idx" --model 784-10
  CLIENT_PID=$BG_PID
}

# What the document's restart commands stand for here.
systemctl() {
  [ "$*" = "restart fedc-coordinator" ] || fail "the document runs 'systemctl $*'"
  COORD_PKI=$PKI
  restart_coord
}
kubectl() {
  case "$*" in
  "create secret generic fedc-pki "*) command kubectl "$@" ;;
  "apply -f -") cat >"$T/secret.yaml" ;;
  "rollout restart statefulset/fedc-coordinator")
    # The pod's --pki directory: the Secret's keys as files, nothing else.
    rm -rf "$T/secret-pki" && mkdir -m 0700 "$T/secret-pki"
    python3 - "$T/secret.yaml" "$T/secret-pki" <<'PY'
import base64, os, sys, yaml
s = yaml.safe_load(open(sys.argv[1]))
assert s["kind"] == "Secret" and s["metadata"]["name"] == "fedc-pki", s
for k, v in s["data"].items():
    with open(os.path.join(sys.argv[2], k), "wb") as f:
        f.write(base64.b64decode(v))
    os.chmod(os.path.join(sys.argv[2], k), 0o600 if k.endswith(".key") else 0o644)
PY
    COORD_PKI=$T/secret-pki
    restart_coord
    ;;
  *) fail "the document runs 'kubectl $*'" ;;
  esac
}
fedc() { "$FEDC" "$@"; }

# The fenced block after the marker line, as the document has it.
block() {
  awk -v m="<!-- test_rotation.sh: $1 -->" '
    $0 == m { found = 1; next }
    found && /^```/ { if (inside) exit; inside = 1; next }
    inside { print }' "$DOC"
}
run_block() {
  local name=$1 code
  code=$(block "$name")
  [ -n "$code" ] || fail "docs/operations.md has no block marked 'test_rotation.sh: $name'"
  printf -- '---- docs/operations.md, %s:\n%s\n' "$name" "$code"
  trap 'fail "documented step ($name) failed: $BASH_COMMAND"' ERR
  eval "$code"
  trap - ERR
}

start_coord
start_client
rounds_past 0 "before rotation"
OLD_FP=$(file_fp "$PKI/coordinator.crt")
[ "$(served_fp)" = "$OLD_FP" ] || fail "the coordinator does not serve $PKI/coordinator.crt before rotation"
"$FEDC" model get "${ADMIN[@]}" --version 1 --out "$T/v1.safetensors" >/dev/null || fail "model get v1"

# ---- coordinator TLS, on a host
NEW=$T/new-tls
run_block coordinator-issue
NEW_FP=$(file_fp "$NEW/coordinator-coordinator.crt")
[ "$NEW_FP" != "$OLD_FP" ] || fail "the issued certificate is the old one"
run_block coordinator-systemd
R=$(rounds_done) # counted from the restarted coordinator on
[ "$(file_fp "$PKI/coordinator.crt")" = "$NEW_FP" ] || fail "$PKI/coordinator.crt is not the new certificate"
[ "$(file_fp "$PKI/coordinator.crt.old")" = "$OLD_FP" ] || fail "the old certificate was not kept"
[ "$(stat -c %a "$PKI/coordinator.key")" = 600 ] || fail "coordinator.key is not 0600 after the copy"
[ "$(served_fp)" = "$NEW_FP" ] || fail "after the restart the coordinator does not serve the new certificate"
rounds_past "$R" "after the coordinator TLS rotation"
kill -0 "$CLIENT_PID" 2>/dev/null || fail "the client exited across the coordinator's restart"
echo "coordinator TLS (systemd): serves $NEW_FP, rounds $R -> $(rounds_done)"

# ---- coordinator TLS, on Kubernetes (a second new certificate, from the Secret's files only)
NEW=$T/new-k8s
run_block coordinator-issue
K8S_FP=$(file_fp "$NEW/coordinator-coordinator.crt")
run_block coordinator-kubernetes
R=$(rounds_done) # counted from the restarted coordinator on
[ "$(find "$T/secret-pki" -type f -printf '%f\n' | sort | tr '\n' ' ')" = \
  "ca.crt coordinator.crt coordinator.key signer-coordinator.crt signer-coordinator.key " ] ||
  fail "the Secret holds $(ls "$T/secret-pki")"
[ "$(served_fp)" = "$K8S_FP" ] || fail "after the rollout the coordinator does not serve the Secret's certificate"
rounds_past "$R" "after the Kubernetes rotation"
echo "coordinator TLS (Kubernetes): serves $K8S_FP, rounds $R -> $(rounds_done)"

# ---- model signing (back on the host's directory)
NEW=$T/new-signer
run_block signer
R=$(rounds_done) # counted from the restarted coordinator on
# The second round after the restart trains on a version the new signer signed:
# the client (the only one, --min-updates 1) checked its manifest and took part.
rounds_past "$R" "after the signer rotation"
V=$(jq -r .version "$T/state/state.json")
"$FEDC" model get "${ADMIN[@]}" --version "$V" --out "$T/vnew.safetensors" >/dev/null ||
  fail "model get v$V (signed by the new signer)"
"$FEDC" model verify "$T/vnew.safetensors" --pki "$PKI" --version "$V" --json >"$T/vnew.json" ||
  fail "v$V does not verify: $(cat "$T/vnew.json")"
jq -e '.signer == "spiffe://itest/signer/coordinator-2027"' "$T/vnew.json" >/dev/null ||
  fail "v$V is not signed by the new signer: $(cat "$T/vnew.json")"
"$FEDC" model verify "$T/v1.safetensors" --pki "$PKI" --version 1 --json >"$T/v1.json" ||
  fail "v1, signed before the rotation, no longer verifies: $(cat "$T/v1.json")"
jq -e '.signer == "spiffe://itest/signer/coordinator"' "$T/v1.json" >/dev/null || fail "v1's signer: $(cat "$T/v1.json")"
echo "model signing: v$V signed by signer/coordinator-2027, v1 still verifies"

# ---- a client
NEW=$T/new-client
kill -TERM "$CLIENT_PID"
wait "$CLIENT_PID" || true
run_block client
DEV_SHA=$(der_sha "$DEVICE_PKI/client-dev1.crt")
[ "$DEV_SHA" = "$(der_sha "$NEW/client-dev1.crt")" ] || fail "the device's client-dev1.crt is not the new one"
start_client
R=$(rounds_done)
rounds_past "$R" "after the client rotation"
"$FEDC" audit show --state "$T/state" --kind contact --json |
  jq -se --arg s "$DEV_SHA" 'map(select(.name == "dev1" and .role == "client" and .cert_sha256 == $s)) | length == 1' \
    >/dev/null || fail "the audit log has no contact of client dev1 with the new certificate"
echo "client: dev1 with certificate $DEV_SHA, rounds $R -> $(rounds_done)"

# ---- a new CA, in the document's four steps
NEW_CA=$T/newca
mkdir -m 0700 "$T/old-admin"
cp "$PKI/admin-root.crt" "$PKI/admin-root.key" "$T/old-admin/"
OLD_ADMIN=(--coordinator "127.0.0.1:$PORT" --ca "$NEW_CA/bundle.crt" --cert "$T/old-admin/admin-root.crt"
  --key "$T/old-admin/admin-root.key")
run_block ca-trust-both
R=$(rounds_done) # counted from the restarted coordinator on
[ "$(served_fp)" = "$(file_fp "$PKI/coordinator.crt")" ] || fail "step 1 changed the served certificate"
rounds_past "$R" "after trusting both CAs" # the client still holds its old-CA certificate
"$FEDC" status "${OLD_ADMIN[@]}" >/dev/null || fail "an old-CA admin certificate is refused while both CAs are trusted"

NEW=$T/new-ca-leaves
kill -TERM "$CLIENT_PID"
wait "$CLIENT_PID" || true
run_block ca-leaves
"$FEDC" pki verify --ca "$NEW_CA/ca.crt" --cert "$DEVICE_PKI/client-dev1.crt" >/dev/null ||
  fail "the device's certificate is not from the new CA"
start_client
R=$(rounds_done) # (the admin certificate from the new CA works)
rounds_past "$R" "with the client on a new-CA certificate"

run_block ca-coordinator
R=$(rounds_done) # counted from the restarted coordinator on
[ "$(served_fp)" = "$(file_fp "$NEW_CA/coordinator.crt")" ] || fail "step 3: the coordinator does not serve its new-CA certificate"
rounds_past "$R" "after the coordinator moved to the new CA"
V=$(jq -r .version "$T/state/state.json")
"$FEDC" model get "${ADMIN[@]}" --version "$V" --out "$T/vca.safetensors" >/dev/null || fail "model get v$V"
"$FEDC" model verify "$T/vca.safetensors" --ca "$NEW_CA/ca.crt" --version "$V" >/dev/null ||
  fail "v$V is not signed by the new CA's signer"

run_block ca-drop-old
! "$FEDC" status "${OLD_ADMIN[@]}" >"$T/old-admin.out" 2>&1 ||
  fail "the coordinator still accepts an old-CA certificate after the old CA was dropped"
echo "old-CA admin after the drop: $(tail -1 "$T/old-admin.out")"
kill -TERM "$CLIENT_PID" # the device's ca.crt is the new CA alone now: restart it on that
wait "$CLIENT_PID" || true
start_client
R=$(rounds_done)
rounds_past "$R" "after the old CA was dropped"
"$FEDC" model verify "$T/v1.safetensors" --ca "$PKI/ca.crt.old" --version 1 >/dev/null ||
  fail "v1 does not verify against the old CA"
! "$FEDC" model verify "$T/v1.safetensors" --pki "$PKI" --version 1 >/dev/null 2>&1 ||
  fail "v1 (old signer) verifies against the new CA alone"
echo "CA: the coordinator serves $(file_fp "$NEW_CA/coordinator.crt"), refuses the old CA, rounds $R -> $(rounds_done)"
echo "PASS rotation"
