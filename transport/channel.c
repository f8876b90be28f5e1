/*
 * channel.c - client side: a mutual-TLS channel to the coordinator and
 * blocking unary / client-streaming / server-streaming calls, each on its own
 * pluck completion queue with a deadline.
 *
 * Op sequences (notes/grpc-core-c.md, measured on gRPC 1.51):
 *   unary:   {SEND_INITIAL_METADATA, SEND_MESSAGE, SEND_CLOSE_FROM_CLIENT,
 *             RECV_INITIAL_METADATA, RECV_MESSAGE, RECV_STATUS_ON_CLIENT}
 *   client streaming: {SEND_INITIAL_METADATA} -> {SEND_MESSAGE}xN ->
 *             {SEND_CLOSE_FROM_CLIENT, RECV_INITIAL_METADATA, RECV_MESSAGE} -> {RECV_STATUS_ON_CLIENT}
 *   server streaming: {SEND_INITIAL_METADATA, SEND_MESSAGE, SEND_CLOSE_FROM_CLIENT} ->
 *             {RECV_INITIAL_METADATA, RECV_MESSAGE} -> {RECV_MESSAGE}... until NULL -> {RECV_STATUS_ON_CLIENT}
 * Pitfall kept in mind: RECV_STATUS_ON_CLIENT completes only after initial
 * metadata and every message were received, so fetch_status() drains first.
 */
#include <grpc/grpc_security.h>
#include <grpc/support/alloc.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/chunk.h"
#include "common/clock.h"
#include "common/log.h"
#include "crypto/pki.h"
#include "fedc/error.h"
#include "transport/transport.h"
#include "transport/transport_int.h"

/* Largest message a client accepts (a 4 MiB chunk plus framing). */
#define CLIENT_MAX_RECV (FC_CHUNK_MAX_WIRE)
#define FC_CHUNK_MAX_WIRE ((4 << 20) + 4096)

struct fc_channel {
  grpc_channel *ch; /* replaced (under calls_mu) by a fresh one after a call found it unreachable */
  grpc_channel_credentials *creds;
  int keepalive_ms;
  char server_name[256];
  atomic_int stale; /* a call ended UNAVAILABLE without an answer from the peer */
  char target[256];
  char ca[512], cert[512], key[512];
  int insecure;
  char insecure_id[160];
  char proto_ver[24];
  atomic_uint_fast64_t probe_ok_ms; /* when diagnose.c last found the path healthy */
  /* Calls in flight, so fc_channel_cancel_all can end them from any thread. */
  pthread_mutex_t calls_mu;
  struct fc_ccall *calls;
  int cancelled; /* under calls_mu: every call, present and future, is cancelled */
};

struct fc_ccall {
  fc_channel *ch;
  struct fc_ccall *prev, *next; /* in ch->calls */
  grpc_call *call;
  grpc_completion_queue *cq;
  fc_rpc_kind kind;
  grpc_metadata md[2];
  size_t nmd;
  grpc_metadata_array init_md, trail_md;
  grpc_status_code status;
  grpc_slice status_details;
  int got_initial_md, got_status, send_failed, recv_ended;
  uint64_t bytes_in, bytes_out;
};

void fc_channel_opts_init(fc_channel_opts *o) {
  memset(o, 0, sizeof *o);
  o->keepalive_ms = 120000;
}

static grpc_arg str_arg(const char *key, const char *v) {
  grpc_arg a;
  a.type = GRPC_ARG_STRING;
  a.key = (char *)key;
  a.value.string = (char *)v;
  return a;
}

/* gRPC's peer check after its own chain and host checks (expect_peer,
 * expect_role): 0 if the server's certificate carries exactly the SPIFFE
 * identity we were told to expect, or the role. userdata: a malloc'd
 * "spiffe://fed/role/name", or "role:<role>". */
