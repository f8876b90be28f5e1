/*
 * test_upload_resume.c - resumable transfers (protocol 1.10, issue 26),
 * in-process: the coordinator's table of kept upload prefixes
 * (coordinator/upload_resume.h) and the client's resumable stream receiver
 * (transport/tensor_stream.h). A resume goes on only for the identity, round,
 * update (meta, length, SHA-256), chunk size and offset it was cut at; every
 * other is refused with its own code and loses nothing; prefixes die with
 * their round and deadline; a resumed stream's digest covers the whole
 * payload.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "common/chunk.h"
#include "coordinator/upload_resume.h"
#include "crypto/sha256.h"
#include "fedc/error.h"
#include "transport/tensor_stream.h"

#define CHUNK 1024u
#define NCHUNK 8u
#define TOTAL (CHUNK * NCHUNK)

static uint8_t payload[TOTAL], sha[FC_SHA256_LEN];
static fc_model_spec spec;
static int released;

static void release(void *ctx, void *slot) {
  (void)ctx;
  released++;
  free(slot);
}

/* A receiver that got the header and `chunks` chunks of payload. */
static void rx_after(fc_chunk_rx *rx, uint32_t chunks) {
  char err[300];
  memset(rx, 0, sizeof *rx);
  CHECK_EQ_INT(fc_chunk_rx_begin(rx, &spec, TOTAL, sha, FC_SHA256_LEN, CHUNK, &spec, TOTAL, err, sizeof err), FEDC_OK);
  for (uint32_t i = 0; i < chunks; i++)
    CHECK_EQ_INT(fc_chunk_rx_feed(rx, (uint64_t)i * CHUNK, payload + (size_t)i * CHUNK, CHUNK, err, sizeof err),
                 FEDC_OK);
}

static fc_partial_meta meta_of(uint64_t examples) {
  fc_partial_meta m;
  memset(&m, 0, sizeof m);
  m.model_version = 4;
  m.examples = examples;
  m.loss = 0.5f;
  return m;
}

/* alice's upload for round 5, cut after 3 chunks, kept (slot = a malloc'd byte). */
static void keep_alice(fc_partials *t, uint64_t now) {
  fc_chunk_rx rx;
  rx_after(&rx, 3);
  void *slot = malloc(1);
  fc_partial_meta m = meta_of(100);
  CHECK_EQ_INT(fc_partials_keep(t, "alice", 5, &m, &rx, &slot, 10000, now), 1);
  CHECK(slot == NULL);
  CHECK_EQ_INT(rx.state, FC_CHUNK_RX_IDLE);
}

static int take(fc_partials *t, const char *who, uint64_t round, uint64_t examples, uint64_t total,
                const uint8_t *h, uint32_t chunk, uint64_t offset, uint64_t now, fc_chunk_rx *rx, void **slot) {
  char why[300] = "";
  fc_partial_meta m = meta_of(examples);
  int rc = fc_partials_take(t, who, round, &m, total, h, chunk, offset, now, rx, slot, why, sizeof why);
  CHECK(rc == FEDC_OK || why[0]); /* every refusal says why */
  return rc;
}

