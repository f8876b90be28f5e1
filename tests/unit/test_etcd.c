/*
 * test_etcd.c - coordinator/etcd.c: endpoint lists, Txn requests built and
 * read back through protobuf-c, Txn responses that do not match their
 * request refused, then every call against a real `etcd` on 127.0.0.1 (one
 * member on free ports, started here; that part is skipped with a message if
 * no etcd binary is installed): Put / Range, the create-if-absent Txn of an
 * election, a value compare, leases (grant, keep-alive, revoke, keys gone
 * with it), a dead endpoint skipped for the next one, a silent (black-holed)
 * one left for the next, and every endpoint dead.
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "check.h"
#include "etcd_harness.h"
#include "coordinator/etcd.h"
#include "fedc/error.h"
#include "tests/support/testsvc.h"

static void test_endpoints(void) {
  char eps[FC_ETCD_MAX_ENDPOINTS][256], err[256];
  size_t n = 0;
  CHECK_EQ_INT(fc_etcd_endpoints_parse("127.0.0.1:2379, http://127.0.0.1:22379 ,https://e3:1", eps, &n, err,
                                       sizeof err),
               FEDC_OK);
  CHECK_EQ_INT(n, 3);
  CHECK(strcmp(eps[0], "127.0.0.1:2379") == 0);
  CHECK(strcmp(eps[1], "127.0.0.1:22379") == 0);
  CHECK(strcmp(eps[2], "e3:1") == 0);
  CHECK_EQ_INT(fc_etcd_endpoints_parse("", eps, &n, err, sizeof err), FEDC_ERR_INVALID);
  CHECK_EQ_INT(fc_etcd_endpoints_parse("a:1,,b:2", eps, &n, err, sizeof err), FEDC_ERR_INVALID);
  CHECK(strstr(err, "empty endpoint") != NULL);
  CHECK_EQ_INT(fc_etcd_endpoints_parse("127.0.0.1", eps, &n, err, sizeof err), FEDC_ERR_INVALID);
  CHECK(strstr(err, "needs a port") != NULL);
  CHECK_EQ_INT(fc_etcd_endpoints_parse("h:99999", eps, &n, err, sizeof err), FEDC_ERR_INVALID);
  CHECK_EQ_INT(fc_etcd_endpoints_parse("a:1,a:2,a:3,a:4,a:5,a:6,a:7,a:8", eps, &n, err, sizeof err),
               FEDC_ERR_INVALID);
  CHECK(strstr(err, "more than") != NULL);

  fc_etcd_opts o;
  fc_etcd_opts_init(&o);
  fc_etcd *e = NULL;
  o.endpoints = "10.1.2.3:2379";
  CHECK_EQ_INT(fc_etcd_open(&o, &e, err, sizeof err), FEDC_ERR_INVALID);
  CHECK(strstr(err, "not a loopback") != NULL);
  o.endpoints = "127.0.0.1:2379";
  o.tls.ca = "/nonexistent/ca.pem";
  CHECK_EQ_INT(fc_etcd_open(&o, &e, err, sizeof err), FEDC_ERR_INVALID);
  CHECK(strstr(err, "together") != NULL);
  CHECK(e == NULL);
}

/* The election's create-if-absent Txn, packed and unpacked as etcd would read it. */
static void test_txn_build(void) {
  char err[256];
  fc_etcd_cmp cmp[2] = {{.key = "/f/leader", .target = FC_ETCD_CMP_CREATE, .result = FC_ETCD_EQ, .num = 0},
                        {.key = "/f/ptr", .target = FC_ETCD_CMP_VALUE, .result = FC_ETCD_NE, .value = "v7",
                         .value_len = 2}};
  fc_etcd_op succ[2] = {{.kind = FC_ETCD_PUT, .key = "/f/leader", .value = "r1", .value_len = 2, .lease = 0x1234},
                        {.kind = FC_ETCD_DEL, .key = "/f/old"}};
  fc_etcd_op fail[1] = {{.kind = FC_ETCD_GET, .key = "/f/leader"}};
  fc_etcd_txn t = {cmp, 2, succ, fail, 2, 1};
  Etcdserverpb__TxnRequest *q = NULL;
  CHECK_EQ_INT(fc_etcd_txn_build(&t, &q, err, sizeof err), FEDC_OK);
  size_t len = protobuf_c_message_get_packed_size(&q->base);
  uint8_t *buf = malloc(len);
  protobuf_c_message_pack(&q->base, buf);
  Etcdserverpb__TxnRequest *u = etcdserverpb__txn_request__unpack(NULL, len, buf);
  CHECK(u != NULL);
  if (u) {
    CHECK_EQ_INT(u->n_compare, 2);
    CHECK_EQ_INT(u->compare[0]->target, ETCDSERVERPB__COMPARE__COMPARE_TARGET__CREATE);
    CHECK_EQ_INT(u->compare[0]->result, ETCDSERVERPB__COMPARE__COMPARE_RESULT__EQUAL);
    CHECK_EQ_INT(u->compare[0]->target_union_case, ETCDSERVERPB__COMPARE__TARGET_UNION_CREATE_REVISION);
    CHECK_EQ_INT(u->compare[0]->create_revision, 0);
    CHECK(u->compare[0]->key.len == 9 && memcmp(u->compare[0]->key.data, "/f/leader", 9) == 0);
    CHECK_EQ_INT(u->compare[1]->target, ETCDSERVERPB__COMPARE__COMPARE_TARGET__VALUE);
    CHECK_EQ_INT(u->compare[1]->result, ETCDSERVERPB__COMPARE__COMPARE_RESULT__NOT_EQUAL);
    CHECK(u->compare[1]->value.len == 2 && memcmp(u->compare[1]->value.data, "v7", 2) == 0);
    CHECK_EQ_INT(u->n_success, 2);
    CHECK_EQ_INT(u->success[0]->request_case, ETCDSERVERPB__REQUEST_OP__REQUEST_REQUEST_PUT);
    CHECK_EQ_INT(u->success[0]->request_put->lease, 0x1234);
    CHECK(u->success[0]->request_put->value.len == 2);
    CHECK_EQ_INT(u->success[1]->request_case, ETCDSERVERPB__REQUEST_OP__REQUEST_REQUEST_DELETE_RANGE);
    CHECK_EQ_INT(u->n_failure, 1);
    CHECK_EQ_INT(u->failure[0]->request_case, ETCDSERVERPB__REQUEST_OP__REQUEST_REQUEST_RANGE);
    etcdserverpb__txn_request__free_unpacked(u, NULL);
  }
  free(buf);
  fc_etcd_txn_request_free(q);

  /* refused before anything is sent */
  fc_etcd_op bad = {.kind = 9, .key = "k"};
  fc_etcd_txn tb = {NULL, 0, &bad, NULL, 1, 0};
  q = NULL;
  CHECK_EQ_INT(fc_etcd_txn_build(&tb, &q, err, sizeof err), FEDC_ERR_INVALID);
  CHECK(q == NULL);
  fc_etcd_op nokey = {.kind = FC_ETCD_PUT};
  tb.success = &nokey;
  CHECK_EQ_INT(fc_etcd_txn_build(&tb, &q, err, sizeof err), FEDC_ERR_INVALID);
  fc_etcd_cmp badcmp = {.key = "k", .target = 0};
  fc_etcd_txn tc = {&badcmp, 1, NULL, NULL, 0, 0};
  CHECK_EQ_INT(fc_etcd_txn_build(&tc, &q, err, sizeof err), FEDC_ERR_INVALID);
  fc_etcd_op many[FC_ETCD_MAX_OPS + 1];
  for (int i = 0; i < FC_ETCD_MAX_OPS + 1; i++) many[i] = (fc_etcd_op){.kind = FC_ETCD_GET, .key = "k"};
  fc_etcd_txn tm = {NULL, 0, many, NULL, FC_ETCD_MAX_OPS + 1, 0};
  CHECK_EQ_INT(fc_etcd_txn_build(&tm, &q, err, sizeof err), FEDC_ERR_INVALID);
  CHECK(q == NULL);
}

