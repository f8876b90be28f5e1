/*
 * runtime_transfer.c - the client runtime's calls that move bytes: the model
 * download (into the cached model's buffer, checked against the task's
 * SHA-256 and the signed manifest) and the update upload (with its retries
 * while the round is open), and the small waits they share.
 *
 * Owns: nothing beyond the call in progress; the cached model (c->weights,
 * c->spec, c->have_model) is written only by rt_fetch_model.
 * May call: transport.h, tensor_stream.h, manifest.h, runtime_wait.c; not
 * runtime.c, runtime_secagg.c or runtime_eval.c (they call this file).
 */
#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common/blas.h"
#include "common/chunk.h"
#include "common/clock.h"
#include "common/fileutil.h"
#include "common/log.h"
#include "common/manifest.h"
#include "common/quant.h"
#include "common/rng.h"
#include "crypto/cert_cache.h"
#include "crypto/sa_crypto.h" /* fc_wipe */
#include "crypto/update_sig.h"
#include "fedc/client.h"
#include "fedc/v1/fedc.pb-c.h"
#include "transport/tensor_stream.h"
#include "transport/transport.h"
#include "client/pipeline.h"
#include "client/runtime_int.h"

#define MOD "client"

int rt_fetch_model(fedc_client *c, const Fedc__V1__Task *t, fc_status *st) {
  int rc;
  fc_model_spec spec;
  uint64_t total = 0;
  uint8_t sha[FC_SHA256_LEN];
  fc_signed man;
  memset(&man, 0, sizeof man);
  const uint8_t *want = t->model_sha256.len == FC_SHA256_LEN ? t->model_sha256.data : NULL;
  /* Into the cached model's own buffer: a fresh one would fault in a page
   * per 4 KiB on first touch (about 2 ms per MiB on our VMs, as long as the
   * transfer). The old model is gone from here on, so two models are never
   * held at once (docs/operations.md, "Footprint"; only a larger model grows
   * the buffer); on any failure the next round fetches again. */
  c->have_model = 0;
  uint8_t *buf = (uint8_t *)c->weights;
  uint64_t cap = c->weights_cap;
  if (!want) {
    rc = FEDC_ERR_PROTOCOL;
    snprintf(st->detail, sizeof st->detail, "task carries no model SHA-256");
  } else {
    rc = rt_fetch_resumable(c, t, want, &spec, &buf, &cap, &total, sha, &man, st); /* runtime_resume.c */
  }
  c->weights = (float *)buf;
  c->weights_cap = cap;
  /* Refused with a time to come back (a call-rate limit, busy): pacing,
   * not a lost round; the caller backs off as told and asks again. */
  if (rc != FEDC_OK && st->retry_after_ms) rc = FEDC_ERR_UNAVAILABLE;
  if (rc != FEDC_OK) return rc;
  /* Checked before anything trains on it (client.h, allow_unsigned_models). */
  rc = fc_manifest_accept(&c->trust, &man, t->model_version, sha, &spec, total, st->detail, sizeof st->detail);
  fc_signed_free(&man);
  if (rc != FEDC_OK) return rc;
  c->spec = spec;
  c->model_bytes = total;
  c->cached_version = t->model_version;
  memcpy(c->cached_sha, sha, FC_SHA256_LEN);
  c->have_model = 1;
  return FEDC_OK;
}

rt_payload *rt_payload_own(void *buf) {
  rt_payload *p = malloc(sizeof *p);
  if (!p) return NULL;
  atomic_init(&p->refs, 1);
  p->buf = buf;
  return p;
}

void rt_payload_release(void *p) {
  rt_payload *r = p;
  if (!r || atomic_fetch_sub(&r->refs, 1) != 1) return;
  free(r->buf);
  free(r);
}

typedef struct upload_ctx {
  fc_ccall *call;
  fc_status *st;
  const Fedc__V1__UpdateMeta *meta;
  rt_payload *owner;
} upload_ctx;

