/*
 * fdguard.h - keep the process clear of its file-descriptor limit.
 *
 * gRPC 1.51's listener stops accepting forever once accept() fails with
 * EMFILE, and it has no option to cap connections (notes/grpc-core-c.md).
 * So a watcher thread counts open fds and, when fewer than `headroom` remain
 * (or more than max_connections peers are connected), sheds the newest
 * connections to our port with shutdown(2); gRPC then closes them. The flood
 * is dropped; the listener and established clients survive.
 */
#ifndef FEDC_TRANSPORT_FDGUARD_H
#define FEDC_TRANSPORT_FDGUARD_H

#include <stdint.h>

typedef struct fc_fdguard fc_fdguard;

/* headroom <= 0: max(64, limit/8). max_connections <= 0: limit - headroom. */
int fc_fdguard_start(int port, int headroom, int max_connections, fc_fdguard **out);
void fc_fdguard_stop(fc_fdguard *g); /* accepts NULL */
uint64_t fc_fdguard_shed_count(const fc_fdguard *g);

#endif
