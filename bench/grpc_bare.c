/*
 * grpc_bare.c - bare gRPC C-core streaming probe (grpc_bare.h): the baseline
 * bench_transport measures fedc's transfers against, in the same run.
 *
 * Written the way the gRPC core API is meant to be used for bulk streaming,
 * and no cleverer: one completion-queue thread on the server runs one call at
 * a time; one SEND_MESSAGE or RECV_MESSAGE outstanding per call (the core
 * allows no more); messages the server sends point into its payload
 * (grpc_slice_from_static_buffer: no copy), messages the client receives are
 * copied once into its buffer. Requests are raw bytes, not protobuf: 16
 * bytes (total, message size) as two little-endian u64.
 */
#include "bench/grpc_bare.h"

#include <grpc/byte_buffer.h>
#include <grpc/byte_buffer_reader.h>
#include <grpc/grpc.h>
#include <grpc/grpc_security.h>
#include <grpc/slice.h>
#include <grpc/support/time.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common/fileutil.h"

#define UPLOAD_PATH "/bare.Bench/Upload"
#define DOWNLOAD_PATH "/bare.Bench/Download"
#define MAX_MSG (8 << 20)

struct bare_server {
  grpc_server *srv;
  grpc_completion_queue *cq;
  pthread_t thread;
  int port;
  uint8_t *payload; /* download source, grown on demand; only the server thread touches it */
  uint64_t payload_len;
  int shutdown_tag; /* its address is the tag of grpc_server_shutdown_and_notify */
  int shut;         /* that tag was seen (by whichever thread waited on the queue) */
};

struct bare_client {
  grpc_channel *ch;
  grpc_completion_queue *cq;
};

static double now_s(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
}

static gpr_timespec after_ms(int ms) {
  return gpr_time_add(gpr_now(GPR_CLOCK_MONOTONIC), gpr_time_from_millis(ms, GPR_TIMESPAN));
}

static char *read_pem(const char *path) {
  char *buf = NULL;
  size_t len = 0;
  return fc_read_file(path, 1 << 20, &buf, &len) == 0 ? buf : NULL;
}

static grpc_arg int_arg(const char *key, int v) {
  grpc_arg a;
  a.type = GRPC_ARG_INTEGER;
  a.key = (char *)key;
  a.value.integer = v;
  return a;
}

/* ---- server: one call at a time on one thread --------------------------------- */

/* Wait on the server's queue for `tag`; 1 if it succeeded. The queue only
 * ever holds the current call's batch or the request, so nothing is lost. */
static int srv_wait(bare_server *s, void *tag) {
  for (;;) {
    grpc_event ev = grpc_completion_queue_next(s->cq, gpr_inf_future(GPR_CLOCK_MONOTONIC), NULL);
    if (ev.type == GRPC_QUEUE_SHUTDOWN) return 0;
    if (ev.tag == &s->shutdown_tag) s->shut = 1;
    else if (ev.tag == tag) return ev.success;
  }
}

static int srv_batch(bare_server *s, grpc_call *call, grpc_op *ops, size_t n) {
  static int tag;
  if (grpc_call_start_batch(call, ops, n, &tag, NULL) != GRPC_CALL_OK) return 0;
  return srv_wait(s, &tag);
}

static int is_path(const grpc_slice *m, const char *path) {
  return GRPC_SLICE_LENGTH(*m) == strlen(path) && memcmp(GRPC_SLICE_START_PTR(*m), path, strlen(path)) == 0;
}

