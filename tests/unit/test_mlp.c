/*
 * test_mlp.c - the built-in MLP trainer: model spec names and shapes, size
 * parsing, backward pass against central finite differences, learning a
 * separable toy problem, bitwise determinism, argument checks, and FedProx's
 * proximal term against its closed-form steps.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "client/data.h"
#include "common/blas.h"
#include "common/mlp.h"
#include "common/rng.h"
#include "fedc/error.h"
#include "tests/unit/check.h"

static void test_spec_parse(void) {
  fc_mlp m;
  CHECK_EQ_INT(fc_mlp_parse("mlp", &m), 0);
  CHECK(m.nlayers == 3 && m.sizes[0] == 784 && m.sizes[1] == 200 && m.sizes[2] == 200 && m.sizes[3] == 10);
  CHECK_EQ_INT(fc_mlp_nparams(&m), 784 * 200 + 200 + 200 * 200 + 200 + 200 * 10 + 10);
  fc_model_spec spec;
  CHECK_EQ_INT(fc_mlp_spec(&m, &spec), 0);
  CHECK_EQ_INT(spec.n, 6);
  CHECK(strcmp(spec.t[0].name, "fc1.weight") == 0 && spec.t[0].ndim == 2 && spec.t[0].shape[0] == 200 &&
        spec.t[0].shape[1] == 784);
  CHECK(strcmp(spec.t[1].name, "fc1.bias") == 0 && spec.t[1].ndim == 1 && spec.t[1].shape[0] == 200);
  CHECK(strcmp(spec.t[4].name, "fc3.weight") == 0 && spec.t[4].shape[0] == 10 && spec.t[4].shape[1] == 200);
  CHECK(strcmp(spec.t[5].name, "fc3.bias") == 0 && spec.t[5].shape[0] == 10);
  CHECK_EQ_INT(fc_model_numel(&spec), fc_mlp_nparams(&m));
  char err[128];
  CHECK_EQ_INT(fc_model_spec_check(&spec, err, sizeof err), 0);

  CHECK_EQ_INT(fc_mlp_parse("logreg", &m), 0);
  CHECK(m.nlayers == 1 && m.sizes[0] == 784 && m.sizes[1] == 10);
  CHECK_EQ_INT(fc_mlp_parse("3-5-2", &m), 0);
  CHECK(m.nlayers == 2 && m.sizes[2] == 2);
  static const char *bad[] = {"", "784", "784-", "-10", "784--10", "784-0", "784-10x", "a-b",
                              "1-2-3-4-5-6-7-8-9", "2000000-10", "784 - 10"};
  fc_mlp keep = m;
  for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
    int rc = fc_mlp_parse(bad[i], &m);
    if (rc != FEDC_ERR_INVALID) fprintf(stderr, "parse accepted \"%s\"\n", bad[i]);
    CHECK_EQ_INT(rc, FEDC_ERR_INVALID);
  }
  CHECK(memcmp(&m, &keep, sizeof m) == 0); /* untouched on failure */

  /* He init: weights ~ N(0, 2/in) per layer (checked on the empirical mean
   * and standard deviation of each weight matrix), biases exactly 0. */
  fc_mlp_parse("1000-50-20", &m);
  size_t np = fc_mlp_nparams(&m);
  float *p = malloc(np * sizeof *p);
  fc_mlp_init(&m, 5, p);
  size_t off = 0;
  for (uint32_t l = 0; l < 2; l++) {
    size_t nw = (size_t)m.sizes[l] * m.sizes[l + 1];
    double sum = 0, sq = 0, want = sqrt(2.0 / m.sizes[l]);
    for (size_t i = 0; i < nw; i++) {
      sum += p[off + i];
      sq += (double)p[off + i] * p[off + i];
    }
    double mean = sum / nw, sd = sqrt(sq / nw - mean * mean);
    CHECK(fabs(mean) < 0.1 * want);
    CHECK(fabs(sd - want) < 0.05 * want);
    int zero = 1;
    for (size_t i = 0; i < m.sizes[l + 1]; i++) zero &= p[off + nw + i] == 0.0f;
    CHECK(zero);
    off += nw + m.sizes[l + 1];
  }
  free(p);
}