static int verify_expected_peer(const char *target_name, const char *peer_pem, void *userdata) {
  (void)target_name;
  const char *want = userdata;
  char fed[FC_PKI_FEDERATION_MAX], role[FC_PKI_ROLE_MAX], name[FC_PKI_NAME_MAX], got[300];
  if (!peer_pem || fc_pki_identity_from_pem(peer_pem, strlen(peer_pem), fed, sizeof fed, role, sizeof role, name,
                                            sizeof name) != FEDC_OK) {
    FC_WARN("transport", "server certificate has no SPIFFE identity; expected %s", want);
    return 1;
  }
  snprintf(got, sizeof got, "spiffe://%s/%s/%s", fed, role, name);
  if (!strncmp(want, "role:", 5)) { /* expect_role: any name of that role */
    if (strcmp(role, want + 5) == 0) return 0;
    FC_WARN("transport", "server certificate is %s, not a %s's: refused", got, want + 5);
    return 1;
  }
  if (strcmp(got, want) != 0) {
    FC_WARN("transport", "server certificate is %s, expected %s: refused", got, want);
    return 1;
  }
  return 0;
}

/* The gRPC channel of c, from its credentials and our arguments. */
static grpc_channel *open_grpc(fc_channel *c) {
  grpc_arg args[9];
  size_t n = 0;
  args[n++] = fc_int_arg(GRPC_ARG_MAX_RECEIVE_MESSAGE_LENGTH, CLIENT_MAX_RECV);
  /* Our own connection: by default gRPC shares one connection among
   * channels with the same target and arguments (insecure test channels
   * with different identities shared one, and its 16-stream limit). */
  args[n++] = fc_int_arg(GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL, 1);
  args[n++] = fc_int_arg(GRPC_ARG_KEEPALIVE_TIME_MS, c->keepalive_ms > 0 ? c->keepalive_ms : 120000);
  args[n++] = fc_int_arg(GRPC_ARG_KEEPALIVE_TIMEOUT_MS, 10000);
  args[n++] = fc_int_arg(GRPC_ARG_ENABLE_RETRIES, 0);
  args[n++] = fc_int_arg(GRPC_ARG_MAX_RECONNECT_BACKOFF_MS, 2000);
  /* What gRPC may read ahead of us on a stream: about one chunk. With BDP
   * probing (the default) the window grows until a fast link has pushed
   * most of a model download into gRPC's buffers beside the copy we
   * assemble: 0.65 of a model's size more at the peak on loopback (the
   * coordinator bounds its side the same way: server.c). */
  args[n++] = fc_int_arg(GRPC_ARG_HTTP2_BDP_PROBE, 0);
  args[n++] = fc_int_arg(GRPC_ARG_HTTP2_STREAM_LOOKAHEAD_BYTES, (int)FC_CHUNK_DEFAULT);
  /* A list of addresses ("127.0.0.1:7070,127.0.0.1:7071": coordinator
   * replicas, of which only the leader listens; gRPC's pick_first takes the
   * first that answers) has the whole list as its authority: the
   * certificate is checked against the first address's host instead. */
  char first_host[256] = "";
  if (!c->server_name[0] && !c->insecure && strchr(c->target, ',')) {
    size_t end = strcspn(c->target, ","); /* the first address: host:port or [v6]:port */
    while (end > 0 && c->target[end - 1] != ':') end--;
    size_t start = 0;
    if (end > 1) end--; /* drop ":port" */
    if (c->target[0] == '[' && end > 2 && c->target[end - 1] == ']') start = 1, end--;
    if (end > start && end - start < sizeof first_host) {
      memcpy(first_host, c->target + start, end - start);
      first_host[end - start] = 0;
      args[n++] = str_arg(GRPC_SSL_TARGET_NAME_OVERRIDE_ARG, first_host);
    }
  }
  if (c->server_name[0]) args[n++] = str_arg(GRPC_SSL_TARGET_NAME_OVERRIDE_ARG, c->server_name);
  grpc_channel_args cargs = {n, args};
  /* "ipv4:" targets skip the c-ares resolver (and its one-time leak). */
  char target[300];
  if (strncmp(c->target, "127.", 4) == 0) snprintf(target, sizeof target, "ipv4:%s", c->target);
  else
    snprintf(target, sizeof target, "%s", c->target);
  return grpc_channel_create(target, c->creds, &cargs);
}

