/*
 * chunk.c - receiver state machine and sender slicing for tensor streams.
 * The stream format is the table in chunk.h.
 *
 * Invariants of fc_chunk_rx while RECEIVING: received <= total; the digest
 * context has absorbed exactly bytes [0, received) in order (unless
 * hash_outside: then the caller's digest has); chunks counts the
 * accepted chunks. Every error is final (FAILED), because a stream with a gap,
 * a replay or a bad chunk cannot be resumed safely: the caller has already
 * consumed earlier chunks, and a receiver that kept going after an error would
 * let a peer probe the checks one at a time.
 */
#include "common/chunk.h"

#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "fedc/error.h"

/* Move rx to FAILED and drop the digest context; returns rc for tail calls. */
static int fail(fc_chunk_rx *rx, int rc) {
  fc_sha256_free(&rx->sha);
  rx->state = FC_CHUNK_RX_FAILED;
  return rc;
}

/* "name[3x4]" into buf; truncated to fit. */
static void describe_tensor(const fc_tensor_spec *t, char *buf, size_t len) {
  int w = snprintf(buf, len, "'%s'[", t->name);
  for (uint32_t d = 0; d < t->ndim && w > 0 && (size_t)w < len; d++)
    w += snprintf(buf + w, len - (size_t)w, "%s%" PRIu64, d ? "x" : "", t->shape[d]);
  if (w > 0 && (size_t)w < len) snprintf(buf + w, len - (size_t)w, "]");
}

/* Same rule as fc_model_spec_equal, for one tensor. */
static int tensor_equal(const fc_tensor_spec *x, const fc_tensor_spec *y) {
  if (strcmp(x->name, y->name) != 0 || x->dtype != y->dtype || x->ndim != y->ndim) return 0;
  for (uint32_t d = 0; d < x->ndim; d++)
    if (x->shape[d] != y->shape[d]) return 0;
  return 1;
}

/* Explain why got != want, naming the first tensor that differs. */
static void describe_mismatch(const fc_model_spec *got, const fc_model_spec *want, char *err, size_t errlen) {
  char g[FC_TENSOR_NAME_MAX + 96], w[FC_TENSOR_NAME_MAX + 96];
  uint32_t n = got->n < want->n ? got->n : want->n;
  for (uint32_t i = 0; i < n; i++) {
    if (tensor_equal(&got->t[i], &want->t[i])) continue;
    describe_tensor(&got->t[i], g, sizeof g);
    describe_tensor(&want->t[i], w, sizeof w);
    snprintf(err, errlen, "model spec mismatch at tensor %u: got %s, expected %s", i, g, w);
    return;
  }
  if (got->n == want->n) { /* unreachable while tensor_equal matches fc_model_spec_equal */
    snprintf(err, errlen, "model spec mismatch");
  } else if (got->n > want->n) {
    describe_tensor(&got->t[n], g, sizeof g);
    snprintf(err, errlen, "model spec mismatch: %u tensors, expected %u (unexpected tensor %u %s)", got->n, want->n,
             n, g);
  } else {
    describe_tensor(&want->t[n], w, sizeof w);
    snprintf(err, errlen, "model spec mismatch: %u tensors, expected %u (missing tensor %u %s)", got->n, want->n, n,
             w);
  }
}

