/*
 * status_async.h - the asynchronous-mode part of `fedc status` and `fedc
 * rounds` (StatusResponse.async, RoundRecord.async; coordinator/
 * engine_async.c). Internal to the CLI; calls nothing else of cli/.
 */
#ifndef FEDC_CLI_STATUS_ASYNC_H
#define FEDC_CLI_STATUS_ASYNC_H

#include <jansson.h>
#include <stddef.h>

#include "fedc/v1/fedc.pb-c.h"

/* Add "async" to the status object o (nothing in sync mode). */
void status_async_json(json_t *o, const Fedc__V1__AsyncStatus *a);
/* The text lines: concurrency, buffer fill, staleness histogram (nothing in sync mode). */
void status_async_print(const Fedc__V1__AsyncStatus *a);
/* A buffer record's "async" object. */
json_t *round_async_json(const Fedc__V1__RoundAsync *a);
/* "3/1/0/0/0/0/0": a buffer's staleness histogram, "-" for a sync round. */
const char *round_async_cell(const Fedc__V1__RoundRecord *r, char *buf, size_t len);

#endif