int fc_channel_create(const fc_channel_opts *o, fc_channel **out, char *err, size_t errlen) {
  int rc = FEDC_ERR_INVALID;
  fc_tls_pem pem;
  memset(&pem, 0, sizeof pem);
  grpc_channel_credentials *creds = NULL;
  fc_channel *c = calloc(1, sizeof *c);
  if (!c) return FEDC_ERR_NOMEM;
  pthread_mutex_init(&c->calls_mu, NULL);
  if (!o->target || strlen(o->target) >= sizeof c->target) {
    snprintf(err, errlen, "missing or too long coordinator address");
    goto out;
  }
  snprintf(c->target, sizeof c->target, "%s", o->target);
  snprintf(c->proto_ver, sizeof c->proto_ver, "%s",
           o->protocol_version ? o->protocol_version : FC_PROTOCOL_VERSION_STRING);
  if (o->insecure_for_testing) {
    if (!fc_addr_is_loopback(o->target)) {
      snprintf(err, errlen, "--insecure-for-testing is refused for non-loopback address %s", o->target);
      goto out;
    }
    c->insecure = 1;
    snprintf(c->insecure_id, sizeof c->insecure_id, "%s", o->insecure_identity ? o->insecure_identity : "client/test");
    creds = grpc_insecure_credentials_create();
  } else {
    if (!o->tls.ca || !o->tls.cert || !o->tls.key) {
      snprintf(err, errlen, "mutual TLS needs --ca, --cert and --key");
      goto out;
    }
    snprintf(c->ca, sizeof c->ca, "%s", o->tls.ca);
    snprintf(c->cert, sizeof c->cert, "%s", o->tls.cert);
    snprintf(c->key, sizeof c->key, "%s", o->tls.key);
    if ((rc = fc_tls_pem_load(o->tls.ca, o->tls.cert, o->tls.key, &pem, err, errlen)) != FEDC_OK) goto out;
    grpc_ssl_pem_key_cert_pair pair = {pem.key, pem.cert};
    if (o->expect_peer || o->expect_role) {
      char *want = NULL;
      if (o->expect_peer) want = strdup(o->expect_peer);
      else if ((want = malloc(strlen(o->expect_role) + 6)) != NULL)
        sprintf(want, "role:%s", o->expect_role);
      if (!want) {
        rc = FEDC_ERR_NOMEM;
        goto out;
      }
      /* gRPC owns want from here: verify_peer_destruct frees it with the credentials. */
      grpc_ssl_verify_peer_options vo = {verify_expected_peer, want, free};
      creds = grpc_ssl_credentials_create_ex(pem.ca, &pair, &vo, NULL);
    } else {
      creds = grpc_ssl_credentials_create(pem.ca, &pair, NULL, NULL);
    }
  }
  rc = FEDC_ERR_TLS;
  if (!creds) {
    snprintf(err, errlen, "cannot create channel credentials");
    goto out;
  }
  c->creds = creds;
  creds = NULL;
  c->keepalive_ms = o->keepalive_ms;
  if (o->server_name) snprintf(c->server_name, sizeof c->server_name, "%s", o->server_name);
  c->ch = open_grpc(c);
  if (creds) grpc_channel_credentials_release(creds);
  if (!c->ch) {
    snprintf(err, errlen, "cannot create channel to %s", c->target);
    goto out;
  }
  rc = FEDC_OK;
  *out = c;
  c = NULL;
out:
  fc_tls_pem_free(&pem);
  if (c) fc_channel_destroy(c);
  return rc;
}

void fc_channel_destroy(fc_channel *c) {
  if (!c) return;
  if (c->ch) grpc_channel_destroy(c->ch);
  if (c->creds) grpc_channel_credentials_release(c->creds);
  pthread_mutex_destroy(&c->calls_mu);
  free(c);
}

void fc_channel_cancel_all(fc_channel *c) {
  if (!c) return;
  pthread_mutex_lock(&c->calls_mu);
  c->cancelled = 1;
  for (fc_ccall *k = c->calls; k; k = k->next) grpc_call_cancel(k->call, NULL); /* thread-safe in gRPC */
  pthread_mutex_unlock(&c->calls_mu);
}

void fc_channel_uncancel(fc_channel *c) {
  if (!c) return;
  pthread_mutex_lock(&c->calls_mu);
  c->cancelled = 0;
  pthread_mutex_unlock(&c->calls_mu);
}

/* ---- status translation -------------------------------------------------------- */

