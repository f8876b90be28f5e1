/*
 * etcd.c - the etcd v3 client of etcd.h: request building, response
 * parsing, and unary calls with a deadline that move to the next endpoint
 * when one is UNAVAILABLE or times out (etcd.h says which calls go on at once).
 *
 * Wire: the messages are etcd's own (etcdserverpb, generated from the
 * packaged rpc.proto); the method paths are "/etcdserverpb.<Service>/<Method>".
 * LeaseKeepAlive is a bidirectional stream in etcd's API; one keep-alive is
 * sent as a call carrying one request and one response (the server answers
 * each request, then sees the end of our stream and closes it OK), so a
 * renewal is a plain call with a deadline and no stream outlives it.
 *
 * Invariants: nothing from a response is used before it is checked (header
 * present, one response per op of the branch that ran, each of the kind
 * asked for, values under FC_ETCD_MAX_VALUE); out-parameters are written only
 * on FEDC_OK.
 */
#include "coordinator/etcd.h"

#include <ctype.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "crypto/pki.h"
#include "fedc/error.h"

struct fc_etcd {
  size_t n;
  char endpoint[FC_ETCD_MAX_ENDPOINTS][256];
  fc_channel *ch[FC_ETCD_MAX_ENDPOINTS]; /* NULL: (re)created at the next call to that endpoint */
  int tls;
  char ca[512], cert[512], key[512];
  atomic_size_t current;       /* the endpoint tried first: the last that answered, or the one after a timeout */
  atomic_size_t last_answered; /* the last that answered (fc_etcd_endpoint) */
  atomic_int answered;         /* 0 until a call got an answer */
  int timeout_ms;
};

void fc_etcd_opts_init(fc_etcd_opts *o) {
  memset(o, 0, sizeof *o);
  o->timeout_ms = 2000;
}

int fc_etcd_endpoints_parse(const char *list, char out[][256], size_t *n, char *err, size_t errlen) {
  size_t count = 0;
  if (!list || !*list) {
    snprintf(err, errlen, "--etcd: empty endpoint list (expected host:port[,host:port...])");
    return FEDC_ERR_INVALID;
  }
  const char *p = list;
  for (;;) {
    const char *end = strchr(p, ',');
    size_t len = end ? (size_t)(end - p) : strlen(p);
    while (len && isspace((unsigned char)*p)) p++, len--;
    while (len && isspace((unsigned char)p[len - 1])) len--;
    if (len >= 7 && strncmp(p, "http://", 7) == 0) p += 7, len -= 7;
    else if (len >= 8 && strncmp(p, "https://", 8) == 0)
      p += 8, len -= 8;
    if (len == 0) {
      snprintf(err, errlen, "--etcd: empty endpoint in \"%s\"", list);
      return FEDC_ERR_INVALID;
    }
    if (len >= 256) {
      snprintf(err, errlen, "--etcd: endpoint longer than 255 characters");
      return FEDC_ERR_INVALID;
    }
    if (count == FC_ETCD_MAX_ENDPOINTS) {
      snprintf(err, errlen, "--etcd: more than %d endpoints", FC_ETCD_MAX_ENDPOINTS);
      return FEDC_ERR_INVALID;
    }
    char item[256];
    memcpy(item, p, len);
    item[len] = 0;
    const char *colon = strrchr(item, ':');
    if (!colon || !colon[1] || strspn(colon + 1, "0123456789") != strlen(colon + 1) || atoi(colon + 1) <= 0 ||
        atoi(colon + 1) > 65535) {
      snprintf(err, errlen, "--etcd: endpoint \"%s\" needs a port (host:port)", item);
      return FEDC_ERR_INVALID;
    }
    memcpy(out[count++], item, len + 1);
    if (!end) break;
    p = end + 1;
  }
  *n = count;
  return FEDC_OK;
}

/* Checks the TLS files (transport.h) and creates endpoint i's channel. */
static int channel_open(fc_etcd *e, size_t i, char *err, size_t errlen) {
  fc_channel_opts co;
  fc_channel_opts_init(&co);
  co.target = e->endpoint[i];
  if (e->tls) {
    co.tls.ca = e->ca;
    co.tls.cert = e->cert;
    co.tls.key = e->key;
  }
  co.insecure_for_testing = !e->tls;
  co.insecure_identity = "coordinator/etcd-client";
  char cerr[512];
  int rc = fc_channel_create(&co, &e->ch[i], cerr, sizeof cerr);
  if (rc != FEDC_OK) snprintf(err, errlen, "etcd endpoint %s: %s", e->endpoint[i], cerr);
  return rc;
}

