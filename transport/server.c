/*
 * server.c - mutual-TLS gRPC server over the C core, event-driven.
 *
 * Shape. `threads` event threads, each owning one completion queue registered
 * with the server, with REQUESTS_PER_QUEUE grpc_server_request_call posted on
 * it at all times. Everything a call waits for (its first message, each
 * further message, each send's completion, the status going out) is one batch
 * whose completion arrives on its event thread; a call has at most one batch
 * in flight, so the tag is the call itself and `op` says which batch it was.
 * Nothing blocks an event thread: a peer that stalls costs a call record and
 * gRPC's buffers, never a thread (with the old one-call-per-worker design, four
 * certificates holding 16 stalled uploads locked admins out for 30 s).
 *
 * Per call, on its event thread:
 *   new      -> method known? protocol version strict "<major>[.<minor>]"?
 *               identity (the SPIFFE ID of the verified certificate, by
 *               crypto/pki.c's fc_pki_cert_spiffe_uri, the rule the CA tools
 *               use)? role allowed? the identity under its call cap?
 *               -> {SEND_INITIAL_METADATA, RECV_MESSAGE}   (else a status)
 *   first    -> size limit, unpack, then the handler:
 *               async methods: inline; it finishes, or hands the stream to
 *               on_msg/on_end (client stream: {RECV_MESSAGE} each) or to next
 *               (server stream: {SEND_MESSAGE} each);
 *               blocking methods: queued to a pool thread (admin methods to a
 *               pool of their own), whose blocking recv/send start a batch and
 *               sleep until this thread signals its completion.
 *   status   -> {[SEND_INITIAL_METADATA], [SEND_MESSAGE], SEND_STATUS_FROM_SERVER,
 *               RECV_CLOSE_ON_SERVER}; its completion releases the call.
 * Idle deadlines: every batch but the status carries a deadline of
 * stream_idle_ms; each event thread sweeps its calls every SWEEP_MS and cancels
 * those past it (the batch then completes, failed, and the call is released).
 * The status batch is bounded by the same sweep.
 *
 * Op sequences follow ../shared/notes/grpc-core-c.md (measured on gRPC 1.51).
 *
 * Shutdown: shutdown_and_notify -> wait up to the grace period ->
 * cancel_all_calls -> wait for the notification; event threads leave once
 * stopping and no call or posted request is left (the requests complete,
 * failed, at shutdown); then pools are joined, the server destroyed, and each
 * queue shut down and drained.
 */
#include <grpc/byte_buffer_reader.h>
#include <grpc/grpc_security.h>
#include <grpc/support/alloc.h>
#include <grpc/support/time.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <limits.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common/log.h"
#include "crypto/pki.h"
#include "fedc/error.h"
#include "transport/transport.h"
#include "transport/transport_int.h"

#define MOD "transport"
#define REQUESTS_PER_QUEUE 16 /* new calls a queue can take at once before gRPC holds them */
#define SWEEP_MS 100          /* how often each event thread looks for idle calls */
#define PEER_BUCKETS 4096
#define REFUSAL_STATUS_MS 1000 /* see refuse() */

enum { TAG_NEW = 1, TAG_CALL = 2 };
enum op_kind { OP_NONE = 0, OP_FIRST, OP_RECV, OP_SEND, OP_STATUS, OP_WAIT };

/* Calls in progress per caller identity ("role/name"): one caller may hold at
 * most max_calls_per_peer calls, so one identity cannot pile up stalled calls.
 * A hash table of the identities that have calls now. */
typedef struct peer_count {
  struct peer_count *next;
  int calls;
  char key[100];
} peer_count;

struct poller;
struct pool;

struct fc_scall {
  int tag_type; /* TAG_CALL: events carry fc_scall* or new_call* */
  fc_server *srv;
  struct poller *p;
  const fc_method *m;
  grpc_call *call;
  fc_peer peer;
  ProtobufCMessage *req;
  char method[128];
  char peer_key[100];
  int peer_counted;
  /* the one batch in flight */
  enum op_kind op;
  atomic_uint_fast64_t deadline_ms; /* 0 = none (monotonic ms) */
  atomic_int timed_out;
  grpc_op ops[6];
  grpc_byte_buffer *recv_bb, *send_bb;
  grpc_slice status_detail;
  int status_detail_set;
  grpc_metadata trailer; /* FC_RETRY_AFTER_MD_KEY, when set */
  int trailer_set;
  int close_cancelled;
  /* a blocking handler waiting for its batch */
  pthread_mutex_t mu;
  pthread_cond_t cv;
  int wait_done, wait_ok;
  /* call state */
  int blocking;        /* served by a pool thread */
  int sent_initial_md;
  int finished;        /* a status was queued (or the call is dead) */
  int dead;            /* async: a batch could not start; the current step's end releases (settle) */
  int short_status;    /* a refusal: its status batch gets REFUSAL_STATUS_MS */
  int stream_done;
  int released;
  uint64_t bytes_in, bytes_out;
  /* async stream hooks */
  fc_msg_fn on_msg;
  fc_step_fn on_end, next;
  fc_done_fn on_done;
  void *hstate;
  int hooks_set;
  /* the event thread's list */
  struct fc_scall *prev_in_list, *next_in_list;
  struct fc_scall *next_in_queue; /* pool queue */
};

typedef struct new_call {
  int tag_type; /* TAG_NEW */
  struct poller *p;
  grpc_call *call;
  grpc_call_details det;
  grpc_metadata_array md;
} new_call;

struct poller {
  fc_server *srv;
  grpc_completion_queue *cq;
  pthread_t thread;
  int started;
  pthread_mutex_t mu; /* the list: a blocking pool thread may release a call */
  fc_scall *calls;
  int ncalls;
  int requests; /* request_call posts outstanding (event thread only) */
  uint64_t last_sweep;
};

struct pool {
  fc_server *srv;
  pthread_mutex_t mu;
  pthread_cond_t cv;
  fc_scall *head, *tail;
  int stop;
  int nthreads;
  pthread_t *threads;
  int *started;
};

struct fc_server {
  grpc_server *server;
  grpc_completion_queue *shutdown_cq;
  fc_server_opts opts;
  char federation[64];
  int port;
  int npollers;
  struct poller *pollers;
  struct pool general, admin;
  atomic_int stopping;
  int shut_down;
  size_t max_recv_any;
  grpc_resource_quota *quota;
  pthread_mutex_t peers_mu;
  peer_count *peers[PEER_BUCKETS];
};

void fc_server_opts_init(fc_server_opts *o) {
  memset(o, 0, sizeof *o);
  o->addr = "127.0.0.1:7070";
  o->threads = 2;
  o->blocking_threads = 4;
  o->stream_idle_ms = 30000;
  o->keepalive_ms = 0; /* no HTTP/2 keepalive pings from the server (see fc_server_opts) */
  o->max_idle_ms = 0; /* no idle timer per connection (see fc_server_opts) */
}

static uint64_t mono_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

/* ---- peers ------------------------------------------------------------------------ */

static uint32_t hash_key(const char *s) {
  uint32_t h = 2166136261u; /* FNV-1a */
  while (*s) h = (h ^ (uint8_t)*s++) * 16777619u;
  return h;
}

