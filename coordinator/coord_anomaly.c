/*
 * coord_anomaly.c - the coordinator's side of update anomaly detection
 * (anomaly.h is the I/O-free core): it measures each plaintext update as
 * it is committed, scores the round once its aggregate is known, applies
 * the operator's policy, and keeps the identity table in STATE/anomaly.json.
 *
 *   upload_end (handler thread, no lock)  coord_anomaly_measure: one pass over the slot
 *   upload_end (under mu, commit OK)      coord_anomaly_commit_locked: the measurement joins
 *   finalize (driver, no mu)              coord_anomaly_round: scores, warnings, audit, file
 *   record_round_locked (under mu)        coord_anomaly_record: the round record's fields
 *   driver tick (under mu)                coord_anomaly_apply_locked: cool-downs into the engine
 *   every call (handler thread)           coord_anomaly_seen: identity misuse (addresses)
 *
 * Policy (cfg.anomaly_policy): observe records scores only; flag also warns,
 * audits "anomaly" with the score and counts fedc_anomaly_flagged_total;
 * exclude also leaves the identity out of selection for
 * anomaly_cooldown_s (the engine's excluded_until, applied again after a
 * restart from the persisted table). Secure aggregation rounds have no
 * per-update input to score (masked): nothing is measured there.
 *
 * Identity misuse: an identity's source host (the peer address without its
 * port) not seen before for it is counted and audited ("identity", event
 * new_address); calls from two different connections (host:port) of one
 * identity less than FC_ANOM_CONCURRENT_MS apart are "concurrent", counted
 * and audited; with refuse_concurrent_identity the newer connection's call
 * is refused (a client restarted within that window is refused until it
 * passes: the cost of the option, documented in docs/operations.md).
 *
 * May call: anomaly.h, the engine (under mu), the audit log and the store's
 * atomic file helpers (thread-safe), the log.
 */
#include <math.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/clock.h"
#include "common/fileutil.h"
#include "common/log.h"
#include "coordinator/agg_slots.h"
#include "coordinator/anomaly.h"
#include "coordinator/audit.h"
#include "coordinator/coord_int.h"
#include "fedc/error.h"

#define MOD "anomaly"
#define FC_ANOM_CONCURRENT_MS 5000

typedef struct last_conn {
  char id[FC_ANOM_ID_MAX];
  char addr[96];
  uint64_t at_ms;
  uint64_t audited_ms; /* last "concurrent" audit record: at most one a minute per identity */
} last_conn;

struct coord_anomaly {
  fc_anomaly *core;
  pthread_mutex_t mu; /* conns, last */
  last_conn *conns;   /* open addressing by identity hash */
  size_t nconns;
  fc_round_stats last; /* the last scored round's summary (an_* fields, round) */
  uint64_t apply_at;   /* next time the cool-downs are pushed to the engine */
  atomic_int dirty;    /* the table changed since it was read or saved (a failed start writes nothing) */
};

static void path_of(const fc_coord *c, char *p, size_t len) { snprintf(p, len, "%s/anomaly.json", c->cfg.state_dir); }

int coord_anomaly_init(fc_coord *c, size_t n, char *err, size_t errlen) {
  fc_anomaly_cfg cfg;
  fc_anomaly_cfg_defaults(&cfg);
  cfg.policy = fc_anomaly_policy_parse(c->cfg.anomaly_policy);
  cfg.threshold = c->cfg.anomaly_threshold;
  cfg.cooldown_ms = c->cfg.anomaly_cooldown_s * 1000;
  struct coord_anomaly *a = calloc(1, sizeof *a);
  int rc = FEDC_ERR_NOMEM;
  if (!a) goto fail;
  pthread_mutex_init(&a->mu, NULL);
  a->nconns = 4096;
  if (!(a->conns = calloc(a->nconns, sizeof *a->conns))) goto fail;
  if ((rc = fc_anomaly_create(&cfg, n, &a->core)) != FEDC_OK) {
    snprintf(err, errlen, "anomaly detection: bad settings (policy %s, threshold %g)", c->cfg.anomaly_policy,
             c->cfg.anomaly_threshold);
    goto fail;
  }
  char p[1024];
  path_of(c, p, sizeof p);
  json_error_t je;
  json_t *o = json_load_file(p, 0, &je);
  if (o) {
    char why[200] = "";
    rc = fc_anomaly_from_json(a->core, o, why, sizeof why);
    json_decref(o);
    if (rc != FEDC_OK) {
      snprintf(err, errlen, "%s: %s", p, why);
      goto fail;
    }
  } else if (access(p, F_OK) == 0) {
    snprintf(err, errlen, "%s: %s", p, je.text);
    rc = FEDC_ERR_FORMAT;
    goto fail;
  }
  c->anom = a;
  return FEDC_OK;
fail:
  if (a) {
    fc_anomaly_destroy(a->core);
    free(a->conns);
    free(a);
  }
  if (rc == FEDC_ERR_NOMEM) snprintf(err, errlen, "out of memory for anomaly detection");
  return rc;
}