/* Responses built by hand as etcd would send them, then broken one way each. */
static void test_txn_parse(void) {
  char err[256];
  fc_etcd_op succ[1] = {{.kind = FC_ETCD_PUT, .key = "k", .value = "v", .value_len = 1}};
  fc_etcd_op fail[2] = {{.kind = FC_ETCD_GET, .key = "k"}, {.kind = FC_ETCD_GET, .key = "absent"}};
  fc_etcd_txn t = {NULL, 0, succ, fail, 1, 2};

  Etcdserverpb__ResponseHeader h = ETCDSERVERPB__RESPONSE_HEADER__INIT;
  h.revision = 42;
  Mvccpb__KeyValue kv = MVCCPB__KEY_VALUE__INIT;
  kv.key.data = (uint8_t *)"k";
  kv.key.len = 1;
  kv.value.data = (uint8_t *)"replica-a";
  kv.value.len = 9;
  kv.create_revision = 17;
  kv.lease = 99;
  Mvccpb__KeyValue *kvs[1] = {&kv};
  Etcdserverpb__RangeResponse rr1 = ETCDSERVERPB__RANGE_RESPONSE__INIT, rr2 = ETCDSERVERPB__RANGE_RESPONSE__INIT;
  rr1.n_kvs = 1;
  rr1.kvs = kvs;
  Etcdserverpb__ResponseOp ro1 = ETCDSERVERPB__RESPONSE_OP__INIT, ro2 = ETCDSERVERPB__RESPONSE_OP__INIT;
  ro1.response_case = ETCDSERVERPB__RESPONSE_OP__RESPONSE_RESPONSE_RANGE;
  ro1.response_range = &rr1;
  ro2.response_case = ETCDSERVERPB__RESPONSE_OP__RESPONSE_RESPONSE_RANGE;
  ro2.response_range = &rr2;
  Etcdserverpb__ResponseOp *ros[2] = {&ro1, &ro2};
  Etcdserverpb__TxnResponse r = ETCDSERVERPB__TXN_RESPONSE__INIT;
  r.header = &h;
  r.succeeded = 0;
  r.n_responses = 2;
  r.responses = ros;

  fc_etcd_txn_result res;
  memset(&res, 0, sizeof res);
  CHECK_EQ_INT(fc_etcd_txn_parse(&t, &r, &res, err, sizeof err), FEDC_OK);
  CHECK_EQ_INT(res.succeeded, 0);
  CHECK_EQ_INT(res.revision, 42);
  CHECK_EQ_INT(res.nkv, 2);
  CHECK_EQ_INT(res.kv[0].found, 1);
  CHECK_EQ_INT(res.kv[0].create_revision, 17);
  CHECK_EQ_INT(res.kv[0].lease, 99);
  CHECK(res.kv[0].value_len == 9 && strcmp((char *)res.kv[0].value, "replica-a") == 0);
  CHECK_EQ_INT(res.kv[1].found, 0);
  fc_etcd_txn_result_clear(&res);

  /* etcd says the success branch ran but answers the failure branch's ops */
  r.succeeded = 1;
  CHECK_EQ_INT(fc_etcd_txn_parse(&t, &r, &res, err, sizeof err), FEDC_ERR_PROTOCOL);
  CHECK(strstr(err, "success branch") != NULL);
  r.n_responses = 1; /* right count, wrong kind (a range answering a put) */
  CHECK_EQ_INT(fc_etcd_txn_parse(&t, &r, &res, err, sizeof err), FEDC_ERR_PROTOCOL);
  CHECK(strstr(err, "not of the kind") != NULL);
  r.succeeded = 0;
  r.n_responses = 2;
  r.header = NULL;
  CHECK_EQ_INT(fc_etcd_txn_parse(&t, &r, &res, err, sizeof err), FEDC_ERR_PROTOCOL);
  r.header = &h;
  ro1.response_range = NULL;
  CHECK_EQ_INT(fc_etcd_txn_parse(&t, &r, &res, err, sizeof err), FEDC_ERR_PROTOCOL);
  ro1.response_range = &rr1;
  kv.value.len = FC_ETCD_MAX_VALUE + 1; /* never read: refused on the length */
  CHECK_EQ_INT(fc_etcd_txn_parse(&t, &r, &res, err, sizeof err), FEDC_ERR_PROTOCOL);
  CHECK(strstr(err, "over the") != NULL);
  CHECK_EQ_INT(res.nkv, 0); /* untouched on failure */
}

