#!/usr/bin/env bash
# Signed model versions and model encryption at rest, over real processes and
# mutual TLS on 127.0.0.1, with certificates from `fedc pki`.
#   1. `fedc pki init` issues a model-signing certificate (role signer, EKU
#      codeSigning only); the coordinator signs every version; clients train
#      on them; `fedc model get` writes FILE.manifest; `fedc model verify`
#      accepts the file.
#   2. The client's checks (the same code, common/manifest.c), through
#      `fedc model verify`: a changed weight, a replayed older manifest, an
#      edited manifest, a manifest signed by a client certificate, one signed
#      by another CA's signer, a missing manifest: each refused with why.
#   3. A coordinator refuses to start on a state whose current model was
#      changed at rest (hashes fixed up to match), whose manifest is gone, or
#      whose manifests are all gone with a model of the attacker's in place
#      (it would have signed that): only --adopt-state, given by the
#      operator, signs a state's current version as it is. A server
#      optimizer state changed at rest is refused (the manifest names it).
#   4. Without a signing key the coordinator warns; a client refuses the
#      unsigned models (the round goes on without it), a client with
#      --allow-unsigned-models trains. A coordinator whose CA bundle lets it
#      sign with another CA's signer key: its client refuses every model.
#   5. --model-key-file: model versions on disk are AES-256-GCM sealed, served
#      and signed as before; a restart needs the key (none or a wrong one is
#      refused with a reason); a sealed file swapped for a plaintext one is
#      refused; a key file others can read, or one inside the state
#      directory, is refused.
set -euo pipefail
. "$(dirname "$0")/lib.sh" "$@"
. "$(dirname "$0")/_data.sh"
make_tmp
make_pki "$T/pki" sig a b
make_idx "$T" 100 2
ADMIN=(--pki "$T/pki" --name root)
FED=(--federation sig --model 784-10 --min-clients 2 --cohort 2 --poll-ms 100 --round-timeout-ms 30000)

# ---- 1. signed versions ----
[ -f "$T/pki/signer-coordinator.crt" ] && [ -f "$T/pki/signer-coordinator.key" ] ||
  fail "pki init issued no model-signing certificate"
openssl x509 -in "$T/pki/signer-coordinator.crt" -noout -ext extendedKeyUsage | grep -q "Code Signing" ||
  fail "signer certificate lacks EKU codeSigning"
openssl x509 -in "$T/pki/signer-coordinator.crt" -noout -ext extendedKeyUsage | grep -q "TLS" &&
  fail "signer certificate may be used for TLS"
start_coordinator --pki "$T/pki" --state "$T/state" "${FED[@]}" --min-updates 2 --rounds 2
assert_contains "$T/coord.log" "model versions are signed by spiffe://sig/signer/coordinator"
start_idx_clients a b
wait_completed 2 || fail "2 signed rounds did not complete"
for v in 0 1 2; do [ -s "$T/state/models/v00000$v.manifest" ] || fail "no manifest for v$v"; done
for v in 1 2; do
  "$FEDC" model get --coordinator "$COORD_ADDR" "${ADMIN[@]}" --version $v --out "$T/v$v.safetensors" >"$T/get$v.out"
  assert_contains "$T/get$v.out" "signed by spiffe://sig/signer/coordinator"
  [ -s "$T/v$v.safetensors.manifest" ] || fail "model get wrote no manifest for v$v"
done
# No --model-average here: asking for the average is refused with the reason, and writes nothing.
if "$FEDC" model get --coordinator "$COORD_ADDR" "${ADMIN[@]}" --averaged --out "$T/avg.safetensors" 2>"$T/avg.err"; then
  fail "model get --averaged succeeded without --model-average"
