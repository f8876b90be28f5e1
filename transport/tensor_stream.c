/*
 * tensor_stream.c - protobuf side of chunked tensor streams. See
 * tensor_stream.h; the rules of the stream are in common/chunk.h.
 */
#include "transport/tensor_stream.h"

#include <grpc/byte_buffer_reader.h>
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

void fc_stream_rx_init(fc_stream_rx *s, uint64_t max_total, const uint8_t *want_sha, int want_manifest) {
  memset(s, 0, sizeof *s);
  s->max_total = max_total;
  s->want_sha = want_sha;
  s->want_manifest = want_manifest;
}

void fc_stream_rx_into(fc_stream_rx *s, uint8_t **bufp, uint64_t *cap, int hash_beside) {
  s->bufp = bufp;
  s->cap = cap;
  s->hash_beside = hash_beside;
}

/* The payload's buffer once the header told its size: the caller's kept one
 * (grown if too small) or a new one of ours. */
static int rx_buffer(fc_stream_rx *s, char *err, size_t errlen) {
  uint64_t need = s->rx.total ? s->rx.total : 1; /* rx.total <= max_total: checked by the header */
  if (s->bufp && *s->bufp && *s->cap >= need) {
    s->buf = *s->bufp;
    return FEDC_OK;
  }
  uint8_t *nb = malloc(need);
  if (!nb) {
    snprintf(err, errlen, "cannot allocate %llu bytes for the model", (unsigned long long)s->rx.total);
    return FEDC_ERR_NOMEM;
  }
  if (s->bufp) {
    free(*s->bufp);
    *s->bufp = nb;
    *s->cap = need;
  }
  s->buf = nb;
  return FEDC_OK;
}

/* Back to a receiver that never began (its buffer stays). */
static void rx_restart(fc_stream_rx *s) {
  fc_hash_pipe_abort(s->pipe);
  s->pipe = NULL;
  fc_signed_free(&s->man);
  fc_chunk_rx_free(&s->rx);
  memset(&s->rx, 0, sizeof s->rx);
  if (!s->bufp) free(s->buf);
  s->buf = NULL;
  s->began = 0;
  s->resuming = 0;
}

uint64_t fc_stream_rx_resume(fc_stream_rx *s) {
  const fc_chunk_rx *rx = &s->rx;
  if (!s->began || rx->state != FC_CHUNK_RX_RECEIVING || rx->received == 0 || rx->received >= rx->total ||
      rx->received % rx->chunk_max)
    return 0;
  s->resuming = 1;
  return rx->received;
}

/* The first message of a resumed stream: the same payload, from the bytes kept. */
static int resume_header(fc_stream_rx *s, const Fedc__V1__TensorStreamMsg *msg, char *err, size_t errlen) {
  const Fedc__V1__TensorHeader *h = msg->header;
  if (!h || msg->chunk) {
    snprintf(err, errlen, "resumed tensor stream did not start with a header");
    return FEDC_ERR_PROTOCOL;
  }
  if (h->start_offset != s->rx.received) {
    snprintf(err, errlen, "resumed tensor stream starts at byte %llu, not at the %llu bytes kept",
             (unsigned long long)h->start_offset, (unsigned long long)s->rx.received);
    return FEDC_ERR_PROTOCOL;
  }
  fc_chunk_rx again;
  memset(&again, 0, sizeof again);
  int rc = fc_chunk_rx_begin_pb(&again, h, &s->rx.spec, s->max_total, err, errlen);
  if (rc == FEDC_OK && (again.total != s->rx.total || again.chunk_max != s->rx.chunk_max ||
                        !fc_digest_equal(again.want_sha, s->rx.want_sha, FC_SHA256_LEN))) {
    rc = FEDC_ERR_HASH;
    snprintf(err, errlen, "resumed tensor stream announces another payload than the one cut");
  }
  fc_chunk_rx_free(&again);
  if (rc == FEDC_OK) s->resuming = 0;
  return rc;
}

