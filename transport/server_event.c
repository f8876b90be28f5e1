/*
 * server_event.c - the event threads and the per-call state machine (see
 * server.c for the whole shape): each thread owns one completion queue,
 * keeps REQUESTS_PER_QUEUE request_call posts on it, checks each new call
 * (method, protocol version, identity, role, call cap), then drives its
 * batches (first message, stream steps, status) and sweeps idle calls.
 *
 * Owns: struct poller's list of calls (under poller.mu: a pool thread may
 * release a call meanwhile), new_call, the OP_* transitions.
 * May call: server_call.c (batches, status, release), server_auth.c (who
 * is calling), server_pool.c (srv_pool_push: blocking handlers), and the
 * handlers. Nothing blocks an event thread. server.c starts srv_poller_main.
 */
#include <grpc/support/alloc.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/log.h"
#include "fedc/error.h"
#include "transport/server_int.h"
#include "transport/transport.h"
#include "transport/transport_int.h"

#define MOD "transport"

/* ---- dispatch ------------------------------------------------------------------- */

static const fc_method *find_method(const fc_server *s, const char *path) {
  for (size_t i = 0; i < s->opts.nmethods; i++)
    if (strcmp(s->opts.methods[i].path, path) == 0) return &s->opts.methods[i];
  return NULL;
}

/* ---- serving a call ----------------------------------------------------------------- */

/* The first message is in: run the handler (inline, or on a pool thread). */
static void dispatch_first(fc_scall *c);

/* After an async handler step: start the next batch the stream needs, or
 * check that the handler finished. */
static void continue_async(fc_scall *c) {
  if (c->finished) { /* status queued (its completion releases), or dead */
    srv_settle(c);
    return;
  }
  if (c->m->kind == FC_RPC_CLIENT_STREAM && c->hooks_set && !c->stream_done) {
    if (srv_start_batch(c, OP_RECV, srv_recv_ops(c)) != 0) srv_release(c);
    return;
  }
  if (c->m->kind == FC_RPC_SERVER_STREAM && c->hooks_set && c->next) {
    if (c->op == OP_NONE) { /* next() neither sent nor finished */
      FC_ERROR(MOD, "%s: stream step neither sent nor finished", c->method);
      srv_send_status(c, GRPC_STATUS_INTERNAL, "handler stalled", NULL);
    }
    srv_settle(c);
    return;
  }
  FC_ERROR(MOD, "%s: handler returned without a status", c->method);
  srv_send_status(c, GRPC_STATUS_INTERNAL, "handler returned without a status", NULL);
  srv_settle(c);
}

static void dispatch_first(fc_scall *c) {
  if (c->m->async) {
    c->m->handler(c, c->m->ctx);
    if (c->parked) { /* another thread may be finishing it already: nothing else here reads c */
      srv_park_step_end(c);
      return;
    }
    if (!c->finished && c->m->kind == FC_RPC_SERVER_STREAM && c->hooks_set && c->next) c->next(c, c->hstate);
    continue_async(c);
    return;
  }
  c->blocking = 1;
  srv_pool_push(c->m->role == FC_ROLE_ADMIN ? &c->srv->admin : &c->srv->general, c);
}

/* Refuse before any handler: a status, then the call is released. */
/* A refusal is the end of its step. Its status gets REFUSAL_STATUS_MS, not
 * stream_idle_ms: a caller that stops reading must not keep refused calls
 * (which its call cap does not count) open for long. */
static void refuse(fc_scall *c, grpc_status_code code, const char *why) {
  c->short_status = 1;
  srv_send_status(c, code, why, NULL);
  srv_settle(c);
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
  int have_ver = srv_md_get(md, FC_PROTOCOL_MD_KEY, ver, sizeof ver);
  unsigned major = 0, minor = 0;
  if (have_ver == 0) {
    snprintf(why, sizeof why, "missing %s metadata: this coordinator speaks fedc protocol %d.%d",
             FC_PROTOCOL_MD_KEY, FC_PROTOCOL_MAJOR, FC_PROTOCOL_MINOR);
    refuse(c, GRPC_STATUS_FAILED_PRECONDITION, why);
    return;
  }
  if (have_ver < 0 || srv_parse_protocol_version(ver, &major, &minor) != 0) {
    char shown[sizeof ver + 2] = "(too long)";
    if (have_ver > 0) {
      shown[0] = '"';
      srv_printable(ver, shown + 1, sizeof ver);
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
  if (srv_authenticate(c, md, why, sizeof why) != 0) {
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
  if (!srv_peer_enter(c->srv, c->peer_key)) {
    snprintf(why, sizeof why, "too many concurrent calls from %s (limit %d): retry later", c->peer_key,
             c->srv->opts.max_calls_per_peer);
    FC_WARN(MOD, "%s: %s", c->method, why);
    refuse(c, GRPC_STATUS_RESOURCE_EXHAUSTED, why);
    return;
  }
  c->peer_counted = 1;
  if (srv_start_batch(c, OP_FIRST, srv_recv_ops(c)) != 0) srv_release(c);
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
  case OP_STATUS: srv_release(c); return;
  case OP_FIRST:
  case OP_RECV: {
    if (!ok) {
      if (atomic_load(&c->timed_out))
        FC_WARN(MOD, "%s from %s/%s: no message within %d ms, call cancelled", c->method, fc_role_name(c->peer.role),
                c->peer.name, c->srv->opts.stream_idle_ms);
      c->finished = 1;
      srv_release(c);
      return;
    }
    ProtobufCMessage *msg = NULL;
    int r = srv_take_message(c, &msg);
    if (r < 0) { /* refused: the status is queued */
      srv_settle(c);
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
        srv_send_status(c, GRPC_STATUS_INTERNAL, "handler returned without a status", NULL);
      }
      srv_settle(c);
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
      srv_release(c);
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
  uint64_t now = srv_mono_ms();
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

void *srv_poller_main(void *arg) {
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
