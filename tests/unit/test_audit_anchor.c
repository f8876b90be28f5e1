/*
 * test_audit_anchor.c - the audit log against the signed manifests'
 * anchors (coordinator/audit_anchor.h; security review, finding 7), on real
 * logs written by coordinator/audit.c:
 *   - a log that agrees with its anchors passes; the records after the
 *     newest anchor are counted as unanchored;
 *   - the review's rewrite (records dropped, the rest re-chained: the chain
 *     alone says "intact") fails naming the anchored record; a log cut off
 *     before an anchor fails; a manifest that is not the one the log
 *     recorded fails, and so does a recorded one that is missing;
 *   - records are printable ASCII: a C1 control or DEL in a line whose hash
 *     is right is refused (`show --json` prints lines as they are);
 *   - the record kinds `fedc audit show --kind` accepts;
 *   - a live coordinator: the log read before the manifests, a version
 *     signed in between anchors records past the end of what was read
 *     ("REWRITTEN" on an intact log: test_quorum.sh once under ASan); the
 *     manifests listed first, a version announced in between is named by a
 *     record but was not listed, and is loaded by name. While a writer
 *     thread appends records and signs versions as coord_finalize does,
 *     every read of fc_audit_read_anchored (what `fedc audit verify --pki`
 *     checks) agrees with its anchors.
 */
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "check.h"
#include "common/fileutil.h"
#include "common/manifest.h"
#include "coordinator/audit.h"
#include "coordinator/audit_anchor.h"
#include "coordinator/store.h"
#include "crypto/pki.h"
#include "crypto/sa_crypto.h"
#include "crypto/sha256.h"
#include "fedc/error.h"

static char *slurp(const char *dir, size_t *len) {
  char p[200];
  snprintf(p, sizeof p, "%s/%s", dir, FC_AUDIT_FILE);
  FILE *f = fopen(p, "rb");
  if (!f) return NULL;
  fseek(f, 0, SEEK_END);
  long n = ftell(f);
  fseek(f, 0, SEEK_SET);
  char *b = malloc((size_t)n + 1);
  *len = fread(b, 1, (size_t)n, f);
  b[*len] = 0;
  fclose(f);
  return b;
}

static void drop(const char *dir) {
  char p[200];
  snprintf(p, sizeof p, "%s/%s", dir, FC_AUDIT_FILE);
  unlink(p);
  rmdir(dir);
}

/* Record i of the test's history (1-based): updates, and model records
 * naming manifest digests for versions 1 and 2 at records 6 and 13. */
static json_t *fields(int i, const char **kind) {
  static const char d1[] = "1111111111111111111111111111111111111111111111111111111111111111";
  static const char d2[] = "2222222222222222222222222222222222222222222222222222222222222222";
  if (i == 6 || i == 13) {
    *kind = "model";
    return json_pack("{s:I,s:s}", "version", (json_int_t)(i == 6 ? 1 : 2), "manifest_sha256", i == 6 ? d1 : d2);
  }
  *kind = "update";
  return json_pack("{s:s,s:I,s:s}", "client", "c", "round", (json_int_t)i, "outcome", "accepted");
}

/* Write records from..to of the history (skipping none) to a fresh log in
 * dir; heads[k] gets the head after record k. */
static void write_log(const char *dir, int from, int to, char heads[][65]) {
  fc_audit *a = NULL;
  char why[300];
  CHECK_EQ_INT(fc_audit_open(dir, &a, why, sizeof why), FEDC_OK);
  for (int i = from, k = 1; i <= to; i++, k++) {
    const char *kind;
    json_t *f = fields(i, &kind);
    CHECK_EQ_INT(fc_audit_append(a, kind, f), FEDC_OK);
    if (heads) fc_audit_head(a, heads[k]);
  }
  fc_audit_close(a);
}

