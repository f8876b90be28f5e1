/*
 * probe_report.h - the one JSON line a test probe prints per step
 * (tests/tools/fedc_probe.c, fedc_agg_probe.c): the status a call ended
 * with against the one wanted, with its detail and retry hint.
 */
#ifndef FEDC_TESTS_PROBE_REPORT_H
#define FEDC_TESTS_PROBE_REPORT_H

#include "transport/transport.h"

/* Prints {"step","code","want","ok","detail","retry_after_ms"}; 1 if the
 * code is the one wanted. */
int probe_report(const char *step, int want_code, const fc_status *st);

#endif
