/*
 * coord_int.h - the coordinator's state, shared by the coordinator's role
 * files (coordinator.c lists them: lifecycle, configuration, model and
 * history, state directory, DP, publishing, driver, the service handlers),
 * coord_secagg.c (the secure-aggregation stages), coord_eval*.c, coord_start.c
 * (start-up checks), model_sign.c and metrics.c.
 * Not an interface for other modules.
 */
#ifndef FEDC_COORD_COORD_INT_H
#define FEDC_COORD_COORD_INT_H

#include <jansson.h>
#include <pthread.h>
#include <stdatomic.h>

#include "common/clock.h"
#include "coordinator/aggregate.h"
#include "coordinator/coordinator.h"
#include "coordinator/metrics.h"
#include "coordinator/server_opt.h"
#include "coordinator/store.h"
#include "coordinator/upload_resume.h"
#include "fedc/v1/fedc.pb-c.h"
#include "transport/transport.h"

struct fc_sa_server;
struct fc_audit;
struct coord_limits;
struct coord_http;

typedef struct model_ref {
  atomic_int refs;
  uint64_t version;
  uint8_t sha[FC_SHA256_LEN];
  fc_model_spec spec;
  float *data;
  uint64_t bytes;
  fc_signed man; /* signed manifest; all NULL when the version is unsigned */
} model_ref;

struct fc_coord {
  fc_coord_cfg cfg;
  /* Model signing (model_sign.c): the signer's key and certificate, and the
   * federation CA the start-up check verified it against (read at start with
   * --secagg too: advertised certificates are checked against it). */
  char *sign_key, *sign_cert, *ca_pem;
  size_t sign_key_len, sign_cert_len, ca_len;
  fc_store_key store_key; /* cfg.model_key and the plaintext policy */
  uint64_t sa_stage_ms;   /* when the open secure-aggregation stage opened (metrics) */
  int adopted;            /* adopt_state signed the current version at start */
  pthread_mutex_t mu; /* engine, rounds history, current model pointer */
  fc_engine *engine;
  fc_agg *agg;
  /* Differential privacy accountant: RDP composed over the counted rounds at
   * each order (common/dp_accountant.h), and what it gives. */
  double *dp_rdp;
  double *dp_round_rdp;   /* what one round adds (rate and noise are fixed by the configuration) */
  size_t dp_norders;
  uint64_t dp_rounds;
  double dp_eps;
  float clip;             /* the clip norm tasks announce: clip_norm, or where adaptive clipping took it (under mu) */
  uint32_t dp_unclipped;  /* adaptive clipping: this round's committed updates sent within the clip (under mu) */
  double dp_sa_centred;   /* distributed DP with adaptive clipping: the unmasked noisy centred count (under mu) */
  double dp_round_expected; /* the round's expected cohort (rate x live clients at its start) */
  double dp_round_clip;   /* the round in progress: its clip, and the noise multiplier counted for it (0 until */
  double dp_round_noise;  /* it is), for rounds.jsonl */
  char dp_stop[200];      /* why the federation stopped for its budget ("" if not) */
  fc_sopt *sopt;          /* server optimizer; its state before the running step: */
  float *sopt_backup;
  uint64_t sopt_backup_step;
  int sopt_backup_a_set;
  model_ref *avg_model;   /* --model-average: the average as of c->model's version (under mu); else NULL */
  struct fc_wm *wm;       /* the watermark (watermark.h); NULL without --watermark-key */
  model_ref *model;
  fc_round_stats *rounds;
  size_t nrounds, caprounds;
  fc_server *server;
  pthread_t driver;
  int driver_started;
  pthread_mutex_t stop_mu;
  pthread_cond_t stop_cv;
  int stopping;
  uint64_t started_ms;
  fc_method methods[15];
  /* Model downloads in flight, bounded by cfg.download_slots: each one pins
   * gRPC send buffers, so this (not the number of clients) bounds memory. */
  pthread_mutex_t dl_mu;
  int closing; /* under dl_mu: fc_coord_stop has begun */
  int downloads; /* of them, those counted against download_slots */
  struct download *dl_list;
  pthread_mutex_t up_mu; /* uploads streaming now */
  struct upload *uploads;
  fc_partials partials;  /* under up_mu: kept prefixes of cut uploads (coord_resume.c) */
  /* The state directory could not be written (disk full, read-only, ...):
   * no new round starts until a retry succeeds; retries back off from 1 s to
   * 60 s. Under mu. */
  int store_blocked;
  char store_err[300];
  char pause_reason[256]; /* why the engine is paused if not by an admin (a drift hold), "" else (under mu) */
  struct coord_drift *drift; /* model drift on the reference set (coord_drift.c); NULL without --reference-data */
  uint64_t store_retry_at, store_backoff_ms;
  size_t history_unsaved; /* trailing records of `rounds` not yet in rounds.jsonl */
  fc_store_state state_want; /* under mu: what state.json should say */
  uint64_t state_want_seq;   /* under mu: bumped by state_dirty_locked */
  pthread_mutex_t store_mu;  /* one writer of the state directory at a time */
  uint64_t state_written_seq; /* under store_mu */
  int guard_started;      /* transport/accept_guard.h runs for our port */
  struct fc_audit *audit; /* STATE/audit.log (NULL with audit_log off); thread-safe */
  struct coord_limits *limits; /* call limits, refusal counts, audit budget (coord_limits.c); thread-safe */
  fc_coord_metrics metrics; /* coordinator/metrics.h */
  struct coord_http *http;  /* metrics_listen served (NULL when off or not yet): metrics.c */
  int http_fd;              /* its socket, bound at start before it is served (-1: none) */
  int http_port;            /* the port bound */
  char http_where[300];     /* "host:port" bound */
  /* Secure aggregation of the running round (coord_secagg.c); under mu.
   * One SecAgg instance per bucket: one over the whole cohort, or with a
   * robust aggregator random buckets of at least secagg_bucket clients. */
  struct fc_sa_server **sa;
  uint8_t *sa_dead; /* per bucket: 0 live, else the stage (FC_SA_*) it failed at */
  uint32_t nsa;
  fc_agg *bagg;     /* bucketing: the robust rule over the buckets' means (NULL without) */
  volatile int sa_abort; /* stops mask expansion when shutting down */
  struct coord_eval *ev;  /* federated evaluation (coord_eval.c); under mu */
  /* Members' certificates verified in earlier rounds (crypto/cert_cache.h),
   * so each is parsed and chain-checked once; under mu. */
  struct fc_cert_cache *sa_certs;
  /* Check-ins waiting for a round (coord_ci_park.c), under mu. */
  struct coord_ci_park *ci_park;
  uint32_t nci_park, ci_park_cap;
  int ci_park_closed; /* stopping: check-ins are answered at once */
  /* SecAgg polls waiting for their stage (coord_sa_park.c), under mu. */
  struct coord_sa_park *sa_park;
  uint32_t nsa_park, sa_park_cap;
  int sa_park_closed; /* stopping: polls are answered at once */
  struct coord_anomaly *anom; /* update anomaly scores, identity misuse (coord_anomaly.c); thread-safe */
  struct fc_calib *calib; /* --async-calibrate: the clients' cached updates (coord_calib.c); under mu */
  struct coord_async_log *async_log; /* async mode: the open buffer's log (coord_async.c); under mu */
  struct coord_tier *tier; /* aggregator tier (coord_aggtier.c); NULL without --aggregator-tier */
};

