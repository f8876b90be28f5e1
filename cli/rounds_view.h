/*
 * rounds_view.h - federated evaluation in `fedc rounds`, and its --plot
 * (rounds_view.c). Internal to the CLI.
 */
#ifndef FEDC_CLI_ROUNDS_VIEW_H
#define FEDC_CLI_ROUNDS_VIEW_H

#include <jansson.h>
#include <stddef.h>

#include "fedc/v1/fedc.pb-c.h"

/* The "eval" object of a round's JSON line. */
json_t *rounds_eval_json(const Fedc__V1__EvalRecord *e);
/* The table's EVAL ACC and EVAL LOSS cells ("-" when not evaluated). */
void rounds_eval_cells(const Fedc__V1__RoundRecord *r, char *acc, char *loss, size_t len);
/* Draw the history into png (a .png name), its script beside it (.gp).
 * 0, or the exit status after a message. */
int rounds_plot(const Fedc__V1__RoundsResponse *resp, const char *png, const char *title);

#endif
