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
 *
 * Files by role (server_int.h holds the shared structs): this file owns the
 * lifecycle (options, bind, run, shutdown, destroy: the fc_server and its
 * queues) and may call server_event.c (srv_poller_main) and server_pool.c
 * (start/stop); server_event.c is the event threads and the call state
 * machine above; server_pool.c the blocking pools; server_auth.c the
 * version and identity checks; server_call.c the call records, batches and
 * the handler API. Calls go one way: lifecycle -> events -> pool -> calls,
 * events -> auth. No logic or locking changed in the split.
 */
#include <grpc/grpc_security.h>
#include <grpc/support/time.h>
#include <limits.h>
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

void fc_server_opts_init(fc_server_opts *o) {
  memset(o, 0, sizeof *o);
  o->addr = "127.0.0.1:7070";
  o->threads = 2;
  o->blocking_threads = 4;
  o->stream_idle_ms = 30000;
  o->keepalive_ms = 0; /* no HTTP/2 keepalive pings from the server (see fc_server_opts) */
  o->max_idle_ms = 0; /* no idle timer per connection (see fc_server_opts) */
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
  if (srv_pool_start(&s->general, s, s->opts.blocking_threads) != 0 || srv_pool_start(&s->admin, s, 2) != 0) {
    snprintf(err, errlen, "cannot start handler threads");
    return FEDC_ERR_NOMEM;
  }
  for (int i = 0; i < s->npollers; i++) {
    if (pthread_create(&s->pollers[i].thread, NULL, srv_poller_main, &s->pollers[i]) != 0) {
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
  srv_pool_stop(&s->general);
  srv_pool_stop(&s->admin);
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
