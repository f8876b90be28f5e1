/*
 * dataset.h - an in-memory labelled dataset: what the MLP kernels
 * (common/mlp.h) train and evaluate on. The loaders that fill one from files
 * are the client's (client/data.h, which also frees one); the coordinator
 * builds its own (the watermark's trigger set, coordinator/watermark.c).
 *
 * A dataset owns two heap buffers: x (n * dim floats, row-major) and y (n
 * labels).
 */
#ifndef FEDC_COMMON_DATASET_H
#define FEDC_COMMON_DATASET_H

#include <stdint.h>

typedef struct fc_dataset {
  uint32_t n, dim, classes; /* classes = max label + 1 */
  float *x;                 /* n * dim row-major; IDX pixels scaled to [0,1] */
  uint8_t *y;               /* n labels, each < classes */
} fc_dataset;

#endif
