/*
 * http_guard.c - the metrics listener's connection table (http_guard.h).
 *
 * A fixed array, scanned whole: it holds at most 2 x max_conns + 16 entries
 * (tens), and a scan per accepted connection costs less than the accept.
 * Entries told to close stay (marked `closing`, not counted) until the
 * listener reports them gone, so a key is never reused while its socket may
 * still be open.
 */
#include "coordinator/http_guard.h"

#include <stdlib.h>
#include <string.h>

#include "fedc/error.h"

typedef struct entry {
  const void *conn; /* NULL: free */
  uint64_t opened;
  uint64_t seq; /* order of arrival: "oldest" is the least (ms stamps tie) */
  uint8_t addr[16];
  uint8_t addrlen;
  uint8_t closing; /* told to close: not counted, waiting for closed() */
} entry;

struct fc_http_guard {
  fc_http_guard_cfg cfg;
  entry *e;
  uint32_t cap;
  uint32_t live;
  uint64_t seq;
  uint64_t closed_by[FC_HG_N];
};

const char *fc_http_guard_reason_name(int r) {
  switch (r) {
  case FC_HG_PER_ADDRESS: return "per_address";
  case FC_HG_FULL: return "full";
  case FC_HG_DEADLINE: return "deadline";
  default: return "?";
  }
}

int fc_http_guard_create(const fc_http_guard_cfg *cfg, fc_http_guard **out) {
  if (!cfg->max_conns || !cfg->per_address || cfg->max_conns > 1u << 20) return FEDC_ERR_INVALID;
  fc_http_guard *g = calloc(1, sizeof *g);
  if (!g) return FEDC_ERR_NOMEM;
  g->cfg = *cfg;
  g->cap = 2 * cfg->max_conns + 16;
  if (!(g->e = calloc(g->cap, sizeof *g->e))) {
    free(g);
    return FEDC_ERR_NOMEM;
  }
  *out = g;
  return FEDC_OK;
}

void fc_http_guard_destroy(fc_http_guard *g) {
  if (!g) return;
  free(g->e);
  free(g);
}

static int counted(const entry *x) { return x->conn && !x->closing; }

static int same_addr(const entry *a, const entry *b) {
  return a->addrlen == b->addrlen && memcmp(a->addr, b->addr, a->addrlen) == 0;
}

static uint32_t count_addr(const fc_http_guard *g, const entry *x) {
  uint32_t n = 0;
  for (uint32_t i = 0; i < g->cap; i++) n += counted(&g->e[i]) && same_addr(&g->e[i], x);
  return n;
}

/* The oldest counted entry from x's address (x itself if it is the only one). */
static entry *oldest_of(fc_http_guard *g, const entry *x) {
  entry *best = NULL;
  for (uint32_t i = 0; i < g->cap; i++) {
    entry *y = &g->e[i];
    if (counted(y) && same_addr(y, x) && (!best || y->seq < best->seq)) best = y;
  }
  return best;
}

static const void *close_entry(fc_http_guard *g, entry *x, int reason) {
  x->closing = 1;
  g->live--;
  g->closed_by[reason]++;
  return x->conn;
}

size_t fc_http_guard_open(fc_http_guard *g, const void *conn, const uint8_t *addr, size_t addrlen, uint64_t now_ms,
                          const void *victims[2]) {
  entry *x = NULL;
  for (uint32_t i = 0; i < g->cap && !x; i++)
    if (!g->e[i].conn) x = &g->e[i];
  if (!x) { /* every slot waits for a close already: this one goes too */
    g->closed_by[FC_HG_FULL]++;
    victims[0] = conn;
    return 1;
  }
  memset(x, 0, sizeof *x);
  x->conn = conn;
  x->opened = now_ms;
  x->seq = ++g->seq;
  x->addrlen = (uint8_t)(addrlen < sizeof x->addr ? addrlen : sizeof x->addr);
  memcpy(x->addr, addr, x->addrlen);
  g->live++;
  size_t n = 0;
  if (count_addr(g, x) > g->cfg.per_address) victims[n++] = close_entry(g, oldest_of(g, x), FC_HG_PER_ADDRESS);
  if (g->live > g->cfg.max_conns) {
    /* The address holding the most gives up its oldest; among equals, the
     * one whose oldest is oldest. */
    entry *pick = NULL;
    uint32_t most = 0;
    for (uint32_t i = 0; i < g->cap; i++) {
      entry *y = &g->e[i];
      if (!counted(y)) continue;
      uint32_t k = count_addr(g, y);
      entry *o = oldest_of(g, y);
      if (k > most || (k == most && o->seq < pick->seq)) {
        most = k;
        pick = o;
      }
    }
    victims[n++] = close_entry(g, pick, FC_HG_FULL);
  }
  return n;
}

void fc_http_guard_closed(fc_http_guard *g, const void *conn) {
  for (uint32_t i = 0; i < g->cap; i++) {
    entry *x = &g->e[i];
    if (x->conn != conn) continue;
    if (!x->closing) g->live--;
    memset(x, 0, sizeof *x);
    return;
  }
}

size_t fc_http_guard_expired(fc_http_guard *g, uint64_t now_ms, const void **out, size_t cap) {
  size_t n = 0;
  for (uint32_t i = 0; i < g->cap && n < cap; i++) {
    entry *x = &g->e[i];
    if (counted(x) && now_ms >= x->opened && now_ms - x->opened >= g->cfg.deadline_ms)
      out[n++] = close_entry(g, x, FC_HG_DEADLINE);
  }
  return n;
}

uint32_t fc_http_guard_open_count(const fc_http_guard *g) { return g->live; }

uint64_t fc_http_guard_closed_by(const fc_http_guard *g, int reason) {
  return reason >= 0 && reason < FC_HG_N ? g->closed_by[reason] : 0;
}