static int emit_upload(void *ctx, const Fedc__V1__TensorHeader *h, const Fedc__V1__TensorChunk *ch) {
  upload_ctx *u = ctx;
  if (!h && u->owner) {
    /* The chunk by reference (UploadMsg.chunk = 3): no packed copy of it
     * beside the update (docs/results.md, "Client footprint"). */
    atomic_fetch_add(&u->owner->refs, 1);
    return fc_ccall_send_bytes(u->call, fc_chunk_msg_ref(3, ch->offset, ch->data.data, ch->data.len,
                                                         rt_payload_release, u->owner), u->st);
  }
  Fedc__V1__UploadMsg m = FEDC__V1__UPLOAD_MSG__INIT;
  if (h) {
    m.meta = (Fedc__V1__UpdateMeta *)u->meta;
    m.header = (Fedc__V1__TensorHeader *)h;
  }
  m.chunk = (Fedc__V1__TensorChunk *)ch;
  return fc_ccall_send(u->call, &m.base, u->st);
}

/* Where the update goes: the coordinator, or (1.14) the aggregator the task
 * names, over a channel that accepts only a server certificate with exactly
 * the identity the task gives (any other certificate of the federation, e.g.
 * another aggregator's or a client's, is refused in the handshake). No
 * fallback to the coordinator: it refuses direct uploads under a tier, and
 * a failure is retried as any upload failure is. */
static int upload_channel(fedc_client *c, const Fedc__V1__Task *t, fc_channel **out, fc_status *st) {
  *out = c->ch;
  if (!t->aggregator_address || !t->aggregator_address[0]) return FEDC_OK;
  int rc = FEDC_OK;
  pthread_mutex_lock(&c->mu);
  if (!t->aggregator_identity || !t->aggregator_identity[0] ||
      strlen(t->aggregator_address) >= sizeof c->agg_target ||
      strlen(t->aggregator_identity) >= sizeof c->agg_identity) {
    snprintf(st->detail, sizeof st->detail, "the task names aggregator %.200s without a usable identity",
             t->aggregator_address);
    st->err = rc = FEDC_ERR_PROTOCOL;
    st->code = GRPC_STATUS_FAILED_PRECONDITION;
  } else if (atomic_load(&c->stop)) {
    st->err = rc = FEDC_ERR_STOPPED;
    st->code = GRPC_STATUS_CANCELLED;
  } else if (!c->agg_ch || strcmp(c->agg_target, t->aggregator_address) != 0 ||
             strcmp(c->agg_identity, t->aggregator_identity) != 0) {
    fc_channel_opts co;
    fc_channel_opts_init(&co);
    co.target = t->aggregator_address;
    co.insecure_for_testing = c->o.insecure_for_testing;
    co.insecure_identity = c->insecure_id[0] ? c->insecure_id : NULL;
    co.tls.ca = c->ca[0] ? c->ca : NULL;
    co.tls.cert = c->cert[0] ? c->cert : NULL;
    co.tls.key = c->key[0] ? c->key : NULL;
    co.expect_peer = t->aggregator_identity;
    fc_channel *ch = NULL;
    char err[400];
    rc = fc_channel_create(&co, &ch, err, sizeof err);
    if (rc == FEDC_OK) {
      fc_channel_destroy(c->agg_ch);
      c->agg_ch = ch;
      snprintf(c->agg_target, sizeof c->agg_target, "%s", t->aggregator_address);
      snprintf(c->agg_identity, sizeof c->agg_identity, "%s", t->aggregator_identity);
      FC_INFO(MOD, "uploads go to aggregator %s at %s", c->agg_identity, c->agg_target);
    } else {
      snprintf(st->detail, sizeof st->detail, "aggregator %.200s: %.280s", t->aggregator_address, err);
      st->err = rc;
      st->code = GRPC_STATUS_FAILED_PRECONDITION;
    }
  }
  if (rc == FEDC_OK) *out = c->agg_ch;
  pthread_mutex_unlock(&c->mu);
  return rc;
}

/* Uploading to an aggregator (1.17): sign what the leader will act on
 * (crypto/update_sig.h) with our certificate's key, so a relaying aggregator
 * cannot put other bytes or another weight under our name. Sets
 * meta->signature and meta->certificate (*cert_pem, malloc'ed); a failure is
 * logged and the update goes unsigned (the aggregator then says why it
 * refuses it, if it needs the signature). */
