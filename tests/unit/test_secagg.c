/*
 * test_secagg.c - secure aggregation through the real client and coordinator
 * cores, in process (tests/support/sa_harness.c): exact equality of the
 * secure and plaintext quantized sums for cohorts of 3..50 with dropouts at
 * every stage, abandonment below the threshold, a misbehaving coordinator
 * (substituted key, replayed share, tampered share, a client dropped from one
 * recipient's survivor list only, "you are dropped", non-neighbour keys) and
 * misbehaving clients: bad unmask shares (corrected, the sender named),
 * keys under a certificate not the caller's own (refused at submission). Plus the shared pieces:
 * graph, quantization bounds and the mask expansion against a reference.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "check.h"
#include "common/fileutil.h"
#include "client/secagg_client.h"
#include "coordinator/secagg_server.h"
#include "crypto/pki.h"
#include "crypto/sa_crypto.h"
#include "fedc/error.h"
#include "secagg/secagg.h"
#include "tests/support/sa_harness.h"

static char pki[256], root[256];

static sa_harness_cfg base(uint32_t n, uint32_t k, uint32_t t, uint64_t seed) {
  sa_harness_cfg c;
  memset(&c, 0, sizeof c);
  c.n = n;
  c.k = k;
  c.t = t;
  c.dim = 1001; /* odd: the last keystream block is partial */
  c.max_weight = 1000;
  c.clip = 2.0f;
  c.seed = seed;
  c.round = 5;
  c.pki_dir = pki;
  c.threads = 2;
  return c;
}

static void test_graph(void) {
  uint8_t seed[32] = {1, 2, 3};
  fc_sa_graph g;
  CHECK_EQ_INT(fc_sa_graph_build(50, 8, seed, &g), FEDC_OK);
  uint32_t nb[8];
  int sym = 1, deg = 1;
  for (uint32_t u = 1; u <= 50; u++) {
    uint32_t c = fc_sa_graph_neighbors(&g, u, nb);
    deg &= c == 8;
    for (uint32_t i = 0; i < c; i++) sym &= fc_sa_graph_adjacent(&g, nb[i], u) && nb[i] != u;
  }
  CHECK(sym);
  CHECK(deg);
  fc_sa_graph g2;
  seed[0] = 9;
  CHECK_EQ_INT(fc_sa_graph_build(50, 8, seed, &g2), FEDC_OK);
  int differ = 0;
  for (uint32_t u = 1; u <= 50; u++) differ |= g.pos[u - 1] != g2.pos[u - 1];
  CHECK(differ); /* another seed, another graph */
  fc_sa_graph_free(&g);
  fc_sa_graph_free(&g2);
  CHECK(fc_sa_graph_build(10, 3, seed, &g) == FEDC_ERR_INVALID); /* odd k below n-1 */
}

static void test_quant(void) {
  /* The worst case: n clients at max weight with a coordinate at +-clip sum
   * without wrapping. */
  uint32_t n = 1000;
  uint64_t wmax = 1000;
  float clip = 3;
  double scale = fc_sa_quant_scale(n, wmax, clip);
  float x = clip;
  uint32_t q[2], sum[2] = {0, 0};
  fc_rng rs_;
  fc_rng_seed(&rs_, 1234);
  fc_rng *rs = &rs_;
  for (uint32_t i = 0; i < n; i++) {
    fc_sa_quantize(&x, 1, wmax, scale, rs, q);
    sum[0] += q[0];
    sum[1] += q[1];
  }
  CHECK((int32_t)sum[0] > 0);
  float avg;
  uint64_t W;
  CHECK_EQ_INT(fc_sa_dequantize(sum, 1, scale, (uint64_t)n * wmax, &avg, &W), FEDC_OK);
  CHECK(fabs(avg - clip) < 1e-4);
  x = -clip;
  sum[0] = sum[1] = 0;
  for (uint32_t i = 0; i < n; i++) {
    fc_sa_quantize(&x, 1, wmax, scale, rs, q);
    sum[0] += q[0];
    sum[1] += q[1];
  }
  CHECK((int32_t)sum[0] < 0);
  /* Unbiased rounding: the mean of many roundings of 0.3 units is 0.3. */
  double acc = 0;
  float y = (float)(0.3 / scale);
  for (int i = 0; i < 20000; i++) {
    fc_sa_quantize(&y, 1, 1, scale, rs, q);
    acc += (int32_t)q[0];
  }
  CHECK(fabs(acc / 20000 - 0.3) < 0.02);
  /* A broken or wrapped sum is refused. */
  sum[1] = 0;
  CHECK_EQ_INT(fc_sa_dequantize(sum, 1, scale, 10, &avg, &W), FEDC_ERR_INVALID);
}

/* The quantizer's loop against the formula it implements, entry by entry
 * with the same stream: floor(v) + (u < v - floor(v)), u = the next
 * fc_rng_uniform_double. Covers negative integers and fractions (where a
 * truncation differs from floor), zero, values at the scale's bound, and
 * values past the 32-bit ring (held at +-(2^31 - 1), not wrapped). */
