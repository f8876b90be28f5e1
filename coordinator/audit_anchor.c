/*
 * audit_anchor.c - the audit log against the signed manifests
 * (audit_anchor.h). The check is one pass over the log (fc_audit_walk) with
 * the anchors sorted by record number, so memory is O(manifests), not
 * O(records); the loader is the only part that touches files. It may call
 * the audit walker, the manifest parser/verifier and the store's naming of
 * manifest files, nothing of the running coordinator.
 */
#include "coordinator/audit_anchor.h"

#include <dirent.h>
#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/manifest.h"
#include "coordinator/store.h"
#include "crypto/pki.h"
#include "crypto/sha256.h"
#include "fedc/error.h"

static const char zeros[65] = "0000000000000000000000000000000000000000000000000000000000000000";

static void say(fc_anchor_report *r, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void say(fc_anchor_report *r, const char *fmt, ...) {
  if (r->problem[0]) return; /* the first one is the one to report */
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(r->problem, sizeof r->problem, fmt, ap);
  va_end(ap);
}

typedef struct seq_ref {
  uint64_t seq;
  size_t idx; /* into the anchors */
} seq_ref;

typedef struct anchor_walk {
  fc_audit_anchor *a; /* by version */
  size_t n;
  seq_ref *by_seq; /* the manifests with an anchor, by seq */
  size_t nseq, next;
  fc_anchor_report *r;
} anchor_walk;

static int cmp_version(const void *x, const void *y) {
  const fc_audit_anchor *a = x, *b = y;
  return a->version < b->version ? -1 : a->version > b->version;
}

static fc_audit_anchor *by_version(anchor_walk *w, uint64_t version) {
  fc_audit_anchor key;
  key.version = version;
  if (!w->n) return NULL;
  return bsearch(&key, w->a, w->n, sizeof *w->a, cmp_version);
}

/* The kinds whose records name a manifest: the only ones the checks build
 * when they walk the log on disk (each_unbuilt: the rest come with rec
 * NULL; their seq follows the records before, their hash ends the line). */
static const char *const named_kinds[] = {"model", "manifest", NULL};

/* A walk of log that builds only named_kinds, on a copy: the caller's
 * source keeps its own build (a later walk with it must not lose records);
 * extent and err come back. */
static int walk_named(fc_audit_src *log, int each_unbuilt, fc_audit_report *r, fc_audit_each each, void *ctx) {
  fc_audit_src l = *log;
  l.build = named_kinds;
  l.each_unbuilt = each_unbuilt;
  int rc = fc_audit_walk_src(&l, r, each, ctx);
  log->extent = l.extent;
  memcpy(log->err, l.err, sizeof log->err);
  return rc;
}

static int on_record(json_t *rec, const char *line, size_t len, void *ctx) {
  anchor_walk *w = ctx;
  /* Built or not, the walk has checked both before this call: the record's
   * seq follows the records before it, and its hash (the verified one) is
   * the 64 hex that end the line, before "}. */
  uint64_t seq = w->r->chain.records + 1;
  char hash[65];
  snprintf(hash, sizeof hash, "%.64s", line + len - 66);
  for (; w->next < w->nseq && w->by_seq[w->next].seq == seq; w->next++) {
    const fc_audit_anchor *x = &w->a[w->by_seq[w->next].idx];
    if (strcmp(hash, x->head) != 0)
      say(w->r,
          "record %" PRIu64 " is not the one model v%" PRIu64 "'s signed manifest names (its hash is %.12s..., "
          "the manifest's %.12s...): the log up to record %" PRIu64 " was rewritten",
          seq, x->version, hash, x->head, seq);
    else if (seq > w->r->anchored || (seq == w->r->anchored && x->version > w->r->anchored_by))
      w->r->anchored = seq, w->r->anchored_by = x->version;
  }
  /* A manifest digest on record (model, and manifest when signed again). */
  if (!rec) return FEDC_OK;
  const char *kind = json_string_value(json_object_get(rec, "kind"));
  const char *digest = json_string_value(json_object_get(rec, "manifest_sha256"));
  json_t *version = json_object_get(rec, "version");
  if (kind && digest && json_is_integer(version) && (!strcmp(kind, "model") || !strcmp(kind, "manifest"))) {
    fc_audit_anchor *x = by_version(w, (uint64_t)json_integer_value(version));
    if (!x)
      say(w->r,
          "record %" PRIu64 " names a signed manifest of model v%" PRIu64 " (%.12s...), but models/v%06" PRIu64
          ".manifest is missing",
          seq, (uint64_t)json_integer_value(version), digest, (uint64_t)json_integer_value(version));
    else {
      x->recorded = 1;
      if (strcmp(digest, x->manifest_sha) == 0) x->matched = 1;
    }
  }
  return FEDC_OK;
}

static int cmp_seq(const void *x, const void *y) {
  const seq_ref *a = x, *b = y;
  return a->seq < b->seq ? -1 : a->seq > b->seq;
}

int fc_audit_check_anchors(const char *buf, size_t len, fc_audit_anchor *a, size_t n, fc_anchor_report *r) {
  fc_audit_src src = FC_AUDIT_SRC_BUF(buf, len);
  return fc_audit_check_anchors_src(&src, a, n, r);
}

int fc_audit_check_anchors_src(fc_audit_src *log, fc_audit_anchor *a, size_t n, fc_anchor_report *r) {
  memset(r, 0, sizeof *r);
  anchor_walk w = {a, n, NULL, 0, 0, r};
  if (n && !(w.by_seq = malloc(n * sizeof *w.by_seq))) return FEDC_ERR_NOMEM;
  if (n) qsort(a, n, sizeof *a, cmp_version); /* a may be NULL when n is 0 */
  for (size_t i = 0; i < n; i++) {
    a[i].recorded = a[i].matched = 0;
    if (a[i].has_anchor && a[i].seq == 0 && strcmp(a[i].head, zeros) != 0)
      say(r, "model v%" PRIu64 "'s signed manifest names record 0 with a hash: malformed anchor", a[i].version);
    if (a[i].has_anchor && a[i].seq > 0) w.by_seq[w.nseq++] = (seq_ref){a[i].seq, i};
    r->anchors += a[i].has_anchor != 0;
  }
  if (w.nseq) qsort(w.by_seq, w.nseq, sizeof *w.by_seq, cmp_seq);
  int rc = walk_named(log, 1, &r->chain, on_record, &w);
  if (rc == FEDC_ERR_NOMEM || rc == FEDC_ERR_IO) goto out;
  /* Anchors past the intact records: cut off, or the log was rebuilt. */
  if (w.next < w.nseq) {
    const fc_audit_anchor *x = &a[w.by_seq[w.nseq - 1].idx];
    if (rc == FEDC_OK)
      say(r,
          "model v%" PRIu64 "'s signed manifest anchors record %" PRIu64 " but the log has only %" PRIu64
          " records: records were removed or the log was rewritten",
          x->version, x->seq, r->chain.records);
    else
      say(r, "%zu signed manifests anchor records at or past the broken one (up to record %" PRIu64 ")",
          w.nseq - w.next, x->seq);
  }
  for (size_t i = 0; i < n; i++)
    if (a[i].recorded && !a[i].matched)
      say(r,
          "models/v%06" PRIu64 ".manifest (%.12s...) is not the signed manifest the log recorded for model v%" PRIu64,
          a[i].version, a[i].manifest_sha, a[i].version);
  if (rc == FEDC_OK && r->problem[0]) rc = FEDC_ERR_INVALID;
out:
  free(w.by_seq);
  return rc;
}

/* "v<digits>.manifest" as fc_store_manifest_path spells version v; 0 if not one. */
static int manifest_name(const char *dir, const char *name, uint64_t *version) {
  if (name[0] != 'v' || name[1] < '0' || name[1] > '9') return 0;
  char *end;
  unsigned long long v = strtoull(name + 1, &end, 10);
  if (strcmp(end, ".manifest") != 0) return 0;
  char want[1200], got[1200];
  fc_store_manifest_path(dir, v, want, sizeof want);
  snprintf(got, sizeof got, "%s/models/%s", dir, name);
  if (strcmp(want, got) != 0) return 0;
  *version = v;
  return 1;
}

static int load_one(const char *dir, uint64_t version, const char *ca_pem, size_t ca_len, const char *fed,
                    fc_audit_anchor *x, char *err, size_t errlen) {
  char path[1200], why[400];
  fc_signed s;
  fc_manifest mf;
  fc_store_manifest_path(dir, version, path, sizeof path);
  int rc = fc_signed_file_read(path, &s, err, errlen);
  if (rc != FEDC_OK) return rc;
  rc = fc_manifest_verify(ca_pem, ca_len, &s, fed[0] ? fed : NULL, 1, &mf, why, sizeof why);
  if (rc == FEDC_OK && mf.version != version) {
    snprintf(why, sizeof why, "it is the manifest of model v%" PRIu64, mf.version);
    rc = FEDC_ERR_SIGNATURE;
  }
  if (rc == FEDC_OK) {
    uint8_t d[FC_SHA256_LEN];
    memset(x, 0, sizeof *x);
    x->version = version;
    x->has_anchor = mf.has_audit;
    x->seq = mf.audit_seq;
    fc_hex(mf.audit_head, FC_SHA256_LEN, x->head);
    fc_sha256(s.msg, s.msg_len, d);
    fc_hex(d, sizeof d, x->manifest_sha);
  } else {
    snprintf(err, errlen, "%s: %s", path, why);
    rc = FEDC_ERR_SIGNATURE;
  }
  fc_signed_free(&s);
  return rc;
}

/* Room for one more anchor in *a (cnt used, *cap allocated). */
static int grow(fc_audit_anchor **a, size_t cnt, size_t *cap) {
  if (cnt < *cap) return FEDC_OK;
  size_t want = *cap ? *cap * 2 : 64;
  fc_audit_anchor *g = realloc(*a, want * sizeof **a);
  if (!g) return FEDC_ERR_NOMEM;
  *a = g;
  *cap = want;
  return FEDC_OK;
}

int fc_audit_load_anchors(const char *state_dir, const char *ca_pem, size_t ca_len, fc_audit_anchor **out, size_t *n,
                          char *err, size_t errlen) {
  char models[1100], fed[FC_PKI_FEDERATION_MAX] = "";
  *out = NULL;
  *n = 0;
  if (fc_pki_ca_federation_pem(ca_pem, ca_len, fed) != FEDC_OK) fed[0] = 0;
  snprintf(models, sizeof models, "%s/models", state_dir);
  DIR *d = opendir(models);
  if (!d) {
    if (errno == ENOENT) return FEDC_OK; /* no version published yet */
    snprintf(err, errlen, "cannot read %s: %s", models, strerror(errno));
    return FEDC_ERR_IO;
  }
  fc_audit_anchor *a = NULL;
  size_t cnt = 0, cap = 0;
  int rc = FEDC_OK;
  struct dirent *e;
  while (rc == FEDC_OK && (e = readdir(d)) != NULL) {
    uint64_t version;
    if (!manifest_name(state_dir, e->d_name, &version)) continue;
    if ((rc = grow(&a, cnt, &cap)) != FEDC_OK) {
      snprintf(err, errlen, "out of memory reading the manifests in %s", models);
      break;
    }
    if ((rc = load_one(state_dir, version, ca_pem, ca_len, fed, &a[cnt], err, errlen)) == FEDC_OK) cnt++;
  }
  closedir(d);
  if (rc != FEDC_OK) {
    free(a);
    return rc;
  }
  *out = a;
  *n = cnt;
  return FEDC_OK;
}

/* fc_audit_walk's callback for fc_audit_read_anchored: the versions whose
 * manifest a record names. */
typedef struct named_versions {
  uint64_t *v;
  size_t n, cap;
} named_versions;

static int collect_named(json_t *rec, const char *line, size_t len, void *ctx) {
  (void)line;
  (void)len;
  named_versions *nv = ctx;
  const char *kind = json_string_value(json_object_get(rec, "kind"));
  json_t *version = json_object_get(rec, "version");
  if (!kind || (strcmp(kind, "model") != 0 && strcmp(kind, "manifest") != 0) || !json_is_integer(version) ||
      !json_is_string(json_object_get(rec, "manifest_sha256")))
    return FEDC_OK;
  if (nv->n == nv->cap) {
    size_t want = nv->cap ? nv->cap * 2 : 64;
    uint64_t *g = realloc(nv->v, want * sizeof *g);
    if (!g) return FEDC_ERR_NOMEM;
    nv->v = g;
    nv->cap = want;
  }
  nv->v[nv->n++] = (uint64_t)json_integer_value(version);
  return FEDC_OK;
}

int fc_audit_add_named_anchors(const char *state_dir, const char *ca_pem, size_t ca_len, const char *log, size_t len,
                               fc_audit_anchor **anchors, size_t *n, char *err, size_t errlen) {
  fc_audit_src src = FC_AUDIT_SRC_BUF(log, len);
  return fc_audit_add_named_anchors_src(state_dir, ca_pem, ca_len, &src, anchors, n, err, errlen);
}

int fc_audit_add_named_anchors_src(const char *state_dir, const char *ca_pem, size_t ca_len, fc_audit_src *log,
                                   fc_audit_anchor **anchors, size_t *n, char *err, size_t errlen) {
  fc_audit_anchor *a = *anchors;
  size_t cnt = *n, cap = *n, listed = *n;
  char fed[FC_PKI_FEDERATION_MAX] = "";
  named_versions nv = {NULL, 0, 0};
  fc_audit_report r;
  int rc = FEDC_OK;
  rc = walk_named(log, 0, &r, collect_named, &nv);
  if (rc == FEDC_ERR_NOMEM || rc == FEDC_ERR_IO) {
    snprintf(err, errlen, "cannot read %s/%s: %s", state_dir, FC_AUDIT_FILE,
             rc == FEDC_ERR_IO ? log->err : "out of memory");
    goto out;
  }
  rc = FEDC_OK; /* a broken chain is the check's to report */
  if (fc_pki_ca_federation_pem(ca_pem, ca_len, fed) != FEDC_OK) fed[0] = 0;
  if (listed) qsort(a, listed, sizeof *a, cmp_version);
  for (size_t i = 0; i < nv.n; i++) {
    fc_audit_anchor key;
    key.version = nv.v[i];
    int known = listed && bsearch(&key, a, listed, sizeof *a, cmp_version);
    for (size_t j = listed; j < cnt && !known; j++) known = a[j].version == nv.v[i];
    if (known) continue;
    if ((rc = grow(&a, cnt, &cap)) != FEDC_OK) {
      snprintf(err, errlen, "out of memory reading the manifests in %s/models", state_dir);
      goto out;
    }
    rc = load_one(state_dir, nv.v[i], ca_pem, ca_len, fed, &a[cnt], err, errlen);
    if (rc == FEDC_ERR_NOT_FOUND) rc = FEDC_OK; /* named but missing: fc_audit_check_anchors reports it */
    else if (rc == FEDC_OK) cnt++;
    else goto out;
  }
out:
  /* What was added stays, also on error (the caller frees *anchors). */
  *anchors = a;
  *n = cnt;
  free(nv.v);
  return rc;
}

int fc_audit_read_anchored(const char *state_dir, const char *ca_pem, size_t ca_len, fc_audit_anchor **anchors,
                           size_t *n, fc_audit_src *log, char *err, size_t errlen) {
  fc_audit_anchor *a = NULL;
  size_t cnt = 0;
  int fd = -1;
  /* The manifests first, then the log, then the manifests the log names
   * that the listing missed (the header says why). */
  int rc = fc_audit_load_anchors(state_dir, ca_pem, ca_len, &a, &cnt, err, errlen);
  if (rc == FEDC_OK) rc = fc_audit_open_log(state_dir, &fd, err, errlen);
  if (rc == FEDC_OK) {
    *log = FC_AUDIT_SRC_FD(fd);
    log->wait_torn = 1;
    rc = fc_audit_add_named_anchors_src(state_dir, ca_pem, ca_len, log, &a, &cnt, err, errlen);
  }
  if (rc == FEDC_OK) {
    /* The check walks what this walk read, no further. */
    *log = FC_AUDIT_SRC_FD_LIMIT(fd, log->extent);
    *anchors = a;
    *n = cnt;
    return FEDC_OK;
  }
  if (fd >= 0) close(fd);
  *log = FC_AUDIT_SRC_FD(-1);
  free(a);
  return rc;
}
