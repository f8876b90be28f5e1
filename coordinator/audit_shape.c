/*
 * audit_shape.c - an audit record's chain fields read without building it
 * (audit_shape.h): one pass over the line, a narrower JSON than jansson's.
 */
#include "coordinator/audit_shape.h"

#include <stdint.h>
#include <string.h>

#define MAX_KEYS 48  /* members of a record (the widest, anomaly, has 16) */
#define MAX_DEPTH 8  /* arrays in arrays */
#define MAX_FRAC 40  /* fraction digits */
#define MAX_EXP 290  /* |exponent|: with at most 17 integer digits, far from DBL_MAX */

typedef struct scan {
  const char *p, *end;
} scan;

static int digit(char c) { return c >= '0' && c <= '9'; }

/* A string at s->p: 1 with its bytes between the quotes (escapes as they
 * are; plain: none at all). Of the escapes only the two-character ones (\u
 * is jansson's to decode and check); the bytes are printable ASCII
 * (fc_audit_shape's precondition). */
static int str(scan *s, int plain, const char **at, size_t *len) {
  if (s->p >= s->end || *s->p != '"') return 0;
  const char *q = ++s->p;
  for (;;) {
    const char *e = memchr(s->p, '"', (size_t)(s->end - s->p));
    if (!e) return 0;
    const char *b = memchr(s->p, '\\', (size_t)(e - s->p));
    if (!b) {
      s->p = e;
      break;
    }
    if (plain || b + 1 >= s->end) return 0;
    switch (b[1]) {
    case '"': case '\\': case '/': case 'b': case 'f': case 'n': case 'r': case 't': break;
    default: return 0;
    }
    s->p = b + 2;
  }
  *at = q;
  *len = (size_t)(s->p - q);
  s->p++;
  return 1;
}

/* A number jansson reads without overflow (JSON's grammar; an integer of at
 * most 18 digits, a real of at most 17 integer digits and |exponent| <=
 * MAX_EXP). *is_int: no fraction, no exponent. */
static int num(scan *s, int *is_int) {
  if (s->p < s->end && *s->p == '-') s->p++;
  const char *ip = s->p;
  if (s->p >= s->end || !digit(*s->p)) return 0;
  if (*s->p == '0') s->p++;
  else
    while (s->p < s->end && digit(*s->p)) s->p++;
  size_t idig = (size_t)(s->p - ip);
  *is_int = 1;
  if (s->p < s->end && *s->p == '.') {
    const char *f = ++s->p;
    *is_int = 0;
    while (s->p < s->end && digit(*s->p)) s->p++;
    if (s->p == f || s->p - f > MAX_FRAC) return 0;
  }
  if (s->p < s->end && (*s->p == 'e' || *s->p == 'E')) {
    *is_int = 0;
    s->p++;
    if (s->p < s->end && (*s->p == '+' || *s->p == '-')) s->p++;
    const char *e = s->p;
    int ev = 0;
    while (s->p < s->end && digit(*s->p) && s->p - e < 4) ev = ev * 10 + (*s->p++ - '0');
    if (s->p == e || (s->p < s->end && digit(*s->p)) || ev > MAX_EXP) return 0;
  }
  return idig <= (*is_int ? 18u : 17u);
}

static int lit(scan *s, const char *w) {
  size_t n = strlen(w);
  if ((size_t)(s->end - s->p) < n || memcmp(s->p, w, n) != 0) return 0;
  s->p += n;
  return 1;
}

static int value(scan *s, int depth);

static int array(scan *s, int depth) {
  s->p++; /* '[' */
  if (s->p < s->end && *s->p == ']') {
    s->p++;
    return 1;
  }
  for (;;) {
    if (!value(s, depth + 1) || s->p >= s->end) return 0;
    if (*s->p == ']') {
      s->p++;
      return 1;
    }
    if (*s->p++ != ',') return 0;
  }
}

static int value(scan *s, int depth) {
  const char *a;
  size_t l;
  int is_int;
  if (s->p >= s->end || depth > MAX_DEPTH) return 0;
  switch (*s->p) {
  case '"': return str(s, 0, &a, &l);
  case '[': return array(s, depth);
  case 't': return lit(s, "true");
  case 'f': return lit(s, "false");
  case 'n': return lit(s, "null");
  case '{': return 0; /* a nested object: its keys are jansson's to check for duplicates */
  default: return num(s, &is_int);
  }
}

