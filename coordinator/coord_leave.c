/*
 * coord_leave.c - clients leaving and cohort members replaced (issue 21).
 *
 * Owns: the Leave handler (/fedc.v1.Coordinator/Leave, protocol 1.6) and
 * the log line of a pick-up deadline that replaced members. May call: the
 * engine (under c->mu), the audit log, the logger; nothing of the driver.
 *
 * Why a Leave call: without it a client stopped with Ctrl-C stayed live for
 * the liveness window (30 s by default), was selected again, and each round
 * it was in was abandoned at the pick-up deadline, throwing away the other
 * members' accepted updates. Now the engine drops it at once (engine.c says
 * when it is replaced and when the cohort shrinks); the round goes on.
 *
 * Records: one audit record "leave" {client, reason, outcome[, round,
 * replacement]} when a live client leaves, appended under c->mu before the
 * engine's change can be seen by anyone (a replacement's check-in waits on
 * the lock), as audit.h asks. A Leave from a client that is not live (never
 * checked in, or left already) changes nothing and records nothing, so a
 * client cannot grow the log faster than its check-ins (rate-limited) let it.
 * Under secure aggregation a replacement rebuilds the session: the driver
 * does it at its next tick (the engine returns STARTED; check-ins wait).
 * A member that leaves after it advertised its keys is withdrawn in the
 * SecAgg core (fc_sa_server_withdraw): the stages after that no longer wait
 * for its messages until their deadline; it drops out as a silent member
 * would, at the close of the first stage it sends nothing for. The audit
 * record then says "secagg": "withdrawn".
 *
 * A Leave with a round (1.19) gives that one task up (the client's trainer
 * failed, or its model did not verify): the same drop and withdrawal, but
 * the client stays live, and nothing happens unless it holds a task of that
 * round (fc_engine_give_up). Without it a failed trainer held its round
 * (and a SecAgg round's masked stage) until the deadline.
 */
#include <jansson.h>
#include <stdio.h>

#include "common/clock.h"
#include "common/log.h"
#include "coordinator/audit.h"
#include "coordinator/coord_int.h"
#include "coordinator/secagg_server.h"

#define MOD "coordinator"

static const char *reason_name(int r) {
  switch (r) {
  case FEDC__V1__LEAVE_REQUEST__REASON__STOPPED: return "stopped";
  case FEDC__V1__LEAVE_REQUEST__REASON__ROUNDS_DONE: return "rounds done";
  case FEDC__V1__LEAVE_REQUEST__REASON__FAILED: return "failed";
  case FEDC__V1__LEAVE_REQUEST__REASON__TASK_FAILED: return "task failed";
  default: return "unspecified";
  }
}

static const char *outcome_name(int o) {
  switch (o) {
  case FC_LEAVE_IDLE: return "idle";
  case FC_LEAVE_DROPPED: return "dropped";
  case FC_LEAVE_REPLACED: return "replaced";
  default: return "gone";
  }
}

/* Under c->mu: withdraw `client` from this round's SecAgg session (and,
 * with `eval`, the evaluation's) if it is a member, and check the open stage
 * again (it may now have everything it waits for). 1 if it was still in the
 * round's protocol: its later stages go on without it. */
static int sa_withdraw(fc_coord *c, const char *client, int eval) {
  if (eval) coord_eval_sa_withdraw(c, client);
  uint32_t idx;
  int b = c->nsa ? coord_sa_find(c, client, &idx) : -1;
  if (b < 0 || c->sa_dead[b]) return 0;
  int in = fc_sa_server_withdraw(c->sa[b], idx);
  coord_sa_check_complete(c);
  return in;
}

/* Under c->mu, once a Leave or a give-up changed something: an async
 * update still streaming for the dropped task can never count
 * (engine_async.c), so its stream ends now; and the audit record "leave"
 * (with the round if `round`), before anyone can see the change. */
static void leave_applied(fc_coord *c, const fc_peer *peer, const char *why, const char *outcome, uint64_t round,
                          const fc_leave_info *li, int out, int withdrawn) {
  if (c->cfg.engine.async && out == FC_LEAVE_DROPPED) coord_cancel_client_uploads(c, peer->name);
  json_t *f = json_pack("{s:s,s:s,s:s}", "client", peer->name, "reason", why, "outcome", outcome);
  if (f && round) json_object_set_new(f, "round", json_integer((json_int_t)round));
  if (f && out == FC_LEAVE_REPLACED) json_object_set_new(f, "replacement", json_string(li->replacement));
  if (f && withdrawn) json_object_set_new(f, "secagg", json_string("withdrawn"));
  fc_audit_append(c->audit, "leave", f);
}

