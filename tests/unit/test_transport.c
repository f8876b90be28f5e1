/*
 * test_transport.c - transport/ end to end: an in-process server with the test
 * service (tests/support/testsvc.h) and clients over real mutual TLS on
 * 127.0.0.1 with a throwaway PKI.
 *
 * Covered: unary round trip; role checks both ways; a certificate from another
 * CA (refused by the server, diagnosed on the client); no certificate (refused
 * locally by fc_channel_create, and by the server's handshake when a raw gRPC
 * client offers none); an expired certificate; an unreachable port; a wrong
 * protocol major; per-method receive limits (our check and gRPC's) and that the
 * server keeps serving afterwards; a 64 MiB client stream and a 16 MiB server
 * stream verified by SHA-256; a corrupted chunk; insecure mode refused off
 * loopback; a client going quiet mid-stream cut off by the idle timeout;
 * shutdown with calls in flight bounded by the grace period; identity taken
 * only from the certificate's one spiffe URI SAN (certificates with the ID in
 * a DNS or e-mail SAN, or with two spiffe URIs in different case, are minted
 * here with OpenSSL, signed by the test CA, and refused); a malformed
 * fedc-protocol header refused.
 */
#define _XOPEN_SOURCE 700 /* nftw */
#include <arpa/inet.h>
#include <ftw.h>
#include <grpc/grpc.h>
#include <grpc/grpc_security.h>
#include <netinet/in.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include "check.h"
#include "common/chunk.h"
#include "common/fileutil.h"
#include "common/log.h"
#include "crypto/pki.h"
#include "crypto/sha256.h"
#include "fedc/error.h"
#include "fedc/v1/fedc.pb-c.h"
#include "tests/support/testsvc.h"
#include "transport/tensor_stream.h"
#include "transport/transport.h"
#include "transport/transport_int.h"

#define MIB (1u << 20)

static char root[] = "/tmp/fedc-test-transport-XXXXXX";
static char ca_path[600], bundle_path[600];
static int port;

static int contains(const char *hay, const char *needle) {
  if (!strstr(hay, needle)) {
    fprintf(stderr, "  expected \"%s\" in: %s\n", needle, hay);
    return 0;
  }
  return 1;
}

/* Echo num over ch; returns the fedc_err and fills st. */
static int echo(fc_channel *ch, const char *path, uint64_t num, uint32_t *reply, fc_status *st) {
  Fedc__V1__CheckInRequest req = FEDC__V1__CHECK_IN_REQUEST__INIT;
  req.num_examples = num;
  ProtobufCMessage *resp = NULL;
  int rc = fc_call_unary(ch, path, &req.base, &fedc__v1__check_in_response__descriptor, &resp, 5000, st);
  if (rc == FEDC_OK) {
    if (reply) *reply = ((Fedc__V1__CheckInResponse *)resp)->retry_after_ms;
    protobuf_c_message_free_unpacked(resp, NULL);
  }
  return rc;
}

/* ---- tests ------------------------------------------------------------------------------ */

static void test_echo(void) {
  fc_channel *ch = ts_channel(root, port, "client", "alice");
  CHECK(ch != NULL);
  if (!ch) return;
  fc_status st;
  uint32_t reply = 0;
  CHECK_EQ_INT(echo(ch, TS_ECHO, 1234, &reply, &st), FEDC_OK);
  CHECK_EQ_INT(st.code, GRPC_STATUS_OK);
  CHECK_EQ_INT(reply, 1234);
  /* Many calls on one channel (one connection). */
  int ok = 0;
  for (uint32_t i = 0; i < 50; i++)
    ok += echo(ch, TS_ECHO, i, &reply, &st) == FEDC_OK && reply == i;
  CHECK_EQ_INT(ok, 50);
  fc_channel_destroy(ch);
}

static void test_roles(void) {
  fc_channel *alice = ts_channel(root, port, "client", "alice");
  fc_channel *admin = ts_channel(root, port, "admin", "root");
  CHECK(alice && admin);
  if (!alice || !admin) goto out;
  fc_status st;
  uint32_t reply = 0;
  CHECK_EQ_INT(echo(alice, TS_ADMIN_ECHO, 7, NULL, &st), FEDC_ERR_PERMISSION);
  CHECK_EQ_INT(st.code, GRPC_STATUS_PERMISSION_DENIED);
  CHECK(contains(st.detail, "role 'admin'"));
  CHECK(contains(st.detail, "'alice' has role 'client'"));

  CHECK_EQ_INT(echo(admin, TS_ECHO, 7, NULL, &st), FEDC_ERR_PERMISSION);
  CHECK_EQ_INT(st.code, GRPC_STATUS_PERMISSION_DENIED);
  CHECK(contains(st.detail, "role 'client'"));
  CHECK(contains(st.detail, "'root' has role 'admin'"));

  CHECK_EQ_INT(echo(admin, TS_ADMIN_ECHO, 9, &reply, &st), FEDC_OK);
  CHECK_EQ_INT(reply, 9);

  /* A path nobody registered. */
  CHECK_EQ_INT(echo(alice, "/fedc.v1.Test/Nope", 1, NULL, &st), FEDC_ERR_PROTOCOL);
  CHECK_EQ_INT(st.code, GRPC_STATUS_UNIMPLEMENTED);
out:
  fc_channel_destroy(alice);
  fc_channel_destroy(admin);
}

