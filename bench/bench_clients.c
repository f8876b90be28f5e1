/*
 * bench_clients.c - the coordinator with many connected clients: a load
 * generator on the project's own transport.
 *
 * For each N (default 1000, 5000, 15000): mint N client identities with our
 * PKI (cached in the work directory, so the largest run's certificates serve
 * the smaller ones), start `fedc coordinator` as a separate process with
 * --min-clients above N (so no round starts: only connections and check-ins),
 * open N mutual-TLS channels (each its own connection) from this process, and:
 *   1. connect: every client makes its first CheckIn (TCP + TLS handshake +
 *      call); handshakes/s = N / elapsed; failures counted;
 *   2. idle: --idle-s seconds with every connection open and no calls: the
 *      coordinator's CPU as % of one core (keepalive pings, timers);
 *   3. steady: every client checks in --per-min times a minute, spread evenly,
 *      for --steady-s seconds: CheckIn latency p50/p99 (client side), failures,
 *      and the coordinator's CPU per CheckIn (its utime+stime over the phase /
 *      calls; includes its idle cost);
 * and reads the coordinator's RSS before the clients connect and after.
 *
 * One JSON line per N on stdout:
 *   {"bench":"clients","clients":N,"handshakes_per_s":..,"connect_failures":..,
 *    "idle_cpu_pct":..,"checkins":..,"checkin_failures":..,"checkin_p50_ms":..,
 *    "checkin_p99_ms":..,"cpu_ms_per_checkin":..,"rss_per_conn_kb":..,
 *    "cpu_per_checkin_vs_first":..,"generator_cpu_pct":..}
 * probe_*: one more client in a process of its own (this binary exec'd with
 * --probe-mode), checking in every 2/3 s through the steady phase: what one
 * device sees while the others load the coordinator.
 * generator_cpu_pct is this process's own CPU during the steady phase (% of
 * one core): with thousands of channels in one process it competes with the
 * coordinator for the same 2 cores, which a fleet of devices would not.
 * The baseline measured in the same run is the first (smallest) N:
 * cpu_per_checkin_vs_first is this N's CPU per CheckIn over the first's.
 * The generator shares the machine's cores with the coordinator (as a real
 * deployment would not): latencies include its own scheduling.
 *
 *   bench_clients FEDC_BINARY [--clients 1000,5000,15000] [--per-min 1]
 *                 [--steady-s 60] [--idle-s 10] [--threads 8] [--dir DIR]
 *                 [--coord-arg ARG]...   (extra `fedc coordinator` arguments, e.g. --keepalive-ms)
 *                 [--client-keepalive-ms MS]  (the clients' HTTP/2 ping interval; default the channel's)
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "common/log.h"
#include "crypto/pki.h"
#include "fedc/error.h"
#include "fedc/v1/fedc.pb-c.h"
#include "transport/transport.h"

static double now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

/* utime + stime of a process, seconds. */
static double proc_cpu_s(pid_t pid) {
  char p[64], buf[2048];
  snprintf(p, sizeof p, "/proc/%d/stat", (int)pid);
  FILE *f = fopen(p, "r");
  if (!f) return -1;
  size_t n = fread(buf, 1, sizeof buf - 1, f);
  fclose(f);
  buf[n] = 0;
  char *q = strrchr(buf, ')'); /* comm may contain spaces */
  if (!q) return -1;
  unsigned long ut = 0, st = 0;
  /* fields after ')': state(3) ... utime(14) stime(15) */
  if (sscanf(q + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %lu %lu", &ut, &st) != 2) return -1;
  return (double)(ut + st) / (double)sysconf(_SC_CLK_TCK);
}

static long proc_rss_kb(pid_t pid) {
  char p[64], line[256];
  snprintf(p, sizeof p, "/proc/%d/status", (int)pid);
  FILE *f = fopen(p, "r");
  long kb = -1;
  if (!f) return -1;
  while (fgets(line, sizeof line, f))
    if (sscanf(line, "VmRSS: %ld", &kb) == 1) break;
  fclose(f);
  return kb;
}

typedef struct client {
  fc_channel *ch;
} client;

typedef struct job {
  client *clients;
  int first, count;      /* this thread's slice */
  double t0, period;     /* steady: client i of the slice calls at t0 + k*period + offset_i */
  double until;
  int steady;
  double *lat;           /* latencies (ms) of this thread, capacity lat_cap */
  size_t nlat, lat_cap;
  long failures;
} job;

static int checkin(fc_channel *ch) {
  if (!ch) return FEDC_ERR_INVALID; /* its channel could not be made */
  Fedc__V1__CheckInRequest req = FEDC__V1__CHECK_IN_REQUEST__INIT;
  ProtobufCMessage *m = NULL;
  fc_status st;
  int rc = fc_call_unary(ch, "/fedc.v1.Coordinator/CheckIn", &req.base, &fedc__v1__check_in_response__descriptor, &m,
                         30000, &st);
  if (m) protobuf_c_message_free_unpacked(m, NULL);
  return rc;
}

static void record(job *j, double ms) {
  if (j->nlat == j->lat_cap) {
    size_t cap = j->lat_cap ? j->lat_cap * 2 : 4096;
    double *n = realloc(j->lat, cap * sizeof *n);
    if (!n) return;
    j->lat = n;
    j->lat_cap = cap;
  }
  j->lat[j->nlat++] = ms;
}

static void *run_job(void *arg) {
  job *j = arg;
  if (!j->steady) { /* connect: one check-in each, as fast as possible */
    for (int i = 0; i < j->count; i++) {
      double t = now_s();
      if (checkin(j->clients[j->first + i].ch) != FEDC_OK) j->failures++;
      else
        record(j, (now_s() - t) * 1000);
    }
    return NULL;
  }
  /* steady: client i calls at t0 + (i / count + k) * period */
  for (long k = 0;; k++) {
    for (int i = 0; i < j->count; i++) {
      double due = j->t0 + ((double)i / j->count + (double)k) * j->period;
      if (due >= j->until) return NULL;
      double wait = due - now_s();
      if (wait > 0) usleep((useconds_t)(wait * 1e6));
      double t = now_s();
      if (checkin(j->clients[j->first + i].ch) != FEDC_OK) j->failures++;
      else
        record(j, (now_s() - t) * 1000);
    }
  }
}

static int cmp_double(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return (x > y) - (x < y);
}

/* Run the jobs on nthreads threads; collect latencies into *all. */
static long run_phase(job *jobs, int nthreads, double **all, size_t *nall) {
  pthread_t *th = calloc((size_t)nthreads, sizeof *th);
  for (int t = 0; t < nthreads; t++) pthread_create(&th[t], NULL, run_job, &jobs[t]);
  long failures = 0;
  size_t total = 0;
  for (int t = 0; t < nthreads; t++) {
    pthread_join(th[t], NULL);
    failures += jobs[t].failures;
    total += jobs[t].nlat;
  }
  free(th);
  *all = malloc((total ? total : 1) * sizeof **all);
  *nall = 0;
  for (int t = 0; t < nthreads; t++) {
    if (*all) memcpy(*all + *nall, jobs[t].lat, jobs[t].nlat * sizeof **all);
    *nall += jobs[t].nlat;
    free(jobs[t].lat);
    jobs[t].lat = NULL;
    jobs[t].nlat = jobs[t].lat_cap = 0;
    jobs[t].failures = 0;
  }
  return failures;
}

static double pct(double *v, size_t n, double p) {
  if (!n) return 0;
  size_t i = (size_t)(p * (double)(n - 1) + 0.5);
  return v[i];
}

static const char *g_coord_args[16];
static int g_ncoord_args;

static pid_t start_coordinator(const char *fedc, const char *dir, int n, int *port) {
  char portf[700], state[700], logf[700], pki[700], minc[32];
  snprintf(portf, sizeof portf, "%s/port-%d", dir, n);
  snprintf(state, sizeof state, "%s/state-%d", dir, n);
  snprintf(logf, sizeof logf, "%s/coord-%d.log", dir, n);
  snprintf(pki, sizeof pki, "%s/pki", dir);
  snprintf(minc, sizeof minc, "%d", n + 1);
  unlink(portf);
  pid_t pid = fork();
  if (pid == 0) {
    int fd = open(logf, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    if (fd >= 0) {
      dup2(fd, 1);
      dup2(fd, 2);
    }
    const char *av[64] = {"fedc", "coordinator", "--pki", pki, "--federation", "bench", "--state", state,
                          "--model", "logreg", "--min-clients", minc, "--poll-ms", "60000", "--client-ttl-ms",
                          "600000", "--connect-rate", "0", "--listen", "127.0.0.1:0", "--port-file", portf, "--log",
                          "warn", "--connect-rate-total", "0", "--connections-per-address", "0"};
    int k = 28;
    for (int i = 0; i < g_ncoord_args; i++) av[k++] = g_coord_args[i];
    av[k] = NULL;
    execv(fedc, (char *const *)av);
    _exit(127);
  }
  for (int i = 0; i < 300; i++) {
    usleep(100000);
    FILE *f = fopen(portf, "r");
    if (f) {
      int ok = fscanf(f, "%d", port) == 1;
      fclose(f);
      if (ok && *port > 0) return pid;
    }
    if (waitpid(pid, NULL, WNOHANG) == pid) return -1;
  }
  kill(pid, SIGKILL);
  return -1;
}

/* --probe-mode ADDR CA CERT KEY SECONDS: one device's view, from a process of
 * its own (exec'd by the parent, so no gRPC state is shared or forked): one
 * channel, a CheckIn every 2/3 s (under the coordinator's automatic per-identity
 * rate; PROBE_GAP_MS in the environment sets another gap, e.g. to see a cold
 * connection's call), latencies as "p50 p99 n failures" on stdout. */
static int probe_main(char **a) {
  double secs = atof(a[4]);
  fc_log_set_level(FC_LOG_ERROR);
  fc_transport_init();
  fc_channel_opts o;
  fc_channel_opts_init(&o);
  o.target = a[0];
  o.tls.ca = a[1];
  o.tls.cert = a[2];
  o.tls.key = a[3];
  fc_channel *ch = NULL;
  char err[400];
  if (fc_channel_create(&o, &ch, err, sizeof err) != FEDC_OK) {
    printf("0 0 0 1\n");
    return 1;
  }
  checkin(ch); /* connect first: the handshake is not a CheckIn's latency */
  double lat[1024];
  size_t n = 0;
  long fails = 0;
  for (double t0 = now_s(); now_s() - t0 < secs && n < 1024;) {
    double t = now_s();
    if (checkin(ch) == FEDC_OK) lat[n++] = (now_s() - t) * 1000;
    else
      fails++;
    usleep(getenv("PROBE_GAP_MS") ? (useconds_t)atoi(getenv("PROBE_GAP_MS")) * 1000 : 666666);
  }
  qsort(lat, n, sizeof *lat, cmp_double);
  printf("%.3f %.3f %zu %ld\n", pct(lat, n, 0.5), pct(lat, n, 0.99), n, fails);
  fc_channel_destroy(ch);
  fc_transport_shutdown();
  return 0;
}

/* Start the probe process; its stdout is *out (read it after the phase). */
static pid_t start_probe(const char *self, const char *addr, const char *pki, double secs, FILE **out) {
  int fds[2];
  if (pipe(fds) != 0) return -1;
  char ca[800], crt[800], key[800], s[32];
  snprintf(ca, sizeof ca, "%s/ca.crt", pki);
  snprintf(crt, sizeof crt, "%s/client-probe.crt", pki);
  snprintf(key, sizeof key, "%s/client-probe.key", pki);
  snprintf(s, sizeof s, "%.0f", secs);
  pid_t pid = fork();
  if (pid == 0) {
    dup2(fds[1], 1);
    close(fds[0]);
    execl(self, "bench_clients", "--probe-mode", addr, ca, crt, key, s, (char *)NULL);
    _exit(127);
  }
  close(fds[1]);
  *out = fdopen(fds[0], "r");
  return pid;
}

int main(int argc, char **argv) {
  if (argc == 7 && !strcmp(argv[1], "--probe-mode")) return probe_main(argv + 2);
  const char *fedc = NULL, *clients_arg = "1000,5000,15000";
  char dir[512] = "";
  double per_min = 1, steady_s = 60, idle_s = 10;
  int client_keepalive_ms = 0; /* 0: the channel default */
  int nthreads = 8;
  for (int i = 1; i < argc; i++) {
    if (!strcmp(argv[i], "--clients") && i + 1 < argc) clients_arg = argv[++i];
    else if (!strcmp(argv[i], "--per-min") && i + 1 < argc)
      per_min = atof(argv[++i]);
    else if (!strcmp(argv[i], "--steady-s") && i + 1 < argc)
      steady_s = atof(argv[++i]);
    else if (!strcmp(argv[i], "--idle-s") && i + 1 < argc)
      idle_s = atof(argv[++i]);
    else if (!strcmp(argv[i], "--threads") && i + 1 < argc)
      nthreads = atoi(argv[++i]);
    else if (!strcmp(argv[i], "--client-keepalive-ms") && i + 1 < argc)
      client_keepalive_ms = atoi(argv[++i]);
    else if (!strcmp(argv[i], "--coord-arg") && i + 1 < argc && g_ncoord_args < 16)
      g_coord_args[g_ncoord_args++] = argv[++i];
    else if (!strcmp(argv[i], "--dir") && i + 1 < argc)
      snprintf(dir, sizeof dir, "%s", argv[++i]);
    else if (argv[i][0] != '-' && !fedc)
      fedc = argv[i];
    else {
      fprintf(stderr, "usage: bench_clients FEDC_BINARY [--clients 1000,5000,15000] [--per-min 1] [--steady-s 60]\n"
                      "                     [--idle-s 10] [--threads 8] [--dir DIR]\n");
      return 2;
    }
  }
  if (!fedc || per_min <= 0 || steady_s <= 0 || nthreads < 1) {
    fprintf(stderr, "bench_clients: need the fedc binary and positive --per-min, --steady-s, --threads\n");
    return 2;
  }
  int ns[16], nn = 0, maxn = 0;
  for (char *s = strdup(clients_arg), *tok = strtok(s, ","); tok && nn < 16; tok = strtok(NULL, ","))
    if ((ns[nn] = atoi(tok)) > 0) maxn = ns[nn] > maxn ? ns[nn] : maxn, nn++;
  if (!dir[0]) snprintf(dir, sizeof dir, "/tmp/fedc-bench-clients");
  mkdir(dir, 0700);
  struct rlimit rl;
  getrlimit(RLIMIT_NOFILE, &rl);
  rl.rlim_cur = rl.rlim_max;
  setrlimit(RLIMIT_NOFILE, &rl);
  if ((long)rl.rlim_cur < maxn + 200) {
    fprintf(stderr, "bench_clients: fd limit %ld is too low for %d clients\n", (long)rl.rlim_cur, maxn);
    return 1;
  }
  signal(SIGPIPE, SIG_IGN);
  fc_log_set_level(FC_LOG_ERROR);

  /* Identities: cached in DIR/pki across runs. */
  char pki[700], err[400];
  snprintf(pki, sizeof pki, "%s/pki", dir);
  if (access(pki, F_OK) != 0 && fc_pki_init(pki, "bench", NULL, 0, 30, "ec", err, sizeof err) != FEDC_OK) {
    fprintf(stderr, "bench_clients: %s\n", err);
    return 1;
  }
  char probe_crt[800];
  snprintf(probe_crt, sizeof probe_crt, "%s/client-probe.crt", pki);
  if (access(probe_crt, F_OK) != 0 && fc_pki_issue(pki, "client", "probe", NULL, 30, err, sizeof err) != FEDC_OK) {
    fprintf(stderr, "bench_clients: %s\n", err);
    return 1;
  }
  double t_pki = now_s();
  for (int i = 0; i < maxn; i++) {
    char name[32], crt[800];
    snprintf(name, sizeof name, "b%05d", i);
    snprintf(crt, sizeof crt, "%s/client-%s.crt", pki, name);
    if (access(crt, F_OK) == 0) continue;
    if (fc_pki_issue(pki, "client", name, NULL, 30, err, sizeof err) != FEDC_OK) {
      fprintf(stderr, "bench_clients: %s\n", err);
      return 1;
    }
    if (i % 1000 == 999) fprintf(stderr, "bench_clients: %d identities (%.0f s)\n", i + 1, now_s() - t_pki);
  }

  fc_transport_init();
  double first_cpu_per_call = 0;
  int rc = 0;
  for (int r = 0; r < nn; r++) {
    int n = ns[r], port = 0;
    pid_t coord = start_coordinator(fedc, dir, n, &port);
    if (coord < 0) {
      fprintf(stderr, "bench_clients: coordinator did not start (see %s/coord-%d.log)\n", dir, n);
      rc = 1;
      break;
    }
    char addr[64], ca[800];
    snprintf(addr, sizeof addr, "127.0.0.1:%d", port);
    snprintf(ca, sizeof ca, "%s/ca.crt", pki);
    usleep(500000);
    long rss0 = proc_rss_kb(coord);
    client *cl = calloc((size_t)n, sizeof *cl);
    int made = 0; /* channels made (the others count as failures) */
    for (int i = 0; i < n; i++) {
      char crt[800], key[800];
      snprintf(crt, sizeof crt, "%s/client-b%05d.crt", pki, i);
      snprintf(key, sizeof key, "%s/client-b%05d.key", pki, i);
      fc_channel_opts o;
      fc_channel_opts_init(&o);
      o.target = addr;
      o.tls.ca = ca;
      o.tls.cert = crt;
      o.tls.key = key;
      o.keepalive_ms = client_keepalive_ms;
      if (fc_channel_create(&o, &cl[i].ch, err, sizeof err) == FEDC_OK) made++;
    }
    int th = nthreads < n ? nthreads : n;
    job *jobs = calloc((size_t)th, sizeof *jobs);
    for (int t = 0, at = 0; t < th; t++) {
      jobs[t].clients = cl;
      jobs[t].first = at;
      jobs[t].count = n / th + (t < n % th);
      at += jobs[t].count;
    }
    fprintf(stderr, "bench_clients: %d clients: connecting...\n", n);
    double *lat = NULL;
    size_t nlat = 0;
    double t0 = now_s();
    long connect_fail = run_phase(jobs, th, &lat, &nlat); /* includes the n - made channels not made */
    double connect_s = now_s() - t0;
    free(lat);
    long rss1 = proc_rss_kb(coord);
    fprintf(stderr, "bench_clients: %d connected in %.1f s (%ld failed); idle %.0f s...\n", n, connect_s, connect_fail,
            idle_s);
    double c0 = proc_cpu_s(coord);
    usleep((useconds_t)(idle_s * 1e6));
    double idle_cpu = proc_cpu_s(coord) - c0;
    fprintf(stderr, "bench_clients: steady %.0f s at %.2f check-ins per client-minute...\n", steady_s, per_min);
    for (int t = 0; t < th; t++) {
      jobs[t].steady = 1;
      jobs[t].t0 = now_s() + 0.2;
      jobs[t].period = 60.0 / per_min;
      jobs[t].until = jobs[t].t0 + steady_s;
    }
    c0 = proc_cpu_s(coord);
    double g0 = proc_cpu_s(getpid()), w0 = now_s();
    FILE *probe_out = NULL;
    char self[600];
    ssize_t sl = readlink("/proc/self/exe", self, sizeof self - 1);
    self[sl > 0 ? sl : 0] = 0;
    pid_t probe = start_probe(self, addr, pki, steady_s, &probe_out);
    long fails = run_phase(jobs, th, &lat, &nlat);
    double steady_cpu = proc_cpu_s(coord) - c0;
    double gen_pct = (proc_cpu_s(getpid()) - g0) * 100 / (now_s() - w0);
    double probe_p50 = 0, probe_p99 = 0;
    size_t probe_n = 0;
    long probe_fail = 0;
    if (probe > 0 && probe_out) {
      if (fscanf(probe_out, "%lf %lf %zu %ld", &probe_p50, &probe_p99, &probe_n, &probe_fail) != 4) probe_fail = -1;
      fclose(probe_out);
      waitpid(probe, NULL, 0);
    }
    qsort(lat, nlat, sizeof *lat, cmp_double);
    double cpu_per_call = nlat ? steady_cpu * 1000 / (double)nlat : 0;
    if (r == 0) first_cpu_per_call = cpu_per_call;
    printf("{\"bench\":\"clients\",\"clients\":%d,\"handshakes_per_s\":%.0f,\"connect_failures\":%ld,"
           "\"idle_cpu_pct\":%.2f,\"checkins\":%zu,\"checkin_failures\":%ld,\"checkin_p50_ms\":%.3f,"
           "\"checkin_p99_ms\":%.3f,\"cpu_ms_per_checkin\":%.3f,\"coord_rss_mib\":%.1f,\"rss_per_conn_kb\":%.1f,"
           "\"cpu_per_checkin_vs_first\":%.2f,\"generator_cpu_pct\":%.1f,\"probe_checkins\":%zu,"
           "\"probe_failures\":%ld,\"probe_p50_ms\":%.3f,\"probe_p99_ms\":%.3f}\n",
           n, connect_s > 0 ? (double)(n - connect_fail) / connect_s : 0, connect_fail, idle_cpu * 100 / idle_s, nlat,
           fails, pct(lat, nlat, 0.5), pct(lat, nlat, 0.99), cpu_per_call, rss1 / 1024.0,
           n ? (double)(rss1 - rss0) / n : 0, first_cpu_per_call > 0 ? cpu_per_call / first_cpu_per_call : 0,
           gen_pct, probe_n, probe_fail, probe_p50, probe_p99);
    fflush(stdout);
    free(lat);
    fprintf(stderr, "bench_clients: closing %d channels...\n", n);
    for (int i = 0; i < n; i++) fc_channel_destroy(cl[i].ch);
    free(cl);
    free(jobs);
    kill(coord, SIGTERM);
    waitpid(coord, NULL, 0);
  }
  fc_transport_shutdown();
  return rc;
}
