/*
 * clock.c - see clock.h.
 */
#include "common/clock.h"

uint64_t fc_now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

double fc_mono_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

void fc_deadline_after_ms(struct timespec *ts, uint64_t ms) {
  clock_gettime(CLOCK_REALTIME, ts);
  ts->tv_sec += (time_t)(ms / 1000);
  ts->tv_nsec += (long)(ms % 1000) * 1000000L;
  if (ts->tv_nsec >= 1000000000L) {
    ts->tv_sec++;
    ts->tv_nsec -= 1000000000L;
  }
}

void fc_rate_guard_start(fc_rate_guard *g, uint64_t now_ms) {
  g->start_ms = now_ms;
  g->win_ms = 0; /* the first window opens when the grace ends */
  g->win_bytes = 0;
}

int fc_rate_guard_too_slow(fc_rate_guard *g, uint64_t now_ms, uint64_t bytes, uint64_t min_bps, uint64_t grace_ms) {
  if (!min_bps || now_ms < g->start_ms + grace_ms) return 0;
  if ((double)bytes < (double)min_bps * (double)(now_ms - g->start_ms - grace_ms) / 1000.0) return 1;
  if (!g->win_ms) { /* the grace's bytes count toward the first window */
    g->win_ms = g->start_ms + grace_ms;
    g->win_bytes = 0;
  }
  if (now_ms < g->win_ms + grace_ms) return 0;
  uint64_t moved = bytes > g->win_bytes ? bytes - g->win_bytes : 0;
  if ((double)moved < (double)min_bps / 4 * (double)(now_ms - g->win_ms) / 1000.0) return 1;
  g->win_ms = now_ms;
  g->win_bytes = bytes;
  return 0;
}