static void test_foreign_ca(void) {
  char crt[600], key[600], other[600], err[400];
  snprintf(other, sizeof other, "%s/other", root);
  ts_leaf(other, "client", "mallory", crt, sizeof crt, key, sizeof key);

  /* With only our CA the local check already refuses mallory's certificate. */
  fc_channel *ch = NULL;
  CHECK(ts_channel_ex(ca_path, crt, key, port, NULL, &ch, err, sizeof err) != FEDC_OK);
  CHECK(ch == NULL);
  CHECK(contains(err, "does not verify against CA"));

  /* With a bundle trusting both CAs she gets as far as the server, which refuses her. */
  int rc = ts_channel_ex(bundle_path, crt, key, port, NULL, &ch, err, sizeof err);
  CHECK_EQ_INT(rc, FEDC_OK);
  if (rc != FEDC_OK) {
    fprintf(stderr, "  %s\n", err);
    return;
  }
  fc_status st;
  CHECK(echo(ch, TS_ECHO, 1, NULL, &st) != FEDC_OK);
  CHECK_EQ_INT(st.code, GRPC_STATUS_UNAVAILABLE);
  CHECK_EQ_INT(st.err, FEDC_ERR_TLS);
  CHECK(contains(st.detail, "does not trust our certificate"));
  fprintf(stderr, "  mallory: %s\n", st.detail);
  fc_channel_destroy(ch);
}

/* A raw gRPC call to Echo with the right CA, the given client certificate
 * (crt/key NULL: none) and fedc-protocol value, bypassing fc_channel's own
 * checks and limits. Returns the status; detail (may be NULL) gets its text. */
static int raw_call(const char *crt, const char *key, const char *version, char *detail, size_t dlen) {
  char *ca = NULL, *crt_pem = NULL, *key_pem = NULL;
  size_t calen = 0, n = 0;
  if (fc_read_file(ca_path, 1 << 20, &ca, &calen) != FEDC_OK) return -1;
  if (crt && (fc_read_file(crt, 1 << 20, &crt_pem, &n) != FEDC_OK ||
              fc_read_file(key, 1 << 20, &key_pem, &n) != FEDC_OK)) {
    free(ca);
    free(crt_pem);
    return -1;
  }
  grpc_ssl_pem_key_cert_pair pair = {key_pem, crt_pem};
  grpc_channel_credentials *creds = grpc_ssl_credentials_create(ca, crt ? &pair : NULL, NULL, NULL);
  char target[64];
  snprintf(target, sizeof target, "ipv4:127.0.0.1:%d", port);
  grpc_channel *ch = grpc_channel_create(target, creds, NULL);
  grpc_channel_credentials_release(creds);
  grpc_completion_queue *cq = grpc_completion_queue_create_for_pluck(NULL);
  grpc_call *call = grpc_channel_create_call(ch, NULL, GRPC_PROPAGATE_DEFAULTS, cq,
                                             grpc_slice_from_static_string(TS_ECHO), NULL, fc_deadline_ms(5000), NULL);
  grpc_metadata md;
  memset(&md, 0, sizeof md);
  md.key = grpc_slice_from_static_string(FC_PROTOCOL_MD_KEY);
  md.value = grpc_slice_from_copied_string(version);
  Fedc__V1__CheckInRequest req = FEDC__V1__CHECK_IN_REQUEST__INIT;
  grpc_byte_buffer *out = fc_pack_message(&req.base), *in = NULL;
  grpc_metadata_array init_md, trail_md;
  grpc_metadata_array_init(&init_md);
  grpc_metadata_array_init(&trail_md);
  grpc_status_code status = GRPC_STATUS_OK;
  grpc_slice details = grpc_empty_slice();
  grpc_op ops[6];
  memset(ops, 0, sizeof ops);
  ops[0].op = GRPC_OP_SEND_INITIAL_METADATA;
  ops[0].data.send_initial_metadata.count = 1;
  ops[0].data.send_initial_metadata.metadata = &md;
  ops[1].op = GRPC_OP_SEND_MESSAGE;
  ops[1].data.send_message.send_message = out;
  ops[2].op = GRPC_OP_SEND_CLOSE_FROM_CLIENT;
  ops[3].op = GRPC_OP_RECV_INITIAL_METADATA;
  ops[3].data.recv_initial_metadata.recv_initial_metadata = &init_md;
  ops[4].op = GRPC_OP_RECV_MESSAGE;
  ops[4].data.recv_message.recv_message = &in;
  ops[5].op = GRPC_OP_RECV_STATUS_ON_CLIENT;
  ops[5].data.recv_status_on_client.trailing_metadata = &trail_md;
  ops[5].data.recv_status_on_client.status = &status;
  ops[5].data.recv_status_on_client.status_details = &details;
  if (grpc_call_start_batch(call, ops, 6, ops, NULL) == GRPC_CALL_OK)
    grpc_completion_queue_pluck(cq, ops, gpr_inf_future(GPR_CLOCK_MONOTONIC), NULL);
  else
    status = GRPC_STATUS_INTERNAL;
  if (in) grpc_byte_buffer_destroy(in);
  grpc_byte_buffer_destroy(out);
  grpc_metadata_array_destroy(&init_md);
  grpc_metadata_array_destroy(&trail_md);
  if (detail)
    snprintf(detail, dlen, "%.*s", (int)GRPC_SLICE_LENGTH(details), (const char *)GRPC_SLICE_START_PTR(details));
  grpc_slice_unref(details);
  grpc_slice_unref(md.value);
  grpc_call_unref(call);
  grpc_completion_queue_shutdown(cq);
  grpc_completion_queue_pluck(cq, NULL, gpr_inf_future(GPR_CLOCK_MONOTONIC), NULL);
  grpc_completion_queue_destroy(cq);
  grpc_channel_destroy(ch);
  free(ca);
  free(crt_pem);
  if (key_pem) fc_wipe(key_pem, strlen(key_pem));
  free(key_pem);
  return (int)status;
}

static void test_no_cert(void) {
  char err[400];
  fc_channel *ch = NULL;
  CHECK_EQ_INT(ts_channel_ex(ca_path, NULL, NULL, port, NULL, &ch, err, sizeof err), FEDC_ERR_INVALID);
  CHECK(ch == NULL);
  CHECK(contains(err, "--cert"));
  /* A raw gRPC client with the right CA but no certificate of its own: the
   * server's handshake must refuse it (fc_channel_create would not even try). */
  CHECK_EQ_INT(raw_call(NULL, NULL, FC_PROTOCOL_VERSION_STRING, NULL, 0), GRPC_STATUS_UNAVAILABLE);
}