static int err_from_code(int code, const char *detail) {
  switch (code) {
  case GRPC_STATUS_OK: return FEDC_OK;
  case GRPC_STATUS_UNAVAILABLE: return FEDC_ERR_UNAVAILABLE;
  case GRPC_STATUS_DEADLINE_EXCEEDED: return FEDC_ERR_TIMEOUT;
  case GRPC_STATUS_PERMISSION_DENIED:
  case GRPC_STATUS_UNAUTHENTICATED: return FEDC_ERR_PERMISSION;
  case GRPC_STATUS_RESOURCE_EXHAUSTED: return FEDC_ERR_TOO_LARGE;
  case GRPC_STATUS_FAILED_PRECONDITION:
    return strstr(detail, "protocol") ? FEDC_ERR_VERSION : FEDC_ERR_REJECTED;
  case GRPC_STATUS_NOT_FOUND: return FEDC_ERR_NOT_FOUND;
  case GRPC_STATUS_DATA_LOSS: return FEDC_ERR_HASH;
  case GRPC_STATUS_CANCELLED: return FEDC_ERR_STOPPED;
  case GRPC_STATUS_INVALID_ARGUMENT:
  case GRPC_STATUS_ALREADY_EXISTS:
  case GRPC_STATUS_OUT_OF_RANGE:
  case GRPC_STATUS_ABORTED: return FEDC_ERR_REJECTED;
  case GRPC_STATUS_UNIMPLEMENTED: return FEDC_ERR_PROTOCOL;
  default: return FEDC_ERR_INTERNAL;
  }
}

static void set_status(fc_status *st, int code, const char *detail) {
  if (!st) return;
  st->code = code;
  st->retry_after_ms = 0;
  snprintf(st->detail, sizeof st->detail, "%s", detail ? detail : "");
  st->err = err_from_code(code, st->detail);
}

/* ---- calls ----------------------------------------------------------------------- */

static int wait_tag(fc_ccall *c, void *tag) {
  /* The call deadline bounds every op: gRPC completes them when it passes. */
  grpc_event ev = grpc_completion_queue_pluck(c->cq, tag, gpr_inf_future(GPR_CLOCK_MONOTONIC), NULL);
  return ev.type == GRPC_OP_COMPLETE && ev.success;
}

static int batch(fc_ccall *c, grpc_op *ops, size_t n) {
  if (grpc_call_start_batch(c->call, ops, n, ops, NULL) != GRPC_CALL_OK) return 0;
  return wait_tag(c, ops);
}

/* The next message's bytes (with the initial metadata the first time);
 * NULL at the end of the stream or on failure, which sets recv_ended. */
static grpc_byte_buffer *recv_raw(fc_ccall *c) {
  grpc_op ops[2];
  size_t n = 0;
  grpc_byte_buffer *bb = NULL;
  memset(ops, 0, sizeof ops);
  if (!c->got_initial_md) {
    ops[n].op = GRPC_OP_RECV_INITIAL_METADATA;
    ops[n].data.recv_initial_metadata.recv_initial_metadata = &c->init_md;
    n++;
    c->got_initial_md = 1;
  }
  ops[n].op = GRPC_OP_RECV_MESSAGE;
  ops[n].data.recv_message.recv_message = &bb;
  n++;
  if (!batch(c, ops, n) && bb) {
    grpc_byte_buffer_destroy(bb);
    bb = NULL;
  }
  if (!bb) c->recv_ended = 1;
  return bb;
}

/* The server's FC_RETRY_AFTER_MD_KEY (ms, 50 ms to an hour), or 0. The floor:
 * a peer answering "come back in 1 ms" cannot make a client call it in a
 * tight loop until the task's deadline (every told-to-wait loop honours it). */
static uint32_t retry_after(const grpc_metadata_array *md) {
  size_t klen = strlen(FC_RETRY_AFTER_MD_KEY);
  for (size_t i = 0; i < md->count; i++) {
    const grpc_slice *k = &md->metadata[i].key, *v = &md->metadata[i].value;
    if (GRPC_SLICE_LENGTH(*k) != klen || memcmp(GRPC_SLICE_START_PTR(*k), FC_RETRY_AFTER_MD_KEY, klen) != 0) continue;
    uint32_t ms = 0;
    size_t n = GRPC_SLICE_LENGTH(*v);
    const uint8_t *p = GRPC_SLICE_START_PTR(*v);
    for (size_t j = 0; j < n && j < 8; j++) {
      if (p[j] < '0' || p[j] > '9') return 0;
      ms = ms * 10 + (uint32_t)(p[j] - '0');
    }
    return ms > 3600000 ? 3600000 : ms && ms < 50 ? 50 : ms;
  }
  return 0;
}

