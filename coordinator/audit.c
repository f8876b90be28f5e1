/*
 * audit.c - the hash-chained audit log (audit.h).
 */
#include "coordinator/audit.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "common/clock.h"
#include "common/fileutil.h"
#include "common/log.h"
#include "coordinator/audit_shape.h"
#include "crypto/sha256.h"
#include "fedc/error.h"

#define MOD "audit"
#define HASH_KEY ",\"hash\":\""

struct fc_audit {
  pthread_mutex_t mu;
  int fd;
  char path[1100];
  uint64_t seq;
  char head[65];
  /* Fingerprints of certificates already recorded (open addressing). */
  uint8_t (*seen)[32];
  size_t nseen, capseen;
  /* Replicas (fc_audit_open_replica): consulted before each record; 0 = we
   * no longer lead, write nothing. NULL for a lone coordinator. */
  int (*may_write)(void *);
  void *may_write_arg;
};

static const char zeros[65] = "0000000000000000000000000000000000000000000000000000000000000000";

/* ---- verification ---- */

static json_t *parse_line(const char *line, size_t len) {
  json_error_t e;
  json_t *o = json_loadb(line, len, JSON_REJECT_DUPLICATES, &e);
  if (o && !json_is_object(o)) {
    json_decref(o);
    o = NULL;
  }
  return o;
}

/* Every kind of record the coordinator writes (docs/operations.md). */
static const char *const kinds[] = {"contact",  "admin",           "update", "model", "model_failed",
                                    "manifest", "round_abandoned", "start",  "stop",  "refusals",
                                    "secagg_blame", "leave",       "eval",   "eval_report",
                                    "anomaly",      "identity",        "drift",  "partial",
                                    "leader",       "buffer_replayed"};

int fc_audit_kind_known(const char *kind) {
  for (size_t i = 0; kind && i < sizeof kinds / sizeof *kinds; i++)
    if (strcmp(kind, kinds[i]) == 0) return 1;
  return 0;
}

char *fc_audit_kind_list(char *out, size_t cap) {
  size_t n = 0;
  out[0] = 0;
  for (size_t i = 0; i < sizeof kinds / sizeof *kinds && n < cap; i++)
    n += (size_t)snprintf(out + n, cap - n, "%s%s", i ? ", " : "", kinds[i]);
  return out;
}

int fc_audit_reserved_key(const char *k) {
  return !strcmp(k, "seq") || !strcmp(k, "ts_ms") || !strcmp(k, "kind") || !strcmp(k, "prev") || !strcmp(k, "hash");
}

/* The hash the line claims, and what it should be (hex). 0 if the line has
 * the shape of a record. */
static int line_hashes(const char *line, size_t len, char claimed[65], char actual[65]) {
  /* ...,"hash":"<64 hex>"} and nothing after */
  size_t tail = sizeof HASH_KEY - 1 + 64 + 2;
  if (len <= tail) return -1;
  const char *at = line + len - tail;
  if (memcmp(at, HASH_KEY, sizeof HASH_KEY - 1) != 0) return -1;
  const char *h = at + sizeof HASH_KEY - 1;
  if (h[64] != '"' || h[65] != '}') return -1;
  memcpy(claimed, h, 64);
  claimed[64] = 0;
  uint8_t d[FC_SHA256_LEN];
  if (fc_sha256(line, (size_t)(at - line), d) != FEDC_OK) return -1;
  fc_hex(d, sizeof d, actual);
  return 0;
}

