/*
 * mlp.c - MLP / logistic-regression training and evaluation on the
 * BLAS layer (see mlp.h for the parameter layout and determinism
 * contract).
 *
 * One minibatch of B examples, L layers, row-major throughout:
 *   forward   A0 = X[B x in];  Z_l = A_{l-1} W_l^T + b_l;  A_l = relu(Z_l) for
 *             l < L, A_L = Z_L (logits). One sgemm per layer.
 *   loss      mean over rows of logsumexp(z) - z_y, with the max subtracted
 *             before exp (stable for any logits); accumulated in double.
 *   backward  D_L = (softmax(Z_L) - onehot(y)) / B;
 *             dW_l = D_l^T A_{l-1}  (sgemm),  db_l = column sums of D_l,
 *             D_{l-1} = (D_l W_l) * [A_{l-1} > 0]  (sgemm, skipped for l = 1).
 *   update    g += wd * p;  g += prox_mu * (p - p0) (FedProx, Li et al. 2020, eq. 2:
 *             the gradient of prox_mu/2 ||p - p0||^2, p0 the params on entry);
 *             v = mu * v + g (v = 0 at the start of each call);
 *             p -= lr * v   (PyTorch SGD with dampening 0, nesterov off).
 * The ReLU mask reads the stored post-activation A_{l-1}: A > 0 exactly where
 * Z > 0, so pre-activations need not be kept.
 *
 * Invariants: a workspace belongs to one model shape (checked on every call);
 * its capacity only grows; every buffer is written before it is read within a
 * call, so results never depend on what an earlier call left behind (which is
 * what makes training bitwise reproducible given the seed and BLAS threads).
 * All data checks (dimension, index and label ranges) run before the first
 * parameter is touched.
 */
#include "common/mlp.h"

#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/blas.h"
#include "common/rng.h"
#include "fedc/error.h"

#define EVAL_BATCH 500u

struct fc_mlp_ws {
  fc_mlp m;
  size_t nparams;
  uint32_t cap;                    /* batch capacity of act/delta/labels */
  float *act[FC_MLP_MAX_SIZES];    /* act[l]: cap x sizes[l]; act[0] = input batch, act[L] = logits */
  float *delta[2];                 /* ping-pong: cap x max width */
  uint8_t *labels;                 /* cap */
  float *grad, *velocity;          /* nparams each */
  float *anchor;                   /* FedProx: params on entry (nparams), allocated on first use */
  uint32_t *perm;                  /* positions into the index list, perm_cap */
  uint32_t perm_cap;
};

void fc_train_opts_init(fc_train_opts *o) {
  memset(o, 0, sizeof *o);
  o->lr = 0.05f;
  o->epochs = 1;
  o->batch = 32;
}

size_t fc_mlp_nparams(const fc_mlp *m) {
  size_t n = 0;
  for (uint32_t l = 0; l < m->nlayers && l + 1 < FC_MLP_MAX_SIZES; l++)
    n += (size_t)m->sizes[l + 1] * m->sizes[l] + m->sizes[l + 1];
  return n;
}

int fc_mlp_check(const fc_mlp *m) {
  if (!m || m->nlayers < 1 || m->nlayers >= FC_MLP_MAX_SIZES) return FEDC_ERR_INVALID;
  for (uint32_t l = 0; l <= m->nlayers; l++)
    if (m->sizes[l] < 1 || m->sizes[l] > FC_MLP_MAX_WIDTH) return FEDC_ERR_INVALID;
  /* BLAS lengths are int: keep the whole model addressable by one. */
  uint64_t n = 0;
  for (uint32_t l = 0; l < m->nlayers; l++) n += (uint64_t)m->sizes[l + 1] * m->sizes[l] + m->sizes[l + 1];
  return n <= INT_MAX ? 0 : FEDC_ERR_INVALID;
}

