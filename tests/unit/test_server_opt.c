/*
 * test_server_opt.c - the server optimizers (coordinator/server_opt.h):
 *   - hand-computed first steps (where tau and the missing bias correction
 *     of Reddi et al.'s Algorithm 2 show);
 *   - each method against a plain double-precision reference written from
 *     the papers' formulas, over 20 steps of random deltas;
 *   - the state saved with a version and read back continues bit for bit;
 *   - the model average: its formula with the warm-up, its place in the
 *     state file (read back with or without the moments' readers asking
 *     for it), and that it never changes the steps;
 *   - configuration checks.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "check.h"
#include "common/rng.h"
#include "common/safetensors.h"
#include "crypto/sha256.h"
#include "coordinator/server_opt.h"
#include "coordinator/store.h"
#include "fedc/error.h"

static fc_sopt *make(int kind, float lr) {
  fc_sopt_cfg c;
  fc_sopt_cfg_defaults(&c, kind);
  c.lr = lr;
  fc_sopt *o = NULL;
  CHECK_EQ_INT(fc_sopt_create(&c, 3, &o), FEDC_OK);
  return o;
}

static void test_first_steps(void) {
  const float d[3] = {1.0f, -0.5f, 0.0f};
  /* sgd: x += lr d */
  fc_sopt *o = make(FC_SOPT_SGD, 0.5f);
  float x[3] = {0, 0, 0};
  fc_sopt_step(o, x, d);
  CHECK(x[0] == 0.5f && x[1] == -0.25f && x[2] == 0.0f);
  fc_sopt_destroy(o);
  /* avgm, beta 0.9: m1 = d, x1 = lr d; m2 = 1.9 d, x2 = lr 2.9 d */
  o = make(FC_SOPT_AVGM, 1.0f);
  float y[3] = {0, 0, 0};
  fc_sopt_step(o, y, d);
  fc_sopt_step(o, y, d);
  CHECK(fabsf(y[0] - 2.9f) < 1e-6f && fabsf(y[1] + 1.45f) < 1e-6f);
  fc_sopt_destroy(o);
  /* adam, step 1, d = 1: m = 0.1, v = 0.99 tau^2 + 0.01 = 0.01000099,
   * x = lr m / (sqrt(v) + tau) = 0.1 / (0.10000495 + 0.001) = 0.990050... :
   * not 1 (no bias correction: Algorithm 2 as published), and tau shows. */
  o = make(FC_SOPT_ADAM, 1.0f);
  float z[3] = {0, 0, 0};
  fc_sopt_step(o, z, d);
  double want = 0.1 / (sqrt(0.99e-6 + 0.01) + 1e-3);
  CHECK(fabs(z[0] - want) < 1e-6);
  CHECK(fabs(want - 0.99005) < 1e-4);
  CHECK(z[2] == 0.0f); /* a zero delta never moves a weight */
  fc_sopt_destroy(o);
  /* adagrad step 1: v = tau^2 + 1, x = 0.1 / (sqrt(1 + 1e-6) + 1e-3) */
  o = make(FC_SOPT_ADAGRAD, 1.0f);
  float w[3] = {0, 0, 0};
  fc_sopt_step(o, w, d);
  CHECK(fabs(w[0] - 0.1 / (sqrt(1 + 1e-6) + 1e-3)) < 1e-6);
  fc_sopt_destroy(o);
  /* yogi step 1: v0 = tau^2 < d^2, so v = tau^2 + 0.01 d^2 (grows like adam's, but additively) */
  o = make(FC_SOPT_YOGI, 1.0f);
  float u[3] = {0, 0, 0};
  fc_sopt_step(o, u, d);
  CHECK(fabs(u[0] - 0.1 / (sqrt(1e-6 + 0.01) + 1e-3)) < 1e-6);
  fc_sopt_destroy(o);
}

/* The reference: the papers' update rules in double precision. */
static void ref_step(int kind, const fc_sopt_cfg *c, double *x, double *m, double *v, const double *d, size_t n) {
  for (size_t i = 0; i < n; i++) {
    double g = d[i];
    switch (kind) {
    case FC_SOPT_SGD: x[i] += c->lr * g; break;
    case FC_SOPT_AVGM:
      m[i] = c->beta1 * m[i] + g;
      x[i] += c->nesterov ? c->lr * (g + c->beta1 * m[i]) : c->lr * m[i];
      break;
    default:
      m[i] = c->beta1 * m[i] + (1 - c->beta1) * g;
      if (kind == FC_SOPT_ADAGRAD) v[i] += g * g;
      else if (kind == FC_SOPT_ADAM)
        v[i] = c->beta2 * v[i] + (1 - c->beta2) * g * g;
      else
        v[i] -= (1 - c->beta2) * g * g * (v[i] > g * g ? 1 : v[i] < g * g ? -1 : 0);
      x[i] += c->lr * m[i] / (sqrt(v[i]) + c->tau);
    }
  }
}

