/*
 * runtime_leave.c - a client's last word (issue 21): when fedc_client_run
 * returns for any reason but DONE, the runtime tells the coordinator it is
 * leaving (/fedc.v1.Coordinator/Leave, protocol 1.6), so the coordinator
 * drops it at once instead of counting it live for its liveness window,
 * selecting it again and abandoning the round at the pick-up deadline.
 *
 * Best-effort: one call with a short deadline (LEAVE_TIMEOUT_MS), no retry;
 * a coordinator that does not answer in time (or an old one: UNIMPLEMENTED)
 * falls back to the liveness window. Not sent when there is nobody to tell:
 * no check-in was ever answered, or the last failure was the coordinator
 * being unreachable (that would only add the deadline to the exit), nor
 * after DONE (the federation is over).
 *
 * The channel was cancelled by fedc_client_stop (every call started on it
 * would be): it is uncancelled under c->mu, which fedc_client_stop holds
 * while it cancels, so a stop already under way cannot cancel the Leave, and
 * a second stop still can.
 *
 * rt_give_up (protocol 1.19) is the same call with a round: this round's
 * task failed on our side before any upload (the trainer, a non-finite
 * update, a model that did not verify: runtime.c give_up_if_ours),
 * so the coordinator stops waiting for us in that round (a SecAgg round's
 * later stages included) while we stay in the federation. Only we know we
 * will not retry it; a coordinator that had already dropped us changes
 * nothing.
 */
#include <stdio.h>

#include "client/runtime_int.h"
#include "common/log.h"
#include "fedc/v1/fedc.pb-c.h"

#define MOD "client"
#define LEAVE_TIMEOUT_MS 2000
/* Not on the way out: a give-up can wait longer for a loaded coordinator
 * (undelivered, the round waits for us until its deadline). */
#define GIVE_UP_TIMEOUT_MS 10000

static int send_leave(fedc_client *c, const Fedc__V1__LeaveRequest *req, int timeout_ms, fc_status *st) {
  ProtobufCMessage *resp = NULL;
  int rc = fc_call_unary(c->ch, "/fedc.v1.Coordinator/Leave", &req->base, &fedc__v1__leave_response__descriptor, &resp,
                         timeout_ms, st);
  if (resp) protobuf_c_message_free_unpacked(resp, NULL);
  return rc;
}

void rt_leave(fedc_client *c, int rc) {
  if (!c->reached || c->heard_done) return;
  Fedc__V1__LeaveRequest req = FEDC__V1__LEAVE_REQUEST__INIT;
  switch (rc) {
  case FEDC_ERR_STOPPED: req.reason = FEDC__V1__LEAVE_REQUEST__REASON__STOPPED; break;
  case FEDC_OK: req.reason = FEDC__V1__LEAVE_REQUEST__REASON__ROUNDS_DONE; break;
  case FEDC_ERR_UNAVAILABLE:
  case FEDC_ERR_TIMEOUT:
  case FEDC_ERR_TLS:
  case FEDC_ERR_CERT_EXPIRED:
  case FEDC_ERR_PERMISSION:
  case FEDC_ERR_VERSION: return; /* the coordinator cannot hear us */
  default: req.reason = FEDC__V1__LEAVE_REQUEST__REASON__FAILED; break;
  }
  req.last_round = c->last_round;
  if (rc == FEDC_ERR_STOPPED) FC_INFO(MOD, "stopping: telling the coordinator this client leaves");
  pthread_mutex_lock(&c->mu);
  fc_channel_uncancel(c->ch);
  pthread_mutex_unlock(&c->mu);
  fc_status st;
  if (send_leave(c, &req, LEAVE_TIMEOUT_MS, &st) != FEDC_OK)
    FC_DEBUG(MOD, "leave not delivered (%s): the coordinator counts this client live until its liveness window passes",
             st.detail);
}

void rt_give_up(fedc_client *c, uint64_t round) {
  if (!round || atomic_load(&c->stop)) return; /* stopping: rt_leave says more */
  Fedc__V1__LeaveRequest req = FEDC__V1__LEAVE_REQUEST__INIT;
  req.reason = FEDC__V1__LEAVE_REQUEST__REASON__TASK_FAILED;
  req.round = round;
  req.last_round = c->last_round;
  fc_status st;
  if (send_leave(c, &req, GIVE_UP_TIMEOUT_MS, &st) != FEDC_OK)
    FC_DEBUG(MOD, "round %llu: giving it up not delivered (%s): the coordinator waits for us until its deadline",
             (unsigned long long)round, st.detail);
}
