/*
 * server_call.c - the server's call records: one batch in flight per call,
 * the calls-per-identity count, and the handler API (fc_scall_*).
 *
 * Owns: fc_scall's batch fields and its release (the one place a call is
 * freed), the peer_count table of fc_server (peers_mu), the status batch.
 * May call: transport_int.h helpers (pack/unpack) and gRPC only; nothing else
 * of the server (the bottom layer: server_event.c, server_pool.c and
 * server.c call down into it).
 * Threads: any. release() takes the poller's list lock; a blocking
 * handler's wait_batch sleeps on the call's own mu/cv until the event thread
 * (server_event.c, OP_WAIT) signals its batch done.
 */
#include <grpc/byte_buffer_reader.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common/log.h"
#include "fedc/error.h"
#include "transport/server_int.h"
#include "transport/transport.h"
#include "transport/transport_int.h"

#define MOD "transport"

uint64_t srv_mono_ms(void) {
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
int srv_peer_enter(fc_server *s, const char *key) {
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
void srv_release(fc_scall *c) {
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
int srv_start_batch(fc_scall *c, enum op_kind op, size_t n) {
  c->op = op;
  uint64_t wait = op == OP_STATUS && c->short_status ? REFUSAL_STATUS_MS : (uint64_t)c->srv->opts.stream_idle_ms;
  atomic_store(&c->deadline_ms, srv_mono_ms() + wait);
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
  if (srv_start_batch(c, OP_WAIT, n) != 0) return 0;
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
void srv_send_status(fc_scall *c, grpc_status_code code, const char *detail, grpc_byte_buffer *msg) {
  /* The caller's slot is free once its answer is decided: a client that
   * starts its next call the moment this status arrives must not find this
   * one still counted (seen under load as "too many concurrent calls" for
   * strictly sequential calls, while the status batch had yet to complete). */
  if (c->peer_counted) {
    peer_leave(c->srv, c->peer_key);
    c->peer_counted = 0;
  }
  if (c->parked) { /* any thread: see fc_scall_park */
    pthread_mutex_lock(&c->mu);
    size_t n = status_ops(c, code, detail, msg);
    int stepping = c->stepping;
    if (stepping) c->pending_n = n; /* the parking step's end starts it (srv_park_step_end) */
    pthread_mutex_unlock(&c->mu);
    /* No step holds c: a status that cannot start means the call is gone. */
    if (!stepping && srv_start_batch(c, OP_STATUS, n) != 0) srv_release(c);
    return;
  }
  size_t n = status_ops(c, code, detail, msg);
  if (c->blocking) {
    wait_batch(c, n);
    return;
  }
  /* Never released from in here: the caller (a handler, on the stack) still
   * holds c; the step's end releases a dead call (settle). */
  if (srv_start_batch(c, OP_STATUS, n) != 0) c->dead = 1;
}

/* End of an async step: a call that could not start its next batch is
 * released here, where no handler frame holds it any more. */
void srv_settle(fc_scall *c) {
  if (c->dead) srv_release(c);
}

/* The message in c->recv_bb (taken): 1 with *out, 0 end of stream, <0 error
 * with the status already queued. */
int srv_take_message(fc_scall *c, ProtobufCMessage **out) {
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
    srv_send_status(c, GRPC_STATUS_RESOURCE_EXHAUSTED, msg, NULL);
    return -FEDC_ERR_TOO_LARGE;
  }
  c->bytes_in += len;
  ProtobufCMessage *msg = NULL;
  int rc = fc_unpack_message(bb, c->m->request, c->m->max_recv, c->m->unpack_ratio, &msg);
  grpc_byte_buffer_destroy(bb);
  if (rc != FEDC_OK) {
    char d[160];
    snprintf(d, sizeof d,
             rc == FEDC_ERR_NOMEM       ? "out of memory unpacking %s"
             : rc == FEDC_ERR_TOO_LARGE ? "%s message would unpack to more than 24 x its size (empty repeated entries)"
                                        : "malformed %s message",
             c->m->request->name);
    FC_WARN(MOD, "%s from %s: %s", c->method, c->peer.name, d);
    srv_send_status(c, rc == FEDC_ERR_NOMEM ? GRPC_STATUS_RESOURCE_EXHAUSTED : GRPC_STATUS_INVALID_ARGUMENT, d, NULL);
    return -FEDC_ERR_PROTOCOL;
  }
  *out = msg;
  return 1;
}

/* Fill a {[SEND_INITIAL_METADATA], RECV_MESSAGE} batch; returns the count. */
size_t srv_recv_ops(fc_scall *c) {
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
  int r = wait_batch(c, srv_recv_ops(c));
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
  return srv_take_message(c, msg);
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
      srv_send_status(c, GRPC_STATUS_RESOURCE_EXHAUSTED, "out of memory", NULL);
      return -FEDC_ERR_NOMEM;
    }
    c->bytes_out += grpc_byte_buffer_length(bb);
  }
  srv_send_status(c, code, detail, bb);
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

void fc_scall_park(fc_scall *c) {
  if (c->blocking || c->m->kind != FC_RPC_UNARY || c->finished || c->parked) return;
  pthread_mutex_lock(&c->mu);
  c->parked = 1;
  c->stepping = 1;
  pthread_mutex_unlock(&c->mu);
}

/* The event thread's step that parked c has ended: from now on a finish
 * starts its own batch; one that came during the step is started here. */
void srv_park_step_end(fc_scall *c) {
  pthread_mutex_lock(&c->mu);
  c->stepping = 0;
  size_t n = c->pending_n;
  c->pending_n = 0;
  pthread_mutex_unlock(&c->mu);
  if (n && srv_start_batch(c, OP_STATUS, n) != 0) srv_release(c);
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
    srv_send_status(c, GRPC_STATUS_RESOURCE_EXHAUSTED, "out of memory", NULL);
    return -FEDC_ERR_NOMEM;
  }
  if (srv_start_batch(c, OP_SEND, n) != 0) {
    c->finished = 1;
    c->dead = 1; /* released at the end of this step */
    return -FEDC_ERR_UNAVAILABLE;
  }
  return 0;
}