static void srv_finish(bare_server *s, grpc_call *call, grpc_status_code code, int send_reply) {
  int cancelled = 0;
  grpc_op ops[3];
  size_t n = 0;
  memset(ops, 0, sizeof ops);
  uint8_t one = 1;
  grpc_slice rs = grpc_slice_from_static_buffer(&one, 1);
  grpc_byte_buffer *reply = send_reply ? grpc_raw_byte_buffer_create(&rs, 1) : NULL;
  if (reply) {
    ops[n].op = GRPC_OP_SEND_MESSAGE;
    ops[n++].data.send_message.send_message = reply;
  }
  ops[n].op = GRPC_OP_SEND_STATUS_FROM_SERVER;
  ops[n++].data.send_status_from_server.status = code;
  ops[n].op = GRPC_OP_RECV_CLOSE_ON_SERVER;
  ops[n++].data.recv_close_on_server.cancelled = &cancelled;
  srv_batch(s, call, ops, n);
  if (reply) grpc_byte_buffer_destroy(reply);
}

static void srv_upload(bare_server *s, grpc_call *call) {
  grpc_op op[2];
  memset(op, 0, sizeof op);
  grpc_byte_buffer *bb = NULL;
  op[0].op = GRPC_OP_SEND_INITIAL_METADATA;
  op[1].op = GRPC_OP_RECV_MESSAGE;
  op[1].data.recv_message.recv_message = &bb;
  int ok = srv_batch(s, call, op, 2);
  while (ok && bb) {
    grpc_byte_buffer_destroy(bb);
    bb = NULL;
    memset(op, 0, sizeof op);
    op[0].op = GRPC_OP_RECV_MESSAGE;
    op[0].data.recv_message.recv_message = &bb;
    ok = srv_batch(s, call, op, 1);
  }
  if (bb) grpc_byte_buffer_destroy(bb);
  srv_finish(s, call, ok ? GRPC_STATUS_OK : GRPC_STATUS_CANCELLED, ok);
}

static void srv_download(bare_server *s, grpc_call *call) {
  grpc_op op[2];
  memset(op, 0, sizeof op);
  grpc_byte_buffer *req = NULL;
  op[0].op = GRPC_OP_SEND_INITIAL_METADATA;
  op[1].op = GRPC_OP_RECV_MESSAGE;
  op[1].data.recv_message.recv_message = &req;
  uint64_t want[2] = {0, 0};
  int ok = srv_batch(s, call, op, 2) && req;
  if (ok) {
    grpc_byte_buffer_reader r;
    grpc_byte_buffer_reader_init(&r, req);
    grpc_slice all = grpc_byte_buffer_reader_readall(&r);
    grpc_byte_buffer_reader_destroy(&r);
    ok = GRPC_SLICE_LENGTH(all) == sizeof want;
    if (ok) memcpy(want, GRPC_SLICE_START_PTR(all), sizeof want);
    grpc_slice_unref(all);
  }
  if (req) grpc_byte_buffer_destroy(req);
  ok = ok && want[1] > 0 && want[1] <= MAX_MSG && want[0] <= (1ull << 31);
  if (ok && want[0] > s->payload_len) {
    uint8_t *p = realloc(s->payload, want[0]);
    ok = p != NULL;
    if (ok) {
      memset(p, 0x5a, want[0]);
      s->payload = p;
      s->payload_len = want[0];
    }
  }
  for (uint64_t off = 0; ok && off < want[0]; off += want[1]) {
    size_t len = (size_t)(want[0] - off < want[1] ? want[0] - off : want[1]);
    grpc_slice sl = grpc_slice_from_static_buffer(s->payload + off, len);
    grpc_byte_buffer *bb = grpc_raw_byte_buffer_create(&sl, 1);
    memset(op, 0, sizeof op);
    op[0].op = GRPC_OP_SEND_MESSAGE;
    op[0].data.send_message.send_message = bb;
    ok = srv_batch(s, call, op, 1);
    grpc_byte_buffer_destroy(bb);
  }
  srv_finish(s, call, ok ? GRPC_STATUS_OK : GRPC_STATUS_INVALID_ARGUMENT, 0);
}

