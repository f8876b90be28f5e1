/*
 * accept_guard.c - connection admission ahead of gRPC. See accept_guard.h
 * for why the coordinator interposes accept4() and close().
 *
 * State per fd: one byte (fd_flags) with ADMITTED (a connection we counted),
 * LISTENER / NOT_LISTENER (whether accept4 on it is ours to guard, learnt once
 * with getsockname). close() clears the byte BEFORE the real close: once the
 * number is free the kernel may hand it to a concurrent accept, whose flags
 * must not be wiped by us afterwards.
 *
 * Per source address: a token bucket (rate per second, burst) in a
 * direct-mapped table of 4,096 entries keyed by the IPv4 address or the IPv6
 * /64 prefix (one host usually holds a /64). A collision replaces the entry:
 * at worst two addresses share a budget for a while.
 *
 * EMFILE (the fd limit hit despite the cap, e.g. by files): the spare fd
 * reserved at start (libuv's and nginx's technique) is closed, the backlog is
 * drained by accepting and closing, the spare is reopened, and accept4 says
 * EAGAIN: gRPC re-arms its listener instead of stopping for good.
 */
#define _GNU_SOURCE
#include "transport/accept_guard.h"

#include <arpa/inet.h>
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "common/log.h"
#include "fedc/error.h"

#define MOD "accept"
#define PUBLIC __attribute__((visibility("default")))

enum { F_ADMITTED = 1, F_LISTENER = 2, F_NOT_LISTENER = 4 };

#define RATE_SETS 1024 /* x RATE_WAYS entries, least recently used evicted */
#define RATE_WAYS 4
#define ADDR_COUNTERS 65536 /* open connections per address hash (collisions share: conservative) */

typedef struct rate_slot {
  uint64_t key; /* 0 = empty */
  double tokens, last;
} rate_slot;

static struct {
  pthread_mutex_t mu; /* cfg, rate table, spare fd */
  atomic_int active;
  atomic_int port;
  int cap;
  int per_addr_cap;         /* 0 = none */
  double rate, burst;       /* per address */
  double total_rate, total_burst, total_tokens, total_last; /* all addresses together */
  int spare_fd;
  rate_slot *rates;         /* RATE_SETS x RATE_WAYS */
  atomic_int *addr_open;    /* ADDR_COUNTERS; never freed */
  uint16_t *fd_addr;        /* per fd: its addr_open index; never freed */
  atomic_uchar *fd_flags; /* never freed: close() may run at any time */
  size_t nflags;
  atomic_long open;
  atomic_ullong admitted, refused_full, refused_rate, refused_addr, dropped_emfile;
} G = {.mu = PTHREAD_MUTEX_INITIALIZER, .spare_fd = -1};

typedef int (*accept4_fn)(int, struct sockaddr *, socklen_t *, int);
typedef int (*close_fn)(int);
static _Atomic(accept4_fn) real_accept4_p;
static _Atomic(close_fn) real_close_p;

static accept4_fn real_accept4(void) {
  accept4_fn f = atomic_load(&real_accept4_p);
  if (!f) {
    f = (accept4_fn)dlsym(RTLD_NEXT, "accept4");
    atomic_store(&real_accept4_p, f);
  }
  return f;
}

static close_fn real_close(void) {
  close_fn f = atomic_load(&real_close_p);
  if (!f) {
    f = (close_fn)dlsym(RTLD_NEXT, "close");
    atomic_store(&real_close_p, f);
  }
  return f;
}

static double mono_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

/* ---- the interposed calls --------------------------------------------------------- */

PUBLIC int close(int fd) {
  if (fd >= 0 && G.fd_flags && (size_t)fd < G.nflags) {
    unsigned char old = atomic_exchange(&G.fd_flags[fd], 0);
    if (old & F_ADMITTED) {
      atomic_fetch_sub(&G.open, 1);
      atomic_fetch_sub(&G.addr_open[G.fd_addr[fd]], 1);
    }
  }
  close_fn f = real_close();
  if (!f) {
    errno = ENOSYS;
    return -1;
  }
  return f(fd);
}