static void anchors_of(fc_audit_anchor *x, char heads[][65]) {
  memset(x, 0, 2 * sizeof *x);
  /* v1 signed after record 5, v2 after record 12 (each before its model record). */
  x[0].version = 1, x[0].has_anchor = 1, x[0].seq = 5;
  snprintf(x[0].head, sizeof x[0].head, "%s", heads[5]);
  memset(x[0].manifest_sha, '1', 64);
  x[1].version = 2, x[1].has_anchor = 1, x[1].seq = 12;
  snprintf(x[1].head, sizeof x[1].head, "%s", heads[12]);
  memset(x[1].manifest_sha, '2', 64);
}

static void expect_problem_src(fc_audit_src *log, fc_audit_anchor *x, size_t n, const char *words) {
  fc_anchor_report r;
  CHECK_EQ_INT(fc_audit_check_anchors_src(log, x, n, &r), FEDC_ERR_INVALID);
  if (!strstr(r.problem, words)) fprintf(stderr, "  want '%s', got '%s'\n", words, r.problem);
  CHECK(strstr(r.problem, words) != NULL);
}

/* The same check over the bytes written to a file and walked from disk,
 * where only model and manifest records are built (the rest come to the
 * check unbuilt: fc_audit_src.build). */
static int check_on_disk(const char *buf, size_t len, fc_audit_anchor *x, size_t n, fc_anchor_report *r,
                         const char *words) {
  char d[64] = "/tmp/fedc-anchor-fd-XXXXXX", p[128];
  CHECK(mkdtemp(d) != NULL);
  snprintf(p, sizeof p, "%s/%s", d, FC_AUDIT_FILE);
  FILE *f = fopen(p, "wb");
  fwrite(buf, 1, len, f);
  fclose(f);
  int fd;
  char err[300];
  CHECK_EQ_INT(fc_audit_open_log(d, &fd, err, sizeof err), FEDC_OK);
  fc_audit_src log = FC_AUDIT_SRC_FD(fd);
  int rc;
  /* The check builds only what it needs on its own copy: the caller's
   * source still builds (and hands on) every record. */
  fc_audit_src before = log;
  if (words) {
    expect_problem_src(&log, x, n, words);
    rc = FEDC_ERR_INVALID;
  } else {
    rc = fc_audit_check_anchors_src(&log, x, n, r);
  }
  CHECK(log.build == before.build && log.each_unbuilt == before.each_unbuilt);
  close(fd);
  unlink(p);
  rmdir(d);
  return rc;
}

static void expect_problem(const char *buf, size_t len, fc_audit_anchor *x, size_t n, const char *words) {
  fc_audit_src log = FC_AUDIT_SRC_BUF(buf, len);
  expect_problem_src(&log, x, n, words);
  check_on_disk(buf, len, x, n, NULL, words);
}

