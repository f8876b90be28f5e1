/*
 * test_sa_split_view.c - the split-view attack of the security review (issue
 * 20, finding 1) against unmodified client cores.
 *
 * A coordinator runs the real server core honestly through the masked stage
 * (cohort of 6, complete graph k = 5), then shows the clients of group A a
 * survivor list in which victim 1 survived and those of group B one in which
 * it dropped. Each group only sees its own signatures. Honest clients in A
 * send their share of b_1 (1 itself among them), those in B their share of
 * s_1^SK; colluding neighbours (corrupt clients: the test reads both of
 * their shares out of their cores) sign both lists and hand over both. With
 * t shares of each, the coordinator rebuilds b_1 and s_1^SK, strips both
 * masks from y_1 and holds client 1's quantized update.
 *
 * secagg.h says why: b_v has k + 1 holders, so a split needs
 * 2t <= k + 1 + colluders. Checked here:
 *   - t = 3 and t = 2 (what the coordinator used to accept for 6 clients):
 *     every client refuses the task before sending anything. Before the fix
 *     every client took part and this attack recovered client 1's update
 *     exactly;
 *   - t = 4 (the new minimum), no colluder: no split of the honest clients
 *     yields both secrets; nor with one colluder;
 *   - t = 4 with two colluders: the bound is tight, the attack succeeds; a
 *     client whose owner set secagg_tolerate_colluders 2 refuses t = 4.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "check.h"
#include "client/secagg_client.h"
#include "client/secagg_client_int.h"
#include "common/fileutil.h"
#include "common/rng.h"
#include "coordinator/secagg_server.h"
#include "crypto/sa_crypto.h"
#include "crypto/shamir.h"
#include "crypto/pki.h"
#include "fedc/error.h"
#include "secagg/secagg.h"
#include "tests/support/sa_harness.h"

#define N 6
#define K 5
#define DIM 40
#define VICTIM 1

static char pki[256], root[256];

typedef struct split_result {
  uint32_t refused;          /* clients that refused the task at creation */
  uint32_t unmasked;         /* honest clients that sent unmask shares */
  uint32_t b_shares, s_shares; /* of the victim's b and s^SK, in the coordinator's hands */
  int recovered;             /* 1: client 1's quantized input, bit for bit */
  char why[256];             /* the first client refusal */
} split_result;

static char *slurp(const char *fmt, uint32_t i) {
  char path[600], rel[64];
  snprintf(rel, sizeof rel, fmt, i);
  snprintf(path, sizeof path, "%s/%s", pki, rel);
  char *buf = NULL;
  size_t len = 0;
  return fc_read_file(path, 1 << 20, &buf, &len) == FEDC_OK ? buf : NULL;
}

static int sign_as(uint32_t idx, const uint8_t digest[32], uint8_t *sig, size_t *len) {
  char *key = slurp("client-c%05u.key", idx);
  if (!key) return -1;
  int rc = fc_sign_pem(key, strlen(key), digest, 32, sig, len);
  fc_wipe(key, strlen(key));
  free(key);
  return rc;
}

static void note(split_result *r, uint32_t idx, const char *why) {
  if (!r->why[0]) snprintf(r->why, sizeof r->why, "client %u: %s", idx, why);
}

/* One attack. in_a: bit i set = client i+1 is shown the list with the victim
 * (the victim always is); colluders: bit i = client i+1 is corrupt. Every
 * other client is shown the list without the victim. */