/* Count a call for peer `key`; 0 if the peer is at its limit (or no memory). */
static int peer_enter(fc_server *s, const char *key) {
  uint32_t b = hash_key(key) % PEER_BUCKETS;
  int ok = 0;
  pthread_mutex_lock(&s->peers_mu);
  peer_count *e = s->peers[b];
  while (e && strcmp(e->key, key) != 0) e = e->next;
  if (!e && (e = calloc(1, sizeof *e))) {
    snprintf(e->key, sizeof e->key, "%s", key);
    e->next = s->peers[b];
    s->peers[b] = e;
  }
  if (e && e->calls < s->opts.max_calls_per_peer) {
    e->calls++;
    ok = 1;
  }
  pthread_mutex_unlock(&s->peers_mu);
  return ok;
}

static void peer_leave(fc_server *s, const char *key) {
  uint32_t b = hash_key(key) % PEER_BUCKETS;
  pthread_mutex_lock(&s->peers_mu);
  for (peer_count **pp = &s->peers[b]; *pp; pp = &(*pp)->next) {
    peer_count *e = *pp;
    if (strcmp(e->key, key) != 0) continue;
    if (--e->calls <= 0) {
      *pp = e->next;
      free(e);
    }
    break;
  }
  pthread_mutex_unlock(&s->peers_mu);
}

/* ---- call records ------------------------------------------------------------------ */

/* The core is done with the call: tell the handler, free everything. Any
 * thread; no batch of the call may be in flight. */
static void release(fc_scall *c) {
  if (c->released) return;
  c->released = 1;
  if (c->on_done) c->on_done(c->hstate);
  c->on_done = NULL;
  if (c->peer_counted) peer_leave(c->srv, c->peer_key);
  struct poller *p = c->p;
  pthread_mutex_lock(&p->mu);
  if (c->prev_in_list) c->prev_in_list->next_in_list = c->next_in_list;
  else
    p->calls = c->next_in_list;
  if (c->next_in_list) c->next_in_list->prev_in_list = c->prev_in_list;
  p->ncalls--;
  pthread_mutex_unlock(&p->mu);
  if (c->req) protobuf_c_message_free_unpacked(c->req, NULL);
  if (c->recv_bb) grpc_byte_buffer_destroy(c->recv_bb);
  if (c->send_bb) grpc_byte_buffer_destroy(c->send_bb);
  if (c->status_detail_set) grpc_slice_unref(c->status_detail);
  if (c->trailer_set) {
    grpc_slice_unref(c->trailer.key);
    grpc_slice_unref(c->trailer.value);
  }
  grpc_call_unref(c->call);
  pthread_mutex_destroy(&c->mu);
  pthread_cond_destroy(&c->cv);
  free(c);
}

/* Start the call's one batch. with_deadline: bounded by stream_idle_ms. */
static int start_batch(fc_scall *c, enum op_kind op, size_t n) {
  c->op = op;
  uint64_t wait = op == OP_STATUS && c->short_status ? REFUSAL_STATUS_MS : (uint64_t)c->srv->opts.stream_idle_ms;
  atomic_store(&c->deadline_ms, mono_ms() + wait);
  if (grpc_call_start_batch(c->call, c->ops, n, c, NULL) != GRPC_CALL_OK) {
    c->op = OP_NONE;
    atomic_store(&c->deadline_ms, 0);
    return -1;
  }
  return 0;
}

/* Blocking handlers: start a batch and sleep until the event thread says it
 * completed. 1 ok, 0 failed (peer gone, cancelled), -FEDC_ERR_TIMEOUT idle. */
static int wait_batch(fc_scall *c, size_t n) {
  pthread_mutex_lock(&c->mu);
  c->wait_done = 0;
  pthread_mutex_unlock(&c->mu);
  if (start_batch(c, OP_WAIT, n) != 0) return 0;
  pthread_mutex_lock(&c->mu);
  while (!c->wait_done) pthread_cond_wait(&c->cv, &c->mu);
  int ok = c->wait_ok;
  pthread_mutex_unlock(&c->mu);
  if (atomic_load(&c->timed_out)) return -FEDC_ERR_TIMEOUT;
  return ok ? 1 : 0;
}

/* Fill the status batch into c->ops; returns the op count. Takes msg. */
static size_t status_ops(fc_scall *c, grpc_status_code code, const char *detail, grpc_byte_buffer *msg) {
  size_t n = 0;
  memset(c->ops, 0, sizeof c->ops);
  if (c->status_detail_set) grpc_slice_unref(c->status_detail);
  c->status_detail = grpc_slice_from_copied_string(detail ? detail : "");
  c->status_detail_set = 1;
  if (!c->sent_initial_md) {
    c->ops[n++].op = GRPC_OP_SEND_INITIAL_METADATA;
    c->sent_initial_md = 1;
  }
  if (c->send_bb) grpc_byte_buffer_destroy(c->send_bb);
  c->send_bb = msg;
  if (msg) {
    c->ops[n].op = GRPC_OP_SEND_MESSAGE;
    c->ops[n++].data.send_message.send_message = msg;
  }
  c->ops[n].op = GRPC_OP_SEND_STATUS_FROM_SERVER;
  if (c->trailer_set) {
    c->ops[n].data.send_status_from_server.trailing_metadata_count = 1;
    c->ops[n].data.send_status_from_server.trailing_metadata = &c->trailer;
  }
  c->ops[n].data.send_status_from_server.status = code;
  c->ops[n++].data.send_status_from_server.status_details = &c->status_detail;
  c->ops[n].op = GRPC_OP_RECV_CLOSE_ON_SERVER;
  c->ops[n++].data.recv_close_on_server.cancelled = &c->close_cancelled;
  c->finished = 1;
  return n;
}

/* Queue the status. Async: returns at once (its completion releases the call).
 * Blocking: waits for it. */
static void send_status(fc_scall *c, grpc_status_code code, const char *detail, grpc_byte_buffer *msg) {
  /* The caller's slot is free once its answer is decided: a client that
   * starts its next call the moment this status arrives must not find this
   * one still counted (seen under load as "too many concurrent calls" for
   * strictly sequential calls, while the status batch had yet to complete). */
  if (c->peer_counted) {
    peer_leave(c->srv, c->peer_key);
    c->peer_counted = 0;
  }
  size_t n = status_ops(c, code, detail, msg);
  if (c->blocking) {
    wait_batch(c, n);
    return;
  }
  /* Never released from in here: the caller (a handler, on the stack) still
   * holds c; the step's end releases a dead call (settle). */
  if (start_batch(c, OP_STATUS, n) != 0) c->dead = 1;
}

/* End of an async step: a call that could not start its next batch is
 * released here, where no handler frame holds it any more. */
static void settle(fc_scall *c) {
  if (c->dead) release(c);
}

/* The message in c->recv_bb (taken): 1 with *out, 0 end of stream, <0 error
 * with the status already queued. */
