/*
 * cli_common.h - pieces every subcommand shares: the TLS identity flags
 * (--pki DIR --name N, or --ca/--cert/--key), JSON printing, and a
 * progress line for long runs.
 *
 * TLS flags: with --pki DIR the files are DIR/ca.crt and
 * DIR/<role>-<name>.crt/.key (as `fedc pki issue` writes them); explicit
 * --ca/--cert/--key override.
 */
#ifndef FEDC_CLI_COMMON_H
#define FEDC_CLI_COMMON_H

#include <getopt.h>
#include <stdio.h>
#include <jansson.h>

#include "common/log.h"

/* What a peer sent (the coordinator's status details, reasons and names,
 * a record's fields), escaped for the terminal into buf, an array
 * (fc_text_escape: no control characters, ESC or invalid UTF-8 reach it). */
#define CLI_SHOWN(buf, s) fc_text_escape(buf, sizeof buf, s, (size_t)-1)

#ifndef FEDC_VERSION_STRING
#define FEDC_VERSION_STRING "0.1.0" /* keep in step with project(VERSION) in CMakeLists.txt */
#endif

typedef struct cli_tls {
  char pki[512];
  char name[65];
  char ca[512], cert[512], key[512];
  char coordinator[256];
  int insecure;
} cli_tls;

/* getopt_long option ids for the shared flags (above any subcommand's own). */
enum {
  CLI_OPT_PKI = 1000,
  CLI_OPT_NAME,
  CLI_OPT_CA,
  CLI_OPT_CERT,
  CLI_OPT_KEY,
  CLI_OPT_COORDINATOR,
  CLI_OPT_INSECURE,
};

#define CLI_TLS_LONGOPTS                                                                               \
  {"pki", required_argument, 0, CLI_OPT_PKI}, {"name", required_argument, 0, CLI_OPT_NAME},            \
      {"ca", required_argument, 0, CLI_OPT_CA}, {"cert", required_argument, 0, CLI_OPT_CERT},          \
      {"key", required_argument, 0, CLI_OPT_KEY}, {"coordinator", required_argument, 0, CLI_OPT_COORDINATOR}, \
      {"insecure-for-testing", no_argument, 0, CLI_OPT_INSECURE}

#define CLI_TLS_HELP                                                                                   \
  "  --coordinator HOST:PORT  coordinator address (default 127.0.0.1:7070)\n"                         \
  "  --pki DIR --name NAME    use DIR/ca.crt and DIR/<role>-NAME.{crt,key}\n"                         \
  "  --ca FILE --cert FILE --key FILE   explicit TLS files (override --pki)\n"                        \
  "  --insecure-for-testing   no TLS (loopback only; identity from --name)\n"

void cli_tls_init(cli_tls *t);
/* Returns 1 if opt was a TLS flag (and stored it). */
int cli_tls_opt(cli_tls *t, int opt, const char *arg);
/* Fill ca/cert/key from --pki/--name for role; 0 ok, else prints an error and returns 2. */
int cli_tls_resolve(cli_tls *t, const char *role, const char *prog);

/*
 * SIGINT/SIGTERM as a stop request, whichever thread the kernel hands them to.
 * Blocking them before starting threads is not enough: OpenBLAS starts its
 * threads in a library constructor, before main(), with nothing blocked, and
 * a process-directed signal that reaches such a thread with the default action
 * kills the process instead of stopping it cleanly. So a handler (any thread)
 * writes the signal number to a pipe, and cli_stop_wait reads it. Also blocks
 * both signals in the calling thread (and so in threads it starts later) and
 * starts a thread of our own that takes them with sigwait() and writes the
 * same pipe: with no OpenBLAS pool threads (one core, OPENBLAS_NUM_THREADS=1)
 * no thread would take them otherwise, and they would stay pending for ever.
 * Call before any other thread starts. Returns 0, or -1 with errno.
 */
int cli_stop_signals_install(void);
/* Wait up to timeout_ms (-1 = forever) for a stop signal: its number, or 0. */
int cli_stop_wait(int timeout_ms);
/* Wake a cli_stop_wait(-1) without a signal (it returns 0). */
void cli_stop_wake(void);

/* Print a JSON value as one line on stdout and free it. */
void cli_print_json(json_t *v);
/* Parse a non-negative integer flag; prints an error naming the flag. 0 ok, 2 bad. */
int cli_parse_u64(const char *prog, const char *flag, const char *s, unsigned long long *out);
int cli_parse_double(const char *prog, const char *flag, const char *s, double *out);
/* getopt_long's '?' or ':' (c; opterr 0 and ':' first in the short options)
 * as one line on stderr, for every subcommand alike: a missing value, a value
 * given to a flag, an ambiguous prefix, or an unknown option with the nearest
 * known one when it looks like a typo:
 *   fedc client: unknown option --partitin (did you mean --partition?); fedc client --help lists them
 * Returns 2 (the usage exit status). */
int cli_option_error(const char *prog, int c, char **argv, const struct option *opts);
/* The option of opts nearest word[0..len) by edit distance, if close enough
 * to be a typo of it (1 to 3 edits, at most a third of the word); else NULL. */
const char *cli_nearest_option(const char *word, size_t len, const struct option *opts);

#endif
