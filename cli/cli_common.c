/*
 * cli_common.c - shared CLI helpers. See cli_common.h.
 */
#include "cli/cli_common.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

void cli_tls_init(cli_tls *t) {
  memset(t, 0, sizeof *t);
  snprintf(t->coordinator, sizeof t->coordinator, "127.0.0.1:7070");
}

int cli_tls_opt(cli_tls *t, int opt, const char *arg) {
  switch (opt) {
  case CLI_OPT_PKI: snprintf(t->pki, sizeof t->pki, "%s", arg); return 1;
  case CLI_OPT_NAME: snprintf(t->name, sizeof t->name, "%s", arg); return 1;
  case CLI_OPT_CA: snprintf(t->ca, sizeof t->ca, "%s", arg); return 1;
  case CLI_OPT_CERT: snprintf(t->cert, sizeof t->cert, "%s", arg); return 1;
  case CLI_OPT_KEY: snprintf(t->key, sizeof t->key, "%s", arg); return 1;
  case CLI_OPT_COORDINATOR: snprintf(t->coordinator, sizeof t->coordinator, "%s", arg); return 1;
  case CLI_OPT_INSECURE: t->insecure = 1; return 1;
  default: return 0;
  }
}

int cli_tls_resolve(cli_tls *t, const char *role, const char *prog) {
  if (t->insecure) return 0;
  if (t->pki[0]) {
    if (!t->ca[0]) snprintf(t->ca, sizeof t->ca, "%s/ca.crt", t->pki);
    if (!t->name[0] && strcmp(role, "coordinator") == 0) snprintf(t->name, sizeof t->name, "coordinator");
    if (t->name[0] && strcmp(role, "coordinator") == 0 && strcmp(t->name, "coordinator") == 0) {
      if (!t->cert[0]) snprintf(t->cert, sizeof t->cert, "%s/coordinator.crt", t->pki);
      if (!t->key[0]) snprintf(t->key, sizeof t->key, "%s/coordinator.key", t->pki);
    } else if (t->name[0]) {
      if (!t->cert[0]) snprintf(t->cert, sizeof t->cert, "%s/%s-%s.crt", t->pki, role, t->name);
      if (!t->key[0]) snprintf(t->key, sizeof t->key, "%s/%s-%s.key", t->pki, role, t->name);
    }
  }
  if (!t->ca[0] || !t->cert[0] || !t->key[0]) {
    fprintf(stderr, "%s: TLS identity needed: --pki DIR --name NAME, or --ca/--cert/--key\n", prog);
    return 2;
  }
  return 0;
}

static int g_stop_pipe[2] = {-1, -1};

static void on_stop_signal(int sig) {
  int saved = errno; /* a handler must not change errno under the interrupted code */
  unsigned char b = (unsigned char)sig;
  if (write(g_stop_pipe[1], &b, 1) < 0) { /* pipe full: a stop is pending anyway */
  }
  errno = saved;
}

/* Takes the signals that every other thread of ours has blocked. Without it
 * a process whose only unblocking threads would be OpenBLAS's pool (none on
 * one core, or with OPENBLAS_NUM_THREADS=1) leaves SIGINT/SIGTERM pending for
 * ever. Lives as long as the process; both signals stay blocked in it. */
static void *stop_signal_thread(void *arg) {
  const sigset_t *set = arg;
  for (;;) {
    int sig = 0;
    if (sigwait(set, &sig) == 0) on_stop_signal(sig);
  }
  return NULL;
}

int cli_stop_signals_install(void) {
  static sigset_t waited;
  static int thread_started;
  if (g_stop_pipe[0] < 0) {
    if (pipe(g_stop_pipe) != 0) return -1;
    for (int i = 0; i < 2; i++) fcntl(g_stop_pipe[i], F_SETFD, FD_CLOEXEC);
    fcntl(g_stop_pipe[1], F_SETFL, O_NONBLOCK);
  }
  struct sigaction sa;
  memset(&sa, 0, sizeof sa);
  sa.sa_handler = on_stop_signal;
  sa.sa_flags = SA_RESTART;
  sigemptyset(&sa.sa_mask);
  if (sigaction(SIGINT, &sa, NULL) != 0 || sigaction(SIGTERM, &sa, NULL) != 0) return -1;
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGINT);
  sigaddset(&set, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &set, NULL);
  if (!thread_started) {
    waited = set;
    pthread_t th;
    pthread_attr_t at;
    pthread_attr_init(&at);
    pthread_attr_setdetachstate(&at, PTHREAD_CREATE_DETACHED);
    int rc = pthread_create(&th, &at, stop_signal_thread, &waited);
    pthread_attr_destroy(&at);
    if (rc != 0) {
      errno = rc;
      return -1;
    }
    thread_started = 1;
  }
  return 0;
}

int cli_stop_wait(int timeout_ms) {
  struct pollfd p = {g_stop_pipe[0], POLLIN, 0};
  if (g_stop_pipe[0] < 0 || poll(&p, 1, timeout_ms) <= 0) return 0;
  unsigned char b = 0;
  return read(g_stop_pipe[0], &b, 1) == 1 ? b : 0;
}

void cli_stop_wake(void) {
  unsigned char b = 0;
  if (g_stop_pipe[1] >= 0 && write(g_stop_pipe[1], &b, 1) < 0) { /* already woken */
  }
}

