/*
 * test_store_prune.c - `--keep-versions N --keep-every K` (store_prune.h):
 * with real model files, manifests-shaped files and optimizer states in a
 * state directory, exactly the last N versions stay whole, every K-th older
 * one keeps its model and manifest only, the rest go; versions newer than
 * the current one, N = 0 (keep all) and names the store does not write are
 * never touched; a kept version still reads back with its SHA-256 although
 * its parent is gone.
 */
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "check.h"
#include "coordinator/store.h"
#include "coordinator/store_prune.h"
#include "fedc/error.h"

static void touch(const char *dir, const char *name) {
  char p[700];
  snprintf(p, sizeof p, "%s/models/%s", dir, name);
  FILE *f = fopen(p, "w");
  CHECK(f != NULL);
  if (f) {
    fputs("x", f);
    fclose(f);
  }
}

static int exists(const char *dir, const char *name) {
  char p[700];
  snprintf(p, sizeof p, "%s/models/%s", dir, name);
  return access(p, F_OK) == 0;
}

/* Versions 0..last: model (a real safetensors file), manifest, and (from v1
 * on, as a server optimizer writes them) optimizer state. */
static void make_versions(const char *dir, uint64_t last, const fc_model_spec *spec, const float *w) {
  char err[300], name[64];
  uint8_t sha[FC_SHA256_LEN], parent[FC_SHA256_LEN];
  for (uint64_t v = 0; v <= last; v++) {
    fc_sha256(w, 4 * sizeof *w, sha);
    CHECK_EQ_INT(fc_store_write_model(dir, NULL, v, v, spec, w, sha, v ? parent : NULL, err, sizeof err), FEDC_OK);
    memcpy(parent, sha, sizeof sha);
    snprintf(name, sizeof name, "v%06llu.manifest", (unsigned long long)v);
    touch(dir, name);
    if (v) {
      snprintf(name, sizeof name, "v%06llu.opt.safetensors", (unsigned long long)v);
      touch(dir, name);
    }
  }
}

/* "0,3,6,7": the versions whose model file (kind ".safetensors" not ".opt") is there. */
static void listing(const char *dir, uint64_t upto, const char *suffix, char *out, size_t len) {
  size_t at = 0;
  out[0] = 0;
  for (uint64_t v = 0; v <= upto; v++) {
    char name[64];
    snprintf(name, sizeof name, "v%06llu%s", (unsigned long long)v, suffix);
    if (exists(dir, name) && at < len) at += (size_t)snprintf(out + at, len - at, "%s%llu", at ? "," : "", (unsigned long long)v);
  }
}

