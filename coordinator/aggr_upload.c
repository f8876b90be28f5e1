/*
 * aggr_upload.c - an aggregator's UploadUpdate (issue 23): a client's update
 * taken with the coordinator's own checks and folded into the round's
 * partial sum.
 *
 * Checks, in the order coord_upload.c makes them: the first message carries
 * meta and header; a float32 update, or under secure aggregation (1.16) a
 * 32-bit masked input (compressed ones are refused); examples and loss (upload_check.h); the round
 * and model version are the leader's open ones; the caller is a client the
 * leader assigned to us this round; one update per client per round (a
 * replay is ALREADY_EXISTS) and one stream at a time (ABORTED); the header's
 * shape is the model's and its chunks are framed and hashed (common/chunk.h);
 * nothing after the submit-by time; then NaN/Inf, the clip and the weight
 * (upload_check.h) before the fold. A masked input has nothing to check in
 * it (uniform to us): it joins the sum of its client's SecAgg instance.
 * Relaying (1.17: the leader needs each update), a checked update is not
 * folded: its slot's buffer is kept for the poll thread to hand over whole,
 * and at most --upload-slots updates are held (arriving or waiting).
 *
 * Event-driven, as coord_upload.c: the handler checks the first message
 * and takes a staging slot or says "come back" (never waits on the event
 * thread); each chunk is checked and copied into the slot by aup_chunk; the
 * end of the stream runs the value checks and the fold (aup_end). A stream
 * holds no thread, so an aggregator holds as many uploads as it has slots
 * and connections as its guard allows.
 * Invariant: the fold and the record of the contribution are one step under
 * a->mu, so a partial snapshot (aggr_node.c) sees both or neither; every
 * refusal gives back the slot and the client's busy mark before the client
 * hears it.
 * May call: aggr_int.h, aggregate.h, upload_check.h, chunk.h, tensor_stream.h.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/chunk.h"
#include "common/clock.h"
#include "common/log.h"
#include "coordinator/agg_slots.h" /* a relayed update keeps its slot's buffer */
#include "coordinator/aggr_int.h"
#include "fedc/error.h"
#include "fedc/v1/fedc.pb-c.h"
#include "transport/tensor_stream.h"

#define MOD "aggregator"

int aggr_listed(char (*list)[65], size_t n, const char *name) {
  for (size_t i = 0; i < n; i++)
    if (!strcmp(list[i], name)) return 1;
  return 0;
}

int aggr_list_add(char (**list)[65], size_t *n, size_t *cap, const char *name) {
  if (*n == *cap) {
    size_t nc = *cap ? 2 * *cap : 16;
    void *p = realloc(*list, nc * sizeof **list);
    if (!p) return FEDC_ERR_NOMEM;
    *list = p;
    *cap = nc;
  }
  snprintf((*list)[(*n)++], 65, "%s", name);
  return FEDC_OK;
}

void aggr_list_del(char (*list)[65], size_t *n, const char *name) {
  for (size_t i = 0; i < *n; i++)
    if (!strcmp(list[i], name)) {
      memmove(list[i], list[*n - 1], 65);
      (*n)--;
      return;
    }
}

void aggr_kick(fc_aggr *a) {
  pthread_mutex_lock(&a->stop_mu);
  a->kick = 1;
  pthread_cond_broadcast(&a->stop_cv);
  pthread_mutex_unlock(&a->stop_mu);
}

void aggr_pending_drop(fc_aggr *a) {
  for (size_t i = 0; i < a->npending; i++) {
    free(a->pending[i].relay);
    free(a->pending[i].cert);
  }
  a->npending = 0;
}

static int grow_pending(fc_aggr *a) {
  size_t cap = a->cappending ? 2 * a->cappending : 16;
  void *p = realloc(a->pending, cap * sizeof *a->pending);
  if (!p) return FEDC_ERR_NOMEM;
  a->pending = p;
  a->cappending = cap;
  return FEDC_OK;
}

static grpc_status_code err_status(int err) {
  switch (err) {
  case FEDC_ERR_HASH: return GRPC_STATUS_DATA_LOSS;
  case FEDC_ERR_TOO_LARGE: return GRPC_STATUS_RESOURCE_EXHAUSTED;
  case FEDC_ERR_NOMEM: return GRPC_STATUS_RESOURCE_EXHAUSTED;
  default: return GRPC_STATUS_INVALID_ARGUMENT;
  }
}