int fc_stream_rx_msg(fc_stream_rx *s, const Fedc__V1__TensorStreamMsg *msg, char *err, size_t errlen) {
  int rc;
  /* A sender that does not resume (protocol < 1.10) sends it all again. */
  if (s->began && s->resuming && msg->header && msg->header->start_offset == 0) rx_restart(s);
  if (s->began && s->resuming) return resume_header(s, msg, err, errlen);
  if (!s->began) {
    if (!msg->header) {
      snprintf(err, errlen, "tensor stream did not start with a header");
      return FEDC_ERR_PROTOCOL;
    }
    if (msg->header->start_offset) {
      snprintf(err, errlen, "tensor stream starts at byte %llu but nothing was kept to resume",
               (unsigned long long)msg->header->start_offset);
      return FEDC_ERR_PROTOCOL;
    }
    rc = fc_chunk_rx_begin_pb(&s->rx, msg->header, NULL, s->max_total, err, errlen);
    if (rc == FEDC_OK && s->want_sha && (msg->header->sha256.len != FC_SHA256_LEN ||
                                         !fc_digest_equal(msg->header->sha256.data, s->want_sha, FC_SHA256_LEN))) {
      rc = FEDC_ERR_HASH;
      snprintf(err, errlen, "model stream announces a different SHA-256 than the task");
    }
    const Fedc__V1__SignedManifest *sm = msg->manifest;
    if (rc == FEDC_OK && s->want_manifest && sm)
      rc = fc_signed_copy(sm->manifest.data, sm->manifest.len, sm->signature.data, sm->signature.len,
                          sm->signer_certificate, strlen(sm->signer_certificate), &s->man, err, errlen);
    if (rc == FEDC_OK) rc = rx_buffer(s, err, errlen);
    /* The digest runs beside the transfer on a thread of its own (the
     * receiving thread also runs gRPC's reads and TLS); without one, inline. */
    if (rc == FEDC_OK && s->hash_beside && s->rx.total >= PIPE_MIN && fc_hash_pipe_start(s->buf, &s->pipe) == FEDC_OK)
      fc_chunk_rx_hash_outside(&s->rx);
    s->began = 1;
  } else if (!msg->chunk || msg->header || msg->manifest) {
    rc = FEDC_ERR_PROTOCOL;
    snprintf(err, errlen, "expected a chunk in the tensor stream");
  } else {
    uint64_t at = s->rx.received;
    rc = fc_chunk_rx_feed(&s->rx, msg->chunk->offset, msg->chunk->data.data, msg->chunk->data.len, err, errlen);
    if (rc == FEDC_OK) memcpy(s->buf + at, msg->chunk->data.data, msg->chunk->data.len);
    if (rc == FEDC_OK && s->pipe) fc_hash_pipe_publish(s->pipe, s->rx.received);
  }
  return rc;
}

int fc_stream_rx_end(fc_stream_rx *s, fc_model_spec *spec, float **payload, uint64_t *total,
                     uint8_t sha_out[FC_SHA256_LEN], fc_signed *manifest, char *err, size_t errlen) {
  if (!s->began) {
    snprintf(err, errlen, "empty tensor stream");
    return FEDC_ERR_PROTOCOL;
  }
  int rc;
  if (s->pipe) {
    uint8_t got[FC_SHA256_LEN];
    rc = fc_hash_pipe_finish(s->pipe, got);
    s->pipe = NULL;
    if (rc == FEDC_OK) rc = fc_chunk_rx_end_digest(&s->rx, got, err, errlen);
    else snprintf(err, errlen, "tensor stream: SHA-256 failed");
  } else {
    rc = fc_chunk_rx_end(&s->rx, err, errlen);
  }
  if (rc != FEDC_OK) return rc;
  *spec = s->rx.spec;
  *total = s->rx.total;
  if (sha_out) memcpy(sha_out, s->rx.want_sha, FC_SHA256_LEN);
  if (payload) *payload = (float *)s->buf;
  if (!s->bufp) s->buf = NULL; /* handed over; the caller's kept buffer stays the caller's */
  if (manifest) {
    *manifest = s->man;
    memset(&s->man, 0, sizeof s->man);
  }
  return FEDC_OK;
}

void fc_stream_rx_free(fc_stream_rx *s) {
  fc_hash_pipe_abort(s->pipe);
  s->pipe = NULL;
  fc_signed_free(&s->man);
  fc_chunk_rx_free(&s->rx);
  if (!s->bufp) free(s->buf);
  s->buf = NULL;
}

