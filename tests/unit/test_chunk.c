/*
 * test_chunk.c - tensor stream framing: round trips at several chunk sizes and
 * every receiver error path with its exact code; a hostile tensor name in a
 * header is refused without being quoted (security review, finding 6).
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "common/chunk.h"
#include "common/clock.h"
#include "common/hash_pipe.h"
#include "crypto/sha256.h"
#include "fedc/error.h"
#include "transport/tensor_stream.h"

/* Deterministic bytes (xorshift64) so failures reproduce. */
static void fill_random(uint8_t *p, size_t n, uint64_t seed) {
  uint64_t x = seed ? seed : 1;
  for (size_t i = 0; i < n; i++) {
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    p[i] = (uint8_t)(x >> 24);
  }
}

/* A two-tensor model of 4*(a*b + c) bytes. */
static fc_model_spec make_spec(uint64_t a, uint64_t b, uint64_t c) {
  fc_model_spec m;
  memset(&m, 0, sizeof m);
  uint64_t s1[2] = {a, b}, s2[1] = {c};
  fc_model_spec_add(&m, "dense.weight", 2, s1);
  fc_model_spec_add(&m, "dense.bias", 1, s2);
  return m;
}

/* Send payload through a receiver in plan order; returns the first error, or the result of end. */
static int send_all(const fc_model_spec *spec, const uint8_t *payload, uint64_t total, uint32_t chunk_bytes,
                    uint8_t *out) {
  uint8_t sha[32];
  char err[256];
  fc_chunk_rx rx;
  CHECK_EQ_INT(fc_payload_sha256(payload, total, sha), FEDC_OK);
  int rc = fc_chunk_rx_begin(&rx, spec, total, sha, 32, chunk_bytes, spec, UINT64_MAX, err, sizeof err);
  if (rc) return rc;
  uint64_t off;
  size_t len;
  for (uint64_t i = 0; fc_chunk_plan(total, chunk_bytes, i, &off, &len) == FEDC_OK; i++) {
    CHECK_EQ_INT(off, rx.received);
    memcpy(out + off, payload + off, len); /* the caller decides where bytes go */
    if ((rc = fc_chunk_rx_feed(&rx, off, payload + off, len, err, sizeof err)) != FEDC_OK) break;
  }
  if (rc == FEDC_OK) {
    rc = fc_chunk_rx_end(&rx, err, sizeof err);
    if (rc == FEDC_OK) CHECK_EQ_INT(rx.chunks, fc_chunk_count(total, chunk_bytes));
  }
  fc_chunk_rx_free(&rx);
  return rc;
}

static void test_round_trip(void) {
  fc_model_spec big = make_spec(300, 257, 13); /* 308,452 bytes */
  uint64_t total = 4 * fc_model_numel(&big);
  uint8_t *payload = malloc(total), *out = malloc(total);
  CHECK(payload && out);
  if (!payload || !out) goto out;
  fill_random(payload, total, 42);
  const uint32_t sizes[] = {FC_CHUNK_DEFAULT, FC_CHUNK_MAX, FC_CHUNK_MIN, 4096, 1000, 4099, 7, (uint32_t)total,
                            (uint32_t)total - 1};
  for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
    memset(out, 0, total);
    CHECK_EQ_INT(send_all(&big, payload, total, sizes[i], out), FEDC_OK);
    CHECK(memcmp(out, payload, total) == 0);
  }
  /* 1-byte chunks on a small payload. */
  fc_model_spec small = make_spec(2, 3, 5); /* 44 bytes */
  uint64_t small_total = 4 * fc_model_numel(&small);
  CHECK_EQ_INT(small_total, 44);
  memset(out, 0, small_total);
  CHECK_EQ_INT(send_all(&small, payload, small_total, 1, out), FEDC_OK);
  CHECK(memcmp(out, payload, small_total) == 0);
out:
  free(payload);
  free(out);
}