static void test_against_reference(void) {
  enum { N = 257, STEPS = 20 };
  for (int kind = FC_SOPT_SGD; kind <= FC_SOPT_YOGI; kind++) {
    for (int nesterov = 0; nesterov <= (kind == FC_SOPT_AVGM); nesterov++) {
      fc_sopt_cfg c;
      fc_sopt_cfg_defaults(&c, kind);
      c.lr = kind >= FC_SOPT_ADAGRAD ? 0.01f : 0.7f;
      c.nesterov = nesterov;
      fc_sopt *o = NULL;
      CHECK_EQ_INT(fc_sopt_create(&c, N, &o), FEDC_OK);
      static float x[N], d[N];
      static double rx[N], rm[N], rv[N], rd[N];
      fc_rng r;
      fc_rng_seed(&r, 11 + (uint64_t)kind);
      for (int i = 0; i < N; i++) {
        x[i] = (float)fc_rng_normal(&r);
        rx[i] = x[i];
        rm[i] = 0;
        rv[i] = (double)c.tau * c.tau;
      }
      double worst = 0;
      for (int s = 0; s < STEPS; s++) {
        for (int i = 0; i < N; i++) {
          /* Deltas of varying size, some exactly zero, some tiny. */
          d[i] = i % 17 == 0 ? 0.0f : (float)(fc_rng_normal(&r) * (i % 5 == 0 ? 1e-4 : 0.05));
          rd[i] = d[i];
        }
        fc_sopt_step(o, x, d);
        ref_step(kind, &c, rx, rm, rv, rd, N);
        for (int i = 0; i < N; i++) {
          double e = fabs(x[i] - rx[i]) / (1 + fabs(rx[i]));
          if (e > worst) worst = e;
        }
      }
      if (worst > 1e-5) fprintf(stderr, "  %s%s: worst relative error %.3g\n", fc_sopt_name(kind), nesterov ? "+nesterov" : "", worst);
      CHECK(worst < 1e-5);
      CHECK_EQ_INT(o->step, STEPS);
      fc_sopt_destroy(o);
    }
  }
}