/* ---- coord_aggtier.c: the leader's side of the aggregator tier (issue 23) ---- */
/* At start: what the tier refuses in this slice, in one sentence. */
int coord_tier_cfg_check(const fc_coord_cfg *cfg, char *err, size_t errlen);
/* With cfg.agg_tier: read the registry, start its refresh thread. */
int coord_tier_start(fc_coord *c, char *err, size_t errlen);
void coord_tier_stop(fc_coord *c); /* accepts c->tier NULL */
/* A TRAIN task's aggregator (takes mu unless `locked`: the caller holds it): address and expected identity;
 * FEDC_ERR_NOT_FOUND if none is registered (or the client's has left). */
int coord_tier_task(fc_coord *c, const char *client, uint64_t round, int locked, char addr[256], char identity[300]);
/* Status: the registered aggregators' load (takes mu); 0 without a tier. */
struct fc_tier_load_info;
size_t coord_tier_loads(fc_coord *c, struct fc_tier_load_info *out, size_t cap);
/* Aggregator/AggregatorRound and Aggregator/SubmitPartial (role aggregator). */
void coord_h_agg_round(fc_scall *call, void *ctx);
/* Under mu: when the open round stops taking updates (its deadline, or under
 * secure aggregation the masked stage's). */
uint64_t coord_tier_take_deadline(const fc_coord *c, const fc_engine_status *es);
/* The book of aggregators and assignments (agg_tier.h; read and changed under mu). */
struct fc_tier;
struct fc_tier *coord_tier_book(fc_coord *c);
/* The leader needs each update whole (1.17: a robust rule without SecAgg, or
 * an anomaly policy that flags or excludes): aggregators relay them. */
int coord_tier_relay(const fc_coord_cfg *cfg);
/* ---- coord_aggpartial.c: SubmitPartial (sums, masked sums, relayed updates) ---- */
void coord_h_agg_partial(fc_scall *call, void *ctx);
/* coord_secagg.c, under mu: clients' certificates verified once against the
 * federation CA (SecAgg members; relayed updates' signers); NULL without a CA. */
struct fc_cert_cache *coord_cert_cache(fc_coord *c);

/* ---- coord_async.c: asynchronous buffered aggregation (engine_async.c) ---- */
/* At start: what async mode refuses (secure aggregation, DP, a robust rule
 * whose precondition a buffer cannot meet), in one sentence. */
int coord_async_cfg_check(const fc_coord_cfg *cfg, char *err, size_t errlen);
/* Under mu, before the engine counts an accepted update: write and fsync it
 * to the open buffer's log. FEDC_ERR_IO/NOMEM with why: refuse the update. */