static void test_quant_reference(void) {
  enum { D = 4099 };
  static float x[D];
  static uint32_t got[D + 1];
  uint32_t n = 100;
  uint64_t wmax = 1000, w = 777;
  float clip = 2;
  double scale = fc_sa_quant_scale(n, wmax, clip), m = (double)w * scale;
  fc_rng g;
  fc_rng_seed(&g, 99);
  for (int i = 0; i < D; i++) x[i] = (float)((fc_rng_uniform_double(&g) * 2 - 1) * clip);
  x[0] = 0;
  x[1] = clip;
  x[2] = -clip;
  x[3] = (float)(-3.0 / m); /* v = -3 (up to float rounding) */
  x[4] = -0.0f;
  x[5] = (float)(-1e-9);
  for (int i = 6; i < 40; i++) x[i] = (float)((double)(i - 23) / m); /* near-integer v, both signs */
  /* Past the ring (an unclipped input, a narrow range): held at +-(2^31 - 1), sign kept. */
  x[40] = 1e30f;
  x[41] = -1e30f;
  x[42] = INFINITY;
  x[43] = -INFINITY;
  x[44] = (float)(3e9 / m);
  x[45] = (float)(-3e9 / m);
  fc_rng a, b;
  fc_rng_seed(&a, 4242);
  b = a;
  fc_sa_quantize(x, D, w, scale, &a, got);
  int bad = 0;
  for (int i = 0; i < D; i++) {
    double v = (double)x[i] * m;
    v = v > 2147483647.0 ? 2147483647.0 : v < -2147483647.0 ? -2147483647.0 : v;
    double f = floor(v);
    double u = fc_rng_uniform_double(&b);
    uint32_t want = (uint32_t)((int64_t)f + (u < v - f));
    if (got[i] != want) bad++;
  }
  CHECK_EQ_INT(bad, 0);
  for (int i = 40; i < 46; i++) CHECK((int32_t)got[i] == (i % 2 ? -2147483647 : 2147483647));
  CHECK_EQ_INT(got[D], w);
  CHECK(memcmp(&a, &b, sizeof a) == 0); /* the caller's stream advanced by one draw per entry */
}

/* Reference: one u32 at a time from a separately generated keystream. */
static void test_mask_expansion(void) {
  size_t n = 40000 + 3;
  uint32_t *v = calloc(n, 4), *r = calloc(n, 4);
  uint8_t *ks = malloc(n * 4 + 16);
  fc_sa_mask_term t[40];
  for (int i = 0; i < 40; i++) {
    for (int j = 0; j < 16; j++) t[i].key[j] = (uint8_t)(i * 16 + j);
    t[i].sign = i % 3 ? 1 : -1;
  }
  for (int i = 0; i < 40; i++) {
    fc_ctr c;
    uint8_t iv[16] = {0};
    fc_ctr_init(&c, t[i].key, iv);
    fc_ctr_keystream(&c, ks, n * 4);
    fc_ctr_free(&c);
    for (size_t j = 0; j < n; j++) {
      uint32_t w;
      memcpy(&w, ks + 4 * j, 4);
      r[j] += t[i].sign > 0 ? w : (uint32_t)-w;
    }
  }
  CHECK_EQ_INT(fc_sa_mask_apply(NULL, v, 0, n, t, 40, NULL), FEDC_OK);
  CHECK(memcmp(v, r, n * 4) == 0);
  /* From an offset that is not on a block boundary, as a worker thread's range. */
  memset(v, 0, n * 4);
  CHECK_EQ_INT(fc_sa_mask_apply(NULL, v, 0, 17, t, 40, NULL), FEDC_OK);
  CHECK_EQ_INT(fc_sa_mask_apply(NULL, v + 17, 17, n - 17, t, 40, NULL), FEDC_OK);
  CHECK(memcmp(v, r, n * 4) == 0);
  volatile int stop = 1;
  CHECK_EQ_INT(fc_sa_mask_apply(NULL, v, 0, n, t, 40, &stop), FEDC_ERR_STOPPED);
  free(v);
  free(r);
  free(ks);
}

/* A member that says Leave after advertising is withdrawn: no later stage
 * waits for it, and the round comes out as it does when the same members
 * vanish silently (the same survivors per stage, the same exact sum). A
 * Leave before advertising changes nothing in the core (the engine's). */