/* One upload in flight (event-driven: its state lives between callbacks). */
typedef struct aup {
  fc_aggr *a;
  fc_chunk_rx rx;
  fc_agg_update *u;
  fc_agg *agg;
  fc_upload_rules rules;
  fc_rate_guard rate;
  uint64_t submit_by, round, examples;
  float loss;
  int masked, relay, unclipped;
  int busy; /* listed in a->busy: one stream per client */
  uint32_t bucket;
  uint64_t version;
  uint8_t model_sha[FC_SHA256_LEN]; /* relaying: the round's model, named in the signed claim */
  char *cert; /* relaying: the client's certificate and signature (UpdateMeta, 1.17) */
  uint8_t sig[FC_UPDATE_SIG_MAX];
  size_t siglen;
  char client[65];
} aup;

/* Give back the slot and the client's busy mark (before the client hears a
 * refusal, so an immediate retry is not "in progress"). */
static void aup_settle(aup *up) {
  fc_aggr *a = up->a;
  if (up->u) up->agg->ops->update_abort(up->agg, up->u);
  up->u = NULL;
  if (up->busy) {
    pthread_mutex_lock(&a->mu);
    aggr_list_del(a->busy, &a->nbusy, up->client);
    pthread_mutex_unlock(&a->mu);
  }
  up->busy = 0;
}

static void aup_done(void *state) {
  aup *up = state;
  if (!up) return;
  if (up->u)
    FC_WARN(MOD, "upload from %s broke off after %llu of %llu bytes", up->client, (unsigned long long)up->rx.received,
            (unsigned long long)up->rx.total);
  aup_settle(up);
  fc_chunk_rx_free(&up->rx);
  free(up->cert);
  free(up);
}

static void aup_refuse(aup *up, fc_scall *call, grpc_status_code code, const char *why, uint32_t retry, int slow) {
  atomic_fetch_add(slow ? &up->a->m_refused_slow : &up->a->m_refused_other, 1);
  aup_settle(up);
  FC_WARN(MOD, "upload from %s rejected: %s", up->client, why);
  fc_scall_finish_retry(call, code, why, retry);
}

static void aup_chunk(fc_scall *call, void *state, const ProtobufCMessage *msg) {
  aup *up = state;
  fc_aggr *a = up->a;
  const Fedc__V1__UploadMsg *um = (const Fedc__V1__UploadMsg *)msg;
  char why[400] = "";
  uint64_t at = up->rx.received, now = fc_now_ms();
  int rc;
  if (fc_scall_finished(call)) return; /* refused already: the rest of the stream is dropped */
  if (now >= up->submit_by) {
    snprintf(why, sizeof why, "round %llu: submit time passed during the upload", (unsigned long long)up->round);
    aup_refuse(up, call, GRPC_STATUS_DEADLINE_EXCEEDED, why, 0, 0);
  } else if (um->chunk && fc_rate_guard_too_slow(&up->rate, now, at + um->chunk->data.len, a->cfg.min_transfer_bps,
                                                 (uint64_t)a->cfg.stream_idle_ms)) {
    /* As the coordinator's (coord_too_slow): a trickle must not hold a slot for the round. */
    snprintf(why, sizeof why, "upload too slow: %llu bytes in %.1f s (at least %llu B/s after %.1f s)",
             (unsigned long long)at, (now - up->rate.start_ms) / 1000.0, (unsigned long long)a->cfg.min_transfer_bps,
             a->cfg.stream_idle_ms / 1000.0);
    aup_refuse(up, call, GRPC_STATUS_DEADLINE_EXCEEDED, why, 0, 1);
  } else if (!um->chunk || um->header || um->meta) {
    aup_refuse(up, call, GRPC_STATUS_INVALID_ARGUMENT, "expected only chunks after the first upload message", 0, 0);
  } else if (um->chunk->data.len < FC_CHUNK_MIN && at + um->chunk->data.len < up->rx.total) {
    snprintf(why, sizeof why, "chunk of %zu bytes at offset %llu: chunks before the last must be >= %u bytes",
             um->chunk->data.len, (unsigned long long)at, FC_CHUNK_MIN);
    aup_refuse(up, call, GRPC_STATUS_INVALID_ARGUMENT, why, 0, 0);
  } else if ((rc = fc_chunk_rx_feed(&up->rx, um->chunk->offset, um->chunk->data.data, um->chunk->data.len, why,
                                    sizeof why)) != FEDC_OK ||
             (rc = up->agg->ops->update_chunk(up->agg, up->u, at, um->chunk->data.data, um->chunk->data.len)) !=
                 FEDC_OK) {
    if (rc != FEDC_OK && !why[0]) snprintf(why, sizeof why, "chunk refused: %s", fedc_strerror(rc));
    aup_refuse(up, call, err_status(rc), why, 0, 0);
  }
}

