/*
 * cli_common.c - shared CLI helpers. See cli_common.h.
 */
#include "cli/cli_common.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
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

int cli_bad_option(const char *prog, char **argv, void (*usage)(FILE *)) {
  fprintf(stderr, "%s: unknown or incomplete option '%s'\n", prog, argv[optind - 1]);
  usage(stderr);
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