int fc_chunk_rx_begin(fc_chunk_rx *rx, const fc_model_spec *spec, uint64_t total_bytes, const uint8_t *sha,
                      size_t sha_len, uint32_t chunk_bytes, const fc_model_spec *expect, uint64_t max_total,
                      char *err, size_t errlen) {
  int rc;
  memset(rx, 0, sizeof *rx);
  rx->state = FC_CHUNK_RX_FAILED;
  if (!spec || (!sha && sha_len)) {
    snprintf(err, errlen, "tensor stream header: missing spec or digest");
    return FEDC_ERR_INVALID;
  }
  if ((rc = fc_model_spec_check(spec, err, errlen)) != FEDC_OK) return rc;
  if (expect && !fc_model_spec_equal(spec, expect)) {
    describe_mismatch(spec, expect, err, errlen);
    return FEDC_ERR_SHAPE;
  }
  /* A byte tensor is a compressed upload: only where the receiver asked for one. */
  for (uint32_t i = 0; !expect && i < spec->n; i++)
    if (spec->t[i].dtype == FC_DTYPE_U8) {
      snprintf(err, errlen, "tensor '%s' is U8: not expected here", spec->t[i].name);
      return FEDC_ERR_SHAPE;
    }
  /* numel <= FC_MODEL_MAX_PARAMS (2^31) after the check, so 4*numel cannot overflow. */
  uint64_t want_total = fc_model_bytes(spec);
  if (total_bytes != want_total) {
    snprintf(err, errlen, "tensor stream header: total_bytes %" PRIu64 " but the spec needs %" PRIu64, total_bytes,
             want_total);
    return FEDC_ERR_SHAPE;
  }
  if (total_bytes > max_total) {
    snprintf(err, errlen, "tensor stream of %" PRIu64 " bytes exceeds the limit of %" PRIu64, total_bytes, max_total);
    return FEDC_ERR_TOO_LARGE;
  }
  if (sha_len != FC_SHA256_LEN) {
    snprintf(err, errlen, "tensor stream header: sha256 is %zu bytes, expected %d", sha_len, FC_SHA256_LEN);
    return FEDC_ERR_PROTOCOL;
  }
  if (chunk_bytes < 1 || chunk_bytes > FC_CHUNK_MAX) {
    snprintf(err, errlen, "tensor stream header: chunk_bytes %" PRIu32 " outside 1..%u", chunk_bytes, FC_CHUNK_MAX);
    return FEDC_ERR_PROTOCOL;
  }
  if ((rc = fc_sha256_init(&rx->sha)) != FEDC_OK) {
    snprintf(err, errlen, "tensor stream: cannot start SHA-256");
    return rc;
  }
  rx->spec = *spec;
  rx->total = total_bytes;
  rx->chunk_max = chunk_bytes;
  memcpy(rx->want_sha, sha, FC_SHA256_LEN);
  rx->state = FC_CHUNK_RX_RECEIVING;
  return FEDC_OK;
}

int fc_chunk_rx_feed(fc_chunk_rx *rx, uint64_t offset, const void *data, size_t len, char *err, size_t errlen) {
  if (rx->state != FC_CHUNK_RX_RECEIVING) {
    snprintf(err, errlen, "tensor chunk after the stream %s", rx->state == FC_CHUNK_RX_DONE ? "ended" : "failed");
    return fail(rx, FEDC_ERR_PROTOCOL);
  }
  if (offset != rx->received) {
    snprintf(err, errlen, "chunk at offset %" PRIu64 ", expected %" PRIu64, offset, rx->received);
    return fail(rx, FEDC_ERR_PROTOCOL);
  }
  if (len == 0) {
    snprintf(err, errlen, "empty chunk at offset %" PRIu64, offset);
    return fail(rx, FEDC_ERR_PROTOCOL);
  }
  if (!data) {
    snprintf(err, errlen, "chunk at offset %" PRIu64 " has no data", offset);
    return fail(rx, FEDC_ERR_INVALID);
  }
  if (len > rx->chunk_max) {
    snprintf(err, errlen, "chunk of %zu bytes exceeds the announced chunk_bytes %" PRIu32, len, rx->chunk_max);
    return fail(rx, FEDC_ERR_TOO_LARGE);
  }
  /* received <= total, so total - received cannot wrap. */
  if ((uint64_t)len > rx->total - rx->received) {
    snprintf(err, errlen, "over-long stream: chunk ends at %" PRIu64 ", total_bytes is %" PRIu64,
             rx->received + (uint64_t)len, rx->total);
    return fail(rx, FEDC_ERR_TOO_LARGE);
  }
  int rc = rx->hash_outside ? FEDC_OK : fc_sha256_update(&rx->sha, data, len);
  if (rc != FEDC_OK) {
    snprintf(err, errlen, "tensor stream: SHA-256 update failed");
    return fail(rx, rc);
  }
  rx->received += len;
  rx->chunks++;
  return FEDC_OK;
}

