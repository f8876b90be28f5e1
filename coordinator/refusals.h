/*
 * refusals.h - refusals counted for the audit log, per identity and interval
 * (I/O-free: time comes in as now_ms, records go out through a callback;
 * thread-safe: one mutex).
 *
 * An identity's first `detailed` refusals in an interval are recorded in
 * full by the caller (the evidence: what was refused and why); the rest are
 * counted, and when the interval ends (or at shutdown) one `refusals` record
 * per identity carries the counts:
 *
 *   client     the identity ("*": the identities past max_ids, or all of
 *              them when detail is off at the flush)
 *   from_ms    the interval, wall clock ms
 *   to_ms
 *   refused    refusals in the interval
 *   recorded   of them, recorded in full
 *   by_reason  {"invalid": n, "precondition": n, "late": n, "limit": n,
 *              "other": n, "calls": n} (zeros left out; "calls": calls over
 *              the identity's call rate, never recorded in full)
 *   identities (client "*" with detail off) identities it covers, those
 *              past max_ids not included
 *
 * So an identity refused without end costs the log at most detailed + 1
 * records per interval. With detail off (the audit log's disk budget is
 * spent) nothing is recorded in full and an interval costs one record.
 */
#ifndef FEDC_COORD_REFUSALS_H
#define FEDC_COORD_REFUSALS_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

/* Why a call was refused (by_reason keys, in this order). */
enum { FC_RF_INVALID, FC_RF_PRECONDITION, FC_RF_LATE, FC_RF_LIMIT, FC_RF_OTHER, FC_RF_CALLS, FC_RF_N };
const char *fc_refusal_reason_name(int reason);

typedef struct fc_refusals_cfg {
  uint64_t interval_ms; /* counts are written per interval */
  uint32_t detailed;    /* refusals per identity and interval recorded in full */
  uint32_t max_ids;     /* identities counted one by one per interval; the rest under "*" */
} fc_refusals_cfg;

typedef struct fc_refusals fc_refusals;

int fc_refusals_create(const fc_refusals_cfg *cfg, uint64_t now_ms, fc_refusals **out);
void fc_refusals_destroy(fc_refusals *r);
/* A refusal of `client` for `reason` at now_ms. 1: record this one in full;
 * 0: it was counted. FC_RF_CALLS is always counted. */
int fc_refusals_note(fc_refusals *r, const char *client, int reason, uint64_t now_ms);
/* Detail on (1, the default) or off (0): see the file comment. */
void fc_refusals_set_detail(fc_refusals *r, int on);
/* Records to write: once the interval is over (or at once if force), each
 * `refusals` record's fields go to emit (which owns the reference), and the
 * next interval starts. Returns how many. Called without the caller's locks
 * that emit takes. */
typedef void (*fc_refusals_emit)(json_t *fields, void *ctx);
size_t fc_refusals_flush(fc_refusals *r, uint64_t now_ms, int force, fc_refusals_emit emit, void *ctx);
/* Refusals counted and not recorded in full, since creation. */
uint64_t fc_refusals_counted(fc_refusals *r);

#endif
