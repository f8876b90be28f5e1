/*
 * coord_aggpartial.c - the leader's SubmitPartial handler (issue 23): what
 * an aggregator hands over for the open round, checked, then counted in the
 * engine and folded as if its updates had come here.
 *
 *   sums (1.14)       the float32 FedAvg sum of several updates, or their
 *                     int64 sum on the --reproducible-sum grid (1.15);
 *                     checked as a sum (NaN/Inf, the norm and max|value|
 *                     bounds its updates' clips and weights allow)
 *   masked (1.16)     one SecAgg instance's masked inputs summed mod 2^32:
 *                     nothing to check in them; each named client becomes a
 *                     survivor of the masked stage (coord_secagg.c)
 *   relayed (1.17)    one client's update whole, as it sent it, when the
 *                     leader needs each update (a robust rule without SecAgg,
 *                     an anomaly policy that flags or excludes): checked as
 *                     coord_upload.c checks a direct upload (the client's
 *                     announced SHA-256, NaN/Inf, the clip, the weight),
 *                     measured for the anomaly scores and folded with its
 *                     weight, so the rule runs over the same inputs as in one
 *                     process (bit-identical for order-free rules)
 *
 * Blocking, on a pool thread: aggregators are few, and one stream per
 * aggregator runs at a time (the book's partial_begin). A partial is taken
 * whole (every engine begin succeeds, then every commit, with one `now`
 * under one hold of c->mu) or not at all; an update counts once per round.
 * Owns: nothing past a call. May call: agg_tier.h (the book's checks),
 * engine.h, aggregate.h, upload_check.h, coord_secagg.c (masked instances),
 * coord_anomaly.c (measure, commit), audit.h, chunk.h, tensor_stream.h.
 * Called by: coordinator.c (the method table).
 */
#include "coordinator/coordinator.h"

#include <jansson.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/chunk.h"
#include "common/clock.h"
#include "common/log.h"
#include "coordinator/agg_tier.h"
#include "coordinator/audit.h"
#include "coordinator/coord_int.h"
#include "coordinator/upload_check.h"
#include "crypto/cert_cache.h"
#include "crypto/update_sig.h"
#include "fedc/error.h"
#include "transport/tensor_stream.h"

#define MOD "coordinator"

static void audit_partial(fc_coord *c, const char *agg, const Fedc__V1__PartialMeta *meta, const char *outcome,
                          const char *reason) {
  if (!c->audit) return;
  json_t *f = json_pack("{s:s,s:I,s:s,s:i,s:f}", "aggregator", agg, "round", (json_int_t)meta->round, "outcome",
                        outcome, "updates", (int)meta->n_updates, "total_weight", meta->total_weight);
  if (!f) return;
  if (meta->relay) json_object_set_new(f, "relay", json_true());
  if (reason) json_object_set_new(f, "reason", json_string(reason));
  fc_audit_append(c->audit, "partial", f);
}

/* A refusal of aggregator `name` counted (refusals.h, as "aggregator/NAME");
 * 1 if it is to be logged and audited in full: an aggregator's first few per
 * interval, or every one while the audit log is off (nothing is counted then,
 * and the log line is all there is, as for a client's refused upload). */
static int partial_refusal_noted(fc_coord *c, const char *name, grpc_status_code code) {
  char rid[300];
  snprintf(rid, sizeof rid, "aggregator/%s", name);
  return coord_refusal_note(c, rid, coord_refusal_reason(code)) || !c->audit;
}

/* Every update of an accepted partial, as coord_upload.c audits a direct
 * one, with the aggregator it came through (norm < 0: not known here). Under
 * mu, before it counts. */
