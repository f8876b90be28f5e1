/*
 * coord_resume.c - resumable transfers at the coordinator (protocol 1.10,
 * issue 26): an update upload or a model download cut by the network goes on
 * from the last chunk the other side has, within the same round.
 *
 * Owns: the kept prefixes of cut uploads (c->partials, the I/O-free table of
 * upload_resume.h, under c->up_mu), the UploadOffset answer, opening an
 * UploadUpdate stream fresh or resumed (the header and the staging slot), and
 * checking a FetchModel request's start offset. May call: the aggregator's
 * slot operations, the chunk framing, the logger and the metrics counters;
 * not the engine (coordinator.c settles it as for any upload: a cut upload's
 * engine state goes back to "tasked", and its resumption begins anew there,
 * with the usual checks: selected, version, deadline, rate).
 *
 * Upload: coordinator.c hands a stream that broke off (the call gone, not a
 * refusal) to coord_upload_keep; the prefix keeps its staging slot (and a
 * compressed upload its decoder, coord_codec.c, whose place in the block
 * stream is exactly the bytes kept: chunks are fed to it whole, in order,
 * as the receiver accepts them), so the
 * upload memory budget (--upload-memory-mib / --upload-slots) bounds what is
 * kept, and a fresh upload that finds no slot free evicts the oldest kept
 * prefix before it is told "busy". Prefixes die with their round
 * (coord_resume_round_closed, from cancel_uploads) or their deadline.
 * Download: the client keeps the bytes it has and their running SHA-256
 * (transport/tensor_stream.c); the coordinator only starts at its offset.
 */
#include <stdio.h>
#include <string.h>

#include "common/clock.h"
#include "common/log.h"
#include "coordinator/coord_codec.h"
#include "coordinator/coord_int.h"
#include "coordinator/upload_resume.h"
#include "fedc/error.h"
#include "transport/tensor_stream.h"

#define MOD "coordinator"

/* What the table keeps as a partial's slot: the staging update and, for a
 * compressed upload, its decoder. */
typedef struct kept_slot {
  fc_agg_update *u;
  coord_codec *codec;
} kept_slot;

static void release_slot(void *ctx, void *slot) {
  fc_coord *c = ctx;
  kept_slot *k = slot;
  c->agg->ops->update_abort(c->agg, k->u);
  coord_codec_free(k->codec);
  free(k);
}

/* Under up_mu. The table is zeroed with the coordinator: set up on first use. */
static fc_partials *table(fc_coord *c) {
  if (!c->partials.release) fc_partials_init(&c->partials, release_slot, c);
  return &c->partials;
}

static void partial_meta(const Fedc__V1__UpdateMeta *m, uint32_t bucket, fc_partial_meta *out) {
  memset(out, 0, sizeof *out);
  out->model_version = m->model_version;
  out->examples = m->num_examples;
  out->loss = m->train_loss;
  out->masked = m->masked;
  out->unclipped = m->unclipped;
  out->bucket = bucket;
  out->upload_bits = m->upload_bits;
  out->upload_block = m->upload_block;
}

int coord_upload_keep(fc_coord *c, const char *client, uint64_t round, const Fedc__V1__UpdateMeta *meta,
                      uint32_t bucket, fc_chunk_rx *rx, fc_agg_update **u, coord_codec **codec, uint64_t deadline_ms,
                      char *why, size_t whylen) {
  fc_partial_meta pm;
  partial_meta(meta, bucket, &pm);
  uint64_t got = rx->received, total = rx->total;
  kept_slot *k = malloc(sizeof *k);
  if (!k) { /* nothing kept: the client starts over */
    c->agg->ops->update_abort(c->agg, *u);
    coord_codec_free(*codec);
    fc_chunk_rx_free(rx);
    *u = NULL;
    *codec = NULL;
    if (why) snprintf(why, whylen, "stream ended early: got %llu of %llu bytes", (unsigned long long)got,
                      (unsigned long long)total);
    return FEDC_ERR_PROTOCOL;
  }
  k->u = *u;
  k->codec = *codec;
  *u = NULL;
  *codec = NULL;
  void *slot = k;
  pthread_mutex_lock(&c->up_mu);
  int kept = fc_partials_keep(table(c), client, round, &pm, rx, &slot, deadline_ms, fc_now_ms());
  pthread_mutex_unlock(&c->up_mu);
  if (kept)
    FC_INFO(MOD, "upload from %s cut after %llu of %llu bytes: kept for a resume in round %llu", client,
            (unsigned long long)got, (unsigned long long)total, (unsigned long long)round);
  if (why)
    snprintf(why, whylen, "stream ended early: got %llu of %llu bytes%s", (unsigned long long)got,
             (unsigned long long)total, kept ? " (kept: resume it with UploadOffset)" : "");
  return FEDC_ERR_PROTOCOL;
}

