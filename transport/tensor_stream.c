/*
 * tensor_stream.c - protobuf side of chunked tensor streams. See
 * tensor_stream.h; the rules of the stream are in common/chunk.h.
 */
#include "transport/tensor_stream.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/hash_pipe.h"
#include "fedc/error.h"

/* Streams from this size on are hashed on a helper thread: below it the
 * thread's start (~50 us) is not worth it. */
#define PIPE_MIN (4u << 20)

void fc_pb_header_build(fc_pb_header *out, const fc_model_spec *spec, uint64_t total, const uint8_t *sha,
                        uint32_t chunk_bytes) {
  memset(out, 0, sizeof *out);
  fedc__v1__tensor_header__init(&out->h);
  for (uint32_t i = 0; i < spec->n; i++) {
    Fedc__V1__TensorSpec *t = &out->specs[i];
    fedc__v1__tensor_spec__init(t);
    t->name = (char *)spec->t[i].name;
    t->dtype = (Fedc__V1__DType)spec->t[i].dtype;
    t->n_shape = spec->t[i].ndim;
    t->shape = (uint64_t *)spec->t[i].shape;
    out->ptrs[i] = t;
  }
  out->h.n_tensors = spec->n;
  out->h.tensors = out->ptrs;
  out->h.total_bytes = total;
  memcpy(out->sha, sha, FC_SHA256_LEN);
  out->h.sha256.data = out->sha;
  out->h.sha256.len = FC_SHA256_LEN;
  out->h.chunk_bytes = chunk_bytes;
}

int fc_pb_header_parse(const Fedc__V1__TensorHeader *h, fc_model_spec *spec, char *err, size_t errlen) {
  memset(spec, 0, sizeof *spec);
  if (h->n_tensors == 0 || h->n_tensors > FC_MODEL_MAX_TENSORS) {
    snprintf(err, errlen, "header lists %zu tensors (1..%d allowed)", h->n_tensors, FC_MODEL_MAX_TENSORS);
    return FEDC_ERR_SHAPE;
  }
  for (size_t i = 0; i < h->n_tensors; i++) {
    const Fedc__V1__TensorSpec *t = h->tensors[i];
    /* The name is checked before any message quotes it: it is the peer's,
     * and the message goes to the log, the audit log and back in a status. */
    if (!t->name || !fc_tensor_name_ok(t->name)) {
      snprintf(err, errlen, "tensor %zu: name missing, longer than %d bytes or not of [A-Za-z0-9_.-]", i,
               FC_TENSOR_NAME_MAX - 1);
      return FEDC_ERR_SHAPE;
    }
    if (t->n_shape == 0 || t->n_shape > FC_TENSOR_MAX_DIMS) {
      snprintf(err, errlen, "tensor '%s': %zu dims (1..%d allowed)", t->name, t->n_shape, FC_TENSOR_MAX_DIMS);
      return FEDC_ERR_SHAPE;
    }
    fc_tensor_spec *o = &spec->t[i];
    strcpy(o->name, t->name);
    o->dtype = (int)t->dtype;
    o->ndim = (uint32_t)t->n_shape;
    memcpy(o->shape, t->shape, t->n_shape * sizeof *t->shape);
  }
  spec->n = (uint32_t)h->n_tensors;
  return fc_model_spec_check(spec, err, errlen);
}

int fc_chunk_rx_begin_pb(fc_chunk_rx *rx, const Fedc__V1__TensorHeader *h, const fc_model_spec *expect,
                         uint64_t max_total, char *err, size_t errlen) {
  fc_model_spec spec;
  int rc = fc_pb_header_parse(h, &spec, err, errlen);
  if (rc != FEDC_OK) return rc;
  return fc_chunk_rx_begin(rx, &spec, h->total_bytes, h->sha256.data, h->sha256.len, h->chunk_bytes, expect,
                           max_total, err, errlen);
}

