/*
 * metrics.c - the coordinator's metrics and health endpoints (metrics.h).
 */
#include <microhttpd.h> /* first: metrics.h declares the access handler with its types */

#include "coordinator/metrics.h"
#include "transport/tls_count.h"

#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include "common/clock.h"
#include "common/log.h"
#include "coordinator/coord_int.h"
#include "coordinator/http_guard.h"
#include "fedc/error.h"
#include "transport/accept_guard.h"

#define MOD "metrics"

const double fc_m_dur_bounds[FC_M_DUR_BUCKETS] = {0.5, 1, 2, 5, 10, 30, 60, 120, 300, 600};

static const char *const ab_names[FC_MAB_N] = {"deadline", "pickup", "secagg", "aggregator", "dp", "store", "other"};
static const char *const ref_names[FC_MREF_N] = {"invalid", "precondition", "late", "busy", "limit", "other"};

const char *fc_metrics_abandon_name(int cls) { return cls >= 0 && cls < FC_MAB_N ? ab_names[cls] : "other"; }
const char *fc_metrics_refusal_name(int cls) { return cls >= 0 && cls < FC_MREF_N ? ref_names[cls] : "other"; }

int fc_metrics_abandon_class(const char *r) {
  if (!r) return FC_MAB_OTHER;
  if (strstr(r, "picked up")) return FC_MAB_PICKUP;
  if (strstr(r, "deadline")) return FC_MAB_DEADLINE;
  if (strstr(r, "secure aggregation") || strstr(r, "masked") || strstr(r, "unmask")) return FC_MAB_SECAGG;
  if (strstr(r, "privacy") || strstr(r, "DP")) return FC_MAB_DP;
  if (strstr(r, "state directory") || strstr(r, "cannot write") || strstr(r, "cannot append")) return FC_MAB_STORE;
  if (strstr(r, "needs") || strstr(r, "aggregat")) return FC_MAB_AGGREGATOR;
  return FC_MAB_OTHER;
}

static int dur_bucket(double seconds) {
  int b = 0;
  while (b < FC_M_DUR_BUCKETS && seconds > fc_m_dur_bounds[b]) b++;
  return b;
}

void fc_metrics_sa_stage(fc_coord_metrics *m, int stage, double seconds) {
  if (stage < 1 || stage > 5) return;
  m->sa_count[stage - 1][dur_bucket(seconds)]++;
  m->sa_sum[stage - 1] += seconds;
}

void fc_metrics_round(fc_coord_metrics *m, int completed, const char *reason, double seconds, uint64_t bytes_in,
                      uint64_t bytes_out) {
  int k = completed ? 1 : 0;
  if (completed) m->rounds_completed++;
  else m->rounds_abandoned[fc_metrics_abandon_class(reason)]++;
  m->bytes_in += bytes_in;
  m->bytes_out += bytes_out;
  m->dur_count[k][dur_bucket(seconds)]++;
  m->dur_sum[k] += seconds;
}

/* ---- the text ---- */

void fc_text_put(fc_text *b, const char *fmt, ...) {
  if (b->oom) return;
  for (;;) {
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(b->p + b->len, b->cap - b->len, fmt, ap);
    va_end(ap);
    if (n < 0) {
      b->oom = 1;
      return;
    }
    if ((size_t)n < b->cap - b->len) {
      b->len += (size_t)n;
      return;
    }
    size_t cap = b->cap * 2 + (size_t)n;
    char *np = realloc(b->p, cap);
    if (!np) {
      b->oom = 1;
      return;
    }
    b->p = np;
    b->cap = cap;
  }
}

