#!/usr/bin/env bash
# deploy/check.sh FEDC - check the deployment files with what Debian provides:
#   systemd   systemd-analyze verify, and security --offline (exposure <= 2.0)
#   configs   both coordinator YAML files start a real coordinator (127.0.0.1),
#             and their "# LO .. HI" comments match the ranges --help prints
#   compose   docker-compose config (the compose file schema); check_compose.py
#             runs the PKI job's script: only that job sees ca.key, each client
#             exactly ca.crt and its own certificate and key
#   Docker    the runtime packages the Dockerfile installs exist in apt and
#             provide every library `ldd fedc` names (no registry here, so the
#             image itself is not built in CI)
#   k8s       kubectl kustomize renders deploy/k8s, deploy/k8s-external (the
#             LoadBalancer for devices outside the cluster) and deploy/k8s-ha
#             (coordinator replicas on etcd) and deploy/k8s-ha-aggregators
#             (with the aggregator tier) without warnings;
#             deploy/check_k8s.py checks the objects (--ha: against
#             `fedc coordinator --help`; --aggregators: and `fedc aggregator
#             --help`), and must catch broken copies
#   alerts    promtool check rules and test rules on deploy/prometheus (Debian's
#             prometheus package; skipped with a note when promtool is absent)
set -euo pipefail
FEDC=$(readlink -f "${1:?usage: deploy/check.sh FEDC}")
cd "$(dirname "$0")"
D=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$D"' EXIT

sed "s|/usr/local/bin/fedc|$FEDC|" systemd/fedc-coordinator.service >"$D/fedc-coordinator.service"
systemd-analyze verify "$D/fedc-coordinator.service"
systemd-analyze security --offline=yes --threshold=20 "$D/fedc-coordinator.service" | tail -1
echo "check: systemd unit OK"

for cfg in coordinator.example.yaml k8s/coordinator.yaml k8s-ha/coordinator.yaml; do
  rm -f "$D/port"
  "$FEDC" coordinator --config "$cfg" --insecure-for-testing --listen 127.0.0.1:0 --state "$D/state-${cfg//\//-}" \
    --pki "" --port-file "$D/port" --audit-log=false >"$D/coord.log" 2>&1 &
  pid=$!
  for _ in $(seq 100); do [ -s "$D/port" ] || ! kill -0 $pid 2>/dev/null && break; sleep 0.1; done
  [ -s "$D/port" ] || { cat "$D/coord.log"; echo "check: $cfg does not start a coordinator" >&2; exit 1; }
  kill -TERM $pid && wait $pid
done
"$FEDC" coordinator --help >"$D/help"
python3 check_ranges.py "$D/help" coordinator.example.yaml k8s/coordinator.yaml k8s-ha/coordinator.yaml
echo "check: coordinator configs OK"

if command -v promtool >/dev/null; then
  promtool check rules prometheus/fedc-alerts.yml >/dev/null
  (cd prometheus && promtool test rules fedc-alerts.test.yml >/dev/null)
  # Every series the rules name is one the coordinator serves (a renamed metric would silence an alert).
  for m in $(grep -o 'fedc_[a-z_]*' prometheus/fedc-alerts.yml | sort -u); do
    grep -q "\"$m\"" ../coordinator/metrics.c || { echo "check: alert rules name $m, which no coordinator serves" >&2; exit 1; }
  done
  echo "check: Prometheus alert rules OK"
else
  echo "check: promtool not installed (Debian: prometheus): alert rules not checked"
fi

docker-compose -f docker/compose.yaml config -q
docker-compose -f docker/compose.yaml config | python3 check_compose.py "$FEDC"
echo "check: compose file OK"

pkgs=$(sed -n 's/^ARG RUNTIME_PKGS="\(.*\)"$/\1/p' docker/Dockerfile)
[ -n "$pkgs" ] || { echo "check: no ARG RUNTIME_PKGS in the Dockerfile" >&2; exit 1; }
for p in $pkgs; do apt-cache show "$p" >/dev/null 2>&1 || { echo "check: Dockerfile installs unknown package $p" >&2; exit 1; }; done
# shellcheck disable=SC2086
apt-cache depends --recurse --no-recommends --no-suggests --no-conflicts --no-breaks --no-replaces --no-enhances \
  $pkgs 2>/dev/null | grep -v '^ ' | sed 's/:amd64$//' | sort -u >"$D/closure"
for lib in $(ldd "$FEDC" | awk '$3 ~ /^\// {print $3}'); do
  owner=$(dpkg -S "$(readlink -f "$lib")" 2>/dev/null | head -1 | cut -d: -f1) || true
  case $owner in '' | libasan* | libubsan* | liblsan* | libtsan* | libatomic*) continue ;; esac # sanitizer runtimes (CI)
  grep -qx "$owner" "$D/closure" || { echo "check: no runtime package in the Dockerfile brings $lib ($owner)" >&2; exit 1; }
done
echo "check: Dockerfile runtime packages OK"

# Both renderings, without a warning (e.g. a deprecated field such as commonLabels).
for k in k8s k8s-external k8s-ha k8s-ha-aggregators; do
  kubectl kustomize "$k" >"$D/$k.yaml" 2>"$D/$k.err"
  [ ! -s "$D/$k.err" ] || { cat "$D/$k.err" >&2; echo "check: kubectl kustomize deploy/$k warns" >&2; exit 1; }
