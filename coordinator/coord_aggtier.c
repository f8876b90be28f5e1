/*
 * coord_aggtier.c - the leader's side of the aggregator tier (issue 23,
 * `fedc coordinator --etcd ... --aggregator-tier`): uploads go to
 * aggregators (`fedc aggregator`, aggr_node.c), and the leader folds their
 * partial sums instead of the clients' updates.
 *
 *   etcd P/aggregators/<name>  --(refresh thread, every 500 ms)-->  the book (agg_tier.h)
 *   CheckIn (TRAIN)            --> the client's aggregator, named in Task.aggregator_*
 *   AggregatorRound (role aggregator) --> the open round: version, shape, clip,
 *                                  submit-by time, the clients assigned to the caller
 *   SubmitPartial (role aggregator)   --> checked (agg_tier.c), then each update the
 *                                  partial names is begun and committed in the engine
 *                                  (so the round counts and closes as for direct
 *                                  uploads) and the sum folded with coefficient 1
 *
 * Secure aggregation (1.16): the leader keeps every stage but the masked
 * one (keys, shares, consistency, unmasking: small messages, and the
 * unmasking needs the survivors' shares); aggregators take the masked inputs
 * in that stage and hand over their sum mod 2^32 per instance (a bucket's
 * members go to one aggregator; one instance is split across them), which
 * the leader adds into the instance's sum as if each input had come to it.
 * The leader so sees one sum per aggregator and instance where one process
 * sees each masked input; aggregators see masked inputs only, uniform to
 * them. coord_tier_cfg_check refuses robust rules without SecAgg buckets, DP,
 * async mode, compressed uploads and anomaly policies that act on
 * per-update scores, each in one sentence. An aggregator
 * whose lease expires leaves the registry: its partials are refused as
 * unknown and its clients' updates are lost; the round closes by today's rule
 * (min-updates at the deadline).
 *
 * Invariants: the book is read and changed under c->mu only; a partial is
 * taken whole (every engine begin succeeds, then every commit, with one `now`
 * under one lock hold) or not at all; an update is counted once per round.
 * Owns: c->tier (the book, the refresh thread). May call: agg_tier.h,
 * leader.h (registry reads), engine.h, aggregate.h, audit.h,
 * transport/tensor_stream.h. Called by: coordinator.c (lifecycle, methods),
 * coord_checkin.c (the task), coord_upload.c (refuses direct uploads).
 */
#include "coordinator/coordinator.h"

#include <jansson.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/chunk.h"
#include "common/clock.h"
#include "common/log.h"
#include "coordinator/agg_tier.h"
#include "coordinator/audit.h"
#include "coordinator/coord_int.h"
#include "coordinator/leader.h"
#include "fedc/error.h"
#include "transport/tensor_stream.h"

#define MOD "coordinator"
#define REFRESH_MS 500
#define POLL_MS 200 /* what AggregatorRound tells aggregators */

struct coord_tier {
  fc_tier *book; /* under c->mu */
  pthread_t thread;
  int started;
  pthread_mutex_t mu; /* stop, with cv */
  pthread_cond_t cv;
  int stop;
  char last_bad[600]; /* the refresh thread's: a bad entry is logged when it changes, not every refresh */
};

int coord_tier_cfg_check(const fc_coord_cfg *cfg, char *err, size_t errlen) {
  const char *no = NULL;
  if (!cfg->agg_tier) return FEDC_OK;
  if (!cfg->leader) no = "a coordinator without --etcd (aggregators register in etcd)";
  else if (strcmp(cfg->aggregator, "fedavg") != 0 && !cfg->engine.secagg)
    no = "a robust aggregation rule without --secagg (it needs every update; with secure aggregation it runs "
         "over the buckets' means)";
  else if (cfg->engine.async) no = "--mode async";
  else if (cfg->upload_bits != 32) no = "compressed uploads (aggregators take float32 updates only for now)";
  else if (strcmp(cfg->anomaly_policy, "observe") != 0)
    no = "anomaly policies flag or exclude (the leader sees partial sums, not the per-update scores they act on)";
  if (!no) return FEDC_OK;
  snprintf(err, errlen, "--aggregator-tier cannot be combined with %s", no);
  return FEDC_ERR_INVALID;
}

/* The registry as etcd holds it now, into the book (under mu); joins and
 * leaves logged. */