int fc_mlp_parse(const char *s, fc_mlp *out) {
  fc_mlp m;
  memset(&m, 0, sizeof m);
  if (!s || !out) return FEDC_ERR_INVALID;
  if (!strcmp(s, "logreg")) s = "784-10";
  else if (!strcmp(s, "mlp")) s = "784-200-200-10";
  uint32_t count = 0;
  const char *p = s;
  for (;;) {
    if (*p < '0' || *p > '9' || count == FC_MLP_MAX_SIZES) return FEDC_ERR_INVALID;
    uint64_t v = 0;
    while (*p >= '0' && *p <= '9') {
      v = v * 10 + (uint64_t)(*p++ - '0');
      if (v > FC_MLP_MAX_WIDTH) return FEDC_ERR_INVALID;
    }
    m.sizes[count++] = (uint32_t)v;
    if (*p == '\0') break;
    if (*p++ != '-') return FEDC_ERR_INVALID;
  }
  if (count < 2) return FEDC_ERR_INVALID;
  m.nlayers = count - 1;
  if (fc_mlp_check(&m)) return FEDC_ERR_INVALID;
  *out = m;
  return 0;
}

int fc_mlp_spec(const fc_mlp *m, fc_model_spec *out) {
  if (fc_mlp_check(m) || !out) return FEDC_ERR_INVALID;
  fc_model_spec spec;
  memset(&spec, 0, sizeof spec);
  for (uint32_t l = 0; l < m->nlayers; l++) {
    char name[FC_TENSOR_NAME_MAX];
    uint64_t wshape[2] = {m->sizes[l + 1], m->sizes[l]}, bshape[1] = {m->sizes[l + 1]};
    snprintf(name, sizeof name, "fc%u.weight", l + 1);
    int rc = fc_model_spec_add(&spec, name, 2, wshape);
    if (rc) return rc;
    snprintf(name, sizeof name, "fc%u.bias", l + 1);
    if ((rc = fc_model_spec_add(&spec, name, 1, bshape))) return rc;
  }
  *out = spec;
  return 0;
}

int fc_mlp_from_spec(const fc_model_spec *spec, fc_mlp *out, char *why, size_t whylen) {
  fc_mlp m;
  memset(&m, 0, sizeof m);
  if (spec->n < 2 || spec->n % 2 || spec->n / 2 >= FC_MLP_MAX_SIZES) {
    snprintf(why, whylen, "it has %u tensors; the built-in trainer takes 1 to %d linear layers (a weight and a bias "
                          "each)", spec->n, FC_MLP_MAX_SIZES - 1);
    return FEDC_ERR_SHAPE;
  }
  m.nlayers = spec->n / 2;
  for (uint32_t l = 0; l < m.nlayers; l++) {
    const fc_tensor_spec *w = &spec->t[2 * l], *b = &spec->t[2 * l + 1];
    char wname[FC_TENSOR_NAME_MAX], bname[FC_TENSOR_NAME_MAX];
    snprintf(wname, sizeof wname, "fc%u.weight", l + 1);
    snprintf(bname, sizeof bname, "fc%u.bias", l + 1);
    int ok = !strcmp(w->name, wname) && !strcmp(b->name, bname) && w->ndim == 2 && b->ndim == 1 &&
             b->shape[0] == w->shape[0] && w->shape[0] >= 1 && w->shape[0] <= FC_MLP_MAX_WIDTH &&
             w->shape[1] >= 1 && w->shape[1] <= FC_MLP_MAX_WIDTH && (l == 0 || w->shape[1] == m.sizes[l]);
    if (!ok) {
      snprintf(why, whylen, "its tensors %s and %s are not %s [out, %s] and %s [out]", w->name, b->name, wname,
               l ? "previous out" : "in", bname);
      return FEDC_ERR_SHAPE;
    }
    m.sizes[l] = (uint32_t)w->shape[1];
    m.sizes[l + 1] = (uint32_t)w->shape[0];
  }
  if (fc_mlp_check(&m)) {
    snprintf(why, whylen, "it is larger than the built-in trainer takes");
    return FEDC_ERR_SHAPE;
  }
  *out = m;
  return FEDC_OK;
}

const char *fc_mlp_text(const fc_mlp *m, char *buf, size_t len) {
  size_t w = 0;
  buf[0] = 0;
  for (uint32_t l = 0; l <= m->nlayers && l < FC_MLP_MAX_SIZES && w < len; l++)
    w += (size_t)snprintf(buf + w, len - w, "%s%u", l ? "-" : "", m->sizes[l]);
  return buf;
}

