/*
 * standalone.c - deterministic mutation driver for the fuzz targets when
 * libFuzzer is not used (see fuzz.h). Exit 0 means every input was handled
 * without a crash or sanitizer report (those abort the process).
 *
 *   fuzz_x [FILE|DIR]...   first every FILE (every regular file of a DIR:
 *                          the target's regression corpus, tests/fuzz/corpus/
 *                          fuzz_x, which ctest passes), then the seed and
 *                          FEDC_FUZZ_ITERS (default fuzz_iters) mutations
 *   FEDC_FUZZ_SEED_OUT=F   write the seed to F and exit (a libFuzzer
 *                          corpus starts from it: tests/fuzz/README.md)
 */
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "fuzz.h"

__attribute__((weak)) const long fuzz_iters = 5000;

static uint64_t rng_state = 0x9E3779B97F4A7C15ull;
static uint64_t next(void) {
  uint64_t z = (rng_state += 0x9E3779B97F4A7C15ull);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

/* Run one file through the target; 1 if it was run. */
static int run_file(const char *path) {
  FILE *f = fopen(path, "rb");
  if (!f) {
    fprintf(stderr, "%s: cannot open\n", path);
    exit(2);
  }
  size_t cap = 4096, len = 0, got;
  uint8_t *buf = malloc(cap);
  while (buf && (got = fread(buf + len, 1, cap - len, f)) > 0) {
    len += got;
    if (len == cap) buf = realloc(buf, cap *= 2);
  }
  fclose(f);
  if (!buf) exit(2);
  LLVMFuzzerTestOneInput(buf, len);
  free(buf);
  return 1;
}

static long run_path(const char *path) {
  struct stat st;
  if (stat(path, &st) != 0) {
    fprintf(stderr, "%s: not found\n", path);
    exit(2);
  }
  if (!S_ISDIR(st.st_mode)) return run_file(path);
  struct dirent **names = NULL;
  int n = scandir(path, &names, NULL, alphasort); /* sorted: the same order everywhere */
  long runs = 0;
  for (int i = 0; i < n; i++) {
    char full[4096];
    snprintf(full, sizeof full, "%s/%s", path, names[i]->d_name);
    if (names[i]->d_name[0] != '.' && stat(full, &st) == 0 && S_ISREG(st.st_mode)) runs += run_file(full);
    free(names[i]);
  }
  free(names);
  return runs;
}

int main(int argc, char **argv) {
  const char *it = getenv("FEDC_FUZZ_ITERS");
  /* Read through volatile: gcc folds a weak const's own initializer. */
  long iters = it ? atol(it) : *(const volatile long *)&fuzz_iters, files = 0;
  uint8_t *seed = NULL;
  size_t seed_len = 0;
  fuzz_seed(&seed, &seed_len);
  const char *out = getenv("FEDC_FUZZ_SEED_OUT");
  if (out) {
    FILE *f = fopen(out, "wb");
    int ok = f && fwrite(seed, 1, seed_len, f) == seed_len;
    if (f && fclose(f) != 0) ok = 0;
    free(seed);
    return ok ? 0 : 2;
  }
  for (int i = 1; i < argc; i++) files += run_path(argv[i]);
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
  printf("%ld corpus files, seed and %ld mutations passed, 0 failed\n", files, iters);
  free(buf);
  free(seed);
  return 0;
}