static void refresh(fc_coord *c) {
  enum { CAP = FC_TIER_MAX_MEMBERS };
  fc_etcd_entry *e = calloc(CAP, sizeof *e);
  fc_tier_member *m = calloc(CAP, sizeof *m);
  size_t n = 0, k = 0;
  char err[512], prefix[600];
  if (!e || !m) goto out;
  if (fc_leader_read_prefix(c->cfg.leader, FC_TIER_KEY, e, CAP, &n, err, sizeof err) != FEDC_OK) {
    FC_DEBUG(MOD, "aggregator registry not read: %s", err);
    goto out; /* the book stays as it was: etcd may be back at the next refresh */
  }
  snprintf(prefix, sizeof prefix, "%s/%s", fc_leader_prefix(c->cfg.leader), FC_TIER_KEY);
  size_t plen = strlen(prefix);
  char bad[600] = "";
  for (size_t i = 0; i < n; i++) {
    const char *name = strncmp(e[i].key, prefix, plen) == 0 ? e[i].key + plen : "";
    if (fc_tier_parse_member(name, (const char *)e[i].kv.value, e[i].kv.value_len, c->cfg.federation, &m[k], err,
                             sizeof err) == FEDC_OK)
      k++;
    else if (!bad[0])
      snprintf(bad, sizeof bad, "%s", err);
  }
  if (bad[0] && strcmp(bad, c->tier->last_bad) != 0) FC_WARN(MOD, "aggregator registry: %s (entry ignored)", bad);
  snprintf(c->tier->last_bad, sizeof c->tier->last_bad, "%s", bad);
  pthread_mutex_lock(&c->mu);
  fc_tier *t = c->tier->book;
  for (size_t i = 0; i < k; i++)
    if (!fc_tier_known(t, m[i].name)) FC_INFO(MOD, "aggregator %s registered at %s", m[i].name, m[i].address);
  /* Members that are gone: their lease expired (or they revoked it). */
  for (size_t i = 0; i < fc_tier_member_count(t); i++) {
    const fc_tier_member *o = fc_tier_member_get(t, i);
    int still = 0;
    for (size_t j = 0; j < k && !still; j++) still = !strcmp(o->name, m[j].name);
    if (!still)
      FC_WARN(MOD, "aggregator %s left the registry (lease expired or revoked): the updates of its %zu client(s) "
                   "not counted yet in the open round are lost; the round closes by its rule (min-updates at the "
                   "deadline)",
              o->name, fc_tier_uncounted(t, o->name));
  }
  fc_tier_set_members(t, m, k);
  pthread_mutex_unlock(&c->mu);
out:
  for (size_t i = 0; i < n; i++) fc_etcd_kv_clear(&e[i].kv);
  free(e);
  free(m);
}

static void *refresh_main(void *arg) {
  fc_coord *c = arg;
  struct coord_tier *tt = c->tier;
  for (;;) {
    refresh(c);
    pthread_mutex_lock(&tt->mu);
    if (!tt->stop) {
      struct timespec ts;
      fc_deadline_after_ms(&ts, REFRESH_MS);
      pthread_cond_timedwait(&tt->cv, &tt->mu, &ts);
    }
    int stop = tt->stop;
    pthread_mutex_unlock(&tt->mu);
    if (stop) break;
  }
  return NULL;
}

int coord_tier_start(fc_coord *c, char *err, size_t errlen) {
  if (!c->cfg.agg_tier) return FEDC_OK;
  struct coord_tier *tt = calloc(1, sizeof *tt);
  if (!tt || fc_tier_create(&tt->book) != FEDC_OK) {
    free(tt);
    snprintf(err, errlen, "out of memory");
    return FEDC_ERR_NOMEM;
  }
  pthread_mutex_init(&tt->mu, NULL);
  pthread_cond_init(&tt->cv, NULL);
  c->tier = tt;
  refresh(c); /* the aggregators there now, before the first check-in */
  if (pthread_create(&tt->thread, NULL, refresh_main, c) != 0) {
    snprintf(err, errlen, "cannot start the aggregator registry thread");
    return FEDC_ERR_NOMEM;
  }
  tt->started = 1;
  FC_INFO(MOD, "aggregator tier: uploads go to the aggregators registered under %s/%s (%zu now)",
          fc_leader_prefix(c->cfg.leader), FC_TIER_KEY, fc_tier_member_count(tt->book));
  return FEDC_OK;
}

void coord_tier_stop(fc_coord *c) {
  struct coord_tier *tt = c->tier;
  if (!tt) return;
  if (tt->started) {
    pthread_mutex_lock(&tt->mu);
    tt->stop = 1;
    pthread_cond_signal(&tt->cv);
    pthread_mutex_unlock(&tt->mu);
    pthread_join(tt->thread, NULL);
  }
  fc_tier_destroy(tt->book);
  pthread_mutex_destroy(&tt->mu);
  pthread_cond_destroy(&tt->cv);
  free(tt);
  c->tier = NULL;
}

