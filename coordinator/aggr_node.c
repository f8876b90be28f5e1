/*
 * aggr_node.c - one aggregator's life (aggr.h, issue 23): the listener for
 * clients, the registration in etcd under its own lease, the leader's round
 * as it polls it, and the partial sums it submits.
 *
 * Threads: the server's (uploads: aggr_upload.c); the registration thread
 * (lease keep-alive every TTL/3; a lease that expired is granted again and
 * the key put again: the leader lost our clients of the open round meanwhile,
 * as it must); the poll thread (AggregatorRound every poll_ms, then maybe
 * SubmitPartial). Each etcd and leader handle is used by one thread.
 *
 * When to submit: once every client the leader lists as ours (assigned and
 * not counted yet) has an update here, or at the submit-by time (the leader
 * keeps a margin before its deadline for the partial to arrive). When the
 * leader needs each update (1.17: a robust rule, an anomaly policy), each
 * is relayed whole as soon as it is in (the upload wakes the poll thread),
 * one partial each, and at most --upload-slots wait here. The
 * snapshot (sum, weight, the updates it holds) and the reset of the sum are
 * one step under mu with the uploads' folds, so no update is in two partials
 * or in none. A round that closes (or moves on) with updates not submitted
 * loses them, logged: their clients were not counted, as for a client whose
 * upload came too late.
 *
 * May call: aggr_int.h, etcd.h, aggregate.h, transport.h, tensor_stream.h,
 * crypto/pki.h (our identity). Called by: cli/cmd_aggregator.c.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/chunk.h"
#include "common/clock.h"
#include "common/fileutil.h"
#include "common/log.h"
#include "coordinator/agg_tier.h"
#include "coordinator/aggr_int.h"
#include "crypto/pki.h"
#include "fedc/error.h"
#include "fedc/v1/fedc.pb-c.h"
#include "transport/accept_guard.h"
#include "transport/tensor_stream.h"

#define MOD "aggregator"
#define CALL_MS 5000

void fc_aggr_cfg_defaults(fc_aggr_cfg *c) {
  memset(c, 0, sizeof *c);
  snprintf(c->listen, sizeof c->listen, "127.0.0.1:7071");
  snprintf(c->coordinator, sizeof c->coordinator, "127.0.0.1:7070");
  c->etcd_lease_ttl = 5;
  c->upload_slots = 4;
  c->threads = 2; /* blocking calls only: uploads are event-driven (aggr_upload.c) */
  c->stream_idle_ms = 30000;
  c->min_transfer_bps = 64 * 1024; /* the coordinator's default */
  c->connections_per_address = 256; /* the coordinator's default */
}

/* Waits up to ms for a stop; 1 if stopping. */
static int nap(fc_aggr *a, uint64_t ms) {
  pthread_mutex_lock(&a->stop_mu);
  if (!a->stopping && !a->kick) {
    struct timespec ts;
    fc_deadline_after_ms(&ts, ms);
    pthread_cond_timedwait(&a->stop_cv, &a->stop_mu, &ts);
  }
  a->kick = 0;
  int s = a->stopping;
  pthread_mutex_unlock(&a->stop_mu);
  return s;
}

/* ---- registration --------------------------------------------------------------- */

static int register_once(fc_aggr *a, char *err, size_t errlen) {
  int64_t lease = 0, ttl = 0;
  int rc = fc_etcd_lease_grant(a->etcd, a->cfg.etcd_lease_ttl, &lease, &ttl, err, errlen);
  if (rc == FEDC_OK) rc = fc_etcd_put(a->etcd, a->key, a->value, strlen(a->value), lease, NULL, err, errlen);
  if (rc != FEDC_OK) return rc;
  a->lease = lease;
  atomic_store(&a->m_registered, 1);
  FC_INFO(MOD, "registered in etcd: %s = \"%s\" (lease %lld, TTL %lld s)", a->key, a->value, (long long)lease,
          (long long)ttl);
  return FEDC_OK;
}

