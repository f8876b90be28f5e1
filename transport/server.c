/*
 * server.c - mutual-TLS gRPC server over the C core with synchronous handlers.
 *
 * Shape: `threads` worker threads, each owning one completion queue registered
 * with the server. A worker posts grpc_server_request_call on its queue, waits
 * for a call, then serves that call alone to its end: authenticate (the SPIFFE
 * ID of the verified client certificate, read by crypto/pki.c's
 * fc_pki_cert_spiffe_uri, the same rule the CA tools use), check the protocol
 * version (strictly "<major>[.<minor>]") and the caller's role, receive the
 * first message under the method's size limit, run the handler, make sure a
 * status went out, release. Because a call's ops complete only on its worker's
 * queue, every batch is a simple "start, wait for this tag" with a deadline,
 * and an idle peer cannot hold a worker longer than stream_idle_ms per
 * message.
 *
 * Op sequences follow ../shared/notes/grpc-core-c.md (measured on gRPC 1.51):
 *   start:  {SEND_INITIAL_METADATA, RECV_MESSAGE}
 *   stream: {RECV_MESSAGE} until a NULL message     (client streaming)
 *           {SEND_MESSAGE} per message              (server streaming)
 *   end:    {[SEND_MESSAGE], SEND_STATUS_FROM_SERVER, RECV_CLOSE_ON_SERVER}
 * Refusals before the handler (unknown method, wrong role, wrong version)
 * send {SEND_INITIAL_METADATA, SEND_STATUS_FROM_SERVER, RECV_CLOSE_ON_SERVER}.
 *
 * Shutdown (notes): shutdown_and_notify -> wait up to the grace period ->
 * cancel_all_calls -> wait for the notification -> join workers (each
 * finishes its cancelled call first) -> destroy server -> shutdown + drain
 * every queue. The notification can come while a worker still runs its
 * call's last batch, so queues are shut down only after the joins.
 */
#include <grpc/byte_buffer_reader.h>
#include <grpc/grpc_security.h>
#include <grpc/support/alloc.h>
#include <grpc/support/time.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/log.h"
#include "crypto/pki.h"
#include "fedc/error.h"
#include "transport/transport.h"
#include "transport/transport_int.h"

#define MOD "transport"

/* Calls in progress per caller identity ("role/name"): one caller may hold
 * at most max_calls_per_peer workers, so a peer that opens streams and
 * stalls cannot take the workers everyone else needs. A table of `threads`
 * entries suffices: at most `threads` calls are in progress at once. */
typedef struct peer_slot {
  char key[100];
  int calls;
} peer_slot;

struct fc_server {
  grpc_server *server;
  grpc_completion_queue *shutdown_cq;
  fc_server_opts opts;
  char federation[64];
  int port;
  int nworkers;
  struct worker *workers;
  atomic_int stopping;
  int shut_down;
  size_t max_recv_any;
  grpc_resource_quota *quota;
  pthread_mutex_t peers_mu;
  peer_slot *peers;
  int npeers;
};

struct worker {
  fc_server *srv;
  grpc_completion_queue *cq;
  pthread_t thread;
  int started;
};

struct fc_scall {
  fc_server *srv;
  const fc_method *m;
  grpc_call *call;
  grpc_completion_queue *cq;
  fc_peer peer;
  ProtobufCMessage *req;
  char method[128];
  int sent_initial_md;
  int finished;
  int stream_done;
  int cancelled;
  uint64_t bytes_in, bytes_out;
};

void fc_server_opts_init(fc_server_opts *o) {
  memset(o, 0, sizeof *o);
  o->addr = "127.0.0.1:7070";
  o->threads = 16;
  o->stream_idle_ms = 30000;
  o->keepalive_ms = 30000;
  o->max_idle_ms = 600000;
}

/* ---- batches ------------------------------------------------------------------ */

/* Run one batch and wait for its completion on the call's queue. Returns 1 on
 * success, 0 if the op failed (peer gone, call cancelled), -FEDC_ERR_TIMEOUT if
 * nothing happened within timeout_ms (the call is then cancelled). */