int fc_etcd_shared_ca(const fc_etcd_opts *o, const char *federation_ca, char *why, size_t whylen) {
  char err[256];
  if (!o->tls.cert || !federation_ca || !federation_ca[0] ||
      fc_pki_verify(federation_ca, o->tls.cert, err, sizeof err) != FEDC_OK)
    return 0;
  snprintf(why, whylen,
           "etcd: our etcd certificate %s is issued by the federation's CA, so etcd trusts that CA: any device "
           "certificate can then write the federation's etcd keys (leader, model pointer, aggregator registry) "
           "unless etcd's auth is on; give etcd a CA of its own (operations.md, deploy/k8s-ha)",
           o->tls.cert);
  return 1;
}

int fc_etcd_open(const fc_etcd_opts *o, fc_etcd **out, char *err, size_t errlen) {
  int rc = FEDC_ERR_INVALID;
  int tls = o->tls.ca || o->tls.cert || o->tls.key;
  fc_etcd *e = calloc(1, sizeof *e);
  if (!e) return FEDC_ERR_NOMEM;
  e->timeout_ms = o->timeout_ms > 0 ? o->timeout_ms : 2000;
  if ((rc = fc_etcd_endpoints_parse(o->endpoints, e->endpoint, &e->n, err, errlen)) != FEDC_OK) goto out;
  if (tls && !(o->tls.ca && o->tls.cert && o->tls.key)) {
    rc = FEDC_ERR_INVALID;
    snprintf(err, errlen, "etcd over mutual TLS needs --etcd-ca, --etcd-cert and --etcd-key together");
    goto out;
  }
  for (size_t i = 0; i < e->n; i++) {
    if (!tls && !fc_addr_is_loopback(e->endpoint[i])) {
      rc = FEDC_ERR_INVALID;
      snprintf(err, errlen,
               "etcd endpoint %s is not a loopback address: plaintext to etcd is refused there, give "
               "--etcd-ca, --etcd-cert and --etcd-key",
               e->endpoint[i]);
      goto out;
    }
  }
  if (tls && (strlen(o->tls.ca) >= sizeof e->ca || strlen(o->tls.cert) >= sizeof e->cert ||
              strlen(o->tls.key) >= sizeof e->key)) {
    rc = FEDC_ERR_INVALID;
    snprintf(err, errlen, "etcd TLS file path too long");
    goto out;
  }
  e->tls = tls;
  if (tls) {
    snprintf(e->ca, sizeof e->ca, "%s", o->tls.ca);
    snprintf(e->cert, sizeof e->cert, "%s", o->tls.cert);
    snprintf(e->key, sizeof e->key, "%s", o->tls.key);
  }
  for (size_t i = 0; i < e->n; i++)
    if ((rc = channel_open(e, i, err, errlen)) != FEDC_OK) goto out;
  *out = e;
  e = NULL;
  rc = FEDC_OK;
out:
  fc_etcd_close(e);
  return rc;
}

void fc_etcd_close(fc_etcd *e) {
  if (!e) return;
  for (size_t i = 0; i < e->n; i++) fc_channel_destroy(e->ch[i]);
  free(e);
}

const char *fc_etcd_endpoint(const fc_etcd *e) {
  return atomic_load(&e->answered) ? e->endpoint[atomic_load(&e->last_answered)] : "";
}

void fc_etcd_kv_clear(fc_etcd_kv *kv) {
  free(kv->value);
  memset(kv, 0, sizeof *kv);
}

void fc_etcd_txn_result_clear(fc_etcd_txn_result *r) {
  for (size_t i = 0; i < FC_ETCD_MAX_OPS; i++) fc_etcd_kv_clear(&r->kv[i]);
  memset(r, 0, sizeof *r);
}

static ProtobufCBinaryData bin(const void *p, size_t n) {
  ProtobufCBinaryData b = {n, (uint8_t *)p};
  return b;
}

static ProtobufCBinaryData bin_str(const char *s) { return bin(s, strlen(s)); }

