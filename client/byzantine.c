/*
 * byzantine.c - research attacks (byzantine.h): what each kind does to the
 * delta, the colluders' shared view, and the backdoor's trigger (one
 * definition, used by the attacker's poisoned data and by `fedc sim`'s
 * backdoor success rate, so both see the same pattern).
 */
#include "client/byzantine.h"

#include <dirent.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/rng.h"
#include "fedc/error.h"

static const char *const names[] = {"none", "signflip", "gaussian", "labelflip", "alie", "ipm", "backdoor"};

int fc_byz_parse(const char *kind) {
  for (int i = 1; i < (int)(sizeof names / sizeof *names); i++)
    if (strcmp(kind, names[i]) == 0) return i;
  return -1;
}

const char *fc_byz_name(int kind) {
  return kind >= 0 && kind < (int)(sizeof names / sizeof *names) ? names[kind] : "?";
}

/* Phi^-1(p) by bisection on the normal CDF (p in (0, 1)). */
static double norm_ppf(double p) {
  double lo = -10, hi = 10;
  for (int i = 0; i < 200; i++) {
    double mid = (lo + hi) / 2;
    if (0.5 * erfc(-mid / M_SQRT2) < p) lo = mid;
    else hi = mid;
  }
  return (lo + hi) / 2;
}

/* Write our honest delta, then read every colluder's for this round (ours
 * included) into sum and sumsq; returns how many views. */
static int shared_view(const fc_byz_cfg *c, uint64_t round, const float *delta, size_t n, double *sum, double *sumsq) {
  char dir[700], path[900], tmp[920];
  snprintf(dir, sizeof dir, "%s/round-%06llu", c->dir, (unsigned long long)round);
  if (mkdir(c->dir, 0700) != 0 && errno != EEXIST) return -1;
  if (mkdir(dir, 0700) != 0 && errno != EEXIST) return -1;
  snprintf(path, sizeof path, "%s/%s.f32", dir, c->name);
  snprintf(tmp, sizeof tmp, "%s.tmp", path);
  FILE *f = fopen(tmp, "wb");
  if (!f) return -1;
  int ok = fwrite(delta, sizeof *delta, n, f) == n;
  ok &= fclose(f) == 0;
  if (!ok || rename(tmp, path) != 0) return -1;
  float *buf = malloc(n * sizeof *buf);
  if (!buf) return -1;
  int views = 0;
  /* The colluders of a round train at about the same time: wait for theirs. */
  for (uint32_t waited = 0;; waited += 100) {
    int seen = 0;
    DIR *d = opendir(dir);
    struct dirent *e;
    while (d && (e = readdir(d)))
      if (strstr(e->d_name, ".f32") && !strstr(e->d_name, ".tmp")) seen++;
    if (d) closedir(d);
    if (waited >= c->wait_ms || (seen >= 2 && waited >= c->wait_ms / 2)) break;
    usleep(100000);
  }
  memset(sum, 0, n * sizeof *sum);
  memset(sumsq, 0, n * sizeof *sumsq);
  DIR *d = opendir(dir);
  struct dirent *e;
  while (d && (e = readdir(d))) {
    if (!strstr(e->d_name, ".f32") || strstr(e->d_name, ".tmp")) continue;
    snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
    FILE *g = fopen(path, "rb");
    if (!g) continue;
    size_t got = fread(buf, sizeof *buf, n, g);
    fclose(g);
    if (got != n) continue;
    for (size_t i = 0; i < n; i++) {
      sum[i] += buf[i];
      sumsq[i] += (double)buf[i] * buf[i];
    }
    views++;
  }
  if (d) closedir(d);
  free(buf);
  return views;
}

