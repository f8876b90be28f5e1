/*
 * test_drift.c - the population stability index (coordinator/drift.c) on
 * distributions worked by hand, identical ones (0), its symmetry, the eps
 * floor with empty bins (finite, the known value), bad input (NAN); and
 * fc_mlp_predict's histogram on a model whose predictions are known.
 */
#include <math.h>
#include <string.h>

#include "check.h"
#include "common/mlp.h"
#include "coordinator/drift.h"
#include "fedc/error.h"

#define NEAR(a, b, tol) CHECK(fabs((a) - (b)) <= (tol))

static void known_values(void) {
  double p[] = {0.5, 0.5}, q[] = {0.25, 0.75};
  /* 0.25 ln 2 + (-0.25) ln(2/3) */
  NEAR(fc_drift_psi(p, q, 2, FC_DRIFT_EPS), 0.25 * log(2.0) - 0.25 * log(2.0 / 3.0), 1e-12);
  NEAR(fc_drift_psi(p, q, 2, FC_DRIFT_EPS), 0.2746530721670274, 1e-12);
  NEAR(fc_drift_psi(q, p, 2, FC_DRIFT_EPS), fc_drift_psi(p, q, 2, FC_DRIFT_EPS), 1e-15); /* symmetric */
  double a[] = {0.1, 0.2, 0.7}, b[] = {0.2, 0.2, 0.6};
  /* -0.1 ln(1/2) + 0 + 0.1 ln(7/6) = 0.0847298... : "stable" (< 0.1) */
  NEAR(fc_drift_psi(a, b, 3, FC_DRIFT_EPS), 0.1 * log(2.0) + 0.1 * log(7.0 / 6.0), 1e-12);
  CHECK(fc_drift_psi(a, b, 3, FC_DRIFT_EPS) < 0.1);
  CHECK(fc_drift_psi(p, q, 2, FC_DRIFT_EPS) > FC_DRIFT_DEFAULT_THRESHOLD); /* "significant" */
}

static void identical(void) {
  double p[10];
  for (int i = 0; i < 10; i++) p[i] = (i + 1) / 55.0;
  CHECK(fc_drift_psi(p, p, 10, FC_DRIFT_EPS) == 0.0);
  double z[] = {1, 0, 0};
  CHECK(fc_drift_psi(z, z, 3, FC_DRIFT_EPS) == 0.0); /* empty bins on both sides cost nothing */
}

static void floor_with_empty_bins(void) {
  double p[] = {1, 0}, q[] = {0, 1};
  double v = fc_drift_psi(p, q, 2, 1e-4);
  CHECK(isfinite(v));
  /* each bin: (1 - 1e-4) ln(1e4) */
  NEAR(v, 2 * (1 - 1e-4) * log(1e4), 1e-9);
  NEAR(v, 18.4188386759, 1e-6);
  /* a smaller floor, a larger index */
  CHECK(fc_drift_psi(p, q, 2, 1e-6) > v);
  /* one class appears: 0.01 of the mass moves into an empty bin */
  double r[] = {0.99, 0.01}, s[] = {1, 0};
  NEAR(fc_drift_psi(r, s, 2, 1e-4), (0.99 - 1) * log(0.99) + (0.01 - 1e-4) * log(0.01 / 1e-4), 1e-12);
}

static void bad_input(void) {
  double p[] = {0.5, 0.5}, q[] = {0.5, 0.5}, neg[] = {-0.1, 1.1}, inf[] = {INFINITY, 0};
  CHECK(isnan(fc_drift_psi(p, q, 0, FC_DRIFT_EPS)));
  CHECK(isnan(fc_drift_psi(p, q, 2, 0)));
  CHECK(isnan(fc_drift_psi(neg, q, 2, FC_DRIFT_EPS)));
  CHECK(isnan(fc_drift_psi(p, inf, 2, FC_DRIFT_EPS)));
  uint64_t c[] = {1, 3, 0, 4};
  double d[4];
  fc_drift_normalize_counts(c, 4, d);
  NEAR(d[0], 0.125, 1e-15);
  NEAR(d[1], 0.375, 1e-15);
  CHECK(d[2] == 0);
  NEAR(d[3], 0.5, 1e-15);
  uint64_t zero[] = {0, 0};
  fc_drift_normalize_counts(zero, 2, d);
  CHECK(d[0] == 0 && d[1] == 0);
}

/* A 2-in, 2-class logistic model with identity weights predicts the larger
 * input: 3 of the 4 examples are class 1. */
static void predict_histogram(void) {
  fc_mlp m = {.nlayers = 1, .sizes = {2, 2}};
  float params[] = {1, 0, 0, 1, 0, 0}; /* fc1.weight [2,2], fc1.bias [2] */
  float x[] = {0.9f, 0.1f, 0.1f, 0.9f, 0.2f, 0.3f, 0.0f, 1.0f};
  uint8_t y[4] = {0};
  fc_dataset d = {.n = 4, .dim = 2, .classes = 1, .x = x, .y = y};
  fc_mlp_ws *ws = fc_mlp_ws_create(&m, 0);
  CHECK(ws != NULL);
  uint64_t counts[2];
  double probs[2];
  CHECK_EQ_INT(fc_mlp_predict(&m, ws, params, &d, counts, probs), FEDC_OK);
  CHECK(counts[0] == 1 && counts[1] == 3);
  NEAR(probs[0] + probs[1], 4.0, 1e-9);
  /* softmax of (0.9, 0.1): 1 / (1 + e^-0.8) */
  double p0 = 1 / (1 + exp(-0.8)) + 1 / (1 + exp(0.8)) + 1 / (1 + exp(0.1)) + 1 / (1 + exp(1.0));
  NEAR(probs[0], p0, 1e-6);
  d.dim = 3; /* the model's input is 2 */
  CHECK_EQ_INT(fc_mlp_predict(&m, ws, params, &d, counts, NULL), FEDC_ERR_INVALID);
  fc_mlp_ws_destroy(ws);
}

int main(void) {
  known_values();
  identical();
  floor_with_empty_bins();
  bad_input();
  predict_histogram();
  return CHECK_DONE();
}