/* 5 steps straight vs 3 steps, saved, read into a fresh optimizer, 2 more. */
static void test_restart_bit_identical(void) {
  char dir[] = "/tmp/fedc-test-sopt-XXXXXX";
  CHECK(mkdtemp(dir) != NULL);
  char err[600], models[700];
  snprintf(models, sizeof models, "%s/models", dir);
  CHECK_EQ_INT(fc_store_open(dir, err, sizeof err), FEDC_OK);
  enum { N = 1001 };
  uint8_t sha[32] = {7}, other[32] = {8};
  for (int kind = FC_SOPT_AVGM; kind <= FC_SOPT_YOGI; kind++) {
    fc_sopt_cfg c;
    fc_sopt_cfg_defaults(&c, kind);
    c.lr = 0.05f;
    fc_sopt *a = NULL, *b = NULL;
    CHECK_EQ_INT(fc_sopt_create(&c, N, &a), FEDC_OK);
    CHECK_EQ_INT(fc_sopt_create(&c, N, &b), FEDC_OK);
    static float xa[N], xb[N], d[5][N];
    fc_rng r;
    fc_rng_seed(&r, 5);
    for (int s = 0; s < 5; s++)
      for (int i = 0; i < N; i++) d[s][i] = (float)(fc_rng_normal(&r) * 0.1);
    memset(xa, 0, sizeof xa);
    for (int s = 0; s < 5; s++) fc_sopt_step(a, xa, d[s]);
    memset(xb, 0, sizeof xb);
    for (int s = 0; s < 3; s++) fc_sopt_step(b, xb, d[s]);
    int ns = fc_sopt_nstate(kind);
    uint8_t wrote[FC_SHA256_LEN], read_back[FC_SHA256_LEN];
    CHECK_EQ_INT(fc_store_write_opt(dir, NULL, 3, sha, fc_sopt_name(kind), b->step, ns, b->m, b->v, NULL, N, wrote, err,
                                    sizeof err),
                 FEDC_OK);
    fc_sopt_destroy(b);
    CHECK_EQ_INT(fc_sopt_create(&c, N, &b), FEDC_OK);
    /* Wrong method, wrong model version: refused, never silently used. */
    const char *wrong = kind == FC_SOPT_ADAM ? "yogi" : "adam";
    CHECK_EQ_INT(fc_store_read_opt(dir, NULL, 3, sha, wrong, 2, b->m, b->v, NULL, NULL, N, &b->step, NULL, err, sizeof err),
                 FEDC_ERR_FORMAT);
    CHECK_EQ_INT(
        fc_store_read_opt(dir, NULL, 3, other, fc_sopt_name(kind), ns, b->m, b->v, NULL, NULL, N, &b->step, NULL, err, sizeof err),
        FEDC_ERR_FORMAT);
    CHECK_EQ_INT(
        fc_store_read_opt(dir, NULL, 4, sha, fc_sopt_name(kind), ns, b->m, b->v, NULL, NULL, N, &b->step, NULL, err, sizeof err),
        FEDC_ERR_NOT_FOUND);
    CHECK_EQ_INT(fc_store_read_opt(dir, NULL, 3, sha, fc_sopt_name(kind), ns, b->m, b->v, NULL, NULL, N, &b->step, read_back, err,
                                   sizeof err),
                 FEDC_OK);
    CHECK_EQ_INT(b->step, 3);
    CHECK(memcmp(wrote, read_back, FC_SHA256_LEN) == 0); /* what the manifest names is what comes back */
    for (int s = 3; s < 5; s++) fc_sopt_step(b, xb, d[s]);
    CHECK(memcmp(xa, xb, sizeof xa) == 0);
    CHECK(memcmp(a->m, b->m, N * sizeof(float)) == 0);
    if (ns == 2) CHECK(memcmp(a->v, b->v, N * sizeof(float)) == 0);
    fc_sopt_destroy(a);
    fc_sopt_destroy(b);
  }
  /* A damaged file is an error, not garbage moments. */
  char path[800];
  snprintf(path, sizeof path, "%s/v000003.opt.safetensors", models);
  FILE *f = fopen(path, "r+b");
  CHECK(f != NULL);
  if (f) {
    fseek(f, -5, SEEK_END);
    fputc('x', f);
    fclose(f);
  }
  fc_sopt_cfg c;
  fc_sopt_cfg_defaults(&c, FC_SOPT_YOGI);
  c.lr = 0.05f;
  fc_sopt *b = NULL;
  CHECK_EQ_INT(fc_sopt_create(&c, N, &b), FEDC_OK);
  CHECK_EQ_INT(fc_store_read_opt(dir, NULL, 3, sha, "yogi", 2, b->m, b->v, NULL, NULL, N, &b->step, NULL, err, sizeof err),
               FEDC_ERR_HASH);
  fc_sopt_destroy(b);
  char cmd[800];
  snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
  CHECK_EQ_INT(system(cmd), 0);
}

static void test_config(void) {
  char why[200];
  fc_sopt_cfg c;
  CHECK_EQ_INT(fc_sopt_parse("adam"), FC_SOPT_ADAM);
  CHECK_EQ_INT(fc_sopt_parse("Adam"), -1);
  CHECK_EQ_INT(fc_sopt_parse("rmsprop"), -1);
  fc_sopt_cfg_defaults(&c, FC_SOPT_ADAM);
  c.lr = 0.01f;
  CHECK_EQ_INT(fc_sopt_cfg_check(&c, why, sizeof why), FEDC_OK);
  c.beta2 = 1.0f;
  CHECK_EQ_INT(fc_sopt_cfg_check(&c, why, sizeof why), FEDC_ERR_INVALID);
  CHECK(strstr(why, "server_beta2") != NULL);
  c.beta2 = 0.99f;
  c.tau = 0;
  CHECK_EQ_INT(fc_sopt_cfg_check(&c, why, sizeof why), FEDC_ERR_INVALID);
  c.tau = 1e-3f;
  c.lr = NAN;
  CHECK_EQ_INT(fc_sopt_cfg_check(&c, why, sizeof why), FEDC_ERR_INVALID);
  fc_sopt_cfg_defaults(&c, FC_SOPT_AVGM);
  c.lr = 1;
  c.beta1 = -0.1f;
  CHECK_EQ_INT(fc_sopt_cfg_check(&c, why, sizeof why), FEDC_ERR_INVALID);
  c.beta1 = 0.9f;
  float bad_avg[] = {1.0f, -0.1f, NAN, INFINITY};
  for (int i = 0; i < 4; i++) {
    c.average = bad_avg[i];
    CHECK_EQ_INT(fc_sopt_cfg_check(&c, why, sizeof why), FEDC_ERR_INVALID);
    CHECK(strstr(why, "model_average") != NULL);
  }
  c.average = 0.99f;
  CHECK_EQ_INT(fc_sopt_cfg_check(&c, why, sizeof why), FEDC_OK);
  CHECK_EQ_INT(fc_sopt_nstate(FC_SOPT_SGD), 0);
  CHECK_EQ_INT(fc_sopt_nstate(FC_SOPT_AVGM), 1);
  CHECK_EQ_INT(fc_sopt_nstate(FC_SOPT_YOGI), 2);
}

