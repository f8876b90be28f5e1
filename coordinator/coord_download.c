/*
 * coord_download.c - model downloads: FetchModel (clients, event-driven, one
 * piece per completed send) and GetModel (admins, on their own pool, may
 * read an old version from disk and check it against its signed manifest).
 *
 * Owns: the list of downloads in progress (c->dl_list, c->downloads, under
 * dl_mu): one per identity, at most download_slots for callers outside the
 * cohort.
 * May call: coord_state.c (snapshots), coord_eval.c (an evaluation's
 * superseded model), model_sign.c (manifests), store.h, tensor_stream.h,
 * engine.h (bytes out, cohort membership).
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
#include "common/log.h"
#include "coordinator/aggregate.h"
#include "coordinator/anomaly.h"
#include "coordinator/audit.h"
#include "coordinator/coord_codec.h"
#include "coordinator/coord_int.h"
#include "coordinator/dp_clip.h"
#include "coordinator/refusals.h"
#include "coordinator/store.h"
#include "coordinator/store_prune.h"
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

/* ---- model downloads (FetchModel, GetModel) ----------------------------------------
 * A download holds a reference to the snapshot it streams and, on the wire,
 * one message at a time: a reader that stops costs memory for one chunk, not a
 * thread, and is cancelled after stream_idle_ms without reading. Limits: one
 * download per identity; at most download_slots at once for callers outside
 * the current cohort, so clients not selected (or an attacker's many
 * identities) can never keep the cohort from fetching the model it must
 * train on: cohort members are not counted against the slots. */
typedef struct download {
  fc_coord *c;
  model_ref *m;
  fc_pb_header *hdr;
  uint64_t next_piece, pieces, skip; /* skip: chunks a resumed download leaves out (coord_resume.c) */
  uint64_t started_ms;
  fc_rate_guard rate;
  int counted; /* holds one of the download_slots */
  int eval;    /* the model a federated evaluation evaluates (not the training round's bytes) */
  char who[80];
  struct download *next;
} download;

static void download_end(download *d) {
  if (!d) return;
  fc_coord *c = d->c;
  pthread_mutex_lock(&c->dl_mu);
  for (download **pp = &c->dl_list; *pp; pp = &(*pp)->next)
    if (*pp == d) {
      *pp = d->next;
      break;
    }
  if (d->counted) c->downloads--;
  pthread_mutex_unlock(&c->dl_mu);
  coord_model_unref(d->m);
  free(d->hdr);
  free(d);
}

/* Start a download for the caller, or finish the call with the refusal and
 * return NULL. May read an old version from disk (allow_old: admins only, on
 * their own pool). averaged: the model average of that version instead
 * (coord_avg_get; admins). */