int coord_async_log_update(fc_coord *c, const char *client, uint64_t round, uint64_t examples, double loss,
                           uint64_t staleness, double weight, uint64_t bytes, const float *values, size_t n,
                           char *why, size_t whylen);
/* Under mu, before an upload begins: FEDC_OK if the log can take the open
 * buffer's next update (a broken one is repaired here), else the reason, so
 * the upload is refused before its bytes are sent. */
int coord_async_log_ready(fc_coord *c, char *why, size_t whylen);
/* Under mu, at tick STARTED: the first buffer after start replays the log. */
void coord_async_started_locked(fc_coord *c);
/* A version was published and state.json says so, or the buffer was
 * abandoned: the log is done with. */
void coord_async_buffer_done(fc_coord *c);
/* Async, a publish failed with rc (c->mu held). Deposed (etcd refused our
 * fenced Txn): the buffer log is never touched again by this replica (the
 * next leader replays it). Transient (I/O, etcd timeout or unavailable):
 * kept, the next buffer replays it and publishes again; returns 1 (the
 * caller backs off). Else (the same updates would fail again): removed. */
int coord_async_publish_failed(fc_coord *c, int rc);
void coord_async_free(fc_coord *c);
/* Staleness ",fedbuff": scale the buffer's combined delta by its sum w(s) n
 * / sum n (takes c->mu). */
void coord_async_fedbuff_scale(fc_coord *c, float *delta, size_t n);
/* ---- coord_calib.c: cached update calibration (calib.h, --async-calibrate) ---- */
int coord_calib_cfg_check(const fc_coord_cfg *cfg, char *err, size_t errlen);
int coord_calib_start(fc_coord *c, char *err, size_t errlen); /* nothing without --async-calibrate */
void coord_calib_stop(fc_coord *c);
void coord_calib_begin_locked(fc_coord *c);
/* An accepted update, before it is folded (upload and replay), under mu. */
void coord_calib_apply_locked(fc_coord *c, const char *client, uint64_t examples, float *x);
/* Its halves, for the buffer log's replay: calibrated before the commit, staged once it counted. */
void coord_calib_stage_locked(fc_coord *c, const char *client, uint64_t examples, const float *x);
void coord_calib_calibrate_locked(fc_coord *c, const char *client, float *x);
/* An identity the anomaly detector excludes: its cached update leaves the mean. */
void coord_calib_forget_locked(fc_coord *c, const char *client);
/* coord_finalize: the buffer's mean becomes the step; then, published, the cache takes the buffer. Take mu. */
void coord_calib_finish(fc_coord *c, float *delta);
void coord_calib_published(fc_coord *c);
void coord_calib_status_pb(fc_coord *c, Fedc__V1__AsyncStatus *as); /* takes mu */
/* StatusResponse.async (hist and fn: its storage); takes mu. */
void coord_async_status_pb(fc_coord *c, Fedc__V1__AsyncStatus *as, uint32_t hist[FC_STALE_BUCKETS], char *fn,
                           size_t fnlen);
/* RoundRecord.async of a buffer's record (pointing into s); 0 for a sync round. */
int coord_async_round_pb(const fc_round_stats *s, Fedc__V1__RoundAsync *ra);

/* ---- coord_secagg.c (all under c->mu unless said) ---- */
/* A round started: set up its SecAgg session. FEDC_OK or an abandon reason. */
int coord_sa_begin(fc_coord *c, char *why, size_t whylen);
/* At start: FEDC_ERR_INVALID with why if secagg_t is below the clients'
 * floor 2t > k + 1 (secagg.h) for some instance the configuration can run. */
int coord_sa_cfg_check(const fc_coord_cfg *cfg, char *err, size_t errlen);
/* DP: z split between the update sum and adaptive clipping's count (coord_dp.c). */
void coord_dp_split(const fc_coord *c, double expected, double *zu, double *sb);
/* The round ended (published or abandoned): drop the session. */
void coord_sa_end(fc_coord *c);
/* The coordinator is going away: what secure aggregation kept across rounds. */
void coord_sa_free(fc_coord *c);
/* The bucket `client` is in (its index there in *index), or -1. */
int coord_sa_find(const fc_coord *c, const char *client, uint32_t *index);
/* How many of bucket b's members are still expected to advertise. */
uint32_t coord_sa_want_advertise(const fc_coord *c, uint32_t b);

/* ---- coord_checkin.c / coord_ci_park.c: check-ins held until the round they wait for ---- */
typedef struct coord_checkin_q { /* what a check-in asked, kept while it is held */
  char client[65];
  fc_device_state dev;
  int can_eval;
  uint64_t last_round;
} coord_checkin_q;
void coord_checkin_answer(fc_coord *c, fc_scall *call, const coord_checkin_q *q, int held, uint64_t until);
/* Under mu: hold the call (FEDC_OK) or refuse to (stopping, async mode, full: answer it now). */
int coord_ci_park_locked(fc_coord *c, fc_scall *call, const coord_checkin_q *q, uint64_t until_ms);
typedef struct coord_ci_again {
  fc_scall *call;
  coord_checkin_q q;
  uint64_t until_ms;
} coord_ci_again;
/* Under mu, after the tick: the held check-ins to ask the engine again (the
 * round or state changed; malloc'd, removed from the list); those held
 * --checkin-hold-ms are answered WAIT here. Then, without mu, coord_checkin_answer
 * (held) for each, and free(*out). */
