/*
 * mlp.h - the built-in trainers: multilayer perceptrons (ReLU hidden
 * layers, softmax cross-entropy), logistic regression being the one-layer
 * case, trained by minibatch SGD on the BLAS layer. Below both the client
 * (its built-in trainer) and the coordinator (the watermark is embedded by
 * fine-tuning the global model, coordinator/watermark.c): one copy of the
 * forward and backward passes.
 *
 * Parameters live in one flat float buffer laid out as fc_mlp_spec()
 * describes, in PyTorch nn.Linear order and shapes: fc1.weight [out,in],
 * fc1.bias [out], fc2.weight, ... A PyTorch nn.Sequential of Linear/ReLU with
 * the same sizes loads the resulting safetensors after renaming nothing but
 * the module prefix.
 *
 * Determinism: for a fixed seed, params, data and index list, training gives
 * bitwise identical parameters as long as the BLAS thread count is fixed
 * (OpenBLAS splits sums differently per thread count). The library never
 * sets the thread count itself.
 */
#ifndef FEDC_COMMON_MLP_H
#define FEDC_COMMON_MLP_H

#include <stddef.h>
#include <stdint.h>

#include "common/dataset.h"
#include "common/tensor.h"

#define FC_MLP_MAX_SIZES 8       /* sizes[0..nlayers], so up to 7 linear layers */
#define FC_MLP_MAX_WIDTH 1000000u /* any one layer width */

/* nlayers linear layers; sizes[0] is the input dim, sizes[nlayers] the number
 * of classes, sizes[1..nlayers-1] the hidden widths. {784,200,200,10} is
 * nlayers = 3; logistic regression {784,10} is nlayers = 1. */
typedef struct fc_mlp {
  uint32_t nlayers;
  uint32_t sizes[FC_MLP_MAX_SIZES];
} fc_mlp;

typedef struct fc_train_opts {
  float lr;
  uint32_t epochs, batch;
  float momentum;     /* 0 = plain SGD; PyTorch semantics: v = mu v + g; p -= lr v */
  float weight_decay; /* L2, added to the gradient of every tensor as PyTorch SGD does */
  float prox_mu;      /* FedProx (Li et al. 2020, eq. 2): + mu/2 ||w - w0||^2, w0 = params on entry */
  uint64_t seed;      /* epoch shuffles */
} fc_train_opts;

/* Defaults: lr 0.05, 1 epoch, batch 32, no momentum, no weight decay, seed 0. */
void fc_train_opts_init(fc_train_opts *o);

/* Parse "784-200-200-10" (2..8 sizes), or the shortcuts "logreg" (784-10) and
 * "mlp" (784-200-200-10). FEDC_ERR_INVALID if malformed or out of range. */
int fc_mlp_parse(const char *s, fc_mlp *out);
/* 0 if the sizes are in range and the model fits FC_MODEL_MAX_PARAMS. */
int fc_mlp_check(const fc_mlp *m);
/* Number of float parameters. */
size_t fc_mlp_nparams(const fc_mlp *m);
/* The tensor list: "fc<i>.weight" [out,in] then "fc<i>.bias" [out], i = 1.. */
int fc_mlp_spec(const fc_mlp *m, fc_model_spec *out);
/* The MLP a model spec describes, if it is one the built-in trainer makes
 * (fc1.weight [h1,in], fc1.bias [h1], fc2.weight [h2,h1], ...): FEDC_OK, or
 * FEDC_ERR_SHAPE with what does not fit in why ("it has 3 tensors; ..."). */
int fc_mlp_from_spec(const fc_model_spec *spec, fc_mlp *out, char *why, size_t whylen);
/* "784-200-10" into buf; returns buf. */
const char *fc_mlp_text(const fc_mlp *m, char *buf, size_t len);
/* He initialisation (ReLU): weights ~ N(0, 2/in), biases 0. Deterministic per seed. */
int fc_mlp_init(const fc_mlp *m, uint64_t seed, float *params);

/* Workspace: activation, gradient, momentum and permutation buffers, reused
 * across calls so training round after round does not reallocate. Grows on
 * demand when a call needs a larger batch or index list. Not thread-safe:
 * one workspace per concurrent trainer. */
typedef struct fc_mlp_ws fc_mlp_ws;
/* NULL on OOM or an invalid model. batch is the initial capacity (0 = 32). */
fc_mlp_ws *fc_mlp_ws_create(const fc_mlp *m, uint32_t batch);
void fc_mlp_ws_destroy(fc_mlp_ws *ws); /* accepts NULL */

/* Train params in place on d's examples idx[0..n) (idx NULL = all of d, then n
 * must be d->n): o->epochs passes of shuffled minibatches (the last batch of
 * an epoch may be smaller). *mean_loss (if non-NULL) is the mean cross-entropy
 * over the examples of the final epoch, measured as they were trained on
 * (the cross-entropy alone: FedProx's proximal term is not in it).
 * Errors: FEDC_ERR_INVALID (model/workspace/data mismatch, index or label out
 * of range, bad options), FEDC_ERR_NOMEM, FEDC_ERR_NONFINITE (training
 * diverged; params then hold the diverged values). */
int fc_mlp_train(const fc_mlp *m, fc_mlp_ws *ws, float *params, const fc_dataset *d, const uint32_t *idx,
                 uint32_t n, const fc_train_opts *o, double *mean_loss);

/* Accuracy and mean cross-entropy on idx[0..n) (idx NULL = all of d), in
 * batches of 500. Either output may be NULL. */
int fc_mlp_eval(const fc_mlp *m, fc_mlp_ws *ws, const float *params, const fc_dataset *d, const uint32_t *idx,
                uint32_t n, double *accuracy, double *loss);

/* Predictions on every example of d (labels unused beyond the range check):
 * counts[c] = examples whose argmax is class c, and (if prob_sum is
 * non-NULL) prob_sum[c] = the sum of their softmax probabilities of class c;
 * both have sizes[nlayers] entries. For the coordinator's drift check
 * (coordinator/coord_drift.c). */
int fc_mlp_predict(const fc_mlp *m, fc_mlp_ws *ws, const float *params, const fc_dataset *d, uint64_t *counts,
                   double *prob_sum);
/* The same on idx[0..n) of d (idx NULL: all n = d->n examples); for the
 * built-in client's federated evaluation (cli/client_eval.c). */
int fc_mlp_predict_idx(const fc_mlp *m, fc_mlp_ws *ws, const float *params, const fc_dataset *d, const uint32_t *idx,
                       uint32_t n, uint64_t *counts, double *prob_sum);

/* Mean loss and its gradient (grad has fc_mlp_nparams floats, overwritten)
 * over one batch idx[0..n), n <= workspace capacity after growth. Exposed for
 * the gradient check and for trainers that bring their own optimiser
 * (e.g. FedProx adds its proximal term to grad). */
int fc_mlp_loss_grad(const fc_mlp *m, fc_mlp_ws *ws, const float *params, const fc_dataset *d, const uint32_t *idx,
                     uint32_t n, float *grad, double *loss);

#endif