static void aup_end(fc_scall *call, void *state) {
  aup *up = state;
  fc_aggr *a = up->a;
  char why[400] = "";
  grpc_status_code code = GRPC_STATUS_OK;
  int rc;
  if (fc_scall_finished(call)) return;
  if ((rc = fc_chunk_rx_end(&up->rx, why, sizeof why)) != FEDC_OK) {
    aup_refuse(up, call, err_status(rc), why, 0, 0);
    return;
  }
  fc_agg_check chk; /* a masked input is uniform to us: only its weight (the rule's) to record */
  memset(&chk, 0, sizeof chk);
  double weight = up->masked ? fc_upload_weight(&up->rules, up->examples) : 0;
  if (!up->masked && fc_upload_values_check(up->agg, up->u, &up->rules, up->examples, 0, &chk, &weight, why,
                                            sizeof why) != FEDC_OK) {
    aup_refuse(up, call, GRPC_STATUS_INVALID_ARGUMENT, why, 0, 0);
    return;
  }
  if (up->relay) {
    /* The leader checks the client's signature again (the bytes reach it
     * from us); checking it here tells an honest client at once. */
    fc_update_claim cl = {a->federation, up->client, up->round,    up->version,   up->examples,
                          up->loss,      up->unclipped, up->rx.want_sha, up->model_sha};
    fc_cert *x = NULL;
    char cwhy[300];
    pthread_mutex_lock(&a->mu); /* the cache's; the signature is checked outside it, as the leader does */
    rc = fc_cert_cache_get(a->certs, up->cert, strlen(up->cert), &x, cwhy, sizeof cwhy);
    pthread_mutex_unlock(&a->mu);
    if (rc != FEDC_OK) snprintf(why, sizeof why, "the update's certificate: %s", cwhy);
    else rc = fc_update_verify(x, &cl, up->sig, up->siglen, why, sizeof why);
    fc_cert_release(x);
    if (rc != FEDC_OK) {
      aup_refuse(up, call, GRPC_STATUS_PERMISSION_DENIED, why, 0, 0);
      return;
    }
  }
  pthread_mutex_lock(&a->mu);
  if (!a->open || a->round != up->round || fc_now_ms() >= a->submit_by || a->relay != up->relay) {
    code = GRPC_STATUS_DEADLINE_EXCEEDED;
    snprintf(why, sizeof why, "round %llu closed at this aggregator during the upload", (unsigned long long)up->round);
  } else if (a->npending == a->cappending && grow_pending(a) != FEDC_OK) {
    code = GRPC_STATUS_RESOURCE_EXHAUSTED;
    snprintf(why, sizeof why, "out of memory");
  } else if (aggr_list_add(&a->taken, &a->ntaken, &a->captaken, up->client) != FEDC_OK) {
    code = GRPC_STATUS_RESOURCE_EXHAUSTED;
    snprintf(why, sizeof why, "out of memory");
  } else {
    aggr_contrib *k = &a->pending[a->npending++];
    memset(k, 0, sizeof *k);
    snprintf(k->client, sizeof k->client, "%s", up->client);
    k->examples = up->examples;
    k->weight = weight;
    k->loss = up->loss;
    k->bytes = fc_scall_bytes_in(call);
    memcpy(k->sha, up->rx.want_sha, FC_SHA256_LEN);
    k->bucket = up->bucket;
    k->unclipped = up->unclipped;
    if (up->relay) {
      /* Kept whole for the leader: the slot's buffer moves to the
       * contribution (the slot allocates another at its next use). */
      k->relay = up->u->buf;
      up->u->buf = NULL;
      k->cert = up->cert;
      up->cert = NULL;
      memcpy(k->sig, up->sig, up->siglen);
      k->siglen = up->siglen;
      up->agg->ops->update_abort(up->agg, up->u);
    } else if (up->agg->ops->update_commit(up->agg, up->u, weight) != FEDC_OK) { /* the slot went back either way */
      a->npending--;
      aggr_list_del(a->taken, &a->ntaken, up->client);
      code = GRPC_STATUS_INTERNAL;
      snprintf(why, sizeof why, "update not folded: past the sum's bound");
    }
    up->u = NULL; /* the slot went back with the commit */
    if (code == GRPC_STATUS_OK) atomic_fetch_add(&a->m_taken, 1);
  }
  /* A refused update's slot goes back before the busy mark: with no upload
   * busy, the poll thread may rebuild (free) the sum the slot belongs to. */
  if (code != GRPC_STATUS_OK && up->u) up->agg->ops->update_abort(up->agg, up->u);
  up->u = NULL;
  aggr_list_del(a->busy, &a->nbusy, up->client);
  up->busy = 0;
  pthread_mutex_unlock(&a->mu);
  if (code != GRPC_STATUS_OK) {
    aup_refuse(up, call, code, why, 0, 0);
    return;
  }
  if (up->relay) aggr_kick(a);
  if (up->masked)
    FC_INFO(MOD, "round %llu: masked input from %s taken (instance %u)", (unsigned long long)up->round, up->client,
            up->bucket);
  else
    FC_INFO(MOD, "round %llu: update from %s taken (%llu examples, weight %.0f, norm %.4g)",
            (unsigned long long)up->round, up->client, (unsigned long long)up->examples, weight, chk.l2);
  Fedc__V1__UploadResponse resp = FEDC__V1__UPLOAD_RESPONSE__INIT;
  resp.accepted = 1;
  resp.detail = "accepted by the aggregator";
  fc_scall_finish(call, GRPC_STATUS_OK, NULL, &resp.base);
}