size_t coord_tier_loads(fc_coord *c, fc_tier_load_info *out, size_t cap) {
  if (!c->tier) return 0;
  pthread_mutex_lock(&c->mu);
  size_t n = fc_tier_loads(c->tier->book, out, cap);
  pthread_mutex_unlock(&c->mu);
  return n;
}

int coord_tier_task(fc_coord *c, const char *client, uint64_t round, int locked, char addr[256],
                    char identity[300]) {
  fc_tier_member m;
  if (!locked) pthread_mutex_lock(&c->mu); /* a secure-aggregation check-in holds it already */
  /* Secure aggregation in buckets: a bucket's masked inputs are summed apart
   * from the others', so a bucket goes to one aggregator (one partial each);
   * one instance is summed across aggregators (partial sums add mod 2^32). */
  uint32_t idx;
  long group = c->nsa > 1 ? coord_sa_find(c, client, &idx) : -1;
  int rc = fc_tier_assign_group(c->tier->book, round, client, group, &m);
  if (!locked) pthread_mutex_unlock(&c->mu);
  if (rc == FEDC_OK) {
    snprintf(addr, 256, "%s", m.address);
    snprintf(identity, 300, "%s", m.identity);
  }
  return rc;
}

/* Under mu: when the open round stops taking updates: its deadline, or
 * under secure aggregation the masked stage's (each stage has sa_stage_ms
 * from its opening). */
static uint64_t take_deadline(const fc_coord *c, const fc_engine_status *es) {
  if (c->cfg.engine.secagg) return c->sa_stage_ms + c->cfg.engine.sa_stage_ms;
  return es->round_started_ms + c->cfg.engine.round_ms;
}

/* The time by which aggregators stop taking updates and submit: a margin
 * before that deadline for the partial to reach us, a fifth of the round (or
 * stage), within [300 ms, 3 s]. */
static uint64_t submit_by(const fc_coord *c, const fc_engine_status *es) {
  uint64_t rm = c->cfg.engine.secagg ? c->cfg.engine.sa_stage_ms : c->cfg.engine.round_ms, margin = rm / 5;
  if (margin < 300) margin = 300;
  if (margin > 3000) margin = 3000;
  uint64_t deadline = take_deadline(c, es);
  return deadline > margin ? deadline - margin : 0;
}