uint32_t coord_ci_park_take_locked(fc_coord *c, uint64_t now_ms, coord_ci_again **out);
/* Stopping: answer every held check-in and hold no more (before the server's shutdown). */
void coord_ci_park_close(fc_coord *c);
void coord_ci_park_free(fc_coord *c);

/* ---- coord_sa_park.c: SecAgg polls held until their stage opens (under c->mu) ---- */
/* Answer every held poll whose stage has opened, whose round is over, or
 * that has waited FC_SA_PARK_MS; all: every one (the round ended, stopping). */
void coord_sa_park_wake(fc_coord *c, uint64_t now_ms, int all);
/* Stopping: answer every held poll and hold no more (before the server's shutdown). */
void coord_sa_park_close(fc_coord *c);
void coord_sa_park_free(fc_coord *c);

/* ---- coord_limits.c: per-identity call limits; refusals and the audit budget ---- */
enum { COORD_LIM_POLL, COORD_LIM_CALLS, COORD_LIM_ADMIN, COORD_LIM_N };
const char *coord_limit_class_name(int cls);
/* After the audit log and the model are loaded, before the server starts. */
int coord_limits_start(fc_coord *c, char *err, size_t errlen);
/* Put the limit of each method's class in front of its handler (before fc_server_start). */
void coord_limits_wrap(fc_coord *c, fc_method *m, size_t n);
/* A refusal of `client` for `reason` (FC_RF_*, refusals.h): 1 if the caller
 * should audit this one in full, 0 if it was counted (or there is no log). */
int coord_refusal_note(fc_coord *c, const char *client, int reason);
/* The refusals.h reason a refusal's status counts under (coord_limits.c). */
int coord_refusal_reason(grpc_status_code code);
/* From the round driver: write the refusal counts of a finished interval;
 * once a second, the audit log's size against its budget. */
void coord_limits_tick(fc_coord *c, uint64_t now_ms);
/* After the server is destroyed, before the audit log is closed: writes the
 * counts so far and frees. Accepts c->limits NULL. */
void coord_limits_stop(fc_coord *c);
typedef struct coord_limits_stats {
  uint64_t refused[COORD_LIM_N]; /* calls refused by class */
  uint32_t identities;           /* with call buckets of their own */
  int audit;                     /* the rest is known (the audit log is on) */
  uint64_t refusals_counted, audit_bytes, audit_budget, free_bytes, free_floor;
  int level;                     /* 0 ok, 1 warning, 2 refusals counted together */
} coord_limits_stats;
void coord_limits_get(fc_coord *c, coord_limits_stats *st);

/* ---- start-up checks (coord_start.c): nothing there writes ---- */
/* Bind the gRPC server (c->server, not run: c->methods must be set), check
 * our certificate's federation and the signing key, bind metrics_listen. */
int coord_start_listen(fc_coord *c, char *err, size_t errlen);
/* The aggregator's dimensions for a model of `spec` under cfg. */
typedef struct coord_agg_dims {
  int robust, slots;
  uint32_t rows, buckets; /* rows: updates (or bucket sums) a robust rule keeps */
  size_t entries;         /* masked entries per vector under secure aggregation */
  uint64_t slot_bytes;    /* one staging slot: the model, or the masked vector */
} coord_agg_dims;
void coord_agg_shape(const fc_coord_cfg *cfg, const fc_model_spec *spec, coord_agg_dims *d);
/* A robust aggregator's memory for the model within agg_memory_mib? */
int coord_start_memory(const fc_coord_cfg *cfg, const fc_model_spec *spec, char *err, size_t errlen);

/* ---- model signing (model_sign.c) ---- */
/* Load and check the signing key (cfg.signing_cert/key): it must be a signer
 * certificate of the federation CA whose key signs. Warns if there is none. */
int coord_sign_init(fc_coord *c, char *err, size_t errlen);
void coord_sign_free(fc_coord *c);
/* Sign m's manifest (round, parent version and SHA; parent_sha NULL for v0;
 * opt_sha: the server optimizer state saved with it, or NULL), write
 * models/vN.manifest and attach it to m. A no-op without a key. */
int coord_sign_version(fc_coord *c, model_ref *m, uint64_t round, const uint8_t *parent_sha, const uint8_t *opt_sha,
                       char *err, size_t errlen);
/* Attach a stored version's manifest to m after checking it describes m.
 * at_start: the current version at start-up, where a missing manifest is
 * refused unless cfg.adopt_state (then signed now) and a manifest whose
 * signer certificate has expired since is signed again with the current key
 * if it still verifies apart from the date. FEDC_ERR_SIGNATURE if it fails. */
int coord_manifest_load(fc_coord *c, model_ref *m, const fc_store_model_info *info, int at_start, char *err,
                        size_t errlen);
