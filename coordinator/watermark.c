/*
 * watermark.c - the global model's watermark (watermark.h): the key file, the
 * trigger set drawn from it, the chance of a trigger-set score, and the
 * fine-tuning the coordinator runs on each new version (finalize in
 * coord_publish.c calls fc_wm_embed; `fedc watermark verify` calls fc_wm_check).
 *
 * May call: common/ (the MLP kernels, the dataset), crypto/ (HKDF, AES-CTR,
 * the key-file rule, wiping). Nothing here touches the state, the engine or
 * the network: finalize owns when the watermark runs, this file what it does.
 *
 * Invariants: the key's bytes live only inside fc_wm_create and fc_wm_check
 * (wiped before they return); the trigger set lives in an fc_wm (wiped by
 * fc_wm_destroy) or in a caller's buffer. A failed fine-tuning step leaves
 * the caller's parameters as they were.
 */
#include "coordinator/watermark.h"

#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "crypto/keyfile.h"
#include "crypto/sa_crypto.h"
#include "crypto/sha256.h"
#include "fedc/error.h"

struct fc_wm {
  fc_mlp mlp;
  fc_mlp_ws *ws;
  fc_dataset triggers;
  uint32_t max_steps;
  float lr;
  float *backup; /* the parameters before this round's steps */
};

int fc_wm_key_read(const char *path, uint8_t key[FC_WM_KEY_LEN], char *err, size_t errlen) {
  char *buf = NULL, why[600];
  size_t n = 0;
  int rc = fc_key_file_read(path, 128, &buf, &n, why, sizeof why);
  if (rc != FEDC_OK && rc != FEDC_ERR_TOO_LARGE) {
    snprintf(err, errlen, "%s", why);
    return rc;
  }
  if (rc == FEDC_OK && n > 0 && buf[n - 1] == '\n') buf[--n] = 0;
  int bad = rc != FEDC_OK || n != 2 * FC_WM_KEY_LEN || fc_unhex(buf, key, FC_WM_KEY_LEN) != FEDC_OK;
  if (buf) fc_wipe(buf, n);
  free(buf);
  if (bad) {
    fc_wipe(key, FC_WM_KEY_LEN);
    snprintf(err, errlen, "watermark key %s: expected 64 hex digits (`fedc watermark keygen --out FILE`)", path);
    return FEDC_ERR_FORMAT;
  }
  return FEDC_OK;
}

static void put_be32(uint8_t *p, uint32_t v) {
  p[0] = (uint8_t)(v >> 24), p[1] = (uint8_t)(v >> 16), p[2] = (uint8_t)(v >> 8), p[3] = (uint8_t)v;
}

static void dataset_wipe(fc_dataset *d) {
  if (d->x) fc_wipe(d->x, (size_t)d->n * d->dim * sizeof *d->x);
  if (d->y) fc_wipe(d->y, d->n);
  free(d->x);
  free(d->y);
  memset(d, 0, sizeof *d);
}

