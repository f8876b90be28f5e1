/*
 * coord_upload.c - the UploadUpdate handler, event-driven: the first message
 * (meta + header) is checked against the engine and the round, each chunk is
 * folded into a staging slot without a lock, and at the end of the stream the
 * hash, NaN/Inf, norm and size are checked before the commit under `mu`.
 *
 * Owns: the uploads in progress (c->uploads, under up_mu), so a closing
 * round can cancel those that can never count.
 * Invariant: every refusal settles the engine and the slot before the client
 * hears it; a committed upload is never cancelled.
 * May call: aggregate.h (staging slots), engine.h, coord_secagg.c (masked
 * inputs), coord_limits.c (refusal coalescing), audit.h, chunk.h,
 * coord_download.c (coord_too_slow), coord_state.c (snapshots).
 */
#include "coordinator/coordinator.h"

#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/blas.h"
#include "common/chunk.h"
#include "common/clock.h"
#include "common/dp_accountant.h"
#include "common/dp_noise.h"
#include "common/fileutil.h"
#include "common/hash_pipe.h"
#include "common/log.h"
#include "coordinator/agg_slots.h" /* async: the staged values go to the buffer log */
#include "coordinator/aggregate.h"
#include "coordinator/anomaly.h"
#include "coordinator/audit.h"
#include "coordinator/coord_codec.h"
#include "coordinator/coord_int.h"
#include "coordinator/dp_clip.h"
#include "coordinator/store.h"
#include "coordinator/store_prune.h"
#include "coordinator/upload_check.h"
#include "coordinator/watermark.h"
#include "crypto/pki.h"
#include "crypto/sa_crypto.h"
#include "fedc/error.h"
#include "fedc/v1/fedc.pb-c.h"
#include "secagg/params.h"
#include "transport/accept_guard.h"
#include "transport/tensor_stream.h"
#include "transport/transport.h"

#define MOD "coordinator"

static grpc_status_code verdict_status(int v) {
  switch (v) {
  case FC_UP_DUPLICATE: return GRPC_STATUS_ALREADY_EXISTS;
  case FC_UP_BUSY: return GRPC_STATUS_ABORTED;
  case FC_UP_LATE: return GRPC_STATUS_DEADLINE_EXCEEDED;
  case FC_UP_RATE_LIMITED: return GRPC_STATUS_RESOURCE_EXHAUSTED;
  case FC_UP_BUFFER_FULL: return GRPC_STATUS_UNAVAILABLE; /* with a retry time: the client comes back */
  default: return GRPC_STATUS_FAILED_PRECONDITION;
  }
}

static grpc_status_code err_status(int err) {
  switch (err) {
  case FEDC_ERR_HASH: return GRPC_STATUS_DATA_LOSS;
  case FEDC_ERR_TOO_LARGE: return GRPC_STATUS_RESOURCE_EXHAUSTED;
  case FEDC_ERR_TIMEOUT: return GRPC_STATUS_DEADLINE_EXCEEDED;
  case FEDC_ERR_NOMEM: return GRPC_STATUS_RESOURCE_EXHAUSTED;
  default: return GRPC_STATUS_INVALID_ARGUMENT;
  }
}

/* ---- UploadUpdate, event-driven ------------------------------------------------------
 * begin (first message: meta + header) -> a chunk per message, folded into a
 * staging slot -> end of stream: hash, NaN/Inf, norm, size, then commit under
 * `mu`. Every refusal settles the engine and the slot BEFORE the client hears
 * the verdict, so a client that retries at once does not find its refused
 * upload still "in progress". */