static int run_batch(fc_scall *c, const grpc_op *ops, size_t n, int timeout_ms) {
  void *tag = (void *)ops;
  if (grpc_call_start_batch(c->call, ops, n, tag, NULL) != GRPC_CALL_OK) return 0;
  gpr_timespec deadline = timeout_ms > 0 ? fc_deadline_ms(timeout_ms) : gpr_inf_future(GPR_CLOCK_MONOTONIC);
  int timed_out = 0;
  for (;;) {
    grpc_event ev = grpc_completion_queue_next(c->cq, deadline, NULL);
    if (ev.type == GRPC_QUEUE_TIMEOUT) {
      /* Cancel, then wait (without limit) for the batch to complete: its
       * buffers must stay alive until it does. */
      grpc_call_cancel_with_status(c->call, GRPC_STATUS_DEADLINE_EXCEEDED, "peer idle too long", NULL);
      deadline = gpr_inf_future(GPR_CLOCK_MONOTONIC);
      timed_out = 1;
      continue;
    }
    if (ev.type == GRPC_QUEUE_SHUTDOWN) return 0;
    if (ev.tag == tag) {
      if (timed_out) {
        c->finished = 1;
        return -FEDC_ERR_TIMEOUT;
      }
      return ev.success ? 1 : 0;
    }
  }
}

static void send_status(fc_scall *c, grpc_status_code code, const char *detail, grpc_byte_buffer *msg) {
  grpc_op ops[4];
  size_t n = 0;
  int close_flag = 0;
  grpc_slice det = grpc_slice_from_copied_string(detail ? detail : "");
  memset(ops, 0, sizeof ops);
  if (!c->sent_initial_md) {
    ops[n].op = GRPC_OP_SEND_INITIAL_METADATA;
    n++;
    c->sent_initial_md = 1;
  }
  if (msg) {
    ops[n].op = GRPC_OP_SEND_MESSAGE;
    ops[n].data.send_message.send_message = msg;
    n++;
  }
  ops[n].op = GRPC_OP_SEND_STATUS_FROM_SERVER;
  ops[n].data.send_status_from_server.status = code;
  ops[n].data.send_status_from_server.status_details = &det;
  n++;
  ops[n].op = GRPC_OP_RECV_CLOSE_ON_SERVER;
  ops[n].data.recv_close_on_server.cancelled = &close_flag;
  n++;
  run_batch(c, ops, n, c->srv->opts.stream_idle_ms);
  grpc_slice_unref(det);
  c->finished = 1;
  c->cancelled = close_flag;
}

/* Receive one message. 1 = got it in *out, 0 = end of stream, <0 = error
 * (status already sent). */
static int recv_message(fc_scall *c, ProtobufCMessage **out) {
  grpc_op ops[2];
  size_t n = 0;
  grpc_byte_buffer *bb = NULL;
  memset(ops, 0, sizeof ops);
  if (!c->sent_initial_md) {
    ops[n].op = GRPC_OP_SEND_INITIAL_METADATA;
    n++;
    c->sent_initial_md = 1;
  }
  ops[n].op = GRPC_OP_RECV_MESSAGE;
  ops[n].data.recv_message.recv_message = &bb;
  n++;
  int r = run_batch(c, ops, n, c->srv->opts.stream_idle_ms);
  if (r <= 0) {
    if (bb) grpc_byte_buffer_destroy(bb);
    if (r == -FEDC_ERR_TIMEOUT) {
      FC_WARN(MOD, "%s from %s/%s: no message within %d ms, call cancelled", c->method,
              fc_role_name(c->peer.role), c->peer.name, c->srv->opts.stream_idle_ms);
      return -FEDC_ERR_TIMEOUT;
    }
    c->finished = 1; /* the call is dead: nothing more can be sent */
    return -FEDC_ERR_UNAVAILABLE;
  }
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
  grpc_byte_buffer_reader reader;
  if (!grpc_byte_buffer_reader_init(&reader, bb)) {
    grpc_byte_buffer_destroy(bb);
    send_status(c, GRPC_STATUS_INTERNAL, "cannot read message", NULL);
    return -FEDC_ERR_INTERNAL;
  }
  grpc_slice s = grpc_byte_buffer_reader_readall(&reader);
  grpc_byte_buffer_reader_destroy(&reader);
  grpc_byte_buffer_destroy(bb);
  c->bytes_in += GRPC_SLICE_LENGTH(s);
  ProtobufCMessage *msg = protobuf_c_message_unpack(c->m->request, NULL, GRPC_SLICE_LENGTH(s), GRPC_SLICE_START_PTR(s));
  grpc_slice_unref(s);
  if (!msg) {
    char d[160];
    snprintf(d, sizeof d, "malformed %s message", c->m->request->name);
    FC_WARN(MOD, "%s from %s: %s", c->method, c->peer.name, d);
    send_status(c, GRPC_STATUS_INVALID_ARGUMENT, d, NULL);
    return -FEDC_ERR_PROTOCOL;
  }
  *out = msg;
  return 1;
}

