/*
 * test_stream_bytes.c - chunks decoded in place (fc_stream_rx_bytes,
 * transport/tensor_stream.c): a model stream whose chunk messages arrive as
 * gRPC byte buffers cut into slices at awkward places (inside a tag, a varint,
 * the data) is assembled straight into the payload buffer, byte for byte,
 * with its SHA-256 checked at the end; every message of another shape (the
 * header, a chunk at the wrong offset, over chunk_bytes or past the end, an
 * unknown field, a repeated chunk field) is left to the unpacking path, which
 * gives the error it always gave. The sending side (fc_chunk_msg_ref): an
 * upload chunk referenced rather than packed is byte for byte what protobuf-c
 * packs, and its owner is released exactly once, when gRPC lets go.
 */
#include <grpc/byte_buffer.h>
#include <grpc/byte_buffer_reader.h>
#include <grpc/grpc.h>
#include <grpc/slice.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "common/chunk.h"
#include "crypto/sha256.h"
#include "fedc/error.h"
#include "transport/tensor_stream.h"

#define CHUNK 1000u

static void fill(uint8_t *p, size_t n, uint64_t x) {
  for (size_t i = 0; i < n; i++) {
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    p[i] = (uint8_t)(x >> 24);
  }
}

/* wire bytes, cut into slices of the lengths in cuts (the rest in one). */
static grpc_byte_buffer *sliced(const uint8_t *wire, size_t n, const size_t *cuts, size_t ncuts) {
  grpc_slice sl[16];
  size_t k = 0, at = 0;
  for (size_t i = 0; i < ncuts && at < n && k < 15; i++) {
    size_t len = cuts[i] < n - at ? cuts[i] : n - at;
    sl[k++] = grpc_slice_from_copied_buffer((const char *)wire + at, len);
    at += len;
  }
  if (at < n) sl[k++] = grpc_slice_from_copied_buffer((const char *)wire + at, n - at);
  grpc_byte_buffer *bb = grpc_raw_byte_buffer_create(sl, k);
  for (size_t i = 0; i < k; i++) grpc_slice_unref(sl[i]);
  return bb;
}

static size_t pack_chunk(const uint8_t *payload, uint64_t off, size_t len, uint8_t *wire) {
  Fedc__V1__TensorChunk c = FEDC__V1__TENSOR_CHUNK__INIT;
  c.offset = off;
  c.data.data = (uint8_t *)payload + off;
  c.data.len = len;
  Fedc__V1__TensorStreamMsg m = FEDC__V1__TENSOR_STREAM_MSG__INIT;
  m.chunk = &c;
  return protobuf_c_message_pack(&m.base, wire);
}

/* A receiver begun on a 2-tensor model of total bytes (the header through
 * the usual path), into a kept buffer. */
static void begin(fc_stream_rx *s, const uint8_t *payload, uint64_t total, uint8_t **buf, uint64_t *cap,
                  fc_model_spec *spec) {
  memset(spec, 0, sizeof *spec);
  uint64_t a[2] = {total / 4 - 3, 1}, b[1] = {3};
  fc_model_spec_add(spec, "w", 2, a);
  fc_model_spec_add(spec, "b", 1, b);
  uint8_t sha[FC_SHA256_LEN];
  CHECK_EQ_INT(fc_sha256(payload, total, sha), FEDC_OK);
  fc_pb_header h;
  fc_pb_header_build(&h, spec, total, sha, CHUNK);
  Fedc__V1__TensorStreamMsg m = FEDC__V1__TENSOR_STREAM_MSG__INIT;
  m.header = &h.h;
  fc_stream_rx_init(s, 1u << 30, sha, 0);
  fc_stream_rx_into(s, buf, cap, 0);
  char err[200];
  /* The header message is not a chunk: never taken in place. */
  uint8_t wire[512];
  size_t n = protobuf_c_message_pack(&m.base, wire);
  grpc_byte_buffer *bb = sliced(wire, n, NULL, 0);
  int rc = -1;
  CHECK_EQ_INT(fc_stream_rx_bytes(s, bb, &rc, err, sizeof err), 0);
  grpc_byte_buffer_destroy(bb);
  CHECK_EQ_INT(fc_stream_rx_msg(s, &m, err, sizeof err), FEDC_OK);
}

