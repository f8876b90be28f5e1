/*
 * testsvc.c - the test service of testsvc.h: Echo, AdminEcho, Sink, Source,
 * a throwaway PKI and server/channel helpers.
 *
 * Handlers are written the way a coordinator handler should be: validate the
 * first message, then loop, and finish with exactly one status on every path.
 * The Source payload cache holds at most TS_CACHE_SLOTS sizes; entries are
 * immutable once published (built outside the lock, published under it), so
 * handlers read them without holding the lock.
 */
#include "tests/support/testsvc.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "common/chunk.h"
#include "common/fileutil.h"
#include "common/hash_pipe.h"
#include "crypto/pki.h"
#include "crypto/sha256.h"
#include "fedc/error.h"
#include "fedc/v1/fedc.pb-c.h"
#include "transport/tensor_stream.h"

/* ---- PKI ------------------------------------------------------------------------ */

void ts_leaf(const char *dir, const char *role, const char *name, char *crt, size_t crtlen, char *key,
             size_t keylen) {
  snprintf(crt, crtlen, "%s/%s-%s.crt", dir, role, name);
  snprintf(key, keylen, "%s/%s-%s.key", dir, role, name);
}

static int append_file(FILE *out, const char *path) {
  char *buf = NULL;
  size_t len = 0;
  int rc = fc_read_file(path, 1 << 20, &buf, &len);
  if (rc != FEDC_OK) return rc;
  rc = fwrite(buf, 1, len, out) == len ? FEDC_OK : FEDC_ERR_IO;
  free(buf);
  return rc;
}

int ts_pki(const char *dir) {
  char err[300], other[512], path[600];
  int rc;
  snprintf(other, sizeof other, "%s/other", dir);
  if ((rc = fc_pki_init(dir, "test", NULL, 0, 30, NULL, err, sizeof err)) != FEDC_OK ||
      (rc = fc_pki_issue(dir, "client", "alice", NULL, 30, err, sizeof err)) != FEDC_OK ||
      (rc = fc_pki_issue(dir, "admin", "root", NULL, 30, err, sizeof err)) != FEDC_OK ||
      (rc = fc_pki_init(other, "other", NULL, 0, 30, NULL, err, sizeof err)) != FEDC_OK ||
      (rc = fc_pki_issue(other, "client", "mallory", NULL, 30, err, sizeof err)) != FEDC_OK) {
    fprintf(stderr, "ts_pki(%s): %s\n", dir, err);
    return rc;
  }
  snprintf(path, sizeof path, "%s/bundle.crt", dir);
  FILE *f = fopen(path, "w");
  if (!f) {
    fprintf(stderr, "ts_pki: cannot write %s\n", path);
    return FEDC_ERR_IO;
  }
  char ca[600];
  snprintf(ca, sizeof ca, "%s/%s", dir, FC_PKI_CA_CERT);
  rc = append_file(f, ca);
  snprintf(ca, sizeof ca, "%s/%s", other, FC_PKI_CA_CERT);
  if (rc == FEDC_OK) rc = append_file(f, ca);
  if (fclose(f) != 0 && rc == FEDC_OK) rc = FEDC_ERR_IO;
  if (rc != FEDC_OK) fprintf(stderr, "ts_pki: cannot write %s: %s\n", path, fedc_strerror(rc));
  return rc;
}

/* ---- payload cache (Source) ------------------------------------------------------- */

#define TS_CACHE_SLOTS 8

struct payload {
  uint64_t bytes;
  float *data;
  uint8_t sha[FC_SHA256_LEN];
};

static pthread_mutex_t cache_mu = PTHREAD_MUTEX_INITIALIZER;
static struct payload cache[TS_CACHE_SLOTS];
static int live_servers; /* the cache is freed when the last test server stops */

void ts_pattern(float *dst, size_t n) {
  for (size_t i = 0; i < n; i++) dst[i] = (float)i * 0.5f;
}