/* The optimizer-state SHA-256 m's manifest vouches for: 1 and *out, or 0 if
 * the manifest names none (or m is unsigned). */
int coord_manifest_opt_sha(const model_ref *m, uint8_t out[FC_SHA256_LEN]);
/* The SHA-256 (hex) of m's signed manifest text: 1, or 0 if m is unsigned. */
int coord_manifest_sha(const model_ref *m, char hex[FC_SHA256_HEX_LEN]);
/* Add "manifest_sha256" (coord_manifest_sha) to the audit record rec if m is
 * signed; returns rec (may be NULL). */
json_t *coord_audit_manifest(json_t *rec, const model_ref *m);
/* The at-rest key of cfg, or NULL. */
const fc_store_key *coord_model_key(const fc_coord *c);
/* The engine's tick said SA_CLOSE: close the stage in the core, advance the
 * engine or abandon. Returns the engine's next action (FC_TICK_AGGREGATE
 * after the last stage, FC_TICK_ABANDON, or FC_TICK_NONE). */
int coord_sa_close(fc_coord *c);
/* Someone submitted: if the open stage has everything, tell the engine. */
void coord_sa_check_complete(fc_coord *c);
/* The SecAgg part of a task. *p is filled; its arrays point into the session. */
void coord_sa_task(fc_coord *c, const char *client, Fedc__V1__SecAggParams *p);
/* Bucket bookkeeping, under mu: instances not dropped; drop instance b
 * after `stage` failed for `why` (one instance: FEDC_ERR_REJECTED, the
 * reason in out); whether the robust rule can still take what is left. */
uint32_t coord_sa_live(const fc_coord *c);
int coord_sa_drop_bucket(fc_coord *c, uint32_t b, int stage, const char *why, char *out, size_t outlen);
int coord_sa_buckets_enough(fc_coord *c, int stage, char *out, size_t outlen);
/* ---- coord_sa_finish.c ---- */
/* Driver, WITHOUT mu: unmask the sum and decode the weighted mean delta (n floats). */
int coord_sa_finish(fc_coord *c, float *delta, uint32_t *count, char *why, size_t whylen);
/* Masked upload: the spec it must have, and whether `client` may send it now. */
int coord_sa_masked_begin(fc_coord *c, const char *client, fc_model_spec *spec, uint32_t *bucket, char *why,
                          size_t whylen);
void coord_sa_masked_done(fc_coord *c, const char *client);
/* Aggregator tier (coord_aggtier.c), under mu: the masked spec of instance
 * b (FEDC_ERR_NOT_FOUND if there is none), and whether a partial of
 * instance b may carry these clients' masked inputs now (each a member of b
 * whose masked input b still expects; b live). */
int coord_sa_masked_spec(const fc_coord *c, uint32_t b, fc_model_spec *spec);
/* 1 (and its instance in *bucket) if `client`'s masked input is expected now. */
int coord_sa_expects(const fc_coord *c, const char *client, uint32_t *bucket);
int coord_sa_partial_check(const fc_coord *c, uint32_t b, const char *const *clients, size_t n, char *why,
                           size_t whylen);
/* Per-stage counts of the session, for the round record. */
void coord_sa_remaining(fc_coord *c, uint32_t out[5]);
/* ---- coord_sa_blame.c (under c->mu) ---- */
/* After the secrets are rebuilt: count, log and audit the members named for
 * bad unmask shares (the engine excludes repeat offenders). */
void coord_sa_blame_locked(fc_coord *c);
/* The round's record: the names of those members. */
void coord_sa_blamed_record(const fc_coord *c, fc_round_stats *r);
/* The robust aggregator's settings from the configuration (coord_cfg.c). */
void coord_robust_cfg(const fc_coord_cfg *cfg, fc_robust_cfg *r);
/* Every handler's first word (coordinator.c): the audit of each certificate's
 * first contact, and identity misuse (coord_anomaly_seen); 1 if the call was
 * refused (finished) for a concurrent connection of the identity. */
int coord_audit_peer(fc_coord *c, fc_scall *call, const fc_peer *peer);
/* ---- coord_checkin.c ---- */
/* The CheckIn handler (client role, unary). */
void coord_h_checkin(fc_scall *call, void *ctx);
/* Admin Status: the eligible population and pace steering (takes mu);
 * policy (n bytes) holds the policy text out->policy points to. */
