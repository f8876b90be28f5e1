/*
 * fdguard.c - shed connections before the process runs out of fds. See
 * fdguard.h for why. The watcher wakes every 25 ms (5 ms while under
 * pressure); at the measured connect rate of ~350/s a flood can open ~9 fds
 * between two looks, far below the default headroom of 64.
 *
 * Which connections go: sockets whose local port is ours and that have a
 * peer (so never the listener), highest fd number first: the kernel hands
 * out the lowest free number, so high numbers are the most recent arrivals,
 * which in a flood are the flood. Clients that connected before it keep
 * their low numbers and their connections.
 */
#include "transport/fdguard.h"

#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "common/clock.h"
#include "common/log.h"
#include "fedc/error.h"

#define MOD "fdguard"

struct fc_fdguard {
  pthread_t thread;
  pthread_mutex_t mu;
  pthread_cond_t cv;
  int stop;
  int port;
  long limit;
  int headroom;
  int max_connections;
  atomic_uint_fast64_t shed;
  DIR *fds; /* /proc/self/fd, opened once: at the fd limit opendir would fail */
};

static int is_our_connection(int fd, int port) {
  struct sockaddr_storage ss;
  socklen_t len = sizeof ss;
  if (getsockname(fd, (struct sockaddr *)&ss, &len) != 0) return 0;
  int p;
  if (ss.ss_family == AF_INET) p = ntohs(((struct sockaddr_in *)&ss)->sin_port);
  else if (ss.ss_family == AF_INET6)
    p = ntohs(((struct sockaddr_in6 *)&ss)->sin6_port);
  else
    return 0;
  if (p != port) return 0;
  len = sizeof ss;
  return getpeername(fd, (struct sockaddr *)&ss, &len) == 0;
}

static int cmp_desc(const void *a, const void *b) {
  int x = *(const int *)a, y = *(const int *)b;
  return (x < y) - (x > y);
}

/* One look: count fds and our connections; shed if over. Returns 1 under pressure. */
static int look(fc_fdguard *g) {
  DIR *d = g->fds;
  rewinddir(d); /* re-reads the directory: the listing is current */
  int dfd = dirfd(d);
  long nfds = 0;
  int *conns = NULL;
  size_t nconns = 0, cap = 0;
  struct dirent *e;
  long soft_cap = g->limit - g->headroom;
  while ((e = readdir(d))) {
    if (e->d_name[0] == '.') continue;
    nfds++;
  }
  int pressure = nfds > soft_cap;
  /* Only classify sockets when it may matter: the scan costs a syscall per fd. */
  if (pressure || (g->max_connections > 0 && nfds > g->max_connections)) {
    rewinddir(d);
    while ((e = readdir(d))) {
      if (e->d_name[0] == '.') continue;
      int fd = atoi(e->d_name);
      if (fd == dfd || fd <= 2) continue;
      if (!is_our_connection(fd, g->port)) continue;
      if (nconns == cap) {
        size_t ncap = cap ? cap * 2 : 256;
        int *n = realloc(conns, ncap * sizeof *n);
        if (!n) break;
        conns = n;
        cap = ncap;
      }
      conns[nconns++] = fd;
    }
    long excess_fds = pressure ? nfds - soft_cap + g->headroom / 2 : 0; /* shed below the line, not to it */
    long excess_conns = (g->max_connections > 0 && (long)nconns > g->max_connections)
                            ? (long)nconns - g->max_connections
                            : 0;
    long excess = excess_fds > excess_conns ? excess_fds : excess_conns;
    if (excess > (long)nconns) excess = (long)nconns;
    if (excess > 0) {
      qsort(conns, nconns, sizeof *conns, cmp_desc);
      for (long i = 0; i < excess; i++) shutdown(conns[i], SHUT_RDWR);
      uint64_t total = atomic_fetch_add(&g->shed, (uint64_t)excess) + (uint64_t)excess;
      FC_WARN(MOD, "%ld fds open of %ld (%zu connections): shed %ld newest connections (%llu so far)", nfds,
              g->limit, nconns, excess, (unsigned long long)total);
    }
    free(conns);
  }
  return pressure;
}

static void *guard_main(void *arg) {
  fc_fdguard *g = arg;
  pthread_mutex_lock(&g->mu);
  while (!g->stop) {
    pthread_mutex_unlock(&g->mu);
    int pressure = look(g);
    pthread_mutex_lock(&g->mu);
    struct timespec ts;
    fc_deadline_after_ms(&ts, pressure ? 5 : 25);
    if (!g->stop) pthread_cond_timedwait(&g->cv, &g->mu, &ts);
  }
  pthread_mutex_unlock(&g->mu);
  return NULL;
}

int fc_fdguard_start(int port, int headroom, int max_connections, fc_fdguard **out) {
  struct rlimit rl;
  if (getrlimit(RLIMIT_NOFILE, &rl) != 0) return FEDC_ERR_IO;
  fc_fdguard *g = calloc(1, sizeof *g);
  if (!g) return FEDC_ERR_NOMEM;
  g->port = port;
  g->limit = rl.rlim_cur == RLIM_INFINITY ? 1L << 20 : (long)rl.rlim_cur;
  g->headroom = headroom > 0 ? headroom : (int)(g->limit / 8 > 64 ? g->limit / 8 : 64);
  if (g->headroom >= g->limit / 2) g->headroom = (int)(g->limit / 2);
  g->max_connections = max_connections;
  pthread_mutex_init(&g->mu, NULL);
  pthread_cond_init(&g->cv, NULL);
  g->fds = opendir("/proc/self/fd");
  if (!g->fds || pthread_create(&g->thread, NULL, guard_main, g) != 0) {
    if (g->fds) closedir(g->fds);
    pthread_mutex_destroy(&g->mu);
    pthread_cond_destroy(&g->cv);
    free(g);
    return FEDC_ERR_NOMEM;
  }
  FC_INFO(MOD, "fd limit %ld, headroom %d, max connections %s%d", g->limit, g->headroom,
          max_connections > 0 ? "" : "~", max_connections > 0 ? max_connections : (int)(g->limit - g->headroom));
  *out = g;
  return FEDC_OK;
}

void fc_fdguard_stop(fc_fdguard *g) {
  if (!g) return;
  pthread_mutex_lock(&g->mu);
  g->stop = 1;
  pthread_cond_signal(&g->cv);
  pthread_mutex_unlock(&g->mu);
  pthread_join(g->thread, NULL);
  pthread_mutex_destroy(&g->mu);
  pthread_cond_destroy(&g->cv);
  closedir(g->fds);
  free(g);
}

uint64_t fc_fdguard_shed_count(const fc_fdguard *g) {
  return atomic_load((atomic_uint_fast64_t *)&g->shed);
}