done
python3 check_k8s.py <"$D/k8s.yaml"
python3 check_k8s.py --external <"$D/k8s-external.yaml"
# The checker itself must catch a broken probe, and an external Service that hides the devices' addresses.
sed 's|path: /readyz|path: /ready|' "$D/k8s.yaml" | python3 check_k8s.py >/dev/null &&
  { echo "check: check_k8s.py missed a broken readiness probe" >&2; exit 1; }
sed 's|externalTrafficPolicy: Local|externalTrafficPolicy: Cluster|' "$D/k8s-external.yaml" |
  python3 check_k8s.py --external >/dev/null &&
  { echo "check: check_k8s.py missed an external Service without externalTrafficPolicy Local" >&2; exit 1; }
grep -v -- '--metrics-public' "$D/k8s.yaml" | python3 check_k8s.py >/dev/null &&
  { echo "check: check_k8s.py missed a public --metrics-listen without --metrics-public" >&2; exit 1; }
python3 check_k8s.py --ha "$D/help" <"$D/k8s-ha.yaml"
# ... and must catch each of these broken copies of deploy/k8s-ha.
while IFS='|' read -r edit what; do
  sed "$edit" "$D/k8s-ha.yaml" | python3 check_k8s.py --ha "$D/help" >/dev/null &&
    { echo "check: check_k8s.py --ha missed $what" >&2; exit 1; }
done <<'EOF'
s/minAvailable: 2/minAvailable: 1/|an etcd disruption budget below quorum
s/^  replicas: 2$/  replicas: 1/|a single coordinator replica
s/--etcd-ca=/--etcd-cacert=/|a flag the coordinator does not have
s/ReadWriteMany/ReadWriteOnce/|a shared store one replica at a time can mount
s/^          - coordinator$/          - coordinator\n          - client/|clients admitted to etcd's client port
s/component: client$/component: coordinator/|a client port closed to clients
s/port: metrics$/port: grpc/|probes on the client port (a standby fails them)
/--peer-client-cert-auth/d|etcd peers without client certificates
s/--etcd=fedc-etcd-0.fedc-etcd:2379,/--etcd=/|an --etcd list missing a member
EOF
"$FEDC" aggregator --help >"$D/agg-help"
python3 check_k8s.py --ha "$D/help" --aggregators "$D/agg-help" <"$D/k8s-ha-aggregators.yaml"
# The leader-only checks refuse the tier, the tier's refuse the leader-only rendering.
python3 check_k8s.py --ha "$D/help" <"$D/k8s-ha-aggregators.yaml" >/dev/null &&
  { echo "check: check_k8s.py --ha passed aggregators it was not told of" >&2; exit 1; }
python3 check_k8s.py --ha "$D/help" --aggregators "$D/agg-help" <"$D/k8s-ha.yaml" >/dev/null &&
  { echo "check: check_k8s.py --aggregators passed a rendering without aggregators" >&2; exit 1; }
# ... and must catch each of these broken copies of deploy/k8s-ha-aggregators.
while IFS='|' read -r edit what; do
  sed "$edit" "$D/k8s-ha-aggregators.yaml" | python3 check_k8s.py --ha "$D/help" --aggregators "$D/agg-help" \
    >/dev/null && { echo "check: check_k8s.py --aggregators missed $what" >&2; exit 1; }
done <<'EOF'
/--aggregator-tier/d|a leader without --aggregator-tier (it takes the uploads itself)
s/--upload-slots=/--upload-slot=/|a flag the aggregator does not have
s/^  serviceName: fedc-aggregator$/&\n  replicas: 2/|an aggregator count that each apply would set back under the autoscaler
/- aggregator$/,/--name=/s/--name=.*/--name=ag1/|aggregator pods sharing one certificate name (one registry key)
s/--advertise=.*fedc-aggregator:7071/--advertise=$(POD_IP):7071/|an aggregator advertising its pod IP
/^  name: fedc-aggregator$/,/^---/{/clusterIP: None/d}|a ClusterIP in front of the aggregators
s/--coordinator=fedc-coordinator:7070/--coordinator=fedc-coordinator:9464/|aggregators calling the metrics port
/- aggregator$/,/--etcd=/s/,fedc-etcd-2.fedc-etcd:2379//|an aggregator --etcd list missing a member
s/secretName: fedc-aggregator-etcd-pki/secretName: fedc-etcd-pki/|aggregators mounting the etcd members' key
s/^    kind: StatefulSet$/    kind: Deployment/|an autoscaler on something other than the aggregators
s/minReplicas: 2/minReplicas: 1/|an autoscaler that leaves one aggregator
s/maxReplicas: 8/maxReplicas: 300/|an autoscaler past the leader's 256 aggregators
/^kind: PodDisruptionBudget/,/^---/{/name: fedc-aggregator/,/^---/s/maxUnavailable: 1/maxUnavailable: 2/}|an aggregator budget that lets all go
/^  name: fedc-aggregator$/,/^---/s/component: client$/component: coordinator/|an upload port closed to clients
/^          - aggregator$/d|aggregators kept from etcd
/^    - podSelector:$/,/^    ports:$/{/component: aggregator$/s/aggregator/etcd/}|etcd pods admitted to the coordinator
s/name: fedc_aggregator_connections_open/name: fedc_aggregator_connections/|an autoscaler on a metric the aggregator does not export
/- --metrics-listen=0.0.0.0:9101/d|aggregators serving no metrics
s/prometheus.io\/port: "9101"/prometheus.io\/port: "9464"/|a scrape annotation off the aggregators' metrics port
EOF
echo "check: kubernetes manifests OK"