static void test_in_place(void) {
  const uint64_t total = 4 * 2600; /* 11 chunks, the last short */
  uint8_t *payload = malloc(total), *wire = malloc(CHUNK + 64), *buf = NULL;
  uint64_t cap = 0;
  CHECK(payload && wire);
  if (!payload || !wire) goto out;
  fill(payload, total, 7);
  fc_stream_rx s;
  fc_model_spec spec;
  begin(&s, payload, total, &buf, &cap, &spec);
  char err[200];
  uint64_t off;
  size_t len;
  for (uint64_t i = 0; fc_chunk_plan(total, CHUNK, i, &off, &len) == FEDC_OK; i++) {
    size_t n = pack_chunk(payload, off, len, wire);
    /* Cuts inside the tag/length/offset varints, then inside the data. */
    size_t cuts[4] = {1 + i % 3, 1 + i % 2, 2, 100 + i};
    grpc_byte_buffer *bb = sliced(wire, n, cuts, 4);
    int rc = -1;
    CHECK_EQ_INT(fc_stream_rx_bytes(&s, bb, &rc, err, sizeof err), 1);
    CHECK_EQ_INT(rc, FEDC_OK);
    grpc_byte_buffer_destroy(bb);
  }
  fc_model_spec got;
  uint64_t got_total = 0;
  uint8_t sha[FC_SHA256_LEN];
  CHECK_EQ_INT(fc_stream_rx_end(&s, &got, NULL, &got_total, sha, NULL, err, sizeof err), FEDC_OK);
  CHECK_EQ_INT(got_total, total);
  CHECK(buf && memcmp(buf, payload, total) == 0);
  fc_stream_rx_free(&s);
out:
  free(payload);
  free(wire);
  free(buf);
}

/* Offer wire to the in-place path (must decline it), then the usual path:
 * its verdict. */
static int declined_then(fc_stream_rx *s, const uint8_t *wire, size_t n) {
  char err[200];
  grpc_byte_buffer *bb = sliced(wire, n, NULL, 0);
  int rc = -1;
  CHECK_EQ_INT(fc_stream_rx_bytes(s, bb, &rc, err, sizeof err), 0);
  CHECK_EQ_INT(rc, -1);
  grpc_byte_buffer_destroy(bb);
  Fedc__V1__TensorStreamMsg *m =
      (Fedc__V1__TensorStreamMsg *)protobuf_c_message_unpack(&fedc__v1__tensor_stream_msg__descriptor, NULL, n, wire);
  if (!m) return FEDC_ERR_PROTOCOL;
  rc = fc_stream_rx_msg(s, m, err, sizeof err);
  protobuf_c_message_free_unpacked(&m->base, NULL);
  return rc;
}