static int take_message(fc_scall *c, ProtobufCMessage **out) {
  grpc_byte_buffer *bb = c->recv_bb;
  c->recv_bb = NULL;
  if (!bb) {
    c->stream_done = 1;
    return 0;
  }
  size_t len = grpc_byte_buffer_length(bb);
  if (len > c->m->max_recv) {
    char msg[200];
    snprintf(msg, sizeof msg, "message of %zu bytes exceeds the %zu-byte limit of %s", len, c->m->max_recv,
             c->method);
    grpc_byte_buffer_destroy(bb);
    FC_WARN(MOD, "%s from %s: %s", c->method, c->peer.name, msg);
    send_status(c, GRPC_STATUS_RESOURCE_EXHAUSTED, msg, NULL);
    return -FEDC_ERR_TOO_LARGE;
  }
  c->bytes_in += len;
  ProtobufCMessage *msg = NULL;
  int rc = fc_unpack_message(bb, c->m->request, c->m->max_recv, &msg);
  grpc_byte_buffer_destroy(bb);
  if (rc != FEDC_OK) {
    char d[160];
    snprintf(d, sizeof d, rc == FEDC_ERR_NOMEM ? "out of memory unpacking %s" : "malformed %s message",
             c->m->request->name);
    FC_WARN(MOD, "%s from %s: %s", c->method, c->peer.name, d);
    send_status(c, rc == FEDC_ERR_NOMEM ? GRPC_STATUS_RESOURCE_EXHAUSTED : GRPC_STATUS_INVALID_ARGUMENT, d, NULL);
    return -FEDC_ERR_PROTOCOL;
  }
  *out = msg;
  return 1;
}

/* Fill a {[SEND_INITIAL_METADATA], RECV_MESSAGE} batch; returns the count. */
static size_t recv_ops(fc_scall *c) {
  size_t n = 0;
  memset(c->ops, 0, sizeof c->ops);
  if (!c->sent_initial_md) {
    c->ops[n++].op = GRPC_OP_SEND_INITIAL_METADATA;
    c->sent_initial_md = 1;
  }
  c->ops[n].op = GRPC_OP_RECV_MESSAGE;
  c->ops[n++].data.recv_message.recv_message = &c->recv_bb;
  return n;
}

/* Fill a {[SEND_INITIAL_METADATA], SEND_MESSAGE} batch for msg; -1 on OOM. */
static int send_ops(fc_scall *c, const ProtobufCMessage *msg, size_t *n) {
  grpc_byte_buffer *bb = fc_pack_message(msg);
  if (!bb) return -1;
  if (c->send_bb) grpc_byte_buffer_destroy(c->send_bb);
  c->send_bb = bb;
  c->bytes_out += grpc_byte_buffer_length(bb);
  *n = 0;
  memset(c->ops, 0, sizeof c->ops);
  if (!c->sent_initial_md) {
    c->ops[(*n)++].op = GRPC_OP_SEND_INITIAL_METADATA;
    c->sent_initial_md = 1;
  }
  c->ops[*n].op = GRPC_OP_SEND_MESSAGE;
  c->ops[(*n)++].data.send_message.send_message = bb;
  return 0;
}

/* ---- handler API -------------------------------------------------------------- */

const fc_peer *fc_scall_peer(const fc_scall *c) { return &c->peer; }
const char *fc_scall_method(const fc_scall *c) { return c->method; }
const ProtobufCMessage *fc_scall_request(const fc_scall *c) { return c->req; }
uint64_t fc_scall_bytes_in(const fc_scall *c) { return c->bytes_in; }
uint64_t fc_scall_bytes_out(const fc_scall *c) { return c->bytes_out; }
int fc_scall_finished(const fc_scall *c) { return c->finished; }

void fc_scall_cancel(fc_scall *c, grpc_status_code code, const char *why) {
  grpc_call_cancel_with_status(c->call, code, why, NULL);
}

int fc_scall_recv(fc_scall *c, ProtobufCMessage **msg) {
  if (!c->blocking) return -FEDC_ERR_INVALID; /* an event thread never waits */
  if (c->finished) return -FEDC_ERR_PROTOCOL;
  if (c->stream_done) return 0;
  int r = wait_batch(c, recv_ops(c));
  if (r <= 0) {
    if (c->recv_bb) {
      grpc_byte_buffer_destroy(c->recv_bb);
      c->recv_bb = NULL;
    }
    if (r == -FEDC_ERR_TIMEOUT)
      FC_WARN(MOD, "%s from %s/%s: no message within %d ms, call cancelled", c->method, fc_role_name(c->peer.role),
              c->peer.name, c->srv->opts.stream_idle_ms);
    c->finished = 1; /* the call is dead: nothing more can be sent */
    return r == -FEDC_ERR_TIMEOUT ? r : -FEDC_ERR_UNAVAILABLE;
  }
  return take_message(c, msg);
}

int fc_scall_send(fc_scall *c, const ProtobufCMessage *msg) {
  if (!c->blocking) return -FEDC_ERR_INVALID;
  if (c->finished) return -FEDC_ERR_UNAVAILABLE;
  size_t n;
  if (send_ops(c, msg, &n) != 0) return -FEDC_ERR_NOMEM;
  int r = wait_batch(c, n);
  if (r != 1) {
    c->finished = 1;
    return r == -FEDC_ERR_TIMEOUT ? r : -FEDC_ERR_UNAVAILABLE;
  }
  return 0;
}

int fc_scall_finish(fc_scall *c, grpc_status_code code, const char *detail, const ProtobufCMessage *resp) {
  if (c->finished) return -FEDC_ERR_PROTOCOL;
  grpc_byte_buffer *bb = NULL;
  if (resp && code == GRPC_STATUS_OK) {
    bb = fc_pack_message(resp);
    if (!bb) {
      send_status(c, GRPC_STATUS_RESOURCE_EXHAUSTED, "out of memory", NULL);
      return -FEDC_ERR_NOMEM;
    }
    c->bytes_out += grpc_byte_buffer_length(bb);
  }
  send_status(c, code, detail, bb);
  return 0;
}

int fc_scall_finish_retry(fc_scall *c, grpc_status_code code, const char *detail, uint32_t retry_after_ms) {
  if (c->finished) return -FEDC_ERR_PROTOCOL;
  if (!c->trailer_set && retry_after_ms) {
    char v[16];
    snprintf(v, sizeof v, "%u", retry_after_ms);
    c->trailer.key = grpc_slice_from_static_string(FC_RETRY_AFTER_MD_KEY);
    c->trailer.value = grpc_slice_from_copied_string(v);
    c->trailer_set = 1;
  }
  return fc_scall_finish(c, code, detail, NULL);
}

void fc_scall_stream_in(fc_scall *c, fc_msg_fn on_msg, fc_step_fn on_end, fc_done_fn on_done, void *state) {
  c->on_msg = on_msg;
  c->on_end = on_end;
  c->on_done = on_done;
  c->hstate = state;
  c->hooks_set = 1;
}

void fc_scall_stream_out(fc_scall *c, fc_step_fn next, fc_done_fn on_done, void *state) {
  c->next = next;
  c->on_done = on_done;
  c->hstate = state;
  c->hooks_set = 1;
}

int fc_scall_send_async(fc_scall *c, const ProtobufCMessage *msg) {
  if (c->blocking || c->finished || c->op != OP_NONE) return -FEDC_ERR_INVALID;
  size_t n;
  if (send_ops(c, msg, &n) != 0) {
    send_status(c, GRPC_STATUS_RESOURCE_EXHAUSTED, "out of memory", NULL);
    return -FEDC_ERR_NOMEM;
  }
  if (start_batch(c, OP_SEND, n) != 0) {
    c->finished = 1;
    c->dead = 1; /* released at the end of this step */
    return -FEDC_ERR_UNAVAILABLE;
  }
  return 0;
}

