/*
 * coord_sa_park.c - SecAggPoll, answered when there is something to say.
 *
 * A secure-aggregation stage opens when the last expected message of the
 * one before arrives, and a stage closes only when its last member has seen
 * it open: with polls at an interval, every stage cost its slowest member
 * plus up to one interval (100 ms; 4 stages a round). Now a poll for a stage
 * that is not open yet is held (the transport's fc_scall_park: no thread, no
 * batch) and answered the moment the driver opens the stage, or after
 * FC_SA_PARK_MS with WAIT and a short retry (the client polls again and is
 * held again). Polls that find their answer at once are answered at once,
 * as before.
 *
 * Bounds: a client holds at most one poll (a second one answers the first
 * with WAIT); at most FC_SA_PARK_MAX are held in all (past it: answered at
 * once with the hint, as before); the per-identity call cap and SecAggPoll
 * rate limit (coord_limits.c) apply to every poll. A held poll whose client
 * went away is noticed when it is answered (its status batch fails).
 *
 * Owns: c->sa_park (the held polls: call, client, round, stage, until), under
 * c->mu, emptied by coord_sa_park_close before the server shuts down (the
 * transport waits for every parked call). May call: secagg_server.h,
 * coord_secagg.c (which bucket a client is in), the transport's fc_scall_*;
 * called by the transport (the handler), the driver (coord_sa_park_wake
 * after each tick: a stage that opened, a round that ended) and
 * fc_coord_stop.
 */
#include <stdlib.h>
#include <string.h>

#include "common/clock.h"
#include "coordinator/coord_int.h"
#include "coordinator/secagg_server.h"
#include "fedc/error.h"

#define FC_SA_PARK_MS 1000u
#define FC_SA_PARK_MAX 65536u

struct coord_sa_park {
  fc_scall *call;
  uint64_t round, until_ms;
  int stage;
  char client[65];
};

/* The answer to client's poll for (round, stage) now. 1: resp points into
 * the session (pack it, then fc_sa_poll_clear). Under c->mu. */
static int answer(fc_coord *c, const char *client, uint64_t round, int stage, Fedc__V1__SecAggPollResponse *resp) {
  uint32_t idx;
  int b = coord_sa_find(c, client, &idx);
  fc_sa_server *s = c->nsa ? c->sa[b < 0 ? 0 : b] : NULL;
  if (!s || fc_sa_server_params(s)->round != round) {
    Fedc__V1__SecAggPollResponse z = FEDC__V1__SEC_AGG_POLL_RESPONSE__INIT;
    *resp = z;
    resp->status = FEDC__V1__SEC_AGG_POLL_RESPONSE__STATUS__ABORTED;
    resp->reason = (char *)"that round is over";
    return 0;
  }
  fc_sa_server_poll(s, idx, stage, resp);
  if (resp->status == FEDC__V1__SEC_AGG_POLL_RESPONSE__STATUS__WAIT && resp->retry_after_ms)
    resp->retry_after_ms = fc_sa_server_wait_hint(s, coord_sa_want_advertise(c, (uint32_t)(b < 0 ? 0 : b)),
                                                  fc_now_ms());
  return 1;
}

static int held_here(const fc_coord *c, const char *client, uint64_t round) {
  uint32_t idx;
  int b = coord_sa_find(c, client, &idx);
  return b >= 0 && fc_sa_server_params(c->sa[b])->round == round;
}

/* Answer held poll i (its answer now, WAIT included) and drop it from the list. */
static void finish_held(fc_coord *c, uint32_t i, Fedc__V1__SecAggPollResponse *resp, int clear) {
  struct coord_sa_park *p = &c->sa_park[i];
  fc_scall_finish(p->call, GRPC_STATUS_OK, NULL, &resp->base);
  if (clear) fc_sa_poll_clear(resp);
  c->sa_park[i] = c->sa_park[--c->nsa_park];
}

void coord_h_secagg_poll(fc_scall *call, void *ctx) {
  fc_coord *c = ctx;
  const fc_peer *peer = fc_scall_peer(call);
  const Fedc__V1__SecAggPollRequest *req = (const Fedc__V1__SecAggPollRequest *)fc_scall_request(call);
  Fedc__V1__SecAggPollResponse resp;
  pthread_mutex_lock(&c->mu);
  int clear = answer(c, peer->name, req->round, (int)req->stage, &resp);
  if (resp.status == FEDC__V1__SEC_AGG_POLL_RESPONSE__STATUS__WAIT && !c->sa_park_closed &&
      held_here(c, peer->name, req->round)) {
    /* One held poll per client: an earlier one is answered (WAIT) first. */
    for (uint32_t i = 0; i < c->nsa_park; i++)
      if (!strcmp(c->sa_park[i].client, peer->name)) {
        Fedc__V1__SecAggPollResponse w = resp;
        finish_held(c, i, &w, 0);
        break;
      }
    if (c->nsa_park == c->sa_park_cap && c->sa_park_cap < FC_SA_PARK_MAX) {
      uint32_t cap = c->sa_park_cap ? 2 * c->sa_park_cap : 64;
      struct coord_sa_park *np = realloc(c->sa_park, cap * sizeof *np);
      if (np) c->sa_park = np, c->sa_park_cap = cap;
    }
    if (c->nsa_park < c->sa_park_cap) {
      struct coord_sa_park *p = &c->sa_park[c->nsa_park++];
      p->call = call;
      p->round = req->round;
      p->stage = (int)req->stage;
      p->until_ms = fc_now_ms() + FC_SA_PARK_MS;
      snprintf(p->client, sizeof p->client, "%s", peer->name);
      fc_scall_park(call);
      pthread_mutex_unlock(&c->mu);
      return;
    }
  }
  /* Packed under the lock: the answer points into the session. */
  fc_scall_finish(call, GRPC_STATUS_OK, NULL, &resp.base);
  if (clear) fc_sa_poll_clear(&resp);
  pthread_mutex_unlock(&c->mu);
}

void coord_sa_park_wake(fc_coord *c, uint64_t now_ms, int all) {
  for (uint32_t i = 0; i < c->nsa_park;) {
    struct coord_sa_park *p = &c->sa_park[i];
    Fedc__V1__SecAggPollResponse resp;
    int clear = answer(c, p->client, p->round, p->stage, &resp);
    if (resp.status == FEDC__V1__SEC_AGG_POLL_RESPONSE__STATUS__WAIT) {
      if (!all && now_ms < p->until_ms) {
        i++;
        continue;
      }
      resp.retry_after_ms = 10; /* held long enough: poll again now, and be held again */
    }
    finish_held(c, i, &resp, clear); /* moves the last one into i */
  }
}

void coord_sa_park_close(fc_coord *c) {
  pthread_mutex_lock(&c->mu);
  c->sa_park_closed = 1;
  coord_sa_park_wake(c, fc_now_ms(), 1);
  pthread_mutex_unlock(&c->mu);
}

void coord_sa_park_free(fc_coord *c) {
  free(c->sa_park);
  c->sa_park = NULL;
  c->nsa_park = c->sa_park_cap = 0;
}