/* The checks both ends share; got NULL: finish rx's own digest. */
static int rx_end(fc_chunk_rx *rx, const uint8_t *outside, char *err, size_t errlen) {
  uint8_t got[FC_SHA256_LEN];
  if (rx->state != FC_CHUNK_RX_RECEIVING) {
    snprintf(err, errlen, "tensor stream end after the stream %s", rx->state == FC_CHUNK_RX_DONE ? "ended" : "failed");
    return fail(rx, FEDC_ERR_PROTOCOL);
  }
  if (rx->received < rx->total) {
    snprintf(err, errlen, "stream ended early: got %" PRIu64 " of %" PRIu64 " bytes", rx->received, rx->total);
    return fail(rx, FEDC_ERR_PROTOCOL);
  }
  if ((outside != NULL) != (rx->hash_outside != 0)) {
    snprintf(err, errlen, "tensor stream: digest %s, but the receiver was set up otherwise",
             outside ? "given" : "not given");
    return fail(rx, FEDC_ERR_INVALID);
  }
  if (outside) {
    memcpy(got, outside, sizeof got);
    fc_sha256_free(&rx->sha);
  } else {
    int rc = fc_sha256_final(&rx->sha, got); /* frees the context either way */
    if (rc != FEDC_OK) {
      snprintf(err, errlen, "tensor stream: SHA-256 final failed");
      return fail(rx, rc);
    }
  }
  if (!fc_digest_equal(got, rx->want_sha, FC_SHA256_LEN)) {
    char g[FC_SHA256_HEX_LEN], w[FC_SHA256_HEX_LEN];
    snprintf(err, errlen, "tensor stream SHA-256 mismatch: got %s, header says %s", fc_hex(got, FC_SHA256_LEN, g),
             fc_hex(rx->want_sha, FC_SHA256_LEN, w));
    return fail(rx, FEDC_ERR_HASH);
  }
  rx->state = FC_CHUNK_RX_DONE;
  return FEDC_OK;
}

int fc_chunk_rx_end(fc_chunk_rx *rx, char *err, size_t errlen) { return rx_end(rx, NULL, err, errlen); }

void fc_chunk_rx_hash_outside(fc_chunk_rx *rx) {
  if (rx->state == FC_CHUNK_RX_RECEIVING && rx->received == 0) rx->hash_outside = 1;
}

int fc_chunk_rx_hash_inside(fc_chunk_rx *rx, const uint8_t *bytes) {
  if (!rx->hash_outside) return FEDC_OK;
  /* The context was made at begin and never fed while the hash was outside. */
  int rc = rx->received ? fc_sha256_update(&rx->sha, bytes, (size_t)rx->received) : FEDC_OK;
  if (rc == FEDC_OK) rx->hash_outside = 0;
  return rc;
}

int fc_chunk_rx_end_digest(fc_chunk_rx *rx, const uint8_t got[32], char *err, size_t errlen) {
  return rx_end(rx, got, err, errlen);
}

void fc_chunk_rx_free(fc_chunk_rx *rx) {
  if (!rx) return;
  fc_sha256_free(&rx->sha);
  rx->state = FC_CHUNK_RX_IDLE;
}

uint64_t fc_chunk_count(uint64_t total, uint32_t chunk_bytes) {
  if (chunk_bytes == 0) return 0;
  return total / chunk_bytes + (total % chunk_bytes != 0);
}

int fc_chunk_plan(uint64_t total, uint32_t chunk_bytes, uint64_t index, uint64_t *offset, size_t *len) {
  if (chunk_bytes == 0) return FEDC_ERR_INVALID;
  if (index >= fc_chunk_count(total, chunk_bytes)) return FEDC_ERR_NOT_FOUND;
  /* index < count, so index*chunk_bytes < total: no overflow. */
  uint64_t off = index * chunk_bytes;
  uint64_t left = total - off;
  *offset = off;
  *len = (size_t)(left < chunk_bytes ? left : chunk_bytes);
  return FEDC_OK;
}

int fc_payload_sha256(const void *p, size_t n, uint8_t out[32]) { return fc_sha256(p, n, out); }
