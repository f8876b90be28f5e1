/*
 * log.c - line logger. See log.h. Level checks are a relaxed atomic load so
 * disabled debug lines cost nothing measurable on hot paths.
 *
 * Warnings and errors are rate-limited per call site (its format string):
 * a peer that can make the coordinator warn must not be able to flood the
 * log (one identity holding 8 stalled calls made 12,189 lines in 12 s). Each
 * site has a token bucket (FC_LOG_BURST lines, refilled at FC_LOG_RATE per
 * second); a line past it is counted, and the next line the site may print
 * says how many were suppressed. Info and debug lines are not limited: they
 * come from the coordinator's own progress, not from what a peer sends.
 *
 * Whatever a message quotes, it stays one line that moves no cursor: the
 * text form passes the formatted message through fc_text_escape (a format
 * string cannot tell which of its %s a peer controls, so all of it is
 * escaped; fedc's own messages are printable text and come out unchanged),
 * the JSON form escapes it as JSON. A client that named a tensor
 * "w\n<timestamp> INFO admin: ...\x1b[31m" printed a forged line and a raw
 * ESC before (security review, finding 6).
 */
#include "common/log.h"

#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static atomic_int g_level = FC_LOG_INFO;

#define FC_LOG_RATE 10.0  /* lines per second per call site, sustained */
#define FC_LOG_BURST 50.0 /* lines per call site at once */
#define FC_LOG_SITES 256  /* distinct rate-limited call sites tracked */

typedef struct log_site {
  const char *fmt; /* the call site's format string (static storage) */
  double tokens;
  double last;     /* CLOCK_MONOTONIC seconds of the last refill */
  unsigned long suppressed;
} log_site;

static pthread_mutex_t g_sites_mu = PTHREAD_MUTEX_INITIALIZER;
static log_site g_sites[FC_LOG_SITES];

/* May the site print now? Sets *suppressed to the lines it dropped since it
 * last printed. A full table lets every untracked site print (never hide a
 * message because of the limiter's own limit). */
static int site_admit(const char *fmt, unsigned long *suppressed) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  double now = (double)ts.tv_sec + ts.tv_nsec * 1e-9;
  size_t h = ((uintptr_t)fmt >> 3) % FC_LOG_SITES;
  int ok = 1;
  *suppressed = 0;
  pthread_mutex_lock(&g_sites_mu);
  for (size_t i = 0; i < FC_LOG_SITES; i++) {
    log_site *s = &g_sites[(h + i) % FC_LOG_SITES];
    if (s->fmt && s->fmt != fmt) continue;
    if (!s->fmt) {
      s->fmt = fmt;
      s->tokens = FC_LOG_BURST;
      s->last = now;
    }
    s->tokens += (now - s->last) * FC_LOG_RATE;
    if (s->tokens > FC_LOG_BURST) s->tokens = FC_LOG_BURST;
    s->last = now;
    if (s->tokens >= 1) {
      s->tokens -= 1;
      *suppressed = s->suppressed;
      s->suppressed = 0;
    } else {
      s->suppressed++;
      ok = 0;
    }
    break;
  }
  pthread_mutex_unlock(&g_sites_mu);
  return ok;
}
static fc_log_sink g_sink;
static void *g_sink_ctx;
static atomic_int g_json;

static const char *level_name[] = {"DEBUG", "INFO", "WARN", "ERROR"};

void fc_log_set_level(int level) { atomic_store(&g_level, level); }
int fc_log_get_level(void) { return atomic_load(&g_level); }

int fc_log_parse_level(const char *s) {
  static const char *names[] = {"debug", "info", "warn", "error", "off"};
  for (int i = 0; i < 5; i++)
    if (s && strcmp(s, names[i]) == 0) return i;
  return -1;
}

void fc_log_set_json(int on) { atomic_store(&g_json, on); }

/* s as the inside of a JSON string: quotes, backslashes, control characters,
 * DEL and every byte >= 0x80 escaped (a message may quote bytes a peer sent;
 * the line stays valid JSON whatever they were). Returns bytes written. */
static size_t json_escape(char *out, size_t cap, const char *s) {
  static const char hex[] = "0123456789abcdef";
  size_t n = 0;
  for (; *s && n + 7 < cap; s++) {
    unsigned char c = (unsigned char)*s;
    if (c == '"' || c == '\\') {
      out[n++] = '\\';
      out[n++] = (char)c;
    } else if (c < 0x20 || c >= 0x7F) {
      n += (size_t)snprintf(out + n, cap - n, "\\u00%c%c", hex[c >> 4], hex[c & 15]);
    } else {
      out[n++] = (char)c;
    }
  }
  out[n] = 0;
  return n;
}

/* ---- text escaping (log.h) ---- */

/* Length of the valid UTF-8 sequence at s (n bytes left), its code point in
 * *cp; 0 if the bytes there are not one (overlong forms, surrogates and code
 * points past U+10FFFF are invalid too). */
