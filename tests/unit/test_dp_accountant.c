/*
 * test_dp_accountant.c - the RDP accountant (common/dp_accountant.h)
 * against published numbers (TensorFlow Privacy's tests of its RDP
 * accountant, classic conversion): n = 60,000, batch 150, z = 1.3, 15 epochs,
 * delta 1e-5 -> 0.9419; n = 100,000, batch 100, z = 1.0, 30 epochs,
 * delta 1e-7 -> 1.7093; and properties: no sampling costs nothing, full
 * participation is the Gaussian mechanism's alpha / (2 z^2), the fractional
 * series meets the integer sum, epsilon grows with rounds and falls with
 * noise, and Balle et al.'s conversion is never worse than the classic one.
 * (tests/tools/rdp_ref.py is an independent Python reference, compared in
 * tests/integration/test_dp_budget.sh.)
 */
#include <math.h>
#include <stdio.h>

#include "check.h"
#include "common/dp_accountant.h"

int main(void) {
  fc_dp_eps e;
  fc_dp_epsilon(150.0 / 60000, 1.3, 15 * 60000 / 150.0, 1e-5, &e);
  printf("  mnist 60k/150/z1.3/15 epochs: classic %.4f (published 0.9419), Balle %.4f\n", e.eps_classic, e.eps);
  CHECK(fabs(e.eps_classic - 0.9419) < 5e-5);
  CHECK(e.eps < e.eps_classic);
  fc_dp_epsilon(100.0 / 100000, 1.0, 30 * 100000 / 100.0, 1e-7, &e);
  printf("  100k/100/z1.0/30 epochs: classic %.4f (published 1.7093), Balle %.4f\n", e.eps_classic, e.eps);
  CHECK(fabs(e.eps_classic - 1.7093) < 5e-5);
  CHECK(e.eps < e.eps_classic);

  CHECK(fc_dp_rdp(0, 1.0, 8) == 0);
  CHECK(isinf(fc_dp_rdp(0.1, 0, 8)));
  CHECK(fabs(fc_dp_rdp(1.0, 2.0, 8) - 8.0 / 8.0) < 1e-12);
  /* Fractional orders approach the integer sum from both sides. */
  for (int a = 2; a <= 6; a++) {
    double ri = fc_dp_rdp(0.01, 1.1, a), lo = fc_dp_rdp(0.01, 1.1, a - 1e-6), hi = fc_dp_rdp(0.01, 1.1, a + 1e-6);
    CHECK(fabs(lo - ri) < 1e-6 * ri + 1e-12 && fabs(hi - ri) < 1e-6 * ri + 1e-12);
  }
  /* RDP grows with the order; epsilon with rounds; falls with noise. */
  CHECK(fc_dp_rdp(0.05, 1.0, 3.5) < fc_dp_rdp(0.05, 1.0, 7.5));
  fc_dp_eps a, b, c;
  fc_dp_epsilon(0.01, 1.0, 100, 1e-5, &a);
  fc_dp_epsilon(0.01, 1.0, 1000, 1e-5, &b);
  fc_dp_epsilon(0.01, 2.0, 1000, 1e-5, &c);
  CHECK(a.eps < b.eps && c.eps < b.eps);
  /* A tiny sampling rate with big noise: near zero, never negative. */
  fc_dp_epsilon(1e-6, 10.0, 1, 1e-5, &a);
  CHECK(a.eps >= 0 && a.eps < 0.01);
  return CHECK_DONE();
}