/* ---- dispatch ------------------------------------------------------------------- */

static const fc_method *find_method(const fc_server *s, const char *path) {
  for (size_t i = 0; i < s->opts.nmethods; i++)
    if (strcmp(s->opts.methods[i].path, path) == 0) return &s->opts.methods[i];
  return NULL;
}

/* Copy the value of metadata `key` into out[outlen] (NUL-terminated). 1 if
 * found, 0 if absent, -1 if the value does not fit (nothing is truncated: a
 * cut value could read as a different, valid one). */
static int md_get(const grpc_metadata_array *md, const char *key, char *out, size_t outlen) {
  for (size_t i = 0; i < md->count; i++) {
    const grpc_slice *k = &md->metadata[i].key;
    if (GRPC_SLICE_LENGTH(*k) == strlen(key) && memcmp(GRPC_SLICE_START_PTR(*k), key, strlen(key)) == 0) {
      size_t n = GRPC_SLICE_LENGTH(md->metadata[i].value);
      if (n >= outlen) return -1;
      memcpy(out, GRPC_SLICE_START_PTR(md->metadata[i].value), n);
      out[n] = 0;
      return 1;
    }
  }
  return 0;
}

/* The metadata value s made safe to quote in a status or log line: at most
 * dlen-1 bytes, anything but printable ASCII shown as '?'. */
static void printable(const char *s, char *dst, size_t dlen) {
  size_t i = 0;
  for (; s[i] && i + 1 < dlen; i++) dst[i] = s[i] >= 0x20 && s[i] < 0x7f ? s[i] : '?';
  dst[i] = '\0';
}

#define PROTOCOL_PART_DIGITS 6 /* "999999" is plenty for a version number */

/* One version part: 1..PROTOCOL_PART_DIGITS decimal digits. Returns the
 * character after it, or NULL. */
static const char *parse_version_part(const char *s, unsigned *out) {
  unsigned v = 0;
  int n = 0;
  while (s[n] >= '0' && s[n] <= '9') {
    if (n == PROTOCOL_PART_DIGITS) return NULL;
    v = v * 10 + (unsigned)(s[n] - '0');
    n++;
  }
  if (n == 0) return NULL;
  *out = v;
  return s + n;
}

/* Strict "<major>" or "<major>.<minor>", digits only: atoi would read
 * "1garbage" as 1 and "+1" or " 1" as 1 too. 0 ok, -1 malformed. */
static int parse_protocol_version(const char *s, unsigned *major, unsigned *minor) {
  unsigned maj = 0, min = 0;
  const char *p = parse_version_part(s, &maj);
  if (p && *p == '.') p = parse_version_part(p + 1, &min);
  if (!p || *p) return -1;
  *major = maj;
  *minor = min;
  return 0;
}

/* Largest peer certificate we parse; gRPC already verified it against the CA. */
#define PEER_CERT_PEM_MAX (64 * 1024)

/*
 * The peer's SPIFFE ID into uri[urilen], by the one rule of crypto/pki.c
 * (fc_pki_cert_spiffe_uri: only URI SANs, exactly one spiffe URI in any letter
 * case) applied to the leaf certificate gRPC verified and hands us as PEM.
 * gRPC's own peer_spiffe_id and SAN list are not used: the first compares the
 * scheme case-sensitively, so "SPIFFE://f/admin/a" beside
 * "spiffe://f/client/b" passed as b, and the second mixes DNS and e-mail SANs
 * in with the URIs. 0 ok, else -1 with a refusal text in why.
 */
/*
 * Identities already read, keyed by the exact certificate PEM: parsing a PEM
 * certificate with OpenSSL 3 (its decoder framework, provider locks) cost
 * more than the rest of a CheckIn together (28% of the coordinator's CPU in
 * libcrypto with 1,000 clients checking in), and every call of a connection
 * carries the same certificate. Only certificates that passed are cached; the
 * table is emptied when full (bounded memory, then it refills from use).
 */
#define ID_CACHE_BUCKETS 8192
#define ID_CACHE_MAX 65536

typedef struct id_entry {
  struct id_entry *next;
  uint64_t hash;
  size_t pem_len;
  char uri[FC_PKI_URI_MAX];
  uint8_t fp[32]; /* SHA-256 of the certificate (DER) */
  char pem[]; /* pem_len bytes */
} id_entry;

static pthread_mutex_t g_id_mu = PTHREAD_MUTEX_INITIALIZER;
static id_entry *g_id_buckets[ID_CACHE_BUCKETS];
static size_t g_id_count;

static uint64_t pem_hash(const char *p, size_t n) {
  uint64_t h = 1469598103934665603ull; /* FNV-1a 64 */
  for (size_t i = 0; i < n; i++) h = (h ^ (uint8_t)p[i]) * 1099511628211ull;
  return h;
}

static int id_cache_get(const char *pem, size_t n, uint64_t h, char *uri, size_t urilen, uint8_t fp[32]) {
  int found = 0;
  pthread_mutex_lock(&g_id_mu);
  for (id_entry *e = g_id_buckets[h % ID_CACHE_BUCKETS]; e; e = e->next)
    if (e->hash == h && e->pem_len == n && memcmp(e->pem, pem, n) == 0) {
      snprintf(uri, urilen, "%s", e->uri);
      memcpy(fp, e->fp, 32);
      found = 1;
      break;
    }
  pthread_mutex_unlock(&g_id_mu);
  return found;
}

static void id_cache_clear_locked(void) {
  for (size_t b = 0; b < ID_CACHE_BUCKETS; b++)
    while (g_id_buckets[b]) {
      id_entry *e = g_id_buckets[b];
      g_id_buckets[b] = e->next;
      free(e);
    }
  g_id_count = 0;
}

static void id_cache_put(const char *pem, size_t n, uint64_t h, const char *uri, const uint8_t fp[32]) {
  id_entry *e = malloc(sizeof *e + n);
  if (!e) return;
  memcpy(e->fp, fp, 32);
  e->hash = h;
  e->pem_len = n;
  memcpy(e->pem, pem, n);
  snprintf(e->uri, sizeof e->uri, "%s", uri);
  pthread_mutex_lock(&g_id_mu);
  if (g_id_count >= ID_CACHE_MAX) id_cache_clear_locked();
  e->next = g_id_buckets[h % ID_CACHE_BUCKETS];
  g_id_buckets[h % ID_CACHE_BUCKETS] = e;
  g_id_count++;
  pthread_mutex_unlock(&g_id_mu);
}

