/*
 * test_runtime.c - the embeddable client runtime (client/runtime.c) against a
 * scripted CheckIn service on 127.0.0.1 (insecure loopback mode).
 *
 * A coordinator refuses a call with RESOURCE_EXHAUSTED when it is momentarily
 * out of something (per-identity call limit "retry later", out of memory):
 * the runtime must back off and retry, not end run() as if the federation
 * had refused it for good.
 *
 * fedc_client_create has one rule for success and failure (client.h): *out is
 * always written and always destroyed; a failed create still hands out a
 * handle holding the reason, and run() on it returns the same error.
 */
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "client/runtime_int.h"
#include "crypto/pki.h"
#include "fedc/client.h"
#include "fedc/v1/fedc.pb-c.h"
#include "tests/unit/check.h"
#include "transport/transport.h"

static atomic_int calls;
static double now_s(void);
static int refusals; /* calls refused before DONE */

static void h_checkin(fc_scall *call, void *ctx) {
  (void)ctx;
  int k = atomic_fetch_add(&calls, 1);
  if (k < refusals) {
    fc_scall_finish(call, GRPC_STATUS_RESOURCE_EXHAUSTED,
                    "too many concurrent calls from client/dev (limit 4): retry later", NULL);
    return;
  }
  Fedc__V1__CheckInResponse r = FEDC__V1__CHECK_IN_RESPONSE__INIT;
  r.action = FEDC__V1__CHECK_IN_RESPONSE__ACTION__DONE;
  fc_scall_finish(call, GRPC_STATUS_OK, NULL, &r.base);
}

static int train(void *ctx, const fedc_train_config *cfg, const float *w, float *out, size_t n, int *kind,
                 uint64_t *examples, double *loss) {
  (void)ctx, (void)cfg, (void)w, (void)out, (void)n, (void)kind, (void)examples, (void)loss;
  return 1;
}

/* A one-method CheckIn server on 127.0.0.1 (insecure loopback test mode);
 * its address goes to addr. NULL if it could not start. */
static fc_server *start_checkin_server(fc_handler h, char *addr, size_t addrlen) {
  static fc_method m;
  m = (fc_method){"/fedc.v1.Coordinator/CheckIn", FC_RPC_UNARY, FC_ROLE_CLIENT, 1024,
                  &fedc__v1__check_in_request__descriptor, h, NULL, 0, 0};
  fc_server_opts so;
  fc_server_opts_init(&so);
  so.addr = "127.0.0.1:0";
  so.insecure_for_testing = 1;
  so.federation = "test";
  so.threads = 2;
  so.methods = &m;
  so.nmethods = 1;
  fc_server *srv = NULL;
  char err[400];
  int rc = fc_server_start(&so, &srv, err, sizeof err);
  if (rc != FEDC_OK) fprintf(stderr, "server: %s\n", err);
  CHECK_EQ_INT(rc, FEDC_OK);
  if (srv) snprintf(addr, addrlen, "127.0.0.1:%d", fc_server_port(srv));
  return srv;
}

static void test_busy_is_transient(void) {
  fc_transport_init();
  char addr[64];
  fc_server *srv = start_checkin_server(h_checkin, addr, sizeof addr);
  if (!srv) return;
  int rc;

  refusals = 2;
  atomic_store(&calls, 0);
  fedc_client_options o;
  fedc_client_options_init(&o);
  o.coordinator = addr;
  o.insecure_for_testing = 1;
  o.insecure_identity = "client/dev";
  o.min_backoff_ms = 10;
  o.max_backoff_ms = 20;
  o.max_retries = 5;
  fedc_trainer t = {.ctx = NULL, .train = train};
  fedc_client *c = NULL;
  CHECK_EQ_INT(fedc_client_create(&o, &t, &c), FEDC_OK);
  rc = fedc_client_run(c);
  if (rc != FEDC_OK) fprintf(stderr, "run: %s: %s\n", fedc_strerror(rc), fedc_client_last_error(c));
  CHECK_EQ_INT(rc, FEDC_OK);
  CHECK_EQ_INT(atomic_load(&calls), 3);
  fedc_client_destroy(c);

  fc_server_destroy(srv);
  fc_transport_shutdown();
}

/* A coordinator that never answers a check-in (its handler hangs). */
static atomic_int release_hang;
static void h_hang(fc_scall *call, void *ctx) {
  (void)ctx;
  for (int i = 0; i < 200 && !atomic_load(&release_hang); i++) usleep(50000);
  fc_scall_finish(call, GRPC_STATUS_UNAVAILABLE, "released", NULL);
}

static void *run_thread(void *arg) {
  fedc_client *c = arg;
  static int rc;
  rc = fedc_client_run(c);
  return &rc;
}

static double now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec + ts.tv_nsec / 1e9;
}

