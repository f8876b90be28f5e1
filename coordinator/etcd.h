/*
 * etcd.h - a small etcd v3 client over fedc's gRPC transport (transport.h)
 * and the C generated at build time from etcd's own rpc.proto (see
 * cmake/etcd_proto_strip.cmake): Range, Put, Txn, LeaseGrant,
 * LeaseKeepAlive and LeaseRevoke, which is all leader election and fencing
 * need (coordinator/leader.c).
 *
 * Owns: one gRPC channel per endpoint, the index of the endpoint that last
 * answered. Every call has a deadline (opts.timeout_ms per attempt, and all
 * attempts of one call within FC_ETCD_CALL_BUDGET x timeout_ms). A call that
 * ends UNAVAILABLE (endpoint down, or a member without quorum: etcd says "no
 * leader" with that code) is tried on the next endpoint, once each. A
 * DEADLINE_EXCEEDED (a black-holed member, or one cut off in a minority)
 * makes the next call start at the next endpoint; an idempotent call (Range,
 * LeaseGrant, LeaseKeepAlive, a Txn that only reads) also goes on to it at
 * once, while a Put, LeaseRevoke or writing Txn returns the timeout (it may
 * have been applied, so it is not blindly repeated elsewhere). Any other
 * status is the answer.
 * Transport: mutual TLS with files from `fedc pki` (etcd started with
 * --client-cert-auth), or plaintext, refused unless every endpoint is a
 * loopback address (transport.h's rule for insecure channels).
 * May call: transport.h, the generated etcdserverpb / mvccpb code. Nothing in
 * the coordinator. One thread at a time per handle (a channel that failed is
 * replaced by a fresh one at its next call): give each thread its own.
 *
 * The request builders and response parsers are exposed (fc_etcd_txn_build,
 * fc_etcd_txn_parse, fc_etcd_endpoints_parse) so they are unit-tested without
 * a server.
 */
#ifndef FEDC_COORD_ETCD_H
#define FEDC_COORD_ETCD_H

#include <stddef.h>
#include <stdint.h>

#include "etcd/etcdserver/etcdserverpb/rpc.pb-c.h"
#include "transport/transport.h"

#define FC_ETCD_MAX_ENDPOINTS 7
#define FC_ETCD_MAX_OPS 8          /* compares, and ops per branch, in one Txn */
#define FC_ETCD_MAX_VALUE 65536    /* largest value we read back (pointers and small state only) */
#define FC_ETCD_MAX_RECV (1 << 20) /* largest response accepted from etcd */
#define FC_ETCD_CALL_BUDGET 2      /* one call, every attempt included, ends within this many timeout_ms */

typedef struct fc_etcd_opts {
  const char *endpoints; /* "127.0.0.1:2379,127.0.0.1:22379" (an http:// or https:// prefix is dropped) */
  fc_tls_files tls;      /* all three set: mutual TLS; all NULL: plaintext, loopback endpoints only */
  int timeout_ms;        /* deadline of each attempt (default 2000) */
} fc_etcd_opts;

typedef struct fc_etcd fc_etcd;

void fc_etcd_opts_init(fc_etcd_opts *o);
/* Parses the endpoint list and creates the channels (no connection yet). */
int fc_etcd_open(const fc_etcd_opts *o, fc_etcd **out, char *err, size_t errlen);
void fc_etcd_close(fc_etcd *e); /* accepts NULL */
/* 1 with one line in why if o's client certificate is issued by our
 * federation's CA (federation_ca, a PEM path): etcd trusts that CA then, so
 * every device certificate of the federation can read and write its keys
 * (the election, the model pointer, the aggregator registry) unless etcd's
 * own auth is on. 0 otherwise (no TLS, another CA, unreadable files). */
int fc_etcd_shared_ca(const fc_etcd_opts *o, const char *federation_ca, char *why, size_t whylen);
/* The endpoint that answered last ("" before any answer). */
const char *fc_etcd_endpoint(const fc_etcd *e);

/* Splits "a,b,c" into host:port strings (scheme dropped, spaces trimmed).
 * FEDC_ERR_INVALID with one line in err: empty list, empty item, more than
 * FC_ETCD_MAX_ENDPOINTS, an item without a port or longer than 255. */
int fc_etcd_endpoints_parse(const char *list, char out[][256], size_t *n, char *err, size_t errlen);

/* One key as read back (copied out of the response; free with fc_etcd_kv_clear). */
typedef struct fc_etcd_kv {
  int found;
  int64_t create_revision, mod_revision, version, lease;
  uint8_t *value; /* NUL-terminated for convenience; value_len excludes it */
  size_t value_len;
} fc_etcd_kv;
void fc_etcd_kv_clear(fc_etcd_kv *kv);