static void test_refusals(void) {
  fc_partials t;
  fc_partials_init(&t, release, NULL);
  released = 0;
  keep_alice(&t, 100);
  fc_chunk_rx rx;
  void *slot = NULL;
  uint8_t other[FC_SHA256_LEN];
  memcpy(other, sha, sizeof other);
  other[0] ^= 1;
  /* Another identity never reaches alice's bytes (and they stay). */
  CHECK_EQ_INT(take(&t, "bob", 5, 100, TOTAL, sha, CHUNK, 3 * CHUNK, 200, &rx, &slot), FEDC_ERR_NOT_FOUND);
  /* Another update: SHA-256, length, meta. */
  CHECK_EQ_INT(take(&t, "alice", 5, 100, TOTAL, other, CHUNK, 3 * CHUNK, 200, &rx, &slot), FEDC_ERR_HASH);
  CHECK_EQ_INT(take(&t, "alice", 5, 100, TOTAL - 4, sha, CHUNK, 3 * CHUNK, 200, &rx, &slot), FEDC_ERR_HASH);
  CHECK_EQ_INT(take(&t, "alice", 5, 101, TOTAL, sha, CHUNK, 3 * CHUNK, 200, &rx, &slot), FEDC_ERR_HASH);
  /* Another encoding (1.9): the kept decoder would read the rest wrongly. */
  {
    char why[300];
    fc_partial_meta m = meta_of(100);
    m.upload_bits = 8;
    m.upload_block = 1024;
    CHECK_EQ_INT(fc_partials_take(&t, "alice", 5, &m, TOTAL, sha, CHUNK, 3 * CHUNK, 200, &rx, &slot, why, sizeof why),
                 FEDC_ERR_HASH);
  }
  /* Another chunk size; an offset beyond the bytes received; one below. */
  CHECK_EQ_INT(take(&t, "alice", 5, 100, TOTAL, sha, 2 * CHUNK, 3 * CHUNK, 200, &rx, &slot), FEDC_ERR_PROTOCOL);
  CHECK_EQ_INT(take(&t, "alice", 5, 100, TOTAL, sha, CHUNK, 4 * CHUNK, 200, &rx, &slot), FEDC_ERR_TOO_LARGE);
  CHECK_EQ_INT(take(&t, "alice", 5, 100, TOTAL, sha, CHUNK, 2 * CHUNK, 200, &rx, &slot), FEDC_ERR_PROTOCOL);
  /* Another round: refused, the prefix stays for its own round. */
  CHECK_EQ_INT(take(&t, "alice", 6, 100, TOTAL, sha, CHUNK, 3 * CHUNK, 200, &rx, &slot), FEDC_ERR_REJECTED);
  CHECK(slot == NULL);
  CHECK_EQ_INT(released, 0);
  CHECK_EQ_INT(t.n, 1);
  /* The query: alice learns her offset; bob, another update or round learn nothing. */
  char why[300];
  uint64_t off = 99;
  CHECK_EQ_INT(fc_partials_query(&t, "alice", 5, TOTAL, sha, CHUNK, 200, &off, why, sizeof why), FEDC_OK);
  CHECK_EQ_INT(off, 3 * CHUNK);
  CHECK_EQ_INT(fc_partials_query(&t, "bob", 5, TOTAL, sha, CHUNK, 200, &off, why, sizeof why), FEDC_ERR_NOT_FOUND);
  CHECK_EQ_INT(off, 0);
  CHECK_EQ_INT(fc_partials_query(&t, "alice", 5, TOTAL, other, CHUNK, 200, &off, why, sizeof why),
               FEDC_ERR_NOT_FOUND);
  CHECK_EQ_INT(fc_partials_query(&t, "alice", 4, TOTAL, sha, CHUNK, 200, &off, why, sizeof why), FEDC_ERR_NOT_FOUND);
  CHECK_EQ_INT(fc_partials_query(&t, "alice", 5, TOTAL, sha, 512, 200, &off, why, sizeof why), FEDC_ERR_NOT_FOUND);
  /* Past the deadline: stale, dropped. */
  CHECK_EQ_INT(take(&t, "alice", 5, 100, TOTAL, sha, CHUNK, 3 * CHUNK, 10000, &rx, &slot), FEDC_ERR_REJECTED);
  CHECK_EQ_INT(t.n, 0);
  CHECK_EQ_INT(released, 1);
  fc_partials_free(&t);
}

/* The right resume goes on where the cut stream stopped; the digest over the
 * whole payload verifies (and a resumed stream with other bytes would not). */
static void test_resume_completes(void) {
  fc_partials t;
  fc_partials_init(&t, release, NULL);
  released = 0;
  keep_alice(&t, 100);
  fc_chunk_rx rx;
  void *slot = NULL;
  char err[300];
  CHECK_EQ_INT(take(&t, "alice", 5, 100, TOTAL, sha, CHUNK, 3 * CHUNK, 200, &rx, &slot), FEDC_OK);
  CHECK(slot != NULL);
  CHECK_EQ_INT(t.n, 0);
  CHECK_EQ_INT(rx.received, 3 * CHUNK);
  for (uint32_t i = 3; i < NCHUNK; i++)
    CHECK_EQ_INT(fc_chunk_rx_feed(&rx, (uint64_t)i * CHUNK, payload + (size_t)i * CHUNK, CHUNK, err, sizeof err),
                 FEDC_OK);
  CHECK_EQ_INT(fc_chunk_rx_end(&rx, err, sizeof err), FEDC_OK);
  fc_chunk_rx_free(&rx);
  free(slot);
  /* Spliced: the kept prefix, then other bytes: the final hash refuses it. */
  keep_alice(&t, 100);
  slot = NULL;
  CHECK_EQ_INT(take(&t, "alice", 5, 100, TOTAL, sha, CHUNK, 3 * CHUNK, 200, &rx, &slot), FEDC_OK);
  uint8_t forged[CHUNK];
  memset(forged, 7, sizeof forged);
  for (uint32_t i = 3; i < NCHUNK; i++)
    CHECK_EQ_INT(fc_chunk_rx_feed(&rx, (uint64_t)i * CHUNK, forged, CHUNK, err, sizeof err), FEDC_OK);
  CHECK_EQ_INT(fc_chunk_rx_end(&rx, err, sizeof err), FEDC_ERR_HASH);
  fc_chunk_rx_free(&rx);
  free(slot);
  CHECK_EQ_INT(released, 0);
  fc_partials_free(&t);
}