/* ---- handler API -------------------------------------------------------------- */

const fc_peer *fc_scall_peer(const fc_scall *c) { return &c->peer; }
const char *fc_scall_method(const fc_scall *c) { return c->method; }
const ProtobufCMessage *fc_scall_request(const fc_scall *c) { return c->req; }
uint64_t fc_scall_bytes_in(const fc_scall *c) { return c->bytes_in; }
uint64_t fc_scall_bytes_out(const fc_scall *c) { return c->bytes_out; }

int fc_scall_recv(fc_scall *c, ProtobufCMessage **msg) {
  if (c->finished) return -FEDC_ERR_PROTOCOL;
  if (c->stream_done) return 0;
  return recv_message(c, msg);
}

int fc_scall_send(fc_scall *c, const ProtobufCMessage *msg) {
  if (c->finished) return -FEDC_ERR_UNAVAILABLE;
  grpc_byte_buffer *bb = fc_pack_message(msg);
  if (!bb) return -FEDC_ERR_NOMEM;
  c->bytes_out += grpc_byte_buffer_length(bb);
  grpc_op ops[2];
  size_t n = 0;
  memset(ops, 0, sizeof ops);
  if (!c->sent_initial_md) {
    ops[n].op = GRPC_OP_SEND_INITIAL_METADATA;
    n++;
    c->sent_initial_md = 1;
  }
  ops[n].op = GRPC_OP_SEND_MESSAGE;
  ops[n].data.send_message.send_message = bb;
  n++;
  int r = run_batch(c, ops, n, c->srv->opts.stream_idle_ms);
  grpc_byte_buffer_destroy(bb);
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
  if (bb) grpc_byte_buffer_destroy(bb);
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
static int peer_spiffe_uri(grpc_call *call, char *uri, size_t urilen, char *why, size_t whylen) {
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
  } else if (peer_spiffe_uri(c->call, uri, sizeof uri, why, whylen) != 0) {
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

/* Receive the first message and run the handler; make sure a status goes out. */
static void serve_authenticated(fc_scall *c) {
  int r = recv_message(c, &c->req);
  if (r == 0) {
    send_status(c, GRPC_STATUS_INVALID_ARGUMENT, "stream closed before the first message", NULL);
    return;
  }
  if (r < 0) return;
  c->m->handler(c, c->m->ctx);
  if (!c->finished) {
    FC_ERROR(MOD, "%s: handler returned without a status", c->method);
    send_status(c, GRPC_STATUS_INTERNAL, "handler returned without a status", NULL);
  }
}

/* Count a call for peer `key`; 0 if the peer is at its limit. */
static int peer_enter(fc_server *s, const char *key) {
  int ok = 0;
  pthread_mutex_lock(&s->peers_mu);
  peer_slot *found = NULL, *free_slot = NULL;
  for (int i = 0; i < s->npeers && !found; i++) {
    peer_slot *e = &s->peers[i];
    if (e->calls > 0 && strcmp(e->key, key) == 0) found = e;
    else if (e->calls == 0 && !free_slot)
      free_slot = e;
  }
  if (!found && free_slot) {
    found = free_slot;
    snprintf(found->key, sizeof found->key, "%s", key);
  }
  if (found && found->calls < s->opts.max_calls_per_peer) {
    found->calls++;
    ok = 1;
  }
  pthread_mutex_unlock(&s->peers_mu);
  return ok;
}

static void peer_leave(fc_server *s, const char *key) {
  pthread_mutex_lock(&s->peers_mu);
  for (int i = 0; i < s->npeers; i++) {
    peer_slot *e = &s->peers[i];
    if (e->calls > 0 && strcmp(e->key, key) == 0) {
      e->calls--;
      break;
    }
  }
  pthread_mutex_unlock(&s->peers_mu);
}

static void serve_call(struct worker *w, grpc_call *call, grpc_call_details *det, grpc_metadata_array *md) {
  fc_scall c;
  memset(&c, 0, sizeof c);
  c.srv = w->srv;
  c.call = call;
  c.cq = w->cq;
  size_t ml = GRPC_SLICE_LENGTH(det->method);
  if (ml >= sizeof c.method) ml = sizeof c.method - 1;
  memcpy(c.method, GRPC_SLICE_START_PTR(det->method), ml);
  char *peer = grpc_call_get_peer(call);
  if (peer) {
    snprintf(c.peer.addr, sizeof c.peer.addr, "%s", peer);
    gpr_free(peer);
  }
  snprintf(c.peer.name, sizeof c.peer.name, "?");

  char why[400];
  char ver[32];
  c.m = find_method(w->srv, c.method);
  if (!c.m) {
    snprintf(why, sizeof why, "unknown method %s", c.method);
    send_status(&c, GRPC_STATUS_UNIMPLEMENTED, why, NULL);
    goto out;
  }
  int have_ver = md_get(md, FC_PROTOCOL_MD_KEY, ver, sizeof ver);
  unsigned major = 0, minor = 0;
  if (have_ver == 0) {
    snprintf(why, sizeof why, "missing %s metadata: this coordinator speaks fedc protocol %d.%d",
             FC_PROTOCOL_MD_KEY, FC_PROTOCOL_MAJOR, FC_PROTOCOL_MINOR);
    send_status(&c, GRPC_STATUS_FAILED_PRECONDITION, why, NULL);
    goto out;
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
    FC_WARN(MOD, "%s from %s: %s", c.method, c.peer.addr, why);
    send_status(&c, GRPC_STATUS_FAILED_PRECONDITION, why, NULL);
    goto out;
  }
  if (major != FC_PROTOCOL_MAJOR) {
    snprintf(why, sizeof why, "incompatible %s version %s: this coordinator speaks fedc protocol %d.%d",
             FC_PROTOCOL_MD_KEY, ver, FC_PROTOCOL_MAJOR, FC_PROTOCOL_MINOR);
    FC_WARN(MOD, "%s from %s: %s", c.method, c.peer.addr, why);
    send_status(&c, GRPC_STATUS_FAILED_PRECONDITION, why, NULL);
    goto out;
  }
  if (authenticate(&c, md, why, sizeof why) != 0) {
    FC_WARN(MOD, "%s from %s refused: %s", c.method, c.peer.addr, why);
    send_status(&c, GRPC_STATUS_UNAUTHENTICATED, why, NULL);
    goto out;
  }
  if (c.peer.role != c.m->role) {
    snprintf(why, sizeof why, "%s is for role '%s'; caller '%s' has role '%s'", c.method, fc_role_name(c.m->role),
             c.peer.name, fc_role_name(c.peer.role));
    FC_WARN(MOD, "refused: %s", why);
    send_status(&c, GRPC_STATUS_PERMISSION_DENIED, why, NULL);
    goto out;
  }
  char peer_key[100];
  snprintf(peer_key, sizeof peer_key, "%s/%s", fc_role_name(c.peer.role), c.peer.name);
  if (!peer_enter(w->srv, peer_key)) {
    snprintf(why, sizeof why, "too many concurrent calls from %s (limit %d): retry later", peer_key,
             w->srv->opts.max_calls_per_peer);
    FC_WARN(MOD, "%s: %s", c.method, why);
    send_status(&c, GRPC_STATUS_RESOURCE_EXHAUSTED, why, NULL);
    goto out;
  }
  serve_authenticated(&c);
  peer_leave(w->srv, peer_key);
out:
  if (c.req) protobuf_c_message_free_unpacked(c.req, NULL);
  grpc_call_unref(call);
}


static void *worker_main(void *arg) {
  struct worker *w = arg;
  fc_server *s = w->srv;
  while (!atomic_load(&s->stopping)) {
    grpc_call *call = NULL;
    grpc_call_details det;
    grpc_metadata_array md;
    grpc_call_details_init(&det);
    grpc_metadata_array_init(&md);
    int tag_req;
    if (grpc_server_request_call(s->server, &call, &det, &md, w->cq, w->cq, &tag_req) != GRPC_CALL_OK) {
      grpc_call_details_destroy(&det);
      grpc_metadata_array_destroy(&md);
      break;
    }
    grpc_event ev;
    do {
      ev = grpc_completion_queue_next(w->cq, gpr_inf_future(GPR_CLOCK_MONOTONIC), NULL);
    } while (ev.type == GRPC_OP_COMPLETE && ev.tag != &tag_req);
    int ok = ev.type == GRPC_OP_COMPLETE && ev.success;
    if (ok) serve_call(w, call, &det, &md);
    else if (call)
      grpc_call_unref(call);
    grpc_call_details_destroy(&det);
    grpc_metadata_array_destroy(&md);
    if (!ok) break;
  }
  /* Nothing of ours is pending on the queue now (every batch was waited
   * for); fc_server_destroy shuts it down and drains it after joining us.
   * Shutting it down while a worker still finishes a cancelled call would
   * make that call's last batch hit a dead queue (a gRPC assertion). */
  return NULL;
}

/* ---- lifecycle ------------------------------------------------------------------- */

int fc_server_start(const fc_server_opts *o, fc_server **out, char *err, size_t errlen) {
  int rc = FEDC_ERR_INVALID;
  fc_tls_pem pem;
  memset(&pem, 0, sizeof pem);
  grpc_server_credentials *creds = NULL;
  fc_server *s = calloc(1, sizeof *s);
  if (!s) return FEDC_ERR_NOMEM;
  s->opts = *o;
  pthread_mutex_init(&s->peers_mu, NULL);
  if (s->opts.threads <= 0) s->opts.threads = 16;
  if (s->opts.stream_idle_ms <= 0) s->opts.stream_idle_ms = 30000;
  if (s->opts.keepalive_ms <= 0) s->opts.keepalive_ms = 30000;
  if (s->opts.max_idle_ms <= 0) s->opts.max_idle_ms = 600000;
  if (s->opts.memory_quota_mib <= 0) s->opts.memory_quota_mib = 256;
  if (s->opts.max_calls_per_peer <= 0) s->opts.max_calls_per_peer = 4;
  s->npeers = s->opts.threads;
  s->peers = calloc((size_t)s->npeers, sizeof *s->peers);
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

  /* A memory quota for all of gRPC's buffers on this server: under pressure
   * gRPC shrinks windows and reads instead of growing without bound. */
  s->quota = grpc_resource_quota_create("fedc-server");
  grpc_resource_quota_resize(s->quota, (size_t)s->opts.memory_quota_mib << 20);
  grpc_arg quota_arg;
  quota_arg.type = GRPC_ARG_POINTER;
  quota_arg.key = (char *)GRPC_ARG_RESOURCE_QUOTA;
  quota_arg.value.pointer.p = s->quota;
  quota_arg.value.pointer.vtable = grpc_resource_quota_arg_vtable();
  grpc_arg args[] = {
      fc_int_arg(GRPC_ARG_MAX_RECEIVE_MESSAGE_LENGTH, (int)(s->max_recv_any + 1024)),
      fc_int_arg(GRPC_ARG_KEEPALIVE_TIME_MS, s->opts.keepalive_ms),
      fc_int_arg(GRPC_ARG_KEEPALIVE_TIMEOUT_MS, 10000),
      fc_int_arg(GRPC_ARG_KEEPALIVE_PERMIT_WITHOUT_CALLS, 1),
      fc_int_arg(GRPC_ARG_MAX_CONNECTION_IDLE_MS, s->opts.max_idle_ms),
      /* A connection that has not finished its TLS handshake in 10 s is
       * closed (the default, 120 s, let idle TCP connects hold slots). */
      fc_int_arg(GRPC_ARG_SERVER_HANDSHAKE_TIMEOUT_MS, 10000),
      /* Clients ping every 20 s by default; accept pings down to 5 s apart so
       * a well-behaved client is never sent GOAWAY too_many_pings. */
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
  s->nworkers = s->opts.threads;
  s->workers = calloc((size_t)s->nworkers, sizeof *s->workers);
  rc = FEDC_ERR_NOMEM;
  if (!s->server || !s->workers || !s->peers) goto fail;
  for (int i = 0; i < s->nworkers; i++) {
    s->workers[i].srv = s;
    s->workers[i].cq = grpc_completion_queue_create_for_next(NULL);
    grpc_server_register_completion_queue(s->server, s->workers[i].cq, NULL);
  }
  s->shutdown_cq = grpc_completion_queue_create_for_next(NULL);
  s->port = grpc_server_add_http2_port(s->server, o->addr, creds);
  grpc_server_credentials_release(creds);
  creds = NULL;
  if (s->port <= 0) {
    snprintf(err, errlen, "cannot listen on %s (address in use or invalid)", o->addr);
    rc = FEDC_ERR_IO;
    goto fail_started;
  }
  grpc_server_start(s->server);
  for (int i = 0; i < s->nworkers; i++) {
    if (pthread_create(&s->workers[i].thread, NULL, worker_main, &s->workers[i]) != 0) {
      snprintf(err, errlen, "cannot start worker thread");
      rc = FEDC_ERR_NOMEM;
      goto fail_started;
    }
    s->workers[i].started = 1;
  }
  fc_tls_pem_free(&pem);
  *out = s;
  return FEDC_OK;

fail_started:
  fc_server_destroy(s);
  s = NULL;
fail:
  if (creds) grpc_server_credentials_release(creds);
  fc_tls_pem_free(&pem);
  if (s) {
    if (s->server) {
      fc_server_destroy(s);
    } else {
      if (s->quota) grpc_resource_quota_unref(s->quota);
      pthread_mutex_destroy(&s->peers_mu);
      free(s->peers);
      free(s->workers);
      free(s);
    }
  }
  return rc;
}

int fc_server_port(const fc_server *s) { return s->port; }

void fc_server_shutdown(fc_server *s, int grace_ms) {
  if (!s || s->shut_down) return;
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
  if (s->workers && s->server) {
    int any_started = 0;
    for (int i = 0; i < s->nworkers; i++) any_started |= s->workers[i].started;
    if (any_started) fc_server_shutdown(s, 0);
    else {
      s->shut_down = 1;
      atomic_store(&s->stopping, 1);
      int tag;
      grpc_server_shutdown_and_notify(s->server, s->shutdown_cq, &tag);
      grpc_server_cancel_all_calls(s->server);
      grpc_completion_queue_next(s->shutdown_cq, gpr_inf_future(GPR_CLOCK_MONOTONIC), NULL);
    }
  }
  /* Workers leave their loop once the server is shut down and their current
   * call (cancelled, if the grace period ran out) is finished. */
  for (int i = 0; s->workers && i < s->nworkers; i++)
    if (s->workers[i].started) pthread_join(s->workers[i].thread, NULL);
  if (s->server) grpc_server_destroy(s->server);
  for (int i = 0; s->workers && i < s->nworkers; i++) {
    if (!s->workers[i].cq) continue;
    grpc_completion_queue_shutdown(s->workers[i].cq);
    while (grpc_completion_queue_next(s->workers[i].cq, gpr_inf_future(GPR_CLOCK_MONOTONIC), NULL).type !=
           GRPC_QUEUE_SHUTDOWN) {
    }
    grpc_completion_queue_destroy(s->workers[i].cq);
  }
  if (s->shutdown_cq) {
    grpc_completion_queue_shutdown(s->shutdown_cq);
    while (grpc_completion_queue_next(s->shutdown_cq, gpr_inf_future(GPR_CLOCK_MONOTONIC), NULL).type !=
           GRPC_QUEUE_SHUTDOWN) {
    }
    grpc_completion_queue_destroy(s->shutdown_cq);
  }
  if (s->quota) grpc_resource_quota_unref(s->quota);
  pthread_mutex_destroy(&s->peers_mu);
  free(s->peers);
  free(s->workers);
  free(s);
}
