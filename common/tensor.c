/*
 * tensor.c - model spec checks. See tensor.h for the invariants kept here.
 */
#include "common/tensor.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

#include "fedc/error.h"

uint64_t fc_tensor_numel(const fc_tensor_spec *t) {
  uint64_t n = 1;
  for (uint32_t i = 0; i < t->ndim; i++) n *= t->shape[i];
  return n;
}

uint64_t fc_model_bytes(const fc_model_spec *m) {
  uint64_t n = 0;
  for (uint32_t i = 0; i < m->n; i++) n += fc_tensor_numel(&m->t[i]) * fc_dtype_size(m->t[i].dtype);
  return n;
}

uint64_t fc_model_numel(const fc_model_spec *m) {
  uint64_t n = 0;
  for (uint32_t i = 0; i < m->n; i++) n += fc_tensor_numel(&m->t[i]);
  return n;
}

int fc_tensor_name_ok(const char *s) {
  size_t n = strnlen(s, FC_TENSOR_NAME_MAX);
  if (n == 0 || n >= FC_TENSOR_NAME_MAX) return 0;
  for (size_t i = 0; i < n; i++) {
    char c = s[i];
    if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' || c == '.' ||
          c == '-'))
      return 0;
  }
  return 1;
}

int fc_model_spec_check(const fc_model_spec *m, char *err, size_t errlen) {
  if (m->n == 0 || m->n > FC_MODEL_MAX_TENSORS) {
    snprintf(err, errlen, "model has %u tensors (1..%d allowed)", m->n, FC_MODEL_MAX_TENSORS);
    return FEDC_ERR_SHAPE;
  }
  uint64_t total = 0;
  for (uint32_t i = 0; i < m->n; i++) {
    const fc_tensor_spec *t = &m->t[i];
    if (!fc_tensor_name_ok(t->name)) {
      snprintf(err, errlen, "tensor %u has an invalid name", i);
      return FEDC_ERR_SHAPE;
    }
    for (uint32_t j = 0; j < i; j++)
      if (strcmp(m->t[j].name, t->name) == 0) {
        snprintf(err, errlen, "tensor name '%s' repeated", t->name);
        return FEDC_ERR_SHAPE;
      }
    if (t->dtype != FC_DTYPE_F32 && t->dtype != FC_DTYPE_U32 && t->dtype != FC_DTYPE_U8) {
      snprintf(err, errlen, "tensor '%s' has unsupported dtype %d (only F32, U32 or U8 for uploads)", t->name,
               t->dtype);
      return FEDC_ERR_SHAPE;
    }
    if (t->ndim < 1 || t->ndim > FC_TENSOR_MAX_DIMS) {
      snprintf(err, errlen, "tensor '%s' has %u dims (1..%d allowed)", t->name, t->ndim, FC_TENSOR_MAX_DIMS);
      return FEDC_ERR_SHAPE;
    }
    uint64_t n = 1;
    for (uint32_t d = 0; d < t->ndim; d++) {
      if (t->shape[d] < 1 || t->shape[d] > FC_MODEL_MAX_PARAMS || n * t->shape[d] > FC_MODEL_MAX_PARAMS) {
        snprintf(err, errlen, "tensor '%s' dim %u out of range", t->name, d);
        return FEDC_ERR_SHAPE;
      }
      n *= t->shape[d];
    }
    total += n;
    if (total > FC_MODEL_MAX_PARAMS) {
      snprintf(err, errlen, "model has more than %llu parameters", (unsigned long long)FC_MODEL_MAX_PARAMS);
      return FEDC_ERR_SHAPE;
    }
  }
  return FEDC_OK;
}

int fc_model_spec_equal(const fc_model_spec *a, const fc_model_spec *b) {
  if (a->n != b->n) return 0;
  for (uint32_t i = 0; i < a->n; i++) {
    const fc_tensor_spec *x = &a->t[i], *y = &b->t[i];
    if (strcmp(x->name, y->name) != 0 || x->dtype != y->dtype || x->ndim != y->ndim) return 0;
    for (uint32_t d = 0; d < x->ndim; d++)
      if (x->shape[d] != y->shape[d]) return 0;
  }
  return 1;
}

int fc_model_spec_add(fc_model_spec *m, const char *name, uint32_t ndim, const uint64_t *shape) {
  if (m->n >= FC_MODEL_MAX_TENSORS || ndim < 1 || ndim > FC_TENSOR_MAX_DIMS) return FEDC_ERR_INVALID;
  if (strlen(name) >= FC_TENSOR_NAME_MAX) return FEDC_ERR_INVALID;
  fc_tensor_spec *t = &m->t[m->n];
  memset(t, 0, sizeof *t);
  strcpy(t->name, name);
  t->dtype = FC_DTYPE_F32;
  t->ndim = ndim;
  for (uint32_t d = 0; d < ndim; d++) t->shape[d] = shape[d];
  m->n++;
  return FEDC_OK;
}

int fc_all_finite(const float *x, size_t n, size_t *bad_index) {
  for (size_t i = 0; i < n; i++)
    if (!isfinite(x[i])) {
      if (bad_index) *bad_index = i;
      return 0;
    }
  return 1;
}