static void test_expired(void) {
  char dir[600], crt[600], key[600], err[400];
  snprintf(dir, sizeof dir, "%s/expired", root);
  fc_pki_issue_opts o;
  fc_pki_issue_opts_init(&o);
  o.ca_dir = root;
  o.out_dir = dir;
  o.role = "client";
  o.name = "old";
  o.not_before_offset_sec = -2 * 86400;
  o.not_after_offset_sec = -86400;
  int rc = fc_pki_issue_ex(&o, err, sizeof err);
  CHECK_EQ_INT(rc, FEDC_OK);
  if (rc != FEDC_OK) return;
  ts_leaf(dir, "client", "old", crt, sizeof crt, key, sizeof key);
  fc_channel *ch = NULL;
  CHECK_EQ_INT(ts_channel_ex(ca_path, crt, key, port, NULL, &ch, err, sizeof err), FEDC_ERR_CERT_EXPIRED);
  CHECK(ch == NULL);
  CHECK(contains(err, "expired"));
}

static void test_unreachable(void) {
  /* A port that was free a moment ago: bind, read it, close. */
  int dead = 0;
  ts_loopback_socket(0, &dead);
  CHECK(dead > 0);
  fc_channel *ch = ts_channel(root, dead, "client", "alice");
  CHECK(ch != NULL);
  if (!ch) return;
  fc_status st;
  double t0 = ts_now();
  CHECK_EQ_INT(echo(ch, TS_ECHO, 1, NULL, &st), FEDC_ERR_UNAVAILABLE);
  CHECK_EQ_INT(st.code, GRPC_STATUS_UNAVAILABLE);
  CHECK(contains(st.detail, "unreachable"));
  CHECK(ts_now() - t0 < 5.0);
  fc_channel_destroy(ch);
}

static void test_version(void) {
  char crt[600], key[600], err[400];
  ts_leaf(root, "client", "alice", crt, sizeof crt, key, sizeof key);
  fc_channel *ch = NULL;
  CHECK_EQ_INT(ts_channel_ex(ca_path, crt, key, port, "2.0", &ch, err, sizeof err), FEDC_OK);
  if (!ch) return;
  fc_status st;
  CHECK_EQ_INT(echo(ch, TS_ECHO, 1, NULL, &st), FEDC_ERR_VERSION);
  CHECK_EQ_INT(st.code, GRPC_STATUS_FAILED_PRECONDITION);
  CHECK(contains(st.detail, "protocol"));
  fc_channel_destroy(ch);
  /* A newer minor of the same major is fine. */
  CHECK_EQ_INT(ts_channel_ex(ca_path, crt, key, port, "1.7", &ch, err, sizeof err), FEDC_OK);
  if (!ch) return;
  CHECK_EQ_INT(echo(ch, TS_ECHO, 1, NULL, &st), FEDC_OK);
  fc_channel_destroy(ch);
}

static void test_limits(void) {
  fc_channel *ch = ts_channel(root, port, "client", "alice");
  CHECK(ch != NULL);
  if (!ch) return;
  fc_status st;

  /* Our per-method check: Echo takes at most 1 KiB. CheckInRequest has only
   * integers, so send another message type's bytes on Echo's path. */
  static uint8_t blob[2048];
  Fedc__V1__TensorChunk big = FEDC__V1__TENSOR_CHUNK__INIT;
  big.data.data = blob;
  big.data.len = sizeof blob;
  ProtobufCMessage *resp = NULL;
  CHECK_EQ_INT(fc_call_unary(ch, TS_ECHO, &big.base, &fedc__v1__check_in_response__descriptor, &resp, 5000, &st),
               FEDC_ERR_TOO_LARGE);
  CHECK_EQ_INT(st.code, GRPC_STATUS_RESOURCE_EXHAUSTED);
  CHECK(contains(st.detail, "1024-byte limit"));

  /* A 5 MiB chunk on Sink (limit FC_CHUNK_MAX + 4096): refused before any
   * handler sees it. */
  fc_ccall *call = NULL;
  int rc = fc_ccall_start(ch, TS_SINK, FC_RPC_CLIENT_STREAM, NULL, 20000, &call, &st);
  CHECK_EQ_INT(rc, FEDC_OK);
  if (rc == FEDC_OK) {
    fc_model_spec spec;
    memset(&spec, 0, sizeof spec);
    uint64_t shape[1] = {(8 * MIB) / 4};
    fc_model_spec_add(&spec, "t", 1, shape);
    uint8_t sha[FC_SHA256_LEN] = {0};
    fc_pb_header h;
    fc_pb_header_build(&h, &spec, 8 * MIB, sha, FC_CHUNK_MAX);
    Fedc__V1__UploadMsg first = FEDC__V1__UPLOAD_MSG__INIT;
    first.header = &h.h;
    rc = fc_ccall_send(call, &first.base, &st);
    CHECK_EQ_INT(rc, FEDC_OK);
    uint8_t *five = calloc(1, 5 * MIB);
    Fedc__V1__TensorChunk chunk = FEDC__V1__TENSOR_CHUNK__INIT;
    chunk.data.data = five;
    chunk.data.len = 5 * MIB;
    Fedc__V1__UploadMsg m = FEDC__V1__UPLOAD_MSG__INIT;
    m.chunk = &chunk;
    if (rc == FEDC_OK) rc = fc_ccall_send(call, &m.base, &st);
    if (rc == FEDC_OK) rc = fc_ccall_close_and_recv(call, &fedc__v1__upload_response__descriptor, &resp, &st);
    CHECK_EQ_INT(rc, FEDC_ERR_TOO_LARGE);
    CHECK_EQ_INT(st.code, GRPC_STATUS_RESOURCE_EXHAUSTED);
    fprintf(stderr, "  5 MiB chunk: %s\n", st.detail);
    free(five);
  }
  fc_ccall_destroy(call);

  /* The server keeps serving: the same channel and another client. */
  uint32_t reply = 0;
  CHECK_EQ_INT(echo(ch, TS_ECHO, 42, &reply, &st), FEDC_OK);
  CHECK_EQ_INT(reply, 42);
  fc_channel *other = ts_channel(root, port, "client", "alice");
  CHECK(other != NULL);
  if (other) {
    CHECK_EQ_INT(echo(other, TS_ECHO, 43, &reply, &st), FEDC_OK);
    CHECK_EQ_INT(reply, 43);
  }
  fc_channel_destroy(other);
  fc_channel_destroy(ch);
}