static void sign_update(fedc_client *c, Fedc__V1__UpdateMeta *meta, const uint8_t sha[FC_SHA256_LEN],
                        const uint8_t model_sha[FC_SHA256_LEN], uint8_t sig[FC_UPDATE_SIG_MAX], char **cert_pem) {
  char *key = NULL;
  size_t klen = 0, clen = 0, siglen = FC_UPDATE_SIG_MAX;
  int rc = fc_read_file(c->cert, 1u << 20, cert_pem, &clen);
  if (rc == FEDC_OK) rc = fc_read_file(c->key, 1u << 20, &key, &klen);
  fc_update_claim cl = {NULL, NULL, meta->round, meta->model_version, meta->num_examples, meta->train_loss,
                        meta->unclipped, sha, model_sha}; /* federation and name: our certificate's */
  if (rc == FEDC_OK) rc = fc_update_sign_pem(*cert_pem, clen, key, klen, cl, sig, &siglen);
  if (key) fc_wipe(key, klen);
  free(key);
  if (rc != FEDC_OK) {
    FC_WARN(MOD, "cannot sign the update (%s): it goes unsigned", fedc_strerror(rc));
    free(*cert_pem);
    *cert_pem = NULL;
    return;
  }
  meta->signature.data = sig;
  meta->signature.len = siglen;
  meta->certificate = *cert_pem;
}

int rt_upload(fedc_client *c, const Fedc__V1__Task *t, const void *payload, rt_payload *owner,
              const fc_model_spec *spec, uint64_t bytes, const uint8_t sha[FC_SHA256_LEN], uint64_t start_offset,
              int masked, uint64_t examples, double loss, double norm, uint64_t *bytes_out, fc_status *st) {
  Fedc__V1__UpdateMeta meta = FEDC__V1__UPDATE_META__INIT;
  meta.round = t->round;
  meta.model_version = t->model_version;
  meta.num_examples = examples;
  meta.train_loss = (float)loss;
  meta.update_norm = (float)norm;
  meta.masked = masked;
  meta.unclipped = c->unclipped;
  if (!masked && fc_q_supported(t->upload_bits, t->upload_block)) {
    meta.upload_bits = t->upload_bits; /* 1.9: the payload is the task's encoding (common/quant.h) */
    meta.upload_block = t->upload_block;
  }
  if (masked) {
    /* The coordinator must learn nothing of one client beyond the sum: no
     * norm, no clipping bit (it rides masked), and under distributed DP no
     * loss either. */
    meta.update_norm = 0;
    meta.unclipped = 0;
    if (t->secagg && t->secagg->dp_sigma > 0) meta.train_loss = 0;
  }
  uint8_t sig[FC_UPDATE_SIG_MAX];
  char *cert_pem = NULL;
  if (!masked && t->aggregator_address && t->aggregator_address[0] && c->cert[0] && c->key[0] &&
      t->model_sha256.len == FC_SHA256_LEN)
    sign_update(c, &meta, sha, t->model_sha256.data, sig, &cert_pem);
  fc_ccall *call = NULL;
  fc_channel *ch = NULL;
  int rc = upload_channel(c, t, &ch, st);
  if (rc != FEDC_OK) {
    free(cert_pem);
    return rc;
  }
  rc = fc_ccall_start(ch, "/fedc.v1.Coordinator/UploadUpdate", FC_RPC_CLIENT_STREAM, NULL, c->o.call_timeout_ms,
                      &call, st);
  if (rc != FEDC_OK) {
    free(cert_pem);
    return rc;
  }
  upload_ctx u = {call, st, &meta, owner};
  /* The header, then the chunks from start_offset (a resumed stream: the
   * coordinator kept those before it, runtime_resume.c). */
  fc_pb_header *h = malloc(sizeof *h);
  if (!h) rc = FEDC_ERR_NOMEM;
  else fc_pb_header_build(h, spec, bytes, sha, c->o.chunk_bytes);
  if (h) h->h.start_offset = start_offset;
  uint64_t n = fc_tensor_stream_pieces(bytes, c->o.chunk_bytes);
  for (uint64_t i = 0; i < n && rc == FEDC_OK; i = i ? i + 1 : 1 + start_offset / c->o.chunk_bytes)
    rc = fc_tensor_stream_piece(h, payload, bytes, c->o.chunk_bytes, i, emit_upload, &u);
  free(h);
  ProtobufCMessage *resp = NULL;
  if (rc == FEDC_OK) rc = fc_ccall_close_and_recv(call, &fedc__v1__upload_response__descriptor, &resp, st);
  *bytes_out = fc_ccall_bytes_out(call);
  if (resp) protobuf_c_message_free_unpacked(resp, NULL);
  fc_ccall_destroy(call);
  free(cert_pem);
  return rc;
}