void coord_h_agg_round(fc_scall *call, void *ctx) {
  fc_coord *c = ctx;
  const fc_peer *peer = fc_scall_peer(call);
  if (coord_audit_peer(c, call, peer)) return;
  if (!c->tier) {
    fc_scall_finish(call, GRPC_STATUS_FAILED_PRECONDITION,
                    "this coordinator runs no aggregator tier (start it with --etcd and --aggregator-tier)", NULL);
    return;
  }
  if ((c->cfg.engine.secagg || c->cfg.dp_noise_multiplier > 0) && peer->proto_minor < 16) {
    /* An older aggregator would take no masked input, or weigh updates by
     * their examples under DP: its clients' updates would be lost or refused. */
    char why[200];
    snprintf(why, sizeof why, "this federation runs %s through the aggregators (fedc protocol 1.16); the aggregator "
             "speaks 1.%u: upgrade it", c->cfg.engine.secagg ? "secure aggregation" : "differential privacy",
             peer->proto_minor);
    fc_scall_finish(call, GRPC_STATUS_FAILED_PRECONDITION, why, NULL);
    return;
  }
  Fedc__V1__AggRoundResponse resp = FEDC__V1__AGG_ROUND_RESPONSE__INIT;
  model_ref *m = coord_model_get(c);
  fc_pb_header *hb = malloc(sizeof *hb);
  char **names = NULL;
  size_t n = 0;
  fc_engine_status es;
  pthread_mutex_lock(&c->mu);
  fc_engine_get_status(c->engine, fc_now_ms(), &es);
  int known = fc_tier_known(c->tier->book, peer->name);
  fc_tier_note_seen(c->tier->book, peer->name, fc_now_ms()); /* its last call, for fedc status */
  size_t load = known ? fc_tier_load(c->tier->book, peer->name) : 0;
  const char **ptrs = load ? malloc(load * sizeof *ptrs) : NULL;
  if (ptrs) n = fc_tier_assigned(c->tier->book, es.round, peer->name, ptrs, load);
  /* Secure aggregation: open in the masked stage only, and only the
   * clients whose masked input their instance expects now (a member that
   * skipped a stage, or of a dropped bucket, is not listed: the aggregator
   * refuses its input, which would make the leader refuse the whole
   * partial), each with its instance. */
  int sa = c->cfg.engine.secagg;
  int open = sa ? es.state == FC_ENG_SA_MASKED && c->nsa > 0 : es.state == FC_ENG_TRAINING;
  if (sa && !open) n = 0;
  uint32_t *buckets = sa && n ? calloc(n, sizeof *buckets) : NULL;
  names = n ? calloc(n, sizeof *names) : NULL;
  size_t k = 0;
  for (size_t i = 0; names && i < n && (!sa || buckets); i++)
    if ((!sa || coord_sa_expects(c, ptrs[i], &buckets[k])) && (names[k] = strdup(ptrs[i])) != NULL) k++;
  int oom = n && (!names || (sa && !buckets));
  n = k;
  float clip = c->clip;
  fc_model_spec mspec;
  uint64_t mentries = 0;
  if (open && sa && coord_sa_masked_spec(c, 0, &mspec) == FEDC_OK) mentries = mspec.t[0].shape[0];
  uint32_t nb = sa ? c->nsa : 0;
  uint64_t by = open ? submit_by(c, &es) : 0;
  pthread_mutex_unlock(&c->mu);
  free(ptrs);
  if (!known) {
    char why[300];
    snprintf(why, sizeof why, "aggregator %s is not in the registry (%s/%s%s): register, then ask again",
             peer->name, fc_leader_prefix(c->cfg.leader), FC_TIER_KEY, peer->name);
    fc_scall_finish_retry(call, GRPC_STATUS_FAILED_PRECONDITION, why, 1000);
    goto out;
  }
  if (!hb || oom) {
    fc_scall_finish(call, GRPC_STATUS_RESOURCE_EXHAUSTED, "out of memory", NULL);
    goto out;
  }
  fc_pb_header_build(hb, &m->spec, m->bytes, m->sha, FC_CHUNK_DEFAULT);
  resp.open = open;
  resp.round = es.round;
  resp.model_version = es.version;
  resp.n_tensors = hb->h.n_tensors;
  resp.tensors = hb->h.tensors;
  resp.clip_norm = clip;
  resp.submit_by_unix_ms = by;
  resp.max_example_weight = c->cfg.max_example_weight;
  resp.n_clients = n;
  resp.clients = names;
  resp.poll_ms = POLL_MS;
  resp.fixed_frac_bits = sa ? 0 : (uint32_t)fc_agg_fedavg_frac_bits(c->agg); /* c->agg is the masked sum under sa */
  resp.masked = sa;
  resp.masked_entries = mentries;
  resp.n_client_buckets = buckets ? n : 0;
  resp.client_buckets = buckets;
  resp.n_buckets = nb;
  resp.uniform_weights = c->cfg.dp_noise_multiplier > 0; /* DP: uniform weights, as coord_upload.c's rules */
  fc_scall_finish(call, GRPC_STATUS_OK, NULL, &resp.base);
out:
  free(buckets);
  for (size_t i = 0; names && i < n; i++) free(names[i]);
  free(names);
  free(hb);
  coord_model_unref(m);
}

/* ---- SubmitPartial (blocking: on a pool thread, aggregators are few) ---- */

static void audit_partial(fc_coord *c, const char *agg, const Fedc__V1__PartialMeta *meta, const char *outcome,
                          const char *reason) {
  if (!c->audit) return;
  json_t *f = json_pack("{s:s,s:I,s:s,s:i,s:f}", "aggregator", agg, "round", (json_int_t)meta->round, "outcome",
                        outcome, "updates", (int)meta->n_updates, "total_weight", meta->total_weight);
  if (!f) return;
  if (reason) json_object_set_new(f, "reason", json_string(reason));
  fc_audit_append(c->audit, "partial", f);
}

/* Every update of an accepted partial, as coord_upload.c audits a direct
 * one, with the aggregator it came through. Under mu, before it counts. */
static void audit_updates(fc_coord *c, const char *agg, const Fedc__V1__PartialMeta *meta) {
  if (!c->audit) return;
  for (size_t i = 0; i < meta->n_updates; i++) {
    const Fedc__V1__PartialUpdate *u = meta->updates[i];
    char hex[FC_SHA256_HEX_LEN] = "";
    if (u->sha256.len == FC_SHA256_LEN) fc_hex(u->sha256.data, FC_SHA256_LEN, hex);
    json_t *f = json_pack("{s:s,s:I,s:s,s:b,s:s,s:s}", "client", u->client, "round", (json_int_t)meta->round,
                          "outcome", "accepted", "masked", (int)meta->masked, "sha256", hex, "aggregator", agg);
    if (f) fc_audit_append(c->audit, "update", f);
  }
}

