/*
 * test_dp_clip.c - adaptive clipping's update and range (coordinator/dp_clip.h):
 *   - the range: defaults a factor 10 either side of the start (within
 *     [1e-6, 1e6]), explicit bounds, and every refusal with its reason (a
 *     bound negative, NaN or outside the outer limits, the start outside);
 *   - one client that votes "clipped" (or "unclipped") every round, with a
 *     saturating value as a masked bit under secure aggregation can be, and
 *     nine honest clients, over 60 rounds of Andrew et al. 2021's Algorithm 1
 *     with its noise: the clip never passes the max (min), and ends pinned
 *     there, where the same rounds without the range go 20x past it;
 *   - one client's vote (centred count +-1/2) moves the next clip by at most
 *     a factor exp(eta / expected cohort), and one round by at most
 *     exp(eta max(gamma, 1 - gamma)) whatever the count (docs/design.md).
 */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "check.h"
#include "common/rng.h"
#include "coordinator/dp_clip.h"
#include "fedc/error.h"

/* `rounds` rounds of Algorithm 1 from clip 1: 9 honest clients with norms
 * 0.77 exp(0.3 N(0, 1)) (median 0.77) and one that sends `attacker_bit` as
 * its centred bit (+-1/2 for an honest-looking vote, anything under secure
 * aggregation), count noise sigma_b = 0.5; returns the last clip and the
 * largest and smallest seen. */
static double simulate(double attacker_bit, double lo, double hi, int rounds, uint64_t seed, double *max_seen,
                       double *min_seen) {
  fc_rng rng;
  fc_rng_seed(&rng, seed);
  const double gamma = 0.5, eta = 0.2, expected = 10, sigma_b = 0.5;
  double clip = 1;
  *max_seen = *min_seen = clip;
  for (int r = 0; r < rounds; r++) {
    double centred = attacker_bit;
    for (int i = 0; i < 9; i++) {
      double norm = 0.77 * exp(0.3 * fc_rng_normal(&rng));
      centred += (norm <= clip) - 0.5;
    }
    centred += sigma_b * fc_rng_normal(&rng);
    clip = fc_dp_clip_next(clip, centred, expected, gamma, eta, lo, hi, NULL);
    *max_seen = fmax(*max_seen, clip);
    *min_seen = fmin(*min_seen, clip);
  }
  return clip;
}