static void test_anchors(void) {
  char dir[64] = "/tmp/fedc-anchor-XXXXXX", heads[32][65];
  CHECK(mkdtemp(dir) != NULL);
  write_log(dir, 1, 20, heads);
  size_t len;
  char *good = slurp(dir, &len);
  fc_audit_anchor x[2];
  fc_anchor_report r;

  /* The log as written agrees with both manifests. */
  anchors_of(x, heads);
  CHECK_EQ_INT(fc_audit_check_anchors(good, len, x, 2, &r), FEDC_OK);
  CHECK_EQ_INT(r.chain.records, 20);
  CHECK_EQ_INT(r.anchored, 12);
  CHECK_EQ_INT(r.anchored_by, 2);
  CHECK_EQ_INT(r.anchors, 2);
  CHECK(x[0].recorded && x[0].matched && x[1].recorded && x[1].matched);
  /* ... and walked from disk, most records unbuilt: the same verdict. */
  anchors_of(x, heads);
  CHECK_EQ_INT(check_on_disk(good, len, x, 2, &r, NULL), FEDC_OK);
  CHECK(r.chain.records == 20 && r.anchored == 12 && r.anchored_by == 2 && r.anchors == 2);
  CHECK(x[0].recorded && x[0].matched && x[1].recorded && x[1].matched);
  /* No manifest: nothing anchored, nothing wrong. */
  CHECK_EQ_INT(fc_audit_check_anchors(good, 0, NULL, 0, &r), FEDC_OK);
  /* A format 1 manifest (no anchor) still has its digest checked. */
  anchors_of(x, heads);
  x[0].has_anchor = 0;
  CHECK_EQ_INT(fc_audit_check_anchors(good, len, x, 2, &r), FEDC_OK);
  CHECK_EQ_INT(r.anchors, 1);

  /* The review's rewrite: records 3..17 dropped, the other 5 re-chained.
   * The chain alone is intact; the anchors are not. */
  char dir2[64] = "/tmp/fedc-anchor-XXXXXX";
  CHECK(mkdtemp(dir2) != NULL);
  fc_audit *a = NULL;
  char why[300];
  CHECK_EQ_INT(fc_audit_open(dir2, &a, why, sizeof why), FEDC_OK);
  for (int i = 1; i <= 20; i++) {
    if (i >= 3 && i <= 17) continue;
    const char *kind;
    json_t *f = fields(i, &kind);
    CHECK_EQ_INT(fc_audit_append(a, kind, f), FEDC_OK);
  }
  fc_audit_close(a);
  size_t len2;
  char *forged = slurp(dir2, &len2);
  fc_audit_report vr;
  CHECK_EQ_INT(fc_audit_verify(forged, len2, &vr), FEDC_OK);
  CHECK_EQ_INT(vr.records, 5);
  anchors_of(x, heads);
  expect_problem(forged, len2, x, 2, "record 5 is not the one model v1's signed manifest names");
  /* Only the records after the newest anchor can go unnoticed: cut there. */
  size_t cut = 0;
  for (int nl = 0; cut < len && nl < 12; cut++) nl += good[cut] == '\n';
  anchors_of(x, heads);
  CHECK_EQ_INT(fc_audit_check_anchors(good, cut, x, 2, &r), FEDC_OK);
  CHECK_EQ_INT(r.anchored, 12);
  /* One record fewer and v2's anchor is gone: refused. */
  size_t cut11 = 0;
  for (int nl = 0; cut11 < len && nl < 11; cut11++) nl += good[cut11] == '\n';
  anchors_of(x, heads);
  expect_problem(good, cut11, x, 2, "anchors record 12 but the log has only 11 records");
  /* Another manifest in place of the one the log recorded for v2. */
  anchors_of(x, heads);
  memset(x[1].manifest_sha, '3', 64);
  expect_problem(good, len, x, 2, "models/v000002.manifest (333333333333...) is not the signed manifest the log");
  /* v2's manifest removed (and with it its anchor). */
  anchors_of(x, heads);
  expect_problem(good, len, x, 1, "names a signed manifest of model v2 (222222222222...), but models/v000002.manifest");
  /* An anchor whose hash is not its record's. */
  anchors_of(x, heads);
  x[0].head[0] = x[0].head[0] == 'a' ? 'b' : 'a';
  expect_problem(good, len, x, 2, "the log up to record 5 was rewritten");
  free(forged);
  free(good);
  drop(dir2);
  drop(dir);
}

/* A record whose hash matches but that holds bytes the writer never writes. */
static void test_ascii_only(void) {
  static const char *inner[] = {"a\xc2\x9b" "31mb", "a\x7f" "b", "caf\xc3\xa9"};
  for (size_t k = 0; k < sizeof inner / sizeof *inner; k++) {
    char body[512], line[700], hex[65];
    uint8_t d[32];
    snprintf(body, sizeof body,
             "{\"seq\":1,\"ts_ms\":1,\"kind\":\"update\",\"reason\":\"%s\",\"prev\":\""
             "0000000000000000000000000000000000000000000000000000000000000000\"",
             inner[k]);
    fc_sha256(body, strlen(body), d);
    snprintf(line, sizeof line, "%s,\"hash\":\"%s\"}\n", body, fc_hex(d, 32, hex));
    fc_audit_report r;
    CHECK_EQ_INT(fc_audit_verify(line, strlen(line), &r), FEDC_ERR_INVALID);
    CHECK(strstr(r.problem, "printable ASCII") != NULL);
    CHECK_EQ_INT(r.bad_line, 1);
  }
}