int fc_mlp_init(const fc_mlp *m, uint64_t seed, float *params) {
  if (fc_mlp_check(m) || !params) return FEDC_ERR_INVALID;
  fc_rng rng;
  fc_rng_seed(&rng, seed);
  float *p = params;
  for (uint32_t l = 0; l < m->nlayers; l++) {
    /* He et al. 2015 ("Delving deep into rectifiers", eq. 10): weights ~
     * N(0, 2/fan_in), biases 0, the initialisation made for ReLU layers.
     * Measured against PyTorch's nn.Linear default U(+-1/sqrt(fan_in)) on
     * Fashion-MNIST 784-200-200-10: one epoch 84.1% vs 81.3% (mean of 3-6
     * seeds), FedAvg Dirichlet(0.5) round 100: 83.5% vs 81.3%. */
    double sd = sqrt(2.0 / (double)m->sizes[l]);
    size_t nw = (size_t)m->sizes[l + 1] * m->sizes[l];
    for (size_t i = 0; i < nw; i++) p[i] = (float)(sd * fc_rng_normal(&rng));
    memset(p + nw, 0, m->sizes[l + 1] * sizeof *p);
    p += nw + m->sizes[l + 1];
  }
  return 0;
}

/* ---- workspace ------------------------------------------------------------- */

static uint32_t max_width(const fc_mlp *m) {
  uint32_t w = 0;
  for (uint32_t l = 0; l <= m->nlayers; l++)
    if (m->sizes[l] > w) w = m->sizes[l];
  return w;
}

/* Grow batch buffers to hold `batch` rows. On failure the capacity stays as
 * it was (buffers that did grow are merely larger than needed). */
static int ws_reserve(fc_mlp_ws *ws, uint32_t batch) {
  if (batch <= ws->cap) return 0;
  const fc_mlp *m = &ws->m;
  for (uint32_t l = 0; l <= m->nlayers; l++) {
    float *p = realloc(ws->act[l], (size_t)batch * m->sizes[l] * sizeof *p);
    if (!p) return FEDC_ERR_NOMEM;
    ws->act[l] = p;
  }
  for (int k = 0; k < 2; k++) {
    float *p = realloc(ws->delta[k], (size_t)batch * max_width(m) * sizeof *p);
    if (!p) return FEDC_ERR_NOMEM;
    ws->delta[k] = p;
  }
  uint8_t *y = realloc(ws->labels, batch);
  if (!y) return FEDC_ERR_NOMEM;
  ws->labels = y;
  ws->cap = batch;
  return 0;
}

static int ws_reserve_perm(fc_mlp_ws *ws, uint32_t n) {
  if (n <= ws->perm_cap) return 0;
  uint32_t *p = realloc(ws->perm, (size_t)n * sizeof *p);
  if (!p) return FEDC_ERR_NOMEM;
  ws->perm = p;
  ws->perm_cap = n;
  return 0;
}

fc_mlp_ws *fc_mlp_ws_create(const fc_mlp *m, uint32_t batch) {
  if (fc_mlp_check(m)) return NULL;
  fc_mlp_ws *ws = calloc(1, sizeof *ws);
  if (!ws) return NULL;
  ws->m = *m;
  ws->nparams = fc_mlp_nparams(m);
  ws->grad = malloc(ws->nparams * sizeof *ws->grad);
  ws->velocity = malloc(ws->nparams * sizeof *ws->velocity);
  if (!ws->grad || !ws->velocity || ws_reserve(ws, batch ? batch : 32)) {
    fc_mlp_ws_destroy(ws);
    return NULL;
  }
  return ws;
}

void fc_mlp_ws_destroy(fc_mlp_ws *ws) {
  if (!ws) return;
  for (int l = 0; l < FC_MLP_MAX_SIZES; l++) free(ws->act[l]);
  free(ws->delta[0]);
  free(ws->delta[1]);
  free(ws->labels);
  free(ws->grad);
  free(ws->velocity);
  free(ws->anchor);
  free(ws->perm);
  free(ws);
}