static void split_view(uint32_t t, uint32_t in_a, uint32_t colluders, uint32_t tolerate, split_result *r) {
  memset(r, 0, sizeof *r);
  in_a |= 1u << (VICTIM - 1);
  fc_sa_params p;
  memset(&p, 0, sizeof p);
  p.round = 3;
  p.model_version = 2;
  p.n = N;
  p.k = K;
  p.t = t;
  p.max_weight = 10;
  p.clip = 1.0f;
  p.dim = DIM;
  for (int i = 0; i < 32; i++) p.graph_seed[i] = (uint8_t)(7 * i + t), p.model_sha[i] = (uint8_t)i;
  char *names[N], *ca = slurp("ca.crt", 0);
  fc_sa_client *cl[N] = {0};
  uint8_t mask_pk[N][32], cert_sha[N][32]; /* each client's TLS certificate, as the transport records it */
  uint32_t q1[DIM + 1], y1[DIM + 1];
  fc_sa_server *srv = NULL;
  char why[256];
  for (uint32_t i = 0; i < N; i++) {
    names[i] = malloc(16);
    snprintf(names[i], 16, "c%05u", i + 1);
  }
  /* Unmodified client cores: each checks the task first. */
  for (uint32_t i = 0; i < N; i++) {
    fc_sa_client_cfg cc;
    memset(&cc, 0, sizeof cc);
    cc.params = p;
    cc.names = (const char *const *)names;
    cc.index = i + 1;
    cc.ca_pem = ca;
    cc.colluders = colluders >> i & 1 ? 0 : tolerate;
    if (sa_harness_client(pki, &cc, &cl[i], cert_sha[i], why, sizeof why) != FEDC_OK) {
      r->refused++;
      note(r, i + 1, why);
    }
  }
  if (r->refused) goto out; /* nothing was sent: there is nothing to attack */
  /* Rounds 0-2 through the real server core, honestly. */
  CHECK_EQ_INT(fc_sa_server_create(&p, (const char *const *)names, &srv, why, sizeof why), FEDC_OK);
  if (!srv) goto out;
  CHECK_EQ_INT(fc_sa_server_set_trust(srv, ca, "secagg-test"), FEDC_OK);
  for (uint32_t i = 0; i < N; i++) {
    Fedc__V1__SecAggSubmitRequest req = FEDC__V1__SEC_AGG_SUBMIT_REQUEST__INIT;
    CHECK_EQ_INT(fc_sa_client_advertise(cl[i], &req), FEDC_OK);
    memcpy(mask_pk[i], req.keys->mask_pk.data, 32);
    CHECK_EQ_INT(fc_sa_server_submit(srv, i + 1, cert_sha[i], &req, why, sizeof why), FEDC_OK);
    fc_sa_submit_clear(&req);
  }
  CHECK_EQ_INT(fc_sa_server_close_stage(srv, why, sizeof why), FEDC_OK);
  for (uint32_t i = 0; i < N; i++) {
    Fedc__V1__SecAggPollResponse in;
    Fedc__V1__SecAggSubmitRequest req = FEDC__V1__SEC_AGG_SUBMIT_REQUEST__INIT;
    fc_sa_server_poll(srv, i + 1, FC_SA_SHARE_KEYS, &in);
    CHECK_EQ_INT(fc_sa_client_share_keys(cl[i], &in, &req), FEDC_OK);
    fc_sa_poll_clear(&in);
    CHECK_EQ_INT(fc_sa_server_submit(srv, i + 1, cert_sha[i], &req, why, sizeof why), FEDC_OK);
    fc_sa_submit_clear(&req);
  }
  CHECK_EQ_INT(fc_sa_server_close_stage(srv, why, sizeof why), FEDC_OK);
  fc_rng rng;
  fc_rng_seed(&rng, 99);
  for (uint32_t i = 0; i < N; i++) {
    Fedc__V1__SecAggPollResponse in;
    fc_sa_server_poll(srv, i + 1, FC_SA_MASKED, &in);
    CHECK_EQ_INT(fc_sa_client_receive_shares(cl[i], &in), FEDC_OK);
    fc_sa_poll_clear(&in);
    uint32_t q[DIM + 1];
    for (uint32_t j = 0; j < DIM; j++) q[j] = (uint32_t)fc_rng_u64(&rng);
    q[DIM] = 1 + i;
    if (i + 1 == VICTIM) memcpy(q1, q, sizeof q);
    CHECK_EQ_INT(fc_sa_client_mask(cl[i], q), FEDC_OK);
    if (i + 1 == VICTIM) memcpy(y1, q, sizeof q);
    fc_sa_server_masked_done(srv, i + 1);
  }
  CHECK_EQ_INT(fc_sa_server_close_stage(srv, why, sizeof why), FEDC_OK);

  /* Round 3, lying: two survivor lists. */
  uint32_t list_a[N], list_b[N - 1];
  for (uint32_t v = 1, nb = 0; v <= N; v++) {
    list_a[v - 1] = v;
    if (v != VICTIM) list_b[nb++] = v;
  }
  uint8_t dig_a[32], dig_b[32];
  CHECK_EQ_INT(fc_sa_survivors_digest(fc_sa_server_session(srv), list_a, N, dig_a), FEDC_OK);
  CHECK_EQ_INT(fc_sa_survivors_digest(fc_sa_server_session(srv), list_b, N - 1, dig_b), FEDC_OK);
  uint8_t sig[N][2][FC_SIG_MAX];
  size_t siglen[N][2];
  int live[N];
  for (uint32_t i = 0; i < N; i++) {
    live[i] = 0;
    siglen[i][0] = siglen[i][1] = FC_SIG_MAX;
    if (colluders >> i & 1) { /* the coordinator has its key: it signs both */
      CHECK_EQ_INT(sign_as(i + 1, dig_a, sig[i][0], &siglen[i][0]), FEDC_OK);
      CHECK_EQ_INT(sign_as(i + 1, dig_b, sig[i][1], &siglen[i][1]), FEDC_OK);
      continue;
    }
    int g = in_a >> i & 1 ? 0 : 1;
    Fedc__V1__SecAggPollResponse in = FEDC__V1__SEC_AGG_POLL_RESPONSE__INIT;
    in.status = FEDC__V1__SEC_AGG_POLL_RESPONSE__STATUS__READY;
    in.survivors = g ? list_b : list_a;
    in.n_survivors = g ? N - 1 : N;
    Fedc__V1__SecAggSubmitRequest req = FEDC__V1__SEC_AGG_SUBMIT_REQUEST__INIT;
    if (fc_sa_client_consistency(cl[i], &in, &req) != FEDC_OK) {
      note(r, i + 1, fc_sa_client_error(cl[i]));
      continue;
    }
    memcpy(sig[i][g], req.survivors_signature.data, req.survivors_signature.len);
    siglen[i][g] = req.survivors_signature.len;
    live[i] = 1;
    fc_sa_submit_clear(&req);
  }

  /* Round 4: each honest client is shown the signatures over its own list
   * (its group's and the colluders'), and answers with shares. */
  uint16_t bx[N], sx[N];
  uint8_t bsh[N][32], ssh[N][32];
  for (uint32_t i = 0; i < N; i++) {
    if (colluders >> i & 1) {
      /* A corrupt neighbour of the victim hands over both of its shares. */
      const sa_peer *pv = sa_client_peer(cl[i], VICTIM);
      if (pv && pv->have_share) {
        bx[r->b_shares] = (uint16_t)(i + 1), memcpy(bsh[r->b_shares++], pv->seed_share, 32);
        sx[r->s_shares] = (uint16_t)(i + 1), memcpy(ssh[r->s_shares++], pv->key_share, 32);
      }
      continue;
    }
    if (!live[i]) continue;
    int g = in_a >> i & 1 ? 0 : 1;
    Fedc__V1__SecAggSignature sigs[N], *sp[N];
    Fedc__V1__SecAggPollResponse in = FEDC__V1__SEC_AGG_POLL_RESPONSE__INIT;
    in.status = FEDC__V1__SEC_AGG_POLL_RESPONSE__STATUS__READY;
    in.signatures = sp;
    for (uint32_t w = 0; w < N; w++) {
      int same = (colluders >> w & 1) || (live[w] && (in_a >> w & 1 ? 0 : 1) == g);
      if (w == i || !same) continue;
      fedc__v1__sec_agg_signature__init(&sigs[in.n_signatures]);
      sigs[in.n_signatures].index = w + 1;
      sigs[in.n_signatures].signature.data = sig[w][g];
      sigs[in.n_signatures].signature.len = siglen[w][g];
      sp[in.n_signatures] = &sigs[in.n_signatures];
      in.n_signatures++;
    }
    Fedc__V1__SecAggSubmitRequest req = FEDC__V1__SEC_AGG_SUBMIT_REQUEST__INIT;
    if (fc_sa_client_unmask(cl[i], &in, &req) != FEDC_OK) {
      note(r, i + 1, fc_sa_client_error(cl[i]));
      continue;
    }
    r->unmasked++;
    for (size_t j = 0; j < req.n_unmask; j++) {
      const Fedc__V1__SecAggUnmaskShare *u = req.unmask[j];
      if (u->owner != VICTIM || u->share.len != 32) continue;
      if (u->self_seed) bx[r->b_shares] = (uint16_t)(i + 1), memcpy(bsh[r->b_shares++], u->share.data, 32);
      else sx[r->s_shares] = (uint16_t)(i + 1), memcpy(ssh[r->s_shares++], u->share.data, 32);
    }
    fc_sa_submit_clear(&req);
  }

  /* The coordinator's payoff: both secrets, then client 1's input. */
  if (r->b_shares >= t && r->s_shares >= t) {
    uint8_t b[32], s_sk[32], dh[32];
    const uint8_t *session = fc_sa_server_session(srv);
    fc_sa_mask_term terms[K + 1];
    size_t nt = 0;
    int ok = fc_shamir_combine(bx, (const uint8_t(*)[32])bsh, r->b_shares, t, b) == FEDC_OK &&
             fc_shamir_combine(sx, (const uint8_t(*)[32])ssh, r->s_shares, t, s_sk) == FEDC_OK &&
             fc_sa_self_mask_key(session, p.round, b, VICTIM, terms[nt].key) == FEDC_OK;
    terms[nt++].sign = -1;
    for (uint32_t v = 1; ok && v <= N; v++) {
      if (v == VICTIM) continue;
      ok = fc_x25519(s_sk, mask_pk[v - 1], dh) == FEDC_OK &&
           fc_sa_pair_mask_key(session, p.round, dh, VICTIM, v, terms[nt].key) == FEDC_OK;
      terms[nt++].sign = -fc_sa_pair_sign(VICTIM, v);
    }
    if (ok && fc_sa_mask_apply(NULL, y1, 0, DIM + 1, terms, nt, NULL) == FEDC_OK)
      r->recovered = memcmp(y1, q1, sizeof q1) == 0;
  }
out:
  for (uint32_t i = 0; i < N; i++) {
    fc_sa_client_destroy(cl[i]);
    free(names[i]);
  }
  fc_sa_server_destroy(srv);
  free(ca);
}