void fc_text_head(fc_text *b, const char *name, const char *type, const char *help) {
  fc_text_put(b, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

static uint64_t rss_bytes(void) {
  FILE *f = fopen("/proc/self/statm", "r");
  unsigned long long size = 0, res = 0;
  if (f) {
    if (fscanf(f, "%llu %llu", &size, &res) != 2) res = 0;
    fclose(f);
  }
  return res * (uint64_t)sysconf(_SC_PAGESIZE);
}

static long open_fds(void) {
  DIR *d = opendir("/proc/self/fd");
  if (!d) return -1;
  long n = 0;
  struct dirent *e;
  while ((e = readdir(d))) n += e->d_name[0] != '.';
  closedir(d);
  return n - 1; /* the directory's own fd */
}

/* One labelled histogram series (cumulative buckets, sum, count). */
static void put_hist(fc_text *b, const char *name, const char *label, const char *value, const uint64_t *count,
                     double sum) {
  uint64_t cum = 0;
  for (int i = 0; i <= FC_M_DUR_BUCKETS; i++) {
    cum += count[i];
    if (i < FC_M_DUR_BUCKETS)
      fc_text_put(b, "%s_bucket{%s=\"%s\",le=\"%g\"} %llu\n", name, label, value, fc_m_dur_bounds[i], (unsigned long long)cum);
    else
      fc_text_put(b, "%s_bucket{%s=\"%s\",le=\"+Inf\"} %llu\n", name, label, value, (unsigned long long)cum);
  }
  fc_text_put(b, "%s_sum{%s=\"%s\"} %.6f\n", name, label, value, sum);
  fc_text_put(b, "%s_count{%s=\"%s\"} %llu\n", name, label, value, (unsigned long long)cum);
}

char *coord_metrics_text(fc_coord *c) {
  fc_text b = {malloc(8192), 0, 8192, 0};
  if (!b.p) return NULL;
  b.p[0] = 0;
  fc_coord_metrics m;
  fc_engine_status es;
  fc_elig_counts el;
  uint32_t live;
  double eps;
  int dp = c->cfg.dp_noise_multiplier > 0, blocked;
  pthread_mutex_lock(&c->mu);
  uint64_t now = fc_now_ms();
  fc_engine_get_status(c->engine, now, &es);
  live = fc_engine_count_live(c->engine, now);
  fc_engine_elig_counts(c->engine, now, &el);
  memcpy(&m, &c->metrics, sizeof m); /* the atomics are read again below */
  eps = c->dp_eps;
  blocked = c->store_blocked;
  pthread_mutex_unlock(&c->mu);

  static const int states[] = {FC_ENG_WAITING, FC_ENG_TRAINING, FC_ENG_SA_SHARE, FC_ENG_SA_MASKED,
                               FC_ENG_SA_CONSISTENCY, FC_ENG_SA_UNMASK, FC_ENG_AGGREGATING, FC_ENG_DONE};
  fc_text_head(&b, "fedc_round_state", "gauge", "The round engine's state (1 for the current one).");
  for (size_t i = 0; i < sizeof states / sizeof *states; i++)
    fc_text_put(&b, "fedc_round_state{state=\"%s\"} %d\n", fc_engine_state_name(states[i]), es.state == states[i]);
  fc_text_head(&b, "fedc_round_id", "gauge", "The running round's id, or the next one's while waiting.");
  fc_text_put(&b, "fedc_round_id %llu\n", (unsigned long long)es.round);
  fc_text_head(&b, "fedc_paused", "gauge", "1 while an admin has paused new rounds.");
  fc_text_put(&b, "fedc_paused %d\n", es.paused);
  fc_text_head(&b, "fedc_store_blocked", "gauge", "1 while the state directory cannot be written (no new rounds).");
  fc_text_put(&b, "fedc_store_blocked %d\n", blocked);
  fc_text_head(&b, "fedc_model_version", "gauge", "The published model version.");
  fc_text_put(&b, "fedc_model_version %llu\n", (unsigned long long)es.version);
  fc_text_head(&b, "fedc_rounds_completed_total", "counter", "Rounds that published a model (this process).");
  fc_text_put(&b, "fedc_rounds_completed_total %llu\n", (unsigned long long)m.rounds_completed);
  fc_text_head(&b, "fedc_rounds_abandoned_total", "counter", "Rounds abandoned, by cause (this process).");
  for (int i = 0; i < FC_MAB_N; i++)
    fc_text_put(&b, "fedc_rounds_abandoned_total{reason=\"%s\"} %llu\n", ab_names[i], (unsigned long long)m.rounds_abandoned[i]);
  fc_text_head(&b, "fedc_round_duration_seconds", "histogram", "Round duration from selection to its end, by outcome.");
  put_hist(&b, "fedc_round_duration_seconds", "outcome", "completed", m.dur_count[1], m.dur_sum[1]);
  put_hist(&b, "fedc_round_duration_seconds", "outcome", "abandoned", m.dur_count[0], m.dur_sum[0]);
  if (c->cfg.engine.secagg) {
    static const char *const stages[5] = {"advertise", "share_keys", "masked_input", "consistency", "unmask"};
    fc_text_head(&b, "fedc_secagg_stage_duration_seconds", "histogram",
         "How long each secure-aggregation stage stayed open, by stage.");
    for (int k = 0; k < 5; k++)
      put_hist(&b, "fedc_secagg_stage_duration_seconds", "stage", stages[k], m.sa_count[k], m.sa_sum[k]);
  }
  fc_tls_counts tls;
  fc_tls_counts_get(&tls);
  fc_text_head(&b, "fedc_tls_handshakes_total", "counter",
       "Server TLS handshakes by result: ok, or failed on the peer's certificate or on the protocol.");
  fc_text_put(&b, "fedc_tls_handshakes_total{result=\"ok\"} %llu\n", (unsigned long long)tls.ok);
  fc_text_put(&b, "fedc_tls_handshakes_total{result=\"failed_certificate\"} %llu\n", (unsigned long long)tls.failed_cert);
  fc_text_put(&b, "fedc_tls_handshakes_total{result=\"failed_protocol\"} %llu\n", (unsigned long long)tls.failed_protocol);
  fc_text_head(&b, "fedc_clients_known", "gauge", "Client identities the engine tracks.");
  fc_text_put(&b, "fedc_clients_known %u\n", es.known);
  fc_text_head(&b, "fedc_clients_live", "gauge", "Clients that checked in within the liveness window.");
  fc_text_put(&b, "fedc_clients_live %u\n", live);
  /* Eligibility (protocol 1.8): the counts `fedc status` shows (coord_elig_status), over live devices. */
  fc_text_head(&b, "fedc_devices_seen", "gauge", "Devices that checked in within the liveness window.");
  fc_text_put(&b, "fedc_devices_seen %u\n", el.seen);
  fc_text_head(&b, "fedc_devices_eligible", "gauge", "Live devices whose last check-in met the eligibility policy.");
  fc_text_put(&b, "fedc_devices_eligible %u\n", el.eligible);
  fc_text_head(&b, "fedc_devices_not_eligible", "gauge",
       "Live devices whose last check-in failed a requirement, by reason (a device failing two counts in both).");
  for (int i = 0; i < FC_INELIG_NREASONS; i++)
    fc_text_put(&b, "fedc_devices_not_eligible{reason=\"%s\"} %u\n", fc_elig_reason_name(i), el.by_reason[i]);
  fc_text_head(&b, "fedc_round_selected", "gauge", "Clients selected for the running round.");
  fc_text_put(&b, "fedc_round_selected %u\n", es.selected);
  fc_text_head(&b, "fedc_checkins_total", "counter", "Check-in calls answered.");
  fc_text_put(&b, "fedc_checkins_total %llu\n", (unsigned long long)atomic_load(&c->metrics.checkins));
  fc_text_head(&b, "fedc_uploads_accepted_total", "counter", "Updates (or masked inputs) accepted into a round.");
  fc_text_put(&b, "fedc_uploads_accepted_total %llu\n", (unsigned long long)atomic_load(&c->metrics.uploads_accepted));
  fc_text_head(&b, "fedc_uploads_refused_total", "counter",
       "Uploads refused, by answer: invalid (bad content: shape, NaN, norm...), precondition (not expected now), "
       "late, busy (retry later), limit, other.");
  for (int i = 0; i < FC_MREF_N; i++)
    fc_text_put(&b, "fedc_uploads_refused_total{reason=\"%s\"} %llu\n", ref_names[i],
        (unsigned long long)atomic_load(&c->metrics.uploads_refused[i]));
  coord_limits_stats ls;
  coord_limits_get(c, &ls);
  fc_text_head(&b, "fedc_calls_refused_total", "counter",
       "Calls refused over their identity's rate, by class: secagg_poll, calls (FetchModel, SecAggSubmit), admin.");
  for (int i = 0; i < COORD_LIM_N; i++)
    fc_text_put(&b, "fedc_calls_refused_total{class=\"%s\"} %llu\n", coord_limit_class_name(i),
        (unsigned long long)ls.refused[i]);
  fc_text_head(&b, "fedc_call_limit_identities", "gauge", "Identities with call buckets of their own now.");
  fc_text_put(&b, "fedc_call_limit_identities %u\n", ls.identities);
  if (ls.audit) {
    fc_text_head(&b, "fedc_audit_log_bytes", "gauge", "Size of audit.log.");
    fc_text_put(&b, "fedc_audit_log_bytes %llu\n", (unsigned long long)ls.audit_bytes);
    fc_text_head(&b, "fedc_audit_budget_bytes", "gauge", "The audit log's disk budget (audit_max_mib).");
    fc_text_put(&b, "fedc_audit_budget_bytes %llu\n", (unsigned long long)ls.audit_budget);
    fc_text_head(&b, "fedc_state_free_bytes", "gauge", "Free space on the state directory's file system.");
    fc_text_put(&b, "fedc_state_free_bytes %llu\n", (unsigned long long)ls.free_bytes);
    fc_text_head(&b, "fedc_state_free_floor_bytes", "gauge", "Free space the audit log leaves to the store (state_min_free_mib).");
    fc_text_put(&b, "fedc_state_free_floor_bytes %llu\n", (unsigned long long)ls.free_floor);
    fc_text_head(&b, "fedc_audit_alarm", "gauge",
         "0 ok; 1 the audit log is past 80% of its budget or free space below twice the floor; 2 past the budget or "
         "below the floor: refusals are only counted, one record per interval for all identities.");
    fc_text_put(&b, "fedc_audit_alarm %d\n", ls.level);
    fc_text_head(&b, "fedc_audit_refusals_counted_total", "counter",
         "Refusals audited as counts (refusals records) instead of one record each.");
    fc_text_put(&b, "fedc_audit_refusals_counted_total %llu\n", (unsigned long long)ls.refusals_counted);
  }
  char *ev = coord_eval_metrics_text(c); /* federated evaluation (coord_eval.c) */
  if (ev) fc_text_put(&b, "%s", ev);
  free(ev);
  fc_text_head(&b, "fedc_round_bytes_received_total", "counter", "Update bytes received in finished rounds.");
  fc_text_put(&b, "fedc_round_bytes_received_total %llu\n", (unsigned long long)m.bytes_in);
  fc_text_head(&b, "fedc_round_bytes_sent_total", "counter", "Model bytes sent in finished rounds.");
  fc_text_put(&b, "fedc_round_bytes_sent_total %llu\n", (unsigned long long)m.bytes_out);
  fc_text_head(&b, "fedc_uploads_in_flight", "gauge", "Uploads streaming now (each holds a staging slot).");
  fc_text_put(&b, "fedc_uploads_in_flight %d\n", atomic_load(&c->metrics.uploads_in_flight));
  static const char *const dirs[2] = {"upload", "download"};
  fc_text_head(&b, "fedc_transfers_resumed_total", "counter", "Cut transfers resumed from the bytes kept (1.10).");
  for (int i = 0; i < 2; i++)
    fc_text_put(&b, "fedc_transfers_resumed_total{direction=\"%s\"} %llu\n", dirs[i],
        (unsigned long long)atomic_load(&c->metrics.resumed[i]));
  fc_text_head(&b, "fedc_transfer_bytes_resumed_total", "counter", "Bytes resumed transfers did not send again.");
  for (int i = 0; i < 2; i++)
    fc_text_put(&b, "fedc_transfer_bytes_resumed_total{direction=\"%s\"} %llu\n", dirs[i],
        (unsigned long long)atomic_load(&c->metrics.resumed_bytes[i]));
  fc_text_head(&b, "fedc_staging_slots", "gauge", "Staging slots for uploads in flight (memory = slots x model).");
  fc_text_put(&b, "fedc_staging_slots %d\n", c->cfg.upload_slots > 0 ? c->cfg.upload_slots : 4);
  if (c->guard_started) {
    fc_accept_guard_stats g;
    fc_accept_guard_get_stats(&g);
    fc_text_head(&b, "fedc_connections_open", "gauge", "Client connections open.");
    fc_text_put(&b, "fedc_connections_open %llu\n", (unsigned long long)g.open);
    fc_text_head(&b, "fedc_connections_cap", "gauge", "The connection cap in force (fd limit - headroom).");
    fc_text_put(&b, "fedc_connections_cap %d\n", g.max_connections);
    fc_text_head(&b, "fedc_connections_accepted_total", "counter", "Connections admitted.");
    fc_text_put(&b, "fedc_connections_accepted_total %llu\n", (unsigned long long)g.admitted);
    fc_text_head(&b, "fedc_connections_refused_total", "counter", "Connections closed at accept, by cause.");
    fc_text_put(&b, "fedc_connections_refused_total{reason=\"full\"} %llu\n", (unsigned long long)g.refused_full);
    fc_text_put(&b, "fedc_connections_refused_total{reason=\"rate\"} %llu\n", (unsigned long long)g.refused_rate);
    fc_text_put(&b, "fedc_connections_refused_total{reason=\"per_address\"} %llu\n", (unsigned long long)g.refused_addr);
    fc_text_put(&b, "fedc_connections_refused_total{reason=\"emfile\"} %llu\n", (unsigned long long)g.dropped_emfile);
  }
  if (c->http) {
    uint64_t hc[FC_HG_N];
    coord_http_closed_counts(c, hc);
    fc_text_head(&b, "fedc_http_connections_closed_total", "counter",
         "Metrics/health HTTP connections the coordinator closed, by rule: per_address, full (the newest "
         "connection takes the oldest's slot), deadline (open longer than metrics_request_ms).");
    for (int i = 0; i < FC_HG_N; i++)
      fc_text_put(&b, "fedc_http_connections_closed_total{reason=\"%s\"} %llu\n", fc_http_guard_reason_name(i),
          (unsigned long long)hc[i]);
  }
  struct rlimit rl;
  long fds = open_fds();
  if (fds >= 0 && getrlimit(RLIMIT_NOFILE, &rl) == 0) {
    fc_text_head(&b, "fedc_fd_headroom", "gauge", "File descriptors still available (limit - open).");
    fc_text_put(&b, "fedc_fd_headroom %lld\n", (long long)rl.rlim_cur - fds);
  }
  fc_text_head(&b, "fedc_process_resident_memory_bytes", "gauge", "Resident set size.");
  fc_text_put(&b, "fedc_process_resident_memory_bytes %llu\n", (unsigned long long)rss_bytes());
  fc_text_head(&b, "fedc_uptime_seconds", "gauge", "Seconds since the coordinator started.");
  fc_text_put(&b, "fedc_uptime_seconds %.3f\n", (double)(now - c->started_ms) / 1000.0);
  /* Update anomaly detection (coord_anomaly.c): counts and the last scored
   * round's figures, never the identities (the audit log and `fedc clients` name them). */
  fc_text_head(&b, "fedc_anomaly_flagged_total", "counter", "Identity-rounds flagged by the anomaly policy (flag or exclude).");
  fc_text_put(&b, "fedc_anomaly_flagged_total %llu\n", (unsigned long long)m.anomaly_flagged);
  fc_text_head(&b, "fedc_anomaly_excluded", "gauge", "Identities left out of selection by the anomaly policy now.");
  fc_text_put(&b, "fedc_anomaly_excluded %u\n", m.anomaly_excluded);
  fc_text_head(&b, "fedc_anomaly_top_score", "gauge", "Highest robust outlier score of an update in the last scored round.");
  fc_text_put(&b, "fedc_anomaly_top_score %.6g\n", m.anomaly_top_score);
  fc_text_head(&b, "fedc_anomaly_norm_median", "gauge", "Median L2 norm of the updates of the last scored round.");
  fc_text_put(&b, "fedc_anomaly_norm_median %.6g\n", m.anomaly_norm_median);
  fc_text_head(&b, "fedc_anomaly_cos_agg_median", "gauge", "Median cosine of an update to its round's aggregate (last scored round).");
  fc_text_put(&b, "fedc_anomaly_cos_agg_median %.6g\n", m.anomaly_cos_agg);
  /* Model drift on the reference set (coord_drift.c), or from federated
   * evaluation without one (coord_drift_fed.c); absent when neither runs. */
  if (c->drift || m.drift_fed) {
    fc_text_head(&b, "fedc_drift_checked_total", "counter", "Model versions whose prediction distribution was checked for drift.");
    fc_text_put(&b, "fedc_drift_checked_total %llu\n", (unsigned long long)m.drift_checked);
    fc_text_head(&b, "fedc_drift_tripped_total", "counter", "Model versions whose drift (PSI) reached --drift-threshold.");
    fc_text_put(&b, "fedc_drift_tripped_total %llu\n", (unsigned long long)m.drift_tripped);
    fc_text_head(&b, "fedc_drift_psi", "gauge", "PSI of the last version's predicted-class distribution against the one before.");
    fc_text_put(&b, "fedc_drift_psi %.6g\n", m.drift_psi);
  }
  fc_text_head(&b, "fedc_identity_new_address_total", "counter", "Calls of an identity from a host it was not seen at before.");
  fc_text_put(&b, "fedc_identity_new_address_total %llu\n", (unsigned long long)atomic_load(&c->metrics.identity_new_address));
  fc_text_head(&b, "fedc_identity_concurrent_total", "counter", "Calls of an identity from a second connection at once.");
  fc_text_put(&b, "fedc_identity_concurrent_total %llu\n", (unsigned long long)atomic_load(&c->metrics.identity_concurrent));
  fc_text_head(&b, "fedc_identity_refused_total", "counter", "Calls refused as a second concurrent connection of an identity.");
  fc_text_put(&b, "fedc_identity_refused_total %llu\n", (unsigned long long)atomic_load(&c->metrics.identity_refused));
  if (dp) {
    fc_text_head(&b, "fedc_dp_epsilon", "gauge", "Differential privacy: epsilon spent (at dp_delta).");
    fc_text_put(&b, "fedc_dp_epsilon %.6g\n", eps);
  }
  if (b.oom) {
    free(b.p);
    return NULL;
  }
  return b.p;
}

/* ---- HTTP ----------------------------------------------------------------------------
 * The listener must answer /healthz while anyone who can reach it holds
 * connections open (a liveness probe that fails gets the coordinator
 * restarted). libmicrohttpd alone refuses new connections once its limit is
 * reached, and its idle timeout is reset by every byte: 32 connections
 * sending a byte every 4 s kept /healthz from ever answering. So:
 *   - http_guard.c decides which connection to close: per address, in
 *     total (the newest connection always gets a slot: see http_guard.h), and
 *     at a deadline for the connection's whole life that traffic does not
 *     reset. Closing is shutdown(2) on the socket: libmicrohttpd sees the
 *     end of the stream and closes the connection itself, so the descriptor
 *     stays its to close. The guard's lock is held from the decision to the
 *     shutdown, and the close notification takes it before libmicrohttpd
 *     closes the descriptor, so a reused descriptor is never shut by mistake.
 *   - A reaper thread enforces the deadlines (libmicrohttpd has no timer of
 *     ours to run); the rest runs on libmicrohttpd's thread, in its
 *     connection notifications.
 *   - Every answer closes its connection (Connection: close): one request
 *     per connection, so the deadline bounds each request.
 *   - libmicrohttpd's own limits stay as a backstop above ours (connections
 *     told to close still count there until it has closed them).
 * One listener rather than a separate health port: a separate port reachable
 * by the kubelet is reachable by the same pods, and would need the same
 * guard; the guard makes the one port safe for both.
 */
#define HTTP_MAX_CONNS 32
#define HTTP_BACKSTOP 16 /* libmicrohttpd's limits sit this far above ours */

typedef struct coord_http {
  struct MHD_Daemon *d;
  pthread_mutex_t mu; /* the guard, and every shutdown() of a connection */
  pthread_cond_t cv;
  fc_http_guard *guard;
  pthread_t reaper;
  int reaper_started, stop;
} coord_http;

static enum MHD_Result reply(struct MHD_Connection *conn, unsigned code, char *body, int owned, const char *type) {
  struct MHD_Response *r =
      MHD_create_response_from_buffer(strlen(body), body, owned ? MHD_RESPMEM_MUST_FREE : MHD_RESPMEM_PERSISTENT);
  if (!r) {
    if (owned) free(body);
    return MHD_NO;
  }
  MHD_add_response_header(r, "Content-Type", type);
  MHD_add_response_header(r, "Cache-Control", "no-store");
  MHD_add_response_header(r, "Connection", "close");
  enum MHD_Result ok = MHD_queue_response(conn, code, r);
  MHD_destroy_response(r);
  return ok;
}

enum MHD_Result coord_http_request(void *cls, struct MHD_Connection *conn, const char *url, const char *method,
                                   const char *version, const char *upload_data, size_t *upload_size, void **state) {
  fc_coord *c = cls;
  (void)version;
  (void)upload_data;
  static int first;
  if (!*state) { /* headers only so far: answer on the next call */
    *state = &first;
    return MHD_YES;
  }
  if (*upload_size) { /* a body: discarded (the answer comes once it is all in) */
    *upload_size = 0;
    return MHD_YES;
  }
  if (strcmp(method, "GET") != 0 && strcmp(method, "HEAD") != 0)
    return reply(conn, MHD_HTTP_METHOD_NOT_ALLOWED, "only GET\n", 0, "text/plain");
  if (!strcmp(url, "/healthz")) return reply(conn, MHD_HTTP_OK, "ok\n", 0, "text/plain");
  if (!strcmp(url, "/readyz")) {
    pthread_mutex_lock(&c->dl_mu);
    int ready = c->driver_started && !c->closing; /* closing: fc_coord_stop has begun */
    pthread_mutex_unlock(&c->dl_mu);
    return ready ? reply(conn, MHD_HTTP_OK, "ready\n", 0, "text/plain")
                 : reply(conn, MHD_HTTP_SERVICE_UNAVAILABLE, "not ready\n", 0, "text/plain");
  }
  if (!strcmp(url, "/metrics")) {
    char *t = coord_metrics_text(c);
    if (!t) return reply(conn, MHD_HTTP_INTERNAL_SERVER_ERROR, "out of memory\n", 0, "text/plain");
    return reply(conn, MHD_HTTP_OK, t, 1, "text/plain; version=0.0.4; charset=utf-8");
  }
  return reply(conn, MHD_HTTP_NOT_FOUND, "not found: /metrics, /healthz, /readyz\n", 0, "text/plain");
}

/* Under h->mu (see the section comment). */
static void shut(const void *conn) {
  const union MHD_ConnectionInfo *ci =
      MHD_get_connection_info((struct MHD_Connection *)conn, MHD_CONNECTION_INFO_CONNECTION_FD);
  if (ci) shutdown(ci->connect_fd, SHUT_RDWR);
}

/* The peer's address as bytes (an IPv4-mapped IPv6 address as IPv4). */
static size_t peer_bytes(struct MHD_Connection *conn, uint8_t out[16]) {
  const union MHD_ConnectionInfo *ci = MHD_get_connection_info(conn, MHD_CONNECTION_INFO_CLIENT_ADDRESS);
  const struct sockaddr *sa = ci ? ci->client_addr : NULL;
  if (sa && sa->sa_family == AF_INET) {
    memcpy(out, &((const struct sockaddr_in *)sa)->sin_addr, 4);
    return 4;
  }
  if (sa && sa->sa_family == AF_INET6) {
    const struct in6_addr *a = &((const struct sockaddr_in6 *)sa)->sin6_addr;
    if (IN6_IS_ADDR_V4MAPPED(a)) {
      memcpy(out, a->s6_addr + 12, 4);
      return 4;
    }
    memcpy(out, a->s6_addr, 16);
    return 16;
  }
  return 0;
}

static void on_connection(void *cls, struct MHD_Connection *conn, void **socket_context,
                          enum MHD_ConnectionNotificationCode code) {
  coord_http *h = cls;
  (void)socket_context;
  pthread_mutex_lock(&h->mu);
  if (code == MHD_CONNECTION_NOTIFY_STARTED) {
    uint8_t addr[16];
    size_t alen = peer_bytes(conn, addr);
    const void *victims[2];
    size_t n = fc_http_guard_open(h->guard, conn, addr, alen, fc_now_ms(), victims);
    for (size_t i = 0; i < n; i++) shut(victims[i]);
  } else {
    fc_http_guard_closed(h->guard, conn);
  }
  pthread_mutex_unlock(&h->mu);
}

static void *reaper_main(void *arg) {
  coord_http *h = arg;
  pthread_mutex_lock(&h->mu);
  while (!h->stop) {
    const void *gone[16];
    size_t n;
    while ((n = fc_http_guard_expired(h->guard, fc_now_ms(), gone, 16)) > 0)
      for (size_t i = 0; i < n; i++) shut(gone[i]);
    struct timespec ts;
    fc_deadline_after_ms(&ts, 100); /* deadlines are seconds: a tenth of one late is fine */
    pthread_cond_timedwait(&h->cv, &h->mu, &ts);
  }
  pthread_mutex_unlock(&h->mu);
  return NULL;
}

static int sa_is_loopback(const struct sockaddr *sa) {
  if (sa->sa_family == AF_INET) return (ntohl(((const struct sockaddr_in *)sa)->sin_addr.s_addr) >> 24) == 127;
  if (sa->sa_family == AF_INET6) {
    const struct in6_addr *a = &((const struct sockaddr_in6 *)sa)->sin6_addr;
    return IN6_IS_ADDR_LOOPBACK(a) || (IN6_IS_ADDR_V4MAPPED(a) && a->s6_addr[12] == 127);
  }
  return 0;
}

/* Binds addr (metrics.h's rules): the socket, its port and "host:port" for the logs. */
static int http_bind(const char *addr, int pub, int *fd_out, int *port_out, char *where, size_t wherelen, char *why,
                     size_t whylen) {
  char host[256] = "", portstr[16] = "";
  int rc = FEDC_ERR_INVALID, fd = -1;
  struct addrinfo hints, *ai = NULL;
  const char *colon = strrchr(addr, ':');
  if (!colon || colon - addr >= (long)sizeof host || strlen(colon + 1) >= sizeof portstr || !colon[1]) {
    snprintf(why, whylen, "metrics_listen '%s': use host:port, [ipv6]:port or :port", addr);
    goto out;
  }
  memcpy(host, addr, (size_t)(colon - addr));
  snprintf(portstr, sizeof portstr, "%s", colon + 1);
  if (host[0] == '[' && host[strlen(host) - 1] == ']') {
    memmove(host, host + 1, strlen(host));
    host[strlen(host) - 1] = 0;
  }
  /* ":port" is every address only for a listener that is public on purpose. */
  if (!host[0] && !pub) snprintf(host, sizeof host, "127.0.0.1");
  memset(&hints, 0, sizeof hints);
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
  int g = getaddrinfo(host[0] ? host : NULL, portstr, &hints, &ai);
  if (g != 0 || !ai) {
    snprintf(why, whylen, "metrics_listen '%s': %s", addr, gai_strerror(g));
    goto out;
  }
  if (!pub && !sa_is_loopback(ai->ai_addr)) {
    snprintf(why, whylen,
             "metrics_listen '%s' is not a loopback address: /metrics, /healthz and /readyz have no "
             "authentication; set metrics_public (--metrics-public) to serve them there, and let only the "
             "scraper and the kubelet reach the port",
             addr);
    goto out;
  }
  int one = 1;
  struct sockaddr_storage sa;
  socklen_t salen = sizeof sa;
  fd = socket(ai->ai_family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
  if (fd < 0 || setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) != 0 ||
      bind(fd, ai->ai_addr, ai->ai_addrlen) != 0 || listen(fd, 64) != 0 ||
      getsockname(fd, (struct sockaddr *)&sa, &salen) != 0) {
    snprintf(why, whylen, "metrics_listen '%s': cannot listen: %s", addr, strerror(errno));
    rc = FEDC_ERR_IO;
    goto out;
  }
  int port = ntohs(sa.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&sa)->sin6_port
                                            : ((struct sockaddr_in *)&sa)->sin_port);
  *fd_out = fd;
  fd = -1;
  *port_out = port;
  snprintf(where, wherelen, "%s%s%s:%d", strchr(host, ':') ? "[" : "", host[0] ? host : "0.0.0.0",
           strchr(host, ':') ? "]" : "", port);
  rc = FEDC_OK;
out:
  if (fd >= 0) close(fd);
  if (ai) freeaddrinfo(ai);
  return rc;
}

/* Bound here, served from coord_http_start: the coordinator learns that the
 * address is free (and allowed) before it creates or changes its state
 * directory (coord_start.c). */
int coord_http_bind(fc_coord *c, const char *addr, char *why, size_t whylen) {
  return http_bind(addr, c->cfg.metrics_public, &c->http_fd, &c->http_port, c->http_where, sizeof c->http_where, why,
                   whylen);
}

static void http_free(coord_http *h);

/* Serves fd (owned from here, served or not) with `handler` (cls: its
 * argument) behind the guard; *out is set even on failure, for http_free. */
static int http_serve(int fd, const char *where, uint32_t per_address, uint64_t request_ms,
                      MHD_AccessHandlerCallback handler, void *cls, coord_http **out, char *why, size_t whylen) {
  int rc = FEDC_ERR_NOMEM;
  coord_http *h = calloc(1, sizeof *h);
  fc_http_guard_cfg gc = {HTTP_MAX_CONNS, per_address, request_ms};
  *out = h;
  if (!h) {
    close(fd);
    snprintf(why, whylen, "metrics listener: out of memory");
    goto out;
  }
  pthread_mutex_init(&h->mu, NULL);
  pthread_cond_init(&h->cv, NULL);
  if ((rc = fc_http_guard_create(&gc, &h->guard)) != FEDC_OK) {
    close(fd);
    snprintf(why, whylen, "metrics listener: %s", fedc_strerror(rc));
    goto out;
  }
  if (pthread_create(&h->reaper, NULL, reaper_main, h) != 0) {
    close(fd);
    rc = FEDC_ERR_NOMEM;
    snprintf(why, whylen, "metrics listener: cannot start its thread");
    goto out;
  }
  h->reaper_started = 1;
  /* MHD owns the socket from here, started or not. poll/epoll, not select:
   * the coordinator's descriptors go far past FD_SETSIZE. */
  unsigned idle_s = (unsigned)((request_ms + 999) / 1000);
  h->d = MHD_start_daemon(MHD_USE_AUTO_INTERNAL_THREAD | MHD_USE_ERROR_LOG, 0, NULL, NULL, handler, cls,
                          MHD_OPTION_LISTEN_SOCKET, (MHD_socket)fd,
                          MHD_OPTION_CONNECTION_LIMIT, (unsigned)(HTTP_MAX_CONNS + HTTP_BACKSTOP),
                          MHD_OPTION_PER_IP_CONNECTION_LIMIT, (unsigned)(gc.per_address + HTTP_BACKSTOP),
                          MHD_OPTION_CONNECTION_TIMEOUT, idle_s, MHD_OPTION_NOTIFY_CONNECTION, on_connection, h,
                          MHD_OPTION_END);
  if (!h->d) {
    snprintf(why, whylen, "metrics on %s: cannot start the HTTP server", where);
    rc = FEDC_ERR_IO;
    goto out;
  }
  rc = FEDC_OK;
out:
  return rc;
}

int coord_http_start(fc_coord *c, char *why, size_t whylen) {
  int fd = c->http_fd;
  c->http_fd = -1;
  /* c->http is set whatever happens: coord_http_stop frees it */
  int rc = http_serve(fd, c->http_where, (uint32_t)c->cfg.metrics_conns_per_address,
                      (uint64_t)c->cfg.metrics_request_ms, coord_http_request, c, &c->http, why, whylen);
  if (rc == FEDC_OK) FC_INFO(MOD, "metrics on http://%s/metrics (and /healthz, /readyz)", c->http_where);
  return rc;
}

void coord_http_stop(fc_coord *c) {
  if (c->http_fd >= 0) close(c->http_fd); /* bound, never served */
  c->http_fd = -1;
  http_free(c->http);
  c->http = NULL;
}

static void http_free(coord_http *h) {
  if (!h) return;
  if (h->d) MHD_stop_daemon(h->d); /* closes every connection: the guard hears of each */
  if (h->reaper_started) {
    pthread_mutex_lock(&h->mu);
    h->stop = 1;
    pthread_cond_signal(&h->cv);
    pthread_mutex_unlock(&h->mu);
    pthread_join(h->reaper, NULL);
  }
  fc_http_guard_destroy(h->guard);
  pthread_cond_destroy(&h->cv);
  pthread_mutex_destroy(&h->mu);
  free(h);
}

/* ---- a small listener of its own (metrics.h): a standby, an aggregator ---- */
struct fc_text_http {
  coord_http *h;
  fc_text_http_cfg cfg;
};

static enum MHD_Result text_request(void *cls, struct MHD_Connection *conn, const char *url, const char *method,
                                    const char *version, const char *upload_data, size_t *upload_size, void **state) {
  const fc_text_http *th = cls;
  (void)version;
  (void)upload_data;
  static int first;
  if (!*state) {
    *state = &first;
    return MHD_YES;
  }
  if (*upload_size) {
    *upload_size = 0;
    return MHD_YES;
  }
  if (strcmp(method, "GET") != 0 && strcmp(method, "HEAD") != 0)
    return reply(conn, MHD_HTTP_METHOD_NOT_ALLOWED, "only GET\n", 0, "text/plain");
  if (!strcmp(url, "/healthz")) return reply(conn, MHD_HTTP_OK, "ok\n", 0, "text/plain");
  if (!strcmp(url, "/readyz")) {
    int ok = 1;
    const char *t = th->cfg.ready(th->cfg.ctx, &ok);
    return reply(conn, ok ? MHD_HTTP_OK : MHD_HTTP_SERVICE_UNAVAILABLE, (char *)t, 0, "text/plain");
  }
  if (!strcmp(url, "/metrics")) {
    char *t = th->cfg.metrics(th->cfg.ctx);
    if (!t) return reply(conn, MHD_HTTP_INTERNAL_SERVER_ERROR, "out of memory\n", 0, "text/plain");
    return reply(conn, MHD_HTTP_OK, t, 1, "text/plain; version=0.0.4; charset=utf-8");
  }
  return reply(conn, MHD_HTTP_NOT_FOUND, "not found: /metrics, /healthz, /readyz\n", 0, "text/plain");
}

int fc_text_http_start(const fc_text_http_cfg *cfg, fc_text_http **out, char *why, size_t whylen) {
  int fd = -1, port = 0, rc;
  char where[300];
  fc_text_http *th = calloc(1, sizeof *th);
  if (!th) {
    snprintf(why, whylen, "metrics listener: out of memory");
    return FEDC_ERR_NOMEM;
  }
  th->cfg = *cfg;
  if ((rc = http_bind(cfg->listen, cfg->pub, &fd, &port, where, sizeof where, why, whylen)) == FEDC_OK &&
      (rc = http_serve(fd, where, cfg->conns_per_address, cfg->request_ms, text_request, th, &th->h, why, whylen)) ==
          FEDC_OK) {
    FC_INFO(MOD, "%s: /healthz, /readyz and /metrics on http://%s", cfg->what, where);
    th->cfg.port = port;
    *out = th;
    return FEDC_OK;
  }
  fc_text_http_stop(th);
  return rc;
}

int fc_text_http_port(const fc_text_http *th) { return th ? th->cfg.port : 0; }

void fc_text_http_stop(fc_text_http *th) {
  if (!th) return;
  http_free(th->h);
  free(th);
}

/* A replica standing by: ready ("standby": it can take over, and the kubelet
 * must not hold rollouts or disruption budgets on it), one gauge. */
static char *standby_metrics(void *ctx) {
  (void)ctx;
  return strdup("# HELP fedc_replica_standby 1 while this coordinator replica stands by (it serves no clients).\n"
                "# TYPE fedc_replica_standby gauge\nfedc_replica_standby 1\n");
}

static const char *standby_ready(void *ctx, int *ok) {
  (void)ctx;
  *ok = 1;
  return "standby\n";
}

int fc_standby_http_start(const char *listen, int pub, uint32_t conns_per_address, uint64_t request_ms,
                          fc_standby_http **out, char *why, size_t whylen) {
  fc_text_http_cfg tc = {listen, pub, conns_per_address, request_ms, standby_metrics, standby_ready, NULL,
                         "standing by", 0};
  return fc_text_http_start(&tc, out, why, whylen);
}

void fc_standby_http_stop(fc_standby_http *sh) { fc_text_http_stop(sh); }

void coord_http_closed_counts(fc_coord *c, uint64_t out[FC_HG_N]) {
  coord_http *h = c->http;
  for (int i = 0; i < FC_HG_N; i++) out[i] = 0;
  if (!h) return;
  pthread_mutex_lock(&h->mu);
  for (int i = 0; i < FC_HG_N; i++) out[i] = fc_http_guard_closed_by(h->guard, i);
  pthread_mutex_unlock(&h->mu);
}