static void partial_view(const Fedc__V1__PartialMeta *meta, const char *agg, const fc_model_spec *spec,
                         fc_tier_update *ups, fc_tier_partial *p) {
  for (size_t i = 0; i < meta->n_updates; i++)
    ups[i] = (fc_tier_update){meta->updates[i]->client, meta->updates[i]->num_examples, meta->updates[i]->weight,
                              meta->updates[i]->train_loss};
  *p = (fc_tier_partial){agg, meta->round, meta->model_version, meta->total_weight, ups, meta->n_updates, spec,
                         meta->masked};
}

/* Under mu: the checks of agg_tier.c against the round open now (spec: the
 * sum's shape, the model's or a masked input's); a masked partial also
 * against its SecAgg instance (coord_secagg.c); *deadline (may be NULL):
 * when that round stops taking updates. */
static int check_locked(fc_coord *c, const fc_tier_partial *p, const fc_model_spec *spec,
                        const Fedc__V1__PartialMeta *meta, uint64_t *deadline, char *why, size_t whylen) {
  fc_engine_status es;
  fc_engine_get_status(c->engine, fc_now_ms(), &es);
  if (deadline) *deadline = take_deadline(c, &es);
  if (es.state != (meta->masked ? FC_ENG_SA_MASKED : FC_ENG_TRAINING)) {
    snprintf(why, whylen, "no round is taking %s (round %llu closed or not at that stage)",
             meta->masked ? "masked inputs" : "updates", (unsigned long long)p->round);
    return FEDC_ERR_INVALID;
  }
  fc_tier_expect e = {es.round, es.version, spec, {c->clip, c->cfg.max_example_weight, c->cfg.dp_noise_multiplier > 0}};
  int rc = fc_tier_check_partial(c->tier->book, p, &e, why, whylen);
  if (rc != FEDC_OK || !meta->masked) return rc;
  const char **names = malloc(p->n * sizeof *names);
  if (!names) {
    snprintf(why, whylen, "out of memory");
    return FEDC_ERR_NOMEM;
  }
  for (size_t i = 0; i < p->n; i++) names[i] = p->updates[i].client;
  rc = coord_sa_partial_check(c, meta->bucket, names, p->n, why, whylen);
  free(names);
  return rc;
}

static grpc_status_code code_of(int rc) {
  return rc == FEDC_ERR_REJECTED ? GRPC_STATUS_PERMISSION_DENIED
         : rc == FEDC_ERR_TIMEOUT ? GRPC_STATUS_DEADLINE_EXCEEDED
         : rc == FEDC_ERR_HASH   ? GRPC_STATUS_DATA_LOSS
         : rc == FEDC_ERR_NOMEM  ? GRPC_STATUS_RESOURCE_EXHAUSTED
                                 : GRPC_STATUS_INVALID_ARGUMENT;
}