/* Is accept4 on `fd` ours to guard? Learnt once per listener fd. */
static int guarded_listener(int fd) {
  if (!atomic_load(&G.active) || fd < 0 || (size_t)fd >= G.nflags) return 0;
  unsigned char f = atomic_load(&G.fd_flags[fd]);
  if (f & (F_LISTENER | F_NOT_LISTENER)) return (f & F_LISTENER) != 0;
  struct sockaddr_storage ss;
  socklen_t len = sizeof ss;
  int port = -1;
  if (getsockname(fd, (struct sockaddr *)&ss, &len) == 0) {
    if (ss.ss_family == AF_INET) port = ntohs(((struct sockaddr_in *)&ss)->sin_port);
    else if (ss.ss_family == AF_INET6)
      port = ntohs(((struct sockaddr_in6 *)&ss)->sin6_port);
  }
  int ours = port > 0 && port == atomic_load(&G.port);
  atomic_fetch_or(&G.fd_flags[fd], ours ? F_LISTENER : F_NOT_LISTENER);
  return ours;
}

static uint64_t addr_key(const struct sockaddr_storage *ss) {
  uint64_t k = 0;
  if (ss->ss_family == AF_INET) {
    k = 0x4000000000000000ull | ntohl(((const struct sockaddr_in *)ss)->sin_addr.s_addr);
  } else if (ss->ss_family == AF_INET6) {
    const uint8_t *a = ((const struct sockaddr_in6 *)ss)->sin6_addr.s6_addr;
    static const uint8_t v4mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
    if (memcmp(a, v4mapped, 12) == 0) {
      k = 0x4000000000000000ull | ((uint64_t)a[12] << 24 | (uint64_t)a[13] << 16 | (uint64_t)a[14] << 8 | a[15]);
    } else {
      for (int i = 0; i < 8; i++) k = k << 8 | a[i]; /* the /64 */
      k |= 1;
    }
  }
  return k ? k : 1;
}

static int take(double *tokens, double *last, double rate, double burst, double now) {
  *tokens += (now - *last) * rate;
  if (*tokens > burst) *tokens = burst;
  *last = now;
  if (*tokens < 1) return 0;
  *tokens -= 1;
  return 1;
}

/* May a connection from `key` be admitted now? Takes a token from its
 * address's bucket and from the global one. Returns 0 ok, 1 over the
 * address's rate, 2 over the global rate. The address table is 4-way set
 * associative with LRU eviction, so an attacker cannot reset a bucket to a
 * full burst by alternating two colliding addresses (direct mapping let it). */
static int rate_admit(uint64_t key) {
  double now = mono_s();
  int verdict = 0;
  pthread_mutex_lock(&G.mu);
  if (G.rate > 0) {
    uint64_t h = key * 0x9E3779B97F4A7C15ull;
    rate_slot *set = &G.rates[((h >> 40) % RATE_SETS) * RATE_WAYS], *s = NULL, *lru = &set[0];
    for (int w = 0; w < RATE_WAYS && !s; w++) {
      if (set[w].key == key) s = &set[w];
      else if (set[w].last < lru->last)
        lru = &set[w];
    }
    if (!s) {
      s = lru;
      s->key = key;
      s->tokens = G.burst;
      s->last = now;
    }
    if (!take(&s->tokens, &s->last, G.rate, G.burst, now)) verdict = 1;
  }
  if (!verdict && G.total_rate > 0 && !take(&G.total_tokens, &G.total_last, G.total_rate, G.total_burst, now))
    verdict = 2;
  pthread_mutex_unlock(&G.mu);
  return verdict;
}

static void describe(const struct sockaddr_storage *ss, char *out, size_t len) {
  const void *a = NULL;
  if (ss->ss_family == AF_INET) a = &((const struct sockaddr_in *)ss)->sin_addr;
  else if (ss->ss_family == AF_INET6)
    a = &((const struct sockaddr_in6 *)ss)->sin6_addr;
  if (!a || !inet_ntop(ss->ss_family, a, out, (socklen_t)len)) snprintf(out, len, "?");
}

/* The fd limit was hit: free the spare, accept and drop what the backlog
 * holds, take the spare back. */
static void drain_after_emfile(int lfd, int flags) {
  pthread_mutex_lock(&G.mu);
  if (G.spare_fd >= 0) {
    real_close()(G.spare_fd);
    G.spare_fd = -1;
  }
  unsigned long dropped = 0;
  for (;;) {
    int fd = real_accept4()(lfd, NULL, NULL, flags | SOCK_NONBLOCK);
    if (fd < 0) break; /* EAGAIN: drained; EMFILE again: another thread took the slot */
    real_close()(fd);
    dropped++;
  }
  G.spare_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
  pthread_mutex_unlock(&G.mu);
  atomic_fetch_add(&G.dropped_emfile, dropped);
  FC_WARN(MOD, "fd limit reached: dropped %lu pending connections; the listener keeps accepting", dropped);
}