static void test_sink(void) {
  fc_channel *ch = ts_channel(root, port, "client", "alice");
  CHECK(ch != NULL);
  if (!ch) return;
  const uint64_t bytes = 64 * MIB;
  float *payload = malloc(bytes);
  CHECK(payload != NULL);
  if (!payload) goto out;
  for (uint64_t i = 0; i < bytes / 4; i++) payload[i] = (float)(i % 1000) - 500.0f;
  uint8_t sha[FC_SHA256_LEN];
  char want[FC_SHA256_HEX_LEN], got[200] = "";
  fc_payload_sha256(payload, bytes, sha);
  fc_hex(sha, sizeof sha, want);
  fc_status st;
  double t0 = ts_now();
  CHECK_EQ_INT(ts_sink_upload(ch, payload, bytes, NULL, MIB, -1, got, sizeof got, &st), FEDC_OK);
  CHECK(strcmp(got, want) == 0);
  fprintf(stderr, "  sink: 64 MiB in %.2f s\n", ts_now() - t0);

  /* One flipped bit in chunk 2 of 4 MiB: the stream is refused at the end. */
  CHECK_EQ_INT(ts_sink_upload(ch, payload, 4 * MIB, NULL, MIB, 2, got, sizeof got, &st), FEDC_ERR_HASH);
  CHECK_EQ_INT(st.code, GRPC_STATUS_DATA_LOSS);

  /* A header that lies about the size: refused as a shape error, early. */
  {
    fc_ccall *call = NULL;
    fc_model_spec spec;
    memset(&spec, 0, sizeof spec);
    uint64_t shape[1] = {10};
    fc_model_spec_add(&spec, "t", 1, shape);
    fc_pb_header h;
    fc_pb_header_build(&h, &spec, 44, sha, MIB);
    Fedc__V1__UploadMsg first = FEDC__V1__UPLOAD_MSG__INIT;
    first.header = &h.h;
    int rc = fc_ccall_start(ch, TS_SINK, FC_RPC_CLIENT_STREAM, NULL, 5000, &call, &st);
    if (rc == FEDC_OK) rc = fc_ccall_send(call, &first.base, &st);
    ProtobufCMessage *resp = NULL;
    if (rc == FEDC_OK) rc = fc_ccall_close_and_recv(call, &fedc__v1__upload_response__descriptor, &resp, &st);
    CHECK_EQ_INT(rc, FEDC_ERR_REJECTED);
    CHECK_EQ_INT(st.code, GRPC_STATUS_INVALID_ARGUMENT);
    fc_ccall_destroy(call);
  }
out:
  free(payload);
  fc_channel_destroy(ch);
}

static void test_source(void) {
  fc_channel *ch = ts_channel(root, port, "client", "alice");
  CHECK(ch != NULL);
  if (!ch) return;
  const uint64_t bytes = 16 * MIB;
  Fedc__V1__FetchModelRequest req = FEDC__V1__FETCH_MODEL_REQUEST__INIT;
  req.version = bytes;
  fc_status st;
  fc_ccall *call = NULL;
  int rc = fc_ccall_start(ch, TS_SOURCE, FC_RPC_SERVER_STREAM, &req.base, 30000, &call, &st);
  CHECK_EQ_INT(rc, FEDC_OK);
  if (rc == FEDC_OK) {
    fc_model_spec spec;
    float *payload = NULL;
    uint64_t total = 0;
    uint8_t sha[FC_SHA256_LEN], local[FC_SHA256_LEN];
    rc = fc_tensor_stream_recv(call, 1ull << 30, NULL, &spec, &payload, &total, sha, &st);
    CHECK_EQ_INT(rc, FEDC_OK);
    if (rc != FEDC_OK) fprintf(stderr, "  source: %s\n", st.detail);
    if (rc == FEDC_OK) {
      CHECK_EQ_INT(total, bytes);
      CHECK_EQ_INT(spec.n, 1);
      CHECK(strcmp(spec.t[0].name, "t") == 0);
      CHECK_EQ_INT(spec.t[0].shape[0], bytes / 4);
      float *want = malloc(bytes);
      ts_pattern(want, bytes / 4);
      CHECK(memcmp(want, payload, bytes) == 0);
      fc_payload_sha256(payload, bytes, local);
      CHECK(memcmp(local, sha, sizeof sha) == 0);
      free(want);
      free(payload);
    }
  }
  fc_ccall_destroy(call);

  /* Into a buffer kept between downloads: the same buffer is reused when it
   * is large enough (no fresh pages to fault in), replaced when it is not. */
  uint8_t *buf = NULL;
  uint64_t cap = 0;
  const uint64_t sizes[] = {8 * MIB, 4 * MIB, 12 * MIB};
  for (size_t k = 0; k < 3; k++) {
    req.version = sizes[k];
    call = NULL;
    uint8_t *before = buf;
    rc = fc_ccall_start(ch, TS_SOURCE, FC_RPC_SERVER_STREAM, &req.base, 30000, &call, &st);
    fc_model_spec spec;
    uint64_t total = 0;
    if (rc == FEDC_OK) rc = fc_tensor_stream_recv_into(call, 1ull << 30, NULL, &spec, &buf, &cap, &total, NULL, NULL, &st);
    CHECK_EQ_INT(rc, FEDC_OK);
    CHECK_EQ_INT(total, sizes[k]);
    CHECK(cap >= sizes[k]);
    if (k == 1) CHECK(buf == before);
    if (rc == FEDC_OK) {
      float *want = malloc(sizes[k]);
      ts_pattern(want, sizes[k] / 4);
      CHECK(memcmp(want, buf, sizes[k]) == 0);
      free(want);
    }
    fc_ccall_destroy(call);
  }
  free(buf);

  /* A bad request is refused by the handler. */
  req.version = 3;
  call = NULL;
  rc = fc_ccall_start(ch, TS_SOURCE, FC_RPC_SERVER_STREAM, &req.base, 5000, &call, &st);
  if (rc == FEDC_OK) {
    ProtobufCMessage *m = NULL;
    rc = fc_ccall_recv(call, &fedc__v1__tensor_stream_msg__descriptor, &m, &st);
    CHECK(rc < 0);
    CHECK_EQ_INT(st.code, GRPC_STATUS_INVALID_ARGUMENT);
  }
  fc_ccall_destroy(call);
  fc_channel_destroy(ch);
}