void coord_elig_status(fc_coord *c, Fedc__V1__EligibilityStatus *out, char *policy, size_t n);
/* ---- coord_anomaly.c: update anomaly scores and identity misuse (its header says when each runs) ---- */
struct fc_anomaly_meas;
struct fc_anomaly_ident;
/* After the model is loaded: the core for n parameters, STATE/anomaly.json read back. */
int coord_anomaly_init(fc_coord *c, size_t n, char *err, size_t errlen);
/* Saves the table and frees; accepts c->anom NULL. */
void coord_anomaly_free(fc_coord *c);
void coord_anomaly_save(fc_coord *c);
/* No lock: one pass over a verified plaintext update (NULL: not measured). */
struct fc_anomaly_meas *coord_anomaly_measure(fc_coord *c, const fc_agg_update *u, double l2);
/* Under mu: the committed update's measurement joins the round (frees m; NULL is fine). */
void coord_anomaly_commit_locked(fc_coord *c, const char *client, struct fc_anomaly_meas *m);
/* Driver, no lock: a secure-aggregation bucket's unmasked mean (scored, never an identity's). */
void coord_anomaly_bucket(fc_coord *c, const fc_agg_update *u, double l2, uint32_t bucket);
void coord_anomaly_round_begin_locked(fc_coord *c);
void coord_anomaly_abandon_locked(fc_coord *c);
/* Driver, WITHOUT mu: the round's aggregate (before DP noise and the server step). */
void coord_anomaly_round(fc_coord *c, const float *delta);
/* Under mu: the round record's an_* fields. */
void coord_anomaly_record(fc_coord *c, fc_round_stats *r);
/* Under mu, each driver tick: the policy's cool-downs into the engine. */
void coord_anomaly_apply_locked(fc_coord *c, uint64_t now);
/* Any call: 1 if it must be refused (a concurrent connection under refuse_concurrent_identity). */
int coord_anomaly_seen(fc_coord *c, const fc_peer *peer);
/* The identity said Leave from this address: its connection is over, so a
 * restart from another address is not a concurrent one. */
void coord_anomaly_left(fc_coord *c, const fc_peer *peer);
/* A round record's anomaly statistics for the Rounds reply: 1 and *out
 * filled (pointing into s) if the round has any. */
typedef struct coord_anomaly_pb {
  Fedc__V1__RoundAnomaly m;
  char *flagged[FC_ROUND_BLAMED_MAX];
} coord_anomaly_pb;
int coord_anomaly_round_pb(const fc_round_stats *s, coord_anomaly_pb *out);
/* ---- coord_drift.c: model drift on the reference set (its header says when each runs) ---- */
/* After the model is loaded: the reference set and the baseline; FEDC_OK without --reference-data. */
int coord_drift_init(fc_coord *c, char *err, size_t errlen);
void coord_drift_free(fc_coord *c);
/* Driver, WITHOUT mu, before the version is signed: its PSI, warning and audit. */
void coord_drift_check(fc_coord *c, const float *params, uint64_t version, uint64_t round);
/* Under mu, after a round is recorded: the record's dr_* fields, the new baseline, and under hold the pause. */
void coord_drift_published_locked(fc_coord *c, fc_round_stats *r);
/* The Rounds reply's drift message of a record: 1 and *out filled if it was checked. */
int coord_drift_round_pb(const fc_round_stats *s, Fedc__V1__RoundDrift *out);
/* coord_drift_fed.c: the same check on a completed federated evaluation's
 * predicted-class counts when there is no reference set. Under mu, before
 * the evaluation is recorded: fills e->dr_*, pauses the engine under hold
 * (*held = 1: the caller's caller persists it); returns the audit record to
 * append after mu is released (NULL: nothing to audit). */
json_t *coord_drift_fed_locked(fc_coord *c, uint64_t round, fc_round_eval *e, int *held);
/* Admin/Clients (admin role, unary): the identity table. */
void coord_h_clients(fc_scall *call, void *ctx);
/* A call of client was refused for its rate (coord_limits.c, the check-in path). */
void coord_anomaly_rate_limited(fc_coord *c, const char *client);
/* ---- coord_leave.c ---- */
/* The Leave handler (client role, unary, async). */
void coord_h_leave(fc_scall *call, void *ctx);
/* Under mu: log what the pick-up deadline's replacement did (FC_TICK_REPLACED). */
void coord_log_replaced(fc_coord *c);
/* ---- coord_eval.c: federated evaluation (coordinator.c calls these) ---- */
/* At start, before the configuration is used: what would void its meaning. */
int coord_eval_cfg_check(const fc_coord_cfg *cfg, char *err, size_t errlen);
/* After the engine exists; coord_eval_free accepts c->ev NULL. */
int coord_eval_init(fc_coord *c, char *err, size_t errlen);
void coord_eval_free(fc_coord *c);
/* Under mu: `client` said Leave: withdrawn from the running evaluation's
 * SecAgg instance, if it is a member (coord_eval_report.c). */
void coord_eval_sa_withdraw(fc_coord *c, const char *client);
/* The driver, after the training tick, WITHOUT mu: the evaluation's tick and
 * what it asks for. 0, or COORD_EVAL_OWED if a record is owed to rounds.jsonl
 * (store_sync), | COORD_EVAL_HELD if the drift check paused the engine (the
 * driver marks state.json dirty: coord_state_dirty_locked). */
#define COORD_EVAL_OWED 1
#define COORD_EVAL_HELD 2
int coord_eval_drive(fc_coord *c);
/* Under mu: answer a check-in that got FC_CHECKIN_EVAL (packed under mu: a
 * secure-aggregation task points into the evaluation's session). */
void coord_eval_answer_locked(fc_coord *c, fc_scall *call, const char *client, const fc_eval_info *task,
                              uint32_t retry_ms);