static void test_declined(void) {
  const uint64_t total = 4 * 600;
  uint8_t *payload = malloc(total), *wire = malloc(2 * CHUNK + 64), *buf = NULL;
  uint64_t cap = 0;
  CHECK(payload && wire);
  if (!payload || !wire) goto out;
  fill(payload, total, 11);
  fc_stream_rx s;
  fc_model_spec spec;
  size_t n;

  /* A chunk at the wrong offset: the usual path refuses it as ever. */
  begin(&s, payload, total, &buf, &cap, &spec);
  n = pack_chunk(payload, CHUNK, CHUNK, wire);
  CHECK_EQ_INT(declined_then(&s, wire, n), FEDC_ERR_PROTOCOL);
  fc_stream_rx_free(&s);

  /* Over chunk_bytes. */
  begin(&s, payload, total, &buf, &cap, &spec);
  n = pack_chunk(payload, 0, CHUNK + 1, wire);
  CHECK_EQ_INT(declined_then(&s, wire, n), FEDC_ERR_TOO_LARGE);
  fc_stream_rx_free(&s);

  /* An unknown field after the data (field 15, varint): the in-place path
   * does not guess; protobuf-c skips it and the chunk is good. */
  begin(&s, payload, total, &buf, &cap, &spec);
  n = pack_chunk(payload, 0, CHUNK, wire);
  uint8_t *ext = malloc(n + 2);
  CHECK(ext != NULL);
  if (ext) {
    /* 0x12, a 2-byte length (n - 3 bytes of TensorChunk follow), the chunk;
     * then field 15 (varint 1) appended, the length 2 more. */
    memcpy(ext, wire, n);
    CHECK_EQ_INT((ext[1] & 0x7f) | (uint64_t)ext[2] << 7, n - 3);
    ext[n] = 0x78;
    ext[n + 1] = 0x01;
    ext[1] = (uint8_t)(0x80 | ((n - 1) & 0x7f));
    ext[2] = (uint8_t)((n - 1) >> 7);
    CHECK_EQ_INT(declined_then(&s, ext, n + 2), FEDC_OK);
    CHECK_EQ_INT(s.rx.received, CHUNK);
    free(ext);
  }
  fc_stream_rx_free(&s);

  /* Two chunk fields in one message (protobuf merges them): declined. */
  begin(&s, payload, total, &buf, &cap, &spec);
  n = pack_chunk(payload, 0, 10, wire);
  size_t n2 = pack_chunk(payload, 0, 20, wire + n);
  CHECK_EQ_INT(declined_then(&s, wire, n + n2), FEDC_OK);
  CHECK_EQ_INT(s.rx.received, 20);
  fc_stream_rx_free(&s);
out:
  free(payload);
  free(wire);
  free(buf);
}

static int released;
static void count_release(void *owner) {
  CHECK(owner == &released);
  released++;
}

static void test_send_by_reference(void) {
  uint8_t *data = malloc(70000), *want = malloc(70100);
  CHECK(data && want);
  if (!data || !want) goto out;
  fill(data, 70000, 3);
  /* offset 0 (left out on the wire), 1- to 3-byte varints, a 9-byte offset */
  const uint64_t offs[] = {0, 5, 300, 1ull << 20, 1ull << 60};
  const size_t lens[] = {1, 127, 128, 16384, 70000};
  for (size_t i = 0; i < 5; i++) {
    Fedc__V1__TensorChunk c = FEDC__V1__TENSOR_CHUNK__INIT;
    c.offset = offs[i];
    c.data.data = data;
    c.data.len = lens[i];
    Fedc__V1__UploadMsg m = FEDC__V1__UPLOAD_MSG__INIT;
    m.chunk = &c;
    size_t n = protobuf_c_message_pack(&m.base, want);
    released = 0;
    grpc_byte_buffer *bb = fc_chunk_msg_ref(3, offs[i], data, lens[i], count_release, &released);
    CHECK(bb != NULL);
    if (!bb) continue;
    CHECK_EQ_INT(released, 0);
    grpc_byte_buffer_reader r;
    CHECK(grpc_byte_buffer_reader_init(&r, bb));
    grpc_slice all = grpc_byte_buffer_reader_readall(&r);
    grpc_byte_buffer_reader_destroy(&r);
    CHECK_EQ_INT(GRPC_SLICE_LENGTH(all), n);
    CHECK(GRPC_SLICE_LENGTH(all) == n && memcmp(GRPC_SLICE_START_PTR(all), want, n) == 0);
    grpc_slice_unref(all);
    grpc_byte_buffer *copy = grpc_byte_buffer_copy(bb); /* another holder of the same data */
    grpc_byte_buffer_destroy(bb);
    CHECK_EQ_INT(released, 0);
    grpc_byte_buffer_destroy(copy);
    CHECK_EQ_INT(released, 1);
  }
out:
  free(data);
  free(want);
}

int main(void) {
  grpc_init();
  test_in_place();
  test_declined();
  test_send_by_reference();
  grpc_shutdown();
  return CHECK_DONE();
}
