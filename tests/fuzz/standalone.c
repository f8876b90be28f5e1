/*
 * standalone.c - deterministic mutation driver for the fuzz targets when
 * libFuzzer is not used (see fuzz.h). Exit 0 means every input was handled
 * without a crash or sanitizer report (those abort the process).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz.h"

static uint64_t rng_state = 0x9E3779B97F4A7C15ull;
static uint64_t next(void) {
  uint64_t z = (rng_state += 0x9E3779B97F4A7C15ull);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

int main(void) {
  const char *it = getenv("FEDC_FUZZ_ITERS");
  long iters = it ? atol(it) : 5000;
  uint8_t *seed = NULL;
  size_t seed_len = 0;
  fuzz_seed(&seed, &seed_len);
  LLVMFuzzerTestOneInput(seed, seed_len);
  size_t cap = seed_len * 2 + 256; /* room for the random-bytes case (< 256) */
  uint8_t *buf = malloc(cap);
  for (long i = 0; i < iters; i++) {
    size_t len = seed_len;
    memcpy(buf, seed, seed_len);
    switch (next() % 5) {
    case 0: /* flip a few bits */
      for (int k = 1 + (int)(next() % 4); k > 0 && len; k--) buf[next() % len] ^= (uint8_t)(1u << (next() % 8));
      break;
    case 1: /* truncate */
      len = len ? (size_t)(next() % len) : 0;
      break;
    case 2: /* overwrite a run with random bytes */
      if (len) {
        size_t at = next() % len, n = 1 + next() % 16;
        for (size_t k = 0; k < n && at + k < len; k++) buf[at + k] = (uint8_t)next();
      }
      break;
    case 3: /* duplicate a slice at the end (grows the input) */
      if (len) {
        size_t at = next() % len, n = 1 + next() % (len - at);
        if (len + n <= cap) {
          memcpy(buf + len, buf + at, n);
          len += n;
        }
      }
      break;
    default: /* random bytes */
      len = next() % 256;
      for (size_t k = 0; k < len; k++) buf[k] = (uint8_t)next();
    }
    LLVMFuzzerTestOneInput(buf, len);
  }
  printf("%ld passed, 0 failed\n", iters + 1);
  free(buf);
  free(seed);
  return 0;
}
