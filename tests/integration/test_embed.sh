#!/usr/bin/env bash
# The client library as a device program sees it: install fedc (cmake
# --install), build tests/embed/embed_example.c against the installed header
# and `pkg-config fedc-client` only, and run it in a federation: 2 rounds,
# its update clipped by the runtime to the announced norm.
set -euo pipefail
. "$(dirname "$0")/lib.sh" "$@"
make_tmp
cmake --install "$BUILD_DIR" --prefix "$T/prefix" >/dev/null || fail "cmake --install failed"
[ -f "$T/prefix/include/fedc/client.h" ] || fail "header not installed"
PC=$(find "$T/prefix" -name fedc-client.pc | head -1)
[ -n "$PC" ] || fail "fedc-client.pc not installed"
export PKG_CONFIG_PATH=$(dirname "$PC")
LIBDIR=$(pkg-config --variable=libdir fedc-client)
# Sanitizer builds need the same runtime flags in the example.
SAN=""
# (grep without -q: -q would exit early, nm would die of SIGPIPE, and pipefail
# would call the whole test false.)
if nm -D "$LIBDIR/libfedc-client.so" 2>/dev/null | grep __asan_init >/dev/null; then SAN="-fsanitize=address,undefined"; fi
cc -std=c11 -Wall -Wextra -Werror $SAN $(pkg-config --cflags fedc-client) "$FEDC_SOURCE_DIR/tests/embed/embed_example.c" \
  -o "$T/embed" $(pkg-config --libs fedc-client) || fail "example does not build against the installed library"
# Only the public API is exported.
extra=$(nm -D --defined-only "$LIBDIR/libfedc-client.so" | awk '{print $3}' | grep -v '^fedc_' | grep -v '^_' || true)
[ -z "$extra" ] || fail "libfedc-client.so exports non-API symbols: $extra"
# Nor does it load BLAS: the runtime's vector steps are the portable kernels,
# so a device program does not map OpenBLAS + libgfortran (2.3 MiB of RSS,
# docs/results.md "Footprint") unless its own trainer wants them.
blas=$(readelf -d "$LIBDIR/libfedc-client.so" | grep -E 'NEEDED.*(blas|gfortran|quadmath)' || true)
[ -z "$blas" ] || fail "libfedc-client.so needs a BLAS library: $blas"

make_pki "$T/pki" itest dev1
# The example follows the header's one rule (create, run if OK, last error, destroy): a CA it cannot read
# ends it with that sentence and exit 1 (under ASan also leak-free: LeakSanitizer would exit 23).
rc=0
LD_LIBRARY_PATH="$LIBDIR" "$T/embed" 127.0.0.1:1 "$T/pki/no-such-ca.crt" "$T/pki/client-dev1.crt" \
  "$T/pki/client-dev1.key" > "$T/embed-bad.out" 2>&1 || rc=$?
[ "$rc" = 1 ] || fail "bad CA path: expected exit 1, got $rc: $(cat "$T/embed-bad.out")"
grep -q 'no-such-ca.crt' "$T/embed-bad.out" || fail "bad CA path: error does not name the file: $(cat "$T/embed-bad.out")"
start_coordinator --pki "$T/pki" --federation itest --state "$T/state" --model 784-10 --rounds 2 \
  --min-clients 1 --cohort 1 --min-updates 1 --clip-norm 0.5 --poll-ms 100
LD_LIBRARY_PATH="$LIBDIR" "$T/embed" "$COORD_ADDR" "$T/pki/ca.crt" "$T/pki/client-dev1.crt" \
  "$T/pki/client-dev1.key" > "$T/embed.out" 2>&1 || fail "embedded client failed: $(cat "$T/embed.out")"
[ "$(grep -c '^uploaded' "$T/embed.out")" = 2 ] || fail "expected 2 uploads: $(cat "$T/embed.out")"
# +0.01 on 7850 weights has norm 0.886: the runtime clipped it to <= 0.5.
awk '/^uploaded/ { split($3, n, "="); split($4, s, "="); if (n[2] > 0.5 || s[2] >= 1) bad = 1 } END { exit bad }' \
  "$T/embed.out" || fail "update not clipped: $(cat "$T/embed.out")"
echo "PASS embed"