void coord_anomaly_save(fc_coord *c) {
  if (!c->anom || !atomic_exchange(&c->anom->dirty, 0)) return;
  char p[1024], err[300] = "";
  path_of(c, p, sizeof p);
  json_t *o = fc_anomaly_to_json(c->anom->core);
  char *s = o ? json_dumps(o, JSON_COMPACT | JSON_PRESERVE_ORDER | JSON_REAL_PRECISION(17)) : NULL;
  json_decref(o);
  int rc = FEDC_ERR_NOMEM;
  if (s) {
    fc_atomic_file f;
    rc = fc_atomic_begin(&f, p, 0600, err, sizeof err);
    if (rc == FEDC_OK) rc = fc_atomic_write(&f, s, strlen(s), err, sizeof err);
    rc = rc == FEDC_OK ? fc_atomic_commit(&f, err, sizeof err) : (fc_atomic_abort(&f), rc);
    free(s);
  }
  if (rc != FEDC_OK) {
    atomic_store(&c->anom->dirty, 1); /* try again at the next round or at stop */
    FC_WARN(MOD, "could not save %s: %s (scores are kept in memory)", p, err[0] ? err : "out of memory");
  }
}

void coord_anomaly_free(fc_coord *c) {
  if (!c->anom) return;
  coord_anomaly_save(c);
  fc_anomaly_destroy(c->anom->core);
  pthread_mutex_destroy(&c->anom->mu);
  free(c->anom->conns);
  free(c->anom);
  c->anom = NULL;
}

fc_anomaly_meas *coord_anomaly_measure(fc_coord *c, const fc_agg_update *u, double l2) {
  if (!c->anom || !u) return NULL;
  fc_anomaly_meas *m = malloc(sizeof *m);
  if (m) fc_anomaly_measure(c->anom->core, u->buf, l2, m);
  return m;
}

void coord_anomaly_commit_locked(fc_coord *c, const char *client, fc_anomaly_meas *m) {
  if (c->anom && m && fc_anomaly_add(c->anom->core, client, m) != FEDC_OK)
    FC_WARN(MOD, "update of %s not scored (out of memory)", client);
  free(m);
}

void coord_anomaly_bucket(fc_coord *c, const fc_agg_update *u, double l2, uint32_t bucket) {
  fc_anomaly_meas *m = coord_anomaly_measure(c, u, l2);
  char label[32];
  snprintf(label, sizeof label, "bucket %u", bucket + 1);
  if (m && fc_anomaly_add_group(c->anom->core, label, m) != FEDC_OK) FC_WARN(MOD, "%s not scored (out of memory)", label);
  free(m);
}

void coord_anomaly_round_begin_locked(fc_coord *c) {
  if (c->anom) fc_anomaly_round_begin(c->anom->core);
}