/* ---- Txn request -------------------------------------------------------------- */

/* One allocation per message; fc_etcd_txn_request_free frees them (never the
 * keys and values, which belong to the caller's fc_etcd_txn). */
static Etcdserverpb__RequestOp *op_build(const fc_etcd_op *o, char *err, size_t errlen) {
  Etcdserverpb__RequestOp *r = calloc(1, sizeof *r);
  if (!r) return NULL;
  etcdserverpb__request_op__init(r);
  if (!o->key) goto bad;
  switch (o->kind) {
  case FC_ETCD_GET: {
    Etcdserverpb__RangeRequest *q = calloc(1, sizeof *q);
    if (!q) goto nomem;
    etcdserverpb__range_request__init(q);
    q->key = bin_str(o->key);
    r->request_case = ETCDSERVERPB__REQUEST_OP__REQUEST_REQUEST_RANGE;
    r->request_range = q;
    return r;
  }
  case FC_ETCD_PUT: {
    Etcdserverpb__PutRequest *q = calloc(1, sizeof *q);
    if (!q) goto nomem;
    etcdserverpb__put_request__init(q);
    q->key = bin_str(o->key);
    q->value = bin(o->value, o->value ? o->value_len : 0);
    q->lease = o->lease;
    r->request_case = ETCDSERVERPB__REQUEST_OP__REQUEST_REQUEST_PUT;
    r->request_put = q;
    return r;
  }
  case FC_ETCD_DEL: {
    Etcdserverpb__DeleteRangeRequest *q = calloc(1, sizeof *q);
    if (!q) goto nomem;
    etcdserverpb__delete_range_request__init(q);
    q->key = bin_str(o->key);
    r->request_case = ETCDSERVERPB__REQUEST_OP__REQUEST_REQUEST_DELETE_RANGE;
    r->request_delete_range = q;
    return r;
  }
  default:
    break;
  }
bad:
  snprintf(err, errlen, "etcd Txn: op without a key or of unknown kind %d", o->kind);
  free(r);
  return NULL;
nomem:
  snprintf(err, errlen, "out of memory building an etcd Txn");
  free(r);
  return NULL;
}

static Etcdserverpb__Compare *cmp_build(const fc_etcd_cmp *c, char *err, size_t errlen) {
  static const int results[] = {ETCDSERVERPB__COMPARE__COMPARE_RESULT__EQUAL,
                                ETCDSERVERPB__COMPARE__COMPARE_RESULT__GREATER,
                                ETCDSERVERPB__COMPARE__COMPARE_RESULT__LESS,
                                ETCDSERVERPB__COMPARE__COMPARE_RESULT__NOT_EQUAL};
  if (!c->key || c->result < FC_ETCD_EQ || c->result > FC_ETCD_NE || c->target < FC_ETCD_CMP_CREATE ||
      c->target > FC_ETCD_CMP_VALUE) {
    snprintf(err, errlen, "etcd Txn: compare without a key, or of unknown target %d / result %d", c->target,
             c->result);
    return NULL;
  }
  Etcdserverpb__Compare *r = calloc(1, sizeof *r);
  if (!r) {
    snprintf(err, errlen, "out of memory building an etcd Txn");
    return NULL;
  }
  etcdserverpb__compare__init(r);
  r->key = bin_str(c->key);
  r->result = results[c->result];
  switch (c->target) {
  case FC_ETCD_CMP_CREATE:
    r->target = ETCDSERVERPB__COMPARE__COMPARE_TARGET__CREATE;
    r->target_union_case = ETCDSERVERPB__COMPARE__TARGET_UNION_CREATE_REVISION;
    r->create_revision = c->num;
    break;
  case FC_ETCD_CMP_MOD:
    r->target = ETCDSERVERPB__COMPARE__COMPARE_TARGET__MOD;
    r->target_union_case = ETCDSERVERPB__COMPARE__TARGET_UNION_MOD_REVISION;
    r->mod_revision = c->num;
    break;
  case FC_ETCD_CMP_VERSION:
    r->target = ETCDSERVERPB__COMPARE__COMPARE_TARGET__VERSION;
    r->target_union_case = ETCDSERVERPB__COMPARE__TARGET_UNION_VERSION;
    r->version = c->num;
    break;
  default:
    r->target = ETCDSERVERPB__COMPARE__COMPARE_TARGET__VALUE;
    r->target_union_case = ETCDSERVERPB__COMPARE__TARGET_UNION_VALUE;
    r->value = bin(c->value, c->value ? c->value_len : 0);
    break;
  }
  return r;
}