static void *reg_main(void *arg) {
  fc_aggr *a = arg;
  uint64_t period = (uint64_t)a->cfg.etcd_lease_ttl * 1000 / 3;
  char err[512], last[512] = "";
  while (!nap(a, period ? period : 1)) {
    int rc;
    if (a->lease) {
      int64_t left = 0;
      rc = fc_etcd_lease_keepalive(a->etcd, a->lease, &left, err, sizeof err);
      if (rc == FEDC_ERR_NOT_FOUND) {
        FC_WARN(MOD, "our etcd lease %lld expired: the leader dropped us (and our clients' updates of its open "
                     "round); registering again",
                (long long)a->lease);
        a->lease = 0;
        atomic_store(&a->m_registered, 0);
      }
    } else {
      rc = register_once(a, err, sizeof err);
    }
    if (rc != FEDC_OK && rc != FEDC_ERR_NOT_FOUND && strcmp(err, last) != 0) FC_WARN(MOD, "etcd: %s", err);
    snprintf(last, sizeof last, "%s", rc == FEDC_OK ? "" : err);
  }
  return NULL;
}

/* ---- the leader's round, and partials --------------------------------------------- */

typedef struct snapshot {
  uint64_t round, version;
  void *sum; /* float32 sums, or 8-byte integer sums (frac), or u32 masked sums (masked) */
  uint64_t bytes;
  int frac; /* --reproducible-sum: the grid 2^-frac (AggRoundResponse.fixed_frac_bits), 0 = float */
  int masked;      /* secure aggregation: the masked inputs of instance `bucket`, summed mod 2^32 */
  int relay;       /* 1.17: sum is one update as its client sent it (updates[0]'s) */
  uint32_t bucket;
  size_t n;
  double weight;
  aggr_contrib *updates;
  size_t nupdates;
  fc_model_spec spec;
} snapshot;

typedef struct emit_ctx {
  fc_ccall *call;
  fc_status *st;
  Fedc__V1__PartialMeta *meta;
} emit_ctx;

static int emit_partial(void *ctx, const Fedc__V1__TensorHeader *h, const Fedc__V1__TensorChunk *ch) {
  emit_ctx *e = ctx;
  Fedc__V1__PartialMsg m = FEDC__V1__PARTIAL_MSG__INIT;
  if (h) {
    m.meta = e->meta;
    m.header = (Fedc__V1__TensorHeader *)h;
  }
  m.chunk = (Fedc__V1__TensorChunk *)ch;
  return fc_ccall_send(e->call, &m.base, e->st);
}

/* One SubmitPartial: FEDC_OK (counted), or the failure in st. */
static int submit_once(fc_aggr *a, const snapshot *s, uint32_t *counted, fc_status *st) {
  Fedc__V1__PartialMeta meta = FEDC__V1__PARTIAL_META__INIT;
  Fedc__V1__PartialUpdate *ups = calloc(s->nupdates, sizeof *ups);
  Fedc__V1__PartialUpdate **ptrs = calloc(s->nupdates, sizeof *ptrs);
  fc_ccall *call = NULL;
  ProtobufCMessage *resp = NULL;
  uint8_t sha[FC_SHA256_LEN];
  uint64_t bytes = s->bytes;
  int rc = FEDC_ERR_NOMEM;
  if (!ups || !ptrs) goto out;
  for (size_t i = 0; i < s->nupdates; i++) {
    Fedc__V1__PartialUpdate pu = FEDC__V1__PARTIAL_UPDATE__INIT;
    pu.client = (char *)s->updates[i].client;
    pu.num_examples = s->updates[i].examples;
    pu.weight = s->updates[i].weight;
    pu.train_loss = s->updates[i].loss;
    pu.sha256.data = (uint8_t *)s->updates[i].sha;
    pu.sha256.len = FC_SHA256_LEN;
    pu.bytes = s->updates[i].bytes;
    pu.unclipped = s->updates[i].unclipped;
    if (s->relay) { /* the client's own word for the leader to check (1.17) */
      pu.signature.data = (uint8_t *)s->updates[i].sig;
      pu.signature.len = s->updates[i].siglen;
      pu.certificate = s->updates[i].cert;
    }
    ups[i] = pu;
    ptrs[i] = &ups[i];
  }
  meta.round = s->round;
  meta.model_version = s->version;
  meta.total_weight = s->weight;
  meta.n_updates = s->nupdates;
  meta.updates = ptrs;
  meta.fixed_frac_bits = (uint32_t)s->frac;
  meta.masked = s->masked;
  meta.bucket = s->bucket;
  meta.relay = s->relay;
  if (s->relay) memcpy(sha, s->updates[0].sha, sizeof sha); /* the client's, checked when it arrived */
  else if ((rc = fc_sha256(s->sum, bytes, sha)) != FEDC_OK)
    goto out;
  rc = fc_ccall_start(a->leader, "/fedc.v1.Aggregator/SubmitPartial", FC_RPC_CLIENT_STREAM, NULL, 60000, &call, st);
  if (rc != FEDC_OK) goto out;
  emit_ctx e = {call, st, &meta};
  rc = fc_tensor_stream_send(&s->spec, s->sum, bytes, sha, FC_CHUNK_DEFAULT, emit_partial, &e);
  if (rc == FEDC_OK) rc = fc_ccall_close_and_recv(call, &fedc__v1__partial_response__descriptor, &resp, st);
  if (rc == FEDC_OK) *counted = ((const Fedc__V1__PartialResponse *)resp)->counted;
out:
  if (resp) protobuf_c_message_free_unpacked(resp, NULL);
  fc_ccall_destroy(call);
  free(ups);
  free(ptrs);
  return rc;
}

