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
 * Blocking handler on the server's pool: an aggregator serves a share of the
 * clients, and this slice keeps the code straight; the coordinator's
 * event-driven form (coord_upload.c) is the model for the next one.
 * Invariant: the fold and the record of the contribution are one step under
 * a->mu, so a partial snapshot (aggr_node.c) sees both or neither.
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

void aggr_pending_drop(fc_aggr *a) {
  for (size_t i = 0; i < a->npending; i++) free(a->pending[i].relay);
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

void aggr_h_upload(fc_scall *call, void *ctx) {
  fc_aggr *a = ctx;
  const fc_peer *peer = fc_scall_peer(call);
  const Fedc__V1__UploadMsg *first = (const Fedc__V1__UploadMsg *)fc_scall_request(call);
  const Fedc__V1__UpdateMeta *meta = first->meta;
  char why[400] = "";
  grpc_status_code code = GRPC_STATUS_OK;
  uint32_t retry = 0;
  int busy = 0, slow = 0, rc;
  fc_chunk_rx rx;
  memset(&rx, 0, sizeof rx);
  fc_agg_update *u = NULL;
  fc_agg *agg = NULL;
  fc_model_spec spec;
  uint64_t bytes = 0, submit_by = 0, round = 0;
  fc_upload_rules rules;
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
  int masked = 0, relay = 0;
  uint32_t bucket = 0;
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
  } else if (a->relay && a->npending + a->nbusy >= (size_t)a->cfg.upload_slots) {
    /* Relaying: at most upload-slots updates held here (waiting or arriving),
     * as many as the staging slots: memory stays O(model x slots). */
    code = GRPC_STATUS_UNAVAILABLE;
    retry = 200;
    snprintf(why, sizeof why, "aggregator busy: %zu update(s) arriving or waiting to be relayed (--upload-slots %u)",
             a->npending + a->nbusy, (unsigned)a->cfg.upload_slots);
  } else if (now >= a->submit_by) {
    code = GRPC_STATUS_DEADLINE_EXCEEDED;
    snprintf(why, sizeof why, "round %llu: this aggregator takes no update after its submit time",
             (unsigned long long)a->round);
  } else if (aggr_list_add(&a->busy, &a->nbusy, &a->capbusy, peer->name) != FEDC_OK) {
    code = GRPC_STATUS_RESOURCE_EXHAUSTED;
    snprintf(why, sizeof why, "out of memory");
  } else {
    busy = 1;
    masked = a->masked;
    relay = a->relay;
    for (size_t i = 0; masked && i < a->nassigned; i++)
      if (!strcmp(a->assigned[i], peer->name)) bucket = a->assigned_bucket[i];
    agg = a->agg;
    spec = a->spec;
    bytes = a->bytes;
    rules = a->rules;
    submit_by = a->submit_by;
    round = a->round;
  }
  pthread_mutex_unlock(&a->mu);
  if (code != GRPC_STATUS_OK) goto refuse;
  if ((rc = fc_chunk_rx_begin_pb(&rx, first->header, &spec, bytes, why, sizeof why)) != FEDC_OK) {
    code = err_status(rc);
    goto refuse;
  }
  if ((rc = agg->ops->update_begin(agg, a->cfg.stream_idle_ms, &u)) != FEDC_OK) {
    code = GRPC_STATUS_UNAVAILABLE;
    retry = 500;
    snprintf(why, sizeof why, "aggregator busy: no staging slot free (%s)", fedc_strerror(rc));
    goto refuse;
  }
  if (masked && fc_agg_secagg_route(agg, u, bucket) != FEDC_OK) { /* the leader's list was checked in range */
    code = GRPC_STATUS_INTERNAL;
    snprintf(why, sizeof why, "no SecAgg instance %u here", bucket);
    goto refuse;
  }
  fc_rate_guard rate; /* from the slot on: a wait for one is not the client's slowness */
  fc_rate_guard_start(&rate, fc_now_ms());
  for (;;) {
    ProtobufCMessage *msg = NULL;
    int r = fc_scall_recv(call, &msg);
    if (r < 0) {
      FC_WARN(MOD, "upload from %s broke off after %llu of %llu bytes", peer->name, (unsigned long long)rx.received,
              (unsigned long long)rx.total);
      goto out; /* finished by the transport */
    }
    if (r == 0) break;
    const Fedc__V1__UploadMsg *um = (const Fedc__V1__UploadMsg *)msg;
    uint64_t at = rx.received;
    if (fc_now_ms() >= submit_by) {
      code = GRPC_STATUS_DEADLINE_EXCEEDED;
      snprintf(why, sizeof why, "round %llu: submit time passed during the upload", (unsigned long long)round);
    } else if (um->chunk && fc_rate_guard_too_slow(&rate, fc_now_ms(), at + um->chunk->data.len, a->cfg.min_transfer_bps,
                                                   (uint64_t)a->cfg.stream_idle_ms)) {
      /* As the coordinator's (coord_too_slow): a trickle must not hold a thread and a slot for the round. */
      code = GRPC_STATUS_DEADLINE_EXCEEDED;
      slow = 1;
      snprintf(why, sizeof why, "upload too slow: %llu bytes in %.1f s (at least %llu B/s after %.1f s)",
               (unsigned long long)at, (fc_now_ms() - rate.start_ms) / 1000.0, (unsigned long long)a->cfg.min_transfer_bps,
               a->cfg.stream_idle_ms / 1000.0);
    } else if (!um->chunk || um->header || um->meta) {
      code = GRPC_STATUS_INVALID_ARGUMENT;
      snprintf(why, sizeof why, "expected only chunks after the first upload message");
    } else if (um->chunk->data.len < FC_CHUNK_MIN && at + um->chunk->data.len < rx.total) {
      code = GRPC_STATUS_INVALID_ARGUMENT;
      snprintf(why, sizeof why, "chunk of %zu bytes at offset %llu: chunks before the last must be >= %u bytes",
               um->chunk->data.len, (unsigned long long)at, FC_CHUNK_MIN);
    } else if ((rc = fc_chunk_rx_feed(&rx, um->chunk->offset, um->chunk->data.data, um->chunk->data.len, why,
                                      sizeof why)) != FEDC_OK ||
               (rc = agg->ops->update_chunk(agg, u, at, um->chunk->data.data, um->chunk->data.len)) != FEDC_OK) {
      code = err_status(rc);
    }
    protobuf_c_message_free_unpacked(msg, NULL);
    if (code != GRPC_STATUS_OK) goto refuse;
  }
  if ((rc = fc_chunk_rx_end(&rx, why, sizeof why)) != FEDC_OK) {
    code = err_status(rc);
    goto refuse;
  }
  fc_agg_check chk; /* a masked input is uniform to us: only its weight (the rule's) to record */
  memset(&chk, 0, sizeof chk);
  double weight = masked ? fc_upload_weight(&rules, meta->num_examples) : 0;
  if (!masked &&
      fc_upload_values_check(agg, u, &rules, meta->num_examples, 0, &chk, &weight, why, sizeof why) != FEDC_OK) {
    code = GRPC_STATUS_INVALID_ARGUMENT;
    goto refuse;
  }
  pthread_mutex_lock(&a->mu);
  if (!a->open || a->round != round || fc_now_ms() >= a->submit_by || a->relay != relay) {
    code = GRPC_STATUS_DEADLINE_EXCEEDED;
    snprintf(why, sizeof why, "round %llu closed at this aggregator during the upload", (unsigned long long)round);
  } else if (a->npending == a->cappending && grow_pending(a) != FEDC_OK) {
    code = GRPC_STATUS_RESOURCE_EXHAUSTED;
    snprintf(why, sizeof why, "out of memory");
  } else if (aggr_list_add(&a->taken, &a->ntaken, &a->captaken, peer->name) != FEDC_OK) {
    code = GRPC_STATUS_RESOURCE_EXHAUSTED;
    snprintf(why, sizeof why, "out of memory");
  } else {
    aggr_contrib *k = &a->pending[a->npending++];
    memset(k, 0, sizeof *k);
    snprintf(k->client, sizeof k->client, "%s", peer->name);
    k->examples = meta->num_examples;
    k->weight = weight;
    k->loss = meta->train_loss;
    k->bytes = fc_scall_bytes_in(call);
    memcpy(k->sha, rx.want_sha, FC_SHA256_LEN);
    k->bucket = bucket;
    k->unclipped = meta->unclipped;
    if (relay) {
      /* Kept whole for the leader: the slot's buffer moves to the
       * contribution (the slot allocates another at its next use). */
      k->relay = u->buf;
      u->buf = NULL;
      agg->ops->update_abort(agg, u);
    } else if (agg->ops->update_commit(agg, u, weight) != FEDC_OK) { /* the slot went back either way */
      a->npending--;
      aggr_list_del(a->taken, &a->ntaken, peer->name);
      code = GRPC_STATUS_INTERNAL;
      snprintf(why, sizeof why, "update not folded: past the sum's bound");
    }
    u = NULL; /* the slot went back with the commit */
    if (code == GRPC_STATUS_OK) atomic_fetch_add(&a->m_taken, 1);
  }
  aggr_list_del(a->busy, &a->nbusy, peer->name);
  busy = 0;
  pthread_mutex_unlock(&a->mu);
  if (code != GRPC_STATUS_OK) goto refuse;
  if (relay) aggr_kick(a);
  if (masked)
    FC_INFO(MOD, "round %llu: masked input from %s taken (instance %u)", (unsigned long long)round, peer->name, bucket);
  else
    FC_INFO(MOD, "round %llu: update from %s taken (%llu examples, weight %.0f, norm %.4g)",
            (unsigned long long)round, peer->name, (unsigned long long)meta->num_examples, weight, chk.l2);
  Fedc__V1__UploadResponse resp = FEDC__V1__UPLOAD_RESPONSE__INIT;
  resp.accepted = 1;
  resp.detail = "accepted by the aggregator";
  fc_scall_finish(call, GRPC_STATUS_OK, NULL, &resp.base);
  goto out;
refuse:
  atomic_fetch_add(slow ? &a->m_refused_slow : &a->m_refused_other, 1);
  FC_WARN(MOD, "upload from %s rejected: %s", peer->name, why);
  fc_scall_finish_retry(call, code, why, retry);
out:
  if (u) agg->ops->update_abort(agg, u);
  if (busy) {
    pthread_mutex_lock(&a->mu);
    aggr_list_del(a->busy, &a->nbusy, peer->name);
    pthread_mutex_unlock(&a->mu);
  }
  fc_chunk_rx_free(&rx);
}