static void test_withdraw(void) {
  int completed = 0;
  for (uint64_t seed = 1; seed <= 4; seed++) {
    sa_harness_cfg c = base(20, 8, 5, seed * 7919);
    double drop[6] = {0, 0.05, 0.05, 0.1, 0.05, 0.05};
    memcpy(c.drop, drop, sizeof c.drop);
    sa_harness_result silent, left;
    CHECK_EQ_INT(sa_harness_run(&c, &silent), FEDC_OK);
    c.withdraw = 1;
    CHECK_EQ_INT(sa_harness_run(&c, &left), FEDC_OK);
    /* Some seeds lose too many members for t: abandoned alike, for the same reason. */
    CHECK_EQ_INT(left.completed, silent.completed);
    CHECK(strcmp(left.why, silent.why) == 0);
    completed += left.completed;
    if (left.completed) CHECK(left.exact);
    CHECK(memcmp(silent.remaining, left.remaining, sizeof left.remaining) == 0);
    uint32_t vanished_after_advertising = left.remaining[0] - left.remaining[4];
    CHECK_EQ_INT((int)left.withdrawn, (int)vanished_after_advertising);
    CHECK(vanished_after_advertising > 0);
    CHECK(silent.closed_waiting > 0);
    CHECK_EQ_INT((int)left.closed_waiting, 0);
    CHECK_EQ_INT((int)(silent.completed_early + left.completed_early), 0);
  }
  CHECK(completed >= 2);
  /* A member that advertised and then left, while the others still
   * advertise: its advertisement no longer stands in for a member the stage
   * still waits for (the engine stopped counting it), and no later stage
   * waits for it. */
  for (uint32_t who = 1; who <= 20; who += 19) {
    sa_harness_cfg c = base(20, 8, 5, 4242);
    c.leave_after_advertise = who;
    sa_harness_result r;
    CHECK_EQ_INT(sa_harness_run(&c, &r), FEDC_OK);
    CHECK(r.completed && r.exact);
    CHECK_EQ_INT((int)r.withdrawn, 1);
    CHECK_EQ_INT((int)r.completed_early, 0);
    CHECK_EQ_INT((int)r.closed_waiting, 0);
    CHECK_EQ_INT((int)r.remaining[0], 20); /* it advertised: in U1, then dropped before sharing */
    CHECK_EQ_INT((int)r.remaining[1], 19);
  }
  /* A member that says Leave and then sends its message anyway, at each
   * stage: counted once (sent), never as both sent and not waited for, so
   * no stage completes while another member's message is due; it stays in
   * the round to the end. Before advertising, the engine stops expecting
   * it, and its advertisement must not count for a member still due. */
  for (int st = FC_SA_ADVERTISE; st <= FC_SA_UNMASK; st++) {
    for (uint32_t who = 1; who <= 20; who += 19) {
      sa_harness_cfg c = base(20, 8, 5, 777 + (uint64_t)st);
      c.leave_then_send = who;
      c.leave_then_send_stage = st;
      sa_harness_result r;
      CHECK_EQ_INT(sa_harness_run(&c, &r), FEDC_OK);
      CHECK(r.completed && r.exact);
      CHECK_EQ_INT((int)r.completed_early, 0);
      CHECK_EQ_INT((int)r.remaining[4], 20);
      if (r.completed_early) fprintf(stderr, "  leave then send: stage %d, member %u\n", st, who);
    }
  }
}

static void test_exact_sums(void) {
  /* n, k, t, dropout per stage */
  struct {
    uint32_t n, k, t;
    double drop[6];
  } cases[] = {
      {3, 2, 2, {0}},
      {3, 2, 2, {0, 0, 0, 0.3, 0, 0}},
      {5, 4, 3, {0, 0.1, 0.1, 0.1, 0.1, 0.1}},
      {10, 9, 6, {0, 0.1, 0.1, 0.15, 0.1, 0.1}},
      {20, 8, 5, {0, 0.05, 0.05, 0.2, 0.05, 0.05}},
      {50, 49, 26, {0, 0.05, 0.05, 0.1, 0.05, 0.05}},
      {50, 16, 9, {0, 0.05, 0.05, 0.1, 0.05, 0.05}},
  };
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    for (uint64_t seed = 1; seed <= 3; seed++) {
      sa_harness_cfg c = base(cases[i].n, cases[i].k, cases[i].t, seed * 31 + i);
      memcpy(c.drop, cases[i].drop, sizeof c.drop);
      sa_harness_result r;
      CHECK_EQ_INT(sa_harness_run(&c, &r), FEDC_OK);
      if (!r.completed) {
        /* Only legitimate reason: fewer than t left somewhere. */
        CHECK(strstr(r.why, "threshold") || strstr(r.why, "shares arrived"));
        printf("  n=%u k=%u t=%u seed %llu abandoned: %s (client aborts %u: %s)\n", c.n, c.k, c.t,
               (unsigned long long)seed, r.why, r.client_aborts, r.client_why);
        continue;
      }
      CHECK(r.exact);
      CHECK(r.max_abs_err <= r.err_bound);
      CHECK_EQ_INT(r.client_aborts, 0);
      printf("  n=%u k=%u t=%u seed %llu: remaining %u/%u/%u/%u/%u exact=%d err %.2e (bound %.2e)\n", c.n, c.k, c.t,
             (unsigned long long)seed, r.remaining[0], r.remaining[1], r.remaining[2], r.remaining[3], r.remaining[4],
             r.exact, r.max_abs_err, r.err_bound);
    }
  }
  /* Dropouts at every stage together, with a fixed pattern that must complete. */
  sa_harness_cfg c = base(12, 11, 7, 14);
  c.drop[FC_SA_ADVERTISE] = c.drop[FC_SA_SHARE_KEYS] = c.drop[FC_SA_MASKED] = 0.1;
  c.drop[FC_SA_CONSISTENCY] = c.drop[FC_SA_UNMASK] = 0.1;
  sa_harness_result r;
  CHECK_EQ_INT(sa_harness_run(&c, &r), FEDC_OK);
  printf("  all stages 10%%: remaining %u/%u/%u/%u/%u %s\n", r.remaining[0], r.remaining[1], r.remaining[2],
         r.remaining[3], r.remaining[4], r.completed ? "completed" : r.why);
  CHECK(r.completed && r.exact);
  /* and it did lose clients at more than one stage */
  int stages_with_drops = r.remaining[0] < 12;
  for (int s = 1; s < 5; s++) stages_with_drops += r.remaining[s] < r.remaining[s - 1];
  CHECK(stages_with_drops >= 3);
}