enum fc_etcd_cmp_target { FC_ETCD_CMP_CREATE = 1, FC_ETCD_CMP_MOD, FC_ETCD_CMP_VERSION, FC_ETCD_CMP_VALUE };
enum fc_etcd_cmp_result { FC_ETCD_EQ = 0, FC_ETCD_GT, FC_ETCD_LT, FC_ETCD_NE };
typedef struct fc_etcd_cmp {
  const char *key;
  int target;   /* fc_etcd_cmp_target */
  int result;   /* fc_etcd_cmp_result: key's <target> <result> operand */
  int64_t num;  /* operand of CREATE / MOD / VERSION (a revision; 0 = the key does not exist) */
  const void *value; /* operand of VALUE */
  size_t value_len;
} fc_etcd_cmp;

enum fc_etcd_op_kind { FC_ETCD_GET = 1, FC_ETCD_PUT, FC_ETCD_DEL };
typedef struct fc_etcd_op {
  int kind;     /* fc_etcd_op_kind */
  const char *key;
  const void *value; /* PUT */
  size_t value_len;
  int64_t lease;     /* PUT: attach to this lease (0 = none) */
} fc_etcd_op;

typedef struct fc_etcd_txn {
  const fc_etcd_cmp *cmp;
  size_t ncmp;
  const fc_etcd_op *success, *failure;
  size_t nsuccess, nfailure;
} fc_etcd_txn;

typedef struct fc_etcd_txn_result {
  int succeeded;
  int64_t revision;                /* the store's revision after the Txn (header) */
  size_t nkv;                      /* = ops of the branch that ran */
  fc_etcd_kv kv[FC_ETCD_MAX_OPS];  /* GET ops: the key read; others: found = 0 */
} fc_etcd_txn_result;
void fc_etcd_txn_result_clear(fc_etcd_txn_result *r);

/* Builds the request (every field points into t: keep t alive until freed
 * with fc_etcd_txn_request_free). FEDC_ERR_INVALID for too many compares or
 * ops, a NULL key, an unknown target / result / kind. */
int fc_etcd_txn_build(const fc_etcd_txn *t, Etcdserverpb__TxnRequest **out, char *err, size_t errlen);
void fc_etcd_txn_request_free(Etcdserverpb__TxnRequest *r);
/* Reads a TxnResponse for the Txn t it answers: FEDC_ERR_PROTOCOL if the
 * header is missing, the number of responses or any response's kind does not
 * match the branch etcd says it ran, or a value is over FC_ETCD_MAX_VALUE. */
int fc_etcd_txn_parse(const fc_etcd_txn *t, const Etcdserverpb__TxnResponse *resp, fc_etcd_txn_result *out, char *err,
                      size_t errlen);

/* ---- calls (FEDC_OK, or FEDC_ERR_UNAVAILABLE / _TIMEOUT / _PROTOCOL / ... with one line in err) ---- */
int fc_etcd_get(fc_etcd *e, const char *key, fc_etcd_kv *out, int64_t *revision, char *err, size_t errlen);
/* Every key under `prefix` (at most cap, in key order): keys and values
 * copied out; free each .kv with fc_etcd_kv_clear. Keys of 256 bytes or more
 * are skipped. The aggregator registry (coordinator/agg_tier.h). */
typedef struct fc_etcd_entry {
  char key[256];
  fc_etcd_kv kv;
} fc_etcd_entry;
int fc_etcd_get_prefix(fc_etcd *e, const char *prefix, fc_etcd_entry *out, size_t cap, size_t *n, char *err,
                       size_t errlen);
int fc_etcd_put(fc_etcd *e, const char *key, const void *value, size_t len, int64_t lease, int64_t *revision,
                char *err, size_t errlen);
int fc_etcd_txn_call(fc_etcd *e, const fc_etcd_txn *t, fc_etcd_txn_result *out, char *err, size_t errlen);
/* A lease of ttl_s seconds: *id and the TTL etcd granted. */
int fc_etcd_lease_grant(fc_etcd *e, int64_t ttl_s, int64_t *id, int64_t *granted_ttl, char *err, size_t errlen);
/* One keep-alive (a LeaseKeepAlive stream carrying one request and one
 * response). FEDC_ERR_NOT_FOUND if the lease has expired or was revoked. */
int fc_etcd_lease_keepalive(fc_etcd *e, int64_t id, int64_t *ttl_left, char *err, size_t errlen);
int fc_etcd_lease_revoke(fc_etcd *e, int64_t id, char *err, size_t errlen);

#endif
