/*
 * tensor.h - the shape of a model: an ordered list of named float32 tensors
 * laid out back to back in one flat buffer (the layout of wire payloads,
 * safetensors data and the aggregation accumulator alike).
 *
 * Invariants: names are unique, non-empty, at most FC_TENSOR_NAME_MAX-1 bytes
 * of [A-Za-z0-9_.-]; 1 <= ndim <= FC_TENSOR_MAX_DIMS; every dim >= 1; the
 * total element count fits FC_MODEL_MAX_PARAMS. fc_model_spec_check enforces them
 * so every spec that came off the wire or from a file is checked once.
 */
#ifndef FEDC_COMMON_TENSOR_H
#define FEDC_COMMON_TENSOR_H

#include <stddef.h>
#include <stdint.h>

#define FC_TENSOR_NAME_MAX 64
#define FC_TENSOR_MAX_DIMS 4
#define FC_MODEL_MAX_TENSORS 32
#define FC_MODEL_MAX_PARAMS (1ull << 31) /* 8 GiB of float32 */
/* A client's reported mean training loss must lie in [0, FC_MAX_TRAIN_LOSS]
 * (the client runtime checks before sending; the coordinator refuses the rest). */
#define FC_MAX_TRAIN_LOSS 1e9

/* Same numbers as fedc.v1.DType. Models are F32; U32 is only the masked
 * vector of secure aggregation (4 bytes per element too); U8 (1 byte) only a
 * compressed upload (a quantized update, a narrow-ring masked vector), and a
 * stream receiver takes it only when it asked for one (chunk.h). */
enum fc_dtype { FC_DTYPE_F32 = 1, FC_DTYPE_U32 = 2, FC_DTYPE_U8 = 3 };
/* Bytes per element of a valid dtype (4 or 1). */
static inline uint64_t fc_dtype_size(int dtype) { return dtype == FC_DTYPE_U8 ? 1 : 4; }


typedef struct fc_tensor_spec {
  char name[FC_TENSOR_NAME_MAX];
  int dtype;
  uint32_t ndim;
  uint64_t shape[FC_TENSOR_MAX_DIMS];
} fc_tensor_spec;

typedef struct fc_model_spec {
  uint32_t n;
  fc_tensor_spec t[FC_MODEL_MAX_TENSORS];
} fc_model_spec;

/* Element count of one tensor / of the whole model. */
uint64_t fc_tensor_numel(const fc_tensor_spec *t);
uint64_t fc_model_numel(const fc_model_spec *m);
/* Payload bytes of a valid spec: sum of numel * element size. */
uint64_t fc_model_bytes(const fc_model_spec *m);
/* 1 if s is a valid tensor name (above). Check it before quoting a name
 * from the wire or a file in any message. */
int fc_tensor_name_ok(const char *s);
/* 0 if the spec keeps the invariants above; else FEDC_ERR_SHAPE with a reason in err. */
int fc_model_spec_check(const fc_model_spec *m, char *err, size_t errlen);
/* 1 if both specs have the same names, dtypes and shapes in the same order. */
int fc_model_spec_equal(const fc_model_spec *a, const fc_model_spec *b);
/* Append a tensor; returns FEDC_ERR_INVALID when full or the name is too long. */
int fc_model_spec_add(fc_model_spec *m, const char *name, uint32_t ndim, const uint64_t *shape);

/* Vector helpers on flat float32 buffers (reference loops; BLAS lives in blas.h). */
/* 1 if every value is finite; else 0 and *bad_index (if non-NULL) is the first bad one. */
int fc_all_finite(const float *x, size_t n, size_t *bad_index);

#endif
