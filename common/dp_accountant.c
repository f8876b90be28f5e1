/*
 * dp_accountant.c - RDP of the subsampled Gaussian mechanism and its
 * conversion to (epsilon, delta); see dp_accountant.h for the formulas and
 * their sources. All sums are in log space (log_add / log_sub) so large
 * orders and small sigmas neither overflow nor lose the small terms.
 */
#include "common/dp_accountant.h"

#include <math.h>

static double log_add(double a, double b) {
  if (a == -INFINITY) return b;
  if (b == -INFINITY) return a;
  double hi = a > b ? a : b, lo = a > b ? b : a;
  return hi + log1p(exp(lo - hi));
}

/* log(exp(a) - exp(b)), a >= b. */
static double log_sub(double a, double b) {
  if (b == -INFINITY) return a;
  if (a <= b) return -INFINITY;
  return a + log1p(-exp(b - a));
}

/* log(erfc(x)), also far in the tail where erfc underflows (the asymptotic
 * series of erfc at infinity). */
static double log_erfc(double x) {
  double r = erfc(x);
  if (r > 1e-300) return log(r);
  double x2 = x * x;
  return -0.5 * log(M_PI) - log(x) - x2 - 0.5 / x2 + 0.625 / (x2 * x2) - 37.0 / 24.0 / (x2 * x2 * x2) +
         353.0 / 64.0 / (x2 * x2 * x2 * x2);
}

/* Integer alpha: log A_alpha = log sum_k C(alpha,k) (1-q)^(alpha-k) q^k e^((k^2-k)/(2 s^2)). */
static double log_a_int(double q, double sigma, int alpha) {
  double la = -INFINITY;
  for (int k = 0; k <= alpha; k++) {
    double lc = lgamma(alpha + 1.0) - lgamma(k + 1.0) - lgamma(alpha - k + 1.0);
    double t = lc + k * log(q) + (alpha - k) * log1p(-q) + (double)(k * (double)k - k) / (2 * sigma * sigma);
    la = log_add(la, t);
  }
  return la;
}

/* Fractional alpha (Mironov et al. 2019, Section 3.3): the series over
 * i = 0, 1, ... of two terms with erfc factors, until both are below e^-30. */
static double log_a_frac(double q, double sigma, double alpha) {
  double la0 = -INFINITY, la1 = -INFINITY;
  double z0 = sigma * sigma * log(1 / q - 1) + 0.5;
  double coef = 1; /* C(alpha, i), by the recurrence C(a, i+1) = C(a, i) (a - i) / (i + 1) */
  for (int i = 0; i < 100000; i++) {
    if (i > 0) coef *= (alpha - (i - 1)) / i;
    if (coef == 0) break;
    double lc = log(fabs(coef)), j = alpha - i;
    double lt0 = lc + i * log(q) + j * log1p(-q);
    double lt1 = lc + j * log(q) + i * log1p(-q);
    double le0 = log(0.5) + log_erfc((i - z0) / (M_SQRT2 * sigma));
    double le1 = log(0.5) + log_erfc((z0 - j) / (M_SQRT2 * sigma));
    double ls0 = lt0 + (i * (double)i - i) / (2 * sigma * sigma) + le0;
    double ls1 = lt1 + (j * j - j) / (2 * sigma * sigma) + le1;
    if (coef > 0) {
      la0 = log_add(la0, ls0);
      la1 = log_add(la1, ls1);
    } else {
      la0 = log_sub(la0, ls0);
      la1 = log_sub(la1, ls1);
    }
    if ((ls0 > ls1 ? ls0 : ls1) < -30) break;
  }
  return log_add(la0, la1);
}

double fc_dp_rdp(double q, double sigma, double alpha) {
  if (q <= 0) return 0;
  if (!(sigma > 0)) return INFINITY;
  if (q >= 1) return alpha / (2 * sigma * sigma);
  if (isinf(alpha)) return INFINITY;
  double la = floor(alpha) == alpha ? log_a_int(q, sigma, (int)alpha) : log_a_frac(q, sigma, alpha);
  return la / (alpha - 1);
}

enum { N_FRAC = 99, N_INT = 245, N_BIG = 12 };
static double orders_tab[N_FRAC + N_INT + N_BIG];
static size_t orders_n;

size_t fc_dp_orders(const double **orders) {
  if (!orders_n) { /* idempotent: a race writes the same values */
    size_t n = 0;
    for (int x = 1; x <= 99; x++) orders_tab[n++] = 1 + x / 10.0;
    for (int a = 11; a <= 255; a++) orders_tab[n++] = a;
    const double big[N_BIG] = {256, 288, 320, 384, 448, 512, 576, 640, 768, 896, 960, 1024};
    for (int i = 0; i < N_BIG; i++) orders_tab[n++] = big[i];
    orders_n = n;
  }
  *orders = orders_tab;
  return orders_n;
}

void fc_dp_epsilon_from_rdp(const double *orders, const double *rdp, size_t n, double delta, fc_dp_eps *out) {
  out->eps = out->eps_classic = INFINITY;
  out->order = out->order_classic = 0;
  for (size_t i = 0; i < n; i++) {
    double a = orders[i], r = rdp[i];
    if (!(a > 1) || !(r >= 0) || isinf(r)) continue;
    double classic = r - log(delta) / (a - 1);
    if (classic < out->eps_classic) {
      out->eps_classic = classic;
      out->order_classic = a;
    }
    double e;
    if (delta * delta + expm1(-r) >= 0) e = 0; /* the KL bound already gives delta */
    else
      e = r + log1p(-1 / a) - (log(delta) + log(a)) / (a - 1);
    if (e < out->eps) {
      out->eps = e;
      out->order = a;
    }
  }
  if (out->eps < 0) out->eps = 0;
  if (out->eps_classic < 0) out->eps_classic = 0;
}

void fc_dp_epsilon(double q, double sigma, double rounds, double delta, fc_dp_eps *out) {
  const double *orders;
  size_t n = fc_dp_orders(&orders);
  double rdp[N_FRAC + N_INT + N_BIG];
  for (size_t i = 0; i < n; i++) rdp[i] = rounds * fc_dp_rdp(q, sigma, orders[i]);
  fc_dp_epsilon_from_rdp(orders, rdp, n, delta, out);
}