static int ws_matches(const fc_mlp_ws *ws, const fc_mlp *m) {
  if (!ws || !m || ws->m.nlayers != m->nlayers) return 0;
  for (uint32_t l = 0; l <= m->nlayers; l++)
    if (ws->m.sizes[l] != m->sizes[l]) return 0;
  return 1;
}

/* ---- kernels ----------------------------------------------------------------- */

/* Everything checked before training touches params: shapes, index range,
 * label range. */
static int check_data(const fc_mlp *m, const fc_dataset *d, const uint32_t *idx, uint32_t n) {
  if (!d || !d->x || !d->y || d->dim != m->sizes[0]) return FEDC_ERR_INVALID;
  if (!idx && n != d->n) return FEDC_ERR_INVALID;
  uint32_t classes = m->sizes[m->nlayers];
  for (uint32_t i = 0; i < n; i++) {
    uint32_t e = idx ? idx[i] : i;
    if (e >= d->n || d->y[e] >= classes) return FEDC_ERR_INVALID;
  }
  return 0;
}

/* Copy B examples (positions pos[0..B) into idx, or idx == NULL for identity)
 * into act[0] and labels. */
static void gather(fc_mlp_ws *ws, const fc_dataset *d, const uint32_t *idx, const uint32_t *pos, uint32_t start,
                   uint32_t count) {
  size_t dim = d->dim;
  for (uint32_t b = 0; b < count; b++) {
    uint32_t k = pos ? pos[start + b] : start + b;
    uint32_t e = idx ? idx[k] : k;
    memcpy(ws->act[0] + (size_t)b * dim, d->x + (size_t)e * dim, dim * sizeof(float));
    ws->labels[b] = d->y[e];
  }
}

static void forward(fc_mlp_ws *ws, const float *params, uint32_t batch) {
  const fc_mlp *m = &ws->m;
  const float *p = params;
  for (uint32_t l = 1; l <= m->nlayers; l++) {
    int in = (int)m->sizes[l - 1], out = (int)m->sizes[l];
    const float *w = p, *bias = p + (size_t)out * in;
    float *z = ws->act[l];
    fc_sgemm(FC_ROW_MAJOR, FC_NO_TRANS, FC_TRANS, (int)batch, out, in, 1.0f, ws->act[l - 1], in, w, in, 0.0f, z,
             out);
    int relu = l < m->nlayers;
    for (uint32_t b = 0; b < batch; b++) {
      float *row = z + (size_t)b * out;
      for (int j = 0; j < out; j++) {
        float v = row[j] + bias[j];
        row[j] = relu && !(v > 0.0f) ? 0.0f : v;
      }
    }
    p = bias + out;
  }
}

/* Cross-entropy of the logits in act[L]; returns the summed loss and counts
 * correct argmax predictions. If dlogits is non-NULL it receives
 * (softmax - onehot) * inv_batch. */
static double xent(fc_mlp_ws *ws, uint32_t batch, float *dlogits, float inv_batch, uint32_t *correct) {
  uint32_t classes = ws->m.sizes[ws->m.nlayers];
  const float *logits = ws->act[ws->m.nlayers];
  double total = 0.0;
  uint32_t right = 0;
  for (uint32_t b = 0; b < batch; b++) {
    const float *z = logits + (size_t)b * classes;
    uint32_t argmax = 0;
    for (uint32_t j = 1; j < classes; j++)
      if (z[j] > z[argmax]) argmax = j;
    float zmax = z[argmax];
    double sum = 0.0;
    for (uint32_t j = 0; j < classes; j++) sum += exp((double)(z[j] - zmax));
    uint32_t y = ws->labels[b];
    total += log(sum) - (double)(z[y] - zmax);
    right += argmax == y;
    if (dlogits) {
      float *g = dlogits + (size_t)b * classes;
      double inv_sum = 1.0 / sum;
      for (uint32_t j = 0; j < classes; j++)
        g[j] = (float)(exp((double)(z[j] - zmax)) * inv_sum - (j == y ? 1.0 : 0.0)) * inv_batch;
    }
  }
  if (correct) *correct += right;
  return total;
}