void coord_h_agg_partial(fc_scall *call, void *ctx) {
  fc_coord *c = ctx;
  const fc_peer *peer = fc_scall_peer(call);
  const Fedc__V1__PartialMsg *first = (const Fedc__V1__PartialMsg *)fc_scall_request(call);
  if (coord_audit_peer(c, call, peer)) return;
  char why[400] = "";
  grpc_status_code code = GRPC_STATUS_OK;
  fc_chunk_rx rx;
  memset(&rx, 0, sizeof rx);
  fc_agg_update *u = NULL;
  fc_tier_update *ups = NULL;
  fc_tier_partial p;
  int rc, receiving = 0; /* marked in the book: one partial stream per aggregator */
  model_ref *m = coord_model_get(c);
  const Fedc__V1__PartialMeta *meta = first->meta;
  if (!c->tier) {
    fc_scall_finish(call, GRPC_STATUS_FAILED_PRECONDITION, "this coordinator runs no aggregator tier", NULL);
    goto out;
  }
  if (!meta || !first->header || first->chunk) {
    fc_scall_finish(call, GRPC_STATUS_INVALID_ARGUMENT, "first partial message must carry meta and header", NULL);
    goto out;
  }
  if (meta->n_updates == 0 || meta->n_updates > FC_TIER_MAX_UPDATES) {
    snprintf(why, sizeof why, "partial names %zu updates (1..%d)", meta->n_updates, FC_TIER_MAX_UPDATES);
    code = GRPC_STATUS_INVALID_ARGUMENT;
    goto refuse;
  }
  for (size_t i = 0; i < meta->n_updates; i++)
    if (!meta->updates[i]->client || meta->updates[i]->sha256.len != FC_SHA256_LEN) {
      snprintf(why, sizeof why, "partial update %zu has no client or no SHA-256", i);
      code = GRPC_STATUS_INVALID_ARGUMENT;
      goto refuse;
    }
  ups = calloc(meta->n_updates, sizeof *ups);
  if (!ups) {
    code = GRPC_STATUS_RESOURCE_EXHAUSTED;
    snprintf(why, sizeof why, "out of memory");
    goto refuse;
  }
  /* The header against the model's shape (SHAPE names the first tensor that
   * differs), or under --reproducible-sum against the integer sum's one tensor. */
  /* Secure aggregation (1.16): masked sums of one instance each; c->agg is
   * the masked sum then (aggregate_secagg.c), not FedAvg's. */
  int sa = c->cfg.engine.secagg;
  if (!meta->masked != !sa) {
    snprintf(why, sizeof why, "%s", sa ? "this federation runs secure aggregation: a partial must carry a masked sum"
                                       : "this federation does not run secure aggregation: masked partial refused");
    code = GRPC_STATUS_FAILED_PRECONDITION;
    goto refuse;
  }
  int frac = sa ? 0 : fc_agg_fedavg_frac_bits(c->agg);
  if ((int)meta->fixed_frac_bits != frac) {
    snprintf(why, sizeof why, "partial sums with fixed_frac_bits %u, this leader takes %d (0 = float32)",
             meta->fixed_frac_bits, frac);
    code = GRPC_STATUS_FAILED_PRECONDITION;
    goto refuse;
  }
  fc_model_spec fixed_spec, mspec;
  if (frac) fc_fixed_sum_spec(c->agg->n, &fixed_spec);
  if (sa) {
    pthread_mutex_lock(&c->mu);
    rc = coord_sa_masked_spec(c, meta->bucket, &mspec);
    pthread_mutex_unlock(&c->mu);
    if (rc != FEDC_OK) {
      snprintf(why, sizeof why, "masked partial for secure-aggregation instance %u: no such instance now", meta->bucket);
      code = GRPC_STATUS_FAILED_PRECONDITION;
      goto refuse;
    }
  }
  const fc_model_spec *sum_spec = sa ? &mspec : &m->spec; /* what the book checks the header against */
  if ((rc = fc_chunk_rx_begin_pb(&rx, first->header, sa ? &mspec : frac ? &fixed_spec : &m->spec,
                                 sa     ? fc_model_bytes(&mspec)
                                 : frac ? (uint64_t)c->agg->n * 8
                                        : m->bytes,
                                 why, sizeof why)) != FEDC_OK) {
    code = code_of(rc);
    goto refuse;
  }
  /* The header's shape is the model's (float) or was checked against the
   * integer sum's one tensor above: the book checks the model's. */
  partial_view(meta, peer->name, frac ? &m->spec : &rx.spec, ups, &p);
  pthread_mutex_lock(&c->mu);
  uint64_t deadline = 0; /* a partial still arriving then is too late */
  /* One stream per aggregator first (cheap), then the checks (a partial
   * names up to 65,536 clients). */
  rc = fc_tier_partial_begin(c->tier->book, peer->name);
  receiving = rc == FEDC_OK;
  if (rc == FEDC_ERR_EXISTS)
    snprintf(why, sizeof why, "a partial from aggregator %s is being received already: one at a time", peer->name);
  else /* begun, or not registered: the checks say which, with the reason */
    rc = check_locked(c, &p, sum_spec, meta, &deadline, why, sizeof why);
  pthread_mutex_unlock(&c->mu);
  if (rc != FEDC_OK) {
    code = rc == FEDC_ERR_EXISTS ? GRPC_STATUS_RESOURCE_EXHAUSTED : code_of(rc);
    goto refuse;
  }
  if ((rc = c->agg->ops->update_begin(c->agg, c->cfg.stream_idle_ms, &u)) != FEDC_OK) {
    code = GRPC_STATUS_UNAVAILABLE;
    snprintf(why, sizeof why, "no staging slot free for the partial: %s", fedc_strerror(rc));
    goto refuse;
  }
  if (sa && fc_agg_secagg_route(c->agg, u, meta->bucket) != FEDC_OK) { /* checked above: the instances stand */
    code = GRPC_STATUS_FAILED_PRECONDITION;
    snprintf(why, sizeof why, "masked partial for secure-aggregation instance %u: no such instance now", meta->bucket);
    goto refuse;
  }
  fc_rate_guard rate; /* from the slot on, as the coordinator's uploads (coord_too_slow) */
  fc_rate_guard_start(&rate, fc_now_ms());
  for (;;) {
    ProtobufCMessage *msg = NULL;
    int r = fc_scall_recv(call, &msg);
    if (r < 0) { /* the call is dead and finished */
      FC_WARN(MOD, "partial from aggregator %s broke off after %llu of %llu bytes", peer->name,
              (unsigned long long)rx.received, (unsigned long long)rx.total);
      audit_partial(c, peer->name, meta, "refused", "stream broke off");
      goto out;
    }
    if (r == 0) break;
    const Fedc__V1__PartialMsg *pm = (const Fedc__V1__PartialMsg *)msg;
    uint64_t at = rx.received, now_ms = fc_now_ms();
    rc = FEDC_OK;
    if (!pm->chunk || pm->meta || pm->header) {
      rc = FEDC_ERR_PROTOCOL;
      snprintf(why, sizeof why, "expected only chunks after the first partial message");
    } else if (pm->chunk->data.len < FC_CHUNK_MIN && at + pm->chunk->data.len < rx.total) {
      rc = FEDC_ERR_PROTOCOL;
      snprintf(why, sizeof why, "chunk of %zu bytes at offset %llu: chunks before the last must be >= %u bytes",
               pm->chunk->data.len, (unsigned long long)at, FC_CHUNK_MIN);
    } else if (now_ms > deadline) {
      rc = FEDC_ERR_TIMEOUT;
      snprintf(why, sizeof why, "round %llu's deadline passed during the partial", (unsigned long long)meta->round);
    } else if (coord_too_slow(c, &rate, at + pm->chunk->data.len)) {
      rc = FEDC_ERR_TIMEOUT;
      snprintf(why, sizeof why, "partial too slow: %llu bytes in %.1f s (at least %llu B/s after %.1f s)",
               (unsigned long long)at, (now_ms - rate.start_ms) / 1000.0,
               (unsigned long long)c->cfg.min_transfer_bps, c->cfg.stream_idle_ms / 1000.0);
    } else {
      rc = fc_chunk_rx_feed(&rx, pm->chunk->offset, pm->chunk->data.data, pm->chunk->data.len, why, sizeof why);
    }
    if (rc == FEDC_OK)
      rc = frac ? fc_agg_fedavg_fixed_chunk(c->agg, u, at, pm->chunk->data.data, pm->chunk->data.len)
                : c->agg->ops->update_chunk(c->agg, u, at, pm->chunk->data.data, pm->chunk->data.len);
    protobuf_c_message_free_unpacked(msg, NULL);
    if (rc != FEDC_OK) {
      code = code_of(rc);
      goto refuse;
    }
  }
  if ((rc = fc_chunk_rx_end(&rx, why, sizeof why)) != FEDC_OK) {
    code = code_of(rc);
    goto refuse;
  }
  fc_agg_check chk; /* a masked sum is uniform to us: nothing to check in it (aggregate_secagg.c) */
  memset(&chk, 0, sizeof chk);
  if (!sa &&
      (frac ? fc_agg_fedavg_fixed_check(c->agg, u, &chk) : c->agg->ops->update_check(c->agg, u, &chk)) != FEDC_OK) {
    snprintf(why, sizeof why, "partial sum has a NaN/Inf value at parameter %zu", chk.bad_index);
    code = GRPC_STATUS_INVALID_ARGUMENT;
    goto refuse;
  }
  pthread_mutex_lock(&c->mu);
  fc_upload_rules rules = {c->clip, c->cfg.max_example_weight, c->cfg.dp_noise_multiplier > 0};
  rc = sa ? FEDC_OK : fc_tier_check_sum(chk.l2, chk.amax, &p, &rules, why, sizeof why);
  /* Again under the lock that commits: the round may have closed, the
   * aggregator's lease expired or another partial counted a task meanwhile. */
  if (rc == FEDC_OK) rc = check_locked(c, &p, sum_spec, meta, NULL, why, sizeof why);
  if (rc == FEDC_OK && !sa && meta->n_updates > fc_agg_fedavg_room(c->agg)) { /* before the engine counts anything */
    snprintf(why, sizeof why, "the round's sum holds %u more updates (the 64-bit sums' bound), the partial names %zu",
             fc_agg_fedavg_room(c->agg), meta->n_updates);
    rc = FEDC_ERR_INVALID;
  }
  uint64_t now = fc_now_ms();
  size_t begun = 0;
  int v = FC_UP_OK;
  for (; rc == FEDC_OK && begun < meta->n_updates; begun++) {
    const Fedc__V1__PartialUpdate *pu = meta->updates[begun];
    v = fc_engine_upload_begin_relayed(c->engine, pu->client, meta->round, meta->model_version, now);
    if (v != FC_UP_OK) {
      snprintf(why, sizeof why, "update of %s refused by the round: %s", pu->client, fc_upload_verdict_text(v));
      rc = FEDC_ERR_INVALID;
      break;
    }
  }
  if (rc != FEDC_OK) {
    for (size_t i = 0; i < begun; i++) fc_engine_upload_abort(c->engine, meta->updates[i]->client, meta->round);
    pthread_mutex_unlock(&c->mu);
    code = v == FC_UP_OK ? code_of(rc) : GRPC_STATUS_FAILED_PRECONDITION;
    goto refuse;
  }
  audit_updates(c, peer->name, meta); /* before they count */
  uint32_t counted = 0;
  for (size_t i = 0; i < meta->n_updates; i++) {
    const Fedc__V1__PartialUpdate *pu = meta->updates[i];
    /* One `now` under one hold of mu after every begin succeeded: the
     * engine changes state only at its tick, so each commit counts. */
    v = fc_engine_upload_commit(c->engine, pu->client, meta->round, (uint64_t)pu->weight, pu->train_loss, pu->bytes,
                                now);
    if (v == FC_UP_OK) counted++;
    if (v == FC_UP_OK && pu->unclipped && !sa) c->dp_unclipped++; /* adaptive clipping's count (coord_dp.c) */
    if (v != FC_UP_OK)
      FC_ERROR(MOD, "round %llu: update of %s from aggregator %s not counted after its begin: %s",
               (unsigned long long)meta->round, pu->client, peer->name, fc_upload_verdict_text(v));
  }
  if ((sa ? fc_agg_secagg_commit_partial(c->agg, u, (uint32_t)meta->n_updates)
          : fc_agg_fedavg_commit_partial(c->agg, u, meta->total_weight, (uint32_t)meta->n_updates)) != FEDC_OK)
    FC_ERROR(MOD, "round %llu: partial from aggregator %s counted but not folded (a bug: its checks passed)",
             (unsigned long long)meta->round, peer->name);
  u = NULL; /* the slot went back with the commit */
  /* Every named input is in the instance's sum now: each is a survivor of
   * the masked stage (the stage closes when all are in, coord_secagg.c). */
  for (size_t i = 0; sa && i < meta->n_updates; i++) coord_sa_masked_done(c, meta->updates[i]->client);
  fc_tier_mark_counted(c->tier->book, &p);
  fc_tier_note_seen(c->tier->book, peer->name, fc_now_ms());
  audit_partial(c, peer->name, meta, "accepted", NULL);
  pthread_mutex_unlock(&c->mu);
  atomic_fetch_add(&c->metrics.uploads_accepted, counted);
  if (sa)
    FC_INFO(MOD, "round %llu: masked partial from aggregator %s accepted (instance %u, %zu inputs)",
            (unsigned long long)meta->round, peer->name, meta->bucket, meta->n_updates);
  else
    FC_INFO(MOD, "round %llu: partial from aggregator %s accepted (%zu updates, weight %.0f, norm %.4g)",
            (unsigned long long)meta->round, peer->name, meta->n_updates, meta->total_weight, chk.l2);
  Fedc__V1__PartialResponse resp = FEDC__V1__PARTIAL_RESPONSE__INIT;
  resp.accepted = 1;
  resp.detail = "accepted";
  resp.counted = counted;
  fc_scall_finish(call, GRPC_STATUS_OK, NULL, &resp.base);
  goto out;
refuse:
  FC_WARN(MOD, "partial from aggregator %s refused: %s", peer->name, why);
  pthread_mutex_lock(&c->mu);
  fc_tier_note_refused(c->tier->book, peer->name);
  fc_tier_note_seen(c->tier->book, peer->name, fc_now_ms());
  pthread_mutex_unlock(&c->mu);
  if (meta) audit_partial(c, peer->name, meta, "refused", why);
  fc_scall_finish(call, code, why, NULL);
out:
  if (receiving) {
    pthread_mutex_lock(&c->mu);
    fc_tier_partial_end(c->tier->book, peer->name);
    pthread_mutex_unlock(&c->mu);
  }
  if (u) c->agg->ops->update_abort(c->agg, u);
  fc_chunk_rx_free(&rx);
  free(ups);
  coord_model_unref(m);
}