int fc_wm_triggers(const uint8_t key[FC_WM_KEY_LEN], uint32_t dim, uint32_t classes, fc_dataset *out) {
  if (dim == 0 || dim > FC_MLP_MAX_WIDTH || classes < 2 || classes > 256) return FEDC_ERR_INVALID;
  static const char label[] = "fedc watermark v1";
  uint8_t info[sizeof label - 1 + 8], stream_key[FC_AES128_KEY_LEN], iv[16] = {0}, block[256];
  memcpy(info, label, sizeof label - 1);
  put_be32(info + sizeof label - 1, dim);
  put_be32(info + sizeof label + 3, classes);
  fc_dataset t = {.n = FC_WM_TRIGGERS, .dim = dim, .classes = classes};
  uint8_t *pixels = malloc((size_t)FC_WM_TRIGGERS * dim);
  t.x = malloc((size_t)FC_WM_TRIGGERS * dim * sizeof *t.x);
  t.y = malloc(FC_WM_TRIGGERS);
  fc_ctr ctr = {0};
  int rc = FEDC_ERR_NOMEM;
  if (!pixels || !t.x || !t.y) goto out;
  if ((rc = fc_hkdf_sha256(NULL, 0, key, FC_WM_KEY_LEN, info, sizeof info, stream_key, sizeof stream_key)) != FEDC_OK ||
      (rc = fc_ctr_init(&ctr, stream_key, iv)) != FEDC_OK ||
      (rc = fc_ctr_keystream(&ctr, pixels, (size_t)FC_WM_TRIGGERS * dim)) != FEDC_OK)
    goto out;
  for (size_t i = 0; i < (size_t)FC_WM_TRIGGERS * dim; i++) t.x[i] = (float)pixels[i] / 255.0f;
  /* Labels: bytes below the largest multiple of classes, each uniform. */
  uint32_t limit = 256 - 256 % classes, got = 0;
  while (got < FC_WM_TRIGGERS) {
    if ((rc = fc_ctr_keystream(&ctr, block, sizeof block)) != FEDC_OK) goto out;
    for (size_t i = 0; i < sizeof block && got < FC_WM_TRIGGERS; i++)
      if (block[i] < limit) t.y[got++] = (uint8_t)(block[i] % classes);
  }
  *out = t;
  t.x = NULL;
  t.y = NULL;
  rc = FEDC_OK;
out:
  fc_ctr_free(&ctr);
  fc_wipe(stream_key, sizeof stream_key);
  fc_wipe(block, sizeof block);
  if (pixels) fc_wipe(pixels, (size_t)FC_WM_TRIGGERS * dim);
  free(pixels);
  if (t.x) fc_wipe(t.x, (size_t)FC_WM_TRIGGERS * dim * sizeof *t.x);
  free(t.x);
  free(t.y);
  return rc;
}

/* ln C(n, j) + j ln p + (n - j) ln(1 - p) */
static double log_binom_pmf(uint32_t j, uint32_t n, double p) {
  return lgamma((double)n + 1) - lgamma((double)j + 1) - lgamma((double)(n - j) + 1) + j * log(p) +
         (double)(n - j) * log1p(-p);
}

double fc_wm_log10_pvalue(uint32_t k, uint32_t n, double p) {
  if (k == 0) return 0; /* P[X >= 0] = 1 */
  if (k > n) return -INFINITY;
  /* log-sum-exp over the tail j = k..n, from its largest term. */
  double top = -INFINITY;
  for (uint32_t j = k; j <= n; j++) top = fmax(top, log_binom_pmf(j, n, p));
  double sum = 0;
  for (uint32_t j = k; j <= n; j++) sum += exp(log_binom_pmf(j, n, p) - top);
  return fmin(0.0, (top + log(sum)) / M_LN10);
}

int fc_wm_check(const fc_mlp *m, const float *params, const uint8_t key[FC_WM_KEY_LEN], uint32_t *correct,
                uint32_t *total, double *log10_p) {
  fc_dataset t;
  uint32_t classes = m->sizes[m->nlayers];
  int rc = fc_wm_triggers(key, m->sizes[0], classes, &t);
  if (rc != FEDC_OK) return rc;
  fc_mlp_ws *ws = fc_mlp_ws_create(m, FC_WM_TRIGGERS);
  double acc = 0;
  rc = ws ? fc_mlp_eval(m, ws, params, &t, NULL, t.n, &acc, NULL) : FEDC_ERR_NOMEM;
  fc_mlp_ws_destroy(ws);
  if (rc == FEDC_OK) {
    *total = t.n;
    *correct = (uint32_t)lround(acc * t.n);
    *log10_p = fc_wm_log10_pvalue(*correct, t.n, 1.0 / classes);
  }
  dataset_wipe(&t);
  return rc;
}