static void test_kinds(void) {
  static const char *known[] = {"contact", "admin", "update", "model", "model_failed", "manifest",
                                "round_abandoned", "start", "stop"};
  for (size_t i = 0; i < sizeof known / sizeof *known; i++) CHECK(fc_audit_kind_known(known[i]));
  CHECK(!fc_audit_kind_known("updte"));
  CHECK(!fc_audit_kind_known(""));
  CHECK(!fc_audit_kind_known(NULL));
  char list[256];
  CHECK(strstr(fc_audit_kind_list(list, sizeof list), "update, model") != NULL);
}

/* ---- a live coordinator: versions signed while the verifier reads ---- */

#define LIVE_VERSIONS 40

typedef struct live_writer {
  const char *dir, *pki;
  char failed[300]; /* the writer's first failure ("" if none): CHECK stays on the main thread */
  atomic_int done;
} live_writer;

/* One version as coord_finalize publishes it: the round's records, then the
 * manifest signed naming the log's head, then the record naming its digest. */
static int publish_one(live_writer *w, fc_audit *a, uint64_t v, const char *key, size_t kl, const char *cert,
                       size_t cl) {
  fc_manifest m;
  memset(&m, 0, sizeof m);
  snprintf(m.federation, sizeof m.federation, "fed");
  m.version = m.round = v;
  float weights[4] = {(float)v, 1, 2, 3};
  uint64_t shape[2] = {2, 2};
  fc_model_spec_add(&m.spec, "fc1.weight", 2, shape);
  m.bytes = sizeof weights;
  fc_sha256(weights, sizeof weights, m.sha);
  m.created_unix = 1700000000;
  int rc = FEDC_OK;
  for (int k = 0; k < 2 && rc == FEDC_OK; k++)
    rc = fc_audit_append(a, "update", json_pack("{s:s,s:I}", "client", k ? "b" : "a", "round", (json_int_t)v));
  char head[65], hex[FC_SHA256_HEX_LEN], *text = NULL;
  size_t tl;
  m.has_audit = 1;
  m.audit_seq = fc_audit_head(a, head);
  fc_unhex(head, m.audit_head, FC_SHA256_LEN);
  fc_signed s;
  memset(&s, 0, sizeof s);
  if (rc == FEDC_OK) rc = fc_manifest_encode(&m, &text, &tl);
  if (rc == FEDC_OK) rc = fc_signed_make(key, kl, cert, cl, text, tl, &s, w->failed, sizeof w->failed);
  if (rc == FEDC_OK) rc = fc_store_write_manifest(w->dir, v, &s, w->failed, sizeof w->failed);
  uint8_t d[FC_SHA256_LEN];
  if (rc == FEDC_OK && fc_sha256(s.msg, s.msg_len, d) == FEDC_OK)
    rc = fc_audit_append(a, "model", json_pack("{s:I,s:s}", "version", (json_int_t)v, "manifest_sha256",
                                               fc_hex(d, sizeof d, hex)));
  if (rc != FEDC_OK && !w->failed[0]) snprintf(w->failed, sizeof w->failed, "v%llu: %s", (unsigned long long)v,
                                               fedc_strerror(rc));
  fc_signed_free(&s);
  free(text);
  return rc;
}

/* The signer's key and certificate of the PKI in pki (FEDC_OK or the read's error). */
static int signer_of(const char *pki, char **key, size_t *kl, char **cert, size_t *cl) {
  char kf[600], cf[600];
  snprintf(kf, sizeof kf, "%s/%s", pki, FC_PKI_SIGNER_KEY);
  snprintf(cf, sizeof cf, "%s/%s", pki, FC_PKI_SIGNER_CERT);
  int rc = fc_read_file(kf, 1 << 20, key, kl);
  return rc == FEDC_OK ? fc_read_file(cf, 1 << 20, cert, cl) : rc;
}