void cli_print_json(json_t *v) {
  if (!v) return;
  /* ASCII only: jansson escapes C0 controls itself; ENSURE_ASCII also
   * escapes C1 controls, bidi controls and the rest of non-ASCII text a peer
   * may have sent, so --json output is as safe on a terminal as the table. */
  char *s = json_dumps(v, JSON_COMPACT | JSON_PRESERVE_ORDER | JSON_ENSURE_ASCII);
  if (s) {
    fputs(s, stdout);
    fputc('\n', stdout);
    fflush(stdout);
    free(s);
  }
  json_decref(v);
}

int cli_parse_u64(const char *prog, const char *flag, const char *s, unsigned long long *out) {
  char *end;
  errno = 0;
  unsigned long long v = strtoull(s, &end, 10);
  if (errno || end == s || *end || s[0] == '-') {
    fprintf(stderr, "%s: %s wants a non-negative integer, got '%s'\n", prog, flag, s);
    return 2;
  }
  *out = v;
  return 0;
}

/* Optimal string alignment distance (Levenshtein plus adjacent swaps): a
 * dropped, doubled, wrong or swapped letter is one edit each. */
static size_t edit_distance(const char *a, size_t la, const char *b) {
  size_t lb = strlen(b), d[65][65];
  if (la > 64 || lb > 64) return SIZE_MAX;
  for (size_t i = 0; i <= la; i++) d[i][0] = i;
  for (size_t j = 0; j <= lb; j++) d[0][j] = j;
  for (size_t i = 1; i <= la; i++)
    for (size_t j = 1; j <= lb; j++) {
      size_t v = d[i - 1][j - 1] + (a[i - 1] != b[j - 1]);
      if (d[i - 1][j] + 1 < v) v = d[i - 1][j] + 1;
      if (d[i][j - 1] + 1 < v) v = d[i][j - 1] + 1;
      if (i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] && d[i - 2][j - 2] + 1 < v)
        v = d[i - 2][j - 2] + 1;
      d[i][j] = v;
    }
  return d[la][lb];
}

const char *cli_nearest_option(const char *word, size_t len, const struct option *opts) {
  const char *best = NULL;
  size_t best_d = SIZE_MAX;
  for (size_t k = 0; opts[k].name; k++) {
    size_t dist = edit_distance(word, len, opts[k].name);
    if (dist < best_d) best_d = dist, best = opts[k].name;
  }
  /* A typo, not another word: at most a third of it (1 to 3 edits). */
  size_t limit = len / 3 < 1 ? 1 : len / 3 > 3 ? 3 : len / 3;
  return best_d <= limit ? best : NULL;
}

int cli_option_error(const char *prog, int c, char **argv, const struct option *opts) {
  const char *arg = optind > 0 ? argv[optind - 1] : "";
  if (c == ':') {
    fprintf(stderr, "%s: option %s needs a value\n", prog, arg);
    return 2;
  }
  /* A long option's error leaves optind past it, and optopt 0 or its val; a
   * short one's may not (in a cluster "-qx"): then optopt is the letter. */
  const char *name = strncmp(arg, "--", 2) == 0 ? arg + 2 : NULL;
  size_t n = name ? strcspn(name, "=") : 0;
  for (size_t k = 0; name && optopt && opts[k].name; k++)
    if (strlen(opts[k].name) == n && !strncmp(opts[k].name, name, n)) {
      if (opts[k].val != optopt) name = NULL; /* a short option after it */
      break;
    }
  if (!name) {
    fprintf(stderr, "%s: unknown option -%c; %s --help lists them\n", prog, optopt > 32 && optopt < 127 ? optopt : '?',
            prog);
    return 2;
  }
  char list[200] = "";
  size_t used = 0, prefixes = 0;
  for (size_t k = 0; opts[k].name; k++) {
    if (strlen(opts[k].name) == n && !strncmp(opts[k].name, name, n)) {
      fprintf(stderr, "%s: option --%s takes no value\n", prog, opts[k].name); /* "--json=1" */
      return 2;
    }
    if (n && !strncmp(opts[k].name, name, n) && used < sizeof list) {
      int w = snprintf(list + used, sizeof list - used, "%s--%s", prefixes++ ? ", " : "", opts[k].name);
      used += w > 0 ? (size_t)w : 0;
    }
  }
  const char *near = prefixes > 1 ? NULL : cli_nearest_option(name, n, opts);
  if (prefixes > 1)
    fprintf(stderr, "%s: ambiguous option --%.*s (%s); %s --help lists them\n", prog, (int)n, name, list, prog);
  else if (near)
    fprintf(stderr, "%s: unknown option --%.*s (did you mean --%s?); %s --help lists them\n", prog, (int)n, name, near,
            prog);
  else
    fprintf(stderr, "%s: unknown option --%.*s; %s --help lists them\n", prog, (int)n, name, prog);
  return 2;
}

int cli_parse_double(const char *prog, const char *flag, const char *s, double *out) {
  char *end;
  errno = 0;
  double v = strtod(s, &end);
  if (errno || end == s || *end || v != v) {
    fprintf(stderr, "%s: %s wants a number, got '%s'\n", prog, flag, s);
    return 2;
  }
  *out = v;
  return 0;
}