void aggr_h_upload(fc_scall *call, void *ctx) {
  fc_aggr *a = ctx;
  const fc_peer *peer = fc_scall_peer(call);
  const Fedc__V1__UploadMsg *first = (const Fedc__V1__UploadMsg *)fc_scall_request(call);
  const Fedc__V1__UpdateMeta *meta = first->meta;
  char why[400] = "";
  grpc_status_code code = GRPC_STATUS_OK;
  uint32_t retry = 0;
  int rc;
  aup *up = calloc(1, sizeof *up);
  if (!up) {
    fc_scall_finish(call, GRPC_STATUS_RESOURCE_EXHAUSTED, "out of memory", NULL);
    return;
  }
  up->a = a;
  snprintf(up->client, sizeof up->client, "%s", peer->name);
  fc_model_spec spec;
  uint64_t bytes = 0;
  if (!meta || !first->header) {
    code = GRPC_STATUS_INVALID_ARGUMENT;
    snprintf(why, sizeof why, "first upload message must carry meta and header");
    goto refuse;
  }
  if (meta->upload_bits != 0 && meta->upload_bits != 32) {
    code = GRPC_STATUS_FAILED_PRECONDITION;
    snprintf(why, sizeof why, "this aggregator takes float32 updates or 32-bit masked inputs only");
    goto refuse;
  }
  if (fc_upload_meta_check(meta->num_examples, meta->train_loss, meta->masked, why, sizeof why) != FEDC_OK) {
    code = GRPC_STATUS_INVALID_ARGUMENT;
    goto refuse;
  }
  up->examples = meta->num_examples;
  up->loss = meta->train_loss;
  up->unclipped = meta->unclipped;
  up->version = meta->model_version;
  pthread_mutex_lock(&a->mu);
  uint64_t now = fc_now_ms();
  if (a->open && !meta->masked != !a->masked) {
    code = GRPC_STATUS_FAILED_PRECONDITION;
    snprintf(why, sizeof why, "%s", a->masked ? "this round runs secure aggregation: send a masked input"
                                              : "this round does not run secure aggregation: masked input refused");
  } else if (!a->open || meta->round != a->round || meta->model_version != a->version) {
    code = a->open && meta->round < a->round ? GRPC_STATUS_FAILED_PRECONDITION : GRPC_STATUS_UNAVAILABLE;
    retry = code == GRPC_STATUS_UNAVAILABLE ? 300 : 0; /* the leader's new round may not have reached us yet */
    snprintf(why, sizeof why, "update for round %llu version %llu; this aggregator holds %s round %llu version %llu",
             (unsigned long long)meta->round, (unsigned long long)meta->model_version, a->open ? "open" : "no open",
             (unsigned long long)a->round, (unsigned long long)a->version);
  } else if (aggr_listed(a->taken, a->ntaken, peer->name)) {
    code = GRPC_STATUS_ALREADY_EXISTS;
    snprintf(why, sizeof why, "update refused: already uploaded in round %llu", (unsigned long long)a->round);
  } else if (aggr_listed(a->busy, a->nbusy, peer->name)) {
    code = GRPC_STATUS_ABORTED;
    snprintf(why, sizeof why, "update refused: an upload from this client is already in progress");
  } else if (!aggr_listed(a->assigned, a->nassigned, peer->name)) {
    /* Assigned at its check-in; we learn it at our next poll of the leader. */
    code = GRPC_STATUS_UNAVAILABLE;
    retry = 300;
    snprintf(why, sizeof why, "%s is not (yet) assigned to aggregator %s in round %llu", peer->name, a->name,
             (unsigned long long)a->round);
  } else if (a->relay && a->npending + a->nbusy + a->nrelaying >= 2 * (size_t)a->cfg.upload_slots) {
    /* Relaying: at most 2 x upload-slots updates held here (arriving,
     * waiting or being handed over): with the slots' own buffers, memory
     * stays within 3 x slots x model. The client comes back in 500 ms: a
     * shorter hint made the refused clients' retries most of the load
     * (bench_aggtier, median: 2,560 retries, 20.9 s; 1 s: 320, 13.1 s). */
    code = GRPC_STATUS_UNAVAILABLE;
    retry = 500;
    snprintf(why, sizeof why, "aggregator busy: %zu update(s) arriving or waiting to be relayed (2 x --upload-slots %u)",
             a->npending + a->nbusy + a->nrelaying, (unsigned)a->cfg.upload_slots);
  } else if (a->relay && (!meta->signature.len || meta->signature.len > FC_UPDATE_SIG_MAX || !meta->certificate ||
                          !meta->certificate[0] || strlen(meta->certificate) > FC_UPDATE_CERT_MAX)) {
    code = GRPC_STATUS_FAILED_PRECONDITION;
    snprintf(why, sizeof why, "this federation relays each update to its leader, which checks the client's signature "
             "over it (fedc protocol 1.17): the update carries none (or one, or a certificate, too large); upgrade the "
             "client");
  } else if (now >= a->submit_by) {
    code = GRPC_STATUS_DEADLINE_EXCEEDED;
    snprintf(why, sizeof why, "round %llu: this aggregator takes no update after its submit time",
             (unsigned long long)a->round);
  } else if (aggr_list_add(&a->busy, &a->nbusy, &a->capbusy, peer->name) != FEDC_OK) {
    code = GRPC_STATUS_RESOURCE_EXHAUSTED;
    snprintf(why, sizeof why, "out of memory");
  } else {
    up->busy = 1;
    up->masked = a->masked;
    up->relay = a->relay;
    if (up->relay) {
      memcpy(up->model_sha, a->model_sha, FC_SHA256_LEN);
      memcpy(up->sig, meta->signature.data, meta->signature.len);
      up->siglen = meta->signature.len;
      up->cert = strdup(meta->certificate); /* NULL: refused below */
    }
    for (size_t i = 0; up->masked && i < a->nassigned; i++)
      if (!strcmp(a->assigned[i], peer->name)) up->bucket = a->assigned_bucket[i];
    up->agg = a->agg;
    spec = a->spec;
    bytes = a->bytes;
    up->rules = a->rules;
    up->submit_by = a->submit_by;
    up->round = a->round;
  }
  pthread_mutex_unlock(&a->mu);
  if (code == GRPC_STATUS_OK && up->relay && !up->cert) {
    code = GRPC_STATUS_RESOURCE_EXHAUSTED;
    snprintf(why, sizeof why, "out of memory");
  }
  if (code != GRPC_STATUS_OK) goto refuse;
  if ((rc = fc_chunk_rx_begin_pb(&up->rx, first->header, &spec, bytes, why, sizeof why)) != FEDC_OK) {
    code = err_status(rc);
    goto refuse;
  }
  /* Event-driven: a slot now or "come back" (never a wait on this thread). */
  if ((rc = up->agg->ops->update_begin(up->agg, 0, &up->u)) != FEDC_OK) {
    code = GRPC_STATUS_UNAVAILABLE;
    retry = 500;
    snprintf(why, sizeof why, "aggregator busy: no staging slot free (%s)", fedc_strerror(rc));
    goto refuse;
  }
  if (up->masked && fc_agg_secagg_route(up->agg, up->u, up->bucket) != FEDC_OK) { /* the leader's list was checked */
    code = GRPC_STATUS_INTERNAL;
    snprintf(why, sizeof why, "no SecAgg instance %u here", up->bucket);
    goto refuse;
  }
  fc_rate_guard_start(&up->rate, fc_now_ms()); /* from the slot on: a wait for one is not the client's slowness */
  fc_scall_stream_in(call, aup_chunk, aup_end, aup_done, up);
  return;
refuse:
  aup_refuse(up, call, code, why, retry, 0);
  aup_done(up);
}