static void test_plan(void) {
  uint64_t off = 99;
  size_t len = 99;
  CHECK_EQ_INT(fc_chunk_count(10, 3), 4);
  CHECK_EQ_INT(fc_chunk_count(9, 3), 3);
  CHECK_EQ_INT(fc_chunk_count(0, 3), 0);
  CHECK_EQ_INT(fc_chunk_count(10, 0), 0);
  CHECK_EQ_INT(fc_chunk_plan(10, 3, 0, &off, &len), FEDC_OK);
  CHECK_EQ_INT(off, 0);
  CHECK_EQ_INT(len, 3);
  CHECK_EQ_INT(fc_chunk_plan(10, 3, 3, &off, &len), FEDC_OK);
  CHECK_EQ_INT(off, 9);
  CHECK_EQ_INT(len, 1);
  CHECK_EQ_INT(fc_chunk_plan(10, 3, 4, &off, &len), FEDC_ERR_NOT_FOUND);
  CHECK_EQ_INT(off, 9); /* untouched on error */
  CHECK_EQ_INT(fc_chunk_plan(10, 3, UINT64_MAX, &off, &len), FEDC_ERR_NOT_FOUND);
  CHECK_EQ_INT(fc_chunk_plan(10, 0, 0, &off, &len), FEDC_ERR_INVALID);
  CHECK_EQ_INT(fc_chunk_plan(UINT64_MAX, FC_CHUNK_MAX, fc_chunk_count(UINT64_MAX, FC_CHUNK_MAX) - 1, &off, &len),
               FEDC_OK);
  CHECK_EQ_INT(off + len, UINT64_MAX);
}

/* A begun receiver for the 44-byte model with 8-byte chunks. */
struct fixture {
  fc_model_spec spec;
  uint8_t payload[44];
  uint8_t sha[32];
  fc_chunk_rx rx;
  char err[256];
};

static int fixture_begin(struct fixture *f) {
  memset(f, 0, sizeof *f);
  f->spec = make_spec(2, 3, 5);
  fill_random(f->payload, sizeof f->payload, 7);
  fc_payload_sha256(f->payload, sizeof f->payload, f->sha);
  return fc_chunk_rx_begin(&f->rx, &f->spec, sizeof f->payload, f->sha, 32, 8, &f->spec, 1024, f->err,
                           sizeof f->err);
}

/* After a failure every later call fails with PROTOCOL. */
static void check_dead(struct fixture *f) {
  CHECK_EQ_INT(f->rx.state, FC_CHUNK_RX_FAILED);
  CHECK_EQ_INT(fc_chunk_rx_feed(&f->rx, f->rx.received, f->payload, 1, f->err, sizeof f->err), FEDC_ERR_PROTOCOL);
  CHECK_EQ_INT(fc_chunk_rx_end(&f->rx, f->err, sizeof f->err), FEDC_ERR_PROTOCOL);
  fc_chunk_rx_free(&f->rx);
  fc_chunk_rx_free(&f->rx); /* twice is harmless */
}

static void test_corrupted_chunk(void) {
  struct fixture f;
  CHECK_EQ_INT(fixture_begin(&f), FEDC_OK);
  uint8_t copy[44];
  memcpy(copy, f.payload, sizeof copy);
  copy[20] ^= 0x10; /* one flipped bit in the third chunk */
  for (uint64_t off = 0; off < 44; off += 8) {
    size_t len = 44 - off < 8 ? (size_t)(44 - off) : 8;
    CHECK_EQ_INT(fc_chunk_rx_feed(&f.rx, off, copy + off, len, f.err, sizeof f.err), FEDC_OK);
  }
  CHECK_EQ_INT(fc_chunk_rx_end(&f.rx, f.err, sizeof f.err), FEDC_ERR_HASH);
  CHECK(strstr(f.err, "SHA-256 mismatch") != NULL);
  check_dead(&f);
}

static void test_short_stream(void) {
  struct fixture f;
  CHECK_EQ_INT(fixture_begin(&f), FEDC_OK);
  CHECK_EQ_INT(fc_chunk_rx_feed(&f.rx, 0, f.payload, 8, f.err, sizeof f.err), FEDC_OK);
  CHECK_EQ_INT(fc_chunk_rx_feed(&f.rx, 8, f.payload + 8, 8, f.err, sizeof f.err), FEDC_OK);
  CHECK_EQ_INT(fc_chunk_rx_end(&f.rx, f.err, sizeof f.err), FEDC_ERR_PROTOCOL);
  CHECK(strcmp(f.err, "stream ended early: got 16 of 44 bytes") == 0);
  check_dead(&f);

  /* No chunks at all. */
  CHECK_EQ_INT(fixture_begin(&f), FEDC_OK);
  CHECK_EQ_INT(fc_chunk_rx_end(&f.rx, f.err, sizeof f.err), FEDC_ERR_PROTOCOL);
  check_dead(&f);
}