/* A new reference to the model the running evaluation evaluates, if
 * `client` is in its cohort and asks for that version; else NULL. */
model_ref *coord_eval_model(fc_coord *c, const char *client, uint64_t version);
/* store_sync, after the round lines: the evaluation lines owed, outside mu. */
int coord_eval_sync(fc_coord *c, char *err, size_t errlen);
/* Admin Rounds: the evaluation part of a record (pending: its evaluation is
 * due or running); m has room for FC_EVAL_METRICS_MAX. */
void coord_eval_pb(const fc_round_eval *e, int pending, Fedc__V1__EvalRecord *out, Fedc__V1__EvalMetric *m,
                   Fedc__V1__EvalMetric **mp);
/* The /metrics lines of federated evaluation (malloc'd; NULL when off). */
char *coord_eval_metrics_text(fc_coord *c);
/* ReportEval, and SecAggSubmit/SecAggPoll taking an evaluation's messages
 * before the training round's (coord_h_secagg_*). */
void coord_h_eval_report(fc_scall *call, void *ctx);
void coord_h_sa_submit_any(fc_scall *call, void *ctx);
void coord_h_sa_poll_any(fc_scall *call, void *ctx);
/* ---- coord_cfg.c ---- */
/* What fc_coord_start refuses before anything else. */
int coord_cfg_check(const fc_coord_cfg *cfg, char *err, size_t errlen);
/* The server optimizer's settings from the coordinator's (checked). */
int coord_sopt_cfg(const fc_coord_cfg *cfg, fc_sopt_cfg *o, char *err, size_t errlen);

/* ---- coord_model.c: the model snapshot and the history in memory ---- */
/* A snapshot of version `version` owning data (its SHA-256 computed); NULL: no memory. */
model_ref *coord_model_new(uint64_t version, const fc_model_spec *spec, float *data);
/* A reference to the current snapshot (takes and drops mu); drop it with coord_model_unref. */
model_ref *coord_model_get(fc_coord *c);
void coord_model_unref(model_ref *m);
/* Append a round record to the history kept in memory (under mu); -1: no memory. */
int coord_history_add(fc_coord *c, const fc_round_stats *r);
/* Put an evaluation into its round's record (under mu). */
void coord_history_eval_locked(fc_coord *c, uint64_t round, const fc_round_eval *e);
/* ---- coord_state.c: the state directory ---- */
/* Under mu: state.json is owed (a snapshot of the engine's state). */
void coord_state_dirty_locked(fc_coord *c);
/* Write what is owed (state.json, then the history lines); call without mu.
 * On failure new rounds are blocked until a retry succeeds. */
int coord_store_sync(fc_coord *c);
/* Under mu: the state directory failed with err; block rounds, back off. */
void coord_store_failed_locked(fc_coord *c, const char *err);
/* While blocked: retry when due (call without mu). */
void coord_store_retry(fc_coord *c);
/* At start: the admin state of state.json, and a record for a round left open. */
int coord_restore_admin_state(fc_coord *c, const fc_store_state *st, char *err, size_t errlen);

/* ---- coord_dp.c ---- */
/* The epsilon after one more round; next gets the composed RDP. */
double coord_dp_after_one_round(const fc_coord *c, double *next);
/* delta (the mean of count clipped updates) made private, the round counted
 * and dp.json written (outside mu). */
int coord_dp_privatize(fc_coord *c, float *delta, size_t n, uint32_t count, char *why, size_t whylen);
/* Under mu: stop the federation if one more round would pass the target. */
void coord_dp_check_budget_locked(fc_coord *c);

/* ---- coord_publish.c (the driver thread, outside mu) ---- */
/* The closed round's aggregate into a new, signed, written version. */
int coord_finalize(fc_coord *c, uint64_t *version, uint8_t sha[FC_SHA256_LEN], char *why, size_t whylen);
/* coord_ha.c (no-ops without cfg.leader): a fenced check that we still lead
 * before anything is written to the shared store; the fenced move of etcd's
 * model pointer after the model file is written and before anyone can fetch
 * it; on refusal both log, audit "deposed" and fail. */
int coord_ha_check(fc_coord *c, const char *what, char *why, size_t whylen);
/* A replica suspended for want of etcd quorum (leader.h) answers the
 * check-in UNAVAILABLE with a retry time and returns 1; else 0, nothing sent. */
int coord_ha_checkin_held(fc_coord *c, fc_scall *call, const char *who);
int coord_ha_publish(fc_coord *c, uint64_t version, const uint8_t sha[FC_SHA256_LEN], uint64_t round, char *why,
                     size_t whylen);
/* The shared audit log, written only while we lead (audit.h,
 * fc_audit_open_replica), and a "leader" record naming this replica. */
int coord_ha_audit_open(fc_coord *c, char *err, size_t errlen);
/* Status: fills out (pointing into *in) and returns 1 for a replica on etcd, 0 otherwise. */
struct fc_leader_info;
struct Fedc__V1__ReplicaStatus;
int coord_ha_status(fc_coord *c, struct Fedc__V1__ReplicaStatus *out, struct fc_leader_info *in);
/* ---- coord_status_ha.c: the replica list (etcd) and the aggregators' load ---- */
/* Fills rs->replicas (read from etcd now; replicas_error if it failed) and,
 * with a tier, rs->aggregators. Returns what rs points into: free() it once
 * the answer is sent (NULL on no memory: the lists stay empty). */
