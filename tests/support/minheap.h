/*
 * minheap.h - a growable binary min-heap of uint64_t, header only.
 *
 * Used by the event-driven fleet simulations of pace steering (bench_pace and
 * test_engine_pace): each event is packed as (time << shift | payload), so
 * the smallest key is the next event.  No dependencies beyond libc; an
 * allocation failure aborts, as a test or bench cannot go on without it.
 */
#ifndef FEDC_TESTS_MINHEAP_H
#define FEDC_TESTS_MINHEAP_H

#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>

typedef struct minheap {
  uint64_t *v;
  size_t n, cap;
} minheap;

static inline void minheap_push(minheap *h, uint64_t x) {
  if (h->n == h->cap) {
    size_t cap = h->cap ? h->cap * 2 : 1024;
    uint64_t *v = realloc(h->v, cap * sizeof *v);
    if (!v) abort();
    h->v = v;
    h->cap = cap;
  }
  size_t i = h->n++;
  while (i && h->v[(i - 1) / 2] > x) {
    h->v[i] = h->v[(i - 1) / 2];
    i = (i - 1) / 2;
  }
  h->v[i] = x;
}

/* The smallest key; the heap must not be empty. */
static inline uint64_t minheap_pop(minheap *h) {
  uint64_t top = h->v[0], x = h->v[--h->n];
  size_t i = 0;
  for (;;) {
    size_t c = 2 * i + 1;
    if (c >= h->n) break;
    if (c + 1 < h->n && h->v[c + 1] < h->v[c]) c++;
    if (h->v[c] >= x) break;
    h->v[i] = h->v[c];
    i = c;
  }
  if (h->n) h->v[i] = x;
  return top;
}

static inline void minheap_free(minheap *h) {
  free(h->v);
  h->v = NULL;
  h->n = h->cap = 0;
}

#endif