static void submit(fc_aggr *a, const snapshot *s) {
  for (int attempt = 0;; attempt++) {
    fc_status st;
    memset(&st, 0, sizeof st);
    uint32_t counted = 0;
    int rc = submit_once(a, s, &counted, &st);
    if (rc == FEDC_OK) {
      atomic_fetch_add(&a->m_partials_ok, 1);
      atomic_fetch_add(&a->m_counted, counted);
      if (s->relay)
        FC_INFO(MOD, "round %llu: update of %s relayed to the leader (%u counted)", (unsigned long long)s->round,
                s->updates[0].client, counted);
      else
        FC_INFO(MOD, "round %llu: %spartial of %zu updates (weight %.0f) accepted by the leader (%u counted)",
                (unsigned long long)s->round, s->masked ? "masked " : "", s->nupdates, s->weight, counted);
      return;
    }
    /* The leader unreachable or busy (no staging slot; still ending our last
     * stream): try again a few times (a refusal is final). */
    int again = (st.code == GRPC_STATUS_UNAVAILABLE || st.code == GRPC_STATUS_DEADLINE_EXCEEDED ||
                 st.code == GRPC_STATUS_RESOURCE_EXHAUSTED) &&
                attempt < 4;
    FC_WARN(MOD, "round %llu: partial of %zu updates %s: %s", (unsigned long long)s->round, s->nupdates,
            again ? "not delivered, retrying" : "refused; its updates are lost", st.detail[0] ? st.detail
                                                                                         : fedc_strerror(rc));
    if (!again || nap(a, 300)) {
      atomic_fetch_add(&a->m_partials_lost, 1);
      return;
    }
  }
}

/* Under mu: every client listed as ours has an update here. */
static int all_in(const fc_aggr *a) {
  for (size_t i = 0; i < a->nassigned; i++)
    if (!aggr_listed(a->taken, a->ntaken, a->assigned[i])) return 0;
  return 1;
}

/* Under mu: the sum (and the updates) of the pending contributions of
 * instance b, or of all of them (plaintext: b ignored), into *s; 0 if it
 * cannot be held now (tried again at the next poll). */