/* A client of the coordinator at addr in insecure loopback mode, as client/dev. */
static fedc_client *loopback_client(const char *addr) {
  fedc_client_options o;
  fedc_client_options_init(&o);
  o.coordinator = addr;
  o.insecure_for_testing = 1;
  o.insecure_identity = "client/dev";
  fedc_trainer t = {.ctx = NULL, .train = train};
  fedc_client *c = NULL;
  CHECK_EQ_INT(fedc_client_create(&o, &t, &c), FEDC_OK);
  return c;
}

/* Keys first (runtime_secagg.c): a failed training cancels the key thread,
 * whose naps (a paced retry can be told to wait seconds) must end at once,
 * not at their timeout; a nap with no cancel ends at its time, and one whose
 * flag is already set does not sleep at all. */
typedef struct napper {
  fedc_client *c;
  atomic_int *flag;
  int ret;
  double took;
} napper;

static void *nap_thread(void *arg) {
  napper *n = arg;
  double t0 = now_s();
  n->ret = rt_nap_or(n->c, 10000, n->flag);
  n->took = now_s() - t0;
  return NULL;
}

static void test_cancel_ends_nap(void) {
  fedc_client *c = loopback_client("127.0.0.1:1"); /* never dialled */
  atomic_int flag;
  atomic_init(&flag, 0);
  double t0 = now_s();
  CHECK_EQ_INT(rt_nap_or(c, 50, &flag), 0); /* not cancelled: sleeps its time */
  CHECK(now_s() - t0 >= 0.045);
  napper n = {c, &flag, -1, 0};
  pthread_t th;
  CHECK_EQ_INT(pthread_create(&th, NULL, nap_thread, &n), 0);
  usleep(100 * 1000);
  rt_cancel(c, &flag);
  pthread_join(th, NULL);
  CHECK_EQ_INT(n.ret, 1);
  CHECK(n.took < 2.0); /* not the nap's 10 s */
  t0 = now_s();
  CHECK_EQ_INT(rt_nap_or(c, 10000, &flag), 1); /* already cancelled */
  CHECK(now_s() - t0 < 2.0);
  CHECK_EQ_INT(rt_nap(c, 1), 0); /* the client itself is not stopped */
  fedc_client_destroy(c);
}

/* fedc_client_stop() from another thread ends run() promptly even while a
 * check-in is in flight (it used to wait for the call's 30 s deadline). */
static void test_stop_cancels_call(void) {
  fc_transport_init();
  char addr[64];
  fc_server *srv = start_checkin_server(h_hang, addr, sizeof addr);
  if (!srv) return;
  fedc_client *c = loopback_client(addr);
  pthread_t th;
  pthread_create(&th, NULL, run_thread, c);
  usleep(500000); /* the check-in is now hanging on the server */
  double t0 = now_s();
  fedc_client_stop(c);
  void *res = NULL;
  pthread_join(th, &res);
  double took = now_s() - t0;
  printf("stop -> run returned in %.3f s\n", took);
  CHECK_EQ_INT(*(int *)res, FEDC_ERR_STOPPED);
  /* Not a speed threshold: without cancellation run() returns only at the
   * check-in's 30 s deadline; 10 s separates the two behaviours on any load. */
  CHECK(took < 10.0);
  atomic_store(&release_hang, 1);
  fedc_client_destroy(c);
  fc_server_destroy(srv);
  fc_transport_shutdown();
}

/* A coordinator rate-limiting check-ins says when to come back (trailing
 * metadata fedc-retry-after-ms); the runtime waits at least that long, even
 * with a backoff configured far shorter (issue 7). */
static double call_at[8];
static void h_rate_limited(fc_scall *call, void *ctx) {
  (void)ctx;
  int k = atomic_fetch_add(&calls, 1);
  if (k < 8) call_at[k] = now_s();
  if (k < 2) {
    fc_scall_finish_retry(call, GRPC_STATUS_RESOURCE_EXHAUSTED, "check-ins too frequent: retry in 400 ms", 400);
    return;
  }
  Fedc__V1__CheckInResponse r = FEDC__V1__CHECK_IN_RESPONSE__INIT;
  r.action = FEDC__V1__CHECK_IN_RESPONSE__ACTION__DONE;
  fc_scall_finish(call, GRPC_STATUS_OK, NULL, &r.base);
}