static void audit_updates(fc_coord *c, const char *agg, const Fedc__V1__PartialMeta *meta, double norm) {
  if (!c->audit) return;
  for (size_t i = 0; i < meta->n_updates; i++) {
    const Fedc__V1__PartialUpdate *u = meta->updates[i];
    char hex[FC_SHA256_HEX_LEN] = "";
    if (u->sha256.len == FC_SHA256_LEN) fc_hex(u->sha256.data, FC_SHA256_LEN, hex);
    json_t *f = json_pack("{s:s,s:I,s:s,s:b,s:s,s:s}", "client", u->client, "round", (json_int_t)meta->round,
                          "outcome", "accepted", "masked", (int)meta->masked, "sha256", hex, "aggregator", agg);
    if (f && norm >= 0) json_object_set_new(f, "norm", json_real(norm));
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
  if (deadline) *deadline = coord_tier_take_deadline(c, &es);
  if (es.state != (meta->masked ? FC_ENG_SA_MASKED : FC_ENG_TRAINING)) {
    snprintf(why, whylen, "no round is taking %s (round %llu closed or not at that stage)",
             meta->masked ? "masked inputs" : "updates", (unsigned long long)p->round);
    return FEDC_ERR_INVALID;
  }
  fc_tier_expect e = {es.round, es.version, spec, {c->clip, c->cfg.max_example_weight, c->cfg.dp_noise_multiplier > 0}};
  int rc = fc_tier_check_partial(coord_tier_book(c), p, &e, why, whylen);
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

/* What kind of partial this federation takes, against what meta says: the
 * refusal in why (FAILED_PRECONDITION, or INVALID_ARGUMENT for a relayed
 * partial that is not one float32 update), else GRPC_STATUS_OK. */
static grpc_status_code kind_check(const fc_coord *c, const Fedc__V1__PartialMeta *meta, char *why, size_t whylen) {
  int sa = c->cfg.engine.secagg, relay = coord_tier_relay(&c->cfg);
  if (!meta->masked != !sa) {
    snprintf(why, whylen, "%s", sa ? "this federation runs secure aggregation: a partial must carry a masked sum"
                                   : "this federation does not run secure aggregation: masked partial refused");
    return GRPC_STATUS_FAILED_PRECONDITION;
  }
  if (!meta->relay != !relay) {
    snprintf(why, whylen, "%s",
             relay ? "this federation needs each update (a robust rule or an anomaly policy): relay each in a "
                     "partial of its own"
                   : "this federation takes partial sums: a relayed update is refused");
    return GRPC_STATUS_FAILED_PRECONDITION;
  }
  if (meta->relay && (meta->n_updates != 1 || meta->fixed_frac_bits)) {
    snprintf(why, whylen, "a relayed partial carries one float32 update (it names %zu, fixed_frac_bits %u)",
             meta->n_updates, meta->fixed_frac_bits);
    return GRPC_STATUS_INVALID_ARGUMENT;
  }
  int frac = sa || relay ? 0 : fc_agg_fedavg_frac_bits(c->agg);
  if ((int)meta->fixed_frac_bits != frac) {
    snprintf(why, whylen, "partial sums with fixed_frac_bits %u, this leader takes %d (0 = float32)",
             meta->fixed_frac_bits, frac);
    return GRPC_STATUS_FAILED_PRECONDITION;
  }
  return GRPC_STATUS_OK;
}

/* A relayed update is the client's only if the client signed it (1.17,
 * crypto/update_sig.h): its certificate chains to the federation CA and names
 * the client, and its signature covers the round, version, examples, loss,
 * unclipped bit and the SHA-256 the bytes must hash to (checked as they
 * arrive). Else an aggregator could relay bytes of its own under an honest
 * client's name, and the anomaly policy would flag that client. */
static grpc_status_code signer_check(fc_coord *c, const Fedc__V1__PartialMeta *meta, const uint8_t *model_sha,
                                     char *why, size_t whylen) {
  const Fedc__V1__PartialUpdate *pu = meta->updates[0];
  if (!pu->certificate || !pu->certificate[0] || !pu->signature.len) {
    snprintf(why, whylen, "relayed update of %s carries no client signature (UpdateMeta.signature, 1.17)", pu->client);
    return GRPC_STATUS_PERMISSION_DENIED;
  }
  if (strlen(pu->certificate) > FC_UPDATE_CERT_MAX || pu->signature.len > FC_UPDATE_SIG_MAX) {
    snprintf(why, whylen, "relayed update of %s: certificate or signature too large (%u, %u bytes at most)",
             pu->client, FC_UPDATE_CERT_MAX, FC_UPDATE_SIG_MAX);
    return GRPC_STATUS_INVALID_ARGUMENT;
  }
  fc_update_claim cl = {c->cfg.federation, pu->client,     meta->round,       meta->model_version, pu->num_examples,
                        pu->train_loss,    pu->unclipped, pu->sha256.data, model_sha};
  fc_cert *x = NULL;
  char cwhy[300] = "";
  pthread_mutex_lock(&c->mu);
  fc_cert_cache *cc = coord_cert_cache(c);
  int rc = cc ? fc_cert_cache_get(cc, pu->certificate, strlen(pu->certificate), &x, cwhy, sizeof cwhy) : FEDC_ERR_TLS;
  if (!cc) snprintf(cwhy, sizeof cwhy, "this leader holds no federation CA to check it with");
  pthread_mutex_unlock(&c->mu);
  if (rc == FEDC_OK) rc = fc_update_verify(x, &cl, pu->signature.data, pu->signature.len, cwhy, sizeof cwhy);
  fc_cert_release(x);
  if (rc == FEDC_OK) return GRPC_STATUS_OK;
  snprintf(why, whylen, "relayed update of %s: %s", pu->client, cwhy);
  return GRPC_STATUS_PERMISSION_DENIED;
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
  struct fc_anomaly_meas *meas = NULL;
  fc_tier_partial p;
  int rc, receiving = 0; /* marked in the book: one partial stream per aggregator */
  int full;              /* a refusal audited in full (refuse:) */
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
  if ((code = kind_check(c, meta, why, sizeof why)) != GRPC_STATUS_OK) goto refuse;
  /* Secure aggregation (1.16): masked sums of one instance each; c->agg is
   * the masked sum then (aggregate_secagg.c), not FedAvg's. A relayed update
   * (1.17) is the model's floats, staged in c->agg as a direct upload is. */
  int sa = c->cfg.engine.secagg, relay = meta->relay;
  int frac = sa || relay ? 0 : fc_agg_fedavg_frac_bits(c->agg);
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
  /* The header against the model's shape (SHAPE names the first tensor that
   * differs), or under --reproducible-sum against the integer sum's one
   * tensor, or a masked input's. */
  const fc_model_spec *sum_spec = sa ? &mspec : &m->spec; /* what the book checks the header against */
  if ((rc = fc_chunk_rx_begin_pb(&rx, first->header, sa ? &mspec : frac ? &fixed_spec : &m->spec,
                                 sa     ? fc_model_bytes(&mspec)
                                 : frac ? (uint64_t)c->agg->n * 8
                                        : m->bytes,
                                 why, sizeof why)) != FEDC_OK) {
    code = code_of(rc);
    goto refuse;
  }
  /* A relayed update is the client's bytes: the digest they must match is the
   * one the client announced (and the audit log records). */
  if (relay && memcmp(rx.want_sha, meta->updates[0]->sha256.data, FC_SHA256_LEN) != 0) {
    snprintf(why, sizeof why, "relayed update of %s: its SHA-256 is not the one its client announced",
             meta->updates[0]->client);
    code = GRPC_STATUS_INVALID_ARGUMENT;
    goto refuse;
  }
  /* The header's shape is the model's (float) or was checked against the
   * integer sum's one tensor above: the book checks the model's. */
  partial_view(meta, peer->name, frac ? &m->spec : &rx.spec, ups, &p);
  pthread_mutex_lock(&c->mu);
  uint64_t deadline = 0; /* a partial still arriving then is too late */
  /* One stream per aggregator first (cheap), then the checks (a partial
   * names up to 65,536 clients). */
  rc = fc_tier_partial_begin(coord_tier_book(c), peer->name);
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
  /* The signature once the stream is this aggregator's one (registered,
   * its client assigned): what a certificate check costs under mu is
   * bounded by the aggregators, not by the streams anyone opens. */
  if (relay && (code = signer_check(c, meta, m->sha, why, sizeof why)) != GRPC_STATUS_OK) goto refuse;
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
      if (partial_refusal_noted(c, peer->name, GRPC_STATUS_DEADLINE_EXCEEDED)) {
        FC_WARN(MOD, "partial from aggregator %s broke off after %llu of %llu bytes", peer->name,
                (unsigned long long)rx.received, (unsigned long long)rx.total);
        audit_partial(c, peer->name, meta, "refused", "stream broke off");
      }
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
  fc_upload_rules rules;
  pthread_mutex_lock(&c->mu);
  rules = (fc_upload_rules){c->clip, c->cfg.max_example_weight, c->cfg.dp_noise_multiplier > 0};
  pthread_mutex_unlock(&c->mu);
  fc_agg_check chk; /* a masked sum is uniform to us: nothing to check in it (aggregate_secagg.c) */
  memset(&chk, 0, sizeof chk);
  double weight = 0; /* relayed: the rule's weight, as for a direct upload */
  if (relay) {
    /* NaN/Inf, the clip, the weight: upload_check.c, as coord_upload.c does. */
    if (fc_upload_values_check(c->agg, u, &rules, meta->updates[0]->num_examples, 0, &chk, &weight, why,
                               sizeof why) != FEDC_OK) {
      code = GRPC_STATUS_INVALID_ARGUMENT;
      goto refuse;
    }
    meas = coord_anomaly_measure(c, u, chk.l2); /* one pass, outside the lock */
  } else if (!sa && (frac ? fc_agg_fedavg_fixed_check(c->agg, u, &chk) : c->agg->ops->update_check(c->agg, u, &chk)) !=
                        FEDC_OK) {
    snprintf(why, sizeof why, "partial sum has a NaN/Inf value at parameter %zu", chk.bad_index);
    code = GRPC_STATUS_INVALID_ARGUMENT;
    goto refuse;
  }
  pthread_mutex_lock(&c->mu);
  rc = sa || relay ? FEDC_OK : fc_tier_check_sum(chk.l2, chk.amax, &p, &rules, why, sizeof why);
  /* Again under the lock that commits: the round may have closed, the
   * aggregator's lease expired or another partial counted a task meanwhile. */
  if (rc == FEDC_OK) rc = check_locked(c, &p, sum_spec, meta, NULL, why, sizeof why);
  if (rc == FEDC_OK && !sa && !relay && meta->n_updates > fc_agg_fedavg_room(c->agg)) { /* before the engine counts */
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
    for (size_t i = 0; i < begun; i++) fc_engine_upload_abort(c->engine, meta->updates[i]->client, meta->round, now, 0);
    pthread_mutex_unlock(&c->mu);
    code = v == FC_UP_OK ? code_of(rc) : GRPC_STATUS_FAILED_PRECONDITION;
    goto refuse;
  }
  audit_updates(c, peer->name, meta, relay ? chk.l2 : -1); /* before they count */
  uint32_t counted = 0;
  for (size_t i = 0; i < meta->n_updates; i++) {
    const Fedc__V1__PartialUpdate *pu = meta->updates[i];
    /* One `now` under one hold of mu after every begin succeeded: the
     * engine changes state only at its tick, so each commit counts. */
    /* A relayed update's size is what reached us (not signed, so not the aggregator's word). */
    v = fc_engine_upload_commit(c->engine, pu->client, meta->round, (uint64_t)pu->weight, pu->train_loss,
                                relay ? rx.total : pu->bytes, now);
    if (v == FC_UP_OK) counted++;
    if (v == FC_UP_OK && pu->unclipped && !sa) c->dp_unclipped++; /* adaptive clipping's count (coord_dp.c) */
    if (v != FC_UP_OK)
      FC_ERROR(MOD, "round %llu: update of %s from aggregator %s not counted after its begin: %s",
               (unsigned long long)meta->round, pu->client, peer->name, fc_upload_verdict_text(v));
  }
  if ((relay ? c->agg->ops->update_commit(c->agg, u, weight)
       : sa  ? fc_agg_secagg_commit_partial(c->agg, u, (uint32_t)meta->n_updates)
             : fc_agg_fedavg_commit_partial(c->agg, u, meta->total_weight, (uint32_t)meta->n_updates)) != FEDC_OK)
    FC_ERROR(MOD, "round %llu: partial from aggregator %s counted but not folded (a bug: its checks passed)",
             (unsigned long long)meta->round, peer->name);
  u = NULL; /* the slot went back with the commit */
  /* Every named input is in the instance's sum now: each is a survivor of
   * the masked stage (the stage closes when all are in, coord_secagg.c). */
  for (size_t i = 0; sa && i < meta->n_updates; i++) coord_sa_masked_done(c, meta->updates[i]->client);
  if (relay) coord_anomaly_commit_locked(c, meta->updates[0]->client, meas);
  meas = NULL;
  fc_tier_mark_counted(coord_tier_book(c), &p);
  fc_tier_note_seen(coord_tier_book(c), peer->name, fc_now_ms());
  audit_partial(c, peer->name, meta, "accepted", NULL);
  /* The stream's mark ends before the aggregator hears the answer: it may
   * send its next partial the moment it does. */
  fc_tier_partial_end(coord_tier_book(c), peer->name);
  receiving = 0;
  pthread_mutex_unlock(&c->mu);
  atomic_fetch_add(&c->metrics.uploads_accepted, counted);
  if (sa)
    FC_INFO(MOD, "round %llu: masked partial from aggregator %s accepted (instance %u, %zu inputs)",
            (unsigned long long)meta->round, peer->name, meta->bucket, meta->n_updates);
  else if (relay)
    FC_INFO(MOD, "round %llu: update of %s relayed by aggregator %s accepted (%llu examples, norm %.4g)",
            (unsigned long long)meta->round, meta->updates[0]->client, peer->name,
            (unsigned long long)meta->updates[0]->num_examples, chk.l2);
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
  /* An aggregator's first few refusals per interval are logged and audited
   * in full, the rest counted (coord_limits.c), as a client's are: a stream
   * of refused partials cannot fill the log or the disk (nor pass the audit
   * budget). A busy leader (no staging slot) judges nothing: not audited. */
  full = code != GRPC_STATUS_UNAVAILABLE && partial_refusal_noted(c, peer->name, code);
  if (full || code == GRPC_STATUS_UNAVAILABLE) FC_WARN(MOD, "partial from aggregator %s refused: %s", peer->name, why);
  pthread_mutex_lock(&c->mu);
  fc_tier_note_refused(coord_tier_book(c), peer->name);
  fc_tier_note_seen(coord_tier_book(c), peer->name, fc_now_ms());
  if (receiving) fc_tier_partial_end(coord_tier_book(c), peer->name); /* before the answer, as above */
  receiving = 0;
  pthread_mutex_unlock(&c->mu);
  if (meta && full) audit_partial(c, peer->name, meta, "refused", why);
  fc_scall_finish(call, code, why, NULL);
out:
  if (receiving) {
    pthread_mutex_lock(&c->mu);
    fc_tier_partial_end(coord_tier_book(c), peer->name);
    pthread_mutex_unlock(&c->mu);
  }
  if (u) c->agg->ops->update_abort(c->agg, u);
  free(meas);
  fc_chunk_rx_free(&rx);
  free(ups);
  coord_model_unref(m);
}