static void test_over_long(void) {
  struct fixture f;
  uint8_t extra[8] = {0};
  CHECK_EQ_INT(fixture_begin(&f), FEDC_OK);
  for (uint64_t off = 0; off < 40; off += 8)
    CHECK_EQ_INT(fc_chunk_rx_feed(&f.rx, off, f.payload + off, 8, f.err, sizeof f.err), FEDC_OK);
  /* 4 bytes remain; an 8-byte chunk overruns. */
  CHECK_EQ_INT(fc_chunk_rx_feed(&f.rx, 40, extra, 8, f.err, sizeof f.err), FEDC_ERR_TOO_LARGE);
  CHECK(strstr(f.err, "over-long stream") != NULL);
  check_dead(&f);

  /* A chunk after the whole payload arrived. */
  CHECK_EQ_INT(fixture_begin(&f), FEDC_OK);
  for (uint64_t off = 0; off < 44; off += 8)
    CHECK_EQ_INT(fc_chunk_rx_feed(&f.rx, off, f.payload + off, 44 - off < 8 ? 4 : 8, f.err, sizeof f.err), FEDC_OK);
  CHECK_EQ_INT(fc_chunk_rx_feed(&f.rx, 44, extra, 1, f.err, sizeof f.err), FEDC_ERR_TOO_LARGE);
  check_dead(&f);
}

static void test_wrong_offset(void) {
  struct fixture f;
  /* Gap. */
  CHECK_EQ_INT(fixture_begin(&f), FEDC_OK);
  CHECK_EQ_INT(fc_chunk_rx_feed(&f.rx, 0, f.payload, 8, f.err, sizeof f.err), FEDC_OK);
  CHECK_EQ_INT(fc_chunk_rx_feed(&f.rx, 16, f.payload + 16, 8, f.err, sizeof f.err), FEDC_ERR_PROTOCOL);
  CHECK(strcmp(f.err, "chunk at offset 16, expected 8") == 0);
  check_dead(&f);
  /* Replay of the previous chunk. */
  CHECK_EQ_INT(fixture_begin(&f), FEDC_OK);
  CHECK_EQ_INT(fc_chunk_rx_feed(&f.rx, 0, f.payload, 8, f.err, sizeof f.err), FEDC_OK);
  CHECK_EQ_INT(fc_chunk_rx_feed(&f.rx, 8, f.payload + 8, 8, f.err, sizeof f.err), FEDC_OK);
  CHECK_EQ_INT(fc_chunk_rx_feed(&f.rx, 8, f.payload + 8, 8, f.err, sizeof f.err), FEDC_ERR_PROTOCOL);
  CHECK(strcmp(f.err, "chunk at offset 8, expected 16") == 0);
  check_dead(&f);
  /* First chunk not at 0. */
  CHECK_EQ_INT(fixture_begin(&f), FEDC_OK);
  CHECK_EQ_INT(fc_chunk_rx_feed(&f.rx, 1, f.payload, 8, f.err, sizeof f.err), FEDC_ERR_PROTOCOL);
  check_dead(&f);
}

static void test_chunk_sizes(void) {
  struct fixture f;
  /* Larger than announced chunk_bytes (8). */
  CHECK_EQ_INT(fixture_begin(&f), FEDC_OK);
  CHECK_EQ_INT(fc_chunk_rx_feed(&f.rx, 0, f.payload, 9, f.err, sizeof f.err), FEDC_ERR_TOO_LARGE);
  check_dead(&f);
  /* Empty chunk. */
  CHECK_EQ_INT(fixture_begin(&f), FEDC_OK);
  CHECK_EQ_INT(fc_chunk_rx_feed(&f.rx, 0, f.payload, 0, f.err, sizeof f.err), FEDC_ERR_PROTOCOL);
  check_dead(&f);
  /* A short chunk in the middle is fine (only the maximum is fixed). */
  CHECK_EQ_INT(fixture_begin(&f), FEDC_OK);
  CHECK_EQ_INT(fc_chunk_rx_feed(&f.rx, 0, f.payload, 3, f.err, sizeof f.err), FEDC_OK);
  CHECK_EQ_INT(fc_chunk_rx_feed(&f.rx, 3, f.payload + 3, 8, f.err, sizeof f.err), FEDC_OK);
  fc_chunk_rx_free(&f.rx);
}