static void test_old_thresholds_refused(void) {
  /* The review: n = 6, k = 5, t = 3, groups {1,2,3} and {4,5,6}; t = 2 too. */
  for (uint32_t t = 2; t <= 3; t++) {
    split_result r;
    split_view(t, 0x7 /* 1, 2, 3 */, 0, 0, &r);
    printf("  t = %u: %u of %u clients refused the task (%s); recovered %d\n", t, r.refused, N, r.why, r.recovered);
    CHECK_EQ_INT(r.refused, N);
    CHECK(strstr(r.why, "2t > k + 1") != NULL);
    CHECK(!r.recovered);
  }
}

static void test_new_minimum_holds(void) {
  /* t = 4: every split of clients 2..6 between the two lists fails. */
  uint32_t worst_b = 0, worst_s = 0, splits = 0;
  for (uint32_t a = 0; a < 1u << (N - 1); a++) {
    split_result r;
    split_view(4, a << 1, 0, 0, &r);
    CHECK_EQ_INT(r.refused, 0);
    CHECK(!r.recovered);
    CHECK(r.b_shares < 4 || r.s_shares < 4);
    if (r.b_shares + r.s_shares > worst_b + worst_s) worst_b = r.b_shares, worst_s = r.s_shares;
    splits++;
  }
  printf("  t = 4: %u splits, none recovers client 1 (best: %u b-shares, %u s^SK-shares)\n", splits, worst_b, worst_s);
  /* The review's split: both groups stop at the consistency check. */
  split_result r;
  split_view(4, 0x7, 0, 0, &r);
  CHECK_EQ_INT(r.unmasked, 0);
  CHECK(strstr(r.why, "confirmed the survivor list") != NULL);
  printf("  t = 4, {1,2,3} | {4,5,6}: %s\n", r.why);
  /* One colluder (client 6) signs both lists and gives both shares: still not enough (2t = 8 > k + 1 + 1). */
  for (uint32_t a = 0; a < 1u << (N - 2); a++) {
    split_view(4, a << 1, 1u << 5, 0, &r);
    CHECK(!r.recovered);
  }
}

