/*
 * fuzz_safetensors.c - the safetensors reader (common/safetensors.c) on any
 * file: model files come from disk and from `fedc model get` users.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/safetensors.h"
#include "fuzz.h"

static char path[64];

static void write_file(const uint8_t *data, size_t size) {
  if (!path[0]) snprintf(path, sizeof path, "/tmp/fedc-fuzz-st-%d.safetensors", (int)getpid());
  FILE *f = fopen(path, "wb");
  if (!f) abort();
  if (size) fwrite(data, 1, size, f);
  fclose(f);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  write_file(data, size);
  fc_model_spec spec;
  float *d = NULL;
  fc_st_meta meta;
  char err[256];
  if (fc_safetensors_read(path, &spec, &d, &meta, 1 << 20, err, sizeof err) == 0) {
    volatile float sink = 0;
    for (uint64_t i = 0; i < fc_model_numel(&spec); i++) sink += d[i]; /* every element readable */
    (void)sink;
    free(d);
  }
  unlink(path);
  return 0;
}

void fuzz_seed(uint8_t **data, size_t *size) {
  fc_model_spec s;
  memset(&s, 0, sizeof s);
  uint64_t w[2] = {3, 2};
  fc_model_spec_add(&s, "w", 2, w);
  float v[6] = {1, 2, 3, 4, 5, 6};
  char err[128];
  snprintf(path, sizeof path, "/tmp/fedc-fuzz-st-%d.safetensors", (int)getpid());
  fc_st_meta meta;
  memset(&meta, 0, sizeof meta);
  fc_st_meta_set(&meta, "fedc.version", "1");
  if (fc_safetensors_write(path, &s, v, &meta, err, sizeof err) != 0) abort();
  FILE *f = fopen(path, "rb");
  fseek(f, 0, SEEK_END);
  *size = (size_t)ftell(f);
  rewind(f);
  *data = malloc(*size);
  if (fread(*data, 1, *size, f) != *size) abort();
  fclose(f);
  unlink(path);
}
