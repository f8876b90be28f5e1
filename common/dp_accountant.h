/*
 * dp_accountant.h - Renyi differential privacy of the Poisson-subsampled
 * Gaussian mechanism, composed over rounds and converted to (epsilon, delta).
 * No I/O.
 *
 *   Mironov, Talwar, Zhang 2019, "Renyi Differential Privacy of the Sampled
 *   Gaussian Mechanism": for sampling rate q and noise multiplier sigma
 *   (noise std / sensitivity), the RDP at order alpha is log(A_alpha) /
 *   (alpha - 1) with, for integer alpha (Section 3.3),
 *     A_alpha = sum_k C(alpha, k) (1 - q)^(alpha - k) q^k exp((k^2 - k) / (2 sigma^2)),
 *   and for fractional alpha the two-sided series of Section 3.3 with erfc
 *   terms. T rounds compose additively: T * RDP(alpha).
 *   Conversion to (epsilon, delta):
 *     classic (Mironov 2017, Prop. 3): eps = RDP - log(delta) / (alpha - 1);
 *     tighter (Balle, Barthe, Gaboardi, Hsu, Sato 2020, Thm. 21):
 *       eps = RDP + log((alpha - 1) / alpha) - (log(delta) + log(alpha)) / (alpha - 1),
 *   each minimised over the orders.
 * The accountant assumes Poisson subsampling: each client of the population
 * is in a round independently with probability q = cohort / population.
 */
#ifndef FEDC_DP_ACCOUNTANT_H
#define FEDC_DP_ACCOUNTANT_H

#include <stddef.h>

/* The orders evaluated: 1.1, 1.2, ..., 10.9 (fractional), 11..255 and 256 .. 1024 in steps. */
size_t fc_dp_orders(const double **orders);

/* RDP of one round at order alpha > 1 (q in [0, 1], sigma >= 0); +inf if unbounded. */
double fc_dp_rdp(double q, double sigma, double alpha);

typedef struct fc_dp_eps {
  double eps;       /* Balle et al. 2020 conversion */
  double order;     /* the order that gave it */
  double eps_classic;
  double order_classic;
} fc_dp_eps;

/* epsilon after `rounds` rounds of rate q and noise sigma, at delta. */
void fc_dp_epsilon(double q, double sigma, double rounds, double delta, fc_dp_eps *out);

/* The same from RDP values already composed (rdp[i] at orders[i], n of them). */
void fc_dp_epsilon_from_rdp(const double *orders, const double *rdp, size_t n, double delta, fc_dp_eps *out);

#endif