/* The cached payload of `bytes` bytes, built on first use; NULL on OOM or a full cache. */
static const struct payload *payload_get(uint64_t bytes) {
  const struct payload *found = NULL;
  pthread_mutex_lock(&cache_mu);
  for (int i = 0; i < TS_CACHE_SLOTS; i++)
    if (cache[i].data && cache[i].bytes == bytes) found = &cache[i];
  pthread_mutex_unlock(&cache_mu);
  if (found) return found;

  float *data = malloc(bytes);
  uint8_t sha[FC_SHA256_LEN];
  if (!data) return NULL;
  ts_pattern(data, bytes / 4);
  if (fc_payload_sha256(data, bytes, sha) != FEDC_OK) {
    free(data);
    return NULL;
  }
  pthread_mutex_lock(&cache_mu);
  for (int i = 0; i < TS_CACHE_SLOTS && !found; i++)
    if (cache[i].data && cache[i].bytes == bytes) found = &cache[i]; /* another thread won */
  for (int i = 0; i < TS_CACHE_SLOTS && !found; i++) {
    if (!cache[i].data) {
      cache[i].bytes = bytes;
      memcpy(cache[i].sha, sha, sizeof sha);
      cache[i].data = data;
      data = NULL;
      found = &cache[i];
    }
  }
  pthread_mutex_unlock(&cache_mu);
  free(data);
  return found;
}

/* Sink receives as the coordinator's upload handler does (coord_upload.c):
 * a stream of SINK_PIPE_MIN bytes or more is copied into a staging buffer
 * kept between calls and hashed beside the transfer by a hash pipe; shorter
 * ones are hashed inline. One kept buffer: a call that finds it in use
 * hashes inline. */
#define SINK_PIPE_MIN (4u << 20)
static pthread_mutex_t sink_mu = PTHREAD_MUTEX_INITIALIZER;
static uint8_t *sink_buf;
static uint64_t sink_cap;

static void cache_free(void) {
  pthread_mutex_lock(&cache_mu);
  if (--live_servers > 0) {
    pthread_mutex_unlock(&cache_mu);
    return;
  }
  for (int i = 0; i < TS_CACHE_SLOTS; i++) {
    free(cache[i].data);
    memset(&cache[i], 0, sizeof cache[i]);
  }
  pthread_mutex_unlock(&cache_mu);
  pthread_mutex_lock(&sink_mu); /* no server left, so no Sink call */
  free(sink_buf);
  sink_buf = NULL;
  sink_cap = 0;
  pthread_mutex_unlock(&sink_mu);
}

/* ---- handlers --------------------------------------------------------------------- */

static void h_echo(fc_scall *call, void *ctx) {
  (void)ctx;
  const Fedc__V1__CheckInRequest *req = (const Fedc__V1__CheckInRequest *)fc_scall_request(call);
  Fedc__V1__CheckInResponse resp = FEDC__V1__CHECK_IN_RESPONSE__INIT;
  resp.action = FEDC__V1__CHECK_IN_RESPONSE__ACTION__WAIT;
  resp.retry_after_ms = (uint32_t)req->num_examples;
  fc_scall_finish(call, GRPC_STATUS_OK, NULL, &resp.base);
}

/* Park: the call is parked and finished num_examples ms later by a thread
 * of its own (0: at once, racing the end of the handler's step;
 * TS_PARK_GATED: once ts_park_gate(1)), answering retry_after_ms =
 * num_examples. */
static atomic_int parked_open;

struct park_job {
  fc_scall *call;
  uint32_t ms;
};

static pthread_mutex_t gate_mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t gate_cv = PTHREAD_COND_INITIALIZER;
static int gate_open;

void ts_park_gate(int open) {
  pthread_mutex_lock(&gate_mu);
  gate_open = open;
  pthread_cond_broadcast(&gate_cv);
  pthread_mutex_unlock(&gate_mu);
}