static void fetch_status(fc_ccall *c, fc_status *st) {
  if (!c->got_status) {
    grpc_op ops[1];
    /* Drain what the server may still send, else the status never comes. */
    while (!c->recv_ended) {
      grpc_byte_buffer *bb = recv_raw(c);
      if (bb) grpc_byte_buffer_destroy(bb);
    }
    memset(ops, 0, sizeof ops);
    ops[0].op = GRPC_OP_RECV_STATUS_ON_CLIENT;
    ops[0].data.recv_status_on_client.trailing_metadata = &c->trail_md;
    ops[0].data.recv_status_on_client.status = &c->status;
    ops[0].data.recv_status_on_client.status_details = &c->status_details;
    batch(c, ops, 1);
    c->got_status = 1;
  }
  char detail[512];
  size_t dl = GRPC_SLICE_LENGTH(c->status_details);
  if (dl >= sizeof detail) dl = sizeof detail - 1;
  memcpy(detail, GRPC_SLICE_START_PTR(c->status_details), dl);
  detail[dl] = 0;
  set_status(st, c->status, detail);
  if (st) st->retry_after_ms = retry_after(&c->trail_md);
  /* Unreachable, not refused by the peer: the next call gets a fresh gRPC
   * channel. gRPC 1.51's channel whose connection attempts failed took 15 s
   * to connect after its server came up (measured on loopback: about 5 s
   * stuck CONNECTING, then its backoff), which is the whole failover time
   * of a standby coordinator replica taking over; callers space their calls
   * with their own backoff. */
  if (c->status == GRPC_STATUS_UNAVAILABLE && !(st && st->retry_after_ms)) atomic_store(&c->ch->stale, 1);
  /* So does a call that heard nothing before its deadline: the connection
   * may lead to a process that is frozen or cut off (a stopped coordinator
   * replica: its TCP connection stays up, pick_first keeps it for ever). */
  if (c->status == GRPC_STATUS_DEADLINE_EXCEEDED && c->bytes_in == 0) atomic_store(&c->ch->stale, 1);
  /* A status with our retry-after trailer is the coordinator's own answer
   * ("busy, come back in N ms") over a connection that works: nothing to
   * diagnose. Probing then cost a TCP + TLS handshake per refused client: with
   * 300 uploads refused at once, 300 extra connections (past the per-address
   * cap on loopback) and a diagnosis in place of the coordinator's reason. */
  if (st && st->code != GRPC_STATUS_OK && !st->retry_after_ms) fc_status_explain(c->ch, st);
}

static int ccall_new(fc_channel *ch, const char *path, fc_rpc_kind kind, int timeout_ms, fc_ccall **out) {
  fc_ccall *c = calloc(1, sizeof *c);
  if (!c) return FEDC_ERR_NOMEM;
  c->ch = ch;
  c->kind = kind;
  c->cq = grpc_completion_queue_create_for_pluck(NULL);
  grpc_metadata_array_init(&c->init_md);
  grpc_metadata_array_init(&c->trail_md);
  c->status_details = grpc_empty_slice();
  grpc_slice method = grpc_slice_from_copied_string(path);
  pthread_mutex_lock(&ch->calls_mu);
  if (atomic_exchange(&ch->stale, 0)) {
    /* Calls still running on the old channel keep it alive until they end. */
    grpc_channel *fresh = open_grpc(ch);
    if (fresh) {
      grpc_channel_destroy(ch->ch);
      ch->ch = fresh;
    }
  }
  c->call = grpc_channel_create_call(ch->ch, NULL, GRPC_PROPAGATE_DEFAULTS, c->cq, method, NULL,
                                     fc_deadline_ms(timeout_ms > 0 ? timeout_ms : 30000), NULL);
  pthread_mutex_unlock(&ch->calls_mu);
  grpc_slice_unref(method);
  c->md[0].key = grpc_slice_from_static_string(FC_PROTOCOL_MD_KEY);
  c->md[0].value = grpc_slice_from_copied_string(ch->proto_ver);
  c->nmd = 1;
  if (ch->insecure) {
    c->md[1].key = grpc_slice_from_static_string(FC_INSECURE_IDENTITY_MD_KEY);
    c->md[1].value = grpc_slice_from_copied_string(ch->insecure_id);
    c->nmd = 2;
  }
  if (!c->call) {
    fc_ccall_destroy(c);
    return FEDC_ERR_NOMEM;
  }
  pthread_mutex_lock(&ch->calls_mu);
  c->next = ch->calls;
  if (ch->calls) ch->calls->prev = c;
  ch->calls = c;
  if (ch->cancelled) grpc_call_cancel(c->call, NULL);
  pthread_mutex_unlock(&ch->calls_mu);
  *out = c;
  return FEDC_OK;
}