/* Upload, retrying a broken stream until `deadline` (unix ms). ABORTED means
 * the coordinator still holds our previous, broken stream ("upload already in
 * progress") until it notices it is dead: worth waiting for too. */
int rt_upload_retrying(fedc_client *c, const Fedc__V1__Task *t, const void *payload, rt_payload *owner,
                       const fc_model_spec *spec, uint64_t bytes, int masked, uint64_t examples, double loss,
                       double norm, uint64_t deadline, uint64_t *bytes_out, fc_status *st) {
  int rc;
  uint8_t sha[FC_SHA256_LEN];
  if ((rc = fc_sha256(payload, bytes, sha)) != FEDC_OK) return rc;
  uint64_t from = 0, sent = 0;
  for (int attempt = 0;;) {
    rc = rt_upload(c, t, payload, owner, spec, bytes, sha, from, masked, examples, loss, norm, bytes_out, st);
    sent += *bytes_out;
    if (from && rc != FEDC_OK && !atomic_load(&c->stop) &&
        (st->code == GRPC_STATUS_FAILED_PRECONDITION || st->code == GRPC_STATUS_OUT_OF_RANGE ||
         st->code == GRPC_STATUS_INVALID_ARGUMENT) && ++attempt <= 8) {
      FC_WARN(MOD, "upload resume at byte %llu refused (%s): sending the update whole", (unsigned long long)from,
              st->detail);
      from = 0;
      continue;
    }
    /* RESOURCE_EXHAUSTED or UNAVAILABLE with a retry time: the coordinator is
     * rate-limiting us or busy and says when to come back. That is pacing,
     * not failure: it does not count against the attempts (the deadline
     * bounds it). */
    int told_when = (st->code == GRPC_STATUS_RESOURCE_EXHAUSTED || st->code == GRPC_STATUS_UNAVAILABLE) &&
                    st->retry_after_ms > 0;
    int retry = rt_is_transient(rc) || st->code == GRPC_STATUS_ABORTED || told_when;
    if (rc == FEDC_OK || !retry || atomic_load(&c->stop)) break;
    if (!told_when && ++attempt > 8) break;
    uint64_t now = fc_now_ms();
    if (now >= deadline) break;
    /* Jittered, so clients refused together do not come back together. */
    uint64_t wait;
    if (told_when) {
      wait = rt_told_wait(c, st->retry_after_ms);
    } else {
      uint64_t cap = (uint64_t)c->o.min_backoff_ms << (attempt < 5 ? attempt : 5);
      if (cap > 10000) cap = 10000;
      wait = cap / 2 + fc_rng_below(&c->jitter, cap / 2 + 1);
    }
    if (wait > deadline - now) wait = deadline - now;
    if (rt_nap(c, (uint32_t)wait)) break;
    /* A stream cut by the network: the coordinator may have kept what
     * arrived (runtime_resume.c); go on from there. */
    from = 0;
    /* (Not through an aggregator: it keeps no cut prefix in this slice.) */
    int via_agg = t->aggregator_address && t->aggregator_address[0];
    if (!told_when && !via_agg && rt_upload_offset(c, t, sha, bytes, deadline, &from) == FEDC_OK && from)
      FC_INFO(MOD, "upload resumes at byte %llu of %llu (chunk %llu of %llu)", (unsigned long long)from,
              (unsigned long long)bytes, (unsigned long long)(from / c->o.chunk_bytes + 1),
              (unsigned long long)fc_chunk_count(bytes, c->o.chunk_bytes));
  }
  if (sent > *bytes_out) *bytes_out = sent; /* every attempt's bytes */
  return rc;
}

fedc_tensor_info *rt_tensor_infos(const fedc_client *c) {
  fedc_tensor_info *ti = calloc(c->spec.n ? c->spec.n : 1, sizeof *ti);
  size_t off = 0;
  for (uint32_t i = 0; ti && i < c->spec.n; i++) {
    ti[i].name = c->spec.t[i].name;
    ti[i].ndim = c->spec.t[i].ndim;
    ti[i].shape = c->spec.t[i].shape;
    ti[i].offset = off;
    ti[i].numel = fc_tensor_numel(&c->spec.t[i]);
    off += ti[i].numel;
  }
  return ti;
}

void rt_emit(fedc_client *c, const fedc_event *ev) {
  if (c->o.on_event) c->o.on_event(c->o.event_ctx, ev);
}
