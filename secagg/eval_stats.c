/*
 * eval_stats.c - bounding, encoding and decoding federated evaluation's
 * statistics (eval_stats.h has the vector's table). Exact and deterministic
 * given the rounding stream: the counts are integers unless a clamp scaled
 * them, and the loss and metric sums are fixed point with unbiased
 * stochastic rounding, as the model updates are (secagg.h).
 */
#include "secagg/eval_stats.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "fedc/error.h"

int fc_eval_name_ok(const char *name) {
  size_t n = strlen(name);
  if (n < 1 || n >= FC_EVAL_NAME_MAX) return 0;
  for (size_t i = 0; i < n; i++) {
    char ch = name[i];
    if (!((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') || ch == '_' ||
          ch == '.' || ch == '-'))
      return 0;
  }
  return 1;
}

static double sane(double v) { return isfinite(v) && v > 0 ? v : 0; }

void fc_eval_stats_clamp(fc_eval_stats *s, uint64_t max_examples, double value_max) {
  s->examples = sane(s->examples);
  s->correct = sane(s->correct);
  s->loss_sum = sane(s->loss_sum);
  if (s->nmetrics > FC_EVAL_METRICS_MAX) s->nmetrics = FC_EVAL_METRICS_MAX;
  for (uint32_t j = 0; j < s->nmetrics; j++) {
    s->metric_sum[j] = sane(s->metric_sum[j]);
    s->metric_examples[j] = sane(s->metric_examples[j]);
  }
  if (s->nclasses > FC_EVAL_CLASSES_MAX) s->nclasses = FC_EVAL_CLASSES_MAX;
  double classed = 0;
  for (uint32_t i = 0; i < s->nclasses; i++) classed += s->class_count[i] = sane(s->class_count[i]);
  if (!(value_max > 0) || !isfinite(value_max)) value_max = 0;
  /* Too many examples: every total shrinks in proportion, so the means stay. */
  if (s->examples > (double)max_examples) {
    double f = (double)max_examples / s->examples;
    s->examples = (double)max_examples;
    s->correct *= f;
    s->loss_sum *= f;
    for (uint32_t j = 0; j < s->nmetrics; j++) s->metric_sum[j] *= f, s->metric_examples[j] *= f;
    for (uint32_t i = 0; i < s->nclasses; i++) s->class_count[i] *= f;
    classed *= f;
  }
  if (classed > s->examples) /* each example is predicted as one class */
    for (uint32_t i = 0; i < s->nclasses; i++) s->class_count[i] *= s->examples / classed;
  if (s->correct > s->examples) s->correct = s->examples;
  if (s->loss_sum > s->examples * value_max) s->loss_sum = s->examples * value_max;
  for (uint32_t j = 0; j < s->nmetrics; j++) {
    if (s->metric_examples[j] > s->examples) s->metric_examples[j] = s->examples;
    if (s->metric_sum[j] > s->metric_examples[j] * value_max) s->metric_sum[j] = s->metric_examples[j] * value_max;
  }
}

double fc_eval_scale(uint32_t n, uint64_t max_examples, double value_max) {
  const double top = 4294967295.0;
  if (!n || !max_examples || !(value_max > 0) || (double)n * (double)max_examples >= top) return 0;
  double room = (top - n) / n; /* per client: E V scale <= room */
  return room / ((double)max_examples * value_max);
}

/* Unbiased stochastic rounding of v >= 0, at most `cap`. */
static uint32_t round_stoch(double v, fc_rng *rng, double cap) {
  double f = floor(v);
  double q = f + (fc_rng_uniform_double(rng) < v - f);
  if (q > cap) q = cap;
  return (uint32_t)q;
}

void fc_eval_encode(const fc_eval_stats *s, double scale, fc_rng *rng, uint32_t *out) {
  uint32_t ex = round_stoch(s->examples, rng, 4294967295.0);
  out[0] = ex;
  out[1] = round_stoch(s->correct, rng, ex); /* never above the examples it counts */
  out[2] = round_stoch(s->loss_sum * scale, rng, 4294967295.0);
  for (uint32_t j = 0; j < s->nmetrics; j++) {
    out[3 + 2 * j] = round_stoch(s->metric_sum[j] * scale, rng, 4294967295.0);
    out[4 + 2 * j] = round_stoch(s->metric_examples[j], rng, ex);
  }
  for (uint32_t i = 0; i < s->nclasses; i++) out[3 + 2 * s->nmetrics + i] = round_stoch(s->class_count[i], rng, ex);
  out[fc_eval_dim(s->nmetrics, s->nclasses)] = 1;
}

int fc_eval_decode(const uint32_t *sum, uint32_t nmetrics, uint32_t nclasses, double scale, uint32_t n,
                   uint64_t max_examples, double value_max, fc_eval_stats *out, uint32_t *clients) {
  if (nmetrics > FC_EVAL_METRICS_MAX || nclasses > FC_EVAL_CLASSES_MAX || !(scale > 0)) return FEDC_ERR_INVALID;
  uint64_t dim = fc_eval_dim(nmetrics, nclasses);
  uint32_t w = sum[dim];
  if (w == 0 || w > n) return FEDC_ERR_INVALID;
  double per = (double)max_examples * value_max * scale + 1; /* one client's largest fixed-point sum */
  double ex = sum[0];
  if (ex > (double)w * (double)max_examples || sum[1] > sum[0] || sum[2] > (double)w * per) return FEDC_ERR_INVALID;
  for (uint32_t j = 0; j < nmetrics; j++)
    if (sum[3 + 2 * j] > (double)w * per || sum[4 + 2 * j] > sum[0]) return FEDC_ERR_INVALID;
  for (uint32_t i = 0; i < nclasses; i++)
    if (sum[3 + 2 * nmetrics + i] > sum[0]) return FEDC_ERR_INVALID;
  fc_eval_stats s;
  memset(&s, 0, sizeof s);
  s.examples = ex;
  s.correct = sum[1];
  s.loss_sum = sum[2] / scale;
  s.nmetrics = nmetrics;
  for (uint32_t j = 0; j < nmetrics; j++) {
    s.metric_sum[j] = sum[3 + 2 * j] / scale;
    s.metric_examples[j] = sum[4 + 2 * j];
  }
  s.nclasses = nclasses;
  for (uint32_t i = 0; i < nclasses; i++) s.class_count[i] = sum[3 + 2 * nmetrics + i];
  /* Names are the caller's (the task's list); keep any it put in *out. */
  memcpy(s.names, out->names, sizeof s.names);
  *out = s;
  *clients = w;
  return FEDC_OK;
}

void fc_eval_stats_add(fc_eval_stats *a, const fc_eval_stats *b) {
  a->examples += b->examples;
  a->correct += b->correct;
  a->loss_sum += b->loss_sum;
  if (!a->nmetrics) {
    a->nmetrics = b->nmetrics;
    memcpy(a->names, b->names, sizeof a->names);
  }
  for (uint32_t j = 0; j < a->nmetrics && j < b->nmetrics; j++) {
    a->metric_sum[j] += b->metric_sum[j];
    a->metric_examples[j] += b->metric_examples[j];
  }
  if (!a->nclasses) a->nclasses = b->nclasses;
  for (uint32_t i = 0; i < a->nclasses && i < b->nclasses; i++) a->class_count[i] += b->class_count[i];
}

static int cmp_double(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return x < y ? -1 : x > y;
}

/* The lower median of n values (v is reordered); 0 for n == 0. */
static double lower_median(double *v, size_t n) {
  if (!n) return 0;
  qsort(v, n, sizeof *v, cmp_double);
  return v[(n - 1) / 2];
}

void fc_eval_stats_combine(const fc_eval_stats *r, size_t n, double factor, fc_eval_stats *out) {
  memset(out, 0, sizeof *out);
  if (!n) return;
  /* Caps from the lower medians: examples, mean loss, each metric's mean.
   * factor 0, or no memory for the sorts: the plain sum (the task's bounds). */
  double *v = factor > 0 ? malloc(n * sizeof *v) : NULL;
  if (!v) {
    for (size_t i = 0; i < n; i++) fc_eval_stats_add(out, &r[i]);
    return;
  }
  for (size_t i = 0; i < n; i++) v[i] = r[i].examples;
  double cap = factor * lower_median(v, n);
  for (size_t i = 0; i < n; i++) v[i] = r[i].examples > 0 ? r[i].loss_sum / r[i].examples : 0;
  double loss_cap = FC_EVAL_MEAN_FACTOR * lower_median(v, n);
  double metric_cap[FC_EVAL_METRICS_MAX];
  for (uint32_t j = 0; j < r[0].nmetrics && j < FC_EVAL_METRICS_MAX; j++) {
    size_t m = 0;
    for (size_t i = 0; i < n; i++)
      if (j < r[i].nmetrics && r[i].metric_examples[j] > 0) v[m++] = r[i].metric_sum[j] / r[i].metric_examples[j];
    metric_cap[j] = m ? FC_EVAL_MEAN_FACTOR * lower_median(v, m) : 0;
  }
  free(v);
  for (size_t i = 0; i < n; i++) {
    fc_eval_stats s = r[i];
    if (s.loss_sum > loss_cap * s.examples) s.loss_sum = loss_cap * s.examples;
    for (uint32_t j = 0; j < s.nmetrics && j < r[0].nmetrics; j++)
      if (s.metric_sum[j] > metric_cap[j] * s.metric_examples[j]) s.metric_sum[j] = metric_cap[j] * s.metric_examples[j];
    if (s.examples > cap && s.examples > 0) {
      double f = cap / s.examples;
      s.examples = cap;
      s.correct *= f;
      s.loss_sum *= f;
      for (uint32_t j = 0; j < s.nmetrics; j++) s.metric_sum[j] *= f, s.metric_examples[j] *= f;
      for (uint32_t k = 0; k < s.nclasses; k++) s.class_count[k] *= f;
    }
    fc_eval_stats_add(out, &s);
  }
}