static int peer_spiffe_uri(grpc_call *call, char *uri, size_t urilen, uint8_t fp[32], char *why, size_t whylen) {
  int rc = -1;
  X509 *cert = NULL;
  grpc_auth_context *ctx = grpc_call_auth_context(call);
  if (!ctx) {
    snprintf(why, whylen, "no authenticated peer");
    return -1;
  }
  grpc_auth_property_iterator it = grpc_auth_context_find_properties_by_name(ctx, GRPC_X509_PEM_CERT_PROPERTY_NAME);
  const grpc_auth_property *p = grpc_auth_property_iterator_next(&it);
  if (!p || !p->value || p->value_length == 0 || p->value_length > PEER_CERT_PEM_MAX) {
    snprintf(why, whylen, "no client certificate in the TLS session");
    goto out;
  }
  uint64_t h = pem_hash(p->value, p->value_length);
  if (id_cache_get(p->value, p->value_length, h, uri, urilen, fp)) {
    rc = 0;
    goto out;
  }
  BIO *in = BIO_new_mem_buf(p->value, (int)p->value_length);
  if (in) cert = PEM_read_bio_X509(in, NULL, NULL, NULL);
  BIO_free(in);
  if (!cert) {
    ERR_clear_error();
    snprintf(why, whylen, "cannot parse the client certificate");
    goto out;
  }
  if (fc_pki_cert_spiffe_uri(cert, uri, urilen) != FEDC_OK) {
    snprintf(why, whylen,
             "client certificate carries no single spiffe://<federation>/<role>/<name> URI SAN "
             "(exactly one spiffe URI is required; DNS and e-mail SANs never name an identity)");
    goto out;
  }
  unsigned int fplen = 0;
  if (X509_digest(cert, EVP_sha256(), fp, &fplen) != 1 || fplen != 32) {
    ERR_clear_error();
    snprintf(why, whylen, "cannot fingerprint the client certificate");
    goto out;
  }
  id_cache_put(p->value, p->value_length, h, uri, fp);
  rc = 0;
out:
  X509_free(cert);
  grpc_auth_context_release(ctx);
  return rc;
}

/* Who is calling: from the verified certificate's SPIFFE ID (or, only on an
 * insecure loopback test server, from metadata). 0 ok, else a refusal text. */
static int authenticate(fc_scall *c, const grpc_metadata_array *md, char *why, size_t whylen) {
  char uri[FC_PKI_URI_MAX] = "";
  if (c->srv->opts.insecure_for_testing) {
    char id[160];
    if (md_get(md, FC_INSECURE_IDENTITY_MD_KEY, id, sizeof id) != 1) {
      snprintf(why, whylen, "insecure test server: missing or overlong %s metadata", FC_INSECURE_IDENTITY_MD_KEY);
      return -1;
    }
    snprintf(uri, sizeof uri, "spiffe://%s/%s", c->srv->federation, id);
  } else if (peer_spiffe_uri(c->call, uri, sizeof uri, c->peer.cert_sha256, why, whylen) != 0) {
    return -1;
  }
  char role[32];
  if (fc_pki_identity_from_spiffe(uri, c->peer.federation, sizeof c->peer.federation, role, sizeof role,
                                  c->peer.name, sizeof c->peer.name) != FEDC_OK) {
    char shown[FC_PKI_URI_MAX];
    printable(uri, shown, sizeof shown);
    snprintf(why, whylen, "malformed SPIFFE ID in client certificate: %.200s", shown);
    return -1;
  }
  c->peer.role = fc_role_parse(role);
  if (c->srv->federation[0] && strcmp(c->peer.federation, c->srv->federation) != 0) {
    snprintf(why, whylen, "certificate is for federation '%s', this coordinator serves '%s'", c->peer.federation,
             c->srv->federation);
    return -1;
  }
  return 0;
}

/* ---- serving a call ----------------------------------------------------------------- */

/* The first message is in: run the handler (inline, or on a pool thread). */
static void dispatch_first(fc_scall *c);
static void pool_push(struct pool *pl, fc_scall *c);

/* After an async handler step: start the next batch the stream needs, or
 * check that the handler finished. */
static void continue_async(fc_scall *c) {
  if (c->finished) { /* status queued (its completion releases), or dead */
    settle(c);
    return;
  }
  if (c->m->kind == FC_RPC_CLIENT_STREAM && c->hooks_set && !c->stream_done) {
    if (start_batch(c, OP_RECV, recv_ops(c)) != 0) release(c);
    return;
  }
  if (c->m->kind == FC_RPC_SERVER_STREAM && c->hooks_set && c->next) {
    if (c->op == OP_NONE) { /* next() neither sent nor finished */
      FC_ERROR(MOD, "%s: stream step neither sent nor finished", c->method);
      send_status(c, GRPC_STATUS_INTERNAL, "handler stalled", NULL);
    }
    settle(c);
    return;
  }
  FC_ERROR(MOD, "%s: handler returned without a status", c->method);
  send_status(c, GRPC_STATUS_INTERNAL, "handler returned without a status", NULL);
  settle(c);
}

static void dispatch_first(fc_scall *c) {
  if (c->m->async) {
    c->m->handler(c, c->m->ctx);
    if (!c->finished && c->m->kind == FC_RPC_SERVER_STREAM && c->hooks_set && c->next) c->next(c, c->hstate);
    continue_async(c);
    return;
  }
  c->blocking = 1;
  pool_push(c->m->role == FC_ROLE_ADMIN ? &c->srv->admin : &c->srv->general, c);
}

/* A pool thread serves a blocking call to its end and releases it. */
static void serve_blocking(fc_scall *c) {
  c->m->handler(c, c->m->ctx);
  if (!c->finished) {
    FC_ERROR(MOD, "%s: handler returned without a status", c->method);
    send_status(c, GRPC_STATUS_INTERNAL, "handler returned without a status", NULL);
  }
  release(c);
}

/* Refuse before any handler: a status, then the call is released. */
/* A refusal is the end of its step. Its status gets REFUSAL_STATUS_MS, not
 * stream_idle_ms: a caller that stops reading must not keep refused calls
 * (which its call cap does not count) open for long. */
static void refuse(fc_scall *c, grpc_status_code code, const char *why) {
  c->short_status = 1;
  send_status(c, code, why, NULL);
  settle(c);
}

/* A new call from request_call: every check that needs no message, then ask
 * for the first message. */