static int snapshot_locked(fc_aggr *a, uint32_t b, snapshot *s) {
  memset(s, 0, sizeof *s);
  size_t n = a->agg->n;
  uint32_t count = 0;
  s->frac = a->masked ? 0 : fc_agg_fedavg_frac_bits(a->agg);
  s->masked = a->masked;
  s->bucket = b;
  s->bytes = n * (s->frac ? 8 : 4);
  s->sum = malloc(s->bytes);
  s->updates = malloc(a->npending * sizeof *s->updates);
  if (!s->sum || !s->updates) goto fail;
  s->spec = a->spec; /* the model's, or the masked input's (apply_locked) */
  if (a->masked) {
    const uint32_t *acc = fc_agg_secagg_sum(a->agg, b, &count);
    if (!acc) goto fail;
    memcpy(s->sum, acc, s->bytes);
    if (a->cfg.byzantine_add) { /* research: a lying aggregator (the last word is the weight: left alone) */
      uint32_t *w = s->sum;
      for (size_t i = 0; i + 1 < n; i++) w[i] += a->cfg.byzantine_add;
      FC_WARN(MOD, "research: added %u to every model word of instance %u's partial sum", a->cfg.byzantine_add, b);
    }
    for (size_t i = 0; i < a->npending; i++)
      if (a->pending[i].bucket == b) {
        s->updates[s->nupdates++] = a->pending[i];
        s->weight += a->pending[i].weight;
      }
  } else {
    if ((s->frac ? fc_agg_fedavg_partial_fixed(a->agg, s->sum, &s->weight, &count)
                 : fc_agg_fedavg_partial(a->agg, s->sum, &s->weight, &count)) != FEDC_OK)
      goto fail;
    if (s->frac) fc_fixed_sum_spec(n, &s->spec);
    s->nupdates = a->npending;
    memcpy(s->updates, a->pending, a->npending * sizeof *s->updates);
  }
  s->round = a->round;
  s->version = a->version;
  s->n = n;
  return 1;
fail:
  free(s->sum);
  free(s->updates);
  return 0;
}

/* Under mu: pending update i, relayed whole, into *s (its bytes move to s);
 * 0 if it cannot be held now. */
static int snapshot_relay_locked(fc_aggr *a, size_t i, snapshot *s) {
  memset(s, 0, sizeof *s);
  if (!(s->updates = malloc(sizeof *s->updates))) return 0;
  s->updates[0] = a->pending[i]; /* its certificate moves with it */
  s->updates[0].relay = NULL;
  a->pending[i].cert = NULL;
  s->nupdates = 1;
  s->sum = a->pending[i].relay;
  a->pending[i].relay = NULL;
  s->relay = 1;
  s->bytes = a->bytes;
  s->spec = a->spec;
  s->weight = a->pending[i].weight;
  s->round = a->round;
  s->version = a->version;
  s->n = a->agg->n;
  return 1;
}

/* Under mu: the sum this round needs, created or rebuilt (0: not now). */
static int sum_ready_locked(fc_aggr *a, const Fedc__V1__AggRoundResponse *r, uint64_t n) {
  int frac = (int)r->fixed_frac_bits, masked = r->masked;
  if (a->agg && (a->masked != masked || a->agg->n != n || (!masked && fc_agg_fedavg_frac_bits(a->agg) != frac))) {
    /* Another leader (a failover, a restart with other options) with another
     * model size or grid, or a secure-aggregation round with another number
     * of instances: the sum is rebuilt once no upload holds the old one
     * (uploads take it under mu, and only while listed busy); until then this
     * round is closed here, its uploads told to retry. Logged once. */
    if (!a->rebuild_logged)
      FC_INFO(MOD, "the leader's round needs another sum (%zu -> %llu %s%s): rebuilding it%s", a->agg->n,
              (unsigned long long)n, masked ? "words" : "parameters", masked ? "" : ", or another grid",
              a->nbusy ? " once the uploads in flight end" : "");
    a->rebuild_logged = 1;
    if (a->nbusy) return 0;
    if (a->npending)
      FC_WARN(MOD, "%zu update(s) taken for the old round are dropped with its sum", a->npending);
    aggr_pending_drop(a);
    a->ntaken = 0;
    a->agg->ops->destroy(a->agg);
    a->agg = NULL;
  }
  a->rebuild_logged = 0;
  if (a->agg) return 1;
  /* Masked: room for any instance count (sums are made per instance at its
   * first input), so a round with another bucket count needs no rebuild. */
  int rc = masked ? fc_agg_secagg_create(n, FC_SA_MAX_COHORT, a->cfg.upload_slots, &a->agg)
           : frac ? fc_agg_fedavg_create_fixed(n, a->cfg.upload_slots, frac, 0, &a->agg)
                  : fc_agg_fedavg_create(n, a->cfg.upload_slots, &a->agg);
  if (rc != FEDC_OK) {
    FC_ERROR(MOD, "cannot hold a sum of %llu %s%s", (unsigned long long)n, masked ? "masked words" : "parameters",
             frac ? " on the leader's fixed-point grid" : "");
    a->agg = NULL;
    return 0;
  }
  a->masked = masked;
  return 1;
}

