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

/* s as the inside of a JSON string: quotes, backslashes, control characters
 * and every byte >= 0x80 escaped (a message may quote bytes a peer sent;
 * the line stays valid JSON whatever they were). Returns bytes written. */
static size_t json_escape(char *out, size_t cap, const char *s) {
  static const char hex[] = "0123456789abcdef";
  size_t n = 0;
  for (; *s && n + 7 < cap; s++) {
    unsigned char c = (unsigned char)*s;
    if (c == '"' || c == '\\') {
      out[n++] = '\\';
      out[n++] = (char)c;
    } else if (c < 0x20 || c >= 0x80) {
      n += (size_t)snprintf(out + n, cap - n, "\\u00%c%c", hex[c >> 4], hex[c & 15]);
    } else {
      out[n++] = (char)c;
    }
  }
  out[n] = 0;
  return n;
}

void fc_log_set_sink(fc_log_sink sink, void *ctx) {
  g_sink = sink;
  g_sink_ctx = ctx;
}

void fc_log(int level, const char *module, const char *fmt, ...) {
  if (level < atomic_load_explicit(&g_level, memory_order_relaxed) || level > FC_LOG_ERROR) return;
  unsigned long suppressed = 0;
  if (level >= FC_LOG_WARN && !site_admit(fmt, &suppressed)) return;
  char line[2048];
  struct timespec ts;
  struct tm tm;
  clock_gettime(CLOCK_REALTIME, &ts);
  gmtime_r(&ts.tv_sec, &tm);
  int n = snprintf(line, sizeof line, "%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ %-5s %s: ", tm.tm_year + 1900,
                   tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, ts.tv_nsec / 1000000L,
                   level_name[level], module);
  va_list ap;
  va_start(ap, fmt);
  if (atomic_load_explicit(&g_json, memory_order_relaxed) && !g_sink) {
    /* One JSON object per line, stable fields: ts, level, module, msg
     * (and suppressed when the rate limit dropped lines). */
    static const char *lv[] = {"debug", "info", "warn", "error"};
    char msg[1536], esc[1800], mod[64]; /* esc + the rest always fit in line */
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
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
  if (n > 0 && (size_t)n < sizeof line) n += vsnprintf(line + n, sizeof line - (size_t)n, fmt, ap);
  va_end(ap);
  if (n < 0) return;
  if (suppressed && (size_t)n < sizeof line)
    n += snprintf(line + n, sizeof line - (size_t)n, " (and %lu similar lines suppressed)", suppressed);
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
