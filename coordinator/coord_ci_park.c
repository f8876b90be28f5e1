/*
 * coord_ci_park.c - CheckIn, answered when there is something to say.
 *
 * A client waiting for a round used to learn that it was selected at its
 * next check-in, up to one poll interval after the round opened (the
 * default round paid it as selection latency: issue 27). Now a check-in the
 * engine answers with a plain WAIT (a synchronous federation; not pace
 * steering's "come back later", not ineligible, not rate limited) is held
 * (the transport's fc_scall_park: no thread, no batch). The driver, after
 * each tick, asks the engine again for every held check-in whose round or
 * state has changed since it was held (a round opened, ended, the
 * federation is done) and answers with what the engine says then: a task,
 * DONE, or, still WAIT, it stays held. A check-in held --checkin-hold-ms is
 * answered WAIT with a short retry: the client asks again at once and is
 * held again. Asking again spends no check-in token and no pace slot, and
 * leaves the client's liveness and a Leave as they were (the client asked
 * once and may have gone since: fc_engine_checkin_held); a leader that lost
 * etcd's quorum meanwhile answers it "retry" as at the door.
 *
 * Off by default (--checkin-hold-ms 0): what it does not cover yet is in
 * docs/operations.md ("Held check-ins"): a client that dies while held can
 * still be handed its task (no batch tells us it went), replacements and
 * evaluation tasks wake a held call only when its hold runs out, and the
 * hold is checked at driver ticks (a long finalize stretches it).
 *
 * Bounds: one held check-in per client (a second answers the first with
 * WAIT); at most FC_CI_PARK_MAX in all (past it: answered at once, as
 * before; the one-per-client scan is linear); the per-identity call cap and the check-in rate apply to every
 * check-in as it arrives. A client that went away is noticed when its call
 * is answered (its status batch fails).
 *
 * Owns: c->ci_park (the held check-ins: call, request, until, the engine's
 * round and state when held), under c->mu; emptied by coord_ci_park_close
 * before the server shuts down. May call: the engine (status), the
 * transport's fc_scall_*. Called by coord_checkin.c (to hold), the driver
 * (take, then coord_checkin_answer for each) and fc_coord_stop.
 */
#include <stdlib.h>
#include <string.h>

#include "common/clock.h"
#include "coordinator/coord_int.h"
#include "fedc/error.h"

#define FC_CI_PARK_MAX 1024u /* the one-per-client scan is linear: bounded, past it answered at once */
#define FC_CI_AGAIN_MS 20u /* a held check-in that waited long enough: ask again this soon */

struct coord_ci_park {
  fc_scall *call;
  coord_checkin_q q;
  uint64_t until_ms, round;
  int state;
};

/* Answer held check-in i with `action` (WAIT or DONE; under mu) and drop it from the list. */
static void finish_held(fc_coord *c, uint32_t i, Fedc__V1__CheckInResponse__Action action, uint32_t retry_ms) {
  Fedc__V1__CheckInResponse resp = FEDC__V1__CHECK_IN_RESPONSE__INIT;
  resp.action = action;
  resp.global_version = c->model->version;
  resp.retry_after_ms = retry_ms;
  fc_scall_finish(c->ci_park[i].call, GRPC_STATUS_OK, NULL, &resp.base);
  c->ci_park[i] = c->ci_park[--c->nci_park];
}

int coord_ci_park_locked(fc_coord *c, fc_scall *call, const coord_checkin_q *q, uint64_t until_ms) {
  if (c->ci_park_closed || c->cfg.engine.async || !c->cfg.checkin_hold_ms) return FEDC_ERR_INVALID;
  for (uint32_t i = 0; i < c->nci_park; i++)
    if (!strcmp(c->ci_park[i].q.client, q->client)) { /* one per client: the earlier one hears WAIT */
      finish_held(c, i, FEDC__V1__CHECK_IN_RESPONSE__ACTION__WAIT, FC_CI_AGAIN_MS);
      break;
    }
  if (c->nci_park == c->ci_park_cap) {
    if (c->ci_park_cap >= FC_CI_PARK_MAX) return FEDC_ERR_TOO_LARGE;
    uint32_t cap = c->ci_park_cap ? 2 * c->ci_park_cap : 64;
    struct coord_ci_park *np = realloc(c->ci_park, cap * sizeof *np);
    if (!np) return FEDC_ERR_NOMEM;
    c->ci_park = np, c->ci_park_cap = cap;
  }
  fc_engine_status es;
  fc_engine_get_status(c->engine, fc_now_ms(), &es);
  struct coord_ci_park *p = &c->ci_park[c->nci_park++];
  p->call = call;
  p->q = *q;
  p->until_ms = until_ms;
  p->round = es.round;
  p->state = es.state;
  fc_scall_park(call);
  return FEDC_OK;
}

uint32_t coord_ci_park_take_locked(fc_coord *c, uint64_t now_ms, coord_ci_again **out) {
  *out = NULL;
  if (!c->nci_park) return 0;
  fc_engine_status es;
  fc_engine_get_status(c->engine, now_ms, &es);
  uint32_t n = 0;
  coord_ci_again *again = NULL;
  for (uint32_t i = 0; i < c->nci_park;) {
    struct coord_ci_park *p = &c->ci_park[i];
    if (p->round != es.round || p->state != (int)es.state) {
      if (!again && !(again = malloc(c->nci_park * sizeof *again))) break; /* next tick, then */
      again[n++] = (coord_ci_again){p->call, p->q, p->until_ms};
      c->ci_park[i] = c->ci_park[--c->nci_park];
    } else if (now_ms >= p->until_ms) {
      finish_held(c, i, FEDC__V1__CHECK_IN_RESPONSE__ACTION__WAIT, FC_CI_AGAIN_MS); /* moves the last one into i */
    } else {
      i++;
    }
  }
  *out = again;
  return n;
}

void coord_ci_park_close(fc_coord *c) {
  pthread_mutex_lock(&c->mu);
  c->ci_park_closed = 1;
  fc_engine_status es;
  memset(&es, 0, sizeof es);
  if (c->nci_park) fc_engine_get_status(c->engine, fc_now_ms(), &es); /* none held before the engine exists */
  /* The federation ended: say so, not "wait". */
  Fedc__V1__CheckInResponse__Action act = es.state == FC_ENG_DONE ? FEDC__V1__CHECK_IN_RESPONSE__ACTION__DONE
                                                                   : FEDC__V1__CHECK_IN_RESPONSE__ACTION__WAIT;
  while (c->nci_park) finish_held(c, c->nci_park - 1, act, c->cfg.engine.poll_ms);
  pthread_mutex_unlock(&c->mu);
}

void coord_ci_park_free(fc_coord *c) {
  free(c->ci_park);
  c->ci_park = NULL;
  c->nci_park = c->ci_park_cap = 0;
}