static void *srv_main(void *arg) {
  bare_server *s = arg;
  for (;;) {
    grpc_call *call = NULL;
    grpc_call_details details;
    grpc_metadata_array md;
    grpc_call_details_init(&details);
    grpc_metadata_array_init(&md);
    static int req_tag;
    int ok = grpc_server_request_call(s->srv, &call, &details, &md, s->cq, s->cq, &req_tag) == GRPC_CALL_OK &&
             srv_wait(s, &req_tag);
    if (ok && call) {
      if (is_path(&details.method, UPLOAD_PATH)) srv_upload(s, call);
      else if (is_path(&details.method, DOWNLOAD_PATH)) srv_download(s, call);
      else srv_finish(s, call, GRPC_STATUS_UNIMPLEMENTED, 0);
    }
    if (call) grpc_call_unref(call);
    grpc_call_details_destroy(&details);
    grpc_metadata_array_destroy(&md);
    if (!ok) break; /* shutting down */
  }
  return NULL;
}

bare_server *bare_server_start(const char *ca, const char *cert, const char *key) {
  bare_server *s = calloc(1, sizeof *s);
  char *ca_pem = read_pem(ca), *cert_pem = read_pem(cert), *key_pem = read_pem(key);
  grpc_server_credentials *creds = NULL;
  if (!s || !ca_pem || !cert_pem || !key_pem) goto fail;
  grpc_init();
  grpc_ssl_pem_key_cert_pair pair = {key_pem, cert_pem};
  creds = grpc_ssl_server_credentials_create_ex(ca_pem, &pair, 1,
                                                GRPC_SSL_REQUEST_AND_REQUIRE_CLIENT_CERTIFICATE_AND_VERIFY, NULL);
  grpc_arg args[] = {int_arg(GRPC_ARG_MAX_RECEIVE_MESSAGE_LENGTH, MAX_MSG + 1024)};
  grpc_channel_args cargs = {1, args};
  s->srv = grpc_server_create(&cargs, NULL);
  s->cq = grpc_completion_queue_create_for_next(NULL);
  grpc_server_register_completion_queue(s->srv, s->cq, NULL);
  s->port = creds ? grpc_server_add_http2_port(s->srv, "127.0.0.1:0", creds) : 0;
  if (creds) grpc_server_credentials_release(creds);
  if (s->port <= 0) {
    grpc_server_destroy(s->srv);
    grpc_completion_queue_shutdown(s->cq);
    while (grpc_completion_queue_next(s->cq, gpr_inf_future(GPR_CLOCK_MONOTONIC), NULL).type != GRPC_QUEUE_SHUTDOWN) {
    }
    grpc_completion_queue_destroy(s->cq);
    grpc_shutdown();
    goto fail;
  }
  grpc_server_start(s->srv);
  pthread_create(&s->thread, NULL, srv_main, s);
  free(ca_pem);
  free(cert_pem);
  free(key_pem);
  return s;
fail:
  fprintf(stderr, "grpc_bare: cannot start the server\n");
  free(ca_pem);
  free(cert_pem);
  free(key_pem);
  free(s);
  return NULL;
}

int bare_server_port(const bare_server *s) { return s->port; }

void bare_server_stop(bare_server *s) {
  if (!s) return;
  /* The shutdown tag and the pending request both arrive on the server's
   * queue; its thread leaves on the failed request, then the queue drains. */
  grpc_server_shutdown_and_notify(s->srv, s->cq, &s->shutdown_tag);
  grpc_server_cancel_all_calls(s->srv);
  pthread_join(s->thread, NULL);
  while (!s->shut) {
    grpc_event ev = grpc_completion_queue_next(s->cq, after_ms(5000), NULL);
    if (ev.type != GRPC_OP_COMPLETE || ev.tag == &s->shutdown_tag) break;
  }
  grpc_server_destroy(s->srv);
  grpc_completion_queue_shutdown(s->cq);
  while (grpc_completion_queue_next(s->cq, gpr_inf_future(GPR_CLOCK_MONOTONIC), NULL).type != GRPC_QUEUE_SHUTDOWN) {
  }
  grpc_completion_queue_destroy(s->cq);
  free(s->payload);
  free(s);
  grpc_shutdown();
}