static void start_call(struct poller *p, new_call *n) {
  fc_scall *c = calloc(1, sizeof *c);
  if (!c) {
    grpc_call_cancel_with_status(n->call, GRPC_STATUS_RESOURCE_EXHAUSTED, "out of memory", NULL);
    grpc_call_unref(n->call);
    return;
  }
  c->tag_type = TAG_CALL;
  c->srv = p->srv;
  c->p = p;
  c->call = n->call;
  pthread_mutex_init(&c->mu, NULL);
  pthread_cond_init(&c->cv, NULL);
  pthread_mutex_lock(&p->mu);
  c->next_in_list = p->calls;
  if (p->calls) p->calls->prev_in_list = c;
  p->calls = c;
  p->ncalls++;
  pthread_mutex_unlock(&p->mu);

  size_t ml = GRPC_SLICE_LENGTH(n->det.method);
  if (ml >= sizeof c->method) ml = sizeof c->method - 1;
  memcpy(c->method, GRPC_SLICE_START_PTR(n->det.method), ml);
  char *peer = grpc_call_get_peer(c->call);
  if (peer) {
    snprintf(c->peer.addr, sizeof c->peer.addr, "%s", peer);
    gpr_free(peer);
  }
  snprintf(c->peer.name, sizeof c->peer.name, "?");
  const grpc_metadata_array *md = &n->md;

  char why[400];
  char ver[32];
  c->m = find_method(c->srv, c->method);
  if (!c->m) {
    snprintf(why, sizeof why, "unknown method %s", c->method);
    refuse(c, GRPC_STATUS_UNIMPLEMENTED, why);
    return;
  }
  int have_ver = md_get(md, FC_PROTOCOL_MD_KEY, ver, sizeof ver);
  unsigned major = 0, minor = 0;
  if (have_ver == 0) {
    snprintf(why, sizeof why, "missing %s metadata: this coordinator speaks fedc protocol %d.%d",
             FC_PROTOCOL_MD_KEY, FC_PROTOCOL_MAJOR, FC_PROTOCOL_MINOR);
    refuse(c, GRPC_STATUS_FAILED_PRECONDITION, why);
    return;
  }
  if (have_ver < 0 || parse_protocol_version(ver, &major, &minor) != 0) {
    char shown[sizeof ver + 2] = "(too long)";
    if (have_ver > 0) {
      shown[0] = '"';
      printable(ver, shown + 1, sizeof ver);
      strcat(shown, "\"");
    }
    snprintf(why, sizeof why,
             "malformed %s metadata %s: expected <major> or <major>.<minor> in digits; "
             "this coordinator speaks fedc protocol %d.%d",
             FC_PROTOCOL_MD_KEY, shown, FC_PROTOCOL_MAJOR, FC_PROTOCOL_MINOR);
    FC_WARN(MOD, "%s from %s: %s", c->method, c->peer.addr, why);
    refuse(c, GRPC_STATUS_FAILED_PRECONDITION, why);
    return;
  }
  if (major != FC_PROTOCOL_MAJOR) {
    snprintf(why, sizeof why, "incompatible %s version %s: this coordinator speaks fedc protocol %d.%d",
             FC_PROTOCOL_MD_KEY, ver, FC_PROTOCOL_MAJOR, FC_PROTOCOL_MINOR);
    FC_WARN(MOD, "%s from %s: %s", c->method, c->peer.addr, why);
    refuse(c, GRPC_STATUS_FAILED_PRECONDITION, why);
    return;
  }
  if (authenticate(c, md, why, sizeof why) != 0) {
    FC_WARN(MOD, "%s from %s refused: %s", c->method, c->peer.addr, why);
    refuse(c, GRPC_STATUS_UNAUTHENTICATED, why);
    return;
  }
  c->peer.proto_minor = minor;
  if (c->peer.role != c->m->role) {
    snprintf(why, sizeof why, "%s is for role '%s'; caller '%s' has role '%s'", c->method, fc_role_name(c->m->role),
             c->peer.name, fc_role_name(c->peer.role));
    FC_WARN(MOD, "refused: %s", why);
    refuse(c, GRPC_STATUS_PERMISSION_DENIED, why);
    return;
  }
  snprintf(c->peer_key, sizeof c->peer_key, "%s/%s", fc_role_name(c->peer.role), c->peer.name);
  if (!peer_enter(c->srv, c->peer_key)) {
    snprintf(why, sizeof why, "too many concurrent calls from %s (limit %d): retry later", c->peer_key,
             c->srv->opts.max_calls_per_peer);
    FC_WARN(MOD, "%s: %s", c->method, why);
    refuse(c, GRPC_STATUS_RESOURCE_EXHAUSTED, why);
    return;
  }
  c->peer_counted = 1;
  if (start_batch(c, OP_FIRST, recv_ops(c)) != 0) release(c);
}

/* A batch of call c completed on its event thread. */
static void on_call_event(fc_scall *c, int ok) {
  enum op_kind op = c->op;
  c->op = OP_NONE;
  atomic_store(&c->deadline_ms, 0);
  if (atomic_load(&c->timed_out) && op != OP_STATUS && op != OP_WAIT) ok = 0;
  switch (op) {
  case OP_WAIT: /* a blocking handler's batch: wake it; it owns the call */
    pthread_mutex_lock(&c->mu);
    c->wait_done = 1;
    c->wait_ok = ok;
    pthread_cond_signal(&c->cv);
    pthread_mutex_unlock(&c->mu);
    return;
  case OP_STATUS: release(c); return;
  case OP_FIRST:
  case OP_RECV: {
    if (!ok) {
      if (atomic_load(&c->timed_out))
        FC_WARN(MOD, "%s from %s/%s: no message within %d ms, call cancelled", c->method, fc_role_name(c->peer.role),
                c->peer.name, c->srv->opts.stream_idle_ms);
      c->finished = 1;
      release(c);
      return;
    }
    ProtobufCMessage *msg = NULL;
    int r = take_message(c, &msg);
    if (r < 0) { /* refused: the status is queued */
      settle(c);
      return;
    }
    if (op == OP_FIRST) {
      if (r == 0) {
        refuse(c, GRPC_STATUS_INVALID_ARGUMENT, "stream closed before the first message");
        return;
      }
      c->req = msg;
      dispatch_first(c); /* a blocking call now belongs to its pool thread */
      return;
    }
    if (r == 0) {
      c->on_end(c, c->hstate);
      if (!c->finished) {
        FC_ERROR(MOD, "%s: end of stream left without a status", c->method);
        send_status(c, GRPC_STATUS_INTERNAL, "handler returned without a status", NULL);
      }
      settle(c);
      return;
    }
    c->on_msg(c, c->hstate, msg);
    protobuf_c_message_free_unpacked(msg, NULL);
    continue_async(c);
    return;
  }
  case OP_SEND:
    if (!ok) {
      if (atomic_load(&c->timed_out))
        FC_WARN(MOD, "%s to %s/%s: peer read nothing for %d ms, call cancelled", c->method,
                fc_role_name(c->peer.role), c->peer.name, c->srv->opts.stream_idle_ms);
      c->finished = 1;
      release(c);
      return;
    }
    c->next(c, c->hstate);
    continue_async(c);
    return;
  case OP_NONE: return;
  }
}

/* ---- event threads -------------------------------------------------------------- */

static void post_request(struct poller *p) {
  new_call *n = calloc(1, sizeof *n);
  if (!n) return;
  n->tag_type = TAG_NEW;
  n->p = p;
  grpc_call_details_init(&n->det);
  grpc_metadata_array_init(&n->md);
  if (grpc_server_request_call(p->srv->server, &n->call, &n->det, &n->md, p->cq, p->cq, n) != GRPC_CALL_OK) {
    grpc_call_details_destroy(&n->det);
    grpc_metadata_array_destroy(&n->md);
    free(n);
    return;
  }
  p->requests++;
}

/* Cancel the calls whose batch waited longer than stream_idle_ms. The batch
 * then completes (failed) and the call is released by its event. */
static void sweep(struct poller *p) {
  uint64_t now = mono_ms();
  if (now - p->last_sweep < SWEEP_MS) return;
  p->last_sweep = now;
  pthread_mutex_lock(&p->mu);
  for (fc_scall *c = p->calls; c; c = c->next_in_list) {
    uint64_t d = atomic_load(&c->deadline_ms);
    if (d && now > d && !atomic_load(&c->timed_out)) {
      atomic_store(&c->timed_out, 1);
      grpc_call_cancel_with_status(c->call, GRPC_STATUS_DEADLINE_EXCEEDED, "peer idle too long", NULL);
    }
  }
  pthread_mutex_unlock(&p->mu);
}

