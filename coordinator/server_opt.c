/*
 * server_opt.c - FedAvg(M) / FedAdagrad / FedAdam / FedYogi server steps
 * (server_opt.h). Plain loops over the parameters, written so the compiler
 * vectorises them (restrict, no branches but Yogi's sign), O(d) state per
 * moment. Float arithmetic in a fixed order: the same inputs give the same
 * bits, which is what lets a restart continue exactly.
 */
#include "coordinator/server_opt.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fedc/error.h"

static const char *const names[] = {"sgd", "avgm", "adagrad", "adam", "yogi"};

int fc_sopt_parse(const char *name) {
  for (int i = 0; i < (int)(sizeof names / sizeof names[0]); i++)
    if (strcmp(name, names[i]) == 0) return i;
  return -1;
}

const char *fc_sopt_name(int kind) {
  return kind >= 0 && kind < (int)(sizeof names / sizeof names[0]) ? names[kind] : "?";
}

void fc_sopt_cfg_defaults(fc_sopt_cfg *c, int kind) {
  c->kind = kind;
  c->beta1 = 0.9f;
  c->beta2 = 0.99f;
  c->tau = 1e-3f;
  c->nesterov = 0;
  c->average = 0;
}

int fc_sopt_cfg_check(const fc_sopt_cfg *c, char *why, size_t whylen) {
  if (c->kind < FC_SOPT_SGD || c->kind > FC_SOPT_YOGI) {
    snprintf(why, whylen, "server optimizer must be sgd, avgm, adagrad, adam or yogi");
    return FEDC_ERR_INVALID;
  }
  if (!(c->lr > 0 && isfinite(c->lr))) {
    snprintf(why, whylen, "server_lr must be finite and > 0 (got %g)", (double)c->lr);
    return FEDC_ERR_INVALID;
  }
  if (c->kind != FC_SOPT_SGD && !(c->beta1 >= 0 && c->beta1 < 1)) {
    snprintf(why, whylen, "server_beta1 must be in [0, 1) (got %g)", (double)c->beta1);
    return FEDC_ERR_INVALID;
  }
  if (c->kind >= FC_SOPT_ADAGRAD) {
    if (c->kind != FC_SOPT_ADAGRAD && !(c->beta2 >= 0 && c->beta2 < 1)) {
      snprintf(why, whylen, "server_beta2 must be in [0, 1) (got %g)", (double)c->beta2);
      return FEDC_ERR_INVALID;
    }
    if (!(c->tau > 0 && isfinite(c->tau))) {
      snprintf(why, whylen, "server_tau must be finite and > 0 (got %g)", (double)c->tau);
      return FEDC_ERR_INVALID;
    }
  }
  if (!(c->average >= 0 && c->average < 1)) {
    snprintf(why, whylen, "model_average must be in [0, 1) (got %g)", (double)c->average);
    return FEDC_ERR_INVALID;
  }
  return FEDC_OK;
}

int fc_sopt_nstate(int kind) { return kind == FC_SOPT_SGD ? 0 : kind == FC_SOPT_AVGM ? 1 : 2; }

int fc_sopt_create(const fc_sopt_cfg *cfg, size_t n, fc_sopt **out) {
  fc_sopt *o = calloc(1, sizeof *o);
  if (!o) return FEDC_ERR_NOMEM;
  o->cfg = *cfg;
  o->n = n;
  int ns = fc_sopt_nstate(cfg->kind);
  if (ns >= 1 && !(o->m = calloc(n ? n : 1, sizeof *o->m))) goto oom;
  if (ns >= 2 && !(o->v = malloc((n ? n : 1) * sizeof *o->v))) goto oom;
  if (cfg->average > 0 && !(o->a = malloc((n ? n : 1) * sizeof *o->a))) goto oom;
  fc_sopt_reset(o);
  *out = o;
  return FEDC_OK;
oom:
  fc_sopt_destroy(o);
  return FEDC_ERR_NOMEM;
}

void fc_sopt_reset(fc_sopt *o) {
  int ns = fc_sopt_nstate(o->cfg.kind);
  if (ns >= 1) memset(o->m, 0, o->n * sizeof *o->m);
  if (ns >= 2) {
    float v0 = o->cfg.tau * o->cfg.tau; /* Reddi et al.: v_{-1} >= tau^2 */
    for (size_t i = 0; i < o->n; i++) o->v[i] = v0;
  }
  o->step = 0;
}

void fc_sopt_destroy(fc_sopt *o) {
  if (!o) return;
  free(o->m);
  free(o->v);
  free(o->a);
  free(o);
}