static void op_free(Etcdserverpb__RequestOp *r) {
  if (!r) return;
  switch (r->request_case) {
  case ETCDSERVERPB__REQUEST_OP__REQUEST_REQUEST_RANGE: free(r->request_range); break;
  case ETCDSERVERPB__REQUEST_OP__REQUEST_REQUEST_PUT: free(r->request_put); break;
  case ETCDSERVERPB__REQUEST_OP__REQUEST_REQUEST_DELETE_RANGE: free(r->request_delete_range); break;
  default: break;
  }
  free(r);
}

void fc_etcd_txn_request_free(Etcdserverpb__TxnRequest *r) {
  if (!r) return;
  for (size_t i = 0; i < r->n_compare; i++) free(r->compare[i]);
  for (size_t i = 0; i < r->n_success; i++) op_free(r->success[i]);
  for (size_t i = 0; i < r->n_failure; i++) op_free(r->failure[i]);
  free(r->compare);
  free(r->success);
  free(r->failure);
  free(r);
}

static int ops_build(const fc_etcd_op *ops, size_t n, Etcdserverpb__RequestOp ***out, size_t *nout, char *err,
                     size_t errlen) {
  if (n == 0) return FEDC_OK;
  if (!ops) {
    snprintf(err, errlen, "etcd Txn: ops missing");
    return FEDC_ERR_INVALID;
  }
  if (!(*out = calloc(n, sizeof **out))) {
    snprintf(err, errlen, "out of memory building an etcd Txn");
    return FEDC_ERR_NOMEM;
  }
  for (size_t i = 0; i < n; i++) {
    if (!((*out)[i] = op_build(&ops[i], err, errlen))) return FEDC_ERR_INVALID;
    *nout = i + 1;
  }
  return FEDC_OK;
}

int fc_etcd_txn_build(const fc_etcd_txn *t, Etcdserverpb__TxnRequest **out, char *err, size_t errlen) {
  int rc = FEDC_ERR_INVALID;
  if (t->ncmp > FC_ETCD_MAX_OPS || t->nsuccess > FC_ETCD_MAX_OPS || t->nfailure > FC_ETCD_MAX_OPS) {
    snprintf(err, errlen, "etcd Txn: more than %d compares or ops in a branch", FC_ETCD_MAX_OPS);
    return rc;
  }
  Etcdserverpb__TxnRequest *r = calloc(1, sizeof *r);
  if (!r) return FEDC_ERR_NOMEM;
  etcdserverpb__txn_request__init(r);
  if (t->ncmp) {
    if (!t->cmp || !(r->compare = calloc(t->ncmp, sizeof *r->compare))) {
      snprintf(err, errlen, "etcd Txn: compares missing or out of memory");
      goto out;
    }
    for (size_t i = 0; i < t->ncmp; i++) {
      if (!(r->compare[i] = cmp_build(&t->cmp[i], err, errlen))) goto out;
      r->n_compare = i + 1;
    }
  }
  if ((rc = ops_build(t->success, t->nsuccess, &r->success, &r->n_success, err, errlen)) != FEDC_OK ||
      (rc = ops_build(t->failure, t->nfailure, &r->failure, &r->n_failure, err, errlen)) != FEDC_OK)
    goto out;
  *out = r;
  r = NULL;
  rc = FEDC_OK;
out:
  fc_etcd_txn_request_free(r);
  return rc;
}

/* ---- responses ------------------------------------------------------------------ */

static int kv_copy(const Mvccpb__KeyValue *src, fc_etcd_kv *dst, char *err, size_t errlen) {
  if (src->value.len > FC_ETCD_MAX_VALUE) {
    snprintf(err, errlen, "etcd: value of %zu bytes is over the %d-byte limit", src->value.len, FC_ETCD_MAX_VALUE);
    return FEDC_ERR_PROTOCOL;
  }
  uint8_t *v = malloc(src->value.len + 1);
  if (!v) return FEDC_ERR_NOMEM;
  if (src->value.len) memcpy(v, src->value.data, src->value.len);
  v[src->value.len] = 0;
  memset(dst, 0, sizeof *dst);
  dst->found = 1;
  dst->create_revision = src->create_revision;
  dst->mod_revision = src->mod_revision;
  dst->version = src->version;
  dst->lease = src->lease;
  dst->value = v;
  dst->value_len = src->value.len;
  return FEDC_OK;
}

