/*
 * runtime_abi.c - the client library's ABI level and the accessors added
 * with it (include/fedc/client.h, "ABI level").
 *
 * fedc_client_model_tensors describes the model the runtime holds (its
 * fc_model_spec) in the public fedc_tensor_info form, for the evaluate
 * callback, which receives no fedc_train_config (fedc_trainer is allocated
 * by the caller, so it cannot grow a parameter without breaking programs
 * built against the older header). The list lives in the handle and is
 * rebuilt on each call, so it always matches the model in c->spec; names
 * and shapes point into c->spec, which changes only when run() fetches a
 * new model, i.e. never while a callback is running.
 */
#include "client/runtime_int.h"

FEDC_API int fedc_client_abi_version(void) { return FEDC_CLIENT_ABI_VERSION; }

FEDC_API const fedc_tensor_info *fedc_client_model_tensors(const fedc_client *cc, size_t *n) {
  if (n) *n = 0;
  if (!cc || !cc->have_model) return NULL;
  fedc_client *c = (fedc_client *)cc; /* the list is a view, cached in the handle */
  size_t off = 0;
  for (uint32_t i = 0; i < c->spec.n && i < FC_MODEL_MAX_TENSORS; i++) {
    c->tinfo[i].name = c->spec.t[i].name;
    c->tinfo[i].ndim = c->spec.t[i].ndim;
    c->tinfo[i].shape = c->spec.t[i].shape;
    c->tinfo[i].offset = off;
    c->tinfo[i].numel = fc_tensor_numel(&c->spec.t[i]);
    off += c->tinfo[i].numel;
  }
  if (n) *n = c->spec.n;
  return c->tinfo;
}
