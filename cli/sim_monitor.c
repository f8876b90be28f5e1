/*
 * sim_monitor.c - `fedc sim` following its federation as admin: poll the
 * round history, fetch each new completed version (hash-verified stream) and
 * evaluate it on the 10,000-image test set, hand each round to
 * sim_output.c.
 *
 * Rounds are reported in order. A version that cannot be fetched is tried
 * again on the next polls (a download slot may be busy), EVAL_ATTEMPTS
 * times, then given up on (the run then ends with status 1). A version the
 * coordinator no longer has because --keep-versions pruned it (the sim fell
 * more than that many versions behind) cannot come back: its round gets a
 * row without accuracy and loss at once, and a warning.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <grpc/status.h>

#include "cli/sim.h"
#include "common/clock.h"
#include "fedc/error.h"
#include "fedc/v1/fedc.pb-c.h"
#include "transport/tensor_stream.h"

#define EVAL_ATTEMPTS 5

/* Fetch a version as admin and evaluate it on the test set. *code gets the
 * gRPC status (NOT_FOUND: the coordinator has no such version). */
static int eval_version(sim_monitor *m, uint64_t version, double *acc, double *loss, double *backdoor, int *code,
                        char *err, size_t errlen) {
  Fedc__V1__GetModelRequest req = FEDC__V1__GET_MODEL_REQUEST__INIT;
  req.version = version;
  req.averaged = m->averaged;
  fc_ccall *call = NULL;
  fc_status st;
  memset(&st, 0, sizeof st);
  int rc = fc_ccall_start(m->ch, "/fedc.v1.Admin/GetModel", FC_RPC_SERVER_STREAM, &req.base, 60000, &call, &st);
  if (rc == FEDC_OK) {
    fc_model_spec spec;
    float *w = NULL;
    uint64_t total = 0;
    rc = fc_tensor_stream_recv(call, 1ull << 32, NULL, &spec, &w, &total, NULL, &st);
    fc_ccall_destroy(call);
    if (rc == FEDC_OK) {
      if (total != fc_mlp_nparams(&m->mlp) * sizeof(float)) rc = FEDC_ERR_SHAPE;
      else
        rc = fc_mlp_eval(&m->mlp, m->ws, w, &m->test, NULL, m->test.n, acc, loss);
      if (rc == FEDC_OK) *backdoor = sim_backdoor_rate(m, w);
      free(w);
    }
  }
  *code = st.code;
  if (rc != FEDC_OK) snprintf(err, errlen, "%s", st.detail[0] ? st.detail : fedc_strerror(rc));
  return rc;
}

int sim_poll_rounds(sim_monitor *m, const sim_opts *o) {
  Fedc__V1__RoundsRequest req = FEDC__V1__ROUNDS_REQUEST__INIT;
  req.limit = 1000;
  ProtobufCMessage *resp = NULL;
  fc_status st;
  if (fc_call_unary(m->ch, "/fedc.v1.Admin/Rounds", &req.base, &fedc__v1__rounds_response__descriptor, &resp, 10000,
                    &st) != FEDC_OK)
    return -1;
  Fedc__V1__RoundsResponse *r = (Fedc__V1__RoundsResponse *)resp;
  for (size_t i = 0; i < r->n_rounds; i++) {
    Fedc__V1__RoundRecord *rec = r->rounds[i];
    if (rec->round <= m->seen_round) continue;
    if (strcmp(rec->outcome, "completed") != 0) {
      m->seen_round = rec->round;
      m->abandoned++;
      fprintf(stderr, "fedc sim: round %llu abandoned: %s\n", (unsigned long long)rec->round, rec->reason);
      continue;
    }
    /* Its model's federated evaluation is due or running: report the row
     * once it is in (rounds stay in order; the coordinator ends it by its
     * deadline at the latest). */
    if (rec->eval && rec->eval->outcome && strcmp(rec->eval->outcome, "pending") == 0) break;
    double acc = NAN, loss = NAN, backdoor = NAN;
    char err[300];
    int code = 0;
    if (eval_version(m, rec->version, &acc, &loss, &backdoor, &code, err, sizeof err) != FEDC_OK) {
      acc = loss = backdoor = NAN;
      if (code == GRPC_STATUS_NOT_FOUND && o->keep_versions) {
        fprintf(stderr,
                "fedc sim: model v%llu was pruned (--keep-versions %llu) before it could be evaluated: round %llu "
                "has no accuracy\n",
                (unsigned long long)rec->version, o->keep_versions, (unsigned long long)m->completed + 1);
        m->pruned++;
      } else if (++m->eval_failures < EVAL_ATTEMPTS) {
        break; /* rounds are reported in order: retry from here */
      } else {
        fprintf(stderr, "fedc sim: cannot evaluate model v%llu: %s\n", (unsigned long long)rec->version, err);
      }
    } else {
      m->reported++;
    }
    m->eval_failures = 0;
    m->seen_round = rec->round;
    m->completed++;
    sim_row row;
    row.round = m->completed;
    row.round_id = rec->round;
    row.version = rec->version;
    row.accuracy = acc;
    row.loss = loss;
    row.backdoor = backdoor;
    /* NaN from the coordinator: unknown (distributed DP). */
    row.train_loss = isfinite(rec->mean_train_loss) ? (double)rec->mean_train_loss : NAN;
    row.epsilon = rec->dp_epsilon > 0 ? rec->dp_epsilon : NAN;
    int fed = rec->eval && rec->eval->outcome && strcmp(rec->eval->outcome, "completed") == 0;
    row.fed_accuracy = fed ? rec->eval->accuracy : NAN;
    row.fed_loss = fed ? rec->eval->loss : NAN;
    row.fed_examples = fed ? rec->eval->examples : NAN;
    row.fed_clients = fed ? rec->eval->clients : 0;
    if (rec->eval && rec->eval->outcome && strcmp(rec->eval->outcome, "abandoned") == 0)
      fprintf(stderr, "fedc sim: the federated evaluation of round %llu's model was abandoned: %s\n",
              (unsigned long long)rec->round, rec->eval->reason ? rec->eval->reason : "");
    row.participants = rec->participants;
    row.bytes = (uint64_t)(rec->bytes_in + rec->bytes_out);
    row.seconds = (double)(rec->ended_unix_ms - rec->started_unix_ms) / 1000.0;
    row.elapsed = fc_mono_s() - m->t0;
    sim_out_row(&m->out, o, &row);
  }
  protobuf_c_message_free_unpacked(resp, NULL);
  return (int)m->completed;
}

int sim_coordinator_settings(sim_monitor *m, char *sopt, size_t soptlen, char *dp, size_t dplen) {
  Fedc__V1__StatusRequest req = FEDC__V1__STATUS_REQUEST__INIT;
  ProtobufCMessage *resp = NULL;
  fc_status st;
  sopt[0] = dp[0] = 0;
  if (fc_call_unary(m->ch, "/fedc.v1.Admin/Status", &req.base, &fedc__v1__status_response__descriptor, &resp, 10000,
                    &st) != FEDC_OK)
    return -1;
  Fedc__V1__StatusResponse *s = (Fedc__V1__StatusResponse *)resp;
  snprintf(sopt, soptlen, "%s", s->server_optimizer ? s->server_optimizer : "");
  snprintf(dp, dplen, "%s", s->dp ? s->dp : "");
  protobuf_c_message_free_unpacked(resp, NULL);
  return 0;
}