/* n examples in dim dims, `classes` Gaussian blobs far apart. */
static void make_blobs(fc_dataset *d, uint32_t n, uint32_t dim, uint32_t classes, float spread, uint64_t seed) {
  fc_rng r;
  fc_rng_seed(&r, seed);
  d->n = n;
  d->dim = dim;
  d->classes = classes;
  d->x = malloc((size_t)n * dim * sizeof *d->x);
  d->y = malloc(n);
  for (uint32_t i = 0; i < n; i++) {
    uint32_t c = i % classes;
    d->y[i] = (uint8_t)c;
    for (uint32_t j = 0; j < dim; j++) {
      float center = (j % classes == c) ? 2.0f : -1.0f;
      d->x[(size_t)i * dim + j] = center + spread * (float)fc_rng_normal(&r);
    }
  }
}

static void test_gradient(void) {
  fc_mlp m;
  fc_mlp_parse("6-7-5-3", &m);
  fc_dataset d;
  make_blobs(&d, 8, 6, 3, 1.0f, 1);
  size_t np = fc_mlp_nparams(&m);
  float *p = malloc(np * sizeof *p), *g = malloc(np * sizeof *g), *g2 = malloc(np * sizeof *g2);
  fc_mlp_init(&m, 5, p);
  fc_mlp_ws *ws = fc_mlp_ws_create(&m, 2); /* smaller than the batch: must grow */
  CHECK(ws != NULL);
  double loss = 0;
  CHECK_EQ_INT(fc_mlp_loss_grad(&m, ws, p, &d, NULL, d.n, g, &loss), 0);
  CHECK(loss > 0 && isfinite(loss));

  /* Central differences on the loss, evaluated in double via fc_mlp_eval. */
  const float eps = 3e-3f; /* float logits: smaller steps drown in rounding */
  int bad = 0;
  double worst = 0;
  for (size_t i = 0; i < np; i++) {
    float orig = p[i];
    double lp, lm;
    p[i] = orig + eps;
    fc_mlp_eval(&m, ws, p, &d, NULL, 0, NULL, &lp);
    p[i] = orig - eps;
    fc_mlp_eval(&m, ws, p, &d, NULL, 0, NULL, &lm);
    p[i] = orig;
    double fd = (lp - lm) / (2.0 * (double)eps);
    double rel = fabs(fd - g[i]) / fmax(fabs(fd) + fabs(g[i]), 1e-3);
    if (rel > worst) worst = rel;
    if (rel > 1e-2) bad++;
  }
  printf("gradient check: %zu params, worst relative error %.2e, %d over 1e-2\n", np, worst, bad);
  /* A step across a ReLU kink would spoil one difference; with these fixed
   * seeds none does (worst is ~1e-3), so any miss is a real bug. */
  CHECK_EQ_INT(bad, 0);

  /* Same call again: identical gradient (no state leaks between calls). */
  CHECK_EQ_INT(fc_mlp_loss_grad(&m, ws, p, &d, NULL, d.n, g2, NULL), 0);
  CHECK(memcmp(g, g2, np * sizeof *g) == 0);

  /* Gradient over an index subset equals the gradient of the gathered subset. */
  uint32_t sub[3] = {5, 1, 6};
  CHECK_EQ_INT(fc_mlp_loss_grad(&m, ws, p, &d, sub, 3, g, NULL), 0);
  CHECK(isfinite(fc_l2_norm(g, np)) && fc_l2_norm(g, np) > 0);

  fc_mlp_ws_destroy(ws);
  free(p);
  free(g);
  free(g2);
  fc_dataset_free(&d);
}