static void *poller_main(void *arg) {
  struct poller *p = arg;
  fc_server *s = p->srv;
  for (int i = 0; i < REQUESTS_PER_QUEUE; i++) post_request(p);
  for (;;) {
    grpc_event ev = grpc_completion_queue_next(p->cq, fc_deadline_ms(SWEEP_MS), NULL);
    if (ev.type == GRPC_QUEUE_SHUTDOWN) break;
    if (ev.type == GRPC_OP_COMPLETE) {
      if (*(int *)ev.tag == TAG_NEW) {
        new_call *n = ev.tag;
        p->requests--;
        if (ev.success && !atomic_load(&s->stopping)) post_request(p);
        if (ev.success) start_call(p, n);
        else if (n->call)
          grpc_call_unref(n->call);
        grpc_call_details_destroy(&n->det);
        grpc_metadata_array_destroy(&n->md);
        free(n);
      } else {
        on_call_event(ev.tag, ev.success);
      }
    }
    sweep(p);
    if (atomic_load(&s->stopping)) {
      pthread_mutex_lock(&p->mu);
      int idle = p->ncalls == 0;
      pthread_mutex_unlock(&p->mu);
      if (idle && p->requests == 0) break;
    }
  }
  return NULL;
}

/* ---- pools for blocking handlers ---------------------------------------------------- */

static void pool_push(struct pool *pl, fc_scall *c) {
  pthread_mutex_lock(&pl->mu);
  c->next_in_queue = NULL;
  if (pl->tail) pl->tail->next_in_queue = c;
  else
    pl->head = c;
  pl->tail = c;
  pthread_cond_signal(&pl->cv);
  pthread_mutex_unlock(&pl->mu);
}

static void *pool_main(void *arg) {
  struct pool *pl = arg;
  pthread_mutex_lock(&pl->mu);
  for (;;) {
    while (!pl->head && !pl->stop) pthread_cond_wait(&pl->cv, &pl->mu);
    if (!pl->head) break; /* stopping and nothing queued */
    fc_scall *c = pl->head;
    pl->head = c->next_in_queue;
    if (!pl->head) pl->tail = NULL;
    pthread_mutex_unlock(&pl->mu);
    serve_blocking(c);
    pthread_mutex_lock(&pl->mu);
  }
  pthread_mutex_unlock(&pl->mu);
  return NULL;
}

static int pool_start(struct pool *pl, fc_server *s, int n) {
  pl->srv = s;
  pthread_mutex_init(&pl->mu, NULL);
  pthread_cond_init(&pl->cv, NULL);
  pl->threads = calloc((size_t)n, sizeof *pl->threads);
  pl->started = calloc((size_t)n, sizeof *pl->started);
  if (!pl->threads || !pl->started) return -1;
  pl->nthreads = n;
  for (int i = 0; i < n; i++) {
    if (pthread_create(&pl->threads[i], NULL, pool_main, pl) != 0) return -1;
    pl->started[i] = 1;
  }
  return 0;
}

/* Let the pool finish what is queued, then join it. */
static void pool_stop(struct pool *pl) {
  if (!pl->threads) return;
  pthread_mutex_lock(&pl->mu);
  pl->stop = 1;
  pthread_cond_broadcast(&pl->cv);
  pthread_mutex_unlock(&pl->mu);
  for (int i = 0; i < pl->nthreads; i++)
    if (pl->started[i]) pthread_join(pl->threads[i], NULL);
  free(pl->threads);
  free(pl->started);
  pl->threads = NULL;
  pthread_mutex_destroy(&pl->mu);
  pthread_cond_destroy(&pl->cv);
}

/* ---- lifecycle ------------------------------------------------------------------- */

int fc_server_bind(const fc_server_opts *o, fc_server **out, char *err, size_t errlen) {
  int rc = FEDC_ERR_INVALID;
  fc_tls_pem pem;
  memset(&pem, 0, sizeof pem);
  grpc_server_credentials *creds = NULL;
  fc_server *s = calloc(1, sizeof *s);
  if (!s) return FEDC_ERR_NOMEM;
  s->opts = *o;
  pthread_mutex_init(&s->peers_mu, NULL);
  if (s->opts.threads <= 0) s->opts.threads = 2;
  if (s->opts.blocking_threads <= 0) s->opts.blocking_threads = 4;
  if (s->opts.stream_idle_ms <= 0) s->opts.stream_idle_ms = 30000;
  if (s->opts.memory_quota_mib <= 0) s->opts.memory_quota_mib = 256;
  if (s->opts.max_calls_per_peer <= 0) s->opts.max_calls_per_peer = 4;
  snprintf(s->federation, sizeof s->federation, "%s", o->federation ? o->federation : "");
  for (size_t i = 0; i < o->nmethods; i++)
    if (o->methods[i].max_recv > s->max_recv_any) s->max_recv_any = o->methods[i].max_recv;

  if (o->insecure_for_testing) {
    if (!fc_addr_is_loopback(o->addr)) {
      snprintf(err, errlen, "--insecure-for-testing is refused on non-loopback address %s", o->addr);
      goto fail;
    }
    if (!s->federation[0]) snprintf(s->federation, sizeof s->federation, "insecure-test");
    FC_WARN(MOD, "INSECURE test mode: no TLS, identities taken from metadata (loopback only)");
    creds = grpc_insecure_server_credentials_create();
  } else {
    if (!s->federation[0]) {
      /* An empty name would switch the federation check off. */
      snprintf(err, errlen, "a server needs the federation name its callers' certificates must carry");
      goto fail;
    }
    if (!o->tls.ca || !o->tls.cert || !o->tls.key) {
      snprintf(err, errlen, "mutual TLS needs --ca, --cert and --key");
      goto fail;
    }
    if ((rc = fc_tls_pem_load(o->tls.ca, o->tls.cert, o->tls.key, &pem, err, errlen)) != FEDC_OK) goto fail;
    grpc_ssl_pem_key_cert_pair pair = {pem.key, pem.cert};
    creds = grpc_ssl_server_credentials_create_ex(pem.ca, &pair, 1,
                                                  GRPC_SSL_REQUEST_AND_REQUIRE_CLIENT_CERTIFICATE_AND_VERIFY, NULL);
  }
  rc = FEDC_ERR_TLS;
  if (!creds) {
    snprintf(err, errlen, "cannot create server credentials");
    goto fail;
  }

  s->quota = grpc_resource_quota_create("fedc-server");
  grpc_resource_quota_resize(s->quota, (size_t)s->opts.memory_quota_mib << 20);
  grpc_arg quota_arg;
  quota_arg.type = GRPC_ARG_POINTER;
  quota_arg.key = (char *)GRPC_ARG_RESOURCE_QUOTA;
  quota_arg.value.pointer.p = s->quota;
  quota_arg.value.pointer.vtable = grpc_resource_quota_arg_vtable();
  grpc_arg args[] = {
      fc_int_arg(GRPC_ARG_MAX_RECEIVE_MESSAGE_LENGTH, (int)(s->max_recv_any + 1024)),
      /* 0: no keepalive timer at all (gRPC's default, 2 h, still keeps one per
       * connection); the coordinator relies on kernel TCP keepalive. */
      fc_int_arg(GRPC_ARG_KEEPALIVE_TIME_MS, s->opts.keepalive_ms > 0 ? s->opts.keepalive_ms : INT_MAX),
      fc_int_arg(GRPC_ARG_KEEPALIVE_TIMEOUT_MS, 10000),
      fc_int_arg(GRPC_ARG_KEEPALIVE_PERMIT_WITHOUT_CALLS, 1),
      fc_int_arg(GRPC_ARG_MAX_CONNECTION_IDLE_MS, s->opts.max_idle_ms > 0 ? s->opts.max_idle_ms : INT_MAX),
      /* A connection that has not finished its TLS handshake in 10 s is
       * closed (the default, 120 s, let idle TCP connects hold slots). */
      fc_int_arg(GRPC_ARG_SERVER_HANDSHAKE_TIMEOUT_MS, 10000),
      /* Our clients ping every 120 s by default; accept pings down to 5 s
       * apart so a client configured shorter is not sent GOAWAY too_many_pings. */
      fc_int_arg(GRPC_ARG_HTTP2_MIN_RECV_PING_INTERVAL_WITHOUT_DATA_MS, 5000),
      fc_int_arg(GRPC_ARG_HTTP2_MAX_PING_STRIKES, 5),
      /* A second server on our port would silently take half the connections. */
      fc_int_arg(GRPC_ARG_ALLOW_REUSEPORT, 0),
      fc_int_arg(GRPC_ARG_MAX_CONCURRENT_STREAMS, 16),
      /* Bound what gRPC buffers for calls no worker has taken yet: without
       * this, BDP probing grows each connection's window and a burst of N
       * uploads is held in memory N x window at once. */
      fc_int_arg(GRPC_ARG_HTTP2_BDP_PROBE, 0),
      fc_int_arg(GRPC_ARG_HTTP2_STREAM_LOOKAHEAD_BYTES, 64 * 1024),
      quota_arg,
  };
  grpc_channel_args cargs = {sizeof args / sizeof args[0], args};
  s->server = grpc_server_create(&cargs, NULL);
  s->npollers = s->opts.threads;
  s->pollers = calloc((size_t)s->npollers, sizeof *s->pollers);
  rc = FEDC_ERR_NOMEM;
  if (!s->server || !s->pollers) goto fail_server;
  for (int i = 0; i < s->npollers; i++) {
    struct poller *p = &s->pollers[i];
    p->srv = s;
    pthread_mutex_init(&p->mu, NULL);
    p->cq = grpc_completion_queue_create_for_next(NULL);
    grpc_server_register_completion_queue(s->server, p->cq, NULL);
  }
  s->shutdown_cq = grpc_completion_queue_create_for_next(NULL);
  /* gRPC's own account of a failed bind is a multi-line error tree: kept at
   * debug, its OS reason goes into our one line. */
  char why[128] = "";
  fc_grpc_log_capture(why, sizeof why);
  s->port = grpc_server_add_http2_port(s->server, o->addr, creds);
  fc_grpc_log_capture(NULL, 0);
  grpc_server_credentials_release(creds);
  creds = NULL;
  if (s->port <= 0) {
    snprintf(err, errlen, "cannot listen on %s: %s", o->addr, why[0] ? why : "address in use or invalid");
    rc = FEDC_ERR_IO;
    goto fail_server;
  }
  fc_tls_pem_free(&pem);
  *out = s;
  return FEDC_OK;

fail_server:
  fc_tls_pem_free(&pem);
  if (creds) grpc_server_credentials_release(creds);
  fc_server_destroy(s);
  return rc;
fail:
  if (creds) grpc_server_credentials_release(creds);
  fc_tls_pem_free(&pem);
  pthread_mutex_destroy(&s->peers_mu);
  free(s);
  return rc;
}