/* ---- client -------------------------------------------------------------------- */

bare_client *bare_client_new(const char *ca, const char *cert, const char *key, int port) {
  bare_client *c = calloc(1, sizeof *c);
  char *ca_pem = read_pem(ca), *cert_pem = read_pem(cert), *key_pem = read_pem(key);
  if (!c || !ca_pem || !cert_pem || !key_pem) {
    free(c);
    c = NULL;
    goto out;
  }
  grpc_init();
  grpc_ssl_pem_key_cert_pair pair = {key_pem, cert_pem};
  grpc_channel_credentials *creds = grpc_ssl_credentials_create(ca_pem, &pair, NULL, NULL);
  grpc_arg args[] = {int_arg(GRPC_ARG_MAX_RECEIVE_MESSAGE_LENGTH, MAX_MSG + 1024)};
  grpc_channel_args cargs = {1, args};
  char target[64];
  snprintf(target, sizeof target, "ipv4:127.0.0.1:%d", port);
  c->ch = grpc_channel_create(target, creds, &cargs);
  grpc_channel_credentials_release(creds);
  c->cq = grpc_completion_queue_create_for_pluck(NULL);
out:
  free(ca_pem);
  free(cert_pem);
  free(key_pem);
  return c;
}

void bare_client_free(bare_client *c) {
  if (!c) return;
  grpc_channel_destroy(c->ch);
  grpc_completion_queue_shutdown(c->cq);
  grpc_completion_queue_destroy(c->cq);
  free(c);
  grpc_shutdown();
}

static int cli_batch(bare_client *c, grpc_call *call, grpc_op *ops, size_t n) {
  static int tag;
  if (grpc_call_start_batch(call, ops, n, &tag, NULL) != GRPC_CALL_OK) return 0;
  grpc_event ev = grpc_completion_queue_pluck(c->cq, &tag, after_ms(120000), NULL);
  return ev.type == GRPC_OP_COMPLETE && ev.success;
}

static grpc_call *cli_call(bare_client *c, const char *path) {
  grpc_slice m = grpc_slice_from_static_string(path);
  return grpc_channel_create_call(c->ch, NULL, GRPC_PROPAGATE_DEFAULTS, c->cq, m, NULL, after_ms(120000), NULL);
}

/* RECV_STATUS_ON_CLIENT; 1 if OK. */
static int cli_status(bare_client *c, grpc_call *call) {
  grpc_op op;
  memset(&op, 0, sizeof op);
  grpc_status_code code = GRPC_STATUS_UNKNOWN;
  grpc_slice details;
  grpc_metadata_array trailing;
  grpc_metadata_array_init(&trailing);
  op.op = GRPC_OP_RECV_STATUS_ON_CLIENT;
  op.data.recv_status_on_client.status = &code;
  op.data.recv_status_on_client.status_details = &details;
  op.data.recv_status_on_client.trailing_metadata = &trailing;
  int ok = cli_batch(c, call, &op, 1);
  if (ok) grpc_slice_unref(details);
  grpc_metadata_array_destroy(&trailing);
  return ok && code == GRPC_STATUS_OK;
}