static void test_learns_and_deterministic(void) {
  fc_mlp m;
  fc_mlp_parse("8-16-4", &m);
  fc_dataset train, test;
  make_blobs(&train, 800, 8, 4, 0.8f, 10);
  make_blobs(&test, 400, 8, 4, 0.8f, 11);
  size_t np = fc_mlp_nparams(&m);
  float *p = malloc(np * sizeof *p), *q = malloc(np * sizeof *q), *p0 = malloc(np * sizeof *p0);
  fc_mlp_init(&m, 1, p0);
  memcpy(p, p0, np * sizeof *p);
  fc_mlp_ws *ws = fc_mlp_ws_create(&m, 16);

  fc_train_opts o;
  fc_train_opts_init(&o);
  o.lr = 0.05f;
  o.batch = 16;
  o.seed = 99;
  double acc0, loss0, acc, loss, train_loss1, train_loss2;
  fc_mlp_eval(&m, ws, p, &test, NULL, 0, &acc0, &loss0);
  CHECK_EQ_INT(fc_mlp_train(&m, ws, p, &train, NULL, train.n, &o, &train_loss1), 0);
  o.epochs = 4;
  o.momentum = 0.9f;
  o.weight_decay = 1e-4f;
  CHECK_EQ_INT(fc_mlp_train(&m, ws, p, &train, NULL, train.n, &o, &train_loss2), 0);
  CHECK_EQ_INT(fc_mlp_eval(&m, ws, p, &test, NULL, 0, &acc, &loss), 0);
  printf("toy blobs: test acc %.3f -> %.3f, test loss %.3f -> %.3f, train loss %.3f -> %.3f\n", acc0, acc, loss0,
         loss, train_loss1, train_loss2);
  CHECK(loss < loss0 && train_loss2 < train_loss1);
  CHECK(acc > 0.95);

  /* Bitwise determinism: same init, seed, data -> same params. */
  memcpy(p, p0, np * sizeof *p);
  memcpy(q, p0, np * sizeof *q);
  fc_mlp_ws *ws2 = fc_mlp_ws_create(&m, 3);
  CHECK_EQ_INT(fc_mlp_train(&m, ws, p, &train, NULL, train.n, &o, NULL), 0);
  CHECK_EQ_INT(fc_mlp_train(&m, ws2, q, &train, NULL, train.n, &o, NULL), 0);
  CHECK(memcmp(p, q, np * sizeof *p) == 0);
  memcpy(q, p0, np * sizeof *q);
  o.seed = 100;
  CHECK_EQ_INT(fc_mlp_train(&m, ws2, q, &train, NULL, train.n, &o, NULL), 0);
  CHECK(memcmp(p, q, np * sizeof *p) != 0);

  /* Index subsets: train on the first half only via idx. */
  uint32_t *idx = malloc(400 * sizeof *idx);
  for (uint32_t i = 0; i < 400; i++) idx[i] = 2 * i;
  CHECK_EQ_INT(fc_mlp_train(&m, ws, q, &train, idx, 400, &o, &loss), 0);
  CHECK_EQ_INT(fc_mlp_eval(&m, ws, q, &train, idx, 400, &acc, NULL), 0);
  CHECK(acc > 0.9);

  /* Argument checks leave params untouched. */
  memcpy(p, q, np * sizeof *p);
  idx[7] = train.n;
  CHECK_EQ_INT(fc_mlp_train(&m, ws, p, &train, idx, 400, &o, NULL), FEDC_ERR_INVALID);
  idx[7] = 14;
  train.y[idx[9]] = 4; /* label >= classes */
  CHECK_EQ_INT(fc_mlp_train(&m, ws, p, &train, idx, 400, &o, NULL), FEDC_ERR_INVALID);
  train.y[idx[9]] = 1;
  CHECK(memcmp(p, q, np * sizeof *p) == 0);
  fc_mlp other;
  fc_mlp_parse("8-10-4", &other);
  CHECK_EQ_INT(fc_mlp_train(&other, ws, p, &train, NULL, train.n, &o, NULL), FEDC_ERR_INVALID);
  fc_dataset wrong = test;
  wrong.dim = 7;
  CHECK_EQ_INT(fc_mlp_eval(&m, ws, p, &wrong, NULL, 0, &acc, NULL), FEDC_ERR_INVALID);
  o.batch = 0;
  CHECK_EQ_INT(fc_mlp_train(&m, ws, p, &train, NULL, train.n, &o, NULL), FEDC_ERR_INVALID);
  o.batch = 16;
  o.momentum = 1.0f;
  CHECK_EQ_INT(fc_mlp_train(&m, ws, p, &train, NULL, train.n, &o, NULL), FEDC_ERR_INVALID);

  /* Divergence is reported, not hidden. */
  o.momentum = 0;
  o.lr = 1e30f;
  CHECK_EQ_INT(fc_mlp_train(&m, ws, p, &train, NULL, train.n, &o, NULL), FEDC_ERR_NONFINITE);

  CHECK(fc_mlp_ws_create(&(fc_mlp){.nlayers = 0}, 8) == NULL);
  fc_mlp_ws_destroy(NULL);
  fc_mlp_ws_destroy(ws);
  fc_mlp_ws_destroy(ws2);
  free(idx);
  free(p);
  free(q);
  free(p0);
  fc_dataset_free(&train);
  fc_dataset_free(&test);
}