int fc_etcd_txn_parse(const fc_etcd_txn *t, const Etcdserverpb__TxnResponse *resp, fc_etcd_txn_result *out, char *err,
                      size_t errlen) {
  static const int want[] = {0, ETCDSERVERPB__RESPONSE_OP__RESPONSE_RESPONSE_RANGE,
                             ETCDSERVERPB__RESPONSE_OP__RESPONSE_RESPONSE_PUT,
                             ETCDSERVERPB__RESPONSE_OP__RESPONSE_RESPONSE_DELETE_RANGE};
  fc_etcd_txn_result r;
  memset(&r, 0, sizeof r);
  int rc = FEDC_ERR_PROTOCOL;
  if (!resp->header) {
    snprintf(err, errlen, "etcd: Txn response without a header");
    goto out;
  }
  const fc_etcd_op *ops = resp->succeeded ? t->success : t->failure;
  size_t nops = resp->succeeded ? t->nsuccess : t->nfailure;
  if (resp->n_responses != nops || nops > FC_ETCD_MAX_OPS) {
    snprintf(err, errlen, "etcd: Txn answered %zu ops where the %s branch has %zu", resp->n_responses,
             resp->succeeded ? "success" : "failure", nops);
    goto out;
  }
  for (size_t i = 0; i < nops; i++) {
    const Etcdserverpb__ResponseOp *ro = resp->responses[i];
    if (!ro || ops[i].kind < FC_ETCD_GET || ops[i].kind > FC_ETCD_DEL || (int)ro->response_case != want[ops[i].kind]) {
      snprintf(err, errlen, "etcd: Txn response %zu is not of the kind of op %zu", i, i);
      goto out;
    }
    if (ops[i].kind == FC_ETCD_GET) {
      const Etcdserverpb__RangeResponse *rr = ro->response_range;
      if (!rr) {
        snprintf(err, errlen, "etcd: Txn range response %zu is empty", i);
        goto out;
      }
      if (rr->n_kvs > 0 && (rc = kv_copy(rr->kvs[0], &r.kv[i], err, errlen)) != FEDC_OK) goto out;
      rc = FEDC_ERR_PROTOCOL;
    }
  }
  r.succeeded = resp->succeeded ? 1 : 0;
  r.revision = resp->header->revision;
  r.nkv = nops;
  *out = r;
  memset(&r, 0, sizeof r);
  rc = FEDC_OK;
out:
  fc_etcd_txn_result_clear(&r);
  return rc;
}

/* ---- calls ---------------------------------------------------------------------- */

static int translate(const fc_status *st, const char *method, const char *endpoint, char *err, size_t errlen) {
  int rc;
  switch (st->code) {
  case GRPC_STATUS_OK: return FEDC_OK;
  case GRPC_STATUS_UNAVAILABLE: rc = FEDC_ERR_UNAVAILABLE; break;
  case GRPC_STATUS_DEADLINE_EXCEEDED: rc = FEDC_ERR_TIMEOUT; break;
  case GRPC_STATUS_NOT_FOUND: rc = FEDC_ERR_NOT_FOUND; break;
  case GRPC_STATUS_PERMISSION_DENIED:
  case GRPC_STATUS_UNAUTHENTICATED: rc = FEDC_ERR_PERMISSION; break;
  case GRPC_STATUS_INVALID_ARGUMENT:
  case GRPC_STATUS_FAILED_PRECONDITION:
  case GRPC_STATUS_OUT_OF_RANGE: rc = FEDC_ERR_REJECTED; break;
  default: rc = FEDC_ERR_PROTOCOL; break;
  }
  snprintf(err, errlen, "etcd %s at %s: %s (gRPC status %d)", method, endpoint,
           st->detail[0] ? st->detail : "no detail", st->code);
  return rc;
}

static uint64_t call_clock_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

