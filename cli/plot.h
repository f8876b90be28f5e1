/*
 * plot.h - drawing with gnuplot, shared by `fedc sim` (sim_output.c) and
 * `fedc rounds --plot` (rounds_view.c): quoting text into a gnuplot script,
 * and running gnuplot on a script without a shell.
 * Internal to the CLI.
 */
#ifndef FEDC_CLI_PLOT_H
#define FEDC_CLI_PLOT_H

#include <stddef.h>

/* s as the inside of a gnuplot single-quoted string ('' is a quote; control
 * characters dropped), at most len - 1 bytes. */
void cli_gp_quote(const char *s, char *out, size_t len);
/* `gnuplot SCRIPT` in directory dir, its output to /dev/null, no shell (the
 * folder and titles never pass through one). 0, or -1 with why: "gnuplot is
 * not installed" or "gnuplot failed". */
int cli_gnuplot(const char *dir, const char *script, const char **why);

#endif
