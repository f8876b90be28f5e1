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
 *   SubmitPartial (role aggregator)   --> coord_aggpartial.c: checked (agg_tier.c), then
 *                                  each update the partial names is begun and committed
 *                                  in the engine (so the round counts and closes as for
 *                                  direct uploads) and the sum folded with coefficient 1
 *
 * Secure aggregation (1.16): the leader keeps every stage but the masked
 * one (keys, shares, consistency, unmasking: small messages, and the
 * unmasking needs the survivors' shares); aggregators take the masked inputs
 * in that stage and hand over their sum mod 2^32 per instance (a bucket's
 * members go to one aggregator; one instance is split across them), which
 * the leader adds into the instance's sum as if each input had come to it.
 * The leader so sees one sum per aggregator and instance where one process
 * sees each masked input; aggregators see masked inputs only, uniform to
 * them. A robust rule without SecAgg, or an anomaly policy that flags or
 * excludes, needs each update at the leader (1.17): aggregators then check
 * each update and relay it whole (coord_aggpartial.c), so the leader sees
 * what one process sees and nothing more. coord_tier_cfg_check refuses async
 * mode and compressed uploads, each in one sentence. An aggregator
 * whose lease expires leaves the registry: its partials are refused as
 * unknown and its clients' updates are lost; the round closes by today's rule
 * (min-updates at the deadline).
 *
 * Invariant: the book is read and changed under c->mu only.
 * Owns: c->tier (the book, the refresh thread). May call: agg_tier.h,
 * leader.h (registry reads), engine.h, aggregate.h, coord_secagg.c (masked
 * specs, instances). Called by: coordinator.c (lifecycle, methods),
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

int coord_tier_relay(const fc_coord_cfg *cfg) {
  return cfg->agg_tier && !cfg->engine.secagg &&
         (strcmp(cfg->aggregator, "fedavg") != 0 || strcmp(cfg->anomaly_policy, "observe") != 0);
}

int coord_tier_cfg_check(const fc_coord_cfg *cfg, char *err, size_t errlen) {
  const char *no = NULL;
  if (!cfg->agg_tier) return FEDC_OK;
  if (!cfg->leader) no = "a coordinator without --etcd (aggregators register in etcd)";
  else if (cfg->engine.async) no = "--mode async";
  else if (cfg->upload_bits != 32) no = "compressed uploads (aggregators take float32 updates only for now)";
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

fc_tier *coord_tier_book(fc_coord *c) { return c->tier ? c->tier->book : NULL; }

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
 * under secure aggregation the masked stage's (sa_stage_ms from its opening,
 * with keys first not before the training deadline plus a stage). */
uint64_t coord_tier_take_deadline(const fc_coord *c, const fc_engine_status *es) {
  if (c->cfg.engine.secagg)
    return fc_engine_sa_stage_end(&c->cfg.engine, FC_ENG_SA_MASKED, es->round_started_ms, c->sa_stage_ms);
  return es->round_started_ms + c->cfg.engine.round_ms;
}

/* The time by which aggregators stop taking updates and submit: a margin
 * before that deadline for the partial to reach us, a fifth of the round (or
 * stage), within [300 ms, 3 s]. */
static uint64_t submit_by(const fc_coord *c, const fc_engine_status *es) {
  uint64_t rm = c->cfg.engine.secagg ? c->cfg.engine.sa_stage_ms : c->cfg.engine.round_ms, margin = rm / 5;
  if (margin < 300) margin = 300;
  if (margin > 3000) margin = 3000;
  uint64_t deadline = coord_tier_take_deadline(c, es);
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
  int relay = coord_tier_relay(&c->cfg);
  if (relay && peer->proto_minor < 17) { /* it would fold the updates the leader needs one by one */
    char why[200];
    snprintf(why, sizeof why, "this federation relays each update through the aggregators (a robust rule or an "
             "anomaly policy: fedc protocol 1.17); the aggregator speaks 1.%u: upgrade it", peer->proto_minor);
    fc_scall_finish(call, GRPC_STATUS_FAILED_PRECONDITION, why, NULL);
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
  resp.relay = relay;
  resp.model_sha256.data = m->sha; /* relayed updates' signed claims name it (1.17) */
  resp.model_sha256.len = FC_SHA256_LEN;
  fc_scall_finish(call, GRPC_STATUS_OK, NULL, &resp.base);
out:
  free(buckets);
  for (size_t i = 0; names && i < n; i++) free(names[i]);
  free(names);
  free(hb);
  coord_model_unref(m);
}