static void test_insecure_refused(void) {
  char err[400] = "";
  fc_server_opts o;
  fc_server_opts_init(&o);
  o.addr = "0.0.0.0:0";
  o.insecure_for_testing = 1;
  size_t n;
  o.methods = ts_methods(&n);
  o.nmethods = n;
  fc_server *s = NULL;
  CHECK(fc_server_start(&o, &s, err, sizeof err) != FEDC_OK);
  CHECK(s == NULL);
  CHECK(contains(err, "non-loopback"));

  fc_channel_opts co;
  fc_channel_opts_init(&co);
  co.target = "192.0.2.1:7070";
  co.insecure_for_testing = 1;
  fc_channel *ch = NULL;
  CHECK(fc_channel_create(&co, &ch, err, sizeof err) != FEDC_OK);
  CHECK(ch == NULL);
  CHECK(contains(err, "non-loopback"));
}

/* fc_server_bind holds the address before anything is served: a second bind
 * of it fails in one line naming the OS reason (gRPC's error tree stays at
 * debug), a bound server that never runs is destroyed cleanly, and one that
 * runs serves. */
static void test_bind_then_run(void) {
  char ca[600], crt[600], key[600], err[400] = "", addr[64];
  snprintf(ca, sizeof ca, "%s/%s", root, FC_PKI_CA_CERT);
  snprintf(crt, sizeof crt, "%s/%s", root, FC_PKI_COORD_CERT);
  snprintf(key, sizeof key, "%s/%s", root, FC_PKI_COORD_KEY);
  fc_server_opts o;
  fc_server_opts_init(&o);
  o.addr = "127.0.0.1:0";
  o.tls = (fc_tls_files){ca, crt, key};
  o.federation = "test";
  o.methods = ts_methods(&o.nmethods);
  fc_server *idle = NULL, *second = NULL, *live = NULL;
  CHECK_EQ_INT(fc_server_bind(&o, &idle, err, sizeof err), FEDC_OK);
  if (!idle) return;
  snprintf(addr, sizeof addr, "127.0.0.1:%d", fc_server_port(idle));
  o.addr = addr;
  fc_transport_route_grpc_logs(FC_LOG_WARN);
  CHECK(fc_server_bind(&o, &second, err, sizeof err) != FEDC_OK);
  CHECK(second == NULL);
  CHECK(contains(err, "cannot listen on 127.0.0.1:"));
  CHECK(contains(err, "Address already in use"));
  CHECK(strchr(err, '\n') == NULL);
  fc_server_destroy(idle); /* bound, never run */
  /* The address is free again: bind and run there. */
  CHECK_EQ_INT(fc_server_bind(&o, &live, err, sizeof err), FEDC_OK);
  if (!live) return;
  CHECK_EQ_INT(fc_server_run(live, err, sizeof err), FEDC_OK);
  fc_channel *ch = ts_channel(root, fc_server_port(live), "client", "alice");
  CHECK(ch != NULL);
  fc_status st;
  uint32_t reply = 0;
  if (ch) CHECK_EQ_INT(echo(ch, TS_ECHO, 77, &reply, &st), FEDC_OK);
  CHECK_EQ_INT(reply, 77);
  fc_channel_destroy(ch);
  fc_server_shutdown(live, 0);
  fc_server_destroy(live);
}

/* A server with a client stream and a server stream in flight, both stalled
 * by their clients, stops within its grace period (plus slack). */
