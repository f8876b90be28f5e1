/*
 * metrics.h - what the coordinator counts for operators, and the HTTP
 * listener that serves it (libmicrohttpd: never a hand-written HTTP parser).
 *
 *   GET /metrics  Prometheus text format 0.0.4 (docs/operations.md lists the
 *                 series)
 *   GET /healthz  200 while the process serves HTTP at all
 *   GET /readyz   200 once the state is loaded and the gRPC server and the
 *                 round driver run, 503 while shutting down
 * Off unless metrics_listen is set; on loopback unless metrics_public.
 * Plain HTTP without authentication: it exposes counts and states, never
 * updates, models or names of clients; bind it where only the scraper (and
 * the kubelet) reach it.
 *
 * The counters are atomics bumped from the handlers (no lock on the hot
 * paths); the round-end ones under the coordinator's mu.
 */
#ifndef FEDC_COORD_METRICS_H
#define FEDC_COORD_METRICS_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

/* Upload refusals by the gRPC status they were answered with. */
enum { FC_MREF_INVALID, FC_MREF_PRECONDITION, FC_MREF_LATE, FC_MREF_BUSY, FC_MREF_LIMIT, FC_MREF_OTHER, FC_MREF_N };
/* Abandoned rounds by cause (from the reason's text). */
enum { FC_MAB_DEADLINE, FC_MAB_PICKUP, FC_MAB_SECAGG, FC_MAB_AGGREGATOR, FC_MAB_DP, FC_MAB_STORE, FC_MAB_OTHER, FC_MAB_N };
#define FC_M_DUR_BUCKETS 10

typedef struct fc_coord_metrics {
  atomic_uint_fast64_t checkins;
  atomic_uint_fast64_t uploads_accepted;
  atomic_uint_fast64_t uploads_refused[FC_MREF_N];
  atomic_int uploads_in_flight;
  /* Resumed transfers (1.10), [0] uploads, [1] downloads: how many, and the
   * bytes they did not send again. */
  atomic_uint_fast64_t resumed[2], resumed_bytes[2];
  /* Under the coordinator's mu (round ends): */
  uint64_t rounds_completed, rounds_abandoned[FC_MAB_N];
  uint64_t bytes_in, bytes_out;
  uint64_t dur_count[2][FC_M_DUR_BUCKETS + 1]; /* [abandoned, completed][bucket], last = +Inf */
  double dur_sum[2];
  /* Secure aggregation: how long each stage stayed open, by stage 1..5
   * (advertise, share keys, masked input, consistency, unmask). */
  uint64_t sa_count[5][FC_M_DUR_BUCKETS + 1];
  double sa_sum[5];
  /* Update anomaly detection (coord_anomaly.c): under mu. */
  uint64_t anomaly_flagged;   /* identity-rounds flagged */
  uint32_t anomaly_excluded;  /* identities in their cool-down now */
  double anomaly_top_score, anomaly_norm_median, anomaly_cos_agg; /* the last scored round */
  /* Model drift (coord_drift.c): under mu. */
  uint64_t drift_checked, drift_tripped; /* versions checked; those at or over the threshold */
  int drift_fed; /* the check runs on federated evaluation (coord_drift_fed.c): no reference set */
  double drift_psi;                      /* the last version's PSI against the one before */
  /* Identity misuse: atomics. */
  atomic_uint_fast64_t identity_new_address, identity_concurrent, identity_refused;
} fc_coord_metrics;

extern const double fc_m_dur_bounds[FC_M_DUR_BUCKETS];

/* A round ended (record under mu). */
void fc_metrics_round(fc_coord_metrics *m, int completed, const char *reason, double seconds, uint64_t bytes_in,
                      uint64_t bytes_out);
int fc_metrics_abandon_class(const char *reason);
/* A secure-aggregation stage (1..5) closed after `seconds` open (under mu). */
void fc_metrics_sa_stage(fc_coord_metrics *m, int stage, double seconds);
const char *fc_metrics_abandon_name(int cls);
const char *fc_metrics_refusal_name(int cls);