/* What is kept, and for how long: one per identity, none for a closed round,
 * a useless prefix never, the oldest given up when a slot is needed. */
static void test_lifetime(void) {
  fc_partials t;
  fc_partials_init(&t, release, NULL);
  released = 0;
  fc_partial_meta m = meta_of(100);
  fc_chunk_rx rx;
  void *slot;
  /* Nothing received, or everything: nothing to resume. */
  rx_after(&rx, 0);
  slot = malloc(1);
  CHECK_EQ_INT(fc_partials_keep(&t, "alice", 5, &m, &rx, &slot, 10000, 100), 0);
  rx_after(&rx, NCHUNK);
  slot = malloc(1);
  CHECK_EQ_INT(fc_partials_keep(&t, "alice", 5, &m, &rx, &slot, 10000, 100), 0);
  /* Past the deadline. */
  rx_after(&rx, 2);
  slot = malloc(1);
  CHECK_EQ_INT(fc_partials_keep(&t, "alice", 5, &m, &rx, &slot, 10000, 10000), 0);
  CHECK_EQ_INT(released, 3);
  CHECK_EQ_INT(t.n, 0);
  /* One per identity: a second cut replaces the first. */
  keep_alice(&t, 100);
  keep_alice(&t, 150);
  CHECK_EQ_INT(t.n, 1);
  CHECK_EQ_INT(released, 4);
  /* A fresh upload drops it. */
  CHECK_EQ_INT(fc_partials_drop_client(&t, "alice"), 1);
  CHECK_EQ_INT(released, 5);
  /* The oldest goes first when a slot is needed. */
  keep_alice(&t, 300);
  rx_after(&rx, 2);
  slot = malloc(1);
  CHECK_EQ_INT(fc_partials_keep(&t, "bob", 5, &m, &rx, &slot, 10000, 200), 1);
  CHECK_EQ_INT(fc_partials_evict_oldest(&t), 1);
  char why[300];
  uint64_t off;
  CHECK_EQ_INT(fc_partials_query(&t, "bob", 5, TOTAL, sha, CHUNK, 400, &off, why, sizeof why), FEDC_ERR_NOT_FOUND);
  CHECK_EQ_INT(fc_partials_query(&t, "alice", 5, TOTAL, sha, CHUNK, 400, &off, why, sizeof why), FEDC_OK);
  /* The round closes: its prefixes go, and none is kept for it afterwards. */
  CHECK_EQ_INT(fc_partials_round_closed(&t, 5), 1);
  CHECK_EQ_INT(t.n, 0);
  rx_after(&rx, 2);
  slot = malloc(1);
  CHECK_EQ_INT(fc_partials_keep(&t, "alice", 5, &m, &rx, &slot, 10000, 500), 0);
  rx_after(&rx, 2);
  slot = malloc(1);
  CHECK_EQ_INT(fc_partials_keep(&t, "alice", 6, &m, &rx, &slot, 10000, 500), 1);
  fc_chunk_rx tr;
  void *ts = NULL;
  CHECK_EQ_INT(take(&t, "alice", 5, 100, TOTAL, sha, CHUNK, 2 * CHUNK, 600, &tr, &ts), FEDC_ERR_REJECTED);
  fc_partials_free(&t);
  CHECK_EQ_INT(t.n, 0);
  CHECK_EQ_INT(released, 9);
}

/* ---- the client's resumable receiver (downloads) ---- */

static int rx_header(fc_stream_rx *s, const uint8_t *h_sha, uint64_t start) {
  fc_pb_header h;
  fc_pb_header_build(&h, &spec, TOTAL, h_sha, CHUNK);
  h.h.start_offset = start;
  Fedc__V1__TensorStreamMsg m = FEDC__V1__TENSOR_STREAM_MSG__INIT;
  m.header = &h.h;
  char err[300];
  return fc_stream_rx_msg(s, &m, err, sizeof err);
}

