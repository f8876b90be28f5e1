/*
 * log.c - line logger. See log.h. Level checks are a relaxed atomic load so
 * disabled debug lines cost nothing measurable on hot paths.
 */
#include "common/log.h"

#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static atomic_int g_level = FC_LOG_INFO;
static fc_log_sink g_sink;
static void *g_sink_ctx;

static const char *level_name[] = {"DEBUG", "INFO", "WARN", "ERROR"};

void fc_log_set_level(int level) { atomic_store(&g_level, level); }
int fc_log_get_level(void) { return atomic_load(&g_level); }

int fc_log_parse_level(const char *s) {
  static const char *names[] = {"debug", "info", "warn", "error", "off"};
  for (int i = 0; i < 5; i++)
    if (s && strcmp(s, names[i]) == 0) return i;
  return -1;
}

void fc_log_set_sink(fc_log_sink sink, void *ctx) {
  g_sink = sink;
  g_sink_ctx = ctx;
}

void fc_log(int level, const char *module, const char *fmt, ...) {
  if (level < atomic_load_explicit(&g_level, memory_order_relaxed) || level > FC_LOG_ERROR) return;
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
  if (n > 0 && (size_t)n < sizeof line) n += vsnprintf(line + n, sizeof line - (size_t)n, fmt, ap);
  va_end(ap);
  if (n < 0) return;
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