static void test_below_threshold(void) {
  for (int stage = FC_SA_ADVERTISE; stage <= FC_SA_UNMASK; stage++) {
    sa_harness_cfg c = base(8, 7, 6, 100 + stage);
    c.drop[stage] = 1.0; /* all vanish at this stage */
    sa_harness_result r;
    CHECK_EQ_INT(sa_harness_run(&c, &r), FEDC_OK);
    CHECK(!r.completed);
    CHECK(strstr(r.why, "threshold") != NULL || strstr(r.why, "shares arrived") != NULL);
    printf("  drop at %s: %s\n", fc_sa_stage_name(stage), r.why);
  }
}

/* ---- a misbehaving coordinator ---- */
typedef struct evil {
  int mode;
  uint32_t victim;
  int done;
  Fedc__V1__SecAggShare saved; /* a share from an earlier round */
  uint8_t saved_ct[FC_SA_SHARE_CT_LEN], saved_nonce[12];
  int have_saved;
  uint8_t session[32];
  uint32_t survivors[64];
  size_t nsurvivors;
  uint64_t bad;      /* EV_BAD_UNMASK_SHARE: bit i = client i sends bad unmask shares */
  uint64_t tampered; /* ... those that did (reached the unmask stage) */
  int one_limb;      /* ... change one 16-bit limb of each share, not the first byte */
  const char *cert_pem, *key_pem; /* EV_FOREIGN_CERT: what the victim advertises its keys under */
} evil;

/* Sign `digest` with client idx's certificate key, as a neighbour shown another list would. */
static int sign_as(uint32_t idx, const uint8_t digest[32], uint8_t *sig, size_t *len) {
  char path[400], *key = NULL;
  size_t kl = 0;
  snprintf(path, sizeof path, "%s/client-c%05u.key", pki, idx);
  if (fc_read_file(path, 1 << 16, &key, &kl) != FEDC_OK) return -1;
  int rc = fc_sign_pem(key, kl, digest, 32, sig, len);
  free(key);
  return rc;
}

enum { EV_SUBST_KEY = 1, EV_TAMPER_SHARE, EV_REPLAY_SHARE, EV_SPLIT_VIEW, EV_LIST_ME_DROPPED, EV_NON_NEIGHBOUR,
       EV_SAVE_SHARE, EV_BAD_UNMASK_SHARE, EV_BOTH_SHARES, EV_EMPTY_UNMASK, EV_SHORT_LIST, EV_FOREIGN_CERT };

static void tamper_poll(void *ctx, int stage, uint32_t index, Fedc__V1__SecAggPollResponse *r) {
  evil *e = ctx;
  if (e->mode == EV_SHORT_LIST) e->victim = index; /* every client */
  if (index != e->victim) {
    if (e->mode == EV_SAVE_SHARE && stage == FC_SA_MASKED && !e->have_saved && r->n_shares) {
      e->saved = *r->shares[0];
      memcpy(e->saved_ct, r->shares[0]->ciphertext.data, FC_SA_SHARE_CT_LEN);
      memcpy(e->saved_nonce, r->shares[0]->nonce.data, 12);
      e->have_saved = 1;
    }
    return;
  }
  switch (e->mode) {
  case EV_SUBST_KEY:
    if (stage == FC_SA_SHARE_KEYS && r->n_neighbor_keys) {
      r->neighbor_keys[0]->mask_pk.data[0] ^= 1; /* the coordinator's own key in place of a neighbour's */
      e->done = 1;
    }
    break;
  case EV_TAMPER_SHARE:
    if (stage == FC_SA_MASKED && r->n_shares) {
      r->shares[0]->ciphertext.data[5] ^= 0x40;
      e->done = 1;
    }
    break;
  case EV_REPLAY_SHARE:
    if (stage == FC_SA_MASKED && r->n_shares && e->have_saved) {
      /* An old round's ciphertext from the same sender to the same recipient. */
      for (size_t i = 0; i < r->n_shares; i++)
        if (r->shares[i]->from == e->saved.from && e->saved.to == index) {
          memcpy(r->shares[i]->ciphertext.data, e->saved_ct, FC_SA_SHARE_CT_LEN);
          memcpy(r->shares[i]->nonce.data, e->saved_nonce, 12);
          e->done = 1;
        }
    }
    break;
  case EV_SPLIT_VIEW:
    /* The coordinator showed a neighbour w a survivor list without some v
     * (to collect v's s^SK share from w while others give up v's b share):
     * w's signature is over that other list. The victim must notice. */
    if (stage == FC_SA_CONSISTENCY) {
      e->nsurvivors = r->n_survivors < 64 ? r->n_survivors : 64;
      memcpy(e->survivors, r->survivors, e->nsurvivors * sizeof *e->survivors);
    }
    if (stage == FC_SA_UNMASK && r->n_signatures && e->nsurvivors > 3) {
      Fedc__V1__SecAggSignature *g = r->signatures[0];
      uint32_t other[64];
      size_t no = 0;
      int skipped = 0;
      for (size_t i = 0; i < e->nsurvivors; i++) {
        if (!skipped && e->survivors[i] != index && e->survivors[i] != g->index) {
          skipped = 1;
          continue;
        }
        other[no++] = e->survivors[i];
      }
      uint8_t dig[32], sig[FC_SIG_MAX];
      size_t sl = sizeof sig;
      if (fc_sa_survivors_digest(e->session, other, no, dig) == FEDC_OK && sign_as(g->index, dig, sig, &sl) == 0 &&
          sl <= FC_SIG_MAX) {
        free(g->signature.data);
        g->signature.data = malloc(sl);
        memcpy(g->signature.data, sig, sl);
        g->signature.len = sl;
        e->done = 1;
      }
    }
    break;
  case EV_LIST_ME_DROPPED:
    if (stage == FC_SA_CONSISTENCY)
      for (size_t i = 0; i < r->n_survivors; i++)
        if (r->survivors[i] == index) {
          memmove(&r->survivors[i], &r->survivors[i + 1], (r->n_survivors - i - 1) * sizeof *r->survivors);
          r->n_survivors--;
          e->done = 1;
          break;
        }
    break;
  case EV_SHORT_LIST:
    /* A coordinator that lists fewer survivors than the session promised to
     * sum (the last one "dropped"), to every client. */
    if (stage == FC_SA_CONSISTENCY && r->n_survivors) {
      r->n_survivors--;
      e->done = 1;
    }
    break;
  case EV_NON_NEIGHBOUR:
    if (stage == FC_SA_SHARE_KEYS && r->n_neighbor_keys) {
      r->neighbor_keys[0]->index = index == 1 ? 2 : 1; /* harness graph: is it a neighbour? maybe: see below */
      e->done = 1;
    }
    break;
  }
}

