/*
 * upload_resume.c - the table of kept prefixes of cut uploads (see
 * upload_resume.h for the rules). No I/O, no locks, no clock: the
 * coordinator's glue (coord_resume.c) passes the time in and holds its
 * upload lock around every call, and the unit tests drive it directly.
 *
 * Why the checks are these: the key is the authenticated identity (from the
 * client certificate, never from the message), so one identity can never
 * reach another's bytes; the round, the update's meta, its length, SHA-256
 * and chunk size must be the cut stream's, so a client that retrained or a
 * replayed resume from an older attempt cannot splice two updates together;
 * the offset must be exactly what was acknowledged, because the running
 * SHA-256 cannot be rewound and bytes beyond it were never received. Even
 * so, nothing is trusted: the final digest over every byte, kept and new,
 * must equal the header's, as for an upload that was never cut.
 */
#include "coordinator/upload_resume.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fedc/error.h"

void fc_partials_init(fc_partials *t, fc_partial_release release, void *ctx) {
  memset(t, 0, sizeof *t);
  t->release = release;
  t->ctx = ctx;
}

static void partial_free(fc_partials *t, fc_partial *p) {
  fc_chunk_rx_free(&p->rx);
  if (p->slot && t->release) t->release(t->ctx, p->slot);
  free(p);
}

/* Unlink *pp and free it. */
static void drop_at(fc_partials *t, fc_partial **pp) {
  fc_partial *p = *pp;
  *pp = p->next;
  t->n--;
  partial_free(t, p);
}

static fc_partial **find(fc_partials *t, const char *client) {
  fc_partial **pp = &t->head;
  while (*pp && strcmp((*pp)->client, client) != 0) pp = &(*pp)->next;
  return pp;
}

void fc_partials_free(fc_partials *t) {
  while (t->head) drop_at(t, &t->head);
}

int fc_partials_keep(fc_partials *t, const char *client, uint64_t round, const fc_partial_meta *meta,
                     fc_chunk_rx *rx, void **slot, uint64_t deadline_ms, uint64_t now_ms) {
  fc_partial *p = NULL;
  int useful = rx->state == FC_CHUNK_RX_RECEIVING && rx->received > 0 && rx->received < rx->total && *slot &&
               round > t->closed_round && now_ms < deadline_ms && strlen(client) < sizeof p->client;
  if (useful) p = calloc(1, sizeof *p);
  if (!p) {
    fc_chunk_rx_free(rx);
    memset(rx, 0, sizeof *rx);
    if (*slot && t->release) t->release(t->ctx, *slot);
    *slot = NULL;
    return 0;
  }
  fc_partial **old = find(t, client);
  if (*old) drop_at(t, old);
  strcpy(p->client, client);
  p->round = round;
  p->meta = *meta;
  p->rx = *rx; /* moves the digest context with it */
  memset(rx, 0, sizeof *rx);
  p->slot = *slot;
  *slot = NULL;
  p->deadline_ms = deadline_ms;
  p->kept_ms = now_ms;
  p->next = t->head;
  t->head = p;
  t->n++;
  return 1;
}

static int stale(const fc_partials *t, const fc_partial *p, uint64_t now_ms) {
  return p->round <= t->closed_round || now_ms >= p->deadline_ms;
}

int fc_partials_query(fc_partials *t, const char *client, uint64_t round, uint64_t total,
                      const uint8_t sha[FC_SHA256_LEN], uint32_t chunk_bytes, uint64_t now_ms, uint64_t *offset,
                      char *why, size_t whylen) {
  *offset = 0;
  fc_partial **pp = find(t, client);
  fc_partial *p = *pp;
  if (p && stale(t, p, now_ms)) {
    drop_at(t, pp);
    p = NULL;
  }
  if (!p) {
    snprintf(why, whylen, "nothing kept for this identity: send the update from offset 0");
    return FEDC_ERR_NOT_FOUND;
  }
  if (p->round != round || p->rx.total != total || p->rx.chunk_max != chunk_bytes || !sha ||
      !fc_digest_equal(p->rx.want_sha, sha, FC_SHA256_LEN)) {
    snprintf(why, whylen, "the bytes kept are of another update (round %llu, %llu bytes): send from offset 0",
             (unsigned long long)p->round, (unsigned long long)p->rx.total);
    return FEDC_ERR_NOT_FOUND;
  }
  *offset = p->rx.received;
  snprintf(why, whylen, "%llu of %llu bytes kept", (unsigned long long)p->rx.received,
           (unsigned long long)p->rx.total);
  return FEDC_OK;
}