static grpc_status_code begin_status(int err) {
  switch (err) {
  case FEDC_ERR_HASH: return GRPC_STATUS_DATA_LOSS;
  case FEDC_ERR_TOO_LARGE:
  case FEDC_ERR_NOMEM: return GRPC_STATUS_RESOURCE_EXHAUSTED;
  default: return GRPC_STATUS_INVALID_ARGUMENT;
  }
}

static grpc_status_code resume_status(int err) {
  switch (err) {
  case FEDC_ERR_TOO_LARGE: return GRPC_STATUS_OUT_OF_RANGE;
  case FEDC_ERR_PROTOCOL: return GRPC_STATUS_INVALID_ARGUMENT;
  default: return GRPC_STATUS_FAILED_PRECONDITION; /* no prefix, stale, another update */
  }
}

grpc_status_code coord_upload_open(fc_coord *c, const coord_upload_args *a, fc_chunk_rx *rx, fc_agg_update **u,
                                   coord_codec **codec, uint64_t *resumed_from, uint32_t *retry, char *why,
                                   size_t whylen) {
  const Fedc__V1__TensorHeader *h = a->first->header;
  /* The header is checked as for a fresh stream (spec, length, hash size,
   * chunk size) before anything kept is looked at. */
  int err = fc_chunk_rx_begin_pb(rx, h, a->expect, a->max_total, why, whylen);
  if (err != FEDC_OK) return begin_status(err);
  *resumed_from = 0;
  if (h->start_offset) {
    fc_partial_meta pm;
    partial_meta(a->first->meta, a->bucket, &pm);
    fc_chunk_rx kept;
    void *slot = NULL;
    pthread_mutex_lock(&c->up_mu);
    err = fc_partials_take(table(c), a->client, a->round, &pm, rx->total, rx->want_sha, rx->chunk_max,
                           h->start_offset, fc_now_ms(), &kept, &slot, why, whylen);
    pthread_mutex_unlock(&c->up_mu);
    if (err != FEDC_OK) return resume_status(err);
    fc_chunk_rx_free(rx);
    *rx = kept; /* the prefix's digest and count go on */
    kept_slot *k = slot;
    *u = k->u;
    coord_codec_free(*codec); /* the fresh decoder (same encoding: the meta matched) */
    *codec = k->codec;        /* ... gives way to the one that decoded the prefix */
    free(k);
    *resumed_from = kept.received;
    atomic_fetch_add(&c->metrics.resumed[0], 1);
    atomic_fetch_add(&c->metrics.resumed_bytes[0], kept.received);
    FC_INFO(MOD, "upload from %s resumed at byte %llu of %llu (chunk %llu of %llu)", a->client,
            (unsigned long long)kept.received, (unsigned long long)kept.total,
            (unsigned long long)kept.chunks + 1, (unsigned long long)fc_chunk_count(kept.total, kept.chunk_max));
    return GRPC_STATUS_OK;
  }
  /* A fresh stream: whatever this identity left of an earlier one is of no use. */
  pthread_mutex_lock(&c->up_mu);
  fc_partials_drop_client(table(c), a->client);
  pthread_mutex_unlock(&c->up_mu);
  for (;;) {
    if (c->agg->ops->update_begin(c->agg, 0, u) == FEDC_OK) return GRPC_STATUS_OK;
    /* A kept prefix is worth less than a whole update waiting to start. */
    pthread_mutex_lock(&c->up_mu);
    int evicted = fc_partials_evict_oldest(table(c));
    pthread_mutex_unlock(&c->up_mu);
    if (!evicted) break;
    FC_INFO(MOD, "no staging slot free: gave up the oldest kept upload prefix for %s's upload", a->client);
  }
  /* No waiting for a slot: a waiting upload would hold its stream open for
   * nothing. Say when to come back, spread over 150-650 ms: a burst (every
   * masked input arrives when the SecAgg masked stage opens) drains in
   * turns instead of backing off past the stage's deadline. */
  *retry = 150 + (uint32_t)(fc_now_ms() * 2654435761u % 500u);
  snprintf(why, whylen, "coordinator busy: no aggregation slot free, retry in %u ms", *retry);
  return GRPC_STATUS_UNAVAILABLE;
}