void *coord_status_ha(fc_coord *c, struct Fedc__V1__ReplicaStatus *rs);
/* At start: the optimizer state saved beside version (checked against its manifest). */
int coord_sopt_load(fc_coord *c, uint64_t version, const uint8_t sha[FC_SHA256_LEN], char *err, size_t errlen);
/* After it (and for a new federation): --model-average goes on or starts (coord_publish.c). */
int coord_avg_init(fc_coord *c, char *err, size_t errlen);
/* GetModel averaged: the average as of version (or the latest), or NULL with a gRPC status in *code and why. */
model_ref *coord_avg_get(fc_coord *c, uint64_t version, int latest, int *code, char *why, size_t whylen);
/* "adam lr=0.01 beta1=0.9 ...": for status and the history. */
void coord_sopt_text(const fc_coord *c, char *buf, size_t len);

/* ---- coord_driver.c ---- */
void *coord_driver_main(void *arg);

/* ---- the service handlers: coord_checkin.c, coord_download.c,
 * coord_upload.c, coord_admin.c ---- */
void coord_h_fetch_model(fc_scall *call, void *ctx);
void coord_h_get_model(fc_scall *call, void *ctx);
/* A transfer holding a slot or a snapshot that fell below min_transfer_bps
 * after the stream_idle_ms grace. */
int coord_too_slow(const fc_coord *c, fc_rate_guard *g, uint64_t bytes);
void coord_h_upload(fc_scall *call, void *ctx);
/* Under mu: cancel the uploads of `round` that can no longer count. */
void coord_cancel_uploads(fc_coord *c, uint64_t round);
void coord_cancel_client_uploads(fc_coord *c, const char *client); /* async Leave; c->mu held */
void coord_h_status(fc_scall *call, void *ctx);
void coord_h_rounds(fc_scall *call, void *ctx);
void coord_h_round_control(fc_scall *call, void *ctx);
/* The service handlers. */
void coord_h_secagg_submit(fc_scall *call, void *ctx);
void coord_h_secagg_poll(fc_scall *call, void *ctx);
size_t coord_sa_submit_limit(const fc_coord_cfg *cfg);

/* ---- coord_resume.c: resumable transfers (protocol 1.10, issue 26) ---- */
typedef struct coord_codec coord_codec; /* coord_codec.h */
typedef struct coord_upload_args {
  const char *client;
  uint64_t round;
  const Fedc__V1__UploadMsg *first; /* meta and header */
  const fc_model_spec *expect;
  uint64_t max_total;
  uint32_t bucket;
} coord_upload_args;
/* Open an UploadUpdate stream after the engine's begin: the header into rx
 * and a staging slot into *u, fresh (dropping any kept prefix of the caller;
 * a kept prefix of someone is evicted if no slot is free) or, when the header
 * has start_offset, the caller's kept prefix (*resumed_from its bytes). A
 * compressed upload's *codec (fresh from coord_codec_begin) is then replaced
 * by the kept decoder, which has consumed exactly the kept bytes.
 * GRPC_STATUS_OK, or the refusal with why (and *retry for busy). */
grpc_status_code coord_upload_open(fc_coord *c, const coord_upload_args *a, fc_chunk_rx *rx, fc_agg_update **u,
                                   coord_codec **codec, uint64_t *resumed_from, uint32_t *retry, char *why,
                                   size_t whylen);
/* A stream that broke off (the call gone, or ended before all its bytes,
 * which is how gRPC ends a call whose link was cut): keep its prefix for a
 * resume if it is worth it, with a compressed upload's decoder (*codec, may
 * be NULL); takes *rx, *u and *codec either way. Returns FEDC_ERR_PROTOCOL
 * with why ("stream ended early ...") when why is given. */
int coord_upload_keep(fc_coord *c, const char *client, uint64_t round, const Fedc__V1__UpdateMeta *meta,
                      uint32_t bucket, fc_chunk_rx *rx, fc_agg_update **u, coord_codec **codec, uint64_t deadline_ms,
                      char *why, size_t whylen);
/* From cancel_uploads (under mu): the round's kept prefixes go. */
void coord_resume_round_closed(fc_coord *c, uint64_t round);
/* At stop, before the aggregator is destroyed. */
void coord_resume_free(fc_coord *c);
/* UploadOffset (client role, unary, async). */
void coord_h_upload_offset(fc_scall *call, void *ctx);
void coord_resume_offset(fc_scall *call, void *ctx);
/* FetchModel's start_offset: FEDC_OK and *skip chunks to leave out (the
 * header then echoes it), or the call is finished with the refusal. */
struct fc_pb_header;
int coord_fetch_resume(fc_coord *c, fc_scall *call, const Fedc__V1__FetchModelRequest *req, struct fc_pb_header *hdr,
                       uint64_t *skip);

#endif