static download *download_begin(fc_coord *c, fc_scall *call, uint64_t version, int latest, int allow_old,
                                int averaged) {
  const fc_peer *peer = fc_scall_peer(call);
  download *d = calloc(1, sizeof *d);
  if (!d) {
    fc_scall_finish(call, GRPC_STATUS_RESOURCE_EXHAUSTED, "out of memory", NULL);
    return NULL;
  }
  d->c = c;
  snprintf(d->who, sizeof d->who, "%s/%s", fc_role_name(peer->role), peer->name);
  /* Exempt from download_slots: the cohort (it must train) and admins (so
   * clients outside the cohort cannot lock them out of GetModel). */
  int in_cohort = peer->role == FC_ROLE_ADMIN;
  if (peer->role == FC_ROLE_CLIENT) {
    pthread_mutex_lock(&c->mu);
    in_cohort = fc_engine_in_round(c->engine, peer->name) || fc_engine_eval_member(c->engine, peer->name);
    pthread_mutex_unlock(&c->mu);
  }
  const char *refusal = NULL;
  pthread_mutex_lock(&c->dl_mu);
  int dup = 0;
  for (download *x = c->dl_list; x && !dup; x = x->next) dup = strcmp(x->who, d->who) == 0;
  if (c->closing) refusal = "coordinator shutting down, retry";
  else if (dup)
    refusal = "a model download for this identity is already in progress, retry";
  else if (!in_cohort && c->downloads >= c->cfg.download_slots)
    refusal = "coordinator busy: all model download slots taken, retry";
  if (!refusal) {
    d->counted = !in_cohort;
    c->downloads += d->counted;
    d->next = c->dl_list;
    c->dl_list = d;
  }
  pthread_mutex_unlock(&c->dl_mu);
  if (refusal) {
    free(d);
    /* dup: most often the caller's own cut stream, not yet seen to end (no
     * FIN reached us): a resuming client waits as told, keeping its bytes. */
    fc_scall_finish_retry(call, GRPC_STATUS_UNAVAILABLE, refusal, dup ? 1000 : 0);
    return NULL;
  }
  model_ref *m;
  if (averaged) {
    char why[300];
    int code = GRPC_STATUS_OK;
    if (!(m = coord_avg_get(c, version, latest, &code, why, sizeof why))) {
      download_end(d);
      fc_scall_finish(call, (grpc_status_code)code, why, NULL);
      return NULL;
    }
    goto stream;
  }
  m = coord_model_get(c);
  model_ref *em = !latest && version != m->version && peer->role == FC_ROLE_CLIENT
                      ? coord_eval_model(c, peer->name, version)
                      : NULL;
  if (em) { /* an evaluation's model, superseded since it began */
    coord_model_unref(m);
    m = em;
    d->eval = 1;
  }
  if (!latest && version != m->version) {
    char why[200];
    grpc_status_code code = GRPC_STATUS_NOT_FOUND;
    fc_model_spec spec;
    float *data = NULL;
    uint8_t sha[FC_SHA256_LEN];
    char err[300];
    if (!allow_old) {
      code = GRPC_STATUS_FAILED_PRECONDITION;
      snprintf(why, sizeof why, "model version %llu is not the current one (%llu)", (unsigned long long)version,
               (unsigned long long)m->version);
    } else if (version > m->version || fc_store_read_model(c->cfg.state_dir, coord_model_key(c), version, &spec,
                                                           &data, sha, NULL, err, sizeof err) != FEDC_OK) {
      snprintf(why, sizeof why, "no model version %llu (latest is %llu)", (unsigned long long)version,
               (unsigned long long)m->version);
    } else {
      code = GRPC_STATUS_OK;
    }
    coord_model_unref(m);
    m = code == GRPC_STATUS_OK ? coord_model_new(version, &spec, data) : NULL;
    if (code == GRPC_STATUS_OK && !m) {
      free(data);
      code = GRPC_STATUS_RESOURCE_EXHAUSTED;
      snprintf(why, sizeof why, "out of memory");
    } else if (m && coord_manifest_load(c, m, NULL, 0, err, sizeof err) != FEDC_OK) {
      FC_WARN(MOD, "GetModel v%llu: %s", (unsigned long long)version, err);
      coord_model_unref(m);
      m = NULL;
      code = GRPC_STATUS_DATA_LOSS;
      snprintf(why, sizeof why, "model version %llu does not match its signed manifest", (unsigned long long)version);
    }
    if (code != GRPC_STATUS_OK) {
      download_end(d);
      fc_scall_finish(call, code, why, NULL);
      return NULL;
    }
  }
stream:
  d->m = m;
  d->pieces = fc_tensor_stream_pieces(m->bytes, c->cfg.chunk_bytes);
  if (!(d->hdr = malloc(sizeof *d->hdr))) {
    download_end(d);
    fc_scall_finish(call, GRPC_STATUS_RESOURCE_EXHAUSTED, "out of memory", NULL);
    return NULL;
  }
  fc_pb_header_build(d->hdr, &m->spec, m->bytes, m->sha, c->cfg.chunk_bytes);
  d->started_ms = fc_now_ms();
  fc_rate_guard_start(&d->rate, d->started_ms);
  return d;
}

typedef struct emit_ctx {
  fc_scall *call;
  int async;
  const fc_signed *man; /* sent with the header; NULL fields: unsigned */
} emit_ctx;

