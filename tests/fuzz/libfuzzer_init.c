/*
 * libfuzzer_init.c - linked into the libFuzzer builds of the targets
 * (-DFEDC_LIBFUZZER=ON) in place of standalone.c: with FEDC_FUZZ_SEED_DIR
 * set, the target's seed (fuzz_seed, which also checks that the seed is
 * accepted all the way) is written there as "seed" before libFuzzer reads
 * its corpus, so a run can start from an empty corpus directory:
 *
 *   mkdir -p corpus && FEDC_FUZZ_SEED_DIR=corpus ./fuzz_x corpus -max_total_time=60
 */
#include <stdio.h>
#include <stdlib.h>

#include "fuzz.h"


int LLVMFuzzerInitialize(int *argc, char ***argv) {
  (void)argc, (void)argv;
  const char *dir = getenv("FEDC_FUZZ_SEED_DIR");
  if (!dir) return 0;
  uint8_t *seed = NULL;
  size_t len = 0;
  fuzz_seed(&seed, &len);
  char path[4096];
  snprintf(path, sizeof path, "%s/seed", dir);
  FILE *f = fopen(path, "wb");
  if (!f || fwrite(seed, 1, len, f) != len || fclose(f) != 0) {
    fprintf(stderr, "cannot write %s\n", path);
    exit(2);
  }
  free(seed);
  return 0;
}
