/*
 * server_opt.h - the server optimizer stage: after aggregation, before
 * publishing, the round's mean client delta is treated as a pseudo-gradient
 * (its negative) and applied to the global model by one of
 *
 *   sgd      x += lr * d                                   (plain FedAvg: lr 1)
 *   avgm     m = beta1 m + d;  x += lr * m                 (FedAvgM, Hsu et al. 2019)
 *            nesterov: x += lr * (d + beta1 m)
 *   adagrad  m = beta1 m + (1 - beta1) d;  v = v + d^2
 *   adam     m as adagrad;  v = beta2 v + (1 - beta2) d^2
 *   yogi     m as adagrad;  v = v - (1 - beta2) d^2 sign(v - d^2)
 *            and for these three: x += lr * m / (sqrt(v) + tau)
 *            (Reddi et al. 2021, "Adaptive Federated Optimization",
 *             Algorithm 2; v starts at tau^2 as its v_{-1} >= tau^2, m at 0;
 *             no bias correction, as in the paper)
 *
 * d is the weighted mean of the clients' deltas (new - old on the client).
 * State: m and v (d floats each, only those the method uses) and the step
 * count, saved with every model version by the coordinator so a restart
 * continues bit for bit. No I/O here.
 *
 * Model average (cfg.average = beta > 0): beside the iterate x that clients
 * train from, an exponential moving average of the published versions,
 *   a_0 = x_0,  a_t = b_t a_{t-1} + (1 - b_t) x_t,  b_t = min(beta, (1 + t) / (10 + t)),
 * t the version (the warm-up keeps the first versions from being averaged
 * with the initial model for long, as TensorFlow's num_updates does), the
 * federation's output for evaluation and export (iterate averaging:
 * Polyak and Juditsky 1992, "Acceleration of stochastic approximation by
 * averaging"; in its exponential form, the moving average of weights that
 * TensorFlow's ExponentialMovingAverage keeps for evaluation). It never
 * feeds back into x: the clients' deltas and the steps
 * above are exactly those without it. Saved with the state.
 */
#ifndef FEDC_SERVER_OPT_H
#define FEDC_SERVER_OPT_H

#include <stddef.h>
#include <stdint.h>

enum fc_sopt_kind { FC_SOPT_SGD = 0, FC_SOPT_AVGM, FC_SOPT_ADAGRAD, FC_SOPT_ADAM, FC_SOPT_YOGI };

typedef struct fc_sopt_cfg {
  int kind;
  float lr;
  float beta1, beta2, tau;
  int nesterov; /* avgm only */
  float average; /* model average beta in [0, 1); 0: none */
} fc_sopt_cfg;

/* "sgd" ... "yogi" -> kind, or -1. */
int fc_sopt_parse(const char *name);
const char *fc_sopt_name(int kind);
/* Published defaults for kind (lr unchanged): beta1 0.9, beta2 0.99, tau
 * 1e-3 (Reddi et al. 2021, Section 5 / Appendix); no model average. */
void fc_sopt_cfg_defaults(fc_sopt_cfg *c, int kind);
/* 0, or FEDC_ERR_INVALID with why: lr > 0, beta1 in [0, 1), beta2 in
 * [0, 1), tau > 0 for the adaptive ones, average in [0, 1), all finite. */
int fc_sopt_cfg_check(const fc_sopt_cfg *c, char *why, size_t whylen);

typedef struct fc_sopt {
  fc_sopt_cfg cfg;
  size_t n;
  uint64_t step; /* updates applied */
  float *m;      /* NULL for sgd */
  float *v;      /* NULL for sgd and avgm */
  float *a;      /* the model average; NULL without cfg.average */
  int a_set;     /* a holds an average (else the next fc_sopt_average starts it) */
} fc_sopt;

int fc_sopt_create(const fc_sopt_cfg *cfg, size_t n, fc_sopt **out);
void fc_sopt_destroy(fc_sopt *o);
/* Back to fresh moments (zero first moment, v = tau^2, step 0). The model
 * average is not a moment: it is kept. */
void fc_sopt_reset(fc_sopt *o);
/* How many state vectors the method keeps (0, 1 or 2). */
int fc_sopt_nstate(int kind);
/* x (n floats) += the optimizer's step for the mean delta d. */
void fc_sopt_step(fc_sopt *o, float *x, const float *d);
/* With cfg.average: fold version t's weights x into the average (a = x if
 * it holds none yet). No-op without. */
void fc_sopt_average(fc_sopt *o, const float *x, uint64_t t);
/* b_t above. */
float fc_sopt_average_beta(float beta, uint64_t t);

#endif
