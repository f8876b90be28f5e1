/*
 * clock.h - the few clock helpers every module needs: wall time in ms (round
 * records, deadlines sent to clients), monotonic seconds (measuring), and an
 * absolute CLOCK_REALTIME deadline for pthread_cond_timedwait.
 */
#ifndef FEDC_COMMON_CLOCK_H
#define FEDC_COMMON_CLOCK_H

#include <stdint.h>
#include <time.h>

uint64_t fc_now_ms(void);   /* CLOCK_REALTIME, ms since the epoch */
double fc_mono_s(void);     /* CLOCK_MONOTONIC, seconds */
/* *ts = now (CLOCK_REALTIME) + ms: the deadline form pthread_cond_timedwait wants. */
void fc_deadline_after_ms(struct timespec *ts, uint64_t ms);
/* The minimum transfer rate of one stream (uploads, downloads, partial
 * sums), checked as its pieces move. Past a grace of grace_ms after
 * fc_rate_guard_start it is too slow if
 *   - it averages under min_bps over the time since the grace ended, or
 *   - a window of grace_ms or more (from the grace's end or the last such
 *     check) moved under a quarter of min_bps x the window: a peer that sends most
 *     of a large transfer at once and then one chunk per idle period would
 *     otherwise keep its average up, its slot and its thread, for hours.
 * A stream that goes silent is the transport's idle cut-off's. min_bps 0:
 * never too slow. */
typedef struct fc_rate_guard {
  uint64_t start_ms, win_ms, win_bytes;
} fc_rate_guard;
void fc_rate_guard_start(fc_rate_guard *g, uint64_t now_ms);
/* bytes: moved since the start. */
int fc_rate_guard_too_slow(fc_rate_guard *g, uint64_t now_ms, uint64_t bytes, uint64_t min_bps, uint64_t grace_ms);

#endif