typedef struct upload {
  fc_coord *c;
  fc_scall *call;
  struct upload *next; /* c->uploads, under up_mu */
  int listed;
  model_ref *m;
  fc_chunk_rx rx;
  fc_agg_update *u;
  int begun; /* the engine counts this upload as in progress */
  int streamed;   /* its chunks were being taken: an abort from here on is the client's doing ... */
  int coord_fault; /* ... unless the coordinator could not keep it (the buffer log) */
  int committed; /* under c->mu: folded; coord_cancel_uploads must leave it alone */
  int masked;    /* secure aggregation: a masked input (u32), not a float delta */
  double norm_received; /* a quantized update scaled onto its bound: its norm as decoded (audited), else -1 */
  coord_codec *codec; /* compressed upload (coord_codec.c); NULL: folds as it is */
  uint32_t bucket; /* ... for this bucket's sum */
  int unclipped; /* UpdateMeta.unclipped: within the clip before clipping (adaptive clipping) */
  uint64_t round, round_deadline, examples;
  fc_rate_guard rate;
  uint64_t started_ms, resumed_from; /* resumed_from: bytes kept from a cut stream (coord_resume.c) */
  double loss;
  int64_t staleness; /* async mode: versions behind when it began (-1: not async) */
  Fedc__V1__UpdateMeta meta; /* the first message's: a cut stream's prefix is kept for it */
  fc_hash_pipe *pipe; /* the stream's SHA-256 on a thread of its own, over the slot as it fills (pipe_start) */
  char client[65];
} upload;

/* A plain upload of UPLOAD_PIPE_MIN bytes or more, not resumed, is hashed
 * beside the transfer (common/hash_pipe.h) over the staging slot, which holds
 * the stream's bytes as they came: the event thread then only copies and
 * checks (31 GB/s) where it also hashed (1.8 GB/s), and takes the next
 * message sooner. A compressed upload's slot holds decoded floats and a
 * resumed one carries a digest state from its first stream: both hash inline. */
#define UPLOAD_PIPE_MIN (4u << 20)

static void pipe_start(upload *up) {
  if (up->codec || up->resumed_from || !up->u || up->rx.total < UPLOAD_PIPE_MIN) return;
  if (fc_hash_pipe_start(up->u->buf, &up->pipe) != FEDC_OK) return; /* no thread: inline, as before */
  fc_chunk_rx_hash_outside(&up->rx);
  if (!up->rx.hash_outside) { /* rx not fresh: never both */
    fc_hash_pipe_abort(up->pipe);
    up->pipe = NULL;
  }
}

/* Stop the pipe before the slot changes hands. keep: the stream is kept to be
 * resumed, so the digest of what arrived moves into rx (one pass over the
 * prefix, on this rare path). */
static int pipe_stop(upload *up, int keep) {
  if (!up->pipe) return FEDC_OK;
  fc_hash_pipe_abort(up->pipe);
  up->pipe = NULL;
  return keep && up->u ? fc_chunk_rx_hash_inside(&up->rx, up->u->buf) : FEDC_OK;
}

/* Audit: an accepted or refused update (norm < 0: not known or not ours to
 * know, e.g. a masked input). Written before the update counts. */
static void audit_update(fc_coord *c, const upload *up, const char *outcome, const char *reason, double norm) {
  if (!c->audit) return;
  char hex[FC_SHA256_HEX_LEN];
  json_t *f = json_pack("{s:s,s:I,s:s,s:b}", "client", up->client, "round", (json_int_t)up->round, "outcome", outcome,
                        "masked", up->masked);
  if (!f) return;
  if (up->rx.total) json_object_set_new(f, "sha256", json_string(fc_hex(up->rx.want_sha, FC_SHA256_LEN, hex)));
  if (norm >= 0) json_object_set_new(f, "norm", json_real(norm));
  if (up->norm_received >= 0) json_object_set_new(f, "norm_received", json_real(up->norm_received)); /* scaled down */
  if (up->resumed_from) json_object_set_new(f, "resumed_from", json_integer((json_int_t)up->resumed_from));
  if (up->staleness >= 0) json_object_set_new(f, "staleness", json_integer((json_int_t)up->staleness));
  if (reason) json_object_set_new(f, "reason", json_string(reason));
  fc_audit_append(c->audit, "update", f);
}