static void test_header_checks(void) {
  fc_model_spec spec = make_spec(2, 3, 5), other;
  uint8_t sha[32] = {0};
  char err[256];
  fc_chunk_rx rx;

  /* Wrong SHA length. */
  CHECK_EQ_INT(fc_chunk_rx_begin(&rx, &spec, 44, sha, 31, 8, NULL, 1024, err, sizeof err), FEDC_ERR_PROTOCOL);
  CHECK_EQ_INT(rx.state, FC_CHUNK_RX_FAILED);
  CHECK_EQ_INT(fc_chunk_rx_feed(&rx, 0, sha, 1, err, sizeof err), FEDC_ERR_PROTOCOL);
  CHECK_EQ_INT(fc_chunk_rx_end(&rx, err, sizeof err), FEDC_ERR_PROTOCOL);
  fc_chunk_rx_free(&rx);
  CHECK_EQ_INT(fc_chunk_rx_begin(&rx, &spec, 44, sha, 0, 8, NULL, 1024, err, sizeof err), FEDC_ERR_PROTOCOL);
  CHECK_EQ_INT(fc_chunk_rx_begin(&rx, &spec, 44, sha, 33, 8, NULL, 1024, err, sizeof err), FEDC_ERR_PROTOCOL);

  /* chunk_bytes out of range. */
  CHECK_EQ_INT(fc_chunk_rx_begin(&rx, &spec, 44, sha, 32, 0, NULL, 1024, err, sizeof err), FEDC_ERR_PROTOCOL);
  CHECK_EQ_INT(fc_chunk_rx_begin(&rx, &spec, 44, sha, 32, FC_CHUNK_MAX + 1, NULL, 1024, err, sizeof err),
               FEDC_ERR_PROTOCOL);
  CHECK_EQ_INT(fc_chunk_rx_begin(&rx, &spec, 44, sha, 32, FC_CHUNK_MAX, NULL, 1024, err, sizeof err), FEDC_OK);
  fc_chunk_rx_free(&rx);

  /* Spec differs from the expected one: a shape, a name, a tensor count. */
  other = make_spec(2, 4, 5);
  CHECK_EQ_INT(fc_chunk_rx_begin(&rx, &other, 4 * 13, sha, 32, 8, &spec, 1024, err, sizeof err), FEDC_ERR_SHAPE);
  CHECK(strstr(err, "dense.weight") != NULL && strstr(err, "2x4") != NULL && strstr(err, "2x3") != NULL);
  other = spec;
  strcpy(other.t[1].name, "dense.b");
  CHECK_EQ_INT(fc_chunk_rx_begin(&rx, &other, 44, sha, 32, 8, &spec, 1024, err, sizeof err), FEDC_ERR_SHAPE);
  CHECK(strstr(err, "tensor 1") != NULL && strstr(err, "dense.b'") != NULL);
  other = spec;
  other.n = 1;
  CHECK_EQ_INT(fc_chunk_rx_begin(&rx, &other, 24, sha, 32, 8, &spec, 1024, err, sizeof err), FEDC_ERR_SHAPE);
  CHECK(strstr(err, "missing tensor 1") != NULL && strstr(err, "dense.bias") != NULL);

  /* Invalid spec (empty, bad name) even without expect. */
  memset(&other, 0, sizeof other);
  CHECK_EQ_INT(fc_chunk_rx_begin(&rx, &other, 0, sha, 32, 8, NULL, 1024, err, sizeof err), FEDC_ERR_SHAPE);
  other = spec;
  strcpy(other.t[0].name, "no spaces");
  CHECK_EQ_INT(fc_chunk_rx_begin(&rx, &other, 44, sha, 32, 8, NULL, 1024, err, sizeof err), FEDC_ERR_SHAPE);

  /* total_bytes not matching the spec. */
  CHECK_EQ_INT(fc_chunk_rx_begin(&rx, &spec, 43, sha, 32, 8, NULL, 1024, err, sizeof err), FEDC_ERR_SHAPE);
  CHECK_EQ_INT(fc_chunk_rx_begin(&rx, &spec, 48, sha, 32, 8, &spec, 1024, err, sizeof err), FEDC_ERR_SHAPE);

  /* Over max_total. */
  CHECK_EQ_INT(fc_chunk_rx_begin(&rx, &spec, 44, sha, 32, 8, NULL, 43, err, sizeof err), FEDC_ERR_TOO_LARGE);
  CHECK_EQ_INT(rx.state, FC_CHUNK_RX_FAILED);
  CHECK_EQ_INT(fc_chunk_rx_begin(&rx, &spec, 44, sha, 32, 8, NULL, 44, err, sizeof err), FEDC_OK);
  fc_chunk_rx_free(&rx);
}