static void test_evil_coordinator(void) {
  struct {
    int mode;
    const char *expect;
  } cases[] = {
      {EV_SUBST_KEY, "not signed"},
      {EV_TAMPER_SHARE, "fails authentication"},
      {EV_SPLIT_VIEW, "different survivor list"},
      {EV_LIST_ME_DROPPED, "lists us as dropped"},
  };
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    evil e;
    memset(&e, 0, sizeof e);
    e.mode = cases[i].mode;
    e.victim = 3;
    sa_harness_cfg c = base(10, 9, 6, 500 + i);
    c.tamper_poll = tamper_poll;
    c.ctx = &e;
    c.session_out = e.session;
    sa_harness_result r;
    CHECK_EQ_INT(sa_harness_run(&c, &r), FEDC_OK);
    CHECK(e.done);
    CHECK(r.client_aborts >= 1);
    CHECK(strstr(r.client_why, cases[i].expect) != NULL);
    printf("  evil coordinator %d: %s\n", cases[i].mode, r.client_why);
  }
  /* A non-neighbour's keys in a sparse graph: forward a non-neighbour index. */
  {
    evil e;
    memset(&e, 0, sizeof e);
    e.mode = EV_NON_NEIGHBOUR;
    sa_harness_cfg c = base(20, 4, 3, 900);
    /* The tamper rewrites the first key's index to 1: with k = 4 of 19, index 1
     * is most likely no neighbour of the victim; if it is, the signature (made
     * for the real index) or the duplicate gives it away. */
    e.victim = 3;
    c.tamper_poll = tamper_poll;
    c.ctx = &e;
    sa_harness_result r;
    CHECK_EQ_INT(sa_harness_run(&c, &r), FEDC_OK);
    CHECK(e.done);
    CHECK(r.client_aborts >= 1);
    /* Either "not our neighbour" or (if index 1/2 happened to be one) "forwarded twice"/"not signed". */
    CHECK(strstr(r.client_why, "not our neighbour") || strstr(r.client_why, "twice") || strstr(r.client_why, "not signed"));
    printf("  evil coordinator (non-neighbour keys): %s\n", r.client_why);
  }
  /* Replay: save a share from round 5, deliver it in round 6. */
  {
    evil e;
    memset(&e, 0, sizeof e);
    e.mode = EV_SAVE_SHARE;
    e.victim = 0;
    sa_harness_cfg c = base(6, 5, 4, 1000);
    c.tamper_poll = tamper_poll;
    c.ctx = &e;
    sa_harness_result r;
    CHECK_EQ_INT(sa_harness_run(&c, &r), FEDC_OK);
    CHECK(e.have_saved);
    e.mode = EV_REPLAY_SHARE;
    e.victim = e.saved.to;
    c.round = 6;
    CHECK_EQ_INT(sa_harness_run(&c, &r), FEDC_OK);
    CHECK(e.done);
    CHECK(strstr(r.client_why, "fails authentication") != NULL);
    printf("  replayed share: %s\n", r.client_why);
  }
}