int fc_wm_create(const char *key_path, const char *state_dir, const fc_model_spec *spec, uint32_t max_steps,
                 float lr, fc_wm **out, char *err, size_t errlen) {
  uint8_t key[FC_WM_KEY_LEN];
  char why[300];
  fc_wm *w = NULL;
  int rc = FEDC_ERR_INVALID;
  if (max_steps < 1 || !(lr > 0) || !isfinite(lr)) {
    snprintf(err, errlen, "watermark-steps must be at least 1 and watermark-lr a positive number");
    return FEDC_ERR_INVALID;
  }
  char kr[PATH_MAX], sr[PATH_MAX];
  if (realpath(key_path, kr) && state_dir[0] && realpath(state_dir, sr)) {
    size_t l = strlen(sr);
    if (strncmp(kr, sr, l) == 0 && kr[l] == '/') {
      snprintf(err, errlen, "--watermark-key %s is inside the state directory; keep it elsewhere", key_path);
      return FEDC_ERR_INVALID;
    }
  }
  if (!(w = calloc(1, sizeof *w))) return FEDC_ERR_NOMEM;
  if (fc_mlp_from_spec(spec, &w->mlp, why, sizeof why) != FEDC_OK) {
    snprintf(err, errlen,
             "--watermark-key: the watermark is embedded by fine-tuning with the built-in MLP code, which cannot "
             "train this model (%s): watermarking supports the built-in models (--model) and --init-model files "
             "in their layout (fc1.weight [out, in], fc1.bias [out], fc2.weight, ...)",
             why);
    goto out;
  }
  uint32_t classes = w->mlp.sizes[w->mlp.nlayers];
  if (classes < 2 || classes > 256) {
    snprintf(err, errlen, "--watermark-key: the model has %u classes; the watermark's labels take 2 to 256", classes);
    goto out;
  }
  if ((rc = fc_wm_key_read(key_path, key, err, errlen)) != FEDC_OK) goto out;
  rc = fc_wm_triggers(key, w->mlp.sizes[0], classes, &w->triggers);
  fc_wipe(key, sizeof key);
  if (rc != FEDC_OK) {
    snprintf(err, errlen, "--watermark-key: cannot derive the trigger set: %s", fedc_strerror(rc));
    goto out;
  }
  w->max_steps = max_steps;
  w->lr = lr;
  w->ws = fc_mlp_ws_create(&w->mlp, FC_WM_TRIGGERS);
  w->backup = malloc(fc_mlp_nparams(&w->mlp) * sizeof *w->backup);
  if (!w->ws || !w->backup) {
    rc = FEDC_ERR_NOMEM;
    snprintf(err, errlen, "out of memory for the watermark");
    goto out;
  }
  *out = w;
  w = NULL;
  rc = FEDC_OK;
out:
  fc_wm_destroy(w);
  return rc;
}

static int triggers_right(fc_wm *w, const float *params, uint32_t *right) {
  double acc = 0;
  int rc = fc_mlp_eval(&w->mlp, w->ws, params, &w->triggers, NULL, w->triggers.n, &acc, NULL);
  if (rc == FEDC_OK) *right = (uint32_t)lround(acc * w->triggers.n);
  return rc;
}

int fc_wm_embed(fc_wm *w, float *params, fc_wm_stats *st) {
  size_t n = fc_mlp_nparams(&w->mlp);
  memset(st, 0, sizeof *st);
  int rc = triggers_right(w, params, &st->before);
  if (rc != FEDC_OK) return rc;
  memcpy(w->backup, params, n * sizeof *params);
  fc_train_opts o;
  fc_train_opts_init(&o);
  o.lr = w->lr;
  o.epochs = 1;
  o.batch = w->triggers.n; /* one full-batch step per call */
  st->after = st->before;
  /* WAFFLE's retraining: until the trigger set is learnt, bounded. */
  while (st->after < w->triggers.n && st->steps < w->max_steps) {
    o.seed = st->steps;
    if ((rc = fc_mlp_train(&w->mlp, w->ws, params, &w->triggers, NULL, w->triggers.n, &o, NULL)) != FEDC_OK ||
        (rc = triggers_right(w, params, &st->after)) != FEDC_OK) {
      memcpy(params, w->backup, n * sizeof *params);
      return rc;
    }
    st->steps++;
  }
  return FEDC_OK;
}

void fc_wm_destroy(fc_wm *w) {
  if (!w) return;
  dataset_wipe(&w->triggers);
  fc_mlp_ws_destroy(w->ws);
  free(w->backup);
  free(w);
}