/* ---- chunks decoded in place -----------------------------------------------
 * A chunk message, TensorStreamMsg{chunk = TensorChunk{offset, data}}, is on
 * the wire 0x12 len [0x08 offset] 0x12 len data (proto3 leaves out offset
 * 0). Unpacked the usual way, a chunk is held three times at once (gRPC's
 * slices, the flat copy protobuf-c parses, the unpacked bytes field), and the
 * heap that grows stays resident while the trainer's copy of the model is
 * live: the client's peak (docs/results.md, "Footprint"). Here the data is
 * copied once, from gRPC's slices into the payload buffer. A message of any
 * other shape (a header, unknown or repeated fields, a chunk the receiver
 * would refuse) goes the usual way, which decides it and words the error. */
typedef struct wire {
  grpc_byte_buffer_reader r;
  grpc_slice *cur;
  size_t pos;
  uint64_t left; /* bytes not yet read */
} wire;

static int wire_ready(wire *w) {
  while (!w->cur || w->pos >= GRPC_SLICE_LENGTH(*w->cur)) {
    if (!grpc_byte_buffer_reader_peek(&w->r, &w->cur)) {
      w->cur = NULL;
      return 0;
    }
    w->pos = 0;
  }
  return 1;
}

static int wire_varint(wire *w, uint64_t *v) {
  *v = 0;
  for (int shift = 0; shift < 64; shift += 7) {
    if (!w->left || !wire_ready(w)) return 0;
    uint8_t b = GRPC_SLICE_START_PTR(*w->cur)[w->pos++];
    w->left--;
    *v |= (uint64_t)(b & 0x7f) << shift;
    if (!(b & 0x80)) return 1;
  }
  return 0;
}

/* n <= w->left, which counts the bytes the reader has. */
static void wire_copy(wire *w, uint8_t *dst, uint64_t n) {
  while (n && wire_ready(w)) {
    size_t k = GRPC_SLICE_LENGTH(*w->cur) - w->pos;
    if (k > n) k = (size_t)n;
    memcpy(dst, GRPC_SLICE_START_PTR(*w->cur) + w->pos, k);
    dst += k;
    n -= k;
    w->pos += k;
    w->left -= k;
  }
}

/* The chunk's offset and data length, w left at the data; 0 if bytes is not
 * a plain chunk message. */
static int wire_chunk(wire *w, uint64_t *offset, uint64_t *len) {
  uint64_t tag, n;
  *offset = 0;
  if (!wire_varint(w, &tag) || tag != 0x12 || !wire_varint(w, &n) || n != w->left) return 0;
  if (!wire_varint(w, &tag)) return 0;
  if (tag == 0x08 && (!wire_varint(w, offset) || !wire_varint(w, &tag))) return 0;
  return tag == 0x12 && wire_varint(w, len) && *len == w->left;
}

int fc_stream_rx_bytes(fc_stream_rx *s, grpc_byte_buffer *bytes, int *rc, char *err, size_t errlen) {
  if (!s->began || s->resuming || !s->buf || s->rx.state != FC_CHUNK_RX_RECEIVING) return 0;
  wire w;
  memset(&w, 0, sizeof w);
  if (!grpc_byte_buffer_reader_init(&w.r, bytes)) return 0;
  /* The reader's own count (a compressed buffer's length is not it). */
  for (grpc_slice *sl; grpc_byte_buffer_reader_peek(&w.r, &sl);) w.left += GRPC_SLICE_LENGTH(*sl);
  grpc_byte_buffer_reader_destroy(&w.r);
  if (!grpc_byte_buffer_reader_init(&w.r, bytes)) return 0;
  uint64_t offset, len, at = s->rx.received;
  int taken = wire_chunk(&w, &offset, &len) && offset == at && len > 0 && len <= s->rx.chunk_max &&
              len <= s->rx.total - at;
  if (taken) {
    wire_copy(&w, s->buf + at, len);
    *rc = fc_chunk_rx_feed(&s->rx, offset, s->buf + at, (size_t)len, err, errlen);
    if (*rc == FEDC_OK && s->pipe) fc_hash_pipe_publish(s->pipe, s->rx.received);
  }
  grpc_byte_buffer_reader_destroy(&w.r);
  return taken;
}