/* Settle the engine and the staging slot (refusal or the call gone). */
static void upload_settle(upload *up) {
  fc_coord *c = up->c;
  pipe_stop(up, 0);
  if (up->u) c->agg->ops->update_abort(c->agg, up->u);
  up->u = NULL;
  if (up->begun) {
    pthread_mutex_lock(&c->mu);
    fc_engine_upload_abort(c->engine, up->client, up->round, fc_now_ms(), up->streamed && !up->coord_fault);
    pthread_mutex_unlock(&c->mu);
  }
  up->begun = 0;
}

static void upload_refuse_retry(upload *up, fc_scall *call, grpc_status_code code, const char *why,
                                uint32_t retry_ms) {
  int cls = code == GRPC_STATUS_INVALID_ARGUMENT      ? FC_MREF_INVALID
            : code == GRPC_STATUS_FAILED_PRECONDITION ? FC_MREF_PRECONDITION
            : code == GRPC_STATUS_DEADLINE_EXCEEDED   ? FC_MREF_LATE
            : code == GRPC_STATUS_UNAVAILABLE         ? FC_MREF_BUSY
            : code == GRPC_STATUS_RESOURCE_EXHAUSTED || code == GRPC_STATUS_OUT_OF_RANGE ? FC_MREF_LIMIT
                                                                                          : FC_MREF_OTHER;
  /* "Busy: come back in N ms" (no staging slot free) judges nothing: not
   * audited. The rest: an identity's first few per interval in full, then
   * counts (coord_limits.c), so a flood of refusals cannot fill the disk. */
  if (cls != FC_MREF_BUSY && coord_refusal_note(up->c, up->client, coord_refusal_reason(code)))
    audit_update(up->c, up, "refused", why, -1);
  atomic_fetch_add(&up->c->metrics.uploads_refused[cls], 1);
  upload_settle(up);
  if (cls == FC_MREF_BUSY) /* come back in retry_ms: pacing, not a fault (async: at every full buffer) */
    FC_INFO(MOD, "upload from %s rejected: %s", up->client, why);
  else
    FC_WARN(MOD, "upload from %s rejected: %s", up->client, why);
  fc_scall_finish_retry(call, code, why, retry_ms);
}

static void upload_refuse(upload *up, fc_scall *call, grpc_status_code code, const char *why) {
  upload_refuse_retry(up, call, code, why, 0);
}

static void upload_done(void *state) {
  upload *up = state;
  if (!up) return;
  if (up->begun || up->u) FC_WARN(MOD, "upload from %s broke off after %llu of %llu bytes", up->client,
                                  (unsigned long long)up->rx.received, (unsigned long long)up->rx.total);
  /* The call is gone, not refused: keep what arrived, before it leaves the list (UploadOffset sees either). */
  if (up->begun && up->u && pipe_stop(up, 1) == FEDC_OK)
    coord_upload_keep(up->c, up->client, up->round, &up->meta, up->bucket, &up->rx, &up->u, &up->codec,
                      up->round_deadline, 0, 0);
  if (up->listed) {
    pthread_mutex_lock(&up->c->up_mu);
    for (upload **pp = &up->c->uploads; *pp; pp = &(*pp)->next)
      if (*pp == up) {
        *pp = up->next;
        break;
      }
    pthread_mutex_unlock(&up->c->up_mu);
    atomic_fetch_sub(&up->c->metrics.uploads_in_flight, 1);
  }
  upload_settle(up);
  fc_chunk_rx_free(&up->rx);
  coord_codec_free(up->codec);
  coord_model_unref(up->m);
  free(up);
}