/* The leader's answer into our round state (under mu); the partials due now
 * into *out (*nout of them, malloc'ed): one, or under secure aggregation one
 * per instance we took inputs of. */
static void apply_locked(fc_aggr *a, const Fedc__V1__AggRoundResponse *r, const fc_model_spec *spec, int spec_ok,
                         snapshot **out, size_t *nout) {
  *out = NULL;
  *nout = 0;
  if (!r->open || r->round != a->round) {
    if (a->npending)
      FC_WARN(MOD, "round %llu closed before %zu update(s) taken here were submitted: they are lost",
              (unsigned long long)a->round, a->npending);
    aggr_pending_drop(a);
    a->ntaken = 0;
    if (a->agg) a->agg->ops->round_begin(a->agg);
    a->round = r->round;
  }
  /* A masked round names each client's instance; a word count and instances
   * within what one SecAgg round may have. */
  int shape_ok = !r->masked || (r->masked_entries > 1 && r->masked_entries < UINT32_MAX && r->n_buckets >= 1 &&
                                r->n_buckets <= FC_SA_MAX_COHORT && r->n_client_buckets == r->n_clients);
  if (r->relay && r->model_sha256.len != FC_SHA256_LEN) shape_ok = 0; /* relaying needs the model's digest */
  if (r->open && !shape_ok) FC_WARN(MOD, "leader's masked round %llu is malformed: ignored", (unsigned long long)r->round);
  a->open = r->open && spec_ok && shape_ok;
  a->nassigned = 0;
  if (!a->open) return;
  uint64_t n = r->masked ? r->masked_entries : fc_model_numel(spec);
  if (!sum_ready_locked(a, r, n)) {
    a->open = 0;
    return;
  }
  a->version = r->model_version;
  a->spec = *spec;
  a->bytes = r->masked ? n * 4 : fc_model_bytes(spec);
  if (r->masked) {
    memset(&a->spec, 0, sizeof a->spec);
    fc_model_spec_add(&a->spec, "secagg.masked", 1, &n);
    a->spec.t[0].dtype = FC_DTYPE_U32;
  }
  a->agg_buckets = r->masked ? r->n_buckets : 0;
  int relay = r->relay && !r->masked;
  if (a->relay != relay && a->npending) { /* another leader's options: what was kept is for the other mode */
    FC_WARN(MOD, "the leader %s relaying: %zu update(s) taken here are dropped", relay ? "started" : "stopped",
            a->npending);
    aggr_pending_drop(a);
    /* Their clients may send again, and a sum holds none of them. */
    a->ntaken = 0;
    if (a->agg) a->agg->ops->round_begin(a->agg);
  }
  a->relay = relay;
  if (relay) memcpy(a->model_sha, r->model_sha256.data, FC_SHA256_LEN);
  a->submit_by = r->submit_by_unix_ms;
  a->rules = (fc_upload_rules){r->clip_norm, r->max_example_weight, r->uniform_weights};
  for (size_t i = 0; i < r->n_clients; i++) {
    if (!r->clients[i] || (r->masked && r->client_buckets[i] >= r->n_buckets)) continue;
    if (aggr_list_add(&a->assigned, &a->nassigned, &a->capassigned, r->clients[i]) != FEDC_OK) break;
    if (a->capbucket < a->capassigned) {
      void *p = realloc(a->assigned_bucket, a->capassigned * sizeof *a->assigned_bucket);
      if (!p) {
        a->nassigned--;
        break;
      }
      a->assigned_bucket = p;
      a->capbucket = a->capassigned;
    }
    a->assigned_bucket[a->nassigned - 1] = r->masked ? r->client_buckets[i] : 0;
  }
  /* Relayed updates go at once (few are held); sums when all are in or at the submit time. */
  if (!a->npending || (!a->relay && !all_in(a) && fc_now_ms() < a->submit_by)) return;
  if (a->relay) {
    snapshot *s = calloc(a->npending, sizeof *s);
    size_t k = 0;
    while (s && k < a->npending && snapshot_relay_locked(a, k, &s[k])) k++;
    /* Those not snapshotted (out of memory) stay pending, first in line. */
    memmove(a->pending, a->pending + k, (a->npending - k) * sizeof *a->pending);
    a->npending -= k;
    a->nrelaying += k; /* still held: counted against the slots until handed over */
    *out = s;
    *nout = k;
    return;
  }
  uint32_t nb = a->masked ? a->agg_buckets : 1;
  snapshot *s = calloc(nb, sizeof *s);
  if (!s) return;
  size_t k = 0;
  int failed = 0;
  for (uint32_t b = 0; b < nb && !failed; b++) {
    if (a->masked && fc_agg_secagg_count(a->agg, b) == 0) continue;
    if (snapshot_locked(a, b, &s[k])) k++;
    else failed = 1;
  }
  if (failed || k == 0) { /* all or nothing: nothing is reset, tried again at the next poll */
    for (size_t i = 0; i < k; i++) free(s[i].sum), free(s[i].updates);
    free(s);
    return;
  }
  a->npending = 0;
  a->agg->ops->round_begin(a->agg); /* the next partial of this round starts from zero */
  *out = s;
  *nout = k;
}