/* A unary call, first on `current` (the endpoint that answered last), then
 * on each other one once, while the answer is UNAVAILABLE (refused, down, or
 * a member without quorum: nothing was applied) or, for an idempotent call
 * (Range, LeaseGrant, LeaseKeepAlive, a Txn without writes), a timeout. All
 * attempts of one call end within FC_ETCD_CALL_BUDGET attempts' time.
 *
 * A timeout moves `current` to the next endpoint whatever the call: a member
 * that is black-holed or cut off in a minority times out instead of
 * refusing, and if we stayed on it every keep-alive, grant and campaign
 * would time out there while the majority is healthy (the leader deposed
 * after a TTL, no replica able to win). A write that timed out is not
 * repeated here (it may have applied; its caller steps down, leader.c): only
 * the next call goes elsewhere. */
static int call(fc_etcd *e, const char *path, const ProtobufCMessage *req, const ProtobufCMessageDescriptor *desc,
                int idempotent, ProtobufCMessage **resp, char *err, size_t errlen) {
  size_t start = atomic_load(&e->current);
  int rc = FEDC_ERR_UNAVAILABLE;
  const char *method = strrchr(path, '/') + 1;
  uint64_t t0 = call_clock_ms(), budget = (uint64_t)e->timeout_ms * FC_ETCD_CALL_BUDGET;
  for (size_t k = 0; k < e->n; k++) {
    size_t i = (start + k) % e->n;
    uint64_t spent = call_clock_ms() - t0;
    if (k > 0 && spent >= budget) break;
    int attempt_ms = budget - spent < (uint64_t)e->timeout_ms ? (int)(budget - spent) : e->timeout_ms;
    fc_status st;
    memset(&st, 0, sizeof st);
    ProtobufCMessage *m = NULL;
    if (!e->ch[i] && (rc = channel_open(e, i, err, errlen)) != FEDC_OK) continue;
    int crc = fc_call_unary(e->ch[i], path, req, desc, &m, attempt_ms, &st);
    if (crc == FEDC_OK && m) {
      atomic_store(&e->current, i);
      atomic_store(&e->last_answered, i);
      atomic_store(&e->answered, 1);
      *resp = m;
      return FEDC_OK;
    }
    if (m) protobuf_c_message_free_unpacked(m, NULL);
    if (st.code == GRPC_STATUS_OK) { /* a transport-level failure with no status: treat as this endpoint down */
      st.code = GRPC_STATUS_UNAVAILABLE;
      snprintf(st.detail, sizeof st.detail, "call failed (fedc error %d)", crc);
    }
    rc = translate(&st, method, e->endpoint[i], err, errlen);
    if (st.code == GRPC_STATUS_DEADLINE_EXCEEDED) {
      atomic_store(&e->current, (i + 1) % e->n); /* the next call starts elsewhere */
      if (!idempotent) return rc;
      continue;
    }
    if (st.code != GRPC_STATUS_UNAVAILABLE) { /* an answer (an error, but from a member that is there) */
      atomic_store(&e->current, i);
      atomic_store(&e->last_answered, i);
      atomic_store(&e->answered, 1);
      return rc;
    }
    /* A channel that failed to connect backs off for longer than a lease
     * lives (measured: one that first met a closed port had not reconnected
     * 10 s after etcd listened): start over with a fresh one next time. */
    fc_channel_destroy(e->ch[i]);
    e->ch[i] = NULL;
  }
  return rc;
}

#define KV_PATH "/etcdserverpb.KV/"
#define LEASE_PATH "/etcdserverpb.Lease/"

/* A linearizable Range; *r has a header (else FEDC_ERR_PROTOCOL, *r freed). */
static int range(fc_etcd *e, Etcdserverpb__RangeRequest *q, Etcdserverpb__RangeResponse **r, char *err,
                 size_t errlen) {
  int rc = call(e, KV_PATH "Range", &q->base, &etcdserverpb__range_response__descriptor, 1, (ProtobufCMessage **)r,
                err, errlen);
  if (rc != FEDC_OK) return rc;
  if ((*r)->header) return FEDC_OK;
  snprintf(err, errlen, "etcd: Range response without a header");
  protobuf_c_message_free_unpacked(&(*r)->base, NULL);
  *r = NULL;
  return FEDC_ERR_PROTOCOL;
}

