/*
 * watermark.h - server-side watermarking of the global model, in the manner of
 * WAFFLE (Tekgul et al. 2021, "WAFFLE: Watermarking in Federated Learning",
 * Algorithm 1): after each round's aggregation, before the new version is
 * signed and published, the coordinator fine-tunes the model briefly on a
 * trigger set that only the key's holder can make. No client data is used.
 *
 * The trigger set (fc_wm_triggers) is FC_WM_TRIGGERS noise images with
 * labels, all drawn from the key: HKDF-SHA256 (key, info "fedc watermark v1"
 * || input size || classes) keys an AES-128-CTR stream; each image is input
 * size bytes / 255 (uniform noise in [0, 1]), each label a byte taken if below
 * the largest multiple of classes (no modulo bias), modulo classes.
 *
 * Why the test is exact: the labels are independent, uniform draws. A model
 * that never saw the key's trigger set (any model made without the key)
 * predicts something for each image, and that prediction matches an
 * independent uniform label with probability 1/classes, whatever the model
 * does. So the count of matches is Binomial(FC_WM_TRIGGERS, 1/classes) for
 * every such model, and fc_wm_pvalue's tail is the probability of reaching
 * the observed count by chance: no assumption about the model is needed.
 *
 * Built-in MLPs only (common/mlp.h: the forward and backward passes the
 * client trains with): a model brought with --init-model in another layout is
 * refused at start with the reason. Labels are bytes: 2 to 256 classes.
 *
 * The key is a private key file (64 hex digits, as the at-rest key; crypto/
 * keyfile.h's rule for every private key file), kept outside the state
 * directory; the key bytes are wiped once the trigger set is derived, and the
 * trigger set (as secret as the key) when the coordinator stops.
 */
#ifndef FEDC_COORD_WATERMARK_H
#define FEDC_COORD_WATERMARK_H

#include <stddef.h>
#include <stdint.h>

#include "common/dataset.h"
#include "common/mlp.h"
#include "common/tensor.h"

#define FC_WM_KEY_LEN 32
#define FC_WM_TRIGGERS 100

/* Read a key file (64 hex digits, a trailing newline allowed) under the
 * private-key rule. FEDC_OK, or an error with one line in err naming path. */
int fc_wm_key_read(const char *path, uint8_t key[FC_WM_KEY_LEN], char *err, size_t errlen);

/* The key's trigger set for a model of `dim` inputs and `classes` outputs
 * into *out (its own buffers; the caller wipes x and frees both).
 * FEDC_ERR_INVALID for classes outside 2..256 or dim 0; FEDC_ERR_NOMEM,
 * FEDC_ERR_CRYPTO. */
int fc_wm_triggers(const uint8_t key[FC_WM_KEY_LEN], uint32_t dim, uint32_t classes, fc_dataset *out);

/* P[X >= k] for X ~ Binomial(n, p), 0 < p < 1, as log10 (exact to double
 * rounding far below what a double holds: 100 of 100 at p 0.1 is -100). */
double fc_wm_log10_pvalue(uint32_t k, uint32_t n, double p);

/* How many of the key's triggers the MLP `params` classifies as labelled
 * (*correct of *total), and the log10 p-value of that count at chance
 * 1/classes. FEDC_OK or an error of fc_wm_triggers / the evaluation. */
int fc_wm_check(const fc_mlp *m, const float *params, const uint8_t key[FC_WM_KEY_LEN], uint32_t *correct,
                uint32_t *total, double *log10_p);

/* ---- in the coordinator ---- */

typedef struct fc_wm fc_wm;

typedef struct fc_wm_stats {
  uint32_t steps;          /* fine-tuning steps this round took */
  uint32_t before, after;  /* triggers right before and after them */
} fc_wm_stats;

/* Read the key (refused inside state_dir), check that the model `spec` is
 * an MLP the built-in code trains, derive the trigger set. max_steps >= 1,
 * lr > 0 and finite. FEDC_OK, or an error with one line in err saying what
 * to change. */
int fc_wm_create(const char *key_path, const char *state_dir, const fc_model_spec *spec, uint32_t max_steps,
                 float lr, fc_wm **out, char *err, size_t errlen);
/* Fine-tune params (the new version, before it is signed) on the trigger
 * set: full-batch SGD steps until every trigger is classified as labelled,
 * at most max_steps. FEDC_OK (st filled), FEDC_ERR_NOMEM, or
 * FEDC_ERR_NONFINITE (the step diverged: params are then unusable). */
int fc_wm_embed(fc_wm *w, float *params, fc_wm_stats *st);
/* Wipes the trigger set. Accepts NULL. */
void fc_wm_destroy(fc_wm *w);

#endif