void coord_anomaly_round(fc_coord *c, const float *delta) {
  if (!c->anom) return;
  fc_anomaly_round r;
  fc_engine_status es;
  uint64_t now = fc_now_ms();
  pthread_mutex_lock(&c->mu);
  fc_engine_get_status(c->engine, now, &es);
  pthread_mutex_unlock(&c->mu);
  uint64_t round = es.round;
  if (fc_anomaly_round_end(c->anom->core, delta, round, now, &r) != FEDC_OK) {
    FC_WARN(MOD, "round %llu: updates not scored (out of memory)", (unsigned long long)round);
    return;
  }
  if (!r.inputs) {
    fc_anomaly_round_free(&r);
    return;
  }
  const fc_anomaly_cfg *cfg = fc_anomaly_config(c->anom->core);
  fc_round_stats s;
  memset(&s, 0, sizeof s);
  s.round = round;
  s.an_inputs = r.inputs;
  s.an_norm[0] = r.norm_min;
  s.an_norm[1] = r.norm_median;
  s.an_norm[2] = r.norm_max;
  s.an_cos_agg = r.cos_agg_median;
  s.an_cos_prev = r.cos_prev_median;
  s.an_top_score = r.in[r.top].score;
  snprintf(s.an_top, sizeof s.an_top, "%s", r.in[r.top].id);
  FC_INFO(MOD,
          "round %llu: %u updates, norm %.4g / %.4g / %.4g, cosine to aggregate %.3f, to the nearest other "
          "update %.3f (median) / %.3f (max), top score %.2f (%s, %s)",
          (unsigned long long)round, r.inputs, r.norm_min, r.norm_median, r.norm_max, r.cos_agg_median,
          r.cos_nn_median, r.cos_nn_max, s.an_top_score, s.an_top, fc_anomaly_feature_name(r.in[r.top].feature));
  for (uint32_t i = 0; i < r.inputs; i++) {
    const fc_anomaly_input *in = &r.in[i];
    if (!in->flagged) continue;
    if (s.an_nflagged < FC_ROUND_BLAMED_MAX)
      snprintf(s.an_flagged[s.an_nflagged], sizeof s.an_flagged[0], "%s", in->id);
    s.an_nflagged++;
    FC_WARN(MOD, "round %llu: %s flagged: score %.2f this round (%s), %.2f over rounds (threshold %.2f)%s",
            (unsigned long long)round, in->id, in->score, fc_anomaly_feature_name(in->feature), in->ewma,
            cfg->threshold, in->excluded ? ": excluded from selection" : "");
    if (c->audit)
      fc_audit_append(c->audit, "anomaly",
                      json_pack("{s:I,s:s,s:s,s:f,s:s,s:f,s:f,s:f,s:f,s:f,s:f,s:I}", "round", (json_int_t)round,
                                "client", in->id, "action", in->excluded ? "exclude" : "flag", "score", in->score,
                                "feature", fc_anomaly_feature_name(in->feature), "ewma", in->ewma, "threshold",
                                cfg->threshold, "norm", in->norm, "cos_agg", in->cos_agg, "cos_prev",
                                isfinite(in->cos_prev) ? in->cos_prev : 0.0, "cos_nn",
                                isfinite(in->cos_nn) ? in->cos_nn : 0.0, "excluded_s",
                                (json_int_t)(in->excluded ? cfg->cooldown_ms / 1000 : 0)));
  }
  pthread_mutex_lock(&c->mu);
  c->metrics.anomaly_flagged += s.an_nflagged;
  c->metrics.anomaly_top_score = s.an_top_score;
  c->metrics.anomaly_norm_median = s.an_norm[1];
  c->metrics.anomaly_cos_agg = s.an_cos_agg;
  pthread_mutex_lock(&c->anom->mu);
  c->anom->last = s;
  c->anom->apply_at = 0; /* push new cool-downs to the engine at the next tick */
  pthread_mutex_unlock(&c->anom->mu);
  pthread_mutex_unlock(&c->mu);
  fc_anomaly_round_free(&r);
  atomic_store(&c->anom->dirty, 1);
  coord_anomaly_save(c);
}

void coord_anomaly_abandon_locked(fc_coord *c) {
  if (c->anom) fc_anomaly_round_abandon(c->anom->core);
}

void coord_anomaly_record(fc_coord *c, fc_round_stats *r) {
  if (!c->anom) return;
  pthread_mutex_lock(&c->anom->mu);
  const fc_round_stats *s = &c->anom->last;
  if (s->round == r->round && s->an_inputs) {
    r->an_inputs = s->an_inputs;
    memcpy(r->an_norm, s->an_norm, sizeof r->an_norm);
    r->an_cos_agg = s->an_cos_agg;
    r->an_cos_prev = s->an_cos_prev;
    r->an_top_score = s->an_top_score;
    memcpy(r->an_top, s->an_top, sizeof r->an_top);
    memcpy(r->an_flagged, s->an_flagged, sizeof r->an_flagged);
    r->an_nflagged = s->an_nflagged;
  }
  pthread_mutex_unlock(&c->anom->mu);
}

/* Excluded: out of selection, and (--async-calibrate) its cached update out of every later step. */
static void exclude_one(void *arg, const char *id, uint64_t until) {
  fc_coord *c = arg;
  fc_engine_exclude(c->engine, id, until);
  coord_calib_forget_locked(c, id);
}

void coord_anomaly_apply_locked(fc_coord *c, uint64_t now) {
  if (!c->anom || now < c->anom->apply_at) return;
  /* Once a second: an identity known to the engine only after a restart
   * (its first check-in) gets its cool-down before it can be selected. */
  c->anom->apply_at = now + 1000;
  c->metrics.anomaly_excluded = fc_anomaly_excluded(c->anom->core, now, exclude_one, c);
}

static size_t slot_of(const struct coord_anomaly *a, const char *id) {
  uint64_t h = 1469598103934665603ull; /* FNV-1a */
  for (const unsigned char *p = (const unsigned char *)id; *p; p++) h = (h ^ *p) * 1099511628211ull;
  return (size_t)(h % a->nconns);
}