static size_t utf8_seq(const unsigned char *s, size_t n, uint32_t *cp) {
  unsigned char c = s[0];
  size_t len;
  uint32_t v, min;
  if (c >= 0xC2 && c <= 0xDF) {
    len = 2, v = c & 0x1F, min = 0x80;
  } else if (c >= 0xE0 && c <= 0xEF) {
    len = 3, v = c & 0x0F, min = 0x800;
  } else if (c >= 0xF0 && c <= 0xF4) {
    len = 4, v = c & 0x07, min = 0x10000;
  } else {
    return 0;
  }
  if (len > n) return 0;
  for (size_t i = 1; i < len; i++) {
    if ((s[i] & 0xC0) != 0x80) return 0;
    v = (v << 6) | (s[i] & 0x3F);
  }
  if (v < min || v > 0x10FFFF || (v >= 0xD800 && v <= 0xDFFF)) return 0;
  *cp = v;
  return len;
}

/* Code points a terminal acts on or that reorder or break what is shown. */
static int cp_unsafe(uint32_t cp) {
  return (cp >= 0x80 && cp <= 0x9F) || cp == 0x200E || cp == 0x200F || cp == 0x2028 || cp == 0x2029 ||
         (cp >= 0x202A && cp <= 0x202E) || (cp >= 0x2066 && cp <= 0x2069);
}

char *fc_text_escape(char *out, size_t cap, const char *str, size_t n) {
  if (!cap) return out;
  const unsigned char *s = (const unsigned char *)(str ? str : "");
  if (!str) n = 0;
  else if (n == (size_t)-1) n = strlen(str);
  size_t o = 0;
  for (size_t i = 0; i < n;) {
    char piece[8];
    size_t plen, adv = 1;
    uint32_t cp;
    unsigned char c = s[i];
    if (c == '\\') {
      plen = 2, piece[0] = piece[1] = '\\';
    } else if (c >= 0x20 && c < 0x7F) {
      plen = 1, piece[0] = (char)c;
    } else if (c == '\n' || c == '\r' || c == '\t') {
      plen = 2, piece[0] = '\\', piece[1] = c == '\n' ? 'n' : c == '\r' ? 'r' : 't';
    } else if (c >= 0x80 && (adv = utf8_seq(s + i, n - i, &cp)) != 0) {
      if (cp_unsafe(cp)) {
        plen = (size_t)snprintf(piece, sizeof piece, "\\u%04x", (unsigned)cp);
      } else {
        plen = adv;
        memcpy(piece, s + i, adv);
      }
    } else {
      adv = 1; /* C0, DEL, a byte of invalid UTF-8 */
      plen = (size_t)snprintf(piece, sizeof piece, "\\x%02x", c);
    }
    if (o + plen >= cap) break; /* whole escapes only */
    memcpy(out + o, piece, plen);
    o += plen;
    i += adv;
  }
  out[o] = 0;
  return out;
}

void fc_log_set_sink(fc_log_sink sink, void *ctx) {
  g_sink = sink;
  g_sink_ctx = ctx;
}

void fc_log(int level, const char *module, const char *fmt, ...) {
  if (level < atomic_load_explicit(&g_level, memory_order_relaxed) || level > FC_LOG_ERROR) return;
  unsigned long suppressed = 0;
  if (level >= FC_LOG_WARN && !site_admit(fmt, &suppressed)) return;
  char line[2048], msg[1536];
  struct timespec ts;
  struct tm tm;
  clock_gettime(CLOCK_REALTIME, &ts);
  gmtime_r(&ts.tv_sec, &tm);
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(msg, sizeof msg, fmt, ap);
  va_end(ap);
  int n;
  if (atomic_load_explicit(&g_json, memory_order_relaxed) && !g_sink) {
    /* One JSON object per line, stable fields: ts, level, module, msg
     * (and suppressed when the rate limit dropped lines). */
    static const char *lv[] = {"debug", "info", "warn", "error"};
    char esc[1800], mod[64]; /* esc + the rest always fit in line */
    json_escape(esc, sizeof esc, msg);
    json_escape(mod, sizeof mod, module);
    n = snprintf(line, sizeof line, "{\"ts\":\"%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ\",\"level\":\"%s\",\"module\":\"%s\",\"msg\":\"%s\"",
                 tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, ts.tv_nsec / 1000000L,
                 lv[level], mod, esc);
    if (n < 0) return;
    if (suppressed) n += snprintf(line + n, sizeof line - (size_t)n, ",\"suppressed\":%lu", suppressed);
    n += snprintf(line + n, sizeof line - (size_t)n, "}\n");
    ssize_t w = write(STDERR_FILENO, line, (size_t)n);
    (void)w;
    return;
  }
  n = snprintf(line, sizeof line, "%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ %-5s %s: ", tm.tm_year + 1900, tm.tm_mon + 1,
               tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, ts.tv_nsec / 1000000L, level_name[level], module);
  if (n < 0 || (size_t)n >= sizeof line - 64) return;
  /* The message may quote what a peer sent (a name, a reason, a method):
   * escaped whole, it stays one line and moves no terminal cursor. Room is
   * kept for the suppressed count and the newline. */
  fc_text_escape(line + n, sizeof line - 64 - (size_t)n, msg, (size_t)-1);
  n += (int)strlen(line + n);
  if (suppressed) n += snprintf(line + n, sizeof line - 1 - (size_t)n, " (and %lu similar lines suppressed)", suppressed);
  if ((size_t)n >= sizeof line - 1) n = (int)sizeof line - 2;
  line[n++] = '\n';
  line[n] = 0;
  if (g_sink) {
    line[n - 1] = 0;
    g_sink(level, line, g_sink_ctx);
    return;
  }
  ssize_t w = write(STDERR_FILENO, line, (size_t)n);
  (void)w;
}