/* A member that accepts TCP but never answers (black-holed, or cut off in a
 * minority: calls time out instead of being refused), listed before the live
 * one. Reads, grants and keep-alives must reach the live member within the
 * same call; a Put that timed out is not repeated (it may have applied) but
 * the next call starts at the live member. On the code before the fix every
 * call went to the silent member again and timed out. */
static void test_blackholed_member(int cport) {
  int sport = 0, silent = ts_loopback_socket(1, &sport);
  CHECK(silent >= 0);
  char eps[128], live[64], err[512];
  snprintf(eps, sizeof eps, "127.0.0.1:%d,127.0.0.1:%d", sport, cport);
  snprintf(live, sizeof live, "127.0.0.1:%d", cport);
  fc_etcd_opts o;
  fc_etcd_opts_init(&o);
  o.endpoints = eps;
  o.timeout_ms = 300;
  fc_etcd *e = NULL;
  CHECK_EQ_INT(fc_etcd_open(&o, &e, err, sizeof err), FEDC_OK);
  if (!e) goto out;
  fc_etcd_kv kv;
  memset(&kv, 0, sizeof kv);
  CHECK_EQ_INT(fc_etcd_get(e, "/fedc-test/hello", &kv, NULL, err, sizeof err), FEDC_OK);
  CHECK(kv.found && strcmp((char *)kv.value, "world") == 0);
  fc_etcd_kv_clear(&kv);
  CHECK(strcmp(fc_etcd_endpoint(e), live) == 0);
  fc_etcd_close(e);

  /* a keep-alive and a grant, each the first call of a fresh handle */
  int64_t lease = 0, ttl = 0, left = 0;
  CHECK_EQ_INT(fc_etcd_open(&o, &e, err, sizeof err), FEDC_OK);
  CHECK_EQ_INT(fc_etcd_lease_grant(e, 5, &lease, &ttl, err, sizeof err), FEDC_OK);
  fc_etcd_close(e);
  CHECK_EQ_INT(fc_etcd_open(&o, &e, err, sizeof err), FEDC_OK);
  CHECK_EQ_INT(fc_etcd_lease_keepalive(e, lease, &left, err, sizeof err), FEDC_OK);
  CHECK(left > 0);
  fc_etcd_close(e);

  /* a write times out and is not repeated; the next one goes to the live member */
  CHECK_EQ_INT(fc_etcd_open(&o, &e, err, sizeof err), FEDC_OK);
  int64_t rev = 0;
  CHECK_EQ_INT(fc_etcd_put(e, "/fedc-test/bh", "1", 1, 0, &rev, err, sizeof err), FEDC_ERR_TIMEOUT);
  CHECK(strstr(err, "etcd Put at 127.0.0.1:") != NULL);
  CHECK_EQ_INT(fc_etcd_put(e, "/fedc-test/bh", "2", 1, 0, &rev, err, sizeof err), FEDC_OK);
  CHECK(strcmp(fc_etcd_endpoint(e), live) == 0);
  CHECK_EQ_INT(fc_etcd_get(e, "/fedc-test/bh", &kv, NULL, err, sizeof err), FEDC_OK);
  CHECK(kv.found && kv.value_len == 1 && kv.value[0] == '2');
  CHECK_EQ_INT(kv.version, 1); /* the timed-out Put was never sent to the live member */
  fc_etcd_kv_clear(&kv);
  CHECK_EQ_INT(fc_etcd_lease_revoke(e, lease, err, sizeof err), FEDC_OK);
out:
  fc_etcd_close(e);
  if (silent >= 0) close(silent);
}