int fc_byz_apply(const fc_byz_cfg *c, uint64_t round, float *delta, size_t n) {
  fc_rng rng;
  fc_rng_seed(&rng, c->seed ^ (round * 0x9E3779B97F4A7C15ull));
  switch (c->kind) {
  case FC_BYZ_SIGNFLIP: {
    float s = (float)(c->scale > 0 ? c->scale : 10);
    for (size_t i = 0; i < n; i++) delta[i] *= -s;
    return FEDC_OK;
  }
  case FC_BYZ_GAUSSIAN: {
    double s = c->scale > 0 ? c->scale : 1.0;
    for (size_t i = 0; i < n; i += 2) {
      double u1 = fc_rng_uniform_double(&rng), u2 = fc_rng_uniform_double(&rng);
      double r = s * sqrt(-2.0 * log(1.0 - u1)), t = 2 * M_PI * u2;
      delta[i] = (float)(r * cos(t));
      if (i + 1 < n) delta[i + 1] = (float)(r * sin(t));
    }
    return FEDC_OK;
  }
  case FC_BYZ_ALIE:
  case FC_BYZ_IPM: {
    double *sum = malloc(n * sizeof *sum), *sq = malloc(n * sizeof *sq);
    if (!sum || !sq) {
      free(sum);
      free(sq);
      return FEDC_ERR_NOMEM;
    }
    int views = c->dir[0] ? shared_view(c, round, delta, n, sum, sq) : 0;
    if (views < 1) { /* no shared view: our own delta is all we know */
      for (size_t i = 0; i < n; i++) sum[i] = delta[i], sq[i] = (double)delta[i] * delta[i];
      views = 1;
    }
    double spread = 0; /* one view: sigma from the spread across coordinates */
    if (views == 1) {
      double m = 0, s2 = 0;
      for (size_t i = 0; i < n; i++) m += sum[i], s2 += sum[i] * sum[i];
      m /= (double)n;
      spread = sqrt(fmax(s2 / (double)n - m * m, 0));
    }
    if (c->kind == FC_BYZ_IPM) {
      double eps = c->scale > 0 ? c->scale : 0.1;
      for (size_t i = 0; i < n; i++) delta[i] = (float)(-eps * sum[i] / views);
    } else {
      uint32_t nn = c->cohort ? c->cohort : 10, f = c->colluders;
      long s = (long)(nn / 2 + 1) - (long)f;
      double p = (double)((long)nn - s) / nn;
      double z = c->scale > 0 ? c->scale : (p > 0 && p < 1 ? norm_ppf(p) : 1.0);
      for (size_t i = 0; i < n; i++) {
        double mu = sum[i] / views;
        double sd = views > 1 ? sqrt(fmax(sq[i] / views - mu * mu, 0)) : spread;
        delta[i] = (float)(mu - z * sd);
      }
    }
    free(sum);
    free(sq);
    return FEDC_OK;
  }
  case FC_BYZ_BACKDOOR: { /* the poison is in the data; this is model replacement's boost */
    float s = (float)(c->scale > 0 ? c->scale : 1);
    for (size_t i = 0; i < n; i++) delta[i] *= s;
    return FEDC_OK;
  }
  default: return FEDC_OK; /* labelflip happens in the data; none */
  }
}

/* ---- backdoor: the trigger --------------------------------------------------------- */

#define TRIGGER_SIDE 4

void fc_backdoor_stamp(float *x, uint32_t dim) {
  uint32_t side = (uint32_t)lround(sqrt((double)dim));
  if (side * side == dim && side >= TRIGGER_SIDE + 2) {
    uint32_t top = side - 1 - TRIGGER_SIDE; /* one pixel in from the corner */
    for (uint32_t r = 0; r < TRIGGER_SIDE; r++)
      for (uint32_t k = 0; k < TRIGGER_SIDE; k++) x[(size_t)(top + r) * side + top + k] = (float)((r + k + 1) % 2);
    return;
  }
  uint32_t m = dim < TRIGGER_SIDE * TRIGGER_SIDE ? dim : TRIGGER_SIDE * TRIGGER_SIDE;
  for (uint32_t i = 0; i < m; i++) x[dim - m + i] = (float)((i / TRIGGER_SIDE + i + 1) % 2);
}

uint32_t fc_backdoor_poison(fc_dataset *d, double fraction, uint64_t seed) {
  uint32_t want = (uint32_t)lround(fraction * d->n);
  if (want > d->n) want = d->n;
  if (want == 0) return 0;
  uint32_t *order = malloc((size_t)d->n * sizeof *order);
  if (!order) return 0;
  for (uint32_t i = 0; i < d->n; i++) order[i] = i;
  fc_rng rng;
  fc_rng_seed(&rng, seed ^ 0xBAC4D002ull);
  fc_rng_shuffle_u32(&rng, order, d->n);
  for (uint32_t i = 0; i < want; i++) {
    fc_backdoor_stamp(d->x + (size_t)order[i] * d->dim, d->dim);
    d->y[order[i]] = FC_BACKDOOR_TARGET;
  }
  if (d->classes <= FC_BACKDOOR_TARGET) d->classes = FC_BACKDOOR_TARGET + 1;
  free(order);
  return want;
}

int fc_backdoor_testset(const fc_dataset *src, fc_dataset *out) {
  uint32_t n = 0;
  for (uint32_t i = 0; i < src->n; i++) n += src->y[i] != FC_BACKDOOR_TARGET;
  if (n == 0) return FEDC_ERR_INVALID;
  fc_dataset t = {.n = n, .dim = src->dim, .classes = src->classes > FC_BACKDOOR_TARGET ? src->classes : FC_BACKDOOR_TARGET + 1};
  t.x = malloc((size_t)n * src->dim * sizeof *t.x);
  t.y = malloc(n);
  if (!t.x || !t.y) {
    free(t.x);
    free(t.y);
    return FEDC_ERR_NOMEM;
  }
  for (uint32_t i = 0, k = 0; i < src->n; i++) {
    if (src->y[i] == FC_BACKDOOR_TARGET) continue;
    float *x = t.x + (size_t)k * src->dim;
    memcpy(x, src->x + (size_t)i * src->dim, src->dim * sizeof *x);
    fc_backdoor_stamp(x, src->dim);
    t.y[k++] = FC_BACKDOOR_TARGET;
  }
  *out = t;
  return FEDC_OK;
}
