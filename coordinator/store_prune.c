/*
 * store_prune.c - drop old model versions from the state directory by the
 * policy of store_prune.h (keep the last N whole, every K-th as model +
 * manifest). Called by the coordinator after state.json is written; uses
 * only the file names fc_store_model_path / fc_store_manifest_path write.
 */
#include "coordinator/store_prune.h"

#include <dirent.h>
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "fedc/error.h"

int fc_store_prune_keeps(uint64_t v, uint64_t current, uint64_t keep_last, uint64_t keep_every) {
  if (keep_last == 0 || v >= current || current - v < keep_last) return FC_PRUNE_ALL;
  if (keep_every && v % keep_every == 0) return FC_PRUNE_MODEL;
  return FC_PRUNE_DROP;
}

/* The kinds of file one version has, in the order they are removed. */
enum { F_MODEL, F_OPT, F_MANIFEST, F_KINDS };
static const char *const suffix[F_KINDS] = {".safetensors", ".opt.safetensors", ".manifest"};

/* 1 and *version, *kind if name is one of ours, exactly as written. */
static int parse_name(const char *name, uint64_t *version, int *kind) {
  if (name[0] != 'v') return 0;
  size_t digits = strspn(name + 1, "0123456789");
  if (digits < 6 || digits > 20) return 0;
  errno = 0;
  char *end;
  unsigned long long v = strtoull(name + 1, &end, 10);
  if (errno || end != name + 1 + digits) return 0;
  char canon[32];
  snprintf(canon, sizeof canon, "v%06llu", v);
  if (strlen(canon) != digits + 1 || memcmp(canon, name, digits + 1) != 0) return 0; /* no aliases: v0000007 */
  for (int k = 0; k < F_KINDS; k++)
    if (strcmp(end, suffix[k]) == 0) {
      *version = v;
      *kind = k;
      return 1;
    }
  return 0;
}

typedef struct victim {
  uint64_t version;
  int kind;
} victim;

static int victim_cmp(const void *a, const void *b) {
  const victim *x = a, *y = b;
  if (x->version != y->version) return x->version < y->version ? -1 : 1;
  return x->kind - y->kind;
}

int fc_store_prune(const char *dir, uint64_t current, uint64_t keep_last, uint64_t keep_every, fc_prune_stats *stats,
                   char *err, size_t errlen) {
  fc_prune_stats s = {0, 0};
  if (stats) *stats = s;
  if (keep_last == 0) return FEDC_OK;
  char models[1024], p[1100];
  snprintf(models, sizeof models, "%s/models", dir);
  DIR *d = opendir(models);
  if (!d) {
    snprintf(err, errlen, "cannot read %s: %s", models, strerror(errno));
    return FEDC_ERR_IO;
  }
  victim *v = NULL;
  size_t n = 0, cap = 0;
  int rc = FEDC_OK;
  struct dirent *e;
  while ((e = readdir(d)) != NULL) {
    uint64_t version;
    int kind;
    if (!parse_name(e->d_name, &version, &kind)) continue;
    int keep = fc_store_prune_keeps(version, current, keep_last, keep_every);
    if (keep == FC_PRUNE_ALL || (keep == FC_PRUNE_MODEL && kind != F_OPT)) continue;
    if (n == cap) {
      size_t ncap = cap ? cap * 2 : 64;
      victim *nv = realloc(v, ncap * sizeof *nv);
      if (!nv) {
        snprintf(err, errlen, "out of memory listing %s", models);
        rc = FEDC_ERR_NOMEM;
        goto out;
      }
      v = nv;
      cap = ncap;
    }
    v[n].version = version;
    v[n].kind = kind;
    n++;
  }
  /* Oldest first, and within a version model -> optimizer state -> manifest. */
  if (n) qsort(v, n, sizeof *v, victim_cmp);
  for (size_t i = 0; i < n; i++) {
    snprintf(p, sizeof p, "%s/v%06" PRIu64 "%s", models, v[i].version, suffix[v[i].kind]);
    struct stat sb;
    off_t size = stat(p, &sb) == 0 ? sb.st_size : 0;
    if (unlink(p) != 0 && errno != ENOENT) {
      if (rc == FEDC_OK) snprintf(err, errlen, "cannot remove %s: %s", p, strerror(errno));
      rc = FEDC_ERR_IO;
      continue;
    }
    s.files++;
    s.bytes += (uint64_t)size;
  }
out:
  closedir(d);
  free(v);
  if (stats) *stats = s;
  return rc;
}