PUBLIC int accept4(int lfd, struct sockaddr *addr, socklen_t *addrlen, int flags) {
  accept4_fn f = real_accept4();
  if (!f) {
    errno = ENOSYS;
    return -1;
  }
  if (!guarded_listener(lfd)) return f(lfd, addr, addrlen, flags);
  for (;;) {
    struct sockaddr_storage ss;
    socklen_t sl = sizeof ss;
    int fd = f(lfd, (struct sockaddr *)&ss, &sl, flags);
    if (fd < 0) {
      if (errno == EMFILE || errno == ENFILE) {
        drain_after_emfile(lfd, flags);
        errno = EAGAIN; /* gRPC re-arms on EAGAIN; on EMFILE it stopped for good */
      }
      return -1;
    }
    char who[INET6_ADDRSTRLEN];
    if ((size_t)fd >= G.nflags || atomic_load(&G.open) >= G.cap) {
      real_close()(fd);
      unsigned long long n = atomic_fetch_add(&G.refused_full, 1) + 1;
      describe(&ss, who, sizeof who);
      FC_WARN(MOD, "connection from %s refused: %ld connections open, the cap is %d (%llu refused so far)", who,
              atomic_load(&G.open), G.cap, n);
      continue;
    }
    uint64_t key = addr_key(&ss);
    uint16_t ai = (uint16_t)((key * 0x9E3779B97F4A7C15ull) >> 48);
    if (G.per_addr_cap > 0 && atomic_load(&G.addr_open[ai]) >= G.per_addr_cap) {
      real_close()(fd);
      unsigned long long n = atomic_fetch_add(&G.refused_addr, 1) + 1;
      describe(&ss, who, sizeof who);
      FC_WARN(MOD, "connection from %s refused: %d connections from that address are open (%llu refused so far)", who,
              G.per_addr_cap, n);
      continue;
    }
    int over = rate_admit(key);
    if (over) {
      real_close()(fd);
      unsigned long long n = atomic_fetch_add(&G.refused_rate, 1) + 1;
      describe(&ss, who, sizeof who);
      if (over == 1)
        FC_WARN(MOD, "connection from %s refused: over %.0f connects/s from that address (%llu refused so far)", who,
                G.rate, n);
      else
        FC_WARN(MOD, "connection from %s refused: over %.0f connects/s in all (%llu refused so far)", who,
                G.total_rate, n);
      continue;
    }
    /* Dead peers are found by the kernel (TCP keepalive: no user-space timer
     * per connection, which cost gRPC's timer threads ~1.5% of a core with
     * 15,000 clients): probes after 5 idle minutes, every 30 s, 4 tries. */
    int on = 1, idle = 300, intvl = 30, cnt = 4;
    setsockopt(fd, SOL_SOCKET, SO_KEEPALIVE, &on, sizeof on);
    setsockopt(fd, IPPROTO_TCP, TCP_KEEPIDLE, &idle, sizeof idle);
    setsockopt(fd, IPPROTO_TCP, TCP_KEEPINTVL, &intvl, sizeof intvl);
    setsockopt(fd, IPPROTO_TCP, TCP_KEEPCNT, &cnt, sizeof cnt);
    /* An fd still marked admitted was closed behind our back (dup2 onto it,
     * close_range): its old count is dropped here, so counts cannot drift. */
    unsigned char was = atomic_exchange(&G.fd_flags[fd], F_ADMITTED);
    if (was & F_ADMITTED) {
      atomic_fetch_sub(&G.open, 1);
      atomic_fetch_sub(&G.addr_open[G.fd_addr[fd]], 1);
    }
    G.fd_addr[fd] = ai;
    atomic_fetch_add(&G.addr_open[ai], 1);
    atomic_fetch_add(&G.open, 1);
    atomic_fetch_add(&G.admitted, 1);
    if (addr && addrlen) {
      socklen_t n = *addrlen < sl ? *addrlen : sl;
      memcpy(addr, &ss, n);
      *addrlen = sl;
    }
    return fd;
  }
}

/* ---- control ---------------------------------------------------------------------- */

/* The fd limit now, the headroom and the cap they give. */
static int plan(int fd_headroom, int max_connections, long *limit_out, int *headroom_out) {
  struct rlimit rl;
  if (getrlimit(RLIMIT_NOFILE, &rl) != 0) return -1;
  long limit = rl.rlim_cur == RLIM_INFINITY || rl.rlim_cur > (1u << 20) ? (1L << 20) : (long)rl.rlim_cur;
  int headroom = fd_headroom > 0 ? fd_headroom : (int)(limit / 8 > 64 ? limit / 8 : 64);
  if (headroom >= limit / 2) headroom = (int)(limit / 2);
  int cap = max_connections > 0 ? max_connections : (int)(limit - headroom);
  if (cap > limit - headroom) cap = (int)(limit - headroom);
  if (limit_out) *limit_out = limit;
  if (headroom_out) *headroom_out = headroom;
  return cap;
}

