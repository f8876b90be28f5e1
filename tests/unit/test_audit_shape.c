/*
 * test_audit_shape.c - fc_audit_shape (coordinator/audit_shape.h), the
 * coordinator start's tree-free read of an audit record, is never more
 * permissive than jansson:
 *   - the writer's own records (every kind's usual fields) are read, with
 *     the seq, kind and prev jansson finds (so the start is fast);
 *   - 400,000 random mutations of them: whenever it says 1, jansson
 *     (JSON_REJECT_DUPLICATES) accepts the line and finds the same three;
 *   - the lines of a hostile review (not JSON, a key twice, an integer past
 *     int64, leading zeros, unbalanced, a second "kind") say 0, and a
 *     coordinator refuses to start on a log with one, chained and hashed
 *     as the writer would (before the fix, it started).
 */
#include <jansson.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "check.h"
#include "coordinator/audit.h"
#include "coordinator/audit_shape.h"
#include "crypto/sha256.h"
#include "fedc/error.h"

static char dir[64], path[128];

/* jansson's view of the line: 1 and the three fields if it accepts it. */
static int jansson_reads(const char *line, size_t n, long long *seq, char kind[64], char prev[65]) {
  json_error_t e;
  json_t *o = json_loadb(line, n, JSON_REJECT_DUPLICATES, &e);
  int ok = o && json_is_object(o);
  json_t *s = ok ? json_object_get(o, "seq") : NULL, *k = ok ? json_object_get(o, "kind") : NULL,
         *p = ok ? json_object_get(o, "prev") : NULL;
  ok = ok && json_is_integer(s) && json_is_string(k) && json_is_string(p);
  if (ok) {
    *seq = (long long)json_integer_value(s);
    snprintf(kind, 64, "%s", json_string_value(k));
    snprintf(prev, 65, "%s", json_string_value(p));
  }
  json_decref(o);
  return ok;
}

static uint64_t rng = 88172645463325252ull;
static uint64_t next(void) {
  rng ^= rng << 13;
  rng ^= rng >> 7;
  rng ^= rng << 17;
  return rng;
}

/* fc_audit_shape's 1 agrees with jansson; returns what it said. */
static int agrees(const char *line, size_t n) {
  long long s1 = -1, s2 = -2;
  char k1[FC_AUDIT_SHAPE_KIND_MAX + 1], p1[65], k2[64], p2[65];
  /* As audit.c: only a printable line reaches the scan (its precondition). */
  int fast = fc_audit_printable(line, n) && fc_audit_shape(line, n, &s1, k1, p1);
  if (!fast) return 0;
  int slow = jansson_reads(line, n, &s2, k2, p2);
  if (!slow || s1 != s2 || strcmp(k1, k2) != 0 || strcmp(p1, p2) != 0) {
    fprintf(stderr, "  fast path accepted what jansson reads otherwise (%d): %.*s\n", slow, (int)n, line);
    CHECK(0);
  }
  return 1;
}

static const char mutants[] = "{}[]\",:\\/0123456789-+.eEtrufalsnu x\x7f";

static void mutate(const char *line, size_t n, char *out, size_t *on) {
  memcpy(out, line, n);
  *on = n;
  int edits = 1 + (int)(next() % 3);
  for (int e = 0; e < edits && *on > 1; e++) {
    size_t at = (size_t)(next() % *on);
    char c = mutants[next() % (sizeof mutants - 1)];
    switch (next() % 4) {
    case 0: out[at] = c; break;                                          /* replace */
    case 1: memmove(out + at, out + at + 1, *on - at - 1), (*on)--; break; /* delete */
    case 2: memmove(out + at + 1, out + at, *on - at), out[at] = c, (*on)++; break; /* insert */
    default: { /* copy a piece of the line over another place (keys twice, values moved) */
      size_t from = (size_t)(next() % n), len = 1 + (size_t)(next() % 24);
      if (from + len > n) len = n - from;
      if (at + len > *on) len = *on - at;
      memcpy(out + at, line + from, len);
    }
    }
  }
}

/* A log of these record bodies (each up to its "prev" member, without the
 * closing brace), chained and hashed as the writer does. */
static void write_chain(const char *const *bodies, size_t nb) {
  FILE *f = fopen(path, "wb");
  char prev[65];
  memset(prev, '0', 64);
  prev[64] = 0;
  for (size_t i = 0; i < nb; i++) {
    char line[2048], hex[65];
    uint8_t d[32];
    int m = snprintf(line, sizeof line, bodies[i], prev);
    fc_sha256(line, (size_t)m, d);
    fc_hex(d, 32, hex);
    fprintf(f, "%s,\"hash\":\"%s\"}\n", line, hex);
    memcpy(prev, hex, 65);
  }
  fclose(f);
}