struct fc_coord;
/* Bind the HTTP listener on host:port ("127.0.0.1:9464", "[::1]:0"; ":9464"
 * is loopback), before anything else changes; coord_http_start then serves
 * it. An address that is not loopback is refused unless cfg.metrics_public
 * (":9464" is then every address). FEDC_OK or FEDC_ERR_INVALID / IO with one
 * line in why. */
int coord_http_bind(struct fc_coord *c, const char *listen, char *why, size_t whylen);
/* Serve the bound socket. Connections are limited per address
 * (cfg.metrics_conns_per_address) and in total, and live at most
 * cfg.metrics_request_ms (metrics.c, http_guard.h). The address bound is
 * logged. FEDC_OK or FEDC_ERR_IO / NOMEM with one line in why;
 * coord_http_stop cleans up after a failure too. */
int coord_http_start(struct fc_coord *c, char *why, size_t whylen);
void coord_http_stop(struct fc_coord *c);
/* Connections the listener closed, by rule (FC_HG_*, http_guard.h). */
void coord_http_closed_counts(struct fc_coord *c, uint64_t out[3]);
#ifdef MHD_VERSION /* with <microhttpd.h> included first */
/* The access handler coord_http_start gives libmicrohttpd (cls: the
 * coordinator): GET or HEAD of the three paths, 405 for other methods (a
 * body is read and dropped), 404 for other paths. Exposed for a test that
 * drives it through a daemon of its own (tests/fuzz/fuzz_metrics_http.c). */
enum MHD_Result coord_http_request(void *cls, struct MHD_Connection *conn, const char *url, const char *method,
                                   const char *version, const char *upload_data, size_t *upload_size, void **state);
#endif
/* The same listener for a coordinator replica that stands by (`fedc
 * coordinator --etcd`, before its coordinator exists): /healthz 200,
 * /readyz 200 "standby" (a standby is ready: it can take over, and the
 * kubelet must not hold rollouts or disruption budgets on it), /metrics the
 * gauge fedc_replica_standby 1. Same binding rules and guard as above. The
 * replica stops it before its coordinator binds the address. */
typedef struct fc_text_http fc_standby_http;
int fc_standby_http_start(const char *listen, int pub, uint32_t conns_per_address, uint64_t request_ms,
                          fc_standby_http **out, char *why, size_t whylen);
void fc_standby_http_stop(fc_standby_http *h); /* accepts NULL */
/* The general form, for a process that is not a coordinator (`fedc
 * aggregator --metrics-listen`): /healthz 200; /readyz from ready() (200 if
 * *ok stays 1, else 503, with its text); /metrics from metrics() (malloc'd
 * Prometheus text). Same binding rules (loopback unless pub) and guard. */
typedef struct fc_text_http fc_text_http;
typedef struct fc_text_http_cfg {
  const char *listen;
  int pub;
  uint32_t conns_per_address;
  uint64_t request_ms;
  char *(*metrics)(void *ctx);
  const char *(*ready)(void *ctx, int *ok);
  void *ctx;
  const char *what; /* the log line's first words */
  int port;         /* set by start: the bound port */
} fc_text_http_cfg;
int fc_text_http_start(const fc_text_http_cfg *cfg, fc_text_http **out, char *why, size_t whylen);
int fc_text_http_port(const fc_text_http *th);
void fc_text_http_stop(fc_text_http *th); /* accepts NULL */
/* Prometheus text, built up (metrics.c and aggr_metrics.c): p holds len
 * bytes of cap (NUL-terminated); oom set on the first failed growth, after
 * which every put is ignored (the caller frees p and reports it). */
typedef struct fc_text {
  char *p;
  size_t len, cap;
  int oom;
} fc_text;
void fc_text_put(fc_text *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* # HELP and # TYPE lines of one metric. */
void fc_text_head(fc_text *b, const char *name, const char *type, const char *help);
/* The /metrics body (malloc'd, NUL-terminated). */
char *coord_metrics_text(struct fc_coord *c);

#endif