static void *live_publish(void *arg) {
  live_writer *w = arg;
  char *key = NULL, *cert = NULL;
  size_t kl = 0, cl = 0;
  fc_audit *a = NULL;
  if (signer_of(w->pki, &key, &kl, &cert, &cl) != FEDC_OK ||
      fc_audit_open(w->dir, &a, w->failed, sizeof w->failed) != FEDC_OK) {
    if (!w->failed[0]) snprintf(w->failed, sizeof w->failed, "cannot read the signer's key or certificate");
  } else {
    for (uint64_t v = 1; v <= LIVE_VERSIONS; v++) {
      if (publish_one(w, a, v, key, kl, cert, cl) != FEDC_OK) break;
    }
  }
  fc_audit_close(a);
  if (key) fc_wipe(key, kl);
  free(key);
  free(cert);
  atomic_store(&w->done, 1);
  return NULL;
}

/* The two hazards of reading a live state, the writer's steps put between
 * the reader's by hand, through the pieces fc_audit_read_anchored is made
 * of. */
static void test_read_order(const char *pki) {
  char dir[64] = "/tmp/fedc-anchor-XXXXXX", err[600], cap[600], *ca = NULL, *key = NULL, *cert = NULL;
  size_t ca_len = 0, kl = 0, cl = 0;
  CHECK(mkdtemp(dir) != NULL);
  CHECK_EQ_INT(fc_store_open(dir, err, sizeof err), FEDC_OK);
  snprintf(cap, sizeof cap, "%s/%s", pki, FC_PKI_CA_CERT);
  CHECK_EQ_INT(fc_read_file(cap, 1 << 20, &ca, &ca_len), FEDC_OK);
  CHECK_EQ_INT(signer_of(pki, &key, &kl, &cert, &cl), FEDC_OK);
  live_writer w;
  memset(&w, 0, sizeof w);
  w.dir = dir;
  fc_audit *a = NULL;
  CHECK_EQ_INT(fc_audit_open(dir, &a, err, sizeof err), FEDC_OK);
  for (uint64_t v = 1; v <= 2; v++) CHECK_EQ_INT(publish_one(&w, a, v, key, kl, cert, cl), FEDC_OK);
  fc_audit_anchor *x = NULL;
  size_t n = 0, len = 0;
  char *buf = NULL;

  /* The log read first (6 records), v3 signed (anchoring record 8) before
   * the manifests are listed: an intact log called rewritten (the old order
   * of `fedc audit verify --pki`; test_quorum.sh under ASan). */
  buf = slurp(dir, &len);
  CHECK(buf != NULL);
  CHECK_EQ_INT(publish_one(&w, a, 3, key, kl, cert, cl), FEDC_OK);
  CHECK_EQ_INT(fc_audit_load_anchors(dir, ca, ca_len, &x, &n, err, sizeof err), FEDC_OK);
  CHECK_EQ_INT(n, 3);
  expect_problem(buf, len, x, n, "model v3's signed manifest anchors record 8 but the log has only 6 records");
  free(buf);
  free(x);

  /* The manifests listed first (v1..v3), v4 signed and announced before the
   * log is read: the log names a manifest the listing lacks. Loaded by
   * name, it is there, anchoring records the log has. */
  CHECK_EQ_INT(fc_audit_load_anchors(dir, ca, ca_len, &x, &n, err, sizeof err), FEDC_OK);
  CHECK_EQ_INT(publish_one(&w, a, 4, key, kl, cert, cl), FEDC_OK);
  buf = slurp(dir, &len);
  CHECK(buf != NULL);
  expect_problem(buf, len, x, n, "names a signed manifest of model v4");
  CHECK_EQ_INT(fc_audit_add_named_anchors(dir, ca, ca_len, buf, len, &x, &n, err, sizeof err), FEDC_OK);
  CHECK_EQ_INT(n, 4);
  fc_anchor_report r;
  CHECK_EQ_INT(fc_audit_check_anchors(buf, len, x, n, &r), FEDC_OK);
  CHECK_EQ_INT(r.anchored, 11);
  CHECK_EQ_INT(r.anchored_by, 4);
  free(buf);
  free(x);

  /* A named manifest that is gone stays a finding. */
  char mp[1200];
  fc_store_manifest_path(dir, 2, mp, sizeof mp);
  CHECK_EQ_INT(unlink(mp), 0);
  fc_audit_src log;
  CHECK_EQ_INT(fc_audit_read_anchored(dir, ca, ca_len, &x, &n, &log, err, sizeof err), FEDC_OK);
  CHECK_EQ_INT(n, 3);
  expect_problem_src(&log, x, n, "names a signed manifest of model v2");
  close(log.fd);
  free(x);
  fc_audit_close(a);
  fc_wipe(key, kl);
  free(key);
  free(cert);
  free(ca);
  char cmd[200];
  snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
  if (system(cmd) != 0) fprintf(stderr, "cleanup failed\n");
}

