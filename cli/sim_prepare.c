/*
 * sim_prepare.c - what `fedc sim` makes before any process starts: the
 * throwaway PKI (a CA, the coordinator, an admin and one certificate per
 * client), the list of attackers (--byzantine), and the training data.
 *
 * The data is one copy all client processes share. Each client reads only
 * its own part's rows of it (`fedc client --partition KIND --parts N --part
 * I`, which computes the same split from the labels and the seed, and
 * fc_idx_load_rows), so no process holds the whole set. The shared copy is
 * the data set itself when it is stored uncompressed; Debian's is gzipped,
 * and every client inflating 26 MB would cost ~0.25 s of CPU each, so the
 * sim inflates it once into OUT/data/ and removes that copy when the run
 * ends: the split is reproducible from config.json and described by
 * OUT/data/partition.csv (examples per client and label). Before, the sim
 * wrote one IDX pair per client, 47 MB left in every output folder.
 *
 * Everything that can be refused (an existing --out, a missing data set, a
 * model that does not fit it, a split that cannot be made) is checked before
 * anything is written, so a refused run leaves --out untouched.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#include <jansson.h>

#include "cli/sim.h"
#include "client/partition.h"
#include "common/rng.h"
#include "crypto/pki.h"
#include "fedc/error.h"

static int mkdirp(const char *p) { return mkdir(p, 0700) == 0 || errno == EEXIST ? 0 : -1; }

/* --byzantine: which clients attack, chosen by --seed: OUT/byzantine.txt
 * (names, for the clients) and OUT/byzantine.json (for the researcher). */
static int write_attackers(const sim_opts *o) {
  if (!o->byz_kind[0]) return 0;
  uint32_t *ix = malloc(o->clients * sizeof *ix);
  if (!ix) return -1;
  for (uint32_t i = 0; i < o->clients; i++) ix[i] = i;
  fc_rng rng;
  fc_rng_seed(&rng, o->seed * 0xA24BAED4963EE407ull + 17);
  fc_rng_shuffle_u32(&rng, ix, (uint32_t)o->clients);
  uint32_t k = (uint32_t)(o->byz_fraction * (double)o->clients + 0.5);
  char p[1100];
  snprintf(p, sizeof p, "%s/byzantine.txt", o->out);
  FILE *t = fopen(p, "w");
  json_t *names = json_array();
  for (uint32_t i = 0; t && i < k; i++) {
    char name[32];
    snprintf(name, sizeof name, "c%04u", ix[i]);
    fprintf(t, "%s\n", name);
    json_array_append_new(names, json_string(name));
  }
  int rc = t && fclose(t) == 0 ? 0 : -1;
  json_t *j = json_pack("{s:s,s:f,s:I,s:o}", "attack", o->byz_kind, "fraction", o->byz_fraction, "count",
                        (json_int_t)k, "clients", names);
  snprintf(p, sizeof p, "%s/byzantine.json", o->out);
  if (!j || json_dump_file(j, p, JSON_INDENT(1)) != 0) rc = -1;
  json_decref(j);
  free(ix);
  return rc;
}

/* Inflate (or copy) src to dst. */
static int inflate_copy(const char *src, const char *dst) {
  gzFile in = gzopen(src, "rb");
  FILE *out = fopen(dst, "wb");
  int rc = -1;
  char *buf = malloc(1 << 20);
  if (!in || !out || !buf) goto out;
  int n;
  while ((n = gzread(in, buf, 1 << 20)) > 0)
    if (fwrite(buf, 1, (size_t)n, out) != (size_t)n) goto out;
  rc = n == 0 ? 0 : -1;
out:
  free(buf);
  if (in) gzclose(in);
  if (out && fclose(out) != 0) rc = -1;
  return rc;
}

static int ends_with(const char *s, const char *suffix) {
  size_t a = strlen(s), b = strlen(suffix);
  return a >= b && strcmp(s + a - b, suffix) == 0;
}

/* OUT/data/partition.csv: examples per client, in total and per label. */
static int write_partition_csv(const sim_opts *o, const uint32_t *owner, const uint8_t *y, uint32_t n,
                               uint32_t classes) {
  char p[1100];
  snprintf(p, sizeof p, "%s/data/partition.csv", o->out);
  uint64_t *count = calloc((size_t)o->clients * classes, sizeof *count);
  FILE *f = count ? fopen(p, "w") : NULL;
  if (!f) {
    free(count);
    return -1;
  }
  for (uint32_t i = 0; i < n; i++) count[(size_t)owner[i] * classes + y[i]]++;
  fprintf(f, "client,examples");
  for (uint32_t c = 0; c < classes; c++) fprintf(f, ",label_%u", c);
  fputc('\n', f);
  for (unsigned long long k = 0; k < o->clients; k++) {
    uint64_t total = 0;
    for (uint32_t c = 0; c < classes; c++) total += count[k * classes + c];
    fprintf(f, "c%04llu,%llu", k, (unsigned long long)total);
    for (uint32_t c = 0; c < classes; c++) fprintf(f, ",%llu", (unsigned long long)count[k * classes + c]);
    fputc('\n', f);
  }
  free(count);
  return fclose(f) == 0 ? 0 : -1;
}