static void test_colluders(void) {
  /* Two colluders (5 and 6): 2t = 8 <= k + 1 + 2, the bound is tight. */
  split_result r;
  split_view(4, 0x3 /* 1, 2 */, 0x30 /* 5, 6 */, 0, &r);
  printf("  t = 4, colluders 5 and 6, {1,2} | {3,4}: %u b-shares, %u s^SK-shares, recovered %d\n", r.b_shares,
         r.s_shares, r.recovered);
  CHECK(r.recovered);
  /* An owner who expects up to two colluders around its client refuses t = 4 (t >= 5 needed). */
  split_view(4, 0x3, 0x30, 2, &r);
  CHECK_EQ_INT(r.refused, 4);
  CHECK(strstr(r.why, "tolerates 2 colluding") != NULL);
  CHECK(!r.recovered);
  printf("  with secagg_tolerate_colluders 2: %s\n", r.why);
}

int main(void) {
  snprintf(root, sizeof root, "/tmp/fedc-split-view-XXXXXX");
  if (!mkdtemp(root)) return 2;
  snprintf(pki, sizeof pki, "%s/pki", root);
  if (sa_harness_pki(pki, N) != FEDC_OK) return 2;
  test_old_thresholds_refused();
  test_new_minimum_holds();
  test_colluders();
  char cmd[400];
  snprintf(cmd, sizeof cmd, "rm -rf '%s'", root);
  if (system(cmd) != 0) fprintf(stderr, "cleanup failed\n");
  return CHECK_DONE();
}
