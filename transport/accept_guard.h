/*
 * accept_guard.h - the coordinator's own admission of TCP connections, ahead
 * of gRPC: a connection cap that keeps the process clear of its fd limit, a
 * per-source-address connect rate (each connection costs a TLS handshake)
 * and a global one, a cap on connections open per address,
 * and a listener that keeps accepting after EMFILE.
 *
 * Why it exists. gRPC 1.51's listener (tcp_server_posix.cc) loops accept4()
 * and re-arms only on EAGAIN/ECONNABORTED: one EMFILE, which a burst of plain
 * TCP connects causes as soon as the kernel hands over a listen backlog at
 * once, stops it for good. gRPC has no connection cap and no hook before the
 * handshake, and grpc_server_add_channel_from_fd takes only insecure
 * credentials. So the coordinator binary defines accept4() and close() itself
 * (accept_guard.c), calling the C library's through dlsym(RTLD_NEXT): gRPC's
 * calls bind to these. On a guarded listener, accept4 admits a connection only
 * below the cap and within its address's rate, closing the others at once
 * (before any TLS work); on EMFILE it frees a reserved spare fd, drains the
 * backlog, and reports EAGAIN, so gRPC re-arms. close() keeps an exact count
 * of admitted connections (a byte per fd), replacing a scan of /proc/self/fd
 * (21% of the coordinator's CPU at 12,000 clients).
 *
 * Linked only into programs that serve (the fedc_coord library, pulled in by
 * fc_coord_start), never into libfedc-client: an embedding program's own
 * accept4/close are none of our business. Calls on any other socket pass
 * straight through. One guard per process; fc_accept_guard_start may be
 * called again (a later coordinator in the same test process) after stop.
 */
#ifndef FEDC_TRANSPORT_ACCEPT_GUARD_H
#define FEDC_TRANSPORT_ACCEPT_GUARD_H

#include <stdint.h>

typedef struct fc_accept_guard_cfg {
  int port;                 /* the gRPC listener's port */
  int fd_headroom;          /* fds kept free (0 = max(64, limit/8)) */
  int max_connections;      /* 0 = fd limit - headroom */
  double connect_rate;      /* per source address, connections/s (0 = no limit) */
  double connect_burst;     /* per source address, at once (0 = 10 x rate) */
  double connect_rate_total; /* all addresses together, connections/s (0 = no limit; bursts of 2 s) */
  int per_address;          /* connections open at once per source address (0 = no limit) */
} fc_accept_guard_cfg;

typedef struct fc_accept_guard_stats {
  uint64_t open;            /* admitted connections open now */
  uint64_t admitted;        /* since start */
  uint64_t refused_full;    /* closed at accept: the cap was reached */
  uint64_t refused_rate;    /* closed at accept: their address (or all) over the connect rate */
  uint64_t refused_addr;    /* closed at accept: their address holds per_address connections */
  uint64_t dropped_emfile;  /* closed while draining after EMFILE */
  int max_connections;      /* the cap in force */
} fc_accept_guard_stats;

/* The connection cap these settings give under the current fd limit. */
int fc_accept_guard_cap(int fd_headroom, int max_connections);
/* Guard the listener on cfg->port. 0 ok, else a FEDC_ERR_* code. */
int fc_accept_guard_start(const fc_accept_guard_cfg *cfg);
void fc_accept_guard_stop(void);
void fc_accept_guard_get_stats(fc_accept_guard_stats *st);

#endif