/* Gradient of the mean loss over the batch already in act[]/labels into grad. */
static double backward(fc_mlp_ws *ws, const float *params, uint32_t batch, float *grad) {
  const fc_mlp *m = &ws->m;
  float *dcur = ws->delta[0], *dprev = ws->delta[1];
  double loss = xent(ws, batch, dcur, 1.0f / (float)batch, NULL);
  size_t off = ws->nparams;
  for (uint32_t l = m->nlayers; l >= 1; l--) {
    int in = (int)m->sizes[l - 1], out = (int)m->sizes[l];
    off -= (size_t)out * in + (size_t)out;
    const float *w = params + off;
    float *gw = grad + off, *gb = grad + off + (size_t)out * in;
    fc_sgemm(FC_ROW_MAJOR, FC_TRANS, FC_NO_TRANS, out, in, (int)batch, 1.0f, dcur, out, ws->act[l - 1], in, 0.0f,
             gw, in);
    memset(gb, 0, (size_t)out * sizeof *gb);
    for (uint32_t b = 0; b < batch; b++) fc_saxpy(out, 1.0f, dcur + (size_t)b * out, 1, gb, 1);
    if (l > 1) {
      fc_sgemm(FC_ROW_MAJOR, FC_NO_TRANS, FC_NO_TRANS, (int)batch, in, out, 1.0f, dcur, out, w, in, 0.0f, dprev, in);
      const float *a = ws->act[l - 1];
      for (size_t i = 0; i < (size_t)batch * in; i++)
        if (!(a[i] > 0.0f)) dprev[i] = 0.0f;
      float *t = dcur;
      dcur = dprev;
      dprev = t;
    }
  }
  return loss;
}

/* ---- public entry points ------------------------------------------------------ */

int fc_mlp_loss_grad(const fc_mlp *m, fc_mlp_ws *ws, const float *params, const fc_dataset *d, const uint32_t *idx,
                     uint32_t n, float *grad, double *loss) {
  int rc;
  if (!ws_matches(ws, m) || !params || !grad || n == 0) return FEDC_ERR_INVALID;
  if ((rc = check_data(m, d, idx, n))) return rc;
  if ((rc = ws_reserve(ws, n))) return rc;
  gather(ws, d, idx, NULL, 0, n);
  forward(ws, params, n);
  double total = backward(ws, params, n, grad);
  if (loss) *loss = total / n;
  return 0;
}

int fc_mlp_train(const fc_mlp *m, fc_mlp_ws *ws, float *params, const fc_dataset *d, const uint32_t *idx,
                 uint32_t n, const fc_train_opts *o, double *mean_loss) {
  int rc;
  if (!ws_matches(ws, m) || !params || !o || n == 0) return FEDC_ERR_INVALID;
  if (!(o->lr >= 0.0f && isfinite(o->lr)) || o->epochs == 0 || o->batch == 0 ||
      !(o->momentum >= 0.0f && o->momentum < 1.0f) || !(o->weight_decay >= 0.0f && isfinite(o->weight_decay)) ||
      !(o->prox_mu >= 0.0f && isfinite(o->prox_mu)))
    return FEDC_ERR_INVALID;
  if ((rc = check_data(m, d, idx, n))) return rc;
  uint32_t batch = o->batch < n ? o->batch : n;
  if ((rc = ws_reserve(ws, batch)) || (rc = ws_reserve_perm(ws, n))) return rc;

  int np = (int)ws->nparams;
  if (o->prox_mu > 0.0f) {
    if (!ws->anchor && !(ws->anchor = malloc(ws->nparams * sizeof *ws->anchor))) return FEDC_ERR_NOMEM;
    memcpy(ws->anchor, params, ws->nparams * sizeof *ws->anchor);
  }
  fc_rng rng;
  fc_rng_seed(&rng, o->seed);
  for (uint32_t i = 0; i < n; i++) ws->perm[i] = i;
  if (o->momentum > 0.0f) memset(ws->velocity, 0, ws->nparams * sizeof *ws->velocity);

  double epoch_loss = 0.0;
  for (uint32_t epoch = 0; epoch < o->epochs; epoch++) {
    fc_rng_shuffle_u32(&rng, ws->perm, n);
    epoch_loss = 0.0;
    for (uint32_t start = 0; start < n; start += batch) {
      uint32_t count = n - start < batch ? n - start : batch;
      gather(ws, d, idx, ws->perm, start, count);
      forward(ws, params, count);
      double loss = backward(ws, params, count, ws->grad);
      if (!isfinite(loss)) return FEDC_ERR_NONFINITE;
      epoch_loss += loss;
      float *step = ws->grad;
      if (o->weight_decay > 0.0f) fc_saxpy(np, o->weight_decay, params, 1, ws->grad, 1);
      if (o->prox_mu > 0.0f) { /* g += mu (p - p0), as two axpys: no scratch vector */
        fc_saxpy(np, o->prox_mu, params, 1, ws->grad, 1);
        fc_saxpy(np, -o->prox_mu, ws->anchor, 1, ws->grad, 1);
      }
      if (o->momentum > 0.0f) {
        fc_sscal(np, o->momentum, ws->velocity, 1);
        fc_saxpy(np, 1.0f, ws->grad, 1, ws->velocity, 1);
        step = ws->velocity;
      }
      fc_saxpy(np, -o->lr, step, 1, params, 1);
    }
  }
  if (!fc_all_finite(params, ws->nparams, NULL)) return FEDC_ERR_NONFINITE;
  if (mean_loss) *mean_loss = epoch_loss / n;
  return 0;
}