static int report(fc_audit_report *r, uint64_t line, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static int report(fc_audit_report *r, uint64_t line, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  r->bad_line = line;
  vsnprintf(r->problem, sizeof r->problem, fmt, ap);
  va_end(ap);
  return FEDC_ERR_INVALID;
}

int fc_audit_verify(const char *buf, size_t len, fc_audit_report *r) { return fc_audit_walk(buf, len, r, NULL, NULL); }

/* A walk's place in the chain, whatever it reads from. */
typedef struct walker {
  fc_audit_report *r;
  fc_audit_each each;
  void *ctx;
  const char *const *build; /* fc_audit_src.build, each_unbuilt */
  int each_unbuilt;
  char prev[65];
  uint64_t lineno;
} walker;

static int kind_listed(const char *const *list, const char *kind) {
  for (; *list; list++)
    if (strcmp(*list, kind) == 0) return 1;
  return 0;
}

static void walker_init(walker *w, fc_audit_report *r, fc_audit_each each, void *ctx) {
  memset(r, 0, sizeof *r);
  w->r = r;
  w->each = each;
  w->ctx = ctx;
  w->build = NULL;
  w->each_unbuilt = 0;
  memcpy(w->prev, zeros, sizeof w->prev);
  w->lineno = 0;
}

/* One line (n bytes, its newline not included) that ends at byte `end` of
 * the log, newline included. */
static int walk_line(walker *w, const char *line, size_t n, uint64_t end) {
  fc_audit_report *r = w->r;
  uint64_t lineno = ++w->lineno;
  char claimed[65], actual[65];
  if (n == 0 || n > FC_AUDIT_MAX_LINE || line_hashes(line, n, claimed, actual) != 0)
    return report(r, lineno, "not an audit record");
  /* The writer escapes everything else (JSON_ENSURE_ASCII): a raw control
   * byte or non-ASCII text was put there by someone else, and whoever
   * prints the line (`fedc audit show --json`) must not pass it on. */
  int bad = !fc_audit_printable(line, n); /* eight bytes at a time; the column only when there is one */
  for (size_t i = 0; bad && i < n; i++)
    if (line[i] < 0x20 || line[i] > 0x7E)
      return report(r, lineno, "not an audit record (byte 0x%02x at column %zu: records are printable ASCII)",
                    (unsigned char)line[i], i + 1);
  /* The fields the chain needs: read by fc_audit_shape for a record nobody
   * needs built (the coordinator's start: all but contacts; it says 1 only
   * for a line jansson accepts), else from jansson's tree. */
  long long seq = 0;
  char kb[FC_AUDIT_SHAPE_KIND_MAX + 1], pb[65];
  const char *kind = kb, *pv = pb;
  json_t *o = NULL;
  int rc = FEDC_OK;
  if (!w->build || !fc_audit_shape(line, n, &seq, kb, pb) || kind_listed(w->build, kb)) {
    if (!(o = parse_line(line, n))) return report(r, lineno, "not an audit record (bad JSON)");
    json_t *js = json_object_get(o, "seq"), *jp = json_object_get(o, "prev"), *jk = json_object_get(o, "kind");
    if (!json_is_integer(js) || !json_is_string(jp) || !json_is_string(jk)) {
      json_decref(o);
      return report(r, lineno, "not an audit record (seq, kind or prev missing)");
    }
    seq = (long long)json_integer_value(js);
    kind = json_string_value(jk);
    pv = json_string_value(jp);
  }
  if (strcmp(claimed, actual) != 0)
    rc = report(r, lineno, "record %lld (%s) was changed: its hash does not match its content", seq, kind);
  else if ((uint64_t)seq != r->records + 1)
    rc = report(r, lineno, "record %llu expected, found record %lld: records are missing or out of order",
                (unsigned long long)(r->records + 1), seq);
  else if (strcmp(pv, w->prev) != 0)
    rc = report(r, lineno, "record %llu does not follow the one before it (prev hash differs)",
                (unsigned long long)(r->records + 1));
  if (rc == FEDC_OK && w->each && (o || w->each_unbuilt)) rc = w->each(o, line, n, w->ctx);
  json_decref(o);
  if (rc != FEDC_OK) return rc;
  memcpy(w->prev, claimed, sizeof w->prev);
  memcpy(r->head, claimed, sizeof r->head);
  r->records++;
  r->valid_bytes = end;
  return FEDC_OK;
}

static int walk_torn(walker *w) {
  w->r->torn = 1;
  return report(w->r, w->lineno + 1, "incomplete last record (no newline): the file was cut or a write was torn");
}

int fc_audit_walk(const char *buf, size_t len, fc_audit_report *r, fc_audit_each each, void *ctx) {
  walker w;
  walker_init(&w, r, each, ctx);
  for (size_t off = 0; off < len;) {
    const char *nl = memchr(buf + off, '\n', len - off);
    if (!nl && len - off > FC_AUDIT_MAX_LINE)
      return report(r, w.lineno + 1, "not an audit record (no newline in %zu bytes)", len - off);
    if (!nl) return walk_torn(&w);
    size_t n = (size_t)(nl - (buf + off));
    int rc = walk_line(&w, buf + off, n, off + n + 1);
    if (rc != FEDC_OK) return rc;
    off += n + 1;
  }
  return FEDC_OK;
}

/* A piece of the file at a time: whole lines are walked, the rest (the
 * start of the next line) moves to the front and the next read appends. */
#define WALK_PIECE ((size_t)1 << 20)

static int walk_fd(fc_audit_src *s, fc_audit_report *r, fc_audit_each each, void *ctx) {
  walker w;
  walker_init(&w, r, each, ctx);
  w.build = s->build;
  w.each_unbuilt = s->each_unbuilt;
  char *buf = malloc(WALK_PIECE);
  uint64_t pos = 0; /* file offset of buf[0]: the start of a line */
  size_t have = 0, torn = 0; /* torn: the awaited line's bytes when last read */
  int tries = 0, rc = FEDC_OK;
  if (!buf) return FEDC_ERR_NOMEM;
  for (;;) {
    size_t want = WALK_PIECE - have;
    if (s->limit - pos - have < want) want = (size_t)(s->limit - pos - have);
    ssize_t got = want ? pread(s->fd, buf + have, want, (off_t)(pos + have)) : 0;
    if (got < 0 && errno == EINTR) continue;
    if (got < 0 && tries) { /* re-reading the torn line failed: it stays torn, and counts in extent (a second
                               walk to it must find it torn too: a review) */
      if (have < torn) have = torn;
      rc = walk_torn(&w);
      break;
    }
    if (got < 0) {
      snprintf(s->err, sizeof s->err, "read failed at byte %llu: %s", (unsigned long long)(pos + have),
               strerror(errno));
      rc = FEDC_ERR_IO;
      break;
    }
    if (got == 0) {
      if (have == 0) break; /* the end, at a record's end */
      /* A last line without its newline. Read it again from where it starts
       * (what is there now: a torn line a restarting coordinator cut off and
       * wrote over is not spliced to the new bytes), unless the file shrank
       * below it (then what was read is reported). */
      struct stat st;
      if (want && s->wait_torn && s->limit == UINT64_MAX && tries < 5 && fstat(s->fd, &st) == 0 &&
          (uint64_t)st.st_size >= pos) {
        tries++;
        nanosleep(&(struct timespec){0, 50 * 1000 * 1000}, NULL);
        torn = have;
        have = 0;
        continue;
      }
      rc = walk_torn(&w);
      break;
    }
    have += (size_t)got;
    size_t off = 0;
    const char *nl;
    while ((nl = memchr(buf + off, '\n', have - off)) != NULL) {
      size_t n = (size_t)(nl - (buf + off));
      if ((rc = walk_line(&w, buf + off, n, pos + off + n + 1)) != FEDC_OK) goto out;
      off += n + 1;
      if (tries) { /* the torn line, now whole: the walk ends with it (no chasing a live writer) */
        pos += off;
        have = 0;
        goto out;
      }
    }
    if (have - off > FC_AUDIT_MAX_LINE) { /* longer than any record: not one being written */
      rc = report(r, w.lineno + 1, "not an audit record (no newline in %zu bytes)", have - off);
      break;
    }
    memmove(buf, buf + off, have - off);
    pos += off;
    have -= off;
  }
out:
  s->extent = pos + have;
  free(buf);
  return rc;
}

int fc_audit_walk_src(fc_audit_src *s, fc_audit_report *r, fc_audit_each each, void *ctx) {
  s->err[0] = 0;
  /* Never an empty, intact log by mistake: a file source with no file, or
   * {.fd = n} made without the macros (not a buffer either). */
  if (s->from_fd ? s->fd < 0 : !s->buf && s->len == 0 && s->fd != -1) {
    memset(r, 0, sizeof *r);
    snprintf(s->err, sizeof s->err, "%s", s->from_fd ? "no log open" : "a log source made without FC_AUDIT_SRC_FD");
    return FEDC_ERR_IO;
  }
  if (!s->from_fd) {
    s->extent = s->len;
    return fc_audit_walk(s->buf, s->len, r, each, ctx);
  }
  return walk_fd(s, r, each, ctx);
}

int fc_audit_open_log(const char *state_dir, int *fd, char *err, size_t errlen) {
  char path[1100];
  struct stat st;
  snprintf(path, sizeof path, "%s/%s", state_dir, FC_AUDIT_FILE);
  *fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK | O_NOFOLLOW);
  if (*fd < 0) {
    int e = errno;
    snprintf(err, errlen, "cannot read %s: %s", path, e == ENOENT ? "no such file" : strerror(e));
    return e == ENOENT ? FEDC_ERR_NOT_FOUND : FEDC_ERR_IO;
  }
  if (fstat(*fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    snprintf(err, errlen, "cannot read %s: not a regular file", path);
    close(*fd);
    *fd = -1;
    return FEDC_ERR_IO;
  }
  return FEDC_OK;
}

/* ---- the writer ---- */

static size_t fp_slot(const fc_audit *a, const uint8_t fp[32]) {
  static const uint8_t empty[32];
  uint64_t h;
  memcpy(&h, fp, sizeof h);
  size_t i = (size_t)(h % a->capseen);
  while (memcmp(a->seen[i], empty, 32) != 0 && memcmp(a->seen[i], fp, 32) != 0) i = (i + 1) % a->capseen;
  return i;
}

/* 1 if fp was new (and is now remembered), 0 if seen, -1 out of memory. */
static int fp_add(fc_audit *a, const uint8_t fp[32]) {
  static const uint8_t empty[32];
  if (memcmp(fp, empty, 32) == 0) return 0; /* no certificate (insecure test server) */
  if ((a->nseen + 1) * 2 > a->capseen) {
    size_t cap = a->capseen ? a->capseen * 2 : 256;
    uint8_t(*old)[32] = a->seen;
    size_t oldcap = a->capseen;
    if (!(a->seen = calloc(cap, 32))) {
      a->seen = old;
      return -1;
    }
    a->capseen = cap;
    for (size_t i = 0; i < oldcap; i++)
      if (memcmp(old[i], empty, 32) != 0) memcpy(a->seen[fp_slot(a, old[i])], old[i], 32);
    free(old);
  }
  size_t i = fp_slot(a, fp);
  if (memcmp(a->seen[i], fp, 32) == 0) return 0;
  memcpy(a->seen[i], fp, 32);
  a->nseen++;
  return 1;
}

/* fc_audit_walk's callback at open: a contact record's certificate is known. */
static int remember_contact(json_t *rec, const char *line, size_t n, void *ctx) {
  (void)line;
  (void)n;
  const char *k = json_string_value(json_object_get(rec, "kind"));
  const char *fph = json_string_value(json_object_get(rec, "cert_sha256"));
  uint8_t fp[32];
  if (k && strcmp(k, "contact") == 0 && fph && fc_unhex(fph, fp, sizeof fp) == 0 && fp_add(ctx, fp) < 0)
    return FEDC_ERR_NOMEM;
  return FEDC_OK;
}

static int audit_open(const char *state_dir, int lock, fc_audit **out, char *why, size_t whylen);

int fc_audit_open(const char *state_dir, fc_audit **out, char *why, size_t whylen) {
  return audit_open(state_dir, 1, out, why, whylen);
}

int fc_audit_open_replica(const char *state_dir, int (*may_write)(void *), void *arg, fc_audit **out, char *why,
                          size_t whylen) {
  int rc = audit_open(state_dir, 0, out, why, whylen);
  if (rc == FEDC_OK) {
    (*out)->may_write = may_write;
    (*out)->may_write_arg = arg;
  }
  return rc;
}

static int audit_open(const char *state_dir, int lock, fc_audit **out, char *why, size_t whylen) {
  fc_audit *a = calloc(1, sizeof *a);
  if (!a) return FEDC_ERR_NOMEM;
  pthread_mutex_init(&a->mu, NULL);
  snprintf(a->path, sizeof a->path, "%s/%s", state_dir, FC_AUDIT_FILE);
  memcpy(a->head, zeros, sizeof a->head);
  a->fd = open(a->path, O_RDWR | O_CREAT | O_APPEND | O_CLOEXEC | O_NOFOLLOW, 0600);
  /* One writer: a second coordinator on this state directory would fork the
   * chain (and overwrite the rest of the state). The lock goes with the fd. */
  if (lock && a->fd >= 0 && flock(a->fd, LOCK_EX | LOCK_NB) != 0) {
    snprintf(why, whylen, "%s is locked: another coordinator is running on this state directory", a->path);
    close(a->fd);
    a->fd = -1;
    fc_audit_close(a);
    return FEDC_ERR_REJECTED;
  }
  if (a->fd < 0) {
    snprintf(why, whylen, "cannot open %s: %s", a->path, strerror(errno));
    fc_audit_close(a);
    return FEDC_ERR_IO;
  }
  /* One pass, streamed (memory does not grow with the log): check the
   * chain and remember whose first contact is on record. */
  fc_audit_src src = FC_AUDIT_SRC_FD(a->fd);
  fc_audit_report r;
  static const char *const contacts[] = {"contact", NULL};
  src.build = contacts; /* the rest chain-checked without a tree (audit_shape.h): 7x faster */
  int rc = fc_audit_walk_src(&src, &r, remember_contact, a);
  if (rc == FEDC_ERR_NOMEM || rc == FEDC_ERR_IO) {
    snprintf(why, whylen, "cannot read %s: %s", a->path, rc == FEDC_ERR_IO ? src.err : "out of memory");
    goto fail;
  }
  if (rc != FEDC_OK) {
    /* A torn last line is a crash mid-append: its action never happened. */
    if (!r.torn) {
      snprintf(why, whylen, "audit log %s is broken at line %llu: %s (`fedc audit verify` shows it; the log is "
                            "evidence: keep it and start from a copy of the state without it only deliberately)",
               a->path, (unsigned long long)r.bad_line, r.problem);
      rc = FEDC_ERR_INVALID;
      goto fail;
    }
    FC_WARN(MOD, "%s: cutting off an incomplete last record (%llu bytes; a crash mid-write)", a->path,
            (unsigned long long)(src.extent - r.valid_bytes));
    if (ftruncate(a->fd, (off_t)r.valid_bytes) != 0) {
      snprintf(why, whylen, "cannot cut the torn record off %s: %s", a->path, strerror(errno));
      rc = FEDC_ERR_IO;
      goto fail;
    }
  }
  a->seq = r.records;
  if (r.records) memcpy(a->head, r.head, sizeof a->head);
  *out = a;
  return FEDC_OK;
fail:
  fc_audit_close(a);
  return rc;
}

void fc_audit_close(fc_audit *a) {
  if (!a) return;
  if (a->fd >= 0) {
    fsync(a->fd);
    close(a->fd);
  }
  pthread_mutex_destroy(&a->mu);
  free(a->seen);
  free(a);
}

static int append_locked(fc_audit *a, const char *kind, json_t *fields) {
  if (a->may_write && !a->may_write(a->may_write_arg)) return FEDC_ERR_STOPPED;
  json_t *o = json_object();
  int rc = FEDC_ERR_NOMEM;
  char *s = NULL;
  if (!o || json_object_set_new(o, "seq", json_integer((json_int_t)(a->seq + 1))) ||
      json_object_set_new(o, "ts_ms", json_integer((json_int_t)fc_now_ms())) ||
      json_object_set_new(o, "kind", json_string(kind)))
    goto out;
  const char *key;
  json_t *v;
  json_object_foreach(fields, key, v) {
    if (fc_audit_reserved_key(key)) continue;
    if (json_object_set(o, key, v)) goto out;
  }
  if (json_object_set_new(o, "prev", json_string(a->head)) ||
      !(s = json_dumps(o, JSON_COMPACT | JSON_PRESERVE_ORDER | JSON_ENSURE_ASCII)))
    goto out;
  size_t n = strlen(s);
  if (n < 2 || n + sizeof HASH_KEY + 64 + 3 > FC_AUDIT_MAX_LINE) {
    rc = FEDC_ERR_TOO_LARGE;
    goto out;
  }
  char *line = malloc(n + sizeof HASH_KEY + 64 + 3);
  if (!line) goto out;
  uint8_t d[FC_SHA256_LEN];
  char hex[65];
  n--; /* without the closing brace */
  memcpy(line, s, n);
  fc_sha256(line, n, d);
  fc_hex(d, sizeof d, hex);
  int len = snprintf(line + n, sizeof HASH_KEY + 64 + 3, "%s%s\"}\n", HASH_KEY, hex);
  size_t total = n + (size_t)len, done = 0;
  rc = FEDC_OK;
  while (done < total) {
    ssize_t w = write(a->fd, line + done, total - done);
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) {
      rc = FEDC_ERR_IO;
      break;
    }
    done += (size_t)w;
  }
  if (rc == FEDC_OK) {
    a->seq++;
    memcpy(a->head, hex, sizeof a->head);
  } else if (done) {
    /* Never leave half a record for the next one to be glued to. */
    struct stat sb;
    if (fstat(a->fd, &sb) == 0 && ftruncate(a->fd, sb.st_size - (off_t)done) != 0)
      FC_ERROR(MOD, "%s: cannot cut off a partial record: %s", a->path, strerror(errno));
  }
  free(line);
out:
  if (rc != FEDC_OK) FC_ERROR(MOD, "%s: cannot append a %s record: %s", a->path, kind, fedc_strerror(rc));
  free(s);
  json_decref(o);
  return rc;
}