static grpc_op op_send_md(fc_ccall *c) {
  grpc_op op;
  memset(&op, 0, sizeof op);
  op.op = GRPC_OP_SEND_INITIAL_METADATA;
  op.data.send_initial_metadata.count = c->nmd;
  op.data.send_initial_metadata.metadata = c->md;
  return op;
}

static int recv_one(fc_ccall *c, const ProtobufCMessageDescriptor *desc, fc_recv_take_fn take, void *ctx,
                    ProtobufCMessage **msg) {
  grpc_byte_buffer *bb = recv_raw(c);
  if (!bb) return 0;
  c->bytes_in += grpc_byte_buffer_length(bb);
  *msg = NULL;
  if (take && take(ctx, bb)) { /* decoded in place by the caller's hook */
    grpc_byte_buffer_destroy(bb);
    return 1;
  }
  int rc = fc_unpack_message(bb, desc, CLIENT_MAX_RECV, 0, msg);
  grpc_byte_buffer_destroy(bb);
  return rc == FEDC_OK ? 1 : -rc;
}

int fc_call_unary(fc_channel *ch, const char *path, const ProtobufCMessage *req,
                  const ProtobufCMessageDescriptor *resp_desc, ProtobufCMessage **resp, int timeout_ms,
                  fc_status *st) {
  fc_ccall *c = NULL;
  int rc = ccall_new(ch, path, FC_RPC_UNARY, timeout_ms, &c);
  if (rc != FEDC_OK) {
    set_status(st, GRPC_STATUS_RESOURCE_EXHAUSTED, "out of memory");
    return rc;
  }
  grpc_byte_buffer *out = fc_pack_message(req), *in = NULL;
  if (!out) {
    fc_ccall_destroy(c);
    set_status(st, GRPC_STATUS_RESOURCE_EXHAUSTED, "out of memory");
    return FEDC_ERR_NOMEM;
  }
  grpc_op ops[6];
  memset(ops, 0, sizeof ops);
  ops[0] = op_send_md(c);
  ops[1].op = GRPC_OP_SEND_MESSAGE;
  ops[1].data.send_message.send_message = out;
  ops[2].op = GRPC_OP_SEND_CLOSE_FROM_CLIENT;
  ops[3].op = GRPC_OP_RECV_INITIAL_METADATA;
  ops[3].data.recv_initial_metadata.recv_initial_metadata = &c->init_md;
  ops[4].op = GRPC_OP_RECV_MESSAGE;
  ops[4].data.recv_message.recv_message = &in;
  ops[5].op = GRPC_OP_RECV_STATUS_ON_CLIENT;
  ops[5].data.recv_status_on_client.trailing_metadata = &c->trail_md;
  ops[5].data.recv_status_on_client.status = &c->status;
  ops[5].data.recv_status_on_client.status_details = &c->status_details;
  c->got_initial_md = c->recv_ended = 1;
  c->bytes_out += out ? grpc_byte_buffer_length(out) : 0;
  batch(c, ops, 6);
  c->got_status = 1;
  if (out) grpc_byte_buffer_destroy(out);
  fc_status tmp;
  if (!st) st = &tmp;
  fetch_status(c, st);
  rc = st->err;
  if (rc == FEDC_OK) {
    if (!in) {
      set_status(st, GRPC_STATUS_INTERNAL, "server sent no response message");
      rc = FEDC_ERR_PROTOCOL;
    } else {
      rc = fc_unpack_message(in, resp_desc, CLIENT_MAX_RECV, 0, resp);
      if (rc != FEDC_OK) set_status(st, GRPC_STATUS_INTERNAL, "malformed response message");
    }
  }
  if (in) grpc_byte_buffer_destroy(in);
  fc_ccall_destroy(c);
  return rc;
}