static void upload_chunk(fc_scall *call, void *state, const ProtobufCMessage *msg) {
  upload *up = state;
  fc_coord *c = up->c;
  char why[400];
  const Fedc__V1__UploadMsg *um = (const Fedc__V1__UploadMsg *)msg;
  if (fc_now_ms() >= up->round_deadline) {
    snprintf(why, sizeof why, "round %llu deadline passed during the upload (%llu of %llu bytes)",
             (unsigned long long)up->round, (unsigned long long)up->rx.received, (unsigned long long)up->rx.total);
    upload_refuse(up, call, GRPC_STATUS_DEADLINE_EXCEEDED, why);
    return;
  }
  if (!um->chunk || um->header || um->meta) {
    upload_refuse(up, call, GRPC_STATUS_INVALID_ARGUMENT, "expected only chunks after the first upload message");
    return;
  }
  if (coord_too_slow(c, &up->rate, up->rx.received - up->resumed_from)) {
    snprintf(why, sizeof why, "upload too slow: %llu bytes in %.1f s (at least %llu B/s after %.1f s)",
             (unsigned long long)up->rx.received, (fc_now_ms() - up->started_ms) / 1000.0,
             (unsigned long long)c->cfg.min_transfer_bps, c->cfg.stream_idle_ms / 1000.0);
    upload_refuse(up, call, GRPC_STATUS_DEADLINE_EXCEEDED, why);
    return;
  }
  uint64_t at = up->rx.received;
  /* Only the last chunk may be small: a stream of tiny chunks would cost a
   * message (and an event) per few bytes of the model. */
  if (um->chunk->data.len < FC_CHUNK_MIN && at + um->chunk->data.len < up->rx.total) {
    snprintf(why, sizeof why, "chunk of %zu bytes at offset %llu: chunks before the last must be >= %u bytes",
             um->chunk->data.len, (unsigned long long)at, FC_CHUNK_MIN);
    upload_refuse(up, call, GRPC_STATUS_INVALID_ARGUMENT, why);
    return;
  }
  int err = fc_chunk_rx_feed(&up->rx, um->chunk->offset, um->chunk->data.data, um->chunk->data.len, why, sizeof why);
  if (err == FEDC_OK && up->codec)
    err = coord_codec_feed(up->codec, c->agg, up->u, um->chunk->data.data, um->chunk->data.len, why, sizeof why);
  else if (err == FEDC_OK)
    err = c->agg->ops->update_chunk(c->agg, up->u, at, um->chunk->data.data, um->chunk->data.len);
  /* Whole floats only: the next chunk rewrites a float this one began (agg_slots.c). */
  if (err == FEDC_OK && up->pipe) fc_hash_pipe_publish(up->pipe, up->rx.received & ~(uint64_t)3);
  if (err != FEDC_OK) upload_refuse(up, call, err_status(err), why);
}