void coord_anomaly_left(fc_coord *c, const fc_peer *peer) {
  if (!c->anom || !peer->name[0]) return;
  struct coord_anomaly *a = c->anom;
  pthread_mutex_lock(&a->mu);
  last_conn *lc = &a->conns[slot_of(a, peer->name)];
  if (!strcmp(lc->id, peer->name) && !strcmp(lc->addr, peer->addr)) lc->at_ms = 0;
  pthread_mutex_unlock(&a->mu);
}

/* "ipv4:10.0.0.1:5000" -> "ipv4:10.0.0.1"; "ipv6:[::1]:5000" -> "ipv6:[::1]". */
static void host_of(const char *addr, char *out, size_t len) {
  snprintf(out, len, "%s", addr);
  char *colon = strrchr(out, ':');
  if (colon && colon != strchr(out, ':')) *colon = 0;
}

int coord_anomaly_seen(fc_coord *c, const fc_peer *peer) {
  if (!c->anom || !peer->name[0] || peer->role != FC_ROLE_CLIENT) return 0;
  struct coord_anomaly *a = c->anom;
  uint64_t now = fc_now_ms();
  int concurrent = 0, refuse = 0, audit_it = 0;
  pthread_mutex_lock(&a->mu);
  /* One slot per hash: a collision only forgets the other identity's last
   * connection (missing a concurrency, never inventing one). */
  last_conn *lc = &a->conns[slot_of(a, peer->name)];
  if (!strcmp(lc->id, peer->name) && strcmp(lc->addr, peer->addr) && now - lc->at_ms < FC_ANOM_CONCURRENT_MS) {
    concurrent = 1;
    refuse = c->cfg.refuse_concurrent_identity;
    if (now - lc->audited_ms >= 60000) {
      lc->audited_ms = now;
      audit_it = 1;
    }
  }
  if (!refuse) { /* a refused call does not become the identity's connection */
    snprintf(lc->id, sizeof lc->id, "%s", peer->name);
    snprintf(lc->addr, sizeof lc->addr, "%s", peer->addr);
    lc->at_ms = now;
  }
  pthread_mutex_unlock(&a->mu);
  char host[96];
  host_of(peer->addr, host, sizeof host);
  int bits = fc_anomaly_seen(a->core, peer->name, host, concurrent, now);
  atomic_store(&a->dirty, 1); /* last seen moved: saved at the next round or at stop */
  if (refuse) fc_anomaly_refused(a->core, peer->name);
  if (bits & FC_ANOM_NEW_ADDR) atomic_fetch_add(&c->metrics.identity_new_address, 1);
  if (bits & FC_ANOM_CONCURRENT) atomic_fetch_add(&c->metrics.identity_concurrent, 1);
  if (refuse) atomic_fetch_add(&c->metrics.identity_refused, 1);
  if ((bits & FC_ANOM_NEW_ADDR) || audit_it) {
    FC_WARN(MOD, "identity %s %s (from %s)%s", peer->name,
            (bits & FC_ANOM_CONCURRENT) ? "connected from two places at once" : "seen from a new address", peer->addr,
            refuse ? ": refused" : "");
    if (c->audit)
      fc_audit_append(c->audit, "identity",
                      json_pack("{s:s,s:s,s:s,s:b}", "client", peer->name, "event",
                                (bits & FC_ANOM_CONCURRENT) ? "concurrent" : "new_address", "addr", peer->addr,
                                "refused", refuse));
  }
  return refuse;
}

int coord_anomaly_idents(fc_coord *c, fc_anomaly_ident **out, size_t *n) {
  if (!c->anom) {
    *out = NULL;
    *n = 0;
    return FEDC_OK;
  }
  return fc_anomaly_idents(c->anom->core, out, n);
}

void coord_anomaly_rate_limited(fc_coord *c, const char *client) {
  /* Admins and aggregators ("admin/NAME", coord_limits.c; "aggregator/NAME",
   * coord_aggpartial.c) are not clients: not in the table. */
  if (c->anom && client && client[0] && strncmp(client, "admin/", 6) && strncmp(client, "aggregator/", 11)) {
    fc_anomaly_rate_limited(c->anom->core, client);
    atomic_store(&c->anom->dirty, 1);
  }
}