static void *poll_main(void *arg) {
  fc_aggr *a = arg;
  uint32_t poll_ms = 200;
  char last[512] = "";
  do {
    Fedc__V1__AggRoundRequest req = FEDC__V1__AGG_ROUND_REQUEST__INIT;
    req.known_round = a->round;
    ProtobufCMessage *resp = NULL;
    fc_status st;
    memset(&st, 0, sizeof st);
    int rc = fc_call_unary(a->leader, "/fedc.v1.Aggregator/AggregatorRound", &req.base,
                           &fedc__v1__agg_round_response__descriptor, &resp, CALL_MS, &st);
    atomic_store(&a->m_leader_ok, rc == FEDC_OK);
    if (rc != FEDC_OK) {
      if (strcmp(st.detail, last) != 0) FC_WARN(MOD, "leader: %s", st.detail[0] ? st.detail : fedc_strerror(rc));
      snprintf(last, sizeof last, "%s", st.detail);
      continue;
    }
    last[0] = 0;
    const Fedc__V1__AggRoundResponse *r = (const Fedc__V1__AggRoundResponse *)resp;
    if (r->poll_ms >= 50 && r->poll_ms <= 10000) poll_ms = r->poll_ms;
    fc_model_spec spec;
    memset(&spec, 0, sizeof spec);
    Fedc__V1__TensorHeader h = FEDC__V1__TENSOR_HEADER__INIT;
    h.n_tensors = r->n_tensors;
    h.tensors = r->tensors;
    char err[300];
    int spec_ok = !r->open || fc_pb_header_parse(&h, &spec, err, sizeof err) == FEDC_OK;
    if (!spec_ok) FC_WARN(MOD, "leader's round %llu has a bad shape: %s", (unsigned long long)r->round, err);
    snapshot *s = NULL;
    size_t ns = 0;
    pthread_mutex_lock(&a->mu);
    apply_locked(a, r, &spec, spec_ok, &s, &ns);
    pthread_mutex_unlock(&a->mu);
    protobuf_c_message_free_unpacked(resp, NULL);
    for (size_t i = 0; i < ns; i++) {
      submit(a, &s[i]);
      free(s[i].sum);
      if (s[i].relay) {
        free(s[i].updates[0].cert);
        pthread_mutex_lock(&a->mu);
        a->nrelaying--;
        pthread_mutex_unlock(&a->mu);
      }
      free(s[i].updates);
    }
    free(s);
  } while (!nap(a, poll_ms));
  return NULL;
}

/* ---- lifecycle ------------------------------------------------------------------ */

static int identity_of(fc_aggr *a, char *err, size_t errlen) {
  char *pem = NULL, role[FC_PKI_ROLE_MAX];
  size_t len = 0;
  int rc = fc_read_file(a->cfg.cert, 1u << 20, &pem, &len);
  if (rc != FEDC_OK) {
    snprintf(err, errlen, "cannot read %s: %s", a->cfg.cert, fedc_strerror(rc));
    return rc;
  }
  rc = fc_pki_identity_from_pem(pem, len, a->federation, sizeof a->federation, role, sizeof role, a->name,
                                sizeof a->name);
  free(pem);
  if (rc != FEDC_OK || strcmp(role, "aggregator") != 0) {
    snprintf(err, errlen, "%s is not an aggregator certificate (fedc pki issue --role aggregator --name NAME)",
             a->cfg.cert);
    return FEDC_ERR_INVALID;
  }
  snprintf(a->identity, sizeof a->identity, "spiffe://%s/aggregator/%s", a->federation, a->name);
  return FEDC_OK;
}