static void test_shutdown_inflight(void) {
  fc_server *s = ts_start(root, 2);
  CHECK(s != NULL);
  if (!s) return;
  int p = fc_server_port(s);
  fc_channel *ch = ts_channel(root, p, "client", "alice");
  CHECK(ch != NULL);
  fc_ccall *up = NULL, *down = NULL;
  fc_status st;
  if (ch) {
    /* Upload: header and one chunk, then silence. */
    static float data[1024];
    fc_model_spec spec;
    memset(&spec, 0, sizeof spec);
    uint64_t shape[1] = {MIB};
    fc_model_spec_add(&spec, "t", 1, shape);
    uint8_t sha[FC_SHA256_LEN] = {0};
    fc_pb_header h;
    fc_pb_header_build(&h, &spec, 4 * MIB, sha, MIB);
    Fedc__V1__UploadMsg first = FEDC__V1__UPLOAD_MSG__INIT;
    first.header = &h.h;
    Fedc__V1__TensorChunk c = FEDC__V1__TENSOR_CHUNK__INIT;
    c.data.data = (uint8_t *)data;
    c.data.len = sizeof data;
    Fedc__V1__UploadMsg second = FEDC__V1__UPLOAD_MSG__INIT;
    second.chunk = &c;
    CHECK_EQ_INT(fc_ccall_start(ch, TS_SINK, FC_RPC_CLIENT_STREAM, NULL, 60000, &up, &st), FEDC_OK);
    if (up) {
      CHECK_EQ_INT(fc_ccall_send(up, &first.base, &st), FEDC_OK);
      CHECK_EQ_INT(fc_ccall_send(up, &second.base, &st), FEDC_OK);
    }
    /* Download: read the header of a 64 MiB stream, then stop reading. */
    Fedc__V1__FetchModelRequest req = FEDC__V1__FETCH_MODEL_REQUEST__INIT;
    req.version = 64 * MIB;
    CHECK_EQ_INT(fc_ccall_start(ch, TS_SOURCE, FC_RPC_SERVER_STREAM, &req.base, 60000, &down, &st), FEDC_OK);
    if (down) {
      ProtobufCMessage *m = NULL;
      CHECK_EQ_INT(fc_ccall_recv(down, &fedc__v1__tensor_stream_msg__descriptor, &m, &st), 1);
      if (m) protobuf_c_message_free_unpacked(m, NULL);
    }
  }
  double t0 = ts_now();
  fc_server_shutdown(s, 500);
  double took = ts_now() - t0;
  fprintf(stderr, "  shutdown with 2 calls in flight: %.2f s (grace 0.5 s)\n", took);
  CHECK(took >= 0.4);
  CHECK(took < 3.0);
  if (up) {
    ProtobufCMessage *resp = NULL;
    CHECK(fc_ccall_close_and_recv(up, &fedc__v1__upload_response__descriptor, &resp, &st) != FEDC_OK);
  }
  if (down) {
    int r;
    ProtobufCMessage *m = NULL;
    while ((r = fc_ccall_recv(down, &fedc__v1__tensor_stream_msg__descriptor, &m, &st)) == 1)
      protobuf_c_message_free_unpacked(m, NULL);
    CHECK(r < 0);
  }
  fc_ccall_destroy(up);
  fc_ccall_destroy(down);
  fc_channel_destroy(ch);
  ts_stop(s, 0);
}

/* A client that opens an upload and goes quiet is cut off after the server's
 * per-message idle timeout, and the worker is free again. */
static void test_idle_timeout(void) {
  fc_server *s = ts_start_ex(root, 1, 300);
  CHECK(s != NULL);
  if (!s) return;
  fc_channel *ch = ts_channel(root, fc_server_port(s), "client", "alice");
  CHECK(ch != NULL);
  fc_ccall *up = NULL;
  fc_status st;
  if (ch && fc_ccall_start(ch, TS_SINK, FC_RPC_CLIENT_STREAM, NULL, 10000, &up, &st) == FEDC_OK) {
    fc_model_spec spec;
    memset(&spec, 0, sizeof spec);
    uint64_t shape[1] = {1024};
    fc_model_spec_add(&spec, "t", 1, shape);
    uint8_t sha[FC_SHA256_LEN] = {0};
    fc_pb_header h;
    fc_pb_header_build(&h, &spec, 4096, sha, 4096);
    Fedc__V1__UploadMsg first = FEDC__V1__UPLOAD_MSG__INIT;
    first.header = &h.h;
    CHECK_EQ_INT(fc_ccall_send(up, &first.base, &st), FEDC_OK);
    usleep(900 * 1000);
    ProtobufCMessage *resp = NULL;
    CHECK_EQ_INT(fc_ccall_close_and_recv(up, &fedc__v1__upload_response__descriptor, &resp, &st), FEDC_ERR_TIMEOUT);
    CHECK_EQ_INT(st.code, GRPC_STATUS_DEADLINE_EXCEEDED);
    CHECK(contains(st.detail, "idle"));
    /* The single worker serves the next call. */
    uint32_t reply = 0;
    CHECK_EQ_INT(echo(ch, TS_ECHO, 5, &reply, &st), FEDC_OK);
    CHECK_EQ_INT(reply, 5);
  } else {
    CHECK(0);
  }
  fc_ccall_destroy(up);
  fc_channel_destroy(ch);
  ts_stop(s, 0);
}

/* ---- certificates with odd SANs, signed by the test CA ------------------------------------ */

static int add_ext_conf(X509 *x, X509 *issuer, int nid, const char *value) {
  X509V3_CTX ctx;
  X509V3_set_ctx(&ctx, issuer, x, NULL, NULL, 0);
  X509_EXTENSION *ext = X509V3_EXT_conf_nid(NULL, &ctx, nid, value);
  int ok = ext && X509_add_ext(x, ext, -1) == 1;
  X509_EXTENSION_free(ext);
  return ok;
}

/* Append one typed SAN (GEN_URI, GEN_DNS or GEN_EMAIL) to gens. */
static int push_san(GENERAL_NAMES *gens, int type, const char *value) {
  GENERAL_NAME *g = GENERAL_NAME_new();
  ASN1_IA5STRING *s = ASN1_IA5STRING_new();
  if (!g || !s || ASN1_STRING_set(s, value, -1) != 1) {
    GENERAL_NAME_free(g);
    ASN1_IA5STRING_free(s);
    return 0;
  }
  GENERAL_NAME_set0_value(g, type, s);
  if (!sk_GENERAL_NAME_push(gens, g)) {
    GENERAL_NAME_free(g);
    return 0;
  }
  return 1;
}

typedef struct san {
  int type; /* GEN_URI, GEN_DNS, GEN_EMAIL */
  const char *value;
} san;

/*
 * A client certificate for the test CA in root/ that is in every way like one
 * fc_pki_issue makes (CA:FALSE, digitalSignature, clientAuth, SKI/AKI, so it
 * passes the local strict check) except that its SANs are exactly `sans`.
 * Written to root/odd-<tag>.crt and .key. 1 on success.
 */