static void upload_end(fc_scall *call, void *state) {
  upload *up = state;
  fc_coord *c = up->c;
  char why[400];
  /* gRPC ends a call whose link was cut like a stream the client closed early:
   * keep what arrived (a compressed upload with its decoder, coord_resume.c). */
  int err;
  if (up->rx.received < up->rx.total && up->u) {
    err = pipe_stop(up, 1);
    if (err == FEDC_OK)
      err = coord_upload_keep(c, up->client, up->round, &up->meta, up->bucket, &up->rx, &up->u, &up->codec,
                              up->round_deadline, why, sizeof why);
    else
      snprintf(why, sizeof why, "the upload's SHA-256 could not be carried over to resume it");
  } else if (up->pipe) {
    uint8_t got[32];
    fc_hash_pipe_publish(up->pipe, up->rx.received);
    err = fc_hash_pipe_finish(up->pipe, got);
    up->pipe = NULL;
    if (err == FEDC_OK) {
      err = fc_chunk_rx_end_digest(&up->rx, got, why, sizeof why);
    } else {
      snprintf(why, sizeof why, "the upload's SHA-256 failed");
      up->coord_fault = 1; /* our hashing thread, not the client's stream */
    }
  } else {
    err = fc_chunk_rx_end(&up->rx, why, sizeof why);
  }
  double slack = 0, top = 0; /* how far quantization may move the norm past the clip (coord_codec.c) */
  if (err == FEDC_OK && up->codec) err = coord_codec_end(up->codec, &slack, &top, why, sizeof why);
  if (err != FEDC_OK) {
    upload_refuse(up, call, err_status(err), why);
    return;
  }
  /* NaN/Inf, the clip, the weight, the overflow bound: upload_check.c, the
   * same checks an aggregator makes (issue 23). */
  fc_agg_check chk;
  double weight = 0;
  pthread_mutex_lock(&c->mu);
  fc_upload_rules rules = {c->clip, c->cfg.max_example_weight, c->cfg.dp_noise_multiplier > 0};
  pthread_mutex_unlock(&c->mu);
  int quant = up->codec && !up->masked;
  if ((quant && fc_upload_quant_scales_check(rules.clip, top, why, sizeof why) != FEDC_OK) ||
      fc_upload_values_check(c->agg, up->u, &rules, up->examples, slack, &chk, &weight, why, sizeof why) != FEDC_OK) {
    upload_refuse(up, call, GRPC_STATUS_INVALID_ARGUMENT, why);
    return;
  }
  if (quant) up->norm_received = fc_upload_quant_clip((float *)up->u->buf, fc_model_numel(&up->m->spec), rules.clip,
                                                    slack, &chk);
  double l2 = chk.l2;
  /* One pass over the update for the anomaly scores, outside the lock. */
  struct fc_anomaly_meas *meas = up->masked ? NULL : coord_anomaly_measure(c, up->u, l2);
  pthread_mutex_lock(&c->mu);
  uint64_t now = fc_now_ms(), stale = 0;
  double fold = weight;
  int v = FC_UP_OK;
  if (c->cfg.engine.async) {
    /* Async (engine_async.c): weighted by staleness too, and in the buffer's
     * log before it counts (coord_async.c). Logged only if the commit below,
     * with the same `now` under the same lock, will count it: a record the
     * engine refuses would count after a restart (and, the client's real
     * update following it, make the replay refuse that one). */
    double sw = 1.0;
    int w = fc_engine_async_weight(c->engine, up->client, up->round, now, &sw, &stale);
    fold = weight * sw;
    up->staleness = w == FC_UP_OK ? (int64_t)stale : -1; /* refused: not known as counted */
    if (w == FC_UP_OK &&
        coord_async_log_update(c, up->client, up->round, (uint64_t)weight, up->loss, stale, fold,
                               fc_scall_bytes_in(call), (const float *)up->u->buf, fc_model_numel(&up->m->spec), why,
                               sizeof why) != FEDC_OK)
      v = -1;
  }
  /* The round record counts the examples that carried weight. Async and
   * refused above: the commit gives the same verdict and settles the engine
   * (a late task frees its slot). */
  if (v == FC_UP_OK)
    v = fc_engine_upload_commit(c->engine, up->client, up->round, (uint64_t)weight, up->loss, fc_scall_bytes_in(call),
                                now);
  char refusal[200] = "";
  uint32_t retry = 0;
  if (v == FC_UP_STALE) snprintf(refusal, sizeof refusal, "%s", fc_engine_refusal_detail(c->engine));
  if (v == FC_UP_BUFFER_FULL) retry = fc_engine_retry_ms(c->engine);
  if (v == FC_UP_OK && c->cfg.engine.async) {
    /* The buffer's last update: wake the driver to publish now rather than
     * at its next 50 ms tick (uploads wait while a buffer is full).
     * Signalled without its mutex, as coord_secagg.c does: a wake-up lost to
     * a driver not yet waiting costs that one tick. */
    fc_async_info ai;
    fc_engine_async_info(c->engine, &ai);
    if (ai.buffered >= c->cfg.engine.async_buffer) pthread_cond_signal(&c->stop_cv);
  }
  if (v == FC_UP_OK) {
    audit_update(c, up, "accepted", NULL, up->masked ? -1 : l2); /* before it counts */
    atomic_fetch_add(&c->metrics.uploads_accepted, 1);
    /* --async-calibrate: the update's difference from its client's cached one is folded (coord_calib.c) */
    coord_calib_apply_locked(c, up->client, (uint64_t)weight, (float *)up->u->buf);
    if (c->agg->ops->update_commit(c->agg, up->u, fold) != FEDC_OK) /* the slot went back either way */
      FC_ERROR(MOD, "round %llu: update of %s counted but not folded (past the sum's bound: a bug, its checks "
               "passed)", (unsigned long long)up->round, up->client);
    if (up->unclipped && !up->masked) c->dp_unclipped++;
    up->committed = 1; /* its OK is on the way: a closing round must not cancel it */
    if (up->masked) coord_sa_masked_done(c, up->client);
    coord_anomaly_commit_locked(c, up->client, meas);
    meas = NULL;
  }
  pthread_mutex_unlock(&c->mu);
  free(meas);
  if (v == -1) { /* the log could not take it: the engine still holds it as in progress */
    up->coord_fault = 1;
    upload_refuse_retry(up, call, GRPC_STATUS_UNAVAILABLE, why, 1000);
    return;
  }
  up->begun = 0; /* the engine has settled this upload either way */
  if (v != FC_UP_OK) {
    snprintf(why, sizeof why, "update refused: %s", v == FC_UP_STALE ? refusal : fc_upload_verdict_text(v));
    if (v == FC_UP_BUFFER_FULL) /* async: it streamed past its place while a version was published */
      upload_refuse_retry(up, call, verdict_status(v), why, retry);
    else
      upload_refuse(up, call, verdict_status(v), why);
    return;
  }
  up->u = NULL; /* committed: the slot went back with it */
  if (up->masked)
    FC_INFO(MOD, "round %llu: masked input from %s accepted (loss %.4f)", (unsigned long long)up->round, up->client,
            up->loss);
  else
    FC_INFO(MOD, "round %llu: update from %s accepted (%llu examples, norm %.4g, loss %.4f)",
            (unsigned long long)up->round, up->client, (unsigned long long)up->examples, l2, up->loss);
  Fedc__V1__UploadResponse resp = FEDC__V1__UPLOAD_RESPONSE__INIT;
  resp.accepted = 1;
  resp.detail = "accepted";
  fc_scall_finish(call, GRPC_STATUS_OK, NULL, &resp.base);
}

