/*
 * http_guard.h - which metrics/health HTTP connections to close, and when
 * (I/O-free: the caller owns the sockets and the clock; metrics.c drives it).
 *
 * Three rules, each closing the connection that holds a slot longest:
 *   per address  a new connection from an address already holding per_address
 *                connections closes that address's oldest;
 *   total        a new connection when max_conns are open closes the oldest
 *                connection of the address holding the most;
 *   deadline     a connection open deadline_ms is closed, whatever it sends
 *                (a byte every few seconds resets an idle timeout, not this).
 * So the newest connection always has a slot: a probe whose request arrives
 * in one packet is answered before anyone can take its slot, however many
 * slow connections are held, while a flood only churns its own connections.
 *
 * Not thread-safe: the caller serialises every call (and closes the sockets
 * it is told to under the same lock, so a socket is never closed twice).
 */
#ifndef FEDC_COORD_HTTP_GUARD_H
#define FEDC_COORD_HTTP_GUARD_H

#include <stddef.h>
#include <stdint.h>

typedef struct fc_http_guard_cfg {
  uint32_t max_conns;   /* connections open at once (>= 1) */
  uint32_t per_address; /* ... from one address (>= 1) */
  uint64_t deadline_ms; /* a connection's whole life, from accept */
} fc_http_guard_cfg;

enum { FC_HG_PER_ADDRESS, FC_HG_FULL, FC_HG_DEADLINE, FC_HG_N };
const char *fc_http_guard_reason_name(int reason);

typedef struct fc_http_guard fc_http_guard;

int fc_http_guard_create(const fc_http_guard_cfg *cfg, fc_http_guard **out);
void fc_http_guard_destroy(fc_http_guard *g);

/* A connection was accepted: `conn` (an opaque key) from address bytes
 * addr[0..addrlen) (at most 16). Returns how many connections to close now
 * (0..2), their keys in victims[]; they no longer count. A connection the
 * table has no room for (more than max_conns + per_address waiting for
 * their close) is its own victim. */
size_t fc_http_guard_open(fc_http_guard *g, const void *conn, const uint8_t *addr, size_t addrlen, uint64_t now_ms,
                          const void *victims[2]);
/* The connection is gone (whoever closed it). Unknown keys are ignored. */
void fc_http_guard_closed(fc_http_guard *g, const void *conn);
/* Connections past their deadline at now_ms, at most cap of them, into out;
 * each is reported once. */
size_t fc_http_guard_expired(fc_http_guard *g, uint64_t now_ms, const void **out, size_t cap);
/* Connections counted (open and not told to close). */
uint32_t fc_http_guard_open_count(const fc_http_guard *g);
/* Connections closed by each rule so far (FC_HG_*). */
uint64_t fc_http_guard_closed_by(const fc_http_guard *g, int reason);

#endif