int main(void) {
  char err[300];
  double lo = -1, hi = -1;

  /* The range. */
  CHECK_EQ_INT(fc_dp_clip_range(1, 0, 0, &lo, &hi, err, sizeof err), FEDC_OK);
  CHECK(lo == 0.1 && hi == 10);
  CHECK_EQ_INT(fc_dp_clip_range(0.5, 0.2, 0.8, &lo, &hi, err, sizeof err), FEDC_OK);
  CHECK(lo == 0.2 && hi == 0.8);
  CHECK_EQ_INT(fc_dp_clip_range(5e5, 0, 0, &lo, &hi, err, sizeof err), FEDC_OK);
  CHECK(lo == 5e4 && hi == 1e6); /* the default stays within the outer limits */
  CHECK_EQ_INT(fc_dp_clip_range(2e-6, 0, 0, &lo, &hi, err, sizeof err), FEDC_OK);
  CHECK(lo == 1e-6 && fabs(hi - 2e-5) < 1e-18);
  CHECK_EQ_INT(fc_dp_clip_range(1, 1, 1, &lo, &hi, err, sizeof err), FEDC_OK); /* a fixed clip, as a range */
  CHECK(lo == 1 && hi == 1);
  /* The start arrives as a float (--dp-clip 0.1 is 0.100000001...): a bound
   * written as the same decimal holds it. */
  CHECK_EQ_INT(fc_dp_clip_range((double)0.1f, 0.1, 0.1, &lo, &hi, err, sizeof err), FEDC_OK);
  const struct {
    double start, min, max;
    const char *why;
  } bad[] = {
      {1, 2, 0, "outside its range [2, 10]"},   {1, 0, 0.5, "outside its range [0.1, 0.5]"},
      {1, 0.3, 0.2, "outside its range"},       {1, -1, 0, "dp_clip_min must be"},
      {1, NAN, 0, "dp_clip_min must be"},       {1, 0, INFINITY, "dp_clip_max must be"},
      {1, 1e-7, 0, "dp_clip_min must be"},      {1, 0, 2e6, "dp_clip_max must be"},
      {2e6, 0, 0, "outside its range"},
  };
  for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
    lo = hi = -1;
    err[0] = 0;
    CHECK_EQ_INT(fc_dp_clip_range(bad[i].start, bad[i].min, bad[i].max, &lo, &hi, err, sizeof err), FEDC_ERR_INVALID);
    if (!strstr(err, bad[i].why)) printf("  range %g [%g, %g]: '%s' lacks '%s'\n", bad[i].start, bad[i].min, bad[i].max, err, bad[i].why);
    CHECK(strstr(err, bad[i].why) != NULL);
    CHECK(lo == -1 && hi == -1); /* written only on success */
  }

  /* One client votes one way every round. Its bit as a plaintext vote
   * (-1/2: "clipped") and as a saturating masked value (-1e6: the fraction
   * reads 0, the full step up every round). */
  double mx, mn, last;
  const double votes[] = {-0.5, -1e6};
  for (size_t v = 0; v < 2; v++) {
    last = simulate(votes[v], 0.1, 10, 60, 9, &mx, &mn);
    printf("  vote %g: clip after 60 rounds %.4g (largest %.4g) in [0.1, 10]", votes[v], last, mx);
    CHECK(mx <= 10 && mn >= 0.1);
    double free_last = simulate(votes[v], 0, INFINITY, 60, 9, &mx, &mn);
    printf("; without the range %.4g\n", free_last);
    if (v == 1) {
      CHECK(last == 10);      /* pinned at the max */
      CHECK(free_last > 200); /* e^(0.1 x 60) = 403: the attack the range stops */
    } else {
      CHECK(last < 10); /* one vote of ten only tilts the quantile */
    }
  }
  /* And downwards: "unclipped" at any value holds at the min. */
  last = simulate(1e6, 0.1, 10, 60, 9, &mx, &mn);
  printf("  vote +1e6: clip after 60 rounds %.4g (smallest %.4g)\n", last, mn);
  CHECK(mn >= 0.1 && last == 0.1);
  CHECK(simulate(1e6, 0, INFINITY, 60, 9, &mx, &mn) < 0.01);
  /* Honest clients alone settle near their median norm (0.77). */
  last = simulate(0, 0.1, 10, 200, 10, &mx, &mn);
  printf("  honest only: clip after 200 rounds %.4g\n", last);
  CHECK(last > 0.5 && last < 1.2);

  /* Per-client influence: one vote is a change of 1 in the centred count. */
  fc_rng rng;
  fc_rng_seed(&rng, 11);
  int ok = 1;
  for (int i = 0; i < 10000; i++) {
    double clip = exp(4 * fc_rng_normal(&rng)), expected = 1 + 100 * fc_rng_uniform_double(&rng);
    double gamma = 0.05 + 0.9 * fc_rng_uniform_double(&rng), eta = 2 * fc_rng_uniform_double(&rng);
    double centred = expected * (fc_rng_uniform_double(&rng) * 1.4 - 0.7) + fc_rng_normal(&rng);
    double a = fc_dp_clip_next(clip, centred, expected, gamma, eta, 0, INFINITY, NULL);
    double b = fc_dp_clip_next(clip, centred - 1, expected, gamma, eta, 0, INFINITY, NULL);
    double big = fc_dp_clip_next(clip, centred + 1e9 * fc_rng_normal(&rng), expected, gamma, eta, 0, INFINITY, NULL);
    /* (plus the rounding of exp and log: 1e-12 absolute) */
    ok &= fabs(log(a / b)) <= eta / expected + 1e-12;
    ok &= fabs(log(big / clip)) <= eta * fmax(gamma, 1 - gamma) + 1e-12;
  }
  CHECK(ok);
  /* A NaN count (never expected) does not move the clip. */
  CHECK(fc_dp_clip_next(2, NAN, 10, 0.5, 0.2, 0.1, 10, NULL) == 2);
  return CHECK_DONE();
}
