#!/usr/bin/env bash
# `fedc pki init` into a directory other local users can write to (or that
# another user owns) is refused with one line naming the directory and its
# mode, and the directory is left exactly as it was: anyone who can write to
# it could swap ca.crt later (review issue 6, item 10). A directory that is
# ours and 0700/0755 is used as before.
set -euo pipefail
. "$(dirname "$0")/lib.sh" "$@"
make_tmp

refused() { # DIR MODE_SHOWN TEXT
  local rc=0
  "$FEDC" pki init --dir "$1" --federation demo >"$T/out" 2>"$T/err" || rc=$?
  [ "$rc" -eq 1 ] || fail "pki init --dir $1 ($2): exit $rc, want 1: $(cat "$T/err")"
  [ "$(wc -l <"$T/err")" -eq 1 ] || fail "pki init --dir $1: not one line: $(cat "$T/err")"
  grep -qF -- "fedc pki: refusing to use $1:" "$T/err" || fail "refusal does not name $1: $(cat "$T/err")"
  grep -qF -- "$3" "$T/err" || fail "refusal of $1 does not say '$3': $(cat "$T/err")"
  [ -z "$(ls -A "$1")" ] || fail "pki init wrote into $1 although it refused: $(ls -A "$1")"
  [ "$(stat -c %a "$1")" = "$2" ] || fail "mode of $1 changed to $(stat -c %a "$1")"
}

for mode in 777 770 1777; do
  mkdir "$T/open$mode"
  chmod "$mode" "$T/open$mode"
  shown=$(printf '%04o' "0$mode")
  refused "$T/open$mode" "$mode" "its mode is $shown, so other local users could replace the files in it; chmod 700 $T/open$mode or choose another --dir"
done

# --json: one object saying why.
out=$("$FEDC" pki init --dir "$T/open777" --federation demo --json 2>/dev/null || true)
[ "$(json_get "$out" ok)" = false ] || fail "--json refusal: $out"
case $(json_get "$out" error) in *"$T/open777"*0777*) ;; *) fail "--json refusal does not name the dir and mode: $out" ;; esac

# issue --out into such a directory: the same rule.
"$FEDC" pki init --dir "$T/pki" --federation demo >/dev/null || fail "pki init into a fresh dir failed"
rc=0
"$FEDC" pki issue --dir "$T/pki" --role client --name c1 --out "$T/open777" 2>"$T/err" >/dev/null || rc=$?
[ "$rc" -eq 1 ] || fail "pki issue --out into a 0777 dir: exit $rc: $(cat "$T/err")"
grep -qF -- "chmod 700 $T/open777 or choose another --out" "$T/err" || fail "issue refusal: $(cat "$T/err")"
[ -z "$(ls -A "$T/open777")" ] || fail "pki issue wrote into $T/open777"

# Owned by someone else (root can make such a directory; others skip this).
if [ "$(id -u)" = 0 ]; then
  mkdir "$T/theirs"
  chown 65534 "$T/theirs"
  chmod 700 "$T/theirs"
  refused "$T/theirs" 700 "owned by uid 65534"
fi

# Controls: an existing directory that is ours and closed to others works.
mkdir "$T/mine"
chmod 755 "$T/mine"
"$FEDC" pki init --dir "$T/mine" --federation demo >/dev/null || fail "pki init into an existing 0755 dir of ours failed"
[ -f "$T/mine/ca.crt" ] || fail "no ca.crt in $T/mine"
[ "$(stat -c %a "$T/mine")" = 755 ] || fail "mode of $T/mine changed"
echo "ok"