int coord_anomaly_round_pb(const fc_round_stats *s, coord_anomaly_pb *out) {
  if (!s->an_inputs) return 0;
  Fedc__V1__RoundAnomaly *m = &out->m;
  fedc__v1__round_anomaly__init(m);
  m->inputs = s->an_inputs;
  m->norm_min = s->an_norm[0];
  m->norm_median = s->an_norm[1];
  m->norm_max = s->an_norm[2];
  m->cos_agg = s->an_cos_agg;
  m->cos_prev = s->an_cos_prev;
  m->top_client = (char *)s->an_top;
  m->top_score = s->an_top_score;
  m->flagged_count = s->an_nflagged;
  m->n_flagged = s->an_nflagged < FC_ROUND_BLAMED_MAX ? s->an_nflagged : FC_ROUND_BLAMED_MAX;
  for (size_t i = 0; i < m->n_flagged; i++) out->flagged[i] = (char *)s->an_flagged[i];
  m->flagged = out->flagged;
  return 1;
}

/* The reply stays well under the client's 4 MiB receive limit. */
#define CLIENTS_REPLY_MAX 20000

void coord_h_clients(fc_scall *call, void *ctx) {
  fc_coord *c = ctx;
  const Fedc__V1__ClientsRequest *req = (const Fedc__V1__ClientsRequest *)fc_scall_request(call);
  const fc_peer *peer = fc_scall_peer(call);
  if (c->audit) fc_audit_contact(c->audit, peer->name, fc_role_name(peer->role), peer->cert_sha256, peer->addr);
  fc_anomaly_ident *ids = NULL;
  size_t n = 0;
  Fedc__V1__ClientInfo *infos = NULL, **ptrs = NULL;
  char *(*addrs)[FC_ANOM_ADDR_MAX] = NULL;
  if (coord_anomaly_idents(c, &ids, &n) != FEDC_OK) goto oom;
  size_t cap = req->limit && req->limit < CLIENTS_REPLY_MAX ? req->limit : CLIENTS_REPLY_MAX;
  size_t first = n > cap ? n - cap : 0, k = n - first; /* sorted by identity: the last `cap` */
  infos = calloc(k ? k : 1, sizeof *infos);
  ptrs = calloc(k ? k : 1, sizeof *ptrs);
  addrs = calloc(k ? k : 1, sizeof *addrs);
  if (!infos || !ptrs || !addrs) goto oom;
  for (size_t i = 0; i < k; i++) {
    fc_anomaly_ident *r = &ids[first + i];
    Fedc__V1__ClientInfo *o = &infos[i];
    fedc__v1__client_info__init(o);
    o->identity = r->id;
    o->last_seen_unix_ms = r->last_seen_ms;
    for (uint32_t j = 0; j < r->naddrs; j++) addrs[i][j] = r->addrs[j];
    o->n_addresses = r->naddrs;
    o->addresses = addrs[i];
    o->rounds = r->rounds;
    o->score = r->ewma;
    o->last_score = r->last_score;
    o->flags = r->flags;
    o->excluded_until_unix_ms = r->excluded_until > fc_now_ms() ? r->excluded_until : 0;
    o->rate_limited = r->rate_limited;
    o->new_addresses = r->new_addrs;
    o->concurrent = r->concurrent;
    o->refused_concurrent = r->refused;
    o->last_round = r->last_round;
    ptrs[i] = o;
  }
  Fedc__V1__ClientsResponse resp = FEDC__V1__CLIENTS_RESPONSE__INIT;
  resp.n_clients = k;
  resp.clients = ptrs;
  resp.policy = (char *)c->cfg.anomaly_policy;
  resp.threshold = c->cfg.anomaly_threshold;
  fc_scall_finish(call, GRPC_STATUS_OK, NULL, &resp.base);
  goto out;
oom:
  fc_scall_finish(call, GRPC_STATUS_RESOURCE_EXHAUSTED, "out of memory", NULL);
out:
  free(ids);
  free(infos);
  free(ptrs);
  free(addrs);
}

/* Every handler's first word (moved from coordinator.c): the audit of a
 * certificate's first contact, then identity misuse above. */
/* Audit: the first call made with each certificate. */
/* Audits the contact; 1 if the call must be refused as a second concurrent
 * connection of its identity (coord_anomaly.c): the caller then returns. */
int coord_audit_peer(fc_coord *c, fc_scall *call, const fc_peer *peer) {
  if (c->audit) fc_audit_contact(c->audit, peer->name, fc_role_name(peer->role), peer->cert_sha256, peer->addr);
  if (!coord_anomaly_seen(c, peer)) return 0;
  fc_scall_finish(call, GRPC_STATUS_FAILED_PRECONDITION,
                  "identity already connected from another address (refuse_concurrent_identity)", NULL);
  return 1;
}
