#!/usr/bin/env bash
# etcd-auth.sh - turn on etcd's access control for one federation, so each
# fedc role can write only its own keys (issue 23's review: with client
# certificates alone, any certificate etcd trusts could move the model
# pointer, take the leader key or register as any aggregator).
#
# etcd with --client-cert-auth takes a client certificate's CommonName as its
# user (fedc certificates carry the name given to `fedc pki issue --name`):
#   root                 the admin who runs this (`--role admin --name root`)
#   COORDINATOR          read-write on PREFIX/ (election, model pointer,
#                        replica registry, the async buffer's fences)
#   each AGGREGATOR      read-write on PREFIX/aggregators/AGGREGATOR only: its
#                        own registration, nothing else (not even reading)
# Any other certificate etcd trusts (a device's, if etcd shares the
# federation's CA) has no user and is refused everything.
#
#   ETCDCTL="etcdctl --endpoints H:P --cacert CA --cert root.crt --key root.key" \
#     deploy/etcd-auth.sh PREFIX COORDINATOR [AGGREGATOR...]
# e.g. deploy/etcd-auth.sh /fedc/prod coordinator fedc-aggregator-0 fedc-aggregator-1
# Idempotent (existing users, roles and grants are kept); the last step is
# `auth enable`. Run it again to add aggregators (as root: auth is on by then).
set -euo pipefail
PREFIX=${1:?usage: etcd-auth.sh PREFIX COORDINATOR [AGGREGATOR...] (etcdctl command in ETCDCTL)}
COORD=${2:?usage: etcd-auth.sh PREFIX COORDINATOR [AGGREGATOR...]}
shift 2
read -r -a E <<<"${ETCDCTL:?set ETCDCTL to an etcdctl command with endpoints and the root certificate}"
case $PREFIX in /*) ;; *) echo "etcd-auth: PREFIX must start with / (the coordinator's --etcd-prefix, default /fedc/<federation>)" >&2; exit 2 ;; esac
PREFIX=${PREFIX%/}
ok_exists() { # CMD...: run it; "already exists" / "already granted" is fine
  local out
  if ! out=$("${E[@]}" "$@" 2>&1); then
    case $out in *"already exists"* | *"already granted"* | *"already has"*) ;; *) echo "etcd-auth: ${*}: $out" >&2; exit 1 ;; esac
  fi
}
user() { # NAME ROLE
  ok_exists user add "$1" --no-password
  ok_exists user grant-role "$1" "$2"
}
ok_exists user add root --no-password
ok_exists user grant-role root root
ok_exists role add fedc-coordinator
ok_exists role grant-permission fedc-coordinator readwrite "$PREFIX/" --prefix=true
user "$COORD" fedc-coordinator
for a in "$@"; do
  case $a in *[!a-zA-Z0-9._-]* | "") echo "etcd-auth: bad aggregator name '$a'" >&2; exit 2 ;; esac
  ok_exists role add "fedc-aggregator-$a"
  ok_exists role grant-permission "fedc-aggregator-$a" readwrite "$PREFIX/aggregators/$a"
  user "$a" "fedc-aggregator-$a"
done
ok_exists auth enable
echo "etcd-auth: access control on: $COORD on $PREFIX/, ${*:+aggregators $* on their own keys, }root; everyone else refused"