/* The cache that checks relayed updates' signers against the federation CA. */
static int certs_open(fc_aggr *a, char *err, size_t errlen) {
  char *pem = NULL;
  size_t len = 0;
  int rc = fc_read_file(a->cfg.ca, 1u << 20, &pem, &len);
  if (rc != FEDC_OK) {
    snprintf(err, errlen, "cannot read %s: %s", a->cfg.ca, fedc_strerror(rc));
    return rc;
  }
  rc = fc_cert_cache_create(pem, len, 4096, &a->certs, err, errlen);
  free(pem);
  return rc;
}

int fc_aggr_start(const fc_aggr_cfg *cfg, fc_aggr **out, char *err, size_t errlen) {
  int rc;
  fc_aggr *a = calloc(1, sizeof *a);
  if (!a) return FEDC_ERR_NOMEM;
  a->cfg = *cfg;
  pthread_mutex_init(&a->mu, NULL);
  pthread_mutex_init(&a->stop_mu, NULL);
  pthread_cond_init(&a->stop_cv, NULL);
  if ((rc = identity_of(a, err, errlen)) != FEDC_OK) goto fail;
  if ((rc = certs_open(a, err, errlen)) != FEDC_OK) goto fail;
  fc_method *m = &a->methods[0];
  m->path = "/fedc.v1.Coordinator/UploadUpdate";
  m->kind = FC_RPC_CLIENT_STREAM;
  m->role = FC_ROLE_CLIENT; /* clients only: another aggregator or a coordinator may not upload */
  m->max_recv = FC_CHUNK_MAX + 4096;
  m->request = &fedc__v1__upload_msg__descriptor;
  m->handler = aggr_h_upload;
  m->ctx = a;
  m->async = 1; /* aggr_upload.c: event-driven, as the coordinator's uploads */
  fc_server_opts so;
  fc_server_opts_init(&so);
  so.addr = cfg->listen;
  so.tls = (fc_tls_files){cfg->ca, cfg->cert, cfg->key};
  so.federation = a->federation;
  so.blocking_threads = cfg->threads;
  so.stream_idle_ms = cfg->stream_idle_ms;
  so.methods = a->methods;
  so.nmethods = 1;
  if ((rc = fc_server_start(&so, &a->server, err, errlen)) != FEDC_OK) goto fail;
  /* The coordinator's connection caps and rates (its defaults), and the
   * count /metrics reports. */
  fc_accept_guard_cfg gc = {fc_server_port(a->server), 0, cfg->max_connections, 100, 1000, 500,
                            cfg->connections_per_address};
  if ((rc = fc_accept_guard_start(&gc)) != FEDC_OK) {
    snprintf(err, errlen, "cannot start the connection guard: %s", fedc_strerror(rc));
    goto fail;
  }
  a->guard_started = 1;
  char adv[256];
  if (cfg->advertise[0]) {
    snprintf(adv, sizeof adv, "%s", cfg->advertise);
  } else {
    const char *colon = strrchr(cfg->listen, ':');
    size_t hl = colon ? (size_t)(colon - cfg->listen) : 0;
    if (!hl || !strncmp(cfg->listen, "0.0.0.0", hl) || !strncmp(cfg->listen, "[::]", hl)) {
      snprintf(err, errlen, "--listen %s names no address clients can reach: give --advertise HOST:PORT",
               cfg->listen);
      rc = FEDC_ERR_INVALID;
      goto fail;
    }
    snprintf(adv, sizeof adv, "%.*s:%d", (int)hl, cfg->listen, fc_server_port(a->server));
  }
  fc_channel_opts co;
  fc_channel_opts_init(&co);
  co.target = cfg->coordinator;
  co.tls = so.tls;
  co.expect_role = "coordinator"; /* the leader, not another aggregator */
  if ((rc = fc_channel_create(&co, &a->leader, err, errlen)) != FEDC_OK) goto fail;
  fc_etcd_opts eo;
  fc_etcd_opts_init(&eo);
  eo.endpoints = cfg->etcd;
  if (cfg->etcd_ca[0] || cfg->etcd_cert[0] || cfg->etcd_key[0])
    eo.tls = (fc_tls_files){cfg->etcd_ca[0] ? cfg->etcd_ca : NULL, cfg->etcd_cert[0] ? cfg->etcd_cert : NULL,
                            cfg->etcd_key[0] ? cfg->etcd_key : NULL};
  /* Each etcd call ends inside the lease (as the coordinator's: leader.h). */
  eo.timeout_ms = cfg->etcd_lease_ttl * 1000 / 3 > 2000 ? 2000 : cfg->etcd_lease_ttl * 1000 / 3;
  char shared[600];
  if (fc_etcd_shared_ca(&eo, cfg->ca, shared, sizeof shared)) FC_WARN(MOD, "%s", shared);
  if ((rc = fc_etcd_open(&eo, &a->etcd, err, errlen)) != FEDC_OK) goto fail;
  if (cfg->etcd_prefix[0]) snprintf(a->key, sizeof a->key, "%s/%s%s", cfg->etcd_prefix, FC_TIER_KEY, a->name);
  else
    snprintf(a->key, sizeof a->key, "/fedc/%s/%s%s", a->federation, FC_TIER_KEY, a->name);
  snprintf(a->value, sizeof a->value, "%s %s", adv, a->identity);
  char e2[512];
  if ((rc = register_once(a, e2, sizeof e2)) != FEDC_OK) {
    snprintf(err, errlen, "cannot register in etcd (%s): %s", cfg->etcd, e2);
    goto fail;
  }
  if (pthread_create(&a->reg_thread, NULL, reg_main, a) != 0) {
    rc = FEDC_ERR_NOMEM;
    snprintf(err, errlen, "cannot start the registration thread");
    goto fail;
  }
  a->reg_started = 1;
  if (pthread_create(&a->poll_thread, NULL, poll_main, a) != 0) {
    rc = FEDC_ERR_NOMEM;
    snprintf(err, errlen, "cannot start the round thread");
    goto fail;
  }
  a->poll_started = 1;
  if ((rc = aggr_metrics_start(a, err, errlen)) != FEDC_OK) goto fail;
  FC_INFO(MOD, "aggregator %s serving clients on port %d (advertised %s), leader at %s", a->identity,
          fc_server_port(a->server), adv, cfg->coordinator);
  *out = a;
  return FEDC_OK;
fail:
  fc_aggr_stop(a);
  return rc;
}

