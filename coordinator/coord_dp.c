/*
 * coord_dp.c - differential privacy at the coordinator: DP-FedAvg's noise
 * on the round's sum (McMahan et al. 2018, Algorithm 1, fixed-denominator
 * estimator), adaptive clipping (Andrew et al. 2021, Algorithm 1 and
 * Theorem 1), and the RDP accountant's budget check before each round.
 *
 * Owns: c->dp_* (the composed RDP, rounds, epsilon, the clip), under mu.
 * May call: dp_accountant.h, dp_noise.h, dp_clip.h, store.h (dp.json is
 * written before the version that spent it is published), engine.h (stop
 * at the budget).
 */
#include "coordinator/coordinator.h"

#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/blas.h"
#include "common/chunk.h"
#include "common/clock.h"
#include "common/dp_accountant.h"
#include "common/dp_noise.h"
#include "common/fileutil.h"
#include "common/log.h"
#include "coordinator/aggregate.h"
#include "coordinator/anomaly.h"
#include "coordinator/audit.h"
#include "coordinator/coord_codec.h"
#include "coordinator/coord_int.h"
#include "coordinator/dp_clip.h"
#include "coordinator/refusals.h"
#include "coordinator/store.h"
#include "coordinator/store_prune.h"
#include "coordinator/watermark.h"
#include "crypto/pki.h"
#include "crypto/sa_crypto.h"
#include "fedc/error.h"
#include "fedc/v1/fedc.pb-c.h"
#include "secagg/params.h"
#include "transport/accept_guard.h"
#include "transport/tensor_stream.h"
#include "transport/transport.h"

#define MOD "coordinator"

/* The composed RDP after one more round (rdp + the constant per-round RDP
 * of rate q and noise z, computed once at start) into next; its epsilon. */
double coord_dp_after_one_round(const fc_coord *c, double *next) {
  const double *orders;
  fc_dp_orders(&orders);
  for (size_t i = 0; i < c->dp_norders; i++) next[i] = c->dp_rdp[i] + c->dp_round_rdp[i];
  fc_dp_eps e;
  fc_dp_epsilon_from_rdp(orders, next, c->dp_norders, c->cfg.dp_delta, &e);
  return e.eps;
}

/* The noise multiplier z split between the update sum (*zu) and, with
 * adaptive clipping, the centred count of unclipped updates (std *sb):
 * Andrew et al. 2021, Theorem 1, z_Delta = (z^-2 - (2 sigma_b)^-2)^-1/2.
 * sigma_b is the configured one, else expected / 20 (their section 3.1),
 * never below z, so z_Delta exists and is at most 1.155 z. */
void coord_dp_split(const fc_coord *c, double expected, double *zu, double *sb) {
  double z = c->cfg.dp_noise_multiplier;
  *zu = z;
  *sb = 0;
  if (!(c->cfg.dp_adaptive_quantile > 0)) return;
  if (c->cfg.dp_count_noise > 0) {
    *sb = c->cfg.dp_count_noise; /* coord_cfg_check: 2 sigma_b > z */
  } else {
    *sb = expected / 20.0;
    if (*sb < z) *sb = z;
  }
  *zu = 1.0 / sqrt(1.0 / (z * z) - 1.0 / (4.0 * *sb * *sb));
}

/* delta holds the mean of `count` clipped updates of weight 1: make it
 * (sum + N(0, (z C)^2 I)) / (q N), q N the round's expected cohort, and count
 * the round in the accountant (saved before the version is published).
 *
 * Adaptive clipping (Andrew et al. 2021, Algorithm 1 and Theorem 1): the
 * sum gets noise z_Delta C, z_Delta = (z^-2 - (2 sigma_b)^-2)^-1/2, and the
 * count of unclipped updates, centred (sum of b_i - 1/2, sensitivity 1/2),
 * gets N(0, sigma_b^2); together they are one Gaussian mechanism of noise
 * multiplier z, which is what the accountant counts. Then
 * b = noisy centred count / (q N) + 1/2 and C <- C exp(-eta (b - gamma)).
 *
 * Under secure aggregation the clients added the noise (distributed discrete
 * Gaussian, coord_secagg.c): the sum and the centred count arrive noised. */