static void test_end_twice(void) {
  struct fixture f;
  CHECK_EQ_INT(fixture_begin(&f), FEDC_OK);
  for (uint64_t off = 0; off < 44; off += 8)
    CHECK_EQ_INT(fc_chunk_rx_feed(&f.rx, off, f.payload + off, 44 - off < 8 ? 4 : 8, f.err, sizeof f.err), FEDC_OK);
  CHECK_EQ_INT(fc_chunk_rx_end(&f.rx, f.err, sizeof f.err), FEDC_OK);
  CHECK_EQ_INT(f.rx.state, FC_CHUNK_RX_DONE);
  CHECK_EQ_INT(fc_chunk_rx_end(&f.rx, f.err, sizeof f.err), FEDC_ERR_PROTOCOL);
  check_dead(&f);
}

/* The review's name, with a dims count that is checked first on the old
 * path: the message must neither quote the name nor carry a control byte. */
static void test_hostile_name(void) {
  static const char *names[] = {"w\n2026-01-01T00:00:00.000Z INFO  admin: forged line\x1b[31m", "ok\x1b]0;x\x07",
                                "fc1 weight"};
  for (size_t k = 0; k < sizeof names / sizeof *names; k++)
    for (size_t dims = 0; dims <= 2; dims += 2) {
      uint64_t shape[2] = {2, 3};
      Fedc__V1__TensorSpec t = FEDC__V1__TENSOR_SPEC__INIT, *tp = &t;
      t.name = (char *)names[k];
      t.dtype = FEDC__V1__DTYPE__DTYPE_F32;
      t.n_shape = dims;
      t.shape = shape;
      Fedc__V1__TensorHeader h = FEDC__V1__TENSOR_HEADER__INIT;
      h.n_tensors = 1;
      h.tensors = &tp;
      fc_model_spec spec;
      char err[300] = "";
      CHECK_EQ_INT(fc_pb_header_parse(&h, &spec, err, sizeof err), FEDC_ERR_SHAPE);
      CHECK(strstr(err, "name") != NULL && strstr(err, "forged") == NULL && strstr(err, "weight") == NULL);
      int ctl = 0;
      for (const char *p = err; *p; p++) ctl += (unsigned char)*p < 0x20 || *p == 0x7f;
      CHECK_EQ_INT(ctl, 0);
    }
}

/* The hash pipe's digest equals SHA-256 of the whole buffer whatever the
 * publish steps (uneven, repeated, backwards, none before finish), and an
 * abort with bytes pending returns without a digest. */
static void test_hash_pipe(void) {
  size_t n = (3u << 20) + 12345;
  uint8_t *buf = malloc(n), want[32], got[32];
  CHECK(buf != NULL);
  if (!buf) return;
  fill_random(buf, n, 99);
  fc_sha256(buf, n, want);
  const size_t steps[] = {1, 4096, 1000003, n};
  for (size_t k = 0; k < sizeof steps / sizeof *steps; k++) {
    fc_hash_pipe *p = NULL;
    CHECK_EQ_INT(fc_hash_pipe_start(buf, &p), FEDC_OK);
    size_t at = 0;
    if (steps[k] == 1) fc_hash_pipe_publish(p, at = n - 5); /* one jump, then single bytes */
    while (at < n) {
      at = at + steps[k] < n ? at + steps[k] : n;
      fc_hash_pipe_publish(p, at);
      fc_hash_pipe_publish(p, at / 2); /* going back is ignored */
    }
    memset(got, 0, sizeof got);
    CHECK_EQ_INT(fc_hash_pipe_finish(p, got), FEDC_OK);
    CHECK(memcmp(got, want, 32) == 0);
  }
  fc_hash_pipe *p = NULL;
  CHECK_EQ_INT(fc_hash_pipe_start(buf, &p), FEDC_OK);
  fc_hash_pipe_publish(p, n);
  fc_hash_pipe_abort(p);
  fc_hash_pipe_abort(NULL);
  free(buf);
}