uint64_t fc_tensor_stream_pieces(uint64_t total, uint32_t chunk_bytes) {
  return 1 + fc_chunk_count(total, chunk_bytes);
}

int fc_tensor_stream_piece(const fc_pb_header *h, const void *payload, uint64_t total, uint32_t chunk_bytes,
                           uint64_t index, fc_stream_emit emit, void *ctx) {
  if (index == 0) return emit(ctx, &h->h, NULL);
  uint64_t off;
  size_t len;
  if (fc_chunk_plan(total, chunk_bytes, index - 1, &off, &len) != FEDC_OK) return FEDC_ERR_INVALID;
  Fedc__V1__TensorChunk c = FEDC__V1__TENSOR_CHUNK__INIT;
  c.offset = off;
  c.data.data = (uint8_t *)payload + off;
  c.data.len = len;
  return emit(ctx, NULL, &c);
}

int fc_tensor_stream_send(const fc_model_spec *spec, const void *payload, uint64_t total, const uint8_t *sha,
                          uint32_t chunk_bytes, fc_stream_emit emit, void *ctx) {
  fc_pb_header *h = malloc(sizeof *h);
  if (!h) return FEDC_ERR_NOMEM;
  fc_pb_header_build(h, spec, total, sha, chunk_bytes);
  int rc = FEDC_OK;
  uint64_t n = fc_tensor_stream_pieces(total, chunk_bytes);
  for (uint64_t i = 0; i < n && rc == FEDC_OK; i++) rc = fc_tensor_stream_piece(h, payload, total, chunk_bytes, i, emit, ctx);
  free(h);
  return rc;
}

static void fail(fc_status *st, int err, const char *msg) {
  st->code = GRPC_STATUS_INTERNAL;
  st->err = err;
  snprintf(st->detail, sizeof st->detail, "%s", msg);
}

int fc_tensor_stream_recv(fc_ccall *call, uint64_t max_total, const uint8_t *want_sha, fc_model_spec *spec,
                          float **payload, uint64_t *total, uint8_t sha_out[FC_SHA256_LEN], fc_status *st) {
  return fc_tensor_stream_recv_signed(call, max_total, want_sha, spec, payload, total, sha_out, NULL, st);
}

int fc_tensor_stream_recv_signed(fc_ccall *call, uint64_t max_total, const uint8_t *want_sha, fc_model_spec *spec,
                                 float **payload, uint64_t *total, uint8_t sha_out[FC_SHA256_LEN], fc_signed *manifest,
                                 fc_status *st) {
  uint8_t *buf = NULL;
  uint64_t cap = 0;
  int rc = fc_tensor_stream_recv_into(call, max_total, want_sha, spec, &buf, &cap, total, sha_out, manifest, st);
  if (rc == FEDC_OK) {
    *payload = (float *)buf;
    buf = NULL;
  }
  free(buf);
  return rc;
}