int main(void) {
  /* The policy itself. */
  CHECK_EQ_INT(fc_store_prune_keeps(0, 100, 0, 0), FC_PRUNE_ALL);   /* N = 0: keep all */
  CHECK_EQ_INT(fc_store_prune_keeps(100, 100, 1, 0), FC_PRUNE_ALL); /* the current one, always */
  CHECK_EQ_INT(fc_store_prune_keeps(101, 100, 1, 0), FC_PRUNE_ALL); /* newer than current: being written */
  CHECK_EQ_INT(fc_store_prune_keeps(99, 100, 1, 0), FC_PRUNE_DROP);
  CHECK_EQ_INT(fc_store_prune_keeps(96, 100, 5, 10), FC_PRUNE_ALL);
  CHECK_EQ_INT(fc_store_prune_keeps(95, 100, 5, 10), FC_PRUNE_DROP);
  CHECK_EQ_INT(fc_store_prune_keeps(90, 100, 5, 10), FC_PRUNE_MODEL);
  CHECK_EQ_INT(fc_store_prune_keeps(0, 100, 5, 10), FC_PRUNE_MODEL);
  CHECK_EQ_INT(fc_store_prune_keeps(0, 100, 5, 0), FC_PRUNE_DROP);

  char dir[] = "/tmp/fedc-test-prune.XXXXXX";
  CHECK(mkdtemp(dir) != NULL);
  char err[400], got[256];
  CHECK_EQ_INT(fc_store_open(dir, err, sizeof err), FEDC_OK);
  fc_model_spec spec;
  memset(&spec, 0, sizeof spec);
  uint64_t shape[1] = {4};
  fc_model_spec_add(&spec, "w", 1, shape);
  float w[4] = {1, 2, 3, 4};
  make_versions(dir, 9, &spec, w);
  /* Not ours: a temporary file of an atomic write, an alias, a stray. */
  touch(dir, ".v000002.safetensors.0123456789ab.tmp");
  touch(dir, "v0000002.safetensors");
  touch(dir, "v000002.safetensors.bak");
  touch(dir, "notes.txt");

  /* N = 0 keeps everything. */
  fc_prune_stats ps;
  CHECK_EQ_INT(fc_store_prune(dir, 9, 0, 3, &ps, err, sizeof err), FEDC_OK);
  CHECK_EQ_INT(ps.files, 0);
  listing(dir, 9, ".safetensors", got, sizeof got);
  CHECK(strcmp(got, "0,1,2,3,4,5,6,7,8,9") == 0);

  /* Current v7 (v8, v9 are a publish in progress): last 2 = v6, v7; every
   * 3rd = v0, v3 (and v6). */
  CHECK_EQ_INT(fc_store_prune(dir, 7, 2, 3, &ps, err, sizeof err), FEDC_OK);
  listing(dir, 9, ".safetensors", got, sizeof got);
  CHECK(strcmp(got, "0,3,6,7,8,9") == 0);
  if (strcmp(got, "0,3,6,7,8,9") != 0) fprintf(stderr, "models: %s\n", got);
  listing(dir, 9, ".manifest", got, sizeof got);
  CHECK(strcmp(got, "0,3,6,7,8,9") == 0);
  listing(dir, 9, ".opt.safetensors", got, sizeof got);
  CHECK(strcmp(got, "6,7,8,9") == 0);
  if (strcmp(got, "6,7,8,9") != 0) fprintf(stderr, "optimizer states: %s\n", got);
  /* v1 v2 v4 v5: 3 files each; v3: its optimizer state. */
  CHECK_EQ_INT(ps.files, 4 * 3 + 1);
  CHECK(ps.bytes > 0);
  CHECK(exists(dir, ".v000002.safetensors.0123456789ab.tmp"));
  CHECK(exists(dir, "v0000002.safetensors"));
  CHECK(exists(dir, "v000002.safetensors.bak"));
  CHECK(exists(dir, "notes.txt"));

  /* A kept version whose parent is gone still reads back, hash checked. */
  fc_model_spec rs;
  float *data = NULL;
  uint8_t sha[FC_SHA256_LEN];
  fc_store_model_info info;
  CHECK_EQ_INT(fc_store_read_model(dir, NULL, 3, &rs, &data, sha, &info, err, sizeof err), FEDC_OK);
  CHECK(info.has_parent);
  free(data);

  /* Idempotent; and moving on to v9 as current drops v6's optimizer state
   * and v7 (last 2 = v8, v9). */
  CHECK_EQ_INT(fc_store_prune(dir, 7, 2, 3, &ps, err, sizeof err), FEDC_OK);
  CHECK_EQ_INT(ps.files, 0);
  CHECK_EQ_INT(fc_store_prune(dir, 9, 2, 3, &ps, err, sizeof err), FEDC_OK);
  listing(dir, 9, ".safetensors", got, sizeof got);
  CHECK(strcmp(got, "0,3,6,8,9") == 0);
  listing(dir, 9, ".opt.safetensors", got, sizeof got);
  CHECK(strcmp(got, "8,9") == 0);

  /* K = 0: only the last N. */
  CHECK_EQ_INT(fc_store_prune(dir, 9, 1, 0, &ps, err, sizeof err), FEDC_OK);
  listing(dir, 9, ".safetensors", got, sizeof got);
  CHECK(strcmp(got, "9") == 0);
  listing(dir, 9, ".manifest", got, sizeof got);
  CHECK(strcmp(got, "9") == 0);

  /* No models/ directory: an error naming it. */
  char missing[600];
  snprintf(missing, sizeof missing, "%s/nothing-here", dir);
  CHECK_EQ_INT(fc_store_prune(missing, 9, 1, 0, &ps, err, sizeof err), FEDC_ERR_IO);
  CHECK(strstr(err, "nothing-here/models") != NULL);

  char cmd[700];
  snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
  CHECK(system(cmd) == 0);
  return CHECK_DONE();
}
