/*
 * fuzz_idx.c - the IDX image loader (client/data_idx.c) on any images file
 * (plain or gzip, as gzread reads both) with a matching small labels file.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "client/data.h"
#include "fuzz.h"

static char img[64], lbl[64];

static void cleanup(void) { unlink(lbl); }

static void paths(void) {
  if (img[0]) return;
  atexit(cleanup);
  snprintf(img, sizeof img, "/tmp/fedc-fuzz-img-%d", (int)getpid());
  snprintf(lbl, sizeof lbl, "/tmp/fedc-fuzz-lbl-%d", (int)getpid());
  FILE *f = fopen(lbl, "wb");
  uint8_t h[8] = {0, 0, 8, 1, 0, 0, 0, 3};
  fwrite(h, 1, 8, f);
  uint8_t y[3] = {0, 1, 2};
  fwrite(y, 1, 3, f);
  fclose(f);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  paths();
  FILE *f = fopen(img, "wb");
  if (!f) abort();
  if (size) fwrite(data, 1, size, f);
  fclose(f);
  fc_dataset d;
  memset(&d, 0, sizeof d);
  char err[256];
  if (fc_idx_load(img, lbl, &d, err, sizeof err) == 0) {
    volatile float sink = 0;
    for (size_t i = 0; i < (size_t)d.n * d.dim; i++) sink += d.x[i];
    (void)sink;
    fc_dataset_free(&d);
  }
  unlink(img);
  return 0;
}

void fuzz_seed(uint8_t **data, size_t *size) {
  paths();
  static const uint8_t h[16] = {0, 0, 8, 3, 0, 0, 0, 3, 0, 0, 0, 2, 0, 0, 0, 2};
  *size = 16 + 12;
  *data = malloc(*size);
  memcpy(*data, h, 16);
  for (int i = 0; i < 12; i++) (*data)[16 + i] = (uint8_t)(i * 20);
}