int fc_etcd_get(fc_etcd *e, const char *key, fc_etcd_kv *out, int64_t *revision, char *err, size_t errlen) {
  Etcdserverpb__RangeRequest q = ETCDSERVERPB__RANGE_REQUEST__INIT;
  q.key = bin_str(key);
  Etcdserverpb__RangeResponse *r = NULL;
  fc_etcd_kv kv;
  memset(&kv, 0, sizeof kv);
  int rc = range(e, &q, &r, err, errlen);
  if (rc != FEDC_OK) return rc;
  rc = FEDC_ERR_PROTOCOL;
  if (r->n_kvs > 0 && (rc = kv_copy(r->kvs[0], &kv, err, errlen)) != FEDC_OK) goto out;
  if (revision) *revision = r->header->revision;
  *out = kv;
  memset(&kv, 0, sizeof kv);
  rc = FEDC_OK;
out:
  fc_etcd_kv_clear(&kv);
  protobuf_c_message_free_unpacked(&r->base, NULL);
  return rc;
}

int fc_etcd_get_prefix(fc_etcd *e, const char *prefix, fc_etcd_entry *out, size_t cap, size_t *n, char *err,
                       size_t errlen) {
  char end[300];
  size_t plen = strlen(prefix);
  *n = 0;
  /* range_end = the prefix with its last byte + 1: every key starting with it. */
  if (plen == 0 || plen >= sizeof end || (unsigned char)prefix[plen - 1] == 0xff || cap == 0) {
    snprintf(err, errlen, "etcd: bad prefix for a range read");
    return FEDC_ERR_INVALID;
  }
  memcpy(end, prefix, plen);
  end[plen - 1]++;
  Etcdserverpb__RangeRequest q = ETCDSERVERPB__RANGE_REQUEST__INIT;
  q.key = bin_str(prefix);
  q.range_end = bin(end, plen);
  q.limit = (int64_t)cap;
  Etcdserverpb__RangeResponse *r = NULL;
  int rc = range(e, &q, &r, err, errlen);
  if (rc != FEDC_OK) return rc;
  rc = FEDC_ERR_PROTOCOL;
  size_t k = 0;
  for (size_t i = 0; i < r->n_kvs && k < cap; i++) {
    const Mvccpb__KeyValue *src = r->kvs[i];
    if (src->key.len >= sizeof out[k].key) continue; /* not one of ours */
    memset(&out[k], 0, sizeof out[k]);
    memcpy(out[k].key, src->key.data, src->key.len);
    out[k].key[src->key.len] = 0;
    if ((rc = kv_copy(src, &out[k].kv, err, errlen)) != FEDC_OK) {
      for (size_t j = 0; j < k; j++) fc_etcd_kv_clear(&out[j].kv);
      goto out;
    }
    k++;
  }
  *n = k;
  rc = FEDC_OK;
out:
  protobuf_c_message_free_unpacked(&r->base, NULL);
  return rc;
}

int fc_etcd_put(fc_etcd *e, const char *key, const void *value, size_t len, int64_t lease, int64_t *revision,
                char *err, size_t errlen) {
  Etcdserverpb__PutRequest q = ETCDSERVERPB__PUT_REQUEST__INIT;
  q.key = bin_str(key);
  q.value = bin(value, value ? len : 0);
  q.lease = lease;
  Etcdserverpb__PutResponse *r = NULL;
  int rc = call(e, KV_PATH "Put", &q.base, &etcdserverpb__put_response__descriptor, 0, (ProtobufCMessage **)&r,
                err, errlen);
  if (rc != FEDC_OK) return rc;
  if (!r->header) {
    snprintf(err, errlen, "etcd: Put response without a header");
    rc = FEDC_ERR_PROTOCOL;
  } else if (revision)
    *revision = r->header->revision;
  protobuf_c_message_free_unpacked(&r->base, NULL);
  return rc;
}

/* A Txn whose branches only read may be sent again after a timeout; one that
 * writes may have applied (a repeated grant only leaves a spare lease to
 * expire, so LeaseGrant counts as idempotent; a repeated Put would not). */
static int txn_read_only(const fc_etcd_txn *t) {
  for (size_t i = 0; i < t->nsuccess; i++)
    if (t->success[i].kind != FC_ETCD_GET) return 0;
  for (size_t i = 0; i < t->nfailure; i++)
    if (t->failure[i].kind != FC_ETCD_GET) return 0;
  return 1;
}