int fc_audit_append(fc_audit *a, const char *kind, json_t *fields) {
  if (!a) {
    json_decref(fields);
    return FEDC_OK;
  }
  pthread_mutex_lock(&a->mu);
  int rc = append_locked(a, kind, fields);
  pthread_mutex_unlock(&a->mu);
  json_decref(fields);
  return rc;
}

int fc_audit_contact(fc_audit *a, const char *name, const char *role, const uint8_t cert_sha256[32],
                     const char *addr) {
  if (!a) return FEDC_OK;
  pthread_mutex_lock(&a->mu);
  int added = fp_add(a, cert_sha256), rc = FEDC_OK;
  if (added > 0) {
    char hex[65];
    json_t *f = json_pack("{s:s,s:s,s:s,s:s}", "name", name, "role", role, "cert_sha256",
                          fc_hex(cert_sha256, 32, hex), "addr", addr);
    rc = f ? append_locked(a, "contact", f) : FEDC_ERR_NOMEM;
    json_decref(f);
  }
  pthread_mutex_unlock(&a->mu);
  return added < 0 ? FEDC_ERR_NOMEM : rc;
}

int fc_audit_sync(fc_audit *a) {
  if (!a) return FEDC_OK;
  return fdatasync(a->fd) == 0 ? FEDC_OK : FEDC_ERR_IO;
}

uint64_t fc_audit_head(fc_audit *a, char hex[65]) {
  pthread_mutex_lock(&a->mu);
  uint64_t n = a->seq;
  memcpy(hex, a->head, 65);
  pthread_mutex_unlock(&a->mu);
  return n;
}

uint64_t fc_audit_bytes(fc_audit *a) {
  if (!a) return 0;
  struct stat sb;
  pthread_mutex_lock(&a->mu);
  int ok = fstat(a->fd, &sb) == 0;
  pthread_mutex_unlock(&a->mu);
  return ok && sb.st_size > 0 ? (uint64_t)sb.st_size : 0;
}