fi
assert_contains "$T/avg.err" "keeps no model average (start it with --model-average)"
[ ! -e "$T/avg.safetensors" ] || fail "a refused model get --averaged wrote a file"
kill -TERM "${CL[@]}" 2>/dev/null || true
kill -TERM "$COORD_PID"
wait "$COORD_PID" || fail "coordinator exited non-zero on SIGTERM"
out=$("$FEDC" model verify "$T/v2.safetensors" --pki "$T/pki" --json)
[ "$(json_get "$out" ok)" = true ] && [ "$(json_get "$out" version)" = 2 ] && [ "$(json_get "$out" round)" = 2 ] &&
  [ "$(json_get "$out" parent)" = 1 ] && [ "$(json_get "$out" signer)" = spiffe://sig/signer/coordinator ] ||
  fail "model verify: $out"
"$FEDC" model verify "$T/v2.safetensors" --pki "$T/pki" --version 2 >/dev/null || fail "verify --version 2 failed"

# ---- 2. what a client refuses, through the same checks ----
# refused NAME MESSAGE ARGS...: `fedc model verify ARGS` exits 1 and says MESSAGE.
refused() {
  local name=$1 msg=$2
  shift 2
  if "$FEDC" model verify "$@" --pki "$T/pki" 2>"$T/$name.err"; then fail "$name: accepted"; fi
  assert_contains "$T/$name.err" "$msg"
}
refused version-other "manifest is for model version 2, not 3" "$T/v2.safetensors" --version 3
# a changed weight (the file's own metadata hash fixed up: only the manifest can tell)
python3 - "$T/v2.safetensors" "$T/flip.safetensors" <<'PY'
import hashlib, json, struct, sys
b = bytearray(open(sys.argv[1], "rb").read()); n = struct.unpack("<Q", b[:8])[0]
b[8 + n + 40] ^= 0x01
h = json.loads(b[8:8 + n]); h["__metadata__"]["fedc.sha256"] = hashlib.sha256(b[8 + n:]).hexdigest()
hb = json.dumps(h).encode(); hb += b" " * (-len(hb) % 8)
open(sys.argv[2], "wb").write(struct.pack("<Q", len(hb)) + hb + bytes(b[8 + n:]))
PY
cp "$T/v2.safetensors.manifest" "$T/flip.safetensors.manifest"
refused flipped "model SHA-256 differs from the signed manifest's" "$T/flip.safetensors"
refused replay "differs from the signed manifest's (v1)" "$T/v2.safetensors" --manifest "$T/v1.safetensors.manifest"
refused replay-version "manifest is for model version 1, not 2" "$T/v2.safetensors" --version 2 \
  --manifest "$T/v1.safetensors.manifest"
# manifest blocks: rewrite MSG (python edits), optionally re-signed by KEY with CERT
pem_edit() { # IN OUT EDIT_PY [KEY CERT]
  python3 - "$@" <<'PY'
import base64, re, subprocess, sys, textwrap
src, dst, edit = sys.argv[1:4]
t = open(src).read()
blocks = re.findall(r"-----BEGIN ([A-Z ]+)-----\n(.*?)-----END \1-----\n", t, re.S)
msg = base64.b64decode(blocks[0][1]).decode(); sig = base64.b64decode(blocks[1][1]); cert = t[t.index("-----BEGIN CERTIFICATE-----"):]
msg = eval(edit, {"m": msg})
if len(sys.argv) > 5:
    sig = subprocess.run(["openssl", "dgst", "-sha256", "-sign", sys.argv[4]], input=msg.encode(), capture_output=True, check=True).stdout
    cert = open(sys.argv[5]).read()
pem = lambda n, d: "-----BEGIN %s-----\n%s\n-----END %s-----\n" % (n, "\n".join(textwrap.wrap(base64.b64encode(d).decode(), 64)), n)
open(dst, "w").write(pem("FEDC SIGNED MESSAGE", msg.encode()) + pem("FEDC SIGNATURE", sig) + cert)
PY
}
pem_edit "$T/v2.safetensors.manifest" "$T/edited.manifest" 'm.replace("round 2", "round 7")'
refused edited "signature by spiffe://sig/signer/coordinator does not verify" "$T/v2.safetensors" \
  --manifest "$T/edited.manifest"
pem_edit "$T/v2.safetensors.manifest" "$T/byclient.manifest" 'm' "$T/pki/client-a.key" "$T/pki/client-a.crt"
refused by-client "signed by spiffe://sig/client/a, which is not a signer certificate" "$T/v2.safetensors" \
  --manifest "$T/byclient.manifest"
"$FEDC" pki init --dir "$T/other" --federation sig >/dev/null
pem_edit "$T/v2.safetensors.manifest" "$T/othersigner.manifest" 'm' "$T/other/signer-coordinator.key" \
  "$T/other/signer-coordinator.crt"
refused other-ca "does not verify against" "$T/v2.safetensors" --manifest "$T/othersigner.manifest"
rm "$T/flip.safetensors.manifest"
refused unsigned "cannot read manifest" "$T/flip.safetensors"

# ---- 3. a coordinator refuses a state changed at rest ----
cp -a "$T/state" "$T/state.bak"
python3 - "$T/state/models/v000002.safetensors" "$T/state/state.json" <<'PY'
import hashlib, json, struct, sys
p, sp = sys.argv[1:3]
b = bytearray(open(p, "rb").read()); n = struct.unpack("<Q", b[:8])[0]
b[8 + n + 40] ^= 0x01
sha = hashlib.sha256(b[8 + n:]).hexdigest()
h = json.loads(b[8:8 + n]); h["__metadata__"]["fedc.sha256"] = sha
hb = json.dumps(h).encode(); hb += b" " * (-len(hb) % 8)
open(p, "wb").write(struct.pack("<Q", len(hb)) + hb + bytes(b[8 + n:]))
s = json.load(open(sp)); s["sha256"] = sha; json.dump(s, open(sp, "w"))
PY
if timeout 20 "$FEDC" coordinator --listen 127.0.0.1:0 --pki "$T/pki" --state "$T/state" "${FED[@]}" \
  2>"$T/tampered.err"; then fail "coordinator started on a tampered model"; fi
assert_contains "$T/tampered.err" "does not match model v2: model SHA-256 differs from the signed manifest's"
rm -rf "$T/state" && cp -a "$T/state.bak" "$T/state"
rm "$T/state/models/v000002.manifest"
if timeout 20 "$FEDC" coordinator --listen 127.0.0.1:0 --pki "$T/pki" --state "$T/state" "${FED[@]}" \
  2>"$T/nomanifest.err"; then fail "coordinator started with a manifest removed"; fi
assert_contains "$T/nomanifest.err" "v000002.manifest is missing: restore it from a backup"
# all manifests gone and a model of the attacker's in place: refused, not signed
python3 - "$T/state/models/v000002.safetensors" "$T/state/state.json" <<'PY'
import hashlib, json, struct, sys
p, sp = sys.argv[1:3]
b = bytearray(open(p, "rb").read()); n = struct.unpack("<Q", b[:8])[0]
data = struct.pack("<%df" % ((len(b) - 8 - n) // 4), *([1.2345] * ((len(b) - 8 - n) // 4)))
sha = hashlib.sha256(data).hexdigest()
h = json.loads(b[8:8 + n]); h["__metadata__"]["fedc.sha256"] = sha
hb = json.dumps(h).encode(); hb += b" " * (-len(hb) % 8)
open(p, "wb").write(struct.pack("<Q", len(hb)) + hb + data)
s = json.load(open(sp)); s["sha256"] = sha; json.dump(s, open(sp, "w"))
PY
rm "$T"/state/models/*.manifest
if timeout 20 "$FEDC" coordinator --listen 127.0.0.1:0 --pki "$T/pki" --state "$T/state" "${FED[@]}" \
  2>"$T/launder.err"; then fail "coordinator started (and would sign) with every manifest removed"; fi
assert_contains "$T/launder.err" "v000002.manifest is missing"
ls "$T"/state/models/*.manifest >/dev/null 2>&1 && fail "a manifest was written for the planted model"
# the operator adopting a pre-signing state: signed as it is, once
rm -rf "$T/state" && cp -a "$T/state.bak" "$T/state" && rm "$T"/state/models/*.manifest
start_coordinator --pki "$T/pki" --state "$T/state" "${FED[@]}" --adopt-state
wait_for grep -q "adopt-state: signing model v2" "$T/coord.log" 20 || fail "--adopt-state did not sign v2"
kill -TERM "$COORD_PID"
wait "$COORD_PID" || true
[ -s "$T/state/models/v000002.manifest" ] || fail "--adopt-state wrote no manifest"
# server optimizer state changed at rest (its own metadata hash fixed up)
start_coordinator --pki "$T/pki" --state "$T/state-adam" "${FED[@]}" --min-updates 2 --rounds 2 \
  --server-optimizer adam --server-lr 0.01
start_idx_clients a b
wait_completed 2 || fail "adam rounds did not complete"
kill -TERM "${CL[@]}" 2>/dev/null || true
kill -TERM "$COORD_PID"
wait "$COORD_PID" || true
python3 - "$T/state-adam/models/v000002.opt.safetensors" <<'PY'
import hashlib, json, struct, sys
p = sys.argv[1]
b = bytearray(open(p, "rb").read()); n = struct.unpack("<Q", b[:8])[0]
k = (len(b) - 8 - n) // 4
data = bytearray(b[8 + n:]); data[0:4 * (k // 2)] = struct.pack("<%df" % (k // 2), *([5.0] * (k // 2)))
h = json.loads(b[8:8 + n]); h["__metadata__"]["fedc.sha256"] = hashlib.sha256(data).hexdigest()
hb = json.dumps(h).encode(); hb += b" " * (-len(hb) % 8)
open(p, "wb").write(struct.pack("<Q", len(hb)) + hb + bytes(data))
PY
if timeout 20 "$FEDC" coordinator --listen 127.0.0.1:0 --pki "$T/pki" --state "$T/state-adam" "${FED[@]}" \
  --server-optimizer adam --server-lr 0.01 2>"$T/opt.err"; then fail "coordinator started on changed optimizer state"; fi
assert_contains "$T/opt.err" "server optimizer state of model v2 differs from what its signed manifest names"

# ---- 4. no signing key: clients refuse unless told otherwise ----
make_pki "$T/pki2" sig a b
rm "$T/pki2/signer-coordinator.crt" "$T/pki2/signer-coordinator.key"
start_coordinator --pki "$T/pki2" --state "$T/state2" "${FED[@]}" --min-updates 1 --rounds 2
assert_contains "$T/coord.log" "no model-signing key"
start_bg strict "$FEDC" client --coordinator "$COORD_ADDR" --pki "$T/pki2" --name a \
  --data "idx:$T/img0.idx,$T/lbl0.idx" --model 784-10
S1=$BG_PID
start_bg lenient "$FEDC" client --coordinator "$COORD_ADDR" --pki "$T/pki2" --name b \
  --data "idx:$T/img1.idx,$T/lbl1.idx" --model 784-10 --allow-unsigned-models
S2=$BG_PID
wait_for bash -c "[ \"\$('$FEDC' status --coordinator $COORD_ADDR --pki '$T/pki2' --name root --json |
  jq -r .rounds_completed)\" -ge 2 ]" 90 || fail "rounds did not complete with the lenient client"
assert_contains "$T/strict.log" "refusing model v0: it is unsigned"
"$FEDC" rounds --coordinator "$COORD_ADDR" --pki "$T/pki2" --name root --json >"$T/rounds2.jsonl"
[ "$(jq -s '[.[] | select(.outcome == "completed" and .participants == 1)] | length' "$T/rounds2.jsonl")" -ge 2 ] ||
  fail "unsigned rounds should count the lenient client only: $(cat "$T/rounds2.jsonl")"
kill -TERM "$S1" "$S2" 2>/dev/null || true
kill -TERM "$COORD_PID"
wait "$COORD_PID" || true

# a signer from another CA (the coordinator trusts both; the client only its own)
cat "$T/pki/ca.crt" "$T/other/ca.crt" >"$T/bundle.crt"
start_coordinator --pki "$T/pki" --ca "$T/bundle.crt" --signing-cert "$T/other/signer-coordinator.crt" \
  --signing-key "$T/other/signer-coordinator.key" --state "$T/state4" --federation sig --model 784-10 \
  --min-clients 1 --cohort 1 --min-updates 1 --poll-ms 100 --round-timeout-ms 3000
start_bg foreign "$FEDC" client --coordinator "$COORD_ADDR" --pki "$T/pki" --name a \
  --data "idx:$T/img0.idx,$T/lbl0.idx" --model 784-10
S1=$BG_PID
wait_for grep -q "refusing model v0: signer certificate" "$T/foreign.log" 30 || fail "a foreign signer was accepted"
assert_contains "$T/foreign.log" "does not verify against"
[ "$("$FEDC" status --coordinator "$COORD_ADDR" "${ADMIN[@]}" --json | jq -r .rounds_completed)" = 0 ] ||
  fail "a round completed on a model the client should refuse"
kill -TERM "$S1" 2>/dev/null || true
kill -TERM "$COORD_PID"
wait "$COORD_PID" || true

# ---- 5. encryption at rest ----
openssl rand -hex 32 >"$T/model.key"
chmod 644 "$T/model.key"
if "$FEDC" coordinator --listen 127.0.0.1:0 --pki "$T/pki" --state "$T/state3" "${FED[@]}" \
  --model-key-file "$T/model.key" 2>"$T/keymode.err"; then fail "a world-readable key file was accepted"; fi
assert_contains "$T/keymode.err" "has mode 0644: other users may read it; chmod 600"
chmod 600 "$T/model.key"
mkdir -p "$T/state3" && cp "$T/model.key" "$T/state3/k" && chmod 600 "$T/state3/k"
if "$FEDC" coordinator --listen 127.0.0.1:0 --pki "$T/pki" --state "$T/state3" "${FED[@]}" \
  --model-key-file "$T/state3/k" 2>"$T/keyin.err"; then fail "a key inside the state directory was accepted"; fi
assert_contains "$T/keyin.err" "is inside the state directory"
printf 'not-a-key\n' >"$T/bad.key" && chmod 600 "$T/bad.key"
if "$FEDC" coordinator --listen 127.0.0.1:0 --pki "$T/pki" --state "$T/state3" "${FED[@]}" \
  --model-key-file "$T/bad.key" 2>"$T/keybad.err"; then fail "a malformed key file was accepted"; fi
assert_contains "$T/keybad.err" "expected 64 hex digits"
rm "$T/state3/k"
start_coordinator --pki "$T/pki" --state "$T/state3" "${FED[@]}" --min-updates 2 --rounds 3 \
  --model-key-file "$T/model.key"
start_idx_clients a b
wait_completed 2 || fail "rounds did not complete with encrypted model storage"
for v in 0 1 2; do
  f="$T/state3/models/v00000$v.safetensors"
  [ "$(head -c 8 "$f")" = FEDCENC1 ] || fail "$f is not sealed"
  grep -q "fedc.sha256" "$f" && fail "$f leaks its plaintext header"
done
"$FEDC" model get --coordinator "$COORD_ADDR" "${ADMIN[@]}" --version 1 --out "$T/e1.safetensors" >/dev/null ||
  fail "an old encrypted version was not served"
"$FEDC" model verify "$T/e1.safetensors" --pki "$T/pki" --version 1 >/dev/null || fail "encrypted v1 not signed"
kill -TERM "${CL[@]}" 2>/dev/null || true
kill -TERM "$COORD_PID"
wait "$COORD_PID" || fail "coordinator exited non-zero on SIGTERM"
if timeout 20 "$FEDC" coordinator --listen 127.0.0.1:0 --pki "$T/pki" --state "$T/state3" "${FED[@]}" \
  2>"$T/nokey.err"; then fail "encrypted state opened without the key"; fi
assert_contains "$T/nokey.err" "is encrypted at rest: start the coordinator with --model-key-file"
openssl rand -hex 32 >"$T/wrong.key" && chmod 600 "$T/wrong.key"
if timeout 20 "$FEDC" coordinator --listen 127.0.0.1:0 --pki "$T/pki" --state "$T/state3" "${FED[@]}" \
  --model-key-file "$T/wrong.key" 2>"$T/wrongkey.err"; then fail "encrypted state opened with a wrong key"; fi
assert_contains "$T/wrongkey.err" "does not decrypt with the key of --model-key-file"
cp -a "$T/state3" "$T/state3.bak"
cur=$(jq -r .version "$T/state3/state.json")
cp "$T/e1.safetensors" "$T/state3/models/v00000$cur.safetensors" # a plaintext file in a sealed one's place
if timeout 20 "$FEDC" coordinator --listen 127.0.0.1:0 --pki "$T/pki" --state "$T/state3" "${FED[@]}" \
  --model-key-file "$T/model.key" 2>"$T/plain.err"; then fail "a plaintext file was read under the key"; fi
assert_contains "$T/plain.err" "is not encrypted although --model-key-file is set"
rm -rf "$T/state3" && mv "$T/state3.bak" "$T/state3"
start_coordinator --pki "$T/pki" --state "$T/state3" "${FED[@]}" --min-updates 2 --rounds 3 \
  --model-key-file "$T/model.key"
wait_for grep -q "resuming from $T/state3" "$T/coord.log" 20 || fail "restart with the key did not resume"
echo "PASS signed_models"
