/*
 * test_sa_wait_hint.c - when the SecAgg server core tells a waiting client to
 * poll again (fc_sa_server_wait_hint).
 *
 * A stage opens when the last expected message of the one before arrives; a
 * client waiting for it learns so at its next poll, so every stage of a round
 * costs up to one poll interval on top of its slowest member. The core asks
 * for FC_SA_POLL_MS while many messages are due and FC_SA_POLL_TAIL_MS in the
 * stage's tail (at most max(2, expected / 8) due), for FC_SA_POLL_TAIL_FOR_MS
 * from the first poll that saw the tail, so a member that never sends does not
 * keep the cohort polling fast until the deadline. Checked on the real
 * server core with real client cores (cohort 16, k = 15, t = 9), through
 * advertise and share-keys, a fresh tail for each stage, and an abort.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "check.h"
#include "client/secagg_client.h"
#include "common/fileutil.h"
#include "coordinator/secagg_server.h"
#include "fedc/error.h"
#include "secagg/secagg.h"
#include "tests/support/sa_harness.h"

#define N 16
#define DIM 8

static char pki[256], root[256];

static char *read_ca(void) {
  char path[400], *buf = NULL;
  size_t len = 0;
  snprintf(path, sizeof path, "%s/ca.crt", pki);
  return fc_read_file(path, 1 << 20, &buf, &len) == FEDC_OK ? buf : NULL;
}

static void test_wait_hint(void) {
  fc_sa_params p;
  memset(&p, 0, sizeof p);
  p.round = 5;
  p.model_version = 4;
  p.n = N;
  p.k = N - 1;
  p.t = 9;
  p.max_weight = 10;
  p.clip = 1.0f;
  p.dim = DIM;
  for (int i = 0; i < 32; i++) p.graph_seed[i] = (uint8_t)(3 * i + 1), p.model_sha[i] = (uint8_t)i;
  char *names[N], *ca = read_ca(), why[256];
  fc_sa_client *cl[N] = {0};
  uint8_t cert_sha[N][32];
  fc_sa_server *srv = NULL;
  for (uint32_t i = 0; i < N; i++) {
    names[i] = malloc(16);
    snprintf(names[i], 16, "c%05u", i + 1);
  }
  for (uint32_t i = 0; i < N; i++) {
    fc_sa_client_cfg cc;
    memset(&cc, 0, sizeof cc);
    cc.params = p;
    cc.names = (const char *const *)names;
    cc.index = i + 1;
    cc.ca_pem = ca;
    CHECK_EQ_INT(sa_harness_client(pki, &cc, &cl[i], cert_sha[i], why, sizeof why), FEDC_OK);
  }
  CHECK_EQ_INT(fc_sa_server_create(&p, (const char *const *)names, &srv, why, sizeof why), FEDC_OK);
  CHECK_EQ_INT(fc_sa_server_set_trust(srv, ca, "secagg-test"), FEDC_OK);

  /* Advertise: 16 expected; the tail is at most 2 due (16 / 8). */
  uint64_t t = 1000;
  for (uint32_t i = 0; i < N; i++) {
    CHECK_EQ_INT(fc_sa_server_wait_hint(srv, N, t), i < N - 2 ? FC_SA_POLL_MS : FC_SA_POLL_TAIL_MS);
    Fedc__V1__SecAggSubmitRequest req = FEDC__V1__SEC_AGG_SUBMIT_REQUEST__INIT;
    CHECK_EQ_INT(fc_sa_client_advertise(cl[i], &req), FEDC_OK);
    CHECK_EQ_INT(fc_sa_server_submit(srv, i + 1, cert_sha[i], &req, why, sizeof why), FEDC_OK);
    fc_sa_submit_clear(&req);
    t += 10;
  }
  /* The tail began at the first poll that saw it (t = 1140): fast for 500 ms from there, then back. */
  CHECK_EQ_INT(fc_sa_server_wait_hint(srv, N, 1140 + FC_SA_POLL_TAIL_FOR_MS - 1), FC_SA_POLL_TAIL_MS);
  CHECK_EQ_INT(fc_sa_server_wait_hint(srv, N, 1140 + FC_SA_POLL_TAIL_FOR_MS), FC_SA_POLL_MS);
  /* Fewer expected (the engine gave up on some): the tail is measured against them. */
  CHECK_EQ_INT(fc_sa_server_stage_complete(srv, N), 1);
  CHECK_EQ_INT(fc_sa_server_close_stage(srv, why, sizeof why), FEDC_OK);

  /* Share keys: all 16 advertised, so 16 due; a new tail of its own. */
  t = 5000;
  CHECK_EQ_INT(fc_sa_server_wait_hint(srv, N, t), FC_SA_POLL_MS);
  for (uint32_t i = 0; i < N - 1; i++) {
    Fedc__V1__SecAggPollResponse in;
    Fedc__V1__SecAggSubmitRequest req = FEDC__V1__SEC_AGG_SUBMIT_REQUEST__INIT;
    fc_sa_server_poll(srv, i + 1, FC_SA_SHARE_KEYS, &in);
    CHECK_EQ_INT(in.status, FEDC__V1__SEC_AGG_POLL_RESPONSE__STATUS__READY);
    CHECK_EQ_INT(fc_sa_client_share_keys(cl[i], &in, &req), FEDC_OK);
    fc_sa_poll_clear(&in);
    CHECK_EQ_INT(fc_sa_server_submit(srv, i + 1, cert_sha[i], &req, why, sizeof why), FEDC_OK);
    fc_sa_submit_clear(&req);
  }
  /* One due: fast from 5000 + 0 for 500 ms, whatever the advertise stage's tail did. */
  CHECK_EQ_INT(fc_sa_server_wait_hint(srv, N, t + 100), FC_SA_POLL_TAIL_MS);
  CHECK_EQ_INT(fc_sa_server_wait_hint(srv, N, t + 100 + FC_SA_POLL_TAIL_FOR_MS - 1), FC_SA_POLL_TAIL_MS);
  /* Member 16 never sends: the cohort goes back to the slow poll until the deadline. */
  CHECK_EQ_INT(fc_sa_server_wait_hint(srv, N, t + 100 + FC_SA_POLL_TAIL_FOR_MS), FC_SA_POLL_MS);
  CHECK_EQ_INT(fc_sa_server_wait_hint(srv, N, t + 60000), FC_SA_POLL_MS);
  /* A poll for a stage not open yet carries the slow hint from the core itself. */
  Fedc__V1__SecAggPollResponse in;
  fc_sa_server_poll(srv, 1, FC_SA_MASKED, &in);
  CHECK_EQ_INT(in.status, FEDC__V1__SEC_AGG_POLL_RESPONSE__STATUS__WAIT);
  CHECK_EQ_INT(in.retry_after_ms, FC_SA_POLL_MS);
  fc_sa_poll_clear(&in);
  /* Aborted: nothing to wait for fast. */
  fc_sa_server_abort(srv, "test");
  CHECK_EQ_INT(fc_sa_server_wait_hint(srv, N, t + 200), FC_SA_POLL_MS);

  for (uint32_t i = 0; i < N; i++) {
    fc_sa_client_destroy(cl[i]);
    free(names[i]);
  }
  fc_sa_server_destroy(srv);
  free(ca);
}

int main(void) {
  snprintf(root, sizeof root, "/tmp/fedc-wait-hint-XXXXXX");
  if (!mkdtemp(root)) return 2;
  snprintf(pki, sizeof pki, "%s/pki", root);
  if (sa_harness_pki(pki, N) != FEDC_OK) return 2;
  test_wait_hint();
  char cmd[400];
  snprintf(cmd, sizeof cmd, "rm -rf '%s'", root);
  if (system(cmd) != 0) fprintf(stderr, "cleanup failed\n");
  return CHECK_DONE();
}