double bare_upload(bare_client *c, const void *payload, uint64_t bytes, size_t msg) {
  double t0 = now_s();
  grpc_call *call = cli_call(c, UPLOAD_PATH);
  grpc_op op[3];
  memset(op, 0, sizeof op);
  op[0].op = GRPC_OP_SEND_INITIAL_METADATA;
  int ok = call && cli_batch(c, call, op, 1);
  for (uint64_t off = 0; ok && off < bytes; off += msg) {
    size_t len = (size_t)(bytes - off < msg ? bytes - off : msg);
    grpc_slice sl = grpc_slice_from_static_buffer((const uint8_t *)payload + off, len);
    grpc_byte_buffer *bb = grpc_raw_byte_buffer_create(&sl, 1);
    memset(op, 0, sizeof op);
    op[0].op = GRPC_OP_SEND_MESSAGE;
    op[0].data.send_message.send_message = bb;
    ok = cli_batch(c, call, op, 1);
    grpc_byte_buffer_destroy(bb);
  }
  grpc_metadata_array md;
  grpc_metadata_array_init(&md);
  grpc_byte_buffer *reply = NULL;
  if (ok) {
    memset(op, 0, sizeof op);
    op[0].op = GRPC_OP_SEND_CLOSE_FROM_CLIENT;
    op[1].op = GRPC_OP_RECV_INITIAL_METADATA;
    op[1].data.recv_initial_metadata.recv_initial_metadata = &md;
    op[2].op = GRPC_OP_RECV_MESSAGE;
    op[2].data.recv_message.recv_message = &reply;
    ok = cli_batch(c, call, op, 3) && reply;
  }
  if (reply) grpc_byte_buffer_destroy(reply);
  grpc_metadata_array_destroy(&md);
  if (call) ok = cli_status(c, call) && ok;
  if (call) grpc_call_unref(call);
  return ok ? now_s() - t0 : -1;
}

double bare_download(bare_client *c, void *dst, uint64_t bytes, size_t msg) {
  double t0 = now_s();
  grpc_call *call = cli_call(c, DOWNLOAD_PATH);
  uint64_t want[2] = {bytes, msg};
  grpc_slice rs = grpc_slice_from_copied_buffer((const char *)want, sizeof want);
  grpc_byte_buffer *req = grpc_raw_byte_buffer_create(&rs, 1);
  grpc_slice_unref(rs);
  grpc_metadata_array md;
  grpc_metadata_array_init(&md);
  grpc_op op[3];
  memset(op, 0, sizeof op);
  op[0].op = GRPC_OP_SEND_INITIAL_METADATA;
  op[1].op = GRPC_OP_SEND_MESSAGE;
  op[1].data.send_message.send_message = req;
  op[2].op = GRPC_OP_SEND_CLOSE_FROM_CLIENT;
  int ok = call && cli_batch(c, call, op, 3);
  grpc_byte_buffer_destroy(req);
  if (ok) {
    memset(op, 0, sizeof op);
    op[0].op = GRPC_OP_RECV_INITIAL_METADATA;
    op[0].data.recv_initial_metadata.recv_initial_metadata = &md;
    ok = cli_batch(c, call, op, 1);
  }
  uint64_t got = 0;
  for (;;) {
    grpc_byte_buffer *bb = NULL;
    memset(op, 0, sizeof op);
    op[0].op = GRPC_OP_RECV_MESSAGE;
    op[0].data.recv_message.recv_message = &bb;
    if (!ok || !(ok = cli_batch(c, call, op, 1)) || !bb) break;
    /* One copy out of the slices into the caller's buffer. */
    grpc_byte_buffer_reader r;
    grpc_byte_buffer_reader_init(&r, bb);
    grpc_slice sl;
    while (ok && grpc_byte_buffer_reader_next(&r, &sl)) {
      size_t n = GRPC_SLICE_LENGTH(sl);
      if (got + n > bytes) ok = 0;
      else memcpy((uint8_t *)dst + got, GRPC_SLICE_START_PTR(sl), n);
      got += n;
      grpc_slice_unref(sl);
    }
    grpc_byte_buffer_reader_destroy(&r);
    grpc_byte_buffer_destroy(bb);
  }
  grpc_metadata_array_destroy(&md);
  if (call) ok = cli_status(c, call) && ok;
  if (call) grpc_call_unref(call);
  return ok && got == bytes ? now_s() - t0 : -1;
}