/* GCC's -O2 does not vectorise these loops by itself; clang's does, and it
 * has no optimize attribute (nor a per-function no-math-errno: its build
 * keeps sqrtf scalar in the adaptive steps). */
#if defined(__GNUC__) && !defined(__clang__)
#define TREE_VEC __attribute__((optimize("tree-vectorize")))
#define VEC __attribute__((optimize("tree-vectorize", "no-math-errno")))
#else
#define TREE_VEC
#define VEC
#endif

TREE_VEC static void step_sgd(float *restrict x, const float *restrict d, size_t n, float lr) {
  for (size_t i = 0; i < n; i++) x[i] += lr * d[i];
}

TREE_VEC static void step_avgm(float *restrict x, float *restrict m, const float *restrict d, size_t n, float lr, float b,
                      int nesterov) {
  if (nesterov) {
    for (size_t i = 0; i < n; i++) {
      m[i] = b * m[i] + d[i];
      x[i] += lr * (d[i] + b * m[i]);
    }
  } else {
    for (size_t i = 0; i < n; i++) {
      m[i] = b * m[i] + d[i];
      x[i] += lr * m[i];
    }
  }
}

/* The adaptive steps, one loop each so the compiler vectorises them (no
 * branch on the method inside; sqrt without errno: v >= 0 always). */
VEC static void step_adagrad(float *restrict x, float *restrict m, float *restrict v, const float *restrict d,
                             size_t n, float b1, float lr, float tau) {
  for (size_t i = 0; i < n; i++) {
    float g = d[i];
    m[i] = b1 * m[i] + (1.0f - b1) * g;
    v[i] = v[i] + g * g;
    x[i] += lr * m[i] / (sqrtf(v[i]) + tau);
  }
}
VEC static void step_adam(float *restrict x, float *restrict m, float *restrict v, const float *restrict d, size_t n,
                          float b1, float b2, float lr, float tau) {
  for (size_t i = 0; i < n; i++) {
    float g = d[i];
    m[i] = b1 * m[i] + (1.0f - b1) * g;
    v[i] = b2 * v[i] + (1.0f - b2) * (g * g);
    x[i] += lr * m[i] / (sqrtf(v[i]) + tau);
  }
}
VEC static void step_yogi(float *restrict x, float *restrict m, float *restrict v, const float *restrict d, size_t n,
                          float b1, float b2, float lr, float tau) {
  for (size_t i = 0; i < n; i++) {
    float g = d[i], g2 = g * g, vi = v[i];
    m[i] = b1 * m[i] + (1.0f - b1) * g;
    float sign = vi > g2 ? 1.0f : vi < g2 ? -1.0f : 0.0f;
    v[i] = vi - (1.0f - b2) * g2 * sign;
    x[i] += lr * m[i] / (sqrtf(v[i]) + tau);
  }
}

void fc_sopt_step(fc_sopt *o, float *x, const float *d) {
  const fc_sopt_cfg *c = &o->cfg;
  switch (c->kind) {
  case FC_SOPT_AVGM: step_avgm(x, o->m, d, o->n, c->lr, c->beta1, c->nesterov); break;
  case FC_SOPT_ADAGRAD: step_adagrad(x, o->m, o->v, d, o->n, c->beta1, c->lr, c->tau); break;
  case FC_SOPT_ADAM: step_adam(x, o->m, o->v, d, o->n, c->beta1, c->beta2, c->lr, c->tau); break;
  case FC_SOPT_YOGI: step_yogi(x, o->m, o->v, d, o->n, c->beta1, c->beta2, c->lr, c->tau); break;
  default: step_sgd(x, d, o->n, c->lr); break;
  }
  o->step++;
}

TREE_VEC static void ema(float *restrict a, const float *restrict x, size_t n, float b) {
  float c = 1.0f - b;
  for (size_t i = 0; i < n; i++) a[i] = b * a[i] + c * x[i];
}

float fc_sopt_average_beta(float beta, uint64_t t) {
  double w = t > 1000000 ? 1.0 : (1.0 + (double)t) / (10.0 + (double)t);
  return w < beta ? (float)w : beta;
}

void fc_sopt_average(fc_sopt *o, const float *x, uint64_t t) {
  if (!o->a) return;
  if (o->a_set) ema(o->a, x, o->n, fc_sopt_average_beta(o->cfg.average, t));
  else memcpy(o->a, x, o->n * sizeof *o->a);
  o->a_set = 1;
}