static int key_is(const char *k, size_t kl, const char *want) { return kl == strlen(want) && !memcmp(k, want, kl); }

/* A string of 64 bytes without an escape: prev and hash. That they are hex
 * is the chain's check (audit.c compares them with hashes it computed). */
static int str64(const char *v, size_t vl) { return vl == 66 && v[0] == '"' && !memchr(v, '\\', vl); }

int fc_audit_printable(const char *p, size_t n) {
  /* Eight bytes at a time (Anderson's bit hacks: hasless(x, 0x20) and
   * hasmore(x, 0x7e), exact as booleans for these bounds). */
  const uint64_t ones = 0x0101010101010101ull, highs = 0x8080808080808080ull;
  uint64_t bad = 0;
  size_t i = 0;
  for (; i + 8 <= n; i += 8) {
    uint64_t x;
    memcpy(&x, p + i, 8);
    bad |= ((x - ones * 0x20) & ~x & highs) | (((x + ones * (127 - 0x7e)) | x) & highs);
  }
  for (; i < n; i++) bad |= (unsigned char)p[i] < 0x20 || (unsigned char)p[i] > 0x7e;
  return bad == 0;
}

int fc_audit_shape(const char *line, size_t n, long long *seq, char kind[FC_AUDIT_SHAPE_KIND_MAX + 1],
                   char prev[65]) {
  scan s = {line, line + n};
  struct {
    const char *k, *v;
    size_t kl, vl;
  } m[MAX_KEYS];
  size_t nm = 0;
  if (n < 2 || line[0] != '{') return 0;
  s.p++;
  for (;;) {
    const char *k, *v;
    size_t kl;
    int is_int;
    if (nm == MAX_KEYS || !str(&s, 1, &k, &kl) || s.p >= s.end || *s.p++ != ':') return 0;
    for (size_t i = 0; i < nm; i++)
      if (m[i].kl == kl && !memcmp(m[i].k, k, kl)) return 0; /* a key twice: jansson refuses it */
    v = s.p;
    if (!value(&s, 1)) return 0;
    m[nm].k = k, m[nm].kl = kl, m[nm].v = v, m[nm].vl = (size_t)(s.p - v);
    /* The writer's first three members. */
    if (nm == 0 && (!key_is(k, kl, "seq") || !digit(*v) || !num(&(scan){v, s.p}, &is_int) || !is_int)) return 0;
    if (nm == 1 && (!key_is(k, kl, "ts_ms") || !num(&(scan){v, s.p}, &is_int) || !is_int)) return 0;
    if (nm == 2) {
      if (!key_is(k, kl, "kind") || m[nm].vl < 3 || m[nm].vl - 2 > FC_AUDIT_SHAPE_KIND_MAX || *v != '"') return 0;
      for (size_t i = 1; i + 1 < m[nm].vl; i++)
        if (!((v[i] >= 'a' && v[i] <= 'z') || v[i] == '_')) return 0;
    }
    nm++;
    if (s.p >= s.end) return 0;
    if (*s.p == ',') {
      s.p++;
      continue;
    }
    if (*s.p == '}' && s.p + 1 == s.end) break;
    return 0;
  }
  /* ... and its last two. */
  if (nm < 5 || !key_is(m[nm - 2].k, m[nm - 2].kl, "prev") || !str64(m[nm - 2].v, m[nm - 2].vl) ||
      !key_is(m[nm - 1].k, m[nm - 1].kl, "hash") || !str64(m[nm - 1].v, m[nm - 1].vl))
    return 0;
  long long sq = 0;
  for (size_t i = 0; i < m[0].vl; i++) sq = sq * 10 + (m[0].v[i] - '0');
  *seq = sq;
  memcpy(kind, m[2].v + 1, m[2].vl - 2);
  kind[m[2].vl - 2] = 0;
  memcpy(prev, m[nm - 2].v + 1, 64);
  prev[64] = 0;
  return 1;
}