int sim_prepare(const sim_opts *o, const fc_mlp *mlp, sim_data *d) {
  char p[1024], err[400], images[1024], labels[1024];
  memset(d, 0, sizeof *d);
  snprintf(p, sizeof p, "%s/pki", o->out);
  if (access(p, F_OK) == 0) {
    fprintf(stderr, "fedc sim: %s exists: choose a new --out folder (nothing is overwritten)\n", o->out);
    return 2;
  }
  /* The headers and labels only: the sim never needs the pixels. */
  fc_dataset head;
  memset(&head, 0, sizeof head);
  uint8_t *y = NULL;
  uint32_t *owner = NULL, n = 0;
  int rc = 1;
  if (fc_fmnist_paths(o->data_dir, 1, images, labels, sizeof images, err, sizeof err) != 0 ||
      fc_idx_load_rows(images, labels, NULL, 0, &head, err, sizeof err) != 0 ||
      fc_idx_load_labels(labels, &y, &n, err, sizeof err) != 0) {
    fprintf(stderr, "fedc sim: %s (install Debian's dataset-fashion-mnist)\n", err);
    goto out;
  }
  if (head.dim != mlp->sizes[0] || head.classes > mlp->sizes[mlp->nlayers]) {
    fprintf(stderr, "fedc sim: model %s does not fit the data (%u features, %u classes)\n", o->model, head.dim,
            head.classes);
    rc = 2;
    goto out;
  }
  /* The split the clients will compute, computed here first: a split that
   * cannot be made is refused before anything is written. */
  fc_partition_opts po;
  fc_partition_opts_init(&po);
  po.kind = fc_partition_kind_parse(o->partition);
  po.nparts = (uint32_t)o->clients;
  po.alpha = o->alpha;
  po.seed = o->seed;
  owner = malloc((size_t)n * sizeof *owner);
  if (!owner || fc_partition_assign(y, n, head.classes, &po, owner) != 0) {
    fprintf(stderr, "fedc sim: cannot split %u examples %s into %llu parts\n", n, o->partition, o->clients);
    goto out;
  }
  if (mkdirp(o->out) || (snprintf(p, sizeof p, "%s/logs", o->out), mkdirp(p)) ||
      (snprintf(p, sizeof p, "%s/data", o->out), mkdirp(p)) || write_attackers(o) != 0) {
    fprintf(stderr, "fedc sim: cannot create %s: %s\n", p, strerror(errno));
    goto out;
  }
  if (write_partition_csv(o, owner, y, n, head.classes) != 0) {
    fprintf(stderr, "fedc sim: cannot write %s/data/partition.csv: %s\n", o->out, strerror(errno));
    goto out;
  }
  if (ends_with(images, ".gz") || ends_with(labels, ".gz")) {
    fprintf(stderr, "fedc sim: one shared copy of Fashion-MNIST for %llu clients (%s split)...\n", o->clients,
            o->partition);
    snprintf(d->images, sizeof d->images, "%s/data/train-images-idx3-ubyte", o->out);
    snprintf(d->labels, sizeof d->labels, "%s/data/train-labels-idx1-ubyte", o->out);
    d->copied = 1;
    if (inflate_copy(images, d->images) != 0 || inflate_copy(labels, d->labels) != 0) {
      fprintf(stderr, "fedc sim: cannot write the shared copy %s of %s\n", d->images, images);
      goto out;
    }
  } else {
    snprintf(d->images, sizeof d->images, "%s", images);
    snprintf(d->labels, sizeof d->labels, "%s", labels);
  }
  fprintf(stderr, "fedc sim: throwaway PKI for %llu clients...\n", o->clients);
  snprintf(p, sizeof p, "%s/pki", o->out);
  if (fc_pki_init(p, "sim", NULL, 0, 30, "ec", err, sizeof err) != FEDC_OK ||
      fc_pki_issue(p, "admin", "sim", NULL, 30, err, sizeof err) != FEDC_OK) {
    fprintf(stderr, "fedc sim: %s\n", err);
    goto out;
  }
  for (unsigned long long i = 0; i < o->clients; i++) {
    char name[32];
    snprintf(name, sizeof name, "c%04llu", i);
    if (fc_pki_issue(p, "client", name, NULL, 30, err, sizeof err) != FEDC_OK) {
      fprintf(stderr, "fedc sim: %s\n", err);
      goto out;
    }
  }
  rc = 0;
out:
  free(owner);
  free(y);
  fc_dataset_free(&head);
  return rc;
}

void sim_data_cleanup(const sim_data *d) {
  if (!d->copied) return;
  unlink(d->images);
  unlink(d->labels);
}
