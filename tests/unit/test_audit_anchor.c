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
 *   - the record kinds `fedc audit show --kind` accepts.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "check.h"
#include "coordinator/audit.h"
#include "coordinator/audit_anchor.h"
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

static void expect_problem(const char *buf, size_t len, fc_audit_anchor *x, size_t n, const char *words) {
  fc_anchor_report r;
  CHECK_EQ_INT(fc_audit_check_anchors(buf, len, x, n, &r), FEDC_ERR_INVALID);
  if (!strstr(r.problem, words)) fprintf(stderr, "  want '%s', got '%s'\n", words, r.problem);
  CHECK(strstr(r.problem, words) != NULL);
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

int main(void) {
  test_anchors();
  test_ascii_only();
  test_kinds();
  return CHECK_DONE();
}