void coord_h_upload(fc_scall *call, void *ctx) {
  fc_coord *c = ctx;
  const fc_peer *peer = fc_scall_peer(call);
  const Fedc__V1__UploadMsg *first = (const Fedc__V1__UploadMsg *)fc_scall_request(call);
  if (coord_audit_peer(c, call, peer)) return;
  if (c->tier) { /* coord_aggtier.c: updates come through the aggregators, summed */
    fc_scall_finish(call, GRPC_STATUS_FAILED_PRECONDITION,
                    "this federation takes updates through aggregators: upload to the one your task names", NULL);
    return;
  }
  char why[400] = "";
  upload *up = calloc(1, sizeof *up);
  if (!up) {
    fc_scall_finish(call, GRPC_STATUS_RESOURCE_EXHAUSTED, "out of memory", NULL);
    return;
  }
  up->c = c;
  up->staleness = -1;
  up->norm_received = -1;
  up->m = coord_model_get(c);
  snprintf(up->client, sizeof up->client, "%s", peer->name);
  if (!first->meta || !first->header) {
    upload_refuse(up, call, GRPC_STATUS_INVALID_ARGUMENT, "first upload message must carry meta and header");
    upload_done(up);
    return;
  }
  up->round = first->meta->round;
  up->meta = *first->meta;
  up->examples = first->meta->num_examples;
  up->loss = first->meta->train_loss;
  up->unclipped = first->meta->unclipped;
  fc_engine_status es;
  fc_model_spec masked_spec;
  char sa_why[300] = "";
  int sa_err = FEDC_OK;
  up->masked = first->meta->masked;
  pthread_mutex_lock(&c->mu);
  char log_why[300] = "";
  int v = !up->masked && coord_async_log_ready(c, log_why, sizeof log_why) != FEDC_OK
              ? -2 /* the async buffer log cannot keep it: refused before its bytes come */
              : fc_engine_upload_begin(c->engine, peer->name, up->round, first->meta->model_version, fc_now_ms());
  double clip_now = c->clip;
  uint32_t retry = v == FC_UP_RATE_LIMITED || v == FC_UP_BUFFER_FULL ? fc_engine_retry_ms(c->engine) : 0;
  fc_engine_get_status(c->engine, fc_now_ms(), &es);
  uint64_t task_deadline = c->cfg.engine.async && v == FC_UP_OK ? fc_engine_task_deadline(c->engine, peer->name) : 0;
  char stale_why[200] = "";
  if (v == FC_UP_STALE) snprintf(stale_why, sizeof stale_why, "%s", fc_engine_refusal_detail(c->engine));
  if (v == FC_UP_OK && c->cfg.engine.secagg) {
    sa_err = up->masked ? coord_sa_masked_begin(c, peer->name, &masked_spec, &up->bucket, sa_why, sizeof sa_why)
                        : FEDC_ERR_REJECTED;
    if (!up->masked) snprintf(sa_why, sizeof sa_why, "this federation runs secure aggregation: send a masked input");
    if (sa_err != FEDC_OK) {
      fc_engine_upload_abort(c->engine, peer->name, up->round, fc_now_ms(), 0);
      v = -1;
    }
  } else if (v == FC_UP_OK && up->masked) {
    sa_err = FEDC_ERR_REJECTED;
    snprintf(sa_why, sizeof sa_why, "this federation does not run secure aggregation: masked input refused");
    fc_engine_upload_abort(c->engine, peer->name, up->round, fc_now_ms(), 0);
    v = -1;
  }
  if (v == FC_UP_OK) {
    /* Listed under `mu`, with the engine's begin: a round closing right
     * after cannot miss it in coord_cancel_uploads. */
    up->call = call;
    pthread_mutex_lock(&c->up_mu);
    up->next = c->uploads;
    c->uploads = up;
    up->listed = 1;
    atomic_fetch_add(&c->metrics.uploads_in_flight, 1);
    pthread_mutex_unlock(&c->up_mu);
  }
  pthread_mutex_unlock(&c->mu);
  /* Past the round's deadline the update can never be committed: stop
   * receiving it then, or a trickling upload would hold a staging slot into
   * later rounds and lock out their uploads. */
  up->round_deadline = es.round_started_ms > UINT64_MAX - c->cfg.engine.round_ms
                           ? UINT64_MAX
                           : es.round_started_ms + c->cfg.engine.round_ms;
  /* A masked input belongs to a later stage with its own deadline: the
   * engine's commit checks it and closing the stage cancels the upload. */
  if (up->masked) up->round_deadline = UINT64_MAX;
  if (task_deadline) up->round_deadline = task_deadline; /* async: each task has its own */
  grpc_status_code code = GRPC_STATUS_OK;
  if (v == -2) {
    code = GRPC_STATUS_UNAVAILABLE;
    snprintf(why, sizeof why, "%s", log_why);
    retry = 30000;
  } else if (v == -1) {
    code = GRPC_STATUS_FAILED_PRECONDITION;
    snprintf(why, sizeof why, "%s", sa_why);
  } else if (v != FC_UP_OK) {
    code = verdict_status(v);
    snprintf(why, sizeof why, "update refused: %s (round %llu)", stale_why[0] ? stale_why : fc_upload_verdict_text(v),
             (unsigned long long)up->round);
  } else {
    up->begun = 1;
    int err;
    const fc_model_spec *want = up->masked ? &masked_spec : &up->m->spec;
    uint64_t want_bytes = up->masked ? fc_model_bytes(&masked_spec) : up->m->bytes;
    if (fc_upload_meta_check(up->examples, up->loss, up->masked, why, sizeof why) != FEDC_OK) {
      code = GRPC_STATUS_INVALID_ARGUMENT;
    } else if ((err = coord_codec_begin(c, first->meta, up->masked, fc_model_numel(&up->m->spec), clip_now, &want,
                                        &want_bytes, &up->codec, why, sizeof why)) != FEDC_OK) {
      code = err_status(err);
    } else if ((code = coord_upload_open(c, &(coord_upload_args){up->client, up->round, first, want, want_bytes,
                                                                   up->bucket},
                                         &up->rx, &up->u, &up->codec, &up->resumed_from, &retry, why,
                                         sizeof why))) {
      /* refused: a bad header, busy (no staging slot), or a resume that does not fit (coord_resume.c) */
    } else if (up->masked && fc_agg_secagg_route(c->agg, up->u, up->bucket) != FEDC_OK) {
      code = GRPC_STATUS_INTERNAL;
      snprintf(why, sizeof why, "secure aggregation bucket %u has no sum", up->bucket + 1);
    }
  }
  if (code != GRPC_STATUS_OK) {
    upload_refuse_retry(up, call, code, why, retry);
    upload_done(up);
    return;
  }
  up->started_ms = fc_now_ms();
  fc_rate_guard_start(&up->rate, up->started_ms);
  up->streamed = 1;
  pipe_start(up);
  fc_scall_stream_in(call, upload_chunk, upload_end, upload_done, up);
}