/* ---- a misbehaving client ---- */
static void tamper_submit(void *ctx, int stage, uint32_t index, Fedc__V1__SecAggSubmitRequest *q) {
  evil *e = ctx;
  if (e->mode == EV_BAD_UNMASK_SHARE && stage == FC_SA_UNMASK && q->n_unmask && (e->bad >> index & 1)) {
    for (size_t i = 0; i < q->n_unmask; i++) {
      uint8_t *b = q->unmask[i]->share.data;
      if (e->one_limb) { /* a limb chosen by the owner, changed by a value of its own */
        b[2 * (q->unmask[i]->owner % 16)] ^= (uint8_t)(0x10 + index);
      } else {
        b[0] ^= 1;
      }
    }
    e->tampered |= 1ull << index;
    e->done = 1;
  }
  if (index != e->victim) return;
  if (e->mode == EV_EMPTY_UNMASK && stage == FC_SA_UNMASK && q->n_unmask) {
    fc_sa_submit_clear(q); /* signed the list, then sends no share at all */
    q->round = 5;
    q->stage = FEDC__V1__SEC_AGG_STAGE__SA_UNMASK;
    e->done = 1;
  }
  if (e->mode == EV_BOTH_SHARES && stage == FC_SA_UNMASK && q->n_unmask) {
    q->unmask[0]->self_seed = !q->unmask[0]->self_seed; /* the other kind of share */
    e->done = 1;
  }
  if (e->mode == EV_FOREIGN_CERT && stage == FC_SA_ADVERTISE && q->keys) {
    /* Keys under another certificate carrying our own identity, signed with
     * its key: a signature that verifies under that certificate. */
    Fedc__V1__SecAggKeys *k = q->keys;
    uint8_t msg[FC_SA_ADV_MSG_LEN], *sig = malloc(FC_SIG_MAX);
    size_t sl = FC_SIG_MAX;
    char *pem = malloc(strlen(e->cert_pem) + 1);
    if (!sig || !pem) {
      free(sig);
      free(pem);
      return;
    }
    strcpy(pem, e->cert_pem);
    fc_sa_advertise_msg(e->session, index, k->enc_pk.data, k->mask_pk.data, msg);
    if (fc_sign_pem(e->key_pem, strlen(e->key_pem), msg, sizeof msg, sig, &sl) != FEDC_OK) {
      free(sig);
      free(pem);
      return;
    }
    free(k->certificate);
    free(k->signature.data);
    k->certificate = pem;
    k->signature.data = sig;
    k->signature.len = sl;
    e->done = 1;
  }
}

static int blamed_set(const sa_harness_result *r, uint64_t *set) {
  *set = 0;
  for (uint32_t i = 0; i < r->nblamed && i < 8; i++) *set |= 1ull << r->blamed[i];
  return r->nblamed <= 8;
}

/* Finding 2 of issue 20: one member sending bad unmask shares used to
 * abandon every round whose first t shares held one of its (9 of 12), naming
 * an honest owner ("the shares of client 1's self-mask seed are bad"). Now
 * each secret is decoded from all its shares: the rounds complete, exact,
 * and the sender alone is named, never an owner. */
static void test_bad_unmask_shares(void) {
  int completed = 0, exact = 0, named_right = 0, rounds = 12;
  for (int i = 0; i < rounds; i++) {
    evil e;
    memset(&e, 0, sizeof e);
    e.mode = EV_BAD_UNMASK_SHARE;
    uint32_t bad = 1 + (uint32_t)i % 6;
    e.bad = 1ull << bad;
    e.one_limb = i % 2;
    sa_harness_cfg c = base(6, 5, 4, 1200 + (uint64_t)i); /* 6 shares of each secret, t = 4: corrects 1 */
    c.tamper_submit = tamper_submit;
    c.ctx = &e;
    sa_harness_result r;
    CHECK_EQ_INT(sa_harness_run(&c, &r), FEDC_OK);
    CHECK(e.done);
    uint64_t set;
    completed += r.completed;
    exact += r.completed && r.exact;
    named_right += blamed_set(&r, &set) && set == e.tampered;
    if (!r.completed) printf("  round %d, bad client %u: %s\n", i, bad, r.why);
  }
  printf("  one client with bad unmask shares: %d of %d rounds completed (%d exact), the sender alone named in %d\n",
         completed, rounds, exact, named_right);
  CHECK_EQ_INT(completed, rounds);
  CHECK_EQ_INT(exact, rounds);
  CHECK_EQ_INT(named_right, rounds);

  /* Two of twelve, with dropouts before the masked input (so mask keys of
   * the dropped are rebuilt too): 12 shares, t = 7 (the
   * floor 2t > k + 1), corrects 2 when all arrive; with a few dropped the
   * subsets checked against the commitment find the rest. */
  for (uint64_t seed = 1300; seed < 1304; seed++) {
    evil e;
    memset(&e, 0, sizeof e);
    e.mode = EV_BAD_UNMASK_SHARE;
    e.bad = (1ull << 3) | (1ull << 8);
    sa_harness_cfg c = base(12, 11, 7, seed);
    c.drop[FC_SA_MASKED] = 0.1;
    c.tamper_submit = tamper_submit;
    c.ctx = &e;
    sa_harness_result r;
    CHECK_EQ_INT(sa_harness_run(&c, &r), FEDC_OK);
    uint64_t set;
    CHECK(r.completed && r.exact);
    CHECK(blamed_set(&r, &set) && set == e.tampered && set);
    if (!r.completed) printf("  two bad of twelve, seed %llu: %s\n", (unsigned long long)seed, r.why);
  }

  /* A sparse graph: 20 clients, 8 neighbours (9 shares of each secret), t = 5. */
  {
    evil e;
    memset(&e, 0, sizeof e);
    e.mode = EV_BAD_UNMASK_SHARE;
    e.bad = 1ull << 11;
    sa_harness_cfg c = base(20, 8, 5, 1400);
    c.tamper_submit = tamper_submit;
    c.ctx = &e;
    sa_harness_result r;
    uint64_t set;
    CHECK_EQ_INT(sa_harness_run(&c, &r), FEDC_OK);
    CHECK(r.completed && r.exact);
    CHECK(blamed_set(&r, &set) && set == (1ull << 11));
  }

  /* t = n - 1 of a complete graph of 5: 5 shares, t = 4, nothing to correct
   * with (radius 0), but the 5 subsets of 4 against the commitment find the
   * one that checks: completed, the sender named. */
  {
    evil e;
    memset(&e, 0, sizeof e);
    e.mode = EV_BAD_UNMASK_SHARE;
    e.bad = 1ull << 2;
    sa_harness_cfg c = base(5, 4, 4, 1500);
    c.tamper_submit = tamper_submit;
    c.ctx = &e;
    sa_harness_result r;
    uint64_t set;
    CHECK_EQ_INT(sa_harness_run(&c, &r), FEDC_OK);
    CHECK(r.completed && r.exact);
    CHECK(blamed_set(&r, &set) && set == (1ull << 2));
  }

  /* Three of six bad with t = 4: fewer than t right shares of every secret.
   * Abandoned, and nobody named (an honest sender or owner never is). */
  {
    evil e;
    memset(&e, 0, sizeof e);
    e.mode = EV_BAD_UNMASK_SHARE;
    e.bad = (1ull << 1) | (1ull << 2) | (1ull << 3);
    sa_harness_cfg c = base(6, 5, 4, 1600);
    c.tamper_submit = tamper_submit;
    c.ctx = &e;
    sa_harness_result r;
    CHECK_EQ_INT(sa_harness_run(&c, &r), FEDC_OK);
    CHECK(!r.completed);
    CHECK(strstr(r.why, "cannot rebuild") != NULL);
    CHECK_EQ_INT(r.nblamed, 0);
    printf("  three bad of six (t = 4): %s\n", r.why);
  }
}

