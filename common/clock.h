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
/* 1 if a transfer begun at started_ms that has moved `bytes` by now_ms is
 * too slow to keep: past a grace of grace_ms it must average min_bps over the
 * time after the grace (a peer trickling one chunk per idle period would
 * otherwise hold its slot and thread for the whole round). min_bps 0: never. */
int fc_transfer_too_slow(uint64_t started_ms, uint64_t now_ms, uint64_t bytes, uint64_t min_bps, uint64_t grace_ms);

#endif
