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

#endif