/* ---- against a real etcd ------------------------------------------------------------ */

static void test_real_etcd(void) {
  if (!etcd_installed()) {
    printf("SKIP real-etcd part: no etcd binary (apt-get install etcd-server)\n");
    return;
  }
  char dir[] = "/tmp/fedc-test-etcd-XXXXXX", data[600], err[512];
  if (!mkdtemp(dir)) {
    CHECK(0);
    return;
  }
  snprintf(data, sizeof data, "%s/data", dir);
  int cport = free_port(), pport = free_port(), dead = free_port();
  pid_t pid = start_etcd(data, cport, pport);
  CHECK(pid > 0);
  char eps[128];
  /* a dead endpoint first: every call must move on to the live one */
  snprintf(eps, sizeof eps, "127.0.0.1:%d,127.0.0.1:%d", dead, cport);
  fc_etcd_opts o;
  fc_etcd_opts_init(&o);
  o.endpoints = eps;
  o.timeout_ms = 1000;
  fc_etcd *e = NULL;
  CHECK_EQ_INT(fc_etcd_open(&o, &e, err, sizeof err), FEDC_OK);
  if (!e) goto out;
  int rc = FEDC_ERR_UNAVAILABLE;
  int64_t rev = 0;
  for (int i = 0; i < 100 && rc != FEDC_OK; i++) { /* etcd is up in about a second */
    rc = fc_etcd_put(e, "/fedc-test/hello", "world", 5, 0, &rev, err, sizeof err);
    if (rc != FEDC_OK) usleep(100 * 1000);
  }
  CHECK_EQ_INT(rc, FEDC_OK);
  if (rc != FEDC_OK) {
    fprintf(stderr, "etcd never answered: %s\n", err);
    char cmd[700];
    snprintf(cmd, sizeof cmd, "grep -E 'ready|serving|elected' '%s.log' >&2", data);
    if (system(cmd) != 0) fprintf(stderr, "no etcd log\n");
    goto out;
  }
  char live[64];
  snprintf(live, sizeof live, "127.0.0.1:%d", cport);
  CHECK(strcmp(fc_etcd_endpoint(e), live) == 0);
  CHECK(rev > 0);
  fc_etcd_kv kv;
  memset(&kv, 0, sizeof kv);
  CHECK_EQ_INT(fc_etcd_get(e, "/fedc-test/hello", &kv, NULL, err, sizeof err), FEDC_OK);
  CHECK(kv.found && kv.value_len == 5 && strcmp((char *)kv.value, "world") == 0);
  CHECK_EQ_INT(kv.mod_revision, rev);
  fc_etcd_kv_clear(&kv);
  CHECK_EQ_INT(fc_etcd_get(e, "/fedc-test/absent", &kv, NULL, err, sizeof err), FEDC_OK);
  CHECK_EQ_INT(kv.found, 0);

  /* a lease, and the election's create-if-absent Txn on a key attached to it */
  int64_t lease = 0, ttl = 0;
  CHECK_EQ_INT(fc_etcd_lease_grant(e, 5, &lease, &ttl, err, sizeof err), FEDC_OK);
  CHECK(lease != 0 && ttl == 5);
  fc_etcd_cmp absent = {.key = "/fedc-test/leader", .target = FC_ETCD_CMP_CREATE, .result = FC_ETCD_EQ, .num = 0};
  fc_etcd_op put_a = {.kind = FC_ETCD_PUT, .key = "/fedc-test/leader", .value = "a", .value_len = 1, .lease = lease};
  fc_etcd_op put_b = {.kind = FC_ETCD_PUT, .key = "/fedc-test/leader", .value = "b", .value_len = 1, .lease = lease};
  fc_etcd_op get = {.kind = FC_ETCD_GET, .key = "/fedc-test/leader"};
  fc_etcd_txn ta = {&absent, 1, &put_a, &get, 1, 1}, tb = {&absent, 1, &put_b, &get, 1, 1};
  fc_etcd_txn_result res;
  memset(&res, 0, sizeof res);
  CHECK_EQ_INT(fc_etcd_txn_call(e, &ta, &res, err, sizeof err), FEDC_OK);
  CHECK_EQ_INT(res.succeeded, 1);
  int64_t won_rev = res.revision;
  fc_etcd_txn_result_clear(&res);
  CHECK_EQ_INT(fc_etcd_txn_call(e, &tb, &res, err, sizeof err), FEDC_OK);
  CHECK_EQ_INT(res.succeeded, 0); /* taken: the failure branch reads who holds it */
  CHECK(res.kv[0].found && res.kv[0].value_len == 1 && res.kv[0].value[0] == 'a');
  CHECK_EQ_INT(res.kv[0].create_revision, won_rev);
  CHECK_EQ_INT(res.kv[0].lease, lease);
  fc_etcd_txn_result_clear(&res);

  /* fencing: a write guarded by the leader key's create_revision */
  fc_etcd_cmp fence = {.key = "/fedc-test/leader", .target = FC_ETCD_CMP_CREATE, .result = FC_ETCD_EQ, .num = won_rev};
  fc_etcd_op ptr = {.kind = FC_ETCD_PUT, .key = "/fedc-test/ptr", .value = "1", .value_len = 1};
  fc_etcd_txn tf = {&fence, 1, &ptr, NULL, 1, 0};
  CHECK_EQ_INT(fc_etcd_txn_call(e, &tf, &res, err, sizeof err), FEDC_OK);
  CHECK_EQ_INT(res.succeeded, 1);
  fc_etcd_txn_result_clear(&res);
  /* a value compare */
  fc_etcd_cmp is_one = {.key = "/fedc-test/ptr", .target = FC_ETCD_CMP_VALUE, .result = FC_ETCD_EQ, .value = "1",
                        .value_len = 1};
  fc_etcd_txn tv = {&is_one, 1, NULL, NULL, 0, 0};
  CHECK_EQ_INT(fc_etcd_txn_call(e, &tv, &res, err, sizeof err), FEDC_OK);
  CHECK_EQ_INT(res.succeeded, 1);
  is_one.value = "2";
  CHECK_EQ_INT(fc_etcd_txn_call(e, &tv, &res, err, sizeof err), FEDC_OK);
  CHECK_EQ_INT(res.succeeded, 0);

  int64_t left = 0;
  CHECK_EQ_INT(fc_etcd_lease_keepalive(e, lease, &left, err, sizeof err), FEDC_OK);
  CHECK(left > 0 && left <= 5);
  CHECK_EQ_INT(fc_etcd_lease_revoke(e, lease, err, sizeof err), FEDC_OK);
  CHECK_EQ_INT(fc_etcd_lease_keepalive(e, lease, &left, err, sizeof err), FEDC_ERR_NOT_FOUND);
  CHECK(strstr(err, "expired or was revoked") != NULL);
  CHECK_EQ_INT(fc_etcd_get(e, "/fedc-test/leader", &kv, NULL, err, sizeof err), FEDC_OK);
  CHECK_EQ_INT(kv.found, 0); /* gone with its lease */
  /* the deposed holder's fenced write now fails */
  CHECK_EQ_INT(fc_etcd_txn_call(e, &tf, &res, err, sizeof err), FEDC_OK);
  CHECK_EQ_INT(res.succeeded, 0);

  test_blackholed_member(cport);

  /* every endpoint dead: UNAVAILABLE, with the endpoint named */
  kill(pid, SIGKILL);
  waitpid(pid, NULL, 0);
  pid = -1;
  CHECK_EQ_INT(fc_etcd_get(e, "/fedc-test/hello", &kv, NULL, err, sizeof err), FEDC_ERR_UNAVAILABLE);
  CHECK(strstr(err, "etcd Range at 127.0.0.1:") != NULL);
out:
  fc_etcd_close(e);
  if (pid > 0) {
    kill(pid, SIGKILL);
    waitpid(pid, NULL, 0);
  }
  char cmd[700];
  snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
  if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", dir);
}

int main(void) {
  fc_transport_init();
  test_endpoints();
  test_txn_build();
  test_txn_parse();
  test_real_etcd();
  fc_transport_shutdown();
  return CHECK_DONE();
}
