/*
 * test_server_opt.c - the server optimizers (coordinator/server_opt.h):
 *   - hand-computed first steps (where tau and the missing bias correction
 *     of Reddi et al.'s Algorithm 2 show);
 *   - each method against a plain double-precision reference written from
 *     the papers' formulas, over 20 steps of random deltas;
 *   - the state saved with a version and read back continues bit for bit;
 *   - configuration checks.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "check.h"
#include "common/rng.h"
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
    CHECK_EQ_INT(fc_store_write_opt(dir, NULL, 3, sha, fc_sopt_name(kind), b->step, ns, b->m, b->v, N, wrote, err,
                                    sizeof err),
                 FEDC_OK);
    fc_sopt_destroy(b);
    CHECK_EQ_INT(fc_sopt_create(&c, N, &b), FEDC_OK);
    /* Wrong method, wrong model version: refused, never silently used. */
    const char *wrong = kind == FC_SOPT_ADAM ? "yogi" : "adam";
    CHECK_EQ_INT(fc_store_read_opt(dir, NULL, 3, sha, wrong, 2, b->m, b->v, N, &b->step, NULL, err, sizeof err),
                 FEDC_ERR_FORMAT);
    CHECK_EQ_INT(
        fc_store_read_opt(dir, NULL, 3, other, fc_sopt_name(kind), ns, b->m, b->v, N, &b->step, NULL, err, sizeof err),
        FEDC_ERR_FORMAT);
    CHECK_EQ_INT(
        fc_store_read_opt(dir, NULL, 4, sha, fc_sopt_name(kind), ns, b->m, b->v, N, &b->step, NULL, err, sizeof err),
        FEDC_ERR_NOT_FOUND);
    CHECK_EQ_INT(fc_store_read_opt(dir, NULL, 3, sha, fc_sopt_name(kind), ns, b->m, b->v, N, &b->step, read_back, err,
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
  CHECK_EQ_INT(fc_store_read_opt(dir, NULL, 3, sha, "yogi", 2, b->m, b->v, N, &b->step, NULL, err, sizeof err),
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
  CHECK_EQ_INT(fc_sopt_nstate(FC_SOPT_SGD), 0);
  CHECK_EQ_INT(fc_sopt_nstate(FC_SOPT_AVGM), 1);
  CHECK_EQ_INT(fc_sopt_nstate(FC_SOPT_YOGI), 2);
}

int main(void) {
  test_first_steps();
  test_against_reference();
  test_restart_bit_identical();
  test_config();
  return CHECK_DONE();
}