/* fc_mlp_from_spec: the inverse of fc_mlp_spec for every MLP, and a reason
 * for anything else (the client ends on it: issue 21). */
static void test_from_spec(void) {
  static const char *ok[] = {"logreg", "mlp", "3-5-2", "1-2-3-4-5-6-7-8"};
  for (size_t i = 0; i < sizeof ok / sizeof *ok; i++) {
    fc_mlp m, back;
    fc_model_spec spec;
    char why[200] = "", text[64];
    CHECK_EQ_INT(fc_mlp_parse(ok[i], &m), 0);
    CHECK_EQ_INT(fc_mlp_spec(&m, &spec), 0);
    CHECK_EQ_INT(fc_mlp_from_spec(&spec, &back, why, sizeof why), FEDC_OK);
    CHECK(memcmp(&m, &back, sizeof m) == 0);
    fc_mlp_parse(fc_mlp_text(&back, text, sizeof text), &m);
    CHECK(memcmp(&m, &back, sizeof m) == 0);
  }
  fc_mlp m, keep;
  fc_model_spec spec, base;
  char why[200];
  fc_mlp_parse("6-4-3", &m);
  fc_mlp_spec(&m, &base);
  keep = m;
  spec = base; /* a renamed tensor */
  snprintf(spec.t[2].name, sizeof spec.t[2].name, "head.weight");
  CHECK_EQ_INT(fc_mlp_from_spec(&spec, &m, why, sizeof why), FEDC_ERR_SHAPE);
  CHECK(strstr(why, "head.weight and fc2.bias are not fc2.weight [out, previous out] and fc2.bias [out]") != NULL);
  spec = base; /* layers that do not chain */
  spec.t[2].shape[1] = 5;
  CHECK_EQ_INT(fc_mlp_from_spec(&spec, &m, why, sizeof why), FEDC_ERR_SHAPE);
  spec = base; /* a bias of another width */
  spec.t[1].shape[0] = 3;
  CHECK_EQ_INT(fc_mlp_from_spec(&spec, &m, why, sizeof why), FEDC_ERR_SHAPE);
  spec = base; /* an odd number of tensors */
  spec.n = 3;
  CHECK_EQ_INT(fc_mlp_from_spec(&spec, &m, why, sizeof why), FEDC_ERR_SHAPE);
  CHECK(strstr(why, "it has 3 tensors") != NULL);
  spec = base; /* a 4-d weight (a convolution) */
  spec.t[0].ndim = 4;
  CHECK_EQ_INT(fc_mlp_from_spec(&spec, &m, why, sizeof why), FEDC_ERR_SHAPE);
  CHECK(memcmp(&m, &keep, sizeof m) == 0); /* untouched on failure */
}

/* FedProx (Li et al. 2020, eq. 2): local objective h(w) = f(w) + mu/2 ||w - w0||^2,
 * w0 the weights on entry, so each SGD step is w -= lr (grad f(w) + mu (w - w0)).
 * Full-batch steps are replayed here from fc_mlp_loss_grad (whose gradient
 * test_gradient checks against finite differences) and the closed-form
 * proximal gradient; the trainer must land on the same weights. */