int fc_server_run(fc_server *s, char *err, size_t errlen) {
  grpc_server_start(s->server);
  if (pool_start(&s->general, s, s->opts.blocking_threads) != 0 || pool_start(&s->admin, s, 2) != 0) {
    snprintf(err, errlen, "cannot start handler threads");
    return FEDC_ERR_NOMEM;
  }
  for (int i = 0; i < s->npollers; i++) {
    if (pthread_create(&s->pollers[i].thread, NULL, poller_main, &s->pollers[i]) != 0) {
      snprintf(err, errlen, "cannot start event threads");
      return FEDC_ERR_NOMEM;
    }
    s->pollers[i].started = 1;
  }
  return FEDC_OK;
}

int fc_server_start(const fc_server_opts *o, fc_server **out, char *err, size_t errlen) {
  fc_server *s = NULL;
  int rc = fc_server_bind(o, &s, err, errlen);
  if (rc == FEDC_OK && (rc = fc_server_run(s, err, errlen)) != FEDC_OK) fc_server_destroy(s);
  if (rc == FEDC_OK) *out = s;
  return rc;
}

int fc_server_port(const fc_server *s) { return s->port; }

void fc_server_shutdown(fc_server *s, int grace_ms) {
  if (!s || s->shut_down || !s->server) return;
  s->shut_down = 1;
  atomic_store(&s->stopping, 1);
  int tag;
  grpc_server_shutdown_and_notify(s->server, s->shutdown_cq, &tag);
  grpc_event ev = grpc_completion_queue_next(s->shutdown_cq, fc_deadline_ms(grace_ms > 0 ? grace_ms : 0), NULL);
  if (ev.type == GRPC_QUEUE_TIMEOUT) {
    FC_INFO(MOD, "grace period over: cancelling in-flight calls");
    grpc_server_cancel_all_calls(s->server);
    grpc_completion_queue_next(s->shutdown_cq, gpr_inf_future(GPR_CLOCK_MONOTONIC), NULL);
  }
}

void fc_server_destroy(fc_server *s) {
  if (!s) return;
  if (s->server && s->shutdown_cq) fc_server_shutdown(s, 0);
  /* Event threads leave once every call is released; pool threads finish
   * the blocking calls they hold (cancelled by now) meanwhile. */
  for (int i = 0; s->pollers && i < s->npollers; i++)
    if (s->pollers[i].started) pthread_join(s->pollers[i].thread, NULL);
  pool_stop(&s->general);
  pool_stop(&s->admin);
  if (s->server) grpc_server_destroy(s->server);
  for (int i = 0; s->pollers && i < s->npollers; i++) {
    struct poller *p = &s->pollers[i];
    if (!p->cq) continue;
    grpc_completion_queue_shutdown(p->cq);
    for (;;) {
      grpc_event ev = grpc_completion_queue_next(p->cq, gpr_inf_future(GPR_CLOCK_MONOTONIC), NULL);
      if (ev.type == GRPC_QUEUE_SHUTDOWN) break;
      /* Event threads that never started leave their request posts here. */
      if (ev.type == GRPC_OP_COMPLETE && *(int *)ev.tag == TAG_NEW) {
        new_call *n = ev.tag;
        if (n->call) grpc_call_unref(n->call);
        grpc_call_details_destroy(&n->det);
        grpc_metadata_array_destroy(&n->md);
        free(n);
      }
    }
    grpc_completion_queue_destroy(p->cq);
    pthread_mutex_destroy(&p->mu);
  }
  if (s->shutdown_cq) {
    grpc_completion_queue_shutdown(s->shutdown_cq);
    while (grpc_completion_queue_next(s->shutdown_cq, gpr_inf_future(GPR_CLOCK_MONOTONIC), NULL).type !=
           GRPC_QUEUE_SHUTDOWN) {
    }
    grpc_completion_queue_destroy(s->shutdown_cq);
  }
  if (s->quota) grpc_resource_quota_unref(s->quota);
  for (int b = 0; b < PEER_BUCKETS; b++)
    while (s->peers[b]) {
      peer_count *e = s->peers[b];
      s->peers[b] = e->next;
      free(e);
    }
  pthread_mutex_destroy(&s->peers_mu);
  free(s->pollers);
  free(s);
}