/* Finding 2b of issue 20: keys advertised under a certificate that is not
 * the caller's own TLS certificate (another CA's with its identity, another
 * federation's, or a second one of the same CA) used to be accepted, and
 * every honest neighbour aborted over it ("only 1 clients left after the
 * shares stage"). Now the coordinator refuses it, naming the reason, and the
 * round completes without that client. */
static char *slurp_path(const char *path) {
  char *b = NULL;
  size_t n = 0;
  return fc_read_file(path, 1 << 20, &b, &n) == FEDC_OK ? b : NULL;
}

static void test_foreign_certificate(void) {
  char dir[3][300], err[300], path[400];
  snprintf(dir[0], sizeof dir[0], "%s/foreign", root);  /* another CA, same federation name */
  snprintf(dir[1], sizeof dir[1], "%s/otherfed", root); /* another federation */
  snprintf(dir[2], sizeof dir[2], "%s/second", root);   /* our CA, a second certificate of c00002 */
  CHECK_EQ_INT(fc_pki_init(dir[0], "secagg-test", NULL, 0, 30, "ec", err, sizeof err), FEDC_OK);
  CHECK_EQ_INT(fc_pki_issue(dir[0], "client", "c00002", NULL, 30, err, sizeof err), FEDC_OK);
  CHECK_EQ_INT(fc_pki_init(dir[1], "other-fed", NULL, 0, 30, "ec", err, sizeof err), FEDC_OK);
  CHECK_EQ_INT(fc_pki_issue(dir[1], "client", "c00002", NULL, 30, err, sizeof err), FEDC_OK);
  CHECK_EQ_INT(fc_pki_issue(pki, "client", "c00002", dir[2], 30, err, sizeof err), FEDC_OK);
  const char *expect[3] = {"foreign CA", "another federation", "not the caller's"};
  for (int v = 0; v < 3; v++) {
    snprintf(path, sizeof path, "%s/client-c00002.crt", dir[v]);
    char *cert = slurp_path(path);
    snprintf(path, sizeof path, "%s/client-c00002.key", dir[v]);
    char *key = slurp_path(path);
    CHECK(cert && key);
    if (!cert || !key) {
      free(cert);
      free(key);
      continue;
    }
    evil e;
    memset(&e, 0, sizeof e);
    e.mode = EV_FOREIGN_CERT;
    e.victim = 2;
    e.cert_pem = cert;
    e.key_pem = key;
    sa_harness_cfg c = base(6, 5, 4, 1700 + (uint64_t)v);
    c.tamper_submit = tamper_submit;
    c.ctx = &e;
    c.session_out = e.session;
    sa_harness_result r;
    CHECK_EQ_INT(sa_harness_run(&c, &r), FEDC_OK);
    CHECK(e.done);
    CHECK_EQ_INT(r.submit_refused, 1);
    CHECK(strncmp(r.submit_why, "client 2: ", 10) == 0 && strstr(r.submit_why, expect[v]) != NULL);
    CHECK(r.completed && r.exact);
    CHECK_EQ_INT(r.remaining[0], 5);
    /* Only the refused client itself stops (it is dropped); no neighbour aborts. */
    CHECK_EQ_INT(r.client_aborts, 1);
    CHECK(strncmp(r.client_why, "client 2: ", 10) == 0);
    printf("  %s\n", r.submit_why);
    fc_wipe(key, strlen(key));
    free(key);
    free(cert);
  }
}

static void test_evil_client(void) {
  /* A share of the wrong kind is refused by the coordinator; the round still
   * completes from the others' shares (t = 4 of the 5 other holders). */
  evil e;
  memset(&e, 0, sizeof e);
  e.mode = EV_BOTH_SHARES;
  e.victim = 2;
  sa_harness_cfg c = base(6, 5, 4, 1300);
  c.tamper_submit = tamper_submit;
  c.ctx = &e;
  sa_harness_result r;
  CHECK_EQ_INT(sa_harness_run(&c, &r), FEDC_OK);
  CHECK(e.done);
  CHECK(r.completed && r.exact);
  CHECK_EQ_INT(r.remaining[FC_SA_UNMASK - 1], 5); /* the victim's unmask message was refused */
}

