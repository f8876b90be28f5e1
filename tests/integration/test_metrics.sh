#!/usr/bin/env bash
# The coordinator's metrics and health endpoints, scraped by a real
# Prometheus (Debian's `prometheus` package), everything on 127.0.0.1:
#   - --metrics-listen 127.0.0.1:0 binds a free port and logs it;
#   - /healthz and /readyz answer 200 while serving; an unknown path is 404,
#     a POST is 405;
#   - after rounds with two clients /metrics passes `promtool check metrics`
#     and says what happened: rounds completed, updates accepted, the model
#     version, one engine state at a time, the round-duration histogram;
#   - a Prometheus server scraping it answers queries about it (up == 1, the
#     rounds completed);
#   - TLS handshakes are counted: the clients' as ok, a certificate from another
#     CA as failed_certificate, bytes that are not TLS as failed_protocol;
#   - --log-format json: every log line is an object with ts, level, module, msg.
set -euo pipefail
. "$(dirname "$0")/lib.sh" "$@"
. "$(dirname "$0")/_data.sh"
make_tmp
command -v promtool >/dev/null && command -v prometheus >/dev/null || fail "prometheus is not installed (scripts/install-deps.sh)"
make_pki "$T/pki" met a b
make_idx "$T" 100 2
ADMIN=(--pki "$T/pki" --name root)

start_coordinator --pki "$T/pki" --federation met --state "$T/state" --model 784-10 --rounds 3 --min-clients 2 \
  --cohort 2 --min-updates 2 --poll-ms 100 --round-timeout-ms 30000 --metrics-listen 127.0.0.1:0 --log-format json
wait_for grep -q "metrics on http://127.0.0.1:[0-9]*/metrics" "$T/coord.log" 20 || fail "no metrics listener logged"
MPORT=$(grep -o "metrics on http://127.0.0.1:[0-9]*" "$T/coord.log" | head -1 | sed 's/.*://')
M=http://127.0.0.1:$MPORT
[ "$(curl -fsS "$M/healthz")" = ok ] || fail "/healthz"
[ "$(curl -fsS "$M/readyz")" = ready ] || fail "/readyz"
code=$(curl -s -o /dev/null -w '%{http_code}' "$M/nope" || true)
[ "$code" = 404 ] || fail "unknown path answered $code"
code=$(curl -s -o /dev/null -w '%{http_code}' -X POST -d x=1 "$M/metrics" || true)
[ "$code" = 405 ] || fail "POST answered $code"

start_idx_clients a b
wait_completed 3 || fail "3 rounds did not complete"
curl -fsS "$M/metrics" >"$T/metrics.txt"
promtool check metrics <"$T/metrics.txt" >"$T/promtool.txt" 2>&1 || fail "promtool: $(cat "$T/promtool.txt")"
val() { awk -v k="$1" '$1 == k { print $2 }' "$T/metrics.txt"; }
[ "$(val fedc_rounds_completed_total)" = 3 ] || fail "rounds completed: $(val fedc_rounds_completed_total)"
[ "$(val fedc_uploads_accepted_total)" = 6 ] || fail "uploads accepted: $(val fedc_uploads_accepted_total)"
[ "$(val fedc_model_version)" = 3 ] || fail "model version: $(val fedc_model_version)"
[ "$(val fedc_clients_known)" = 2 ] || fail "clients known: $(val fedc_clients_known)"
[ "$(val 'fedc_round_duration_seconds_count{outcome="completed"}')" = 3 ] || fail "duration histogram count"
[ "$(grep -c '^fedc_round_state{' "$T/metrics.txt")" -ge 6 ] || fail "round states"
[ "$(awk '/^fedc_round_state\{/ { s += $2 } END { print s }' "$T/metrics.txt")" = 1 ] || fail "not one state at a time"
awk '$1 == "fedc_process_resident_memory_bytes" && $2 > 1e6 { ok = 1 } END { exit !ok }' "$T/metrics.txt" ||
  fail "no RSS"
awk '$1 == "fedc_checkins_total" && $2 >= 6 { ok = 1 } END { exit !ok }' "$T/metrics.txt" || fail "check-ins"