static int meta_equal(const fc_partial_meta *a, const fc_partial_meta *b) {
  return a->model_version == b->model_version && a->examples == b->examples && a->loss == b->loss &&
         a->masked == b->masked && a->unclipped == b->unclipped && a->bucket == b->bucket &&
         a->upload_bits == b->upload_bits && a->upload_block == b->upload_block;
}

int fc_partials_take(fc_partials *t, const char *client, uint64_t round, const fc_partial_meta *meta,
                     uint64_t total, const uint8_t sha[FC_SHA256_LEN], uint32_t chunk_bytes, uint64_t offset,
                     uint64_t now_ms, fc_chunk_rx *rx, void **slot, char *why, size_t whylen) {
  fc_partial **pp = find(t, client);
  fc_partial *p = *pp;
  if (!p) {
    snprintf(why, whylen, "resume at offset %llu refused: no partial upload kept for this identity, send from 0",
             (unsigned long long)offset);
    return FEDC_ERR_NOT_FOUND;
  }
  if (p->round != round || stale(t, p, now_ms)) {
    snprintf(why, whylen, "resume refused: the bytes kept were for round %llu, which %s; send from 0",
             (unsigned long long)p->round, p->round != round && !stale(t, p, now_ms) ? "is not this round" : "closed");
    if (stale(t, p, now_ms)) drop_at(t, pp);
    return FEDC_ERR_REJECTED;
  }
  if (p->rx.total != total || !sha || !fc_digest_equal(p->rx.want_sha, sha, FC_SHA256_LEN)) {
    snprintf(why, whylen, "resume refused: the header announces another update than the bytes kept "
                          "(length %llu vs %llu or a different SHA-256); send from 0",
             (unsigned long long)total, (unsigned long long)p->rx.total);
    return FEDC_ERR_HASH;
  }
  if (!meta_equal(&p->meta, meta)) {
    snprintf(why, whylen, "resume refused: the update's meta (version, examples, loss, flags) differs from the "
                          "cut stream's; send from 0");
    return FEDC_ERR_HASH;
  }
  if (p->rx.chunk_max != chunk_bytes) {
    snprintf(why, whylen, "resume refused: chunk size %u differs from the cut stream's %u", chunk_bytes,
             p->rx.chunk_max);
    return FEDC_ERR_PROTOCOL;
  }
  if (offset > p->rx.received) {
    snprintf(why, whylen, "resume refused: offset %llu is beyond the %llu bytes received",
             (unsigned long long)offset, (unsigned long long)p->rx.received);
    return FEDC_ERR_TOO_LARGE;
  }
  if (offset < p->rx.received) {
    snprintf(why, whylen, "resume refused: offset %llu is below the %llu bytes received (ask UploadOffset)",
             (unsigned long long)offset, (unsigned long long)p->rx.received);
    return FEDC_ERR_PROTOCOL;
  }
  *rx = p->rx;
  memset(&p->rx, 0, sizeof p->rx);
  *slot = p->slot;
  p->slot = NULL;
  drop_at(t, pp);
  return FEDC_OK;
}

int fc_partials_drop_client(fc_partials *t, const char *client) {
  fc_partial **pp = find(t, client);
  if (!*pp) return 0;
  drop_at(t, pp);
  return 1;
}

uint32_t fc_partials_round_closed(fc_partials *t, uint64_t round) {
  if (round > t->closed_round) t->closed_round = round;
  uint32_t n = 0;
  for (fc_partial **pp = &t->head; *pp;) {
    if ((*pp)->round <= t->closed_round) {
      drop_at(t, pp);
      n++;
    } else {
      pp = &(*pp)->next;
    }
  }
  return n;
}

int fc_partials_evict_oldest(fc_partials *t) {
  fc_partial **oldest = NULL;
  for (fc_partial **pp = &t->head; *pp; pp = &(*pp)->next)
    if (!oldest || (*pp)->kept_ms <= (*oldest)->kept_ms) oldest = pp;
  if (!oldest) return 0;
  drop_at(t, oldest);
  return 1;
}