/* An empty unmask message is malformed: refused, so the client counts as
 * dropped at the unmask stage rather than as one that sent its shares. */
static void test_empty_unmask(void) {
  evil e;
  memset(&e, 0, sizeof e);
  e.mode = EV_EMPTY_UNMASK;
  e.victim = 3;
  sa_harness_cfg c = base(6, 5, 4, 1400);
  c.tamper_submit = tamper_submit;
  c.ctx = &e;
  sa_harness_result r;
  CHECK_EQ_INT(sa_harness_run(&c, &r), FEDC_OK);
  CHECK(e.done);
  CHECK_EQ_INT(r.submit_refused, 1);
  CHECK(strstr(r.submit_why, "client 3: malformed unmask message") != NULL);
  CHECK_EQ_INT(r.remaining[FC_SA_UNMASK - 1], 5);
  CHECK(r.completed && r.exact); /* the other five's shares suffice */
  printf("  empty unmask message: %s\n", r.submit_why);
}

/* min_survivors (the coordinator's min_updates): the masked stage closes
 * into abandonment below it, before any survivor list goes out; and a
 * client signs no list shorter than it, whatever the coordinator says. */
static void test_min_survivors(void) {
  sa_harness_cfg c = base(8, 7, 5, 1500);
  c.min_survivors = 8;
  c.drop[FC_SA_MASKED] = 0.2;
  sa_harness_result r;
  /* The first seed (deterministic) with a dropout at the masked stage. */
  do {
    c.seed++;
    CHECK_EQ_INT(sa_harness_run(&c, &r), FEDC_OK);
  } while (r.remaining[FC_SA_MASKED - 1] == 8 && c.seed < 1600);
  CHECK(!r.completed);
  CHECK(r.remaining[FC_SA_MASKED - 1] >= 5 && r.remaining[FC_SA_MASKED - 1] < 8); /* t would have allowed it */
  CHECK_EQ_INT(r.remaining[FC_SA_CONSISTENCY - 1], 0); /* no list went out, nothing was signed */
  CHECK(strstr(r.why, "fewer than min_updates 8: nothing is unmasked") != NULL);
  printf("  masked stage below min_survivors: %s\n", r.why);
  /* Everyone survives; all is well. */
  c.drop[FC_SA_MASKED] = 0;
  CHECK_EQ_INT(sa_harness_run(&c, &r), FEDC_OK);
  CHECK(r.completed && r.exact);
  /* A coordinator that shows a list one short anyway: every client refuses to sign. */
  evil e;
  memset(&e, 0, sizeof e);
  e.mode = EV_SHORT_LIST;
  c.tamper_poll = tamper_poll;
  c.ctx = &e;
  CHECK_EQ_INT(sa_harness_run(&c, &r), FEDC_OK);
  CHECK(e.done);
  CHECK(!r.completed);
  CHECK_EQ_INT(r.client_aborts, 8);
  CHECK(strstr(r.client_why, "7 survivors: fewer than the 8 the round needs") != NULL);
  printf("  short survivor list: %s\n", r.client_why);
}

/* The fake PRG of the interface: a counter stream, so tests of the protocol
 * arithmetic need no AES (and show the expansion only uses the interface). */
typedef struct fake_state {
  uint8_t key[16];
  uint64_t pos;
} fake_state;
static int fake_start(void **st, const uint8_t key[16], uint64_t block) {
  fake_state *f = malloc(sizeof *f);
  if (!f) return FEDC_ERR_NOMEM;
  memcpy(f->key, key, 16);
  f->pos = block * 16;
  *st = f;
  return FEDC_OK;
}
static int fake_fill(void *st, uint8_t *out, size_t len) {
  fake_state *f = st;
  for (size_t i = 0; i < len; i++, f->pos++) out[i] = (uint8_t)(f->key[f->pos % 16] * 31 + f->pos * 7 + (f->pos >> 8));
  return FEDC_OK;
}
static void fake_stop(void *st) { free(st); }
static const fc_prg_ops fake_prg = {"fake", fake_start, fake_fill, fake_stop};

static void test_fake_prg(void) {
  sa_harness_cfg c = base(7, 6, 4, 4242);
  c.prg = &fake_prg;
  c.drop[FC_SA_MASKED] = 0.3;
  sa_harness_result r;
  CHECK_EQ_INT(sa_harness_run(&c, &r), FEDC_OK);
  CHECK(r.completed && r.exact);
}

int main(void) {
  snprintf(root, sizeof root, "/tmp/fedc-secagg-test-XXXXXX");
  if (!mkdtemp(root)) return 2;
  snprintf(pki, sizeof pki, "%s/pki", root);
  if (sa_harness_pki(pki, 50) != FEDC_OK) return 2;
  test_graph();
  test_quant();
  test_quant_reference();
  test_withdraw();
  test_mask_expansion();
  test_exact_sums();
  test_below_threshold();
  test_evil_coordinator();
  test_evil_client();
  test_empty_unmask();
  test_min_survivors();
  test_bad_unmask_shares();
  test_foreign_certificate();
  test_fake_prg();
  char cmd[400];
  snprintf(cmd, sizeof cmd, "rm -rf '%s'", root);
  if (system(cmd) != 0) fprintf(stderr, "cleanup failed\n");
  return CHECK_DONE();
}