static void *park_finisher(void *arg) {
  struct park_job *j = arg;
  if (j->ms == TS_PARK_GATED) {
    pthread_mutex_lock(&gate_mu);
    while (!gate_open) pthread_cond_wait(&gate_cv, &gate_mu);
    pthread_mutex_unlock(&gate_mu);
  } else if (j->ms) {
    struct timespec ts = {(time_t)(j->ms / 1000), (long)(j->ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
  }
  Fedc__V1__CheckInResponse resp = FEDC__V1__CHECK_IN_RESPONSE__INIT;
  resp.action = FEDC__V1__CHECK_IN_RESPONSE__ACTION__WAIT;
  resp.retry_after_ms = j->ms;
  fc_scall_finish(j->call, GRPC_STATUS_OK, NULL, &resp.base);
  free(j);
  atomic_fetch_sub(&parked_open, 1);
  return NULL;
}

static void h_park(fc_scall *call, void *ctx) {
  (void)ctx;
  const Fedc__V1__CheckInRequest *req = (const Fedc__V1__CheckInRequest *)fc_scall_request(call);
  struct park_job *j = malloc(sizeof *j);
  pthread_t t;
  pthread_attr_t a;
  if (!j) {
    fc_scall_finish(call, GRPC_STATUS_RESOURCE_EXHAUSTED, "out of memory", NULL);
    return;
  }
  j->call = call;
  j->ms = (uint32_t)req->num_examples;
  atomic_fetch_add(&parked_open, 1);
  fc_scall_park(call);
  pthread_attr_init(&a);
  pthread_attr_setdetachstate(&a, PTHREAD_CREATE_DETACHED);
  if (pthread_create(&t, &a, park_finisher, j) != 0) park_finisher(j);
  pthread_attr_destroy(&a);
}

int ts_parked_open(void) { return atomic_load(&parked_open); }

static grpc_status_code status_of(int err) {
  switch (err) {
  case FEDC_ERR_HASH: return GRPC_STATUS_DATA_LOSS;
  case FEDC_ERR_TOO_LARGE: return GRPC_STATUS_RESOURCE_EXHAUSTED;
  default: return GRPC_STATUS_INVALID_ARGUMENT;
  }
}

static void h_sink(fc_scall *call, void *ctx) {
  (void)ctx;
  const Fedc__V1__UploadMsg *first = (const Fedc__V1__UploadMsg *)fc_scall_request(call);
  fc_chunk_rx rx;
  char err[300];
  fc_hash_pipe *pipe = NULL;
  int have_buf = 0;
  memset(&rx, 0, sizeof rx);
  if (!first->header || first->chunk) {
    fc_scall_finish(call, GRPC_STATUS_INVALID_ARGUMENT, "first UploadMsg must carry a header and no chunk", NULL);
    return;
  }
  int rc = fc_chunk_rx_begin_pb(&rx, first->header, NULL, TS_SINK_MAX_TOTAL, err, sizeof err);
  if (rc != FEDC_OK) {
    fc_scall_finish(call, status_of(rc), err, NULL);
    goto out;
  }
  if (rx.total >= SINK_PIPE_MIN && pthread_mutex_trylock(&sink_mu) == 0) {
    have_buf = 1;
    if (sink_cap < rx.total) {
      uint8_t *nb = realloc(sink_buf, rx.total);
      if (nb) sink_buf = nb, sink_cap = rx.total;
    }
    if (sink_cap >= rx.total && fc_hash_pipe_start(sink_buf, &pipe) == FEDC_OK) fc_chunk_rx_hash_outside(&rx);
  }
  for (;;) {
    ProtobufCMessage *m = NULL;
    int r = fc_scall_recv(call, &m);
    if (r < 0) goto out; /* the call is already finished with a status */
    if (r == 0) break;
    const Fedc__V1__UploadMsg *msg = (const Fedc__V1__UploadMsg *)m;
    if (!msg->chunk || msg->header || msg->meta) {
      rc = FEDC_ERR_PROTOCOL;
      snprintf(err, sizeof err, "UploadMsg after the first must carry only a chunk");
    } else {
      uint64_t at = rx.received;
      rc = fc_chunk_rx_feed(&rx, msg->chunk->offset, msg->chunk->data.data, msg->chunk->data.len, err, sizeof err);
      if (rc == FEDC_OK && pipe) {
        memcpy(sink_buf + at, msg->chunk->data.data, msg->chunk->data.len);
        fc_hash_pipe_publish(pipe, rx.received);
      }
    }
    protobuf_c_message_free_unpacked(m, NULL);
    if (rc != FEDC_OK) {
      fc_scall_finish(call, status_of(rc), err, NULL);
      goto out;
    }
  }
  if (pipe) {
    uint8_t got[32];
    rc = fc_hash_pipe_finish(pipe, got);
    pipe = NULL;
    if (rc == FEDC_OK) rc = fc_chunk_rx_end_digest(&rx, got, err, sizeof err);
  } else {
    rc = fc_chunk_rx_end(&rx, err, sizeof err);
  }
  if (rc != FEDC_OK) {
    fc_scall_finish(call, status_of(rc), err, NULL);
    goto out;
  }
  {
    char hex[FC_SHA256_HEX_LEN];
    Fedc__V1__UploadResponse resp = FEDC__V1__UPLOAD_RESPONSE__INIT;
    resp.accepted = 1;
    resp.detail = fc_hex(rx.want_sha, FC_SHA256_LEN, hex);
    fc_scall_finish(call, GRPC_STATUS_OK, NULL, &resp.base);
  }
out:
  fc_hash_pipe_abort(pipe);
  if (have_buf) pthread_mutex_unlock(&sink_mu);
  fc_chunk_rx_free(&rx);
}

static int source_emit(void *ctx, const Fedc__V1__TensorHeader *header, const Fedc__V1__TensorChunk *chunk) {
  fc_scall *call = ctx;
  Fedc__V1__TensorStreamMsg msg = FEDC__V1__TENSOR_STREAM_MSG__INIT;
  msg.header = (Fedc__V1__TensorHeader *)header;
  msg.chunk = (Fedc__V1__TensorChunk *)chunk;
  int r = fc_scall_send(call, &msg.base);
  return r < 0 ? -r : FEDC_OK;
}

static void h_source(fc_scall *call, void *ctx) {
  (void)ctx;
  const Fedc__V1__FetchModelRequest *req = (const Fedc__V1__FetchModelRequest *)fc_scall_request(call);
  uint64_t bytes = req->version;
  if (bytes == 0 || bytes % 4 != 0 || bytes > TS_SOURCE_MAX) {
    fc_scall_finish(call, GRPC_STATUS_INVALID_ARGUMENT, "Source wants a positive multiple of 4 bytes, at most 1 GiB",
                    NULL);
    return;
  }
  const struct payload *p = payload_get(bytes);
  if (!p) {
    fc_scall_finish(call, GRPC_STATUS_RESOURCE_EXHAUSTED, "cannot build the payload", NULL);
    return;
  }
  fc_model_spec spec;
  memset(&spec, 0, sizeof spec);
  uint64_t shape[1] = {bytes / 4};
  fc_model_spec_add(&spec, "t", 1, shape);
  int rc = fc_tensor_stream_send(&spec, p->data, p->bytes, p->sha, TS_SOURCE_CHUNK, source_emit, call);
  if (rc == FEDC_OK) fc_scall_finish(call, GRPC_STATUS_OK, NULL, NULL);
  /* else the call is gone and already finished (fc_scall_send failed) */
}

/* ---- server and channels ---------------------------------------------------------------- */

static const fc_method methods[] = {
    /* Blocking handlers (async 0): the tests exercise the pool path. */
    {TS_ECHO, FC_RPC_UNARY, FC_ROLE_CLIENT, 1024, &fedc__v1__check_in_request__descriptor, h_echo, NULL, 0, 0},
    {TS_ADMIN_ECHO, FC_RPC_UNARY, FC_ROLE_ADMIN, 1024, &fedc__v1__check_in_request__descriptor, h_echo, NULL, 0, 0},
    {TS_SINK, FC_RPC_CLIENT_STREAM, FC_ROLE_CLIENT, FC_CHUNK_MAX + 4096, &fedc__v1__upload_msg__descriptor, h_sink,
     NULL, 0, 0},
    {TS_SOURCE, FC_RPC_SERVER_STREAM, FC_ROLE_CLIENT, 1024, &fedc__v1__fetch_model_request__descriptor, h_source,
     NULL, 0, 0},
    /* Async (event thread): parks its call. */
    {TS_PARK, FC_RPC_UNARY, FC_ROLE_CLIENT, 1024, &fedc__v1__check_in_request__descriptor, h_park, NULL, 1, 0},
};

const fc_method *ts_methods(size_t *n) {
  *n = sizeof methods / sizeof methods[0];
  return methods;
}

fc_server *ts_start(const char *pki_dir, int threads) { return ts_start_ex(pki_dir, threads, 0); }

fc_server *ts_start_ex(const char *pki_dir, int threads, int stream_idle_ms) {
  fc_server_opts o;
  fc_server_opts_init(&o);
  o.threads = threads > 0 ? threads : 4;
  if (stream_idle_ms > 0) o.stream_idle_ms = stream_idle_ms;
  return ts_start_with(pki_dir, &o);
}

fc_server *ts_start_with(const char *pki_dir, const fc_server_opts *base) {
  char ca[600], crt[600], key[600], err[400];
  snprintf(ca, sizeof ca, "%s/%s", pki_dir, FC_PKI_CA_CERT);
  snprintf(crt, sizeof crt, "%s/%s", pki_dir, FC_PKI_COORD_CERT);
  snprintf(key, sizeof key, "%s/%s", pki_dir, FC_PKI_COORD_KEY);
  fc_transport_init();
  fc_server_opts o = *base;
  o.addr = "127.0.0.1:0";
  o.tls.ca = ca;
  o.tls.cert = crt;
  o.tls.key = key;
  o.federation = "test";
  o.methods = ts_methods(&o.nmethods);
  fc_server *s = NULL;
  int rc = fc_server_start(&o, &s, err, sizeof err);
  if (rc != FEDC_OK) {
    fprintf(stderr, "ts_start: %s (%s)\n", err, fedc_strerror(rc));
    fc_transport_shutdown();
    return NULL;
  }
  pthread_mutex_lock(&cache_mu);
  live_servers++;
  pthread_mutex_unlock(&cache_mu);
  return s;
}

void ts_stop(fc_server *s, int grace_ms) {
  if (!s) return;
  fc_server_shutdown(s, grace_ms);
  fc_server_destroy(s);
  cache_free();
  fc_transport_shutdown();
}

int ts_channel_ex(const char *ca, const char *cert, const char *key, int port, const char *protocol_version,
                  fc_channel **out, char *err, size_t errlen) {
  char target[64];
  snprintf(target, sizeof target, "127.0.0.1:%d", port);
  fc_channel_opts o;
  fc_channel_opts_init(&o);
  o.target = target;
  o.tls.ca = ca;
  o.tls.cert = cert;
  o.tls.key = key;
  o.protocol_version = protocol_version;
  return fc_channel_create(&o, out, err, errlen);
}

fc_channel *ts_channel(const char *pki_dir, int port, const char *role, const char *name) {
  char ca[600], crt[600], key[600], err[400];
  snprintf(ca, sizeof ca, "%s/%s", pki_dir, FC_PKI_CA_CERT);
  ts_leaf(pki_dir, role, name, crt, sizeof crt, key, sizeof key);
  fc_channel *ch = NULL;
  int rc = ts_channel_ex(ca, crt, key, port, NULL, &ch, err, sizeof err);
  if (rc != FEDC_OK) {
    fprintf(stderr, "ts_channel(%s/%s): %s (%s)\n", role, name, err, fedc_strerror(rc));
    return NULL;
  }
  return ch;
}

/* ---- Sink client ---------------------------------------------------------------------- */

struct upload {
  fc_ccall *call;
  fc_status *st;
  int corrupt_chunk;
  int chunks;
  uint8_t *scratch;
};

static int upload_emit(void *ctx, const Fedc__V1__TensorHeader *header, const Fedc__V1__TensorChunk *chunk) {
  struct upload *u = ctx;
  Fedc__V1__UploadMsg msg = FEDC__V1__UPLOAD_MSG__INIT;
  Fedc__V1__TensorChunk bad;
  msg.header = (Fedc__V1__TensorHeader *)header;
  msg.chunk = (Fedc__V1__TensorChunk *)chunk;
  if (chunk && u->chunks++ == u->corrupt_chunk) {
    bad = *chunk;
    memcpy(u->scratch, chunk->data.data, chunk->data.len);
    u->scratch[chunk->data.len / 2] ^= 0x01;
    bad.data.data = u->scratch;
    msg.chunk = &bad;
  }
  return fc_ccall_send(u->call, &msg.base, u->st);
}

int ts_sink_upload(fc_channel *ch, const void *payload, uint64_t bytes, const uint8_t *sha, uint32_t chunk_bytes,
                   int corrupt_chunk, char *detail, size_t dlen, fc_status *st) {
  fc_model_spec spec;
  memset(&spec, 0, sizeof spec);
  uint64_t shape[1] = {bytes / 4};
  fc_model_spec_add(&spec, "t", 1, shape);
  uint8_t own[FC_SHA256_LEN];
  if (!sha) {
    if (fc_payload_sha256(payload, bytes, own) != FEDC_OK) return FEDC_ERR_CRYPTO;
    sha = own;
  }
  struct upload u = {NULL, st, corrupt_chunk, 0, NULL};
  if (corrupt_chunk >= 0 && !(u.scratch = malloc(chunk_bytes))) return FEDC_ERR_NOMEM;
  int rc = fc_ccall_start(ch, TS_SINK, FC_RPC_CLIENT_STREAM, NULL, 120000, &u.call, st);
  if (rc == FEDC_OK) rc = fc_tensor_stream_send(&spec, payload, bytes, sha, chunk_bytes, upload_emit, &u);
  if (rc == FEDC_OK) {
    ProtobufCMessage *resp = NULL;
    rc = fc_ccall_close_and_recv(u.call, &fedc__v1__upload_response__descriptor, &resp, st);
    if (rc == FEDC_OK) {
      const Fedc__V1__UploadResponse *r = (const Fedc__V1__UploadResponse *)resp;
      snprintf(detail, dlen, "%s", r->accepted ? r->detail : "not accepted");
      protobuf_c_message_free_unpacked(resp, NULL);
    }
  }
  fc_ccall_destroy(u.call);
  free(u.scratch);
  return rc;
}

double ts_now(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
}

int ts_loopback_socket(int listen_too, int *port) {
  *port = 0;
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
  socklen_t len = sizeof a;
  if (fd < 0) return -1;
  if (bind(fd, (struct sockaddr *)&a, sizeof a) != 0 || getsockname(fd, (struct sockaddr *)&a, &len) != 0 ||
      (listen_too && listen(fd, 64) != 0)) {
    close(fd);
    return -1;
  }
  *port = ntohs(a.sin_port);
  if (listen_too) return fd;
  close(fd);
  return -1;
}