/* hash_outside: the receiver checks framing only, and the caller's digest
 * decides: the right one is accepted, a wrong one is HASH, and ending with
 * the wrong kind of end is refused. */
static void test_hash_outside(void) {
  struct fixture f;
  uint8_t got[32];
  CHECK_EQ_INT(fixture_begin(&f), FEDC_OK);
  fc_chunk_rx_hash_outside(&f.rx);
  for (uint64_t off = 0; off < 44; off += 8)
    CHECK_EQ_INT(fc_chunk_rx_feed(&f.rx, off, f.payload + off, 44 - off < 8 ? 44 - off : 8, f.err, sizeof f.err),
                 FEDC_OK);
  fc_sha256(f.payload, 44, got);
  CHECK_EQ_INT(fc_chunk_rx_end_digest(&f.rx, got, f.err, sizeof f.err), FEDC_OK);
  CHECK_EQ_INT(f.rx.state, FC_CHUNK_RX_DONE);
  fc_chunk_rx_free(&f.rx);

  CHECK_EQ_INT(fixture_begin(&f), FEDC_OK);
  fc_chunk_rx_hash_outside(&f.rx);
  CHECK_EQ_INT(fc_chunk_rx_feed(&f.rx, 0, f.payload, 44 > 8 ? 8 : 44, f.err, sizeof f.err), FEDC_OK);
  for (uint64_t off = 8; off < 44; off += 8)
    CHECK_EQ_INT(fc_chunk_rx_feed(&f.rx, off, f.payload + off, 44 - off < 8 ? 44 - off : 8, f.err, sizeof f.err),
                 FEDC_OK);
  got[3] ^= 1;
  CHECK_EQ_INT(fc_chunk_rx_end_digest(&f.rx, got, f.err, sizeof f.err), FEDC_ERR_HASH);
  CHECK(strstr(f.err, "SHA-256 mismatch") != NULL);
  check_dead(&f);

  /* Set up for an outside digest but ended as usual, and the reverse. */
  CHECK_EQ_INT(fixture_begin(&f), FEDC_OK);
  fc_chunk_rx_hash_outside(&f.rx);
  CHECK_EQ_INT(fc_chunk_rx_feed(&f.rx, 0, f.payload, 8, f.err, sizeof f.err), FEDC_OK);
  for (uint64_t off = 8; off < 44; off += 8)
    fc_chunk_rx_feed(&f.rx, off, f.payload + off, 44 - off < 8 ? 44 - off : 8, f.err, sizeof f.err);
  CHECK_EQ_INT(fc_chunk_rx_end(&f.rx, f.err, sizeof f.err), FEDC_ERR_INVALID);
  check_dead(&f);
  CHECK_EQ_INT(fixture_begin(&f), FEDC_OK);
  for (uint64_t off = 0; off < 44; off += 8)
    fc_chunk_rx_feed(&f.rx, off, f.payload + off, 44 - off < 8 ? 44 - off : 8, f.err, sizeof f.err);
  fc_sha256(f.payload, 44, got);
  CHECK_EQ_INT(fc_chunk_rx_end_digest(&f.rx, got, f.err, sizeof f.err), FEDC_ERR_INVALID);
  check_dead(&f);
  /* Too late to switch once a chunk has been hashed inline. */
  CHECK_EQ_INT(fixture_begin(&f), FEDC_OK);
  CHECK_EQ_INT(fc_chunk_rx_feed(&f.rx, 0, f.payload, 8, f.err, sizeof f.err), FEDC_OK);
  fc_chunk_rx_hash_outside(&f.rx);
  CHECK_EQ_INT(f.rx.hash_outside, 0);
  fc_chunk_rx_free(&f.rx);
}

/* Back inside mid-stream (a cut upload kept to be resumed): the prefix is
 * digested from the caller's copy and the stream goes on inline, ending with
 * the header's digest; a wrong copy of the prefix is caught at the end. */
