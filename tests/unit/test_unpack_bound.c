/*
 * test_unpack_bound.c - fc_unpack_message bounds what a message may unpack
 * to, not only its size on the wire (transport/util.c).
 *
 * An empty submessage is 2 bytes on the wire and a struct plus a pointer
 * unpacked: a SubmitPartial first message (20 MiB cap, any aggregator) or an
 * UploadUpdate one (4 MiB, any client, also at an aggregator) of nothing but
 * empty repeated entries unpacked to 48-60 x its size. Such messages are
 * refused (FEDC_ERR_TOO_LARGE) before the memory is taken; real ones (a full
 * PartialMeta of 65,536 updates with short names, a header of many tensors,
 * 20,000 abandoned rounds: the sparsest) still unpack, the full PartialMeta
 * also at SubmitPartial's tighter ratio (8), which refuses what 24 lets
 * through.
 */
#include <grpc/byte_buffer.h>
#include <grpc/slice.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "fedc/error.h"
#include "fedc/v1/fedc.pb-c.h"
#include "transport/transport.h"
#include "transport/transport_int.h"

#define PARTIAL_CAP ((4u << 20) + 4096 + (16u << 20)) /* coordinator.c: SubmitPartial's max_recv */
#define UPLOAD_CAP ((4u << 20) + 4096)                 /* UploadUpdate's */
#define PARTIAL_RATIO 8                                /* coordinator.c: SubmitPartial's unpack_ratio */

static size_t put_varint(uint8_t *p, uint64_t v) {
  size_t n = 0;
  do {
    uint8_t b = v & 0x7f;
    v >>= 7;
    p[n++] = b | (v ? 0x80 : 0);
  } while (v);
  return n;
}

/* outer field `outer` (LEN) holding `entries` empty entries of field `inner`. */
static grpc_byte_buffer *empty_entries(uint32_t outer, uint32_t inner, size_t entries) {
  size_t body = 2 * entries;
  uint8_t *buf = malloc(body + 16);
  size_t n = 0;
  buf[n++] = (uint8_t)(outer << 3 | 2);
  n += put_varint(buf + n, body);
  for (size_t i = 0; i < entries; i++) {
    buf[n++] = (uint8_t)(inner << 3 | 2);
    buf[n++] = 0;
  }
  grpc_slice s = grpc_slice_new(buf, n, free);
  grpc_byte_buffer *bb = grpc_raw_byte_buffer_create(&s, 1);
  grpc_slice_unref(s);
  return bb;
}

static void test_empty_entries_refused(void) {
  ProtobufCMessage *m = NULL;
  /* PartialMsg.meta (1) with 2^20 empty PartialMeta.updates (4): 2 MiB on the wire, ~100 MB unpacked. */
  grpc_byte_buffer *bb = empty_entries(1, 4, (size_t)1 << 20);
  CHECK(grpc_byte_buffer_length(bb) < PARTIAL_CAP);
  int rc = fc_unpack_message(bb, &fedc__v1__partial_msg__descriptor, PARTIAL_CAP, PARTIAL_RATIO, &m);
  CHECK_EQ_INT(rc, FEDC_ERR_TOO_LARGE);
  if (rc == FEDC_OK) protobuf_c_message_free_unpacked(m, NULL);
  grpc_byte_buffer_destroy(bb);
  /* UploadMsg.header (2) with empty TensorHeader.tensors (2), just under UploadUpdate's cap. */
  m = NULL;
  bb = empty_entries(2, 2, (UPLOAD_CAP - 16) / 2);
  CHECK(grpc_byte_buffer_length(bb) <= UPLOAD_CAP);
  rc = fc_unpack_message(bb, &fedc__v1__upload_msg__descriptor, UPLOAD_CAP, 0, &m);
  CHECK_EQ_INT(rc, FEDC_ERR_TOO_LARGE);
  if (rc == FEDC_OK) protobuf_c_message_free_unpacked(m, NULL);
  grpc_byte_buffer_destroy(bb);
}

/* SubmitPartial's tighter ratio: update records with a 10-character name
 * and nothing else (no SHA-256: never a real one) unpack to about 12 x,
 * which the default 24 lets through and the leader's 8 refuses. */
static void test_partial_ratio(void) {
  enum { N = 200000 };
  size_t body = N * 14, n = 0;
  uint8_t *buf = malloc(body + 16);
  buf[n++] = 1 << 3 | 2; /* PartialMsg.meta */
  n += put_varint(buf + n, body);
  for (size_t i = 0; i < N; i++) {
    buf[n++] = 4 << 3 | 2; /* PartialMeta.updates */
    buf[n++] = 12;
    buf[n++] = 1 << 3 | 2; /* PartialUpdate.client */
    buf[n++] = 10;
    memcpy(buf + n, "aggclient0", 10);
    n += 10;
  }
  grpc_slice sl = grpc_slice_new(buf, n, free);
  grpc_byte_buffer *bb = grpc_raw_byte_buffer_create(&sl, 1);
  grpc_slice_unref(sl);
  ProtobufCMessage *m = NULL;
  CHECK_EQ_INT(fc_unpack_message(bb, &fedc__v1__partial_msg__descriptor, PARTIAL_CAP, PARTIAL_RATIO, &m),
               FEDC_ERR_TOO_LARGE);
  CHECK_EQ_INT(fc_unpack_message(bb, &fedc__v1__partial_msg__descriptor, PARTIAL_CAP, 0, &m), FEDC_OK);
  if (m) {
    CHECK_EQ_INT(((const Fedc__V1__PartialMsg *)m)->meta->n_updates, N);
    protobuf_c_message_free_unpacked(m, NULL);
  }
  grpc_byte_buffer_destroy(bb);
}