/* Read and check as `fedc audit verify --pki` does; 0 if it agrees. */
static int live_check(const char *dir, const char *ca, size_t ca_len, fc_anchor_report *r) {
  fc_audit_anchor *x = NULL;
  size_t n = 0;
  char err[600];
  fc_audit_src log = FC_AUDIT_SRC_FD(-1);
  int rc = fc_audit_read_anchored(dir, ca, ca_len, &x, &n, &log, err, sizeof err);
  if (rc == FEDC_ERR_NOT_FOUND) return 0; /* the writer has not created the log yet */
  if (rc != FEDC_OK) fprintf(stderr, "  live read: %s\n", err);
  if (rc == FEDC_OK && (rc = fc_audit_check_anchors_src(&log, x, n, r)) != FEDC_OK)
    fprintf(stderr, "  live check: %s%s\n", r->chain.problem, r->problem);
  if (log.fd >= 0) close(log.fd);
  free(x);
  return rc;
}

static void test_live(const char *pki) {
  char dir[64] = "/tmp/fedc-anchor-XXXXXX", err[300], cap[600], *ca = NULL;
  size_t ca_len = 0;
  CHECK(mkdtemp(dir) != NULL);
  CHECK_EQ_INT(fc_store_open(dir, err, sizeof err), FEDC_OK);
  snprintf(cap, sizeof cap, "%s/%s", pki, FC_PKI_CA_CERT);
  CHECK_EQ_INT(fc_read_file(cap, 1 << 20, &ca, &ca_len), FEDC_OK);
  live_writer w;
  memset(&w, 0, sizeof w);
  w.dir = dir;
  w.pki = pki;
  pthread_t t;
  CHECK_EQ_INT(pthread_create(&t, NULL, live_publish, &w), 0);
  int reads = 0, wrong = 0;
  fc_anchor_report r;
  while (!atomic_load(&w.done)) {
    reads++;
    wrong += live_check(dir, ca, ca_len, &r) != 0;
  }
  pthread_join(t, NULL);
  if (w.failed[0]) fprintf(stderr, "  writer: %s\n", w.failed);
  CHECK(!w.failed[0]);
  CHECK_EQ_INT(wrong, 0);
  CHECK(reads > 0);
  /* At rest: every version signed, the newest anchoring its round's records. */
  CHECK_EQ_INT(live_check(dir, ca, ca_len, &r), 0);
  CHECK_EQ_INT(r.anchors, LIVE_VERSIONS);
  CHECK_EQ_INT(r.anchored_by, LIVE_VERSIONS);
  CHECK_EQ_INT(r.chain.records, 3 * LIVE_VERSIONS);
  free(ca);
  char cmd[200];
  snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
  if (system(cmd) != 0) fprintf(stderr, "cleanup failed\n");
}

int main(void) {
  test_anchors();
  test_ascii_only();
  test_kinds();
  char pdir[] = "/tmp/fedc-anchor-pki.XXXXXX", pki[600], err[300];
  if (!mkdtemp(pdir)) return 1;
  snprintf(pki, sizeof pki, "%s/pki", pdir);
  CHECK_EQ_INT(fc_pki_init(pki, "fed", NULL, 0, 1, "ec", err, sizeof err), FEDC_OK);
  test_read_order(pki);
  test_live(pki);
  char cmd[700];
  snprintf(cmd, sizeof cmd, "rm -rf '%s'", pdir);
  if (system(cmd) != 0) fprintf(stderr, "cleanup failed\n");
  return CHECK_DONE();
}
