/*
 * eval_stats.h - federated evaluation's statistics, and the one vector
 * layout both sides use when they travel under secure aggregation (kept once
 * below client and coordinator, ARCHITECTURE.md).
 *
 * What a client reports for one evaluation task: over the examples it
 * evaluated, their count, how many it classified right, the sum of their
 * losses and, for each named metric the task asks for, the sum of the
 * per-example values and the examples that sum covers. Every statistic is
 * bounded by the task: at most max_examples examples count (a client that
 * evaluated more scales its totals down to that many), and every per-example
 * loss or metric value lies in [0, value_max]. So one client's share of any
 * total is bounded, which is what keeps a secure sum from wrapping and a DP
 * sensitivity finite.
 *
 * The secure-aggregation vector, u32 entries (sums mod 2^32 never wrap:
 * fc_eval_scale picks the scale so that n clients' largest values fit):
 *
 *   | entry        | value                                         | per-client bound      |
 *   |--------------|-----------------------------------------------|-----------------------|
 *   | 0            | examples                                      | E                     |
 *   | 1            | correct                                       | E                     |
 *   | 2            | round_stochastic(loss_sum x scale)            | E V scale + 1         |
 *   | 3 + 2j       | round_stochastic(metric j's sum x scale)      | E V scale + 1         |
 *   | 4 + 2j       | metric j's examples                           | E                     |
 *   | 3 + 2m + i   | examples predicted as class i (1.13; i < C)   | E                     |
 *   | last         | 1 (the SecAgg weight: survivors are counted)  | 1                     |
 *
 * m = the task's metrics, C = the classes it asks predicted-class counts for
 * (EvalParams.classes; 0: none). The counts feed the drift check when the
 * coordinator has no reference set (coordinator/coord_drift_fed.c); a
 * trainer that does not count sends zeros. The "dim" of the SecAgg session
 * is the entries before the weight.
 */
#ifndef FEDC_SECAGG_EVAL_STATS_H
#define FEDC_SECAGG_EVAL_STATS_H

#include <stddef.h>
#include <stdint.h>

#include "common/rng.h"

#define FC_EVAL_METRICS_MAX 4
#define FC_EVAL_NAME_MAX 32      /* metric names: 1..31 of [A-Za-z0-9_.-] */
#define FC_EVAL_VALUE_MAX 1e6    /* the largest value_max a task may announce */
#define FC_EVAL_CLASSES_MAX 64   /* predicted-class counts: at most this many classes */

typedef struct fc_eval_stats {
  double examples, correct, loss_sum; /* doubles: DP-noised totals are not integers */
  uint32_t nmetrics;
  char names[FC_EVAL_METRICS_MAX][FC_EVAL_NAME_MAX];
  double metric_sum[FC_EVAL_METRICS_MAX];
  double metric_examples[FC_EVAL_METRICS_MAX];
  uint32_t nclasses;                          /* predicted-class counts asked for (0: none) */
  double class_count[FC_EVAL_CLASSES_MAX];    /* examples predicted as each class */
} fc_eval_stats;

/* A metric name the coordinator may announce: 1..31 of [A-Za-z0-9_.-]. */
int fc_eval_name_ok(const char *name);
/* Stat entries of the SecAgg vector (the session's dim; the weight is one more). */
static inline uint64_t fc_eval_dim(uint32_t nmetrics, uint32_t nclasses) {
  return 3 + 2 * (uint64_t)nmetrics + nclasses;
}

/* Bound one client's statistics as the task says, in place: negative or
 * non-finite values become 0; more than max_examples examples scale every
 * total down to max_examples (the accuracy and mean loss stay); correct <=
 * examples; loss_sum <= examples x value_max; each metric's examples <=
 * examples and its sum <= its examples x value_max; the class counts are
 * scaled with the rest and, if they add up to more than the examples, down
 * to them. */
void fc_eval_stats_clamp(fc_eval_stats *s, uint64_t max_examples, double value_max);

/* The fixed-point scale for n clients (fc_eval_dim's table): the largest with
 * n (E V scale + 1) <= 2^32 - 1, or 0 if even the counts cannot fit
 * (n E >= 2^32). */
double fc_eval_scale(uint32_t n, uint64_t max_examples, double value_max);

/* One client's clamped statistics as the vector above (fc_eval_dim + 1
 * entries; the counts are rounded stochastically if the clamp scaled them). */
void fc_eval_encode(const fc_eval_stats *s, double scale, fc_rng *rng, uint32_t *out);

/* The totals from the unmasked sum of the vectors of at most n clients:
 * FEDC_OK with *clients (the weight entry) and *out, or FEDC_ERR_INVALID if
 * the sum cannot be n or fewer clients' bounded vectors (a client that does
 * not run our code sent values outside its bounds). */
int fc_eval_decode(const uint32_t *sum, uint32_t nmetrics, uint32_t nclasses, double scale, uint32_t n, uint64_t max_examples,
                   double value_max, fc_eval_stats *out, uint32_t *clients);

/* a += b (names from b if a has none). */
void fc_eval_stats_add(fc_eval_stats *a, const fc_eval_stats *b);
/* Plain reports, one per client, combined so that no client counts for
 * more than `factor` x the lower median client's examples: a report past
 * that cap is added scaled by cap / examples (all its totals alike, so its
 * accuracy, mean loss and class proportions stay its own). Without it one
 * client reporting the task's example cap (10,000 by default) against
 * honest held-out sets of ~50 set the published accuracy and the drift
 * check's class proportions (hostile review, 2026-12-06); with it, a
 * minority's share is at most factor m / (honest examples + factor m) per
 * liar. The lower median is an honest client's while liars are fewer than
 * half. n == 0: out is zero. out takes the first report's names and sizes. */
#define FC_EVAL_CAP_FACTOR 2.0
/* The per-example values a liar reports are capped the same way: a
 * report's mean loss and each metric's mean count at most
 * FC_EVAL_MEAN_FACTOR x the lower median member's (the review's liar
 * reported the largest loss, 100 a value, and set the published mean loss
 * at 25x the honest one through its capped examples).
 * factor 0: the plain sum, every report as it came (under DP: the noise is
 * sized for one client moving a total by the task's bound, and a cap taken
 * from this evaluation's own reports would move every other report with
 * one client; found by a second review). */
#define FC_EVAL_MEAN_FACTOR 4.0
void fc_eval_stats_combine(const fc_eval_stats *r, size_t n, double factor, fc_eval_stats *out);

#endif