int fc_ccall_start(fc_channel *ch, const char *path, fc_rpc_kind kind, const ProtobufCMessage *req,
                   int timeout_ms, fc_ccall **out, fc_status *st) {
  fc_ccall *c = NULL;
  int rc = ccall_new(ch, path, kind, timeout_ms, &c);
  if (rc != FEDC_OK) {
    set_status(st, GRPC_STATUS_RESOURCE_EXHAUSTED, "out of memory");
    return rc;
  }
  grpc_op ops[3];
  memset(ops, 0, sizeof ops);
  ops[0] = op_send_md(c);
  size_t n = 1;
  grpc_byte_buffer *bb = NULL;
  if (kind == FC_RPC_SERVER_STREAM) {
    bb = fc_pack_message(req);
    if (!bb) {
      fc_ccall_destroy(c);
      set_status(st, GRPC_STATUS_RESOURCE_EXHAUSTED, "out of memory");
      return FEDC_ERR_NOMEM;
    }
    ops[1].op = GRPC_OP_SEND_MESSAGE;
    ops[1].data.send_message.send_message = bb;
    ops[2].op = GRPC_OP_SEND_CLOSE_FROM_CLIENT;
    n = 3;
    c->bytes_out += bb ? grpc_byte_buffer_length(bb) : 0;
  }
  int ok = batch(c, ops, n);
  if (bb) grpc_byte_buffer_destroy(bb);
  if (!ok) {
    fc_status tmp;
    if (!st) st = &tmp;
    fetch_status(c, st);
    rc = st->err ? st->err : FEDC_ERR_UNAVAILABLE;
    fc_ccall_destroy(c);
    return rc;
  }
  *out = c;
  return FEDC_OK;
}

int fc_ccall_send(fc_ccall *c, const ProtobufCMessage *msg, fc_status *st) {
  return fc_ccall_send_bytes(c, fc_pack_message(msg), st);
}

int fc_ccall_send_bytes(fc_ccall *c, grpc_byte_buffer *bb, fc_status *st) {
  if (!bb) {
    set_status(st, GRPC_STATUS_RESOURCE_EXHAUSTED, "out of memory");
    return FEDC_ERR_NOMEM;
  }
  grpc_op op;
  memset(&op, 0, sizeof op);
  op.op = GRPC_OP_SEND_MESSAGE;
  op.data.send_message.send_message = bb;
  c->bytes_out += grpc_byte_buffer_length(bb);
  int ok = batch(c, &op, 1);
  grpc_byte_buffer_destroy(bb);
  if (ok) return FEDC_OK;
  /* The server ended the call (rejected the upload, or went away). */
  c->send_failed = 1;
  fc_status tmp;
  if (!st) st = &tmp;
  fetch_status(c, st);
  return st->err ? st->err : FEDC_ERR_UNAVAILABLE;
}

int fc_ccall_close_and_recv(fc_ccall *c, const ProtobufCMessageDescriptor *resp_desc, ProtobufCMessage **resp,
                            fc_status *st) {
  fc_status tmp;
  if (!st) st = &tmp;
  grpc_byte_buffer *in = NULL;
  if (!c->send_failed) {
    grpc_op ops[3];
    memset(ops, 0, sizeof ops);
    ops[0].op = GRPC_OP_SEND_CLOSE_FROM_CLIENT;
    ops[1].op = GRPC_OP_RECV_INITIAL_METADATA;
    ops[1].data.recv_initial_metadata.recv_initial_metadata = &c->init_md;
    ops[2].op = GRPC_OP_RECV_MESSAGE;
    ops[2].data.recv_message.recv_message = &in;
    if (!c->got_initial_md) {
      c->got_initial_md = 1;
      batch(c, ops, 3);
    } else {
      ops[1] = ops[2];
      batch(c, ops, 2);
    }
    c->recv_ended = 1;
  }
  fetch_status(c, st);
  int rc = st->err;
  if (rc == FEDC_OK) {
    if (!in) {
      set_status(st, GRPC_STATUS_INTERNAL, "server sent no response message");
      rc = FEDC_ERR_PROTOCOL;
    } else {
      c->bytes_in += grpc_byte_buffer_length(in);
      rc = fc_unpack_message(in, resp_desc, CLIENT_MAX_RECV, 0, resp);
      if (rc != FEDC_OK) set_status(st, GRPC_STATUS_INTERNAL, "malformed response message");
    }
  }
  if (in) grpc_byte_buffer_destroy(in);
  return rc;
}