void coord_resume_round_closed(fc_coord *c, uint64_t round) {
  pthread_mutex_lock(&c->up_mu);
  uint32_t n = fc_partials_round_closed(table(c), round);
  pthread_mutex_unlock(&c->up_mu);
  if (n) FC_INFO(MOD, "round %llu closed: dropped %u kept upload prefixes", (unsigned long long)round, n);
}

void coord_resume_free(fc_coord *c) {
  pthread_mutex_lock(&c->up_mu);
  fc_partials_free(table(c));
  pthread_mutex_unlock(&c->up_mu);
}

/* UploadOffset (client role, unary, async): where to resume the caller's update;
 * coord_upload.c's handler calls it once no stream of the caller's is open. */
void coord_resume_offset(fc_scall *call, void *ctx) {
  fc_coord *c = ctx;
  const fc_peer *peer = fc_scall_peer(call);
  const Fedc__V1__UploadOffsetRequest *req = (const Fedc__V1__UploadOffsetRequest *)fc_scall_request(call);
  char why[300];
  if (req->sha256.len != FC_SHA256_LEN) {
    fc_scall_finish(call, GRPC_STATUS_INVALID_ARGUMENT, "UploadOffset: sha256 must be 32 bytes", NULL);
    return;
  }
  uint64_t offset = 0;
  pthread_mutex_lock(&c->up_mu);
  fc_partials_query(table(c), peer->name, req->round, req->total_bytes, req->sha256.data, req->chunk_bytes,
                    fc_now_ms(), &offset, why, sizeof why);
  pthread_mutex_unlock(&c->up_mu);
  Fedc__V1__UploadOffsetResponse resp = FEDC__V1__UPLOAD_OFFSET_RESPONSE__INIT;
  resp.offset = offset;
  resp.detail = why;
  fc_scall_finish(call, GRPC_STATUS_OK, NULL, &resp.base);
}

int coord_fetch_resume(fc_coord *c, fc_scall *call, const Fedc__V1__FetchModelRequest *req, fc_pb_header *hdr,
                       uint64_t *skip) {
  *skip = 0;
  uint64_t off = req->start_offset, total = hdr->h.total_bytes;
  uint32_t cb = hdr->h.chunk_bytes;
  if (!off) return FEDC_OK;
  if (off >= total || off % cb) {
    char why[200];
    snprintf(why, sizeof why, "start_offset %llu is not a chunk boundary (%u bytes) below the model's %llu bytes",
             (unsigned long long)off, cb, (unsigned long long)total);
    fc_scall_finish(call, GRPC_STATUS_OUT_OF_RANGE, why, NULL);
    return FEDC_ERR_INVALID;
  }
  *skip = off / cb;
  hdr->h.start_offset = off;
  atomic_fetch_add(&c->metrics.resumed[1], 1);
  atomic_fetch_add(&c->metrics.resumed_bytes[1], off);
  FC_INFO(MOD, "model download for client/%s resumed at byte %llu of %llu (chunk %llu of %llu)",
          fc_scall_peer(call)->name, (unsigned long long)off, (unsigned long long)total,
          (unsigned long long)*skip + 1, (unsigned long long)fc_chunk_count(total, cb));
  return FEDC_OK;
}