int fc_mlp_eval(const fc_mlp *m, fc_mlp_ws *ws, const float *params, const fc_dataset *d, const uint32_t *idx,
                uint32_t n, double *accuracy, double *loss) {
  int rc;
  if (!ws_matches(ws, m) || !params || !d) return FEDC_ERR_INVALID;
  if (!idx) n = d->n;
  if (n == 0) return FEDC_ERR_INVALID;
  if ((rc = check_data(m, d, idx, n))) return rc;
  uint32_t batch = n < EVAL_BATCH ? n : EVAL_BATCH;
  if ((rc = ws_reserve(ws, batch))) return rc;
  double total = 0.0;
  uint32_t correct = 0;
  for (uint32_t start = 0; start < n; start += batch) {
    uint32_t count = n - start < batch ? n - start : batch;
    gather(ws, d, idx, NULL, start, count);
    forward(ws, params, count);
    total += xent(ws, count, NULL, 0.0f, &correct);
  }
  if (accuracy) *accuracy = (double)correct / n;
  if (loss) *loss = total / n;
  return 0;
}

int fc_mlp_predict(const fc_mlp *m, fc_mlp_ws *ws, const float *params, const fc_dataset *d, uint64_t *counts,
                   double *prob_sum) {
  return fc_mlp_predict_idx(m, ws, params, d, NULL, d ? d->n : 0, counts, prob_sum);
}

int fc_mlp_predict_idx(const fc_mlp *m, fc_mlp_ws *ws, const float *params, const fc_dataset *d, const uint32_t *idx,
                       uint32_t n, uint64_t *counts, double *prob_sum) {
  int rc;
  if (!ws_matches(ws, m) || !params || !d || !counts || n == 0) return FEDC_ERR_INVALID;
  if ((rc = check_data(m, d, idx, n))) return rc;
  uint32_t batch = n < EVAL_BATCH ? n : EVAL_BATCH, classes = m->sizes[m->nlayers];
  if ((rc = ws_reserve(ws, batch))) return rc;
  memset(counts, 0, classes * sizeof *counts);
  if (prob_sum) memset(prob_sum, 0, classes * sizeof *prob_sum);
  for (uint32_t start = 0; start < n; start += batch) {
    uint32_t count = n - start < batch ? n - start : batch;
    gather(ws, d, idx, NULL, start, count);
    forward(ws, params, count);
    for (uint32_t b = 0; b < count; b++) {
      const float *z = ws->act[m->nlayers] + (size_t)b * classes;
      uint32_t argmax = 0;
      for (uint32_t j = 1; j < classes; j++)
        if (z[j] > z[argmax]) argmax = j;
      counts[argmax]++;
      if (!prob_sum) continue;
      double sum = 0.0;
      for (uint32_t j = 0; j < classes; j++) sum += exp((double)(z[j] - z[argmax]));
      for (uint32_t j = 0; j < classes; j++) prob_sum[j] += exp((double)(z[j] - z[argmax])) / sum;
    }
  }
  return 0;
}
