/*
 * status_elig.h - the eligibility and pace-steering part of `fedc status`
 * (StatusResponse.eligibility, protocol 1.8). Internal to the CLI.
 */
#ifndef FEDC_CLI_STATUS_ELIG_H
#define FEDC_CLI_STATUS_ELIG_H

#include <jansson.h>

#include "fedc/v1/fedc.pb-c.h"

/* Add "eligibility" to the status object o (nothing if the coordinator predates 1.8). */
void status_elig_json(json_t *o, const Fedc__V1__EligibilityStatus *e);
/* The text lines; nothing if the coordinator predates 1.8. */
void status_elig_print(const Fedc__V1__EligibilityStatus *e);

#endif