static void test_fedprox(void) {
  fc_mlp m;
  fc_mlp_parse("6-7-3", &m);
  fc_dataset d;
  make_blobs(&d, 12, 6, 3, 1.0f, 3);
  size_t np = fc_mlp_nparams(&m);
  float *p0 = malloc(np * sizeof *p0), *p = malloc(np * sizeof *p), *q = malloc(np * sizeof *q),
        *g = malloc(np * sizeof *g), *plain = malloc(np * sizeof *plain);
  fc_mlp_init(&m, 7, p0);
  fc_mlp_ws *ws = fc_mlp_ws_create(&m, 12);
  fc_train_opts o;
  fc_train_opts_init(&o);
  o.lr = 0.2f;
  o.epochs = 4;
  o.batch = d.n; /* one full batch per epoch: the steps are deterministic up to summation order */
  o.prox_mu = 0.7f;
  memcpy(p, p0, np * sizeof *p);
  CHECK_EQ_INT(fc_mlp_train(&m, ws, p, &d, NULL, d.n, &o, NULL), 0);

  memcpy(q, p0, np * sizeof *q);
  for (uint32_t e = 0; e < o.epochs; e++) {
    CHECK_EQ_INT(fc_mlp_loss_grad(&m, ws, q, &d, NULL, d.n, g, NULL), 0);
    for (size_t i = 0; i < np; i++) q[i] -= o.lr * (g[i] + o.prox_mu * (q[i] - p0[i]));
  }
  double worst = 0, moved = 0;
  for (size_t i = 0; i < np; i++) {
    worst = fmax(worst, fabs((double)p[i] - q[i]));
    moved = fmax(moved, fabs((double)p[i] - p0[i]));
  }
  printf("fedprox: trainer vs closed-form steps: max |diff| %.2e (weights moved up to %.3f)\n", worst, moved);
  CHECK(worst < 1e-5 && moved > 1e-2);

  /* The term matters: without it the same steps land elsewhere, farther from w0. */
  o.prox_mu = 0;
  memcpy(plain, p0, np * sizeof *plain);
  CHECK_EQ_INT(fc_mlp_train(&m, ws, plain, &d, NULL, d.n, &o, NULL), 0);
  double dist_prox = 0, dist_plain = 0, diff = 0;
  for (size_t i = 0; i < np; i++) {
    dist_prox += ((double)p[i] - p0[i]) * ((double)p[i] - p0[i]);
    dist_plain += ((double)plain[i] - p0[i]) * ((double)plain[i] - p0[i]);
    diff = fmax(diff, fabs((double)plain[i] - p[i]));
  }
  CHECK(diff > 1e-4 && dist_prox < dist_plain);

  /* Minibatches and momentum with the term: each call anchors at its own entry
   * weights (a second call does not pull back to the first call's w0). */
  o.prox_mu = 1000.0f; /* so strong that lr * mu > 2 would oscillate: keep lr * mu < 1 */
  o.lr = 0.0009f;
  o.batch = 4;
  o.momentum = 0.5f;
  memcpy(q, p, np * sizeof *q);
  CHECK_EQ_INT(fc_mlp_train(&m, ws, q, &d, NULL, d.n, &o, NULL), 0);
  double from_entry = 0, from_first = 0;
  for (size_t i = 0; i < np; i++) {
    from_entry = fmax(from_entry, fabs((double)q[i] - p[i]));
    from_first = fmax(from_first, fabs((double)q[i] - p0[i]));
  }
  CHECK(from_entry < 0.05 && from_first > 0.05);

  /* Bad mu is refused before anything is touched. */
  memcpy(q, p, np * sizeof *q);
  o.prox_mu = -0.1f;
  CHECK_EQ_INT(fc_mlp_train(&m, ws, q, &d, NULL, d.n, &o, NULL), FEDC_ERR_INVALID);
  o.prox_mu = NAN;
  CHECK_EQ_INT(fc_mlp_train(&m, ws, q, &d, NULL, d.n, &o, NULL), FEDC_ERR_INVALID);
  CHECK(memcmp(p, q, np * sizeof *p) == 0);
  fc_mlp_ws_destroy(ws);
  free(p0);
  free(p);
  free(q);
  free(g);
  free(plain);
  fc_dataset_free(&d);
}

int main(void) {
  fc_blas_set_threads(1); /* determinism contract: fixed thread count */
  test_spec_parse();
  test_from_spec();
  test_gradient();
  test_learns_and_deterministic();
  test_fedprox();
  return CHECK_DONE();
}