int fc_ccall_recv(fc_ccall *c, const ProtobufCMessageDescriptor *desc, ProtobufCMessage **msg, fc_status *st) {
  return fc_ccall_recv_take(c, desc, NULL, NULL, msg, st);
}

int fc_ccall_recv_take(fc_ccall *c, const ProtobufCMessageDescriptor *desc, fc_recv_take_fn take, void *ctx,
                       ProtobufCMessage **msg, fc_status *st) {
  fc_status tmp;
  if (!st) st = &tmp;
  int r = c->recv_ended ? 0 : recv_one(c, desc, take, ctx, msg);
  if (r == 1) return 1;
  if (r < 0) {
    grpc_call_cancel(c->call, NULL);
    set_status(st, GRPC_STATUS_INTERNAL, -r == FEDC_ERR_TOO_LARGE ? "message over the client's limit"
                                                                   : "malformed message from server");
    st->err = -r;
    return r;
  }
  fetch_status(c, st);
  return st->err == FEDC_OK ? 0 : -st->err;
}

void fc_ccall_destroy(fc_ccall *c) {
  if (!c) return;
  if (c->call) {
    pthread_mutex_lock(&c->ch->calls_mu);
    if (c->prev) c->prev->next = c->next;
    else if (c->ch->calls == c)
      c->ch->calls = c->next;
    if (c->next) c->next->prev = c->prev;
    pthread_mutex_unlock(&c->ch->calls_mu);
    if (!c->got_status) grpc_call_cancel(c->call, NULL);
    grpc_call_unref(c->call);
  }
  grpc_metadata_array_destroy(&c->init_md);
  grpc_metadata_array_destroy(&c->trail_md);
  grpc_slice_unref(c->status_details);
  for (size_t i = 0; i < c->nmd; i++) grpc_slice_unref(c->md[i].value);
  if (c->cq) {
    grpc_completion_queue_shutdown(c->cq);
    /* Every batch was waited for, so nothing is pending: this returns at once. */
    grpc_completion_queue_pluck(c->cq, NULL, gpr_inf_future(GPR_CLOCK_REALTIME), NULL);
    grpc_completion_queue_destroy(c->cq);
  }
  free(c);
}

uint64_t fc_ccall_bytes_in(const fc_ccall *c) { return c->bytes_in; }
uint64_t fc_ccall_bytes_out(const fc_ccall *c) { return c->bytes_out; }

/* Accessors for fc_status_explain (below). */
static atomic_uint_fast64_t *fc_channel_probe_stamp(struct fc_channel *c) { return &c->probe_ok_ms; }
static const char *fc_channel_target(const fc_channel *c) { return c->target; }
static int fc_channel_tls(const fc_channel *c, const char **ca, const char **cert, const char **key) {
  *ca = c->ca;
  *cert = c->cert;
  *key = c->key;
  return c->insecure;
}

/* Moved from diagnose.c so calls go one way (channel.c -> diagnose.c): the
 * probe itself stays there. */
void fc_status_explain(fc_channel *ch, fc_status *st) {
  if (!ch || !st || st->code != GRPC_STATUS_UNAVAILABLE) return;
  const char *ca, *cert, *key;
  int insecure = fc_channel_tls(ch, &ca, &cert, &key);
  char why[400];
  /* A probe costs a TCP + TLS handshake on a coordinator that may be busy:
   * after a healthy verdict, trust it for 5 s (e.g. "coordinator busy"
   * replies from the application carry their own reason). */
  atomic_uint_fast64_t *stamp = fc_channel_probe_stamp(ch);
  uint64_t now = fc_now_ms();
  int rc = FEDC_OK;
  if (now - atomic_load(stamp) > 5000) {
    rc = fc_diagnose_probe(fc_channel_target(ch), ca, cert, key, insecure, why, sizeof why);
    if (rc == FEDC_OK) atomic_store(stamp, now);
  }
  if (rc != FEDC_OK) {
    st->err = rc;
    snprintf(st->detail, sizeof st->detail, "%s", why);
  } else {
    char orig[300];
    snprintf(orig, sizeof orig, "%.299s", st->detail);
    snprintf(st->detail, sizeof st->detail, "coordinator at %s unavailable: %s", fc_channel_target(ch), orig);
  }
}