int fc_aggr_port(const fc_aggr *a) { return fc_server_port(a->server); }

void fc_aggr_stop(fc_aggr *a) {
  if (!a) return;
  pthread_mutex_lock(&a->stop_mu);
  a->stopping = 1;
  pthread_cond_broadcast(&a->stop_cv);
  pthread_mutex_unlock(&a->stop_mu);
  aggr_metrics_stop(a);
  if (a->leader) fc_channel_cancel_all(a->leader);
  if (a->poll_started) pthread_join(a->poll_thread, NULL);
  if (a->reg_started) pthread_join(a->reg_thread, NULL);
  if (a->agg) a->agg->ops->close(a->agg);
  if (a->server) fc_server_shutdown(a->server, 1000);
  if (a->guard_started) fc_accept_guard_stop();
  if (a->etcd && a->lease) { /* the leader drops us at its next registry read, not a TTL later */
    char err[256];
    if (fc_etcd_lease_revoke(a->etcd, a->lease, err, sizeof err) != FEDC_OK) FC_WARN(MOD, "etcd: %s", err);
  }
  if (a->npending)
    FC_WARN(MOD, "stopping with %zu update(s) of round %llu not submitted: they are lost", a->npending,
            (unsigned long long)a->round);
  aggr_pending_drop(a);
  fc_cert_cache_destroy(a->certs);
  fc_server_destroy(a->server);
  fc_channel_destroy(a->leader);
  fc_etcd_close(a->etcd);
  if (a->agg) a->agg->ops->destroy(a->agg);
  free(a->assigned);
  free(a->assigned_bucket);
  free(a->pending);
  free(a->taken);
  free(a->busy);
  pthread_mutex_destroy(&a->mu);
  pthread_mutex_destroy(&a->stop_mu);
  pthread_cond_destroy(&a->stop_cv);
  free(a);
}