static int emit_stream_msg(void *ctx, const Fedc__V1__TensorHeader *h, const Fedc__V1__TensorChunk *ch) {
  emit_ctx *e = ctx;
  Fedc__V1__TensorStreamMsg m = FEDC__V1__TENSOR_STREAM_MSG__INIT;
  Fedc__V1__SignedManifest sm = FEDC__V1__SIGNED_MANIFEST__INIT;
  m.header = (Fedc__V1__TensorHeader *)h;
  m.chunk = (Fedc__V1__TensorChunk *)ch;
  if (h && e->man && e->man->msg) {
    sm.manifest.data = e->man->msg;
    sm.manifest.len = e->man->msg_len;
    sm.signature.data = e->man->sig;
    sm.signature.len = e->man->sig_len;
    sm.signer_certificate = e->man->cert;
    m.manifest = &sm;
  }
  int rc = e->async ? fc_scall_send_async(e->call, &m.base) : fc_scall_send(e->call, &m.base);
  return rc == 0 ? FEDC_OK : FEDC_ERR_UNAVAILABLE;
}

/* The whole stream sent: count its bytes into the round, finish OK. */
static void download_done_ok(download *d, fc_scall *call) {
  pthread_mutex_lock(&d->c->mu);
  if (!d->eval) fc_engine_add_bytes_out(d->c->engine, fc_scall_bytes_out(call));
  pthread_mutex_unlock(&d->c->mu);
  fc_scall_finish(call, GRPC_STATUS_OK, NULL, NULL);
}

/* FetchModel, event-driven: one piece each time the previous send completed. */
static void fetch_next(fc_scall *call, void *state) {
  download *d = state;
  if (d->next_piece == 1) d->next_piece += d->skip; /* after the header */
  if (d->next_piece == d->pieces) {
    download_done_ok(d, call);
    return;
  }
  if (coord_too_slow(d->c, &d->rate, fc_scall_bytes_out(call))) {
    char why[200];
    snprintf(why, sizeof why, "download too slow: %llu bytes read in %.1f s (at least %llu B/s after %.1f s)",
             (unsigned long long)fc_scall_bytes_out(call), (fc_now_ms() - d->started_ms) / 1000.0,
             (unsigned long long)d->c->cfg.min_transfer_bps, d->c->cfg.stream_idle_ms / 1000.0);
    FC_WARN(MOD, "%s: %s", d->who, why);
    fc_scall_finish(call, GRPC_STATUS_DEADLINE_EXCEEDED, why, NULL);
    return;
  }
  emit_ctx e = {call, 1, &d->m->man};
  fc_tensor_stream_piece(d->hdr, d->m->data, d->m->bytes, d->c->cfg.chunk_bytes, d->next_piece++, emit_stream_msg,
                         &e);
}

static void fetch_done(void *state) { download_end(state); }

void coord_h_fetch_model(fc_scall *call, void *ctx) {
  const Fedc__V1__FetchModelRequest *req = (const Fedc__V1__FetchModelRequest *)fc_scall_request(call);
  if (coord_audit_peer(ctx, call, fc_scall_peer(call))) return;
  download *d = download_begin(ctx, call, req->version, req->latest, 0, 0);
  if (d && coord_fetch_resume(ctx, call, req, d->hdr, &d->skip) == FEDC_OK)
    fc_scall_stream_out(call, fetch_next, fetch_done, d);
  else download_end(d); /* refused: the call is finished */
}

/* GetModel (admins, on their own pool): may read an old version from disk. */
void coord_h_get_model(fc_scall *call, void *ctx) {
  const Fedc__V1__GetModelRequest *req = (const Fedc__V1__GetModelRequest *)fc_scall_request(call);
  coord_audit_peer(ctx, call, fc_scall_peer(call));
  download *d = download_begin(ctx, call, req->version, req->latest, 1, req->averaged);
  if (!d) return;
  emit_ctx e = {call, 0, &d->m->man};
  int rc = FEDC_OK;
  for (uint64_t i = 0; i < d->pieces && rc == FEDC_OK; i++)
    rc = fc_tensor_stream_piece(d->hdr, d->m->data, d->m->bytes, d->c->cfg.chunk_bytes, i, emit_stream_msg, &e);
  if (rc == FEDC_OK) download_done_ok(d, call);
  /* else the call is gone and already finished (fc_scall_send failed) */
  download_end(d);
}