int fc_tensor_stream_recv_into(fc_ccall *call, uint64_t max_total, const uint8_t *want_sha, fc_model_spec *spec,
                               uint8_t **bufp, uint64_t *cap, uint64_t *total, uint8_t sha_out[FC_SHA256_LEN],
                               fc_signed *manifest, fc_status *st) {
  fc_signed man;
  memset(&man, 0, sizeof man);
  fc_chunk_rx rx;
  memset(&rx, 0, sizeof rx);
  char err[300];
  int rc = FEDC_ERR_PROTOCOL;
  int began = 0;
  fc_hash_pipe *pipe = NULL;
  for (;;) {
    ProtobufCMessage *m = NULL;
    int r = fc_ccall_recv(call, &fedc__v1__tensor_stream_msg__descriptor, &m, st);
    if (r < 0) {
      rc = -r;
      goto out;
    }
    if (r == 0) break;
    Fedc__V1__TensorStreamMsg *msg = (Fedc__V1__TensorStreamMsg *)m;
    if (!began) {
      if (!msg->header) {
        fail(st, FEDC_ERR_PROTOCOL, "tensor stream did not start with a header");
        protobuf_c_message_free_unpacked(m, NULL);
        goto out;
      }
      rc = fc_chunk_rx_begin_pb(&rx, msg->header, NULL, max_total, err, sizeof err);
      if (rc == FEDC_OK && want_sha && (msg->header->sha256.len != FC_SHA256_LEN ||
                                        !fc_digest_equal(msg->header->sha256.data, want_sha, FC_SHA256_LEN))) {
        rc = FEDC_ERR_HASH;
        snprintf(err, sizeof err, "model stream announces a different SHA-256 than the task");
      }
      const Fedc__V1__SignedManifest *sm = msg->manifest;
      if (rc == FEDC_OK && manifest && sm)
        rc = fc_signed_copy(sm->manifest.data, sm->manifest.len, sm->signature.data, sm->signature.len,
                            sm->signer_certificate, strlen(sm->signer_certificate), &man, err, sizeof err);
      /* rx.total <= max_total: checked by the header before this allocation. */
      if (rc == FEDC_OK && (!*bufp || *cap < rx.total)) {
        uint8_t *nb = malloc(rx.total ? rx.total : 1);
        if (!nb) {
          rc = FEDC_ERR_NOMEM;
          snprintf(err, sizeof err, "cannot allocate %llu bytes for the model", (unsigned long long)rx.total);
        } else {
          free(*bufp);
          *bufp = nb;
          *cap = rx.total ? rx.total : 1;
        }
      }
      /* The digest runs beside the transfer on a thread of its own (this
       * thread also runs gRPC's reads and TLS); without one, inline. */
      if (rc == FEDC_OK && rx.total >= PIPE_MIN && fc_hash_pipe_start(*bufp, &pipe) == FEDC_OK)
        fc_chunk_rx_hash_outside(&rx);
      began = 1;
    } else if (!msg->chunk || msg->header || msg->manifest) {
      rc = FEDC_ERR_PROTOCOL;
      snprintf(err, sizeof err, "expected a chunk in the tensor stream");
    } else {
      uint64_t at = rx.received;
      rc = fc_chunk_rx_feed(&rx, msg->chunk->offset, msg->chunk->data.data, msg->chunk->data.len, err, sizeof err);
      if (rc == FEDC_OK) memcpy(*bufp + at, msg->chunk->data.data, msg->chunk->data.len);
      if (rc == FEDC_OK && pipe) fc_hash_pipe_publish(pipe, rx.received);
    }
    protobuf_c_message_free_unpacked(m, NULL);
    if (rc != FEDC_OK) {
      fail(st, rc, err);
      goto out;
    }
  }
  if (!began) {
    fail(st, FEDC_ERR_PROTOCOL, "empty tensor stream");
    rc = FEDC_ERR_PROTOCOL;
    goto out;
  }
  if (pipe) {
    uint8_t got[FC_SHA256_LEN];
    rc = fc_hash_pipe_finish(pipe, got);
    pipe = NULL;
    if (rc == FEDC_OK) rc = fc_chunk_rx_end_digest(&rx, got, err, sizeof err);
    else snprintf(err, sizeof err, "tensor stream: SHA-256 failed");
  } else {
    rc = fc_chunk_rx_end(&rx, err, sizeof err);
  }
  if (rc != FEDC_OK) {
    fail(st, rc, err);
    goto out;
  }
  *spec = rx.spec;
  *total = rx.total;
  if (sha_out) memcpy(sha_out, rx.want_sha, FC_SHA256_LEN);
  if (manifest) {
    *manifest = man;
    memset(&man, 0, sizeof man);
  }
  rc = FEDC_OK;
out:
  fc_hash_pipe_abort(pipe);
  fc_signed_free(&man);
  fc_chunk_rx_free(&rx);
  return rc;
}
