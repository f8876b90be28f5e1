/*
 * fuzz_csv.c - the numeric CSV loader (client/data_csv.c) on any file: a
 * client's training data is whatever the operator points it at. The first
 * input byte picks the label column (-1..2) and the scale (1 or 0.5), the
 * rest is the file. Properties: no crash; a loaded set is what data.h
 * promises (rows, width, finite features, labels below classes).
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "client/data.h"
#include "fixture.h"
#include "fuzz.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (size < 1) return 0;
  int label_col = (int)(data[0] & 3) - 1;
  float scale = data[0] & 4 ? 0.5f : 0.0f;
  const char *path = fix_write("data.csv", data + 1, size - 1);
  fc_dataset d;
  memset(&d, 0, sizeof d);
  char err[256];
  if (fc_csv_load(path, label_col, scale, &d, err, sizeof err) == 0) {
    if (d.n == 0 || d.dim == 0 || !d.x || !d.y || d.classes == 0 || d.classes > 256) abort();
    for (size_t i = 0; i < (size_t)d.n * d.dim; i++)
      if (!isfinite(d.x[i])) abort();
    for (uint32_t i = 0; i < d.n; i++)
      if (d.y[i] >= d.classes) abort();
    fc_dataset_free(&d);
  }
  return 0;
}

void fuzz_seed(uint8_t **data, size_t *size) {
  static const char s[] = "\x00"
                          "f1, f2 ,f3,label\r\n"
                          "0.5,1e-3,-2,1\n"
                          "\n"
                          "  3 ,4.25,7,0\n"
                          "1,2,3,2\n";
  *size = sizeof s - 1;
  *data = malloc(*size);
  memcpy(*data, s, *size);
}