/* Leave with a round (1.19): the client gives that round's task up and
 * stays. Recorded only when it changed something (dropped from the cohort,
 * or withdrawn from the SecAgg session), so a client repeating it cannot
 * grow the audit log; a round it holds no task of changes nothing. */
static void give_up(fc_coord *c, fc_scall *call, const fc_peer *peer, uint64_t round) {
  fc_leave_info li;
  pthread_mutex_lock(&c->mu);
  int out = fc_engine_give_up(c->engine, peer->name, round, fc_now_ms(), &li);
  /* The sessions are always the running round's (made and freed under
   * c->mu with the round); checked, not assumed, before a withdrawal. */
  int withdrawn = out != FC_LEAVE_GONE && c->nsa && fc_sa_server_params(c->sa[0])->round == round &&
                  sa_withdraw(c, peer->name, 0);
  int changed = out == FC_LEAVE_DROPPED || out == FC_LEAVE_REPLACED || withdrawn;
  if (changed)
    leave_applied(c, peer, "task failed", out == FC_LEAVE_IDLE ? "withdrawn" : outcome_name(out), round, &li, out,
                  withdrawn);
  pthread_mutex_unlock(&c->mu);
  if (!changed)
    FC_DEBUG(MOD, "%s gave up round %llu, which it holds no open task of", peer->name, (unsigned long long)round);
  else if (out == FC_LEAVE_REPLACED)
    FC_INFO(MOD, "client %s gave up round %llu (its task failed): replaced by %s", peer->name,
            (unsigned long long)round, li.replacement);
  else
    FC_INFO(MOD, "client %s gave up round %llu (its task failed): %s", peer->name, (unsigned long long)round,
            withdrawn ? "no later secure-aggregation stage waits for it" : "the round no longer waits for it");
  Fedc__V1__LeaveResponse resp = FEDC__V1__LEAVE_RESPONSE__INIT;
  fc_scall_finish(call, GRPC_STATUS_OK, NULL, &resp.base);
}

void coord_h_leave(fc_scall *call, void *ctx) {
  fc_coord *c = ctx;
  const fc_peer *peer = fc_scall_peer(call);
  const Fedc__V1__LeaveRequest *req = (const Fedc__V1__LeaveRequest *)fc_scall_request(call);
  /* The contact audited, and a second connection of the identity from
   * another address refused under refuse_concurrent_identity, as for a
   * check-in: a copied certificate must not give up (or end) its owner's
   * rounds (a hostile review's finding). */
  if (coord_audit_peer(c, call, peer)) return;
  if (req->round) {
    give_up(c, call, peer, req->round);
    return;
  }
  /* A graceful stop then a restart (from a new port) is not two devices
   * sharing an identity: the Leave ends this address's connection. */
  coord_anomaly_left(c, peer);
  const char *why = reason_name(req->reason);
  fc_leave_info li;
  pthread_mutex_lock(&c->mu);
  int out = fc_engine_leave(c->engine, peer->name, fc_now_ms(), &li);
  int withdrawn = sa_withdraw(c, peer->name, 1);
  if (out != FC_LEAVE_GONE) leave_applied(c, peer, why, outcome_name(out), li.round, &li, out, withdrawn);
  pthread_mutex_unlock(&c->mu);
  if (withdrawn)
    FC_INFO(MOD, "client %s left (%s) during secure aggregation: no later stage waits for it", peer->name, why);
  switch (out) {
  case FC_LEAVE_IDLE: FC_INFO(MOD, "client %s left (%s)", peer->name, why); break;
  case FC_LEAVE_DROPPED:
    FC_INFO(MOD, "client %s left (%s): dropped from round %llu, whose cohort is now %u", peer->name, why,
            (unsigned long long)li.round, li.selected);
    break;
  case FC_LEAVE_REPLACED:
    FC_INFO(MOD, "client %s left (%s): replaced in round %llu by %s%s", peer->name, why, (unsigned long long)li.round,
            li.replacement,
            c->cfg.engine.secagg ? " (no task had gone out: the secure aggregation session restarts)" : "");
    break;
  default: FC_DEBUG(MOD, "leave from %s, which was not live", peer->name); break;
  }
  Fedc__V1__LeaveResponse resp = FEDC__V1__LEAVE_RESPONSE__INIT;
  fc_scall_finish(call, GRPC_STATUS_OK, NULL, &resp.base);
}

void coord_log_replaced(fc_coord *c) {
  uint32_t missed, added;
  fc_engine_last_replacement(c->engine, &missed, &added);
  fc_engine_status es;
  fc_engine_get_status(c->engine, fc_now_ms(), &es);
  FC_INFO(MOD,
          "round %llu: %u of the cohort did not pick up their task by the deadline: %u replaced from the live pool",
          (unsigned long long)es.round, missed, added);
}