int coord_dp_privatize(fc_coord *c, float *delta, size_t n, uint32_t count, char *why, size_t whylen) {
  pthread_mutex_lock(&c->mu);
  double expected = c->dp_round_expected;
  double C = c->clip, unclipped = c->dp_unclipped, sa_centred = c->dp_sa_centred;
  pthread_mutex_unlock(&c->mu);
  if (!(expected > 0)) expected = 1;
  double z = c->cfg.dp_noise_multiplier, zu, sb, newclip = C;
  int adaptive = c->cfg.dp_adaptive_quantile > 0, distributed = c->cfg.engine.secagg;
  coord_dp_split(c, expected, &zu, &sb);
  fc_sscal((int)n, (float)count, delta, 1); /* the sum */
  int rc = FEDC_OK;
  float centred = (float)(unclipped - 0.5 * (double)count);
  if (distributed) centred = (float)sa_centred;
  else rc = fc_dp_add_gaussian(delta, n, zu * C, NULL);
  if (rc == FEDC_OK && adaptive && !distributed) rc = fc_dp_add_gaussian(&centred, 1, sb, NULL);
  if (rc != FEDC_OK) {
    snprintf(why, whylen, "cannot draw the privacy noise: %s", fedc_strerror(rc));
    return rc;
  }
  fc_sscal((int)n, (float)(1.0 / expected), delta, 1);
  if (adaptive) {
    /* Post-processing (no privacy cost), both paths: the fraction clamped
     * to [0, 1] bounds one round's step to exp(eta max(gamma, 1 - gamma))
     * however noisy the count or whatever one client put in its masked bit,
     * and the range (resolved at start) bounds where rounds can take it. */
    double b;
    newclip = fc_dp_clip_next(C, centred, expected, c->cfg.dp_adaptive_quantile, c->cfg.dp_clip_lr,
                              c->cfg.dp_clip_min, c->cfg.dp_clip_max, &b);
    FC_INFO(MOD, "adaptive clipping: noisy fraction of unclipped updates %.3f (target %g) over %u: clip %.5g -> %.5g",
            b, c->cfg.dp_adaptive_quantile, count, C, newclip);
  }
  double *next = malloc(c->dp_norders * sizeof *next);
  if (!next) {
    snprintf(why, whylen, "out of memory");
    return FEDC_ERR_NOMEM;
  }
  double eps = coord_dp_after_one_round(c, next);
  rc = fc_store_write_dp(c->cfg.state_dir, next, c->dp_norders, c->dp_rounds + 1, eps, c->cfg.dp_delta,
                         adaptive ? newclip : 0, why, whylen);
  if (rc == FEDC_OK) {
    pthread_mutex_lock(&c->mu);
    memcpy(c->dp_rdp, next, c->dp_norders * sizeof *next);
    c->dp_rounds++;
    c->dp_eps = eps;
    c->dp_round_noise = z;
    c->clip = (float)newclip;
    pthread_mutex_unlock(&c->mu);
  }
  free(next);
  return rc;
}

/* Before any round: would one more spend more than the target? Then the
 * federation stops (budget = rounds completed) with the reason. */
void coord_dp_check_budget_locked(fc_coord *c) {
  if (!(c->cfg.dp_noise_multiplier > 0) || !(c->cfg.dp_target_epsilon > 0)) return;
  double *next = malloc(c->dp_norders * sizeof *next);
  if (!next) return;
  double eps_next = coord_dp_after_one_round(c, next);
  free(next);
  if (eps_next <= c->cfg.dp_target_epsilon) return;
  if (c->dp_stop[0]) return; /* said already */
  snprintf(c->dp_stop, sizeof c->dp_stop,
           "privacy budget: epsilon %.4g spent; one more round would reach %.4g > target %g (delta %g)", c->dp_eps,
           eps_next, c->cfg.dp_target_epsilon, c->cfg.dp_delta);
  FC_WARN(MOD, "federation stops: %s", c->dp_stop);
  fc_engine_stop_budget(c->engine);
}