static void test_real_messages_unpack(void) {
  enum { N = 65536, T = 4096 };
  Fedc__V1__PartialUpdate *ups = calloc(N, sizeof *ups);
  Fedc__V1__PartialUpdate **ptrs = calloc(N, sizeof *ptrs);
  char(*names)[8] = calloc(N, sizeof *names);
  uint8_t sha[32];
  memset(sha, 7, sizeof sha);
  for (size_t i = 0; i < N; i++) {
    Fedc__V1__PartialUpdate pu = FEDC__V1__PARTIAL_UPDATE__INIT;
    snprintf(names[i], sizeof names[i], "c%zu", i);
    pu.client = names[i];
    pu.num_examples = 1;
    pu.weight = 1;
    pu.sha256.data = sha;
    pu.sha256.len = sizeof sha;
    pu.bytes = 40;
    ups[i] = pu;
    ptrs[i] = &ups[i];
  }
  Fedc__V1__PartialMeta meta = FEDC__V1__PARTIAL_META__INIT;
  meta.round = 3;
  meta.total_weight = N;
  meta.n_updates = N;
  meta.updates = ptrs;
  /* A header of many small tensors of 8 one-byte dims (the densest real header). */
  Fedc__V1__TensorSpec *specs = calloc(T, sizeof *specs);
  Fedc__V1__TensorSpec **sp = calloc(T, sizeof *sp);
  uint64_t shape[8] = {1, 1, 1, 1, 1, 1, 1, 1};
  for (size_t i = 0; i < T; i++) {
    Fedc__V1__TensorSpec s = FEDC__V1__TENSOR_SPEC__INIT;
    s.name = (char *)"w";
    s.n_shape = 8;
    s.shape = shape;
    specs[i] = s;
    sp[i] = &specs[i];
  }
  Fedc__V1__TensorHeader h = FEDC__V1__TENSOR_HEADER__INIT;
  h.total_bytes = 4 * T;
  h.n_tensors = T;
  h.tensors = sp;
  Fedc__V1__PartialMsg pm = FEDC__V1__PARTIAL_MSG__INIT;
  pm.meta = &meta;
  pm.header = &h;
  grpc_byte_buffer *bb = fc_pack_message(&pm.base);
  ProtobufCMessage *m = NULL;
  CHECK_EQ_INT(fc_unpack_message(bb, &fedc__v1__partial_msg__descriptor, PARTIAL_CAP, PARTIAL_RATIO, &m), FEDC_OK);
  if (m) {
    const Fedc__V1__PartialMsg *got = (const Fedc__V1__PartialMsg *)m;
    CHECK(got->meta && got->meta->n_updates == N && !strcmp(got->meta->updates[N - 1]->client, "c65535"));
    CHECK(got->header && got->header->n_tensors == T && got->header->tensors[T - 1]->n_shape == 8);
    protobuf_c_message_free_unpacked(m, NULL);
  }
  grpc_byte_buffer_destroy(bb);
  /* The sparsest real message: many abandoned rounds (round number and
   * outcome only, ~20 bytes for a 232-byte struct). */
  enum { R = 20000 };
  Fedc__V1__RoundRecord *rr = calloc(R, sizeof *rr);
  Fedc__V1__RoundRecord **rp = calloc(R, sizeof *rp);
  for (size_t i = 0; i < R; i++) {
    Fedc__V1__RoundRecord r = FEDC__V1__ROUND_RECORD__INIT;
    r.round = 1 + i;
    r.outcome = (char *)"abandoned";
    rr[i] = r;
    rp[i] = &rr[i];
  }
  Fedc__V1__RoundsResponse rs = FEDC__V1__ROUNDS_RESPONSE__INIT;
  rs.n_rounds = R;
  rs.rounds = rp;
  bb = fc_pack_message(&rs.base);
  m = NULL;
  CHECK_EQ_INT(fc_unpack_message(bb, &fedc__v1__rounds_response__descriptor, 64u << 20, 0, &m), FEDC_OK);
  if (m) protobuf_c_message_free_unpacked(m, NULL);
  grpc_byte_buffer_destroy(bb);
  free(rr);
  free(rp);
  /* A small message (the 64 KiB floor): a CheckIn-sized one of empty entries unpacks. */
  m = NULL;
  bb = empty_entries(2, 2, 100);
  CHECK_EQ_INT(fc_unpack_message(bb, &fedc__v1__upload_msg__descriptor, UPLOAD_CAP, 0, &m), FEDC_OK);
  if (m) protobuf_c_message_free_unpacked(m, NULL);
  grpc_byte_buffer_destroy(bb);
  free(specs);
  free(sp);
  free(names);
  free(ptrs);
  free(ups);
}

int main(void) {
  fc_transport_init();
  test_empty_entries_refused();
  test_real_messages_unpack();
  test_partial_ratio();
  fc_transport_shutdown();
  return CHECK_DONE();
}