static int mint_odd_cert(const char *tag, const san *sans, size_t nsans, char *crt, size_t crtlen, char *key,
                         size_t keylen) {
  char ca_key_path[600];
  snprintf(ca_key_path, sizeof ca_key_path, "%s/%s", root, FC_PKI_CA_KEY);
  snprintf(crt, crtlen, "%s/odd-%s.crt", root, tag);
  snprintf(key, keylen, "%s/odd-%s.key", root, tag);
  FILE *f = fopen(ca_path, "r");
  X509 *ca = f ? PEM_read_X509(f, NULL, NULL, NULL) : NULL;
  if (f) fclose(f);
  f = fopen(ca_key_path, "r");
  EVP_PKEY *ca_key = f ? PEM_read_PrivateKey(f, NULL, NULL, NULL) : NULL;
  if (f) fclose(f);
  EVP_PKEY *leaf_key = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256");
  X509 *x = X509_new();
  GENERAL_NAMES *gens = sk_GENERAL_NAME_new_null();
  unsigned char serial[16];
  BIGNUM *bn = NULL;
  int ok = ca && ca_key && leaf_key && x && gens && RAND_bytes(serial, sizeof serial) == 1;
  if (ok) {
    serial[0] &= 0x7f;
    bn = BN_bin2bn(serial, sizeof serial, NULL);
    ok = bn && BN_to_ASN1_INTEGER(bn, X509_get_serialNumber(x)) != NULL;
  }
  if (ok)
    ok = X509_set_version(x, X509_VERSION_3) == 1 && X509_gmtime_adj(X509_getm_notBefore(x), -300) &&
         X509_gmtime_adj(X509_getm_notAfter(x), 86400) &&
         X509_NAME_add_entry_by_txt(X509_get_subject_name(x), "CN", MBSTRING_UTF8, (const unsigned char *)tag, -1,
                                    -1, 0) == 1 &&
         X509_set_issuer_name(x, X509_get_subject_name(ca)) == 1 && X509_set_pubkey(x, leaf_key) == 1;
  if (ok)
    ok = add_ext_conf(x, ca, NID_basic_constraints, "critical,CA:FALSE") &&
         add_ext_conf(x, ca, NID_key_usage, "critical,digitalSignature") &&
         add_ext_conf(x, ca, NID_ext_key_usage, "clientAuth") &&
         add_ext_conf(x, ca, NID_subject_key_identifier, "hash") &&
         add_ext_conf(x, ca, NID_authority_key_identifier, "keyid:always");
  for (size_t i = 0; ok && i < nsans; i++) ok = push_san(gens, sans[i].type, sans[i].value);
  if (ok) ok = X509_add1_ext_i2d(x, NID_subject_alt_name, gens, 0, X509V3_ADD_APPEND) == 1;
  if (ok) ok = X509_sign(x, ca_key, EVP_sha256()) > 0;
  if (ok) {
    FILE *kf = fopen(key, "w");
    FILE *cf = fopen(crt, "w");
    if (kf) fchmod(fileno(kf), 0600);
    ok = kf && cf && PEM_write_PrivateKey(kf, leaf_key, NULL, NULL, 0, NULL, NULL) == 1 && PEM_write_X509(cf, x) == 1;
    if (kf && fclose(kf) != 0) ok = 0;
    if (cf && fclose(cf) != 0) ok = 0;
  }
  if (!ok) fprintf(stderr, "  mint_odd_cert(%s) failed\n", tag);
  BN_free(bn);
  GENERAL_NAMES_free(gens);
  X509_free(x);
  X509_free(ca);
  EVP_PKEY_free(ca_key);
  EVP_PKEY_free(leaf_key);
  return ok;
}

/* Call path with the odd certificate; returns the gRPC status and its detail. */
static int call_with_odd_cert(const char *tag, const san *sans, size_t nsans, const char *path, char *detail,
                              size_t dlen) {
  char crt[600], key[600], err[400];
  detail[0] = '\0';
  if (!mint_odd_cert(tag, sans, nsans, crt, sizeof crt, key, sizeof key)) return -1;
  fc_channel *ch = NULL;
  int rc = ts_channel_ex(ca_path, crt, key, port, NULL, &ch, err, sizeof err);
  if (rc != FEDC_OK) {
    fprintf(stderr, "  %s: channel refused locally: %s\n", tag, err);
    return -1;
  }
  fc_status st;
  memset(&st, 0, sizeof st);
  echo(ch, path, 3, NULL, &st);
  snprintf(detail, dlen, "%s", st.detail);
  fc_channel_destroy(ch);
  return (int)st.code;
}

/* Review issue 6 item 3: identity comes only from URI SANs, and a certificate
 * carries exactly one spiffe URI, whatever the case of its scheme. */
static void test_identity_sans(void) {
  char detail[400];
  const struct {
    const char *tag, *path;
    san sans[3];
    size_t nsans;
  } refused[] = {
      /* No URI SAN at all: the ID in a DNS name or an e-mail address is not an identity. */
      {"dns-only", TS_ADMIN_ECHO, {{GEN_DNS, "spiffe://test/admin/mallory"}}, 1},
      {"email-only", TS_ADMIN_ECHO, {{GEN_EMAIL, "spiffe://test/admin/mallory"}}, 1},
      /* A real URI ID next to the same ID in a DNS SAN is fine, but a DNS ID
       * next to an unrelated URI must not win. */
      {"dns-and-http",
       TS_ADMIN_ECHO,
       {{GEN_URI, "https://example.org/x"}, {GEN_DNS, "spiffe://test/admin/mallory"}},
       2},
      /* Two spiffe URIs, one upper-case: ambiguous, so refused (gRPC alone picks the lower-case one). */
      {"two-case", TS_ECHO, {{GEN_URI, "SPIFFE://test/admin/alice"}, {GEN_URI, "spiffe://test/client/zz"}}, 2},
      {"two-lower", TS_ECHO, {{GEN_URI, "spiffe://test/client/aa"}, {GEN_URI, "spiffe://test/client/zz"}}, 2},
      /* An upper-case scheme alone is not a valid SPIFFE ID either. */
      {"upper-only", TS_ECHO, {{GEN_URI, "SPIFFE://test/client/zz"}}, 1},
  };
  for (size_t i = 0; i < sizeof refused / sizeof refused[0]; i++) {
    int code = call_with_odd_cert(refused[i].tag, refused[i].sans, refused[i].nsans, refused[i].path, detail,
                                  sizeof detail);
    if (code != GRPC_STATUS_UNAUTHENTICATED) fprintf(stderr, "  %s: status %d (%s)\n", refused[i].tag, code, detail);
    CHECK_EQ_INT(code, GRPC_STATUS_UNAUTHENTICATED);
    CHECK(contains(detail, "client certificate"));
  }
  /* Controls: one good URI SAN is accepted, also with DNS and e-mail SANs beside it. */
  const san good[] = {{GEN_URI, "spiffe://test/client/good"}};
  CHECK_EQ_INT(call_with_odd_cert("good", good, 1, TS_ECHO, detail, sizeof detail), GRPC_STATUS_OK);
  const san good_mixed[] = {
      {GEN_DNS, "spiffe://test/admin/mallory"}, {GEN_URI, "spiffe://test/client/good2"}, {GEN_EMAIL, "a@b.example"}};
  CHECK_EQ_INT(call_with_odd_cert("good-mixed", good_mixed, 3, TS_ECHO, detail, sizeof detail), GRPC_STATUS_OK);
  /* ... and gets the role in its URI, not the one in the DNS SAN. */
  CHECK_EQ_INT(call_with_odd_cert("good-mixed2", good_mixed, 3, TS_ADMIN_ECHO, detail, sizeof detail),
               GRPC_STATUS_PERMISSION_DENIED);
  CHECK(contains(detail, "'good2' has role 'client'"));
}