static void test_retry_after_honoured(void) {
  fc_transport_init();
  char addr[64];
  fc_server *srv = start_checkin_server(h_rate_limited, addr, sizeof addr);
  if (!srv) return;
  atomic_store(&calls, 0);
  fedc_client_options o;
  fedc_client_options_init(&o);
  o.coordinator = addr;
  o.insecure_for_testing = 1;
  o.insecure_identity = "client/dev";
  o.min_backoff_ms = 10;
  o.max_backoff_ms = 20;
  o.max_retries = 5;
  fedc_trainer t = {.ctx = NULL, .train = train};
  fedc_client *c = NULL;
  CHECK_EQ_INT(fedc_client_create(&o, &t, &c), FEDC_OK);
  CHECK_EQ_INT(fedc_client_run(c), FEDC_OK);
  CHECK_EQ_INT(atomic_load(&calls), 3);
  /* A lower bound only (a slow machine makes the gaps longer, never shorter). */
  for (int k = 1; k < 3; k++) {
    printf("retry %d after %.3f s\n", k, call_at[k] - call_at[k - 1]);
    CHECK(call_at[k] - call_at[k - 1] >= 0.39);
  }
  fedc_client_destroy(c);
  fc_server_destroy(srv);
  fc_transport_shutdown();
}

/* Create with options that cannot work: the return code, the handle it
 * still hands out (a sentinel in *out must be overwritten), the sentence,
 * and run() giving back the same code without connecting. Destroyed after,
 * so an ASan build checks nothing leaks on these paths. */
static void expect_failed_create(const fedc_client_options *o, const fedc_trainer *t, int want_rc,
                                 const char *want_in_error) {
  static int sentinel;
  fedc_client *c = (fedc_client *)(void *)&sentinel;
  int rc = fedc_client_create(o, t, &c);
  CHECK_EQ_INT(rc, want_rc);
  CHECK(c != (fedc_client *)(void *)&sentinel);
  CHECK(c != NULL);
  if (c == (fedc_client *)(void *)&sentinel) return; /* unwritten: nothing of ours to touch */
  const char *why = fedc_client_last_error(c);
  printf("create failed as documented: %s: %s\n", fedc_strerror(rc), why);
  CHECK(strstr(why, want_in_error) != NULL);
  CHECK_EQ_INT(fedc_client_run(c), want_rc);
  CHECK(strstr(fedc_client_last_error(c), want_in_error) != NULL);
  fedc_client_stop(c); /* harmless on a failed handle */
  CHECK_EQ_INT(fedc_client_rounds_done(c), 0);
  fedc_client_destroy(c);
}

static void test_create_failure_rule(void) {
  char dir[] = "/tmp/fedc-test-runtime-XXXXXX";
  CHECK(mkdtemp(dir) != NULL);
  char pki[300], ca[400], cert[400], other_key[400], missing[400], err[512] = "";
  snprintf(pki, sizeof pki, "%s/pki", dir);
  CHECK_EQ_INT(fc_pki_init(pki, "test", NULL, 0, 1, "ec", err, sizeof err), FEDC_OK);
  CHECK_EQ_INT(fc_pki_issue(pki, "client", "dev", NULL, 1, err, sizeof err), FEDC_OK);
  snprintf(ca, sizeof ca, "%s/ca.crt", pki);
  snprintf(cert, sizeof cert, "%s/client-dev.crt", pki);
  snprintf(other_key, sizeof other_key, "%s/coordinator.key", pki); /* a key, not this certificate's */
  snprintf(missing, sizeof missing, "%s/no-such-ca.crt", dir);

  fedc_trainer t = {.ctx = NULL, .train = train};
  fedc_client_options o;
  fedc_client_options_init(&o);
  o.coordinator = "127.0.0.1:1"; /* never dialled: every case fails before connecting */
  o.max_retries = 1;

  /* A CA that cannot be read: the first file create opens. */
  o.ca = missing, o.cert = cert, o.key = other_key;
  expect_failed_create(&o, &t, FEDC_ERR_NOT_FOUND, "no-such-ca.crt");
  /* The CA loads (and is held by the handle), then the key does not belong
   * to the certificate: the TLS material is refused. */
  o.ca = ca;
  expect_failed_create(&o, &t, FEDC_ERR_TLS, "coordinator.key");
  /* Invalid arguments get a handle with the reason too. */
  fedc_trainer no_train = {.ctx = NULL, .train = NULL};
  expect_failed_create(&o, &no_train, FEDC_ERR_INVALID, "train callback");
  expect_failed_create(NULL, &t, FEDC_ERR_INVALID, "no options");
  /* Nowhere to put a handle: nothing allocated, nothing to destroy. */
  CHECK_EQ_INT(fedc_client_create(&o, &t, NULL), FEDC_ERR_INVALID);
  /* The one NULL handle (out of memory) still has a sentence. */
  CHECK(strlen(fedc_client_last_error(NULL)) > 0);

  char cmd[400];
  snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
  CHECK_EQ_INT(system(cmd), 0);
}

int main(void) {
  test_create_failure_rule();
  test_busy_is_transient();
  test_retry_after_honoured();
  test_stop_cancels_call();
  test_cancel_ends_nap();
  return CHECK_DONE();
}