/* The model average against a double-precision reference of
 * a_0 = x_0, a_t = b_t a_{t-1} + (1 - b_t) x_t, b_t = min(beta, (1+t)/(10+t));
 * averaging leaves the iterate and moments exactly as without it. */
static void test_average(void) {
  enum { N = 257, T = 40 };
  CHECK(fabsf(fc_sopt_average_beta(0.9f, 0) - 0.1f) < 1e-7f);
  CHECK(fabsf(fc_sopt_average_beta(0.9f, 5) - 6.0f / 15.0f) < 1e-7f);
  CHECK_EQ_INT(fc_sopt_average_beta(0.9f, 90) == 0.9f, 1); /* 91/100 > 0.9 */
  CHECK_EQ_INT(fc_sopt_average_beta(0.5f, UINT64_MAX) == 0.5f, 1);
  fc_sopt_cfg c;
  fc_sopt_cfg_defaults(&c, FC_SOPT_AVGM);
  c.lr = 0.5f;
  fc_sopt *plain = NULL, *avg = NULL;
  CHECK_EQ_INT(fc_sopt_create(&c, N, &plain), FEDC_OK);
  CHECK(plain->a == NULL);
  c.average = 0.8f;
  CHECK_EQ_INT(fc_sopt_create(&c, N, &avg), FEDC_OK);
  CHECK(avg->a != NULL && !avg->a_set);
  static float xp[N], xa[N], d[N];
  static double ref[N];
  fc_rng r;
  fc_rng_seed(&r, 11);
  for (int i = 0; i < N; i++) xp[i] = xa[i] = (float)fc_rng_normal(&r);
  fc_sopt_average(plain, xp, 0); /* no-op without */
  fc_sopt_average(avg, xa, 0);
  CHECK(avg->a_set && memcmp(avg->a, xa, sizeof xa) == 0);
  for (int i = 0; i < N; i++) ref[i] = xa[i];
  double worst = 0;
  for (uint64_t t = 1; t <= T; t++) {
    for (int i = 0; i < N; i++) d[i] = (float)(fc_rng_normal(&r) * 0.1);
    fc_sopt_step(plain, xp, d);
    fc_sopt_step(avg, xa, d);
    fc_sopt_average(avg, xa, t);
    double b = fmin(0.8, (1.0 + (double)t) / (10.0 + (double)t));
    for (int i = 0; i < N; i++) {
      ref[i] = b * ref[i] + (1 - b) * xa[i];
      worst = fmax(worst, fabs(ref[i] - avg->a[i]));
    }
  }
  CHECK(worst < 1e-5);
  CHECK(memcmp(xp, xa, sizeof xp) == 0); /* the iterate never sees the average */
  CHECK(memcmp(plain->m, avg->m, N * sizeof(float)) == 0);
  /* Saved after the moments, read back with them; a reader that does not
   * ask for it still gets the moments; a file without one says so. */
  char dir[] = "/tmp/fedc_sopt_avg_XXXXXX", err[600];
  CHECK(mkdtemp(dir) != NULL);
  CHECK_EQ_INT(fc_store_open(dir, err, sizeof err), FEDC_OK);
  uint8_t sha[32] = {3}, wrote[FC_SHA256_LEN];
  CHECK_EQ_INT(fc_store_write_opt(dir, NULL, 7, sha, "avgm", avg->step, 1, avg->m, NULL, avg->a, N, wrote, err,
                                  sizeof err),
               FEDC_OK);
  static float m[N], a[N];
  uint64_t step = 0;
  int found = 0;
  CHECK_EQ_INT(fc_store_read_opt(dir, NULL, 7, sha, "avgm", 1, m, NULL, a, &found, N, &step, NULL, err, sizeof err),
               FEDC_OK);
  CHECK(found && step == T && memcmp(a, avg->a, sizeof a) == 0 && memcmp(m, avg->m, sizeof m) == 0);
  memset(m, 0, sizeof m);
  CHECK_EQ_INT(fc_store_read_opt(dir, NULL, 7, sha, "avgm", 1, m, NULL, NULL, &found, N, &step, NULL, err, sizeof err),
               FEDC_OK);
  CHECK(!found && memcmp(m, avg->m, sizeof m) == 0);
  /* sgd keeps no moments: the file holds the average alone. */
  CHECK_EQ_INT(fc_store_write_opt(dir, NULL, 8, sha, "sgd", 0, 0, NULL, NULL, avg->a, N, NULL, err, sizeof err),
               FEDC_OK);
  memset(a, 0, sizeof a);
  CHECK_EQ_INT(fc_store_read_opt(dir, NULL, 8, sha, "sgd", 0, NULL, NULL, a, &found, N, &step, NULL, err, sizeof err),
               FEDC_OK);
  CHECK(found && memcmp(a, avg->a, sizeof a) == 0);
  CHECK_EQ_INT(fc_store_write_opt(dir, NULL, 9, sha, "avgm", 0, 1, avg->m, NULL, NULL, N, NULL, err, sizeof err),
               FEDC_OK);
  found = 1;
  CHECK_EQ_INT(fc_store_read_opt(dir, NULL, 9, sha, "avgm", 1, m, NULL, a, &found, N, &step, NULL, err, sizeof err),
               FEDC_OK);
  CHECK(!found);
  /* The tensors must be m (and v), then avg, each of n: the same values in
   * another order or split are refused, not read misaligned. */
  {
    fc_model_spec sp;
    memset(&sp, 0, sizeof sp);
    uint64_t sh = N, sh2[2] = {N + 1, N - 1};
    fc_model_spec_add(&sp, "avg", 1, &sh);
    fc_model_spec_add(&sp, "m", 1, &sh);
    static float buf[2 * N];
    memcpy(buf, avg->a, N * sizeof(float));
    memcpy(buf + N, avg->m, N * sizeof(float));
    uint8_t psha[FC_SHA256_LEN];
    char hex[FC_SHA256_HEX_LEN], path[700];
    fc_sha256(buf, sizeof buf, psha);
    fc_st_meta meta;
    memset(&meta, 0, sizeof meta);
    fc_st_meta_set(&meta, "fedc.optimizer", "avgm");
    fc_st_meta_set(&meta, "fedc.step", "1");
    fc_st_meta_set(&meta, "fedc.version", "10");
    fc_st_meta_set(&meta, "fedc.model_sha256", fc_hex(sha, FC_SHA256_LEN, hex));
    fc_st_meta_set(&meta, "fedc.sha256", fc_hex(psha, FC_SHA256_LEN, hex));
    snprintf(path, sizeof path, "%s/models/v000010.opt.safetensors", dir);
    CHECK_EQ_INT(fc_safetensors_write(path, &sp, buf, &meta, err, sizeof err), FEDC_OK);
    CHECK_EQ_INT(fc_store_read_opt(dir, NULL, 10, sha, "avgm", 1, m, NULL, a, &found, N, &step, NULL, err, sizeof err),
                 FEDC_ERR_FORMAT);
    memset(&sp, 0, sizeof sp);
    fc_model_spec_add(&sp, "m", 1, &sh2[0]);
    fc_model_spec_add(&sp, "avg", 1, &sh2[1]);
    CHECK_EQ_INT(fc_safetensors_write(path, &sp, buf, &meta, err, sizeof err), FEDC_OK);
    CHECK_EQ_INT(fc_store_read_opt(dir, NULL, 10, sha, "avgm", 1, m, NULL, a, &found, N, &step, NULL, err, sizeof err),
                 FEDC_ERR_FORMAT);
    CHECK(strstr(err, "tensors") != NULL);
  }
  /* A file of the wrong length for its tensors is refused. */
  CHECK_EQ_INT(fc_store_read_opt(dir, NULL, 7, sha, "avgm", 1, m, NULL, a, &found, N - 1, &step, NULL, err, sizeof err),
               FEDC_ERR_FORMAT);
  fc_sopt_destroy(plain);
  fc_sopt_destroy(avg);
  char cmd[800];
  snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
  CHECK_EQ_INT(system(cmd), 0);
}

int main(void) {
  test_first_steps();
  test_average();
  test_against_reference();
  test_restart_bit_identical();
  test_config();
  return CHECK_DONE();
}