/* ---- chunks sent by reference -------------------------------------------------- */
static size_t put_varint(uint8_t *p, uint64_t v) {
  size_t n = 0;
  do {
    p[n++] = (uint8_t)((v & 0x7f) | (v > 0x7f ? 0x80 : 0));
    v >>= 7;
  } while (v);
  return n;
}

grpc_byte_buffer *fc_chunk_msg_ref(uint32_t field, uint64_t offset, const uint8_t *data, size_t len,
                                   void (*release)(void *), void *owner) {
  /* tag, len, [0x08 offset], 0x12 len: at most 5 + 10 + 1 + 10 + 1 + 10 bytes */
  uint8_t inner[24], pre[48];
  size_t ni = 0, np = 0;
  if (offset) {
    inner[ni++] = 0x08;
    ni += put_varint(inner + ni, offset);
  }
  inner[ni++] = 0x12;
  ni += put_varint(inner + ni, len);
  np += put_varint(pre, (uint64_t)field << 3 | 2);
  np += put_varint(pre + np, ni + (uint64_t)len);
  memcpy(pre + np, inner, ni);
  np += ni;
  grpc_slice sl[2];
  sl[0] = grpc_slice_from_copied_buffer((const char *)pre, np);
  sl[1] = grpc_slice_new_with_user_data((void *)data, len, release, owner); /* release(owner) at its last unref */
  grpc_byte_buffer *bb = grpc_raw_byte_buffer_create(sl, 2);
  grpc_slice_unref(sl[0]);
  grpc_slice_unref(sl[1]);
  return bb;
}

typedef struct take_ctx {
  fc_stream_rx *s;
  int rc;
  char *err;
  size_t errlen;
} take_ctx;

static int take_chunk(void *ctx, grpc_byte_buffer *bytes) {
  take_ctx *t = ctx;
  return fc_stream_rx_bytes(t->s, bytes, &t->rc, t->err, t->errlen);
}

/* Drive s with the messages of call until the stream ends. */
int fc_tensor_stream_recv_call(fc_stream_rx *s, fc_ccall *call, fc_model_spec *spec, float **payload, uint64_t *total,
                   uint8_t sha_out[FC_SHA256_LEN], fc_signed *manifest, fc_status *st) {
  char err[300];
  int rc;
  for (;;) {
    ProtobufCMessage *m = NULL;
    take_ctx tc = {s, FEDC_OK, err, sizeof err};
    int r = fc_ccall_recv_take(call, &fedc__v1__tensor_stream_msg__descriptor, take_chunk, &tc, &m, st);
    if (r < 0) return -r;
    if (r == 0) break;
    rc = tc.rc;
    if (m) {
      rc = fc_stream_rx_msg(s, (Fedc__V1__TensorStreamMsg *)m, err, sizeof err);
      protobuf_c_message_free_unpacked(m, NULL);
    }
    if (rc != FEDC_OK) {
      fail(st, rc, err);
      return rc;
    }
  }
  rc = fc_stream_rx_end(s, spec, payload, total, sha_out, manifest, err, sizeof err);
  if (rc != FEDC_OK) fail(st, rc, err);
  return rc;
}

int fc_tensor_stream_recv_signed(fc_ccall *call, uint64_t max_total, const uint8_t *want_sha, fc_model_spec *spec,
                                 float **payload, uint64_t *total, uint8_t sha_out[FC_SHA256_LEN], fc_signed *manifest,
                                 fc_status *st) {
  fc_stream_rx s;
  fc_stream_rx_init(&s, max_total, want_sha, manifest != NULL);
  int rc = fc_tensor_stream_recv_call(&s, call, spec, payload, total, sha_out, manifest, st);
  fc_stream_rx_free(&s);
  return rc;
}

int fc_tensor_stream_recv_into(fc_ccall *call, uint64_t max_total, const uint8_t *want_sha, fc_model_spec *spec,
                               uint8_t **bufp, uint64_t *cap, uint64_t *total, uint8_t sha_out[FC_SHA256_LEN],
                               fc_signed *manifest, fc_status *st) {
  fc_stream_rx s;
  fc_stream_rx_init(&s, max_total, want_sha, manifest != NULL);
  fc_stream_rx_into(&s, bufp, cap, 1);
  int rc = fc_tensor_stream_recv_call(&s, call, spec, NULL, total, sha_out, manifest, st);
  fc_stream_rx_free(&s);
  return rc;
}