/* The round closed: uploads still streaming can never be committed. Cancel
 * them now, so their staging slots are free for the next round's uploads
 * (rather than when their next chunk arrives, which a trickling peer can put
 * off for stream_idle_ms). Uploads already committed are sending their OK:
 * left alone (cancelling one told a client whose update counted that it did
 * not). Called with c->mu held, which orders it with the commit. */
void coord_cancel_uploads(fc_coord *c, uint64_t round) {
  pthread_mutex_lock(&c->up_mu);
  for (upload *up = c->uploads; up; up = up->next)
    if (up->round == round && !up->committed)
      fc_scall_cancel(up->call, GRPC_STATUS_DEADLINE_EXCEEDED, "the round closed during the upload");
  pthread_mutex_unlock(&c->up_mu);
  coord_resume_round_closed(c, round);
}

/* Async: `client` left while its update was streaming (coord_leave.c): the
 * engine freed its slot, so the stream can never count (its task is gone;
 * upload_end would be refused anyway). Cancel it now rather than let it
 * hold a staging slot. Called with c->mu held. */
void coord_cancel_client_uploads(fc_coord *c, const char *client) {
  pthread_mutex_lock(&c->up_mu);
  for (upload *up = c->uploads; up; up = up->next)
    if (!up->committed && !strcmp(up->client, client))
      fc_scall_cancel(up->call, GRPC_STATUS_FAILED_PRECONDITION, "the client left during the upload");
  pthread_mutex_unlock(&c->up_mu);
}

/* 1 if `client` has an UploadUpdate stream open for `round` (UploadOffset below). */
static int upload_streaming(fc_coord *c, const char *client, uint64_t round) {
  int open = 0;
  pthread_mutex_lock(&c->up_mu);
  for (upload *up = c->uploads; up && !open; up = up->next) open = up->round == round && !strcmp(up->client, client);
  pthread_mutex_unlock(&c->up_mu);
  return open;
}

/* UploadOffset: the cut stream may still look open here (no FIN reached us;
 * it ends at stream_idle_ms): its prefix is kept only then, so come back;
 * else coord_resume.c says where to resume. */
void coord_h_upload_offset(fc_scall *call, void *ctx) {
  fc_coord *c = ctx;
  const Fedc__V1__UploadOffsetRequest *req = (const Fedc__V1__UploadOffsetRequest *)fc_scall_request(call);
  if (req->sha256.len == FC_SHA256_LEN && upload_streaming(c, fc_scall_peer(call)->name, req->round)) {
    fc_scall_finish_retry(call, GRPC_STATUS_UNAVAILABLE,
                          "your previous upload stream is still open at the coordinator, retry", 1000);
    return;
  }
  coord_resume_offset(call, ctx);
}