int main(void) {
  snprintf(dir, sizeof dir, "/tmp/fedc-shape-XXXXXX");
  CHECK(mkdtemp(dir) != NULL);
  snprintf(path, sizeof path, "%s/%s", dir, FC_AUDIT_FILE);

  /* fc_audit_printable, eight bytes at a time, against the plain test: each
   * byte value at each place of a 19-byte run, and random runs. */
  for (int b = 0; b < 256; b++)
    for (size_t at = 0; at < 19; at++) {
      char run[19];
      memset(run, 'a', sizeof run);
      run[at] = (char)b;
      CHECK_EQ_INT(fc_audit_printable(run, sizeof run), b >= 0x20 && b <= 0x7e);
    }
  for (int t = 0; t < 200000; t++) {
    char run[24];
    int want = 1;
    for (size_t i = 0; i < sizeof run; i++) {
      uint64_t x = next();
      run[i] = (char)(x % 8 ? 0x20 + (x >> 8) % 95 : (x >> 8) & 0xff);
      want &= (unsigned char)run[i] >= 0x20 && (unsigned char)run[i] <= 0x7e;
    }
    if (fc_audit_printable(run, sizeof run) != want) CHECK(0);
  }

  /* The writer's records. */
  fc_audit *a = NULL;
  char why[400];
  uint8_t fp[32];
  memset(fp, 0x5a, sizeof fp);
  CHECK_EQ_INT(fc_audit_open(dir, &a, why, sizeof why), FEDC_OK);
  fc_audit_contact(a, "c1", "client", fp, "ipv4:127.0.0.1:5");
  fc_audit_append(a, "update", json_pack("{s:s,s:I,s:s,s:b,s:s,s:f}", "client", "c1", "round", (json_int_t)3,
                                         "outcome", "accepted", "masked", 0, "sha256", "ab", "norm", 3.25e-7));
  fc_audit_append(a, "update", json_pack("{s:s,s:I,s:s,s:s}", "client", "c1", "round", (json_int_t)3, "outcome",
                                         "refused", "reason", "quote \" back\\slash \t tab ,\"hash\":\" and é"));
  fc_audit_append(a, "model", json_pack("{s:I,s:I,s:n,s:s,s:I}", "version", (json_int_t)4, "round", (json_int_t)3,
                                        "parent", "sha256", "cd", "updates", (json_int_t)10));
  fc_audit_append(a, "refusals", json_pack("{s:s,s:{s:i,s:i}}", "client", "*", "by_reason", "invalid", 2, "late", 1));
  fc_audit_append(a, "secagg_blame", json_pack("{s:I,s:s,s:[i,i,i],s:b}", "round", (json_int_t)9, "client", "c2",
                                               "secrets", 1, 2, 3, "x", 1));
  fc_audit_close(a);
  FILE *f = fopen(path, "rb");
  char line[8192];
  char *lines[16];
  size_t lens[16], nl = 0;
  while (nl < 16 && fgets(line, sizeof line, f)) {
    lens[nl] = strlen(line) - 1;
    lines[nl] = strndup(line, lens[nl]);
    nl++;
  }
  fclose(f);
  CHECK_EQ_INT(nl, 6);
  /* Read fast: contact, both updates (the é is \u-escaped: that one defers),
   * model, secagg_blame; refusals has a nested object: jansson's. */
  int fast[6];
  for (size_t i = 0; i < nl; i++) fast[i] = agrees(lines[i], lens[i]);
  CHECK(fast[0] && fast[1] && fast[3] && fast[5] && !fast[4]);
  CHECK(!fast[2]); /* "\u00e9" */

  /* Mutations: never more permissive than jansson. */
  size_t tried = 0, accepted = 0;
  char *out = malloc(sizeof line + 64);
  for (int round = 0; round < 60000; round++)
    for (size_t i = 0; i < nl; i++) {
      size_t on;
      mutate(lines[i], lens[i], out, &on);
      tried++;
      accepted += (size_t)agrees(out, on);
    }
  fprintf(stderr, "  %zu mutated records, %zu read fast (each checked against jansson)\n", tried, accepted);
  CHECK(accepted > 1000); /* the mutations reach the accepting path, not only refusals */
  free(out);

  /* A hostile review's lines: jansson refuses each, so must the fast path,
   * and a coordinator refuses to start on a log holding one. */
  static const char *const first = "{\"seq\":1,\"ts_ms\":1,\"kind\":\"admin\",\"action\":\"pause\",\"prev\":\"%s\"";
  static const char *const bad[] = {
      "{\"seq\":2,\"ts_ms\":2,\"kind\":\"update\",GARBAGE } { not json,\"prev\":\"%s\"",
      "{\"seq\":2,\"ts_ms\":2,\"kind\":\"update\",\"seq\":99,\"prev\":\"%s\"",
      "{\"seq\":2,\"ts_ms\":9999999999999999999,\"kind\":\"update\",\"prev\":\"%s\"",
      "{\"seq\":2,\"ts_ms\":0000000000001,\"kind\":\"update\",\"prev\":\"%s\"",
      "{\"seq\":2,\"ts_ms\":2,\"kind\":\"update\",\"x\":{\"y\":1,\"prev\":\"%s\"",
      "{\"seq\":2,\"ts_ms\":2,\"kind\":\"update\",\"kind\":\"contact\",\"cert_sha256\":\"abab\",\"prev\":\"%s\"",
      "{\"seq\":2,\"ts_ms\":2,\"kind\":\"update\",\"a\\/b\":1,\"a/b\":2,\"prev\":\"%s\"",
  };
  for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
    const char *bodies[2] = {first, bad[i]};
    write_chain(bodies, 2);
    f = fopen(path, "rb");
    char got[2][2048];
    CHECK(fgets(got[0], sizeof got[0], f) && fgets(got[1], sizeof got[1], f));
    fclose(f);
    long long sq;
    char k[FC_AUDIT_SHAPE_KIND_MAX + 1], p[65], k2[64], p2[65];
    size_t n = strlen(got[1]) - 1;
    CHECK(fc_audit_shape(got[0], strlen(got[0]) - 1, &sq, k, p) == 0 || sq == 1);
    CHECK_EQ_INT(fc_audit_shape(got[1], n, &sq, k, p), 0);
    CHECK_EQ_INT(jansson_reads(got[1], n, &sq, k2, p2), 0);
    if (fc_audit_open(dir, &a, why, sizeof why) == FEDC_OK) {
      fprintf(stderr, "  started on: %s", got[1]);
      CHECK(0);
      fc_audit_close(a);
    } else {
      CHECK(strstr(why, "line 2") != NULL);
    }
  }
  for (size_t i = 0; i < nl; i++) free(lines[i]);
  unlink(path);
  rmdir(dir);
  return CHECK_DONE();
}