# TLS handshakes: the clients' succeeded; a certificate from another CA and
# bytes that are not TLS fail, each counted under its cause.
"$FEDC" pki init --dir "$T/other" --federation met >/dev/null
"$FEDC" pki issue --dir "$T/other" --role client --name mallory >/dev/null
cat "$T/pki/ca.crt" "$T/other/ca.crt" >"$T/bundle.crt" # so the client's own pre-check lets it try
"$FEDC" status --coordinator "$COORD_ADDR" --ca "$T/bundle.crt" --cert "$T/other/client-mallory.crt" \
  --key "$T/other/client-mallory.key" >/dev/null 2>&1 && fail "another CA's client certificate was accepted"
python3 -c 'import socket,sys; s=socket.create_connection(("127.0.0.1", int(sys.argv[1]))); s.sendall(b"GET / HTTP/1.0\r\n\r\n" * 4); s.settimeout(5)
try: s.recv(100)
except Exception: pass' "$COORD_PORT"
tls() { curl -fsS "$M/metrics" | awk -v k="fedc_tls_handshakes_total{result=\"$1\"}" '$1 == k { print $2 }'; }
wait_for bash -c "[ \"\$(curl -fsS $M/metrics | awk '\$1 == \"fedc_tls_handshakes_total{result=\\\"failed_protocol\\\"}\" { print \$2 }')\" -ge 1 ]" 10 ||
  fail "a non-TLS connection was not counted: $(curl -fsS "$M/metrics" | grep tls_handshakes)"
[ "$(tls ok)" -ge 2 ] && [ "$(tls failed_certificate)" -ge 1 ] ||
  fail "handshakes: $(curl -fsS "$M/metrics" | grep tls_handshakes)"

# A real Prometheus scrapes the coordinator and answers queries about it.
PPORT=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
cat >"$T/prometheus.yml" <<EOF
global:
  scrape_interval: 1s
scrape_configs:
  - job_name: fedc
    static_configs:
      - targets: ["127.0.0.1:$MPORT"]
EOF
promtool check config "$T/prometheus.yml" >/dev/null || fail "promtool check config"
start_bg prometheus prometheus --config.file="$T/prometheus.yml" --storage.tsdb.path="$T/tsdb" \
  --web.listen-address="127.0.0.1:$PPORT" --log.level=warn
q() { curl -sS -G "http://127.0.0.1:$PPORT/api/v1/query" --data-urlencode "query=$1" 2>&1; }
wait_for bash -c "curl -fsS 'http://127.0.0.1:$PPORT/api/v1/query' --data-urlencode 'query=fedc_rounds_completed_total' 2>/dev/null |
  jq -e '.data.result[0].value[1] == \"3\"' >/dev/null" 60 ||
  fail "Prometheus never answered fedc_rounds_completed_total = 3: $(q fedc_rounds_completed_total) $(tail -5 "$T/prometheus.log")"
# (Prometheus commits a scrape's `up` apart from its samples: poll for each answer.)
qwait() { # QUERY VALUE
  local i
  for i in $(seq 1 100); do
    q "$1" | jq -e --arg v "$2" '.data.result[0].value[1] == $v' >/dev/null && return 0
    sleep 0.2
  done
  fail "Prometheus: $1 is not $2: $(q "$1")"
}
qwait 'up{job="fedc"}' 1
qwait 'sum(fedc_uploads_accepted_total)' 6
qwait 'fedc_round_duration_seconds_count{outcome="completed"}' 3
kill -TERM "$COORD_PID"
wait "$COORD_PID" || fail "coordinator exited non-zero on SIGTERM"
kill -KILL "${CL[@]}" 2>/dev/null || true
# --log-format json: every line of the coordinator's log is one object with the stable fields.
jq -s -e 'length > 10 and all(.[]; (.ts | test("^[0-9-]+T[0-9:.]+Z$")) and (.level | IN("debug", "info", "warn", "error"))
  and (.module | type == "string") and (.msg | type == "string"))' "$T/coord.log" >/dev/null ||
  fail "--log-format json: not all lines are log objects: $(head -3 "$T/coord.log")"
jq -s -e 'any(.[]; .module == "coordinator" and (.msg | test("round 3 completed")))' "$T/coord.log" >/dev/null ||
  fail "--log-format json: the round's line is missing"
echo "PASS metrics"