/* Review issue 6 item 8: the fedc-protocol header is "<major>" or
 * "<major>.<minor>", digits only; anything else is refused by name. */
static void test_version_strict(void) {
  char crt[600], key[600], err[400];
  ts_leaf(root, "client", "alice", crt, sizeof crt, key, sizeof key);
  const char *bad[] = {"1garbage", "1.0x", "1.", ".1", "1.0.0", "x1", "+1", "-1", "1 .0", "0x1",
                       "99999999999999999999", "1.99999999999999999999", ""};
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    fc_channel *ch = NULL;
    CHECK_EQ_INT(ts_channel_ex(ca_path, crt, key, port, bad[i], &ch, err, sizeof err), FEDC_OK);
    if (!ch) continue;
    fc_status st;
    memset(&st, 0, sizeof st);
    int rc = echo(ch, TS_ECHO, 1, NULL, &st);
    if (rc == FEDC_OK) fprintf(stderr, "  protocol \"%s\" accepted\n", bad[i]);
    CHECK_EQ_INT(rc, FEDC_ERR_VERSION);
    CHECK_EQ_INT(st.code, GRPC_STATUS_FAILED_PRECONDITION);
    CHECK(contains(st.detail, FC_PROTOCOL_MD_KEY));
    if (i == 0) CHECK(contains(st.detail, "malformed fedc-protocol metadata \"1garbage\""));
    fc_channel_destroy(ch);
  }
  /* Longer than the server reads (and than fc_channel sends, hence a raw
   * call): refused, not cut down to a valid-looking "1.000...". */
  char detail[400];
  CHECK_EQ_INT(raw_call(crt, key, "1.0000000000000000000000000000000000000000", detail, sizeof detail),
               GRPC_STATUS_FAILED_PRECONDITION);
  CHECK(contains(detail, "malformed fedc-protocol metadata (too long)"));
  /* Well-formed versions of our major: "1", "1.0", a later minor (raw too). */
  CHECK_EQ_INT(raw_call(crt, key, "1.3", NULL, 0), GRPC_STATUS_OK);
  const char *good[] = {"1", "1.0", "1.12"};
  for (size_t i = 0; i < sizeof good / sizeof good[0]; i++) {
    fc_channel *ch = NULL;
    CHECK_EQ_INT(ts_channel_ex(ca_path, crt, key, port, good[i], &ch, err, sizeof err), FEDC_OK);
    if (!ch) continue;
    fc_status st;
    CHECK_EQ_INT(echo(ch, TS_ECHO, 1, NULL, &st), FEDC_OK);
    fc_channel_destroy(ch);
  }
}

static int rm_entry(const char *path, const struct stat *sb, int flag, struct FTW *ftw) {
  (void)sb;
  (void)flag;
  (void)ftw;
  return remove(path);
}

int main(void) {
  if (!mkdtemp(root)) {
    perror("mkdtemp");
    return 1;
  }
  snprintf(ca_path, sizeof ca_path, "%s/%s", root, FC_PKI_CA_CERT);
  snprintf(bundle_path, sizeof bundle_path, "%s/bundle.crt", root);
  if (ts_pki(root) != FEDC_OK) return 1;
  fc_transport_init();
  fc_server *s = ts_start(root, 4);
  if (!s) return 1;
  port = fc_server_port(s);

  struct {
    const char *name;
    void (*fn)(void);
  } tests[] = {
      {"echo", test_echo},
      {"roles", test_roles},
      {"foreign_ca", test_foreign_ca},
      {"no_cert", test_no_cert},
      {"expired", test_expired},
      {"unreachable", test_unreachable},
      {"version", test_version},
      {"version_strict", test_version_strict},
      {"identity_sans", test_identity_sans},
      {"limits", test_limits},
      {"sink", test_sink},
      {"source", test_source},
      {"insecure_refused", test_insecure_refused},
      {"idle_timeout", test_idle_timeout},
      {"shutdown_inflight", test_shutdown_inflight},
      {"bind_then_run", test_bind_then_run},
  };
  for (size_t i = 0; i < sizeof tests / sizeof tests[0]; i++) {
    int before = check_failed;
    double t0 = ts_now();
    tests[i].fn();
    fprintf(stderr, "%-18s %s (%.2f s)\n", tests[i].name, check_failed == before ? "ok" : "FAILED", ts_now() - t0);
  }

  ts_stop(s, 1000);
  fc_transport_shutdown();
  nftw(root, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
  return CHECK_DONE();
}