static void test_hash_inside(void) {
  struct fixture f;
  for (int wrong = 0; wrong <= 1; wrong++) {
    CHECK_EQ_INT(fixture_begin(&f), FEDC_OK);
    fc_chunk_rx_hash_outside(&f.rx);
    for (uint64_t off = 0; off < 24; off += 8)
      CHECK_EQ_INT(fc_chunk_rx_feed(&f.rx, off, f.payload + off, 8, f.err, sizeof f.err), FEDC_OK);
    uint8_t copy[24];
    memcpy(copy, f.payload, sizeof copy);
    copy[5] ^= (uint8_t)wrong;
    CHECK_EQ_INT(fc_chunk_rx_hash_inside(&f.rx, copy), FEDC_OK);
    CHECK_EQ_INT(f.rx.hash_outside, 0);
    CHECK_EQ_INT(fc_chunk_rx_hash_inside(&f.rx, copy), FEDC_OK); /* once inside, a no-op */
    for (uint64_t off = 24; off < 44; off += 8)
      CHECK_EQ_INT(fc_chunk_rx_feed(&f.rx, off, f.payload + off, 44 - off < 8 ? 44 - off : 8, f.err, sizeof f.err),
                   FEDC_OK);
    CHECK_EQ_INT(fc_chunk_rx_end(&f.rx, f.err, sizeof f.err), wrong ? FEDC_ERR_HASH : FEDC_OK);
    if (wrong) check_dead(&f);
    else
      fc_chunk_rx_free(&f.rx);
  }
}

/* The slow-transfer rule the coordinator and the aggregators share: nothing
 * before the grace; after it, the average past the grace must reach min_bps,
 * and each window of a grace or more must move a quarter of it. */
static void test_too_slow(void) {
  const uint64_t t0 = 1000000, grace = 30000, bps = 65536;
  fc_rate_guard g;
  fc_rate_guard_start(&g, t0);
  CHECK(!fc_rate_guard_too_slow(&g, t0 + grace, 0, bps, grace));         /* the grace: even nothing is fine */
  CHECK(fc_rate_guard_too_slow(&g, t0 + grace + 1000, 1024, bps, grace)); /* 1 KiB in the second after it */
  fc_rate_guard_start(&g, t0);
  CHECK(!fc_rate_guard_too_slow(&g, t0 + grace + 1000, 65536, bps, grace));
  CHECK(fc_rate_guard_too_slow(&g, t0 + grace + 10000, 600000, bps, grace)); /* 60 KB/s for 10 s */
  fc_rate_guard_start(&g, t0);
  CHECK(!fc_rate_guard_too_slow(&g, t0 + grace + 10000, 700000, bps, grace));
  CHECK(!fc_rate_guard_too_slow(&g, t0 + 10 * grace, 0, 0, grace)); /* 0: no rule */
  fc_rate_guard_start(&g, t0);
  CHECK(!fc_rate_guard_too_slow(&g, t0 - 5, 0, bps, grace)); /* a clock step back: not cut */
  /* Honest and steady at the minimum rate: never cut, over hours. */
  fc_rate_guard_start(&g, t0);
  for (uint64_t t = 1000; t <= 3600000; t += 1000)
    CHECK(!fc_rate_guard_too_slow(&g, t0 + t, bps * t / 1000, bps, grace));
  /* The bulk first, then one 1 KiB chunk every 29 s (under the idle cut-off):
   * 400 MB up front keeps the average above 64 KiB/s for 6,000 s; the
   * window rule cuts it two windows after the grace. */
  fc_rate_guard_start(&g, t0);
  uint64_t bytes = 400u << 20, t = 2000, cut = 0;
  CHECK(!fc_rate_guard_too_slow(&g, t0 + t, bytes, bps, grace));
  while (!cut && t < 6000000) {
    t += 29000, bytes += 1024;
    if (fc_rate_guard_too_slow(&g, t0 + t, bytes, bps, grace)) cut = t;
  }
  CHECK(cut > 0 && cut <= 2000 + 4 * 29000); /* under two minutes, not 6,000 s */
}

int main(void) {
  test_too_slow();
  test_hash_pipe();
  test_hash_outside();
  test_hash_inside();
  test_hostile_name();
  test_plan();
  test_round_trip();
  test_corrupted_chunk();
  test_short_stream();
  test_over_long();
  test_wrong_offset();
  test_chunk_sizes();
  test_header_checks();
  test_end_twice();
  return CHECK_DONE();
}