static int rx_chunk(fc_stream_rx *s, uint32_t i) {
  Fedc__V1__TensorChunk c = FEDC__V1__TENSOR_CHUNK__INIT;
  c.offset = (uint64_t)i * CHUNK;
  c.data.data = payload + c.offset;
  c.data.len = CHUNK;
  Fedc__V1__TensorStreamMsg m = FEDC__V1__TENSOR_STREAM_MSG__INIT;
  m.chunk = &c;
  char err[300];
  return fc_stream_rx_msg(s, &m, err, sizeof err);
}

static int rx_end(fc_stream_rx *s, uint8_t **buf_out) {
  fc_model_spec got;
  float *p = NULL;
  uint64_t total = 0;
  uint8_t out[FC_SHA256_LEN];
  char err[300];
  int rc = fc_stream_rx_end(s, &got, &p, &total, out, NULL, err, sizeof err);
  *buf_out = (uint8_t *)p;
  return rc;
}

static void test_download_resume(void) {
  fc_stream_rx s;
  uint8_t *got = NULL;
  /* Cut after 5 chunks, resumed at 5 * CHUNK: the whole payload, verified. */
  fc_stream_rx_init(&s, TOTAL, sha, 0);
  CHECK_EQ_INT(rx_header(&s, sha, 0), FEDC_OK);
  for (uint32_t i = 0; i < 5; i++) CHECK_EQ_INT(rx_chunk(&s, i), FEDC_OK);
  CHECK_EQ_INT(fc_stream_rx_resume(&s), 5 * CHUNK);
  CHECK_EQ_INT(rx_header(&s, sha, 5 * CHUNK), FEDC_OK);
  for (uint32_t i = 5; i < NCHUNK; i++) CHECK_EQ_INT(rx_chunk(&s, i), FEDC_OK);
  CHECK_EQ_INT(rx_end(&s, &got), FEDC_OK);
  CHECK(got && memcmp(got, payload, TOTAL) == 0);
  free(got);
  fc_stream_rx_free(&s);
  /* A resumed header announcing another payload, or another offset: refused. */
  uint8_t other[FC_SHA256_LEN];
  memcpy(other, sha, sizeof other);
  other[5] ^= 0x80;
  fc_stream_rx_init(&s, TOTAL, NULL, 0);
  CHECK_EQ_INT(rx_header(&s, sha, 0), FEDC_OK);
  for (uint32_t i = 0; i < 3; i++) CHECK_EQ_INT(rx_chunk(&s, i), FEDC_OK);
  CHECK_EQ_INT(fc_stream_rx_resume(&s), 3 * CHUNK);
  CHECK_EQ_INT(rx_header(&s, other, 3 * CHUNK), FEDC_ERR_HASH);
  CHECK_EQ_INT(rx_header(&s, sha, 2 * CHUNK), FEDC_ERR_PROTOCOL);
  /* A sender that does not resume (start_offset 0): the payload starts over. */
  CHECK_EQ_INT(rx_header(&s, sha, 0), FEDC_OK);
  for (uint32_t i = 0; i < NCHUNK; i++) CHECK_EQ_INT(rx_chunk(&s, i), FEDC_OK);
  CHECK_EQ_INT(rx_end(&s, &got), FEDC_OK);
  CHECK(got && memcmp(got, payload, TOTAL) == 0);
  free(got);
  fc_stream_rx_free(&s);
  /* A fresh stream that claims to resume: nothing was kept. */
  fc_stream_rx_init(&s, TOTAL, NULL, 0);
  CHECK_EQ_INT(rx_header(&s, sha, 2 * CHUNK), FEDC_ERR_PROTOCOL);
  fc_stream_rx_free(&s);
  /* Nothing to resume: never begun, or nothing received. */
  fc_stream_rx_init(&s, TOTAL, NULL, 0);
  CHECK_EQ_INT(fc_stream_rx_resume(&s), 0);
  CHECK_EQ_INT(rx_header(&s, sha, 0), FEDC_OK);
  CHECK_EQ_INT(fc_stream_rx_resume(&s), 0);
  fc_stream_rx_free(&s);
}

int main(void) {
  uint64_t x = 88172645463325252ull;
  for (size_t i = 0; i < TOTAL; i++) {
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    payload[i] = (uint8_t)x;
  }
  fc_sha256(payload, TOTAL, sha);
  memset(&spec, 0, sizeof spec);
  uint64_t shape[1] = {TOTAL / 4};
  fc_model_spec_add(&spec, "w", 1, shape);
  test_refusals();
  test_resume_completes();
  test_lifetime();
  test_download_resume();
  return CHECK_DONE();
}