int fc_accept_guard_cap(int fd_headroom, int max_connections) {
  int cap = plan(fd_headroom, max_connections, NULL, NULL);
  return cap > 0 ? cap : 0;
}

int fc_accept_guard_start(const fc_accept_guard_cfg *cfg) {
  struct rlimit rl;
  if (!cfg || cfg->port <= 0 || getrlimit(RLIMIT_NOFILE, &rl) != 0) return FEDC_ERR_INVALID;
  if (!real_accept4() || !real_close()) return FEDC_ERR_INTERNAL;
  long limit;
  int headroom;
  int cap = plan(cfg->fd_headroom, cfg->max_connections, &limit, &headroom);
  if (cap <= 0) return FEDC_ERR_INVALID;
  pthread_mutex_lock(&G.mu);
  if (!G.fd_flags) {
    /* Sized to the hard limit (the soft one may be raised later); kept for
     * the life of the process. */
    size_t n = rl.rlim_max == RLIM_INFINITY || rl.rlim_max > (1u << 20) ? (1u << 20) : (size_t)rl.rlim_max;
    if (n < (size_t)limit) n = (size_t)limit;
    G.fd_flags = calloc(n, sizeof *G.fd_flags);
    G.nflags = G.fd_flags ? n : 0;
  }
  if (!G.rates) G.rates = calloc(RATE_SETS * RATE_WAYS, sizeof *G.rates);
  if (!G.addr_open) G.addr_open = calloc(ADDR_COUNTERS, sizeof *G.addr_open);
  if (!G.fd_addr && G.nflags) G.fd_addr = calloc(G.nflags, sizeof *G.fd_addr);
  if (!G.fd_flags || !G.rates || !G.addr_open || !G.fd_addr) {
    pthread_mutex_unlock(&G.mu);
    return FEDC_ERR_NOMEM;
  }
  memset(G.rates, 0, RATE_SETS * RATE_WAYS * sizeof *G.rates);
  for (size_t i = 0; i < G.nflags; i++) atomic_fetch_and(&G.fd_flags[i], (unsigned char)F_ADMITTED);
  G.cap = cap;
  G.rate = cfg->connect_rate > 0 ? cfg->connect_rate : 0;
  G.burst = cfg->connect_burst > 0 ? cfg->connect_burst : 10 * G.rate;
  if (G.burst < 1) G.burst = 1;
  G.total_rate = cfg->connect_rate_total > 0 ? cfg->connect_rate_total : 0;
  G.total_burst = 2 * G.total_rate < 1 ? 1 : 2 * G.total_rate;
  G.total_tokens = G.total_burst;
  G.total_last = mono_s();
  G.per_addr_cap = cfg->per_address > 0 ? cfg->per_address : 0;
  if (G.spare_fd < 0) G.spare_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
  atomic_store(&G.port, cfg->port);
  atomic_store(&G.active, 1);
  pthread_mutex_unlock(&G.mu);
  FC_INFO(MOD,
          "fd limit %ld: at most %d connections (%d fds kept free), %d per address; new connections: %.0f/s "
          "(bursts of %.0f) per address, %.0f/s in all (0 = no limit)",
          limit, cap, headroom, G.per_addr_cap, G.rate, G.burst, G.total_rate);
  return FEDC_OK;
}

void fc_accept_guard_stop(void) {
  pthread_mutex_lock(&G.mu);
  atomic_store(&G.active, 0);
  atomic_store(&G.port, 0);
  if (G.spare_fd >= 0) {
    real_close()(G.spare_fd);
    G.spare_fd = -1;
  }
  pthread_mutex_unlock(&G.mu);
}

void fc_accept_guard_get_stats(fc_accept_guard_stats *st) {
  memset(st, 0, sizeof *st);
  long open = atomic_load(&G.open);
  st->open = open > 0 ? (uint64_t)open : 0;
  st->admitted = atomic_load(&G.admitted);
  st->refused_full = atomic_load(&G.refused_full);
  st->refused_rate = atomic_load(&G.refused_rate);
  st->refused_addr = atomic_load(&G.refused_addr);
  st->dropped_emfile = atomic_load(&G.dropped_emfile);
  st->max_connections = G.cap;
}