int fc_etcd_txn_call(fc_etcd *e, const fc_etcd_txn *t, fc_etcd_txn_result *out, char *err, size_t errlen) {
  Etcdserverpb__TxnRequest *q = NULL;
  Etcdserverpb__TxnResponse *r = NULL;
  int rc = fc_etcd_txn_build(t, &q, err, errlen);
  if (rc != FEDC_OK) return rc;
  if ((rc = call(e, KV_PATH "Txn", &q->base, &etcdserverpb__txn_response__descriptor, txn_read_only(t),
                 (ProtobufCMessage **)&r, err, errlen)) == FEDC_OK)
    rc = fc_etcd_txn_parse(t, r, out, err, errlen);
  if (r) protobuf_c_message_free_unpacked(&r->base, NULL);
  fc_etcd_txn_request_free(q);
  return rc;
}

int fc_etcd_lease_grant(fc_etcd *e, int64_t ttl_s, int64_t *id, int64_t *granted_ttl, char *err, size_t errlen) {
  Etcdserverpb__LeaseGrantRequest q = ETCDSERVERPB__LEASE_GRANT_REQUEST__INIT;
  q.ttl = ttl_s;
  Etcdserverpb__LeaseGrantResponse *r = NULL;
  int rc = call(e, LEASE_PATH "LeaseGrant", &q.base, &etcdserverpb__lease_grant_response__descriptor, 1,
                (ProtobufCMessage **)&r, err, errlen);
  if (rc != FEDC_OK) return rc;
  if (r->error && r->error[0]) {
    snprintf(err, errlen, "etcd LeaseGrant: %s", r->error);
    rc = FEDC_ERR_REJECTED;
  } else if (r->id == 0 || r->ttl <= 0) {
    snprintf(err, errlen, "etcd LeaseGrant: no lease in the answer (id %lld, ttl %lld)", (long long)r->id,
             (long long)r->ttl);
    rc = FEDC_ERR_PROTOCOL;
  } else {
    *id = r->id;
    if (granted_ttl) *granted_ttl = r->ttl;
  }
  protobuf_c_message_free_unpacked(&r->base, NULL);
  return rc;
}

int fc_etcd_lease_keepalive(fc_etcd *e, int64_t id, int64_t *ttl_left, char *err, size_t errlen) {
  Etcdserverpb__LeaseKeepAliveRequest q = ETCDSERVERPB__LEASE_KEEP_ALIVE_REQUEST__INIT;
  q.id = id;
  Etcdserverpb__LeaseKeepAliveResponse *r = NULL;
  int rc = call(e, LEASE_PATH "LeaseKeepAlive", &q.base, &etcdserverpb__lease_keep_alive_response__descriptor, 1,
                (ProtobufCMessage **)&r, err, errlen);
  if (rc != FEDC_OK) return rc;
  if (r->id != id) {
    snprintf(err, errlen, "etcd LeaseKeepAlive: answer for lease %llx, asked %llx", (unsigned long long)r->id,
             (unsigned long long)id);
    rc = FEDC_ERR_PROTOCOL;
  } else if (r->ttl <= 0) { /* etcd's way of saying the lease is gone */
    snprintf(err, errlen, "etcd lease %llx has expired or was revoked", (unsigned long long)id);
    rc = FEDC_ERR_NOT_FOUND;
  } else if (ttl_left)
    *ttl_left = r->ttl;
  protobuf_c_message_free_unpacked(&r->base, NULL);
  return rc;
}

int fc_etcd_lease_revoke(fc_etcd *e, int64_t id, char *err, size_t errlen) {
  Etcdserverpb__LeaseRevokeRequest q = ETCDSERVERPB__LEASE_REVOKE_REQUEST__INIT;
  q.id = id;
  Etcdserverpb__LeaseRevokeResponse *r = NULL;
  int rc = call(e, LEASE_PATH "LeaseRevoke", &q.base, &etcdserverpb__lease_revoke_response__descriptor, 0,
                (ProtobufCMessage **)&r, err, errlen);
  if (rc != FEDC_OK) return rc;
  protobuf_c_message_free_unpacked(&r->base, NULL);
  return FEDC_OK;
}
