/*
 * fuzz_secagg_client.c - everything a coordinator sends a client during
 * secure aggregation, through the client core (client/secagg_client*.c):
 * the task's SecAggParams (read as the runtime reads them, rt_secagg_cfg),
 * then the poll answers of the four stages that take input (neighbour keys;
 * shares addressed to us; the survivor list; the neighbours' signatures),
 * with the masked input made in between as the runtime makes it.
 *
 * Input: up to five frames ([u16 length][bytes], fixture.h): the packed
 * Task, then one packed SecAggPollResponse per stage. A missing frame ends
 * the run there. The seed is client 1's part of the recorded round
 * (fixture.c), whose keys client 1 draws again on every run (deterministic
 * randomness), so a mutation of a late frame is checked with every earlier
 * stage passed: the fuzzer works on the deep states too.
 *
 * Properties: no crash; the core never reveals both shares of one peer:
 * the unmask answer names each owner once, with b_owner's share exactly for
 * the survivors we signed and s_owner^SK's for the others.
 */
#include <stdlib.h>
#include <string.h>

#include "client/runtime_int.h"
#include "fedc/error.h"
#include "fixture.h"
#include "fixture_pki.h"
#include "fuzz.h"

const long fuzz_iters = 400; /* ~1-5 ms each under ASan (signatures, certificate chains) */

static int done; /* the last input went through every stage */

static int in_list(const uint32_t *l, size_t n, uint32_t v) {
  for (size_t i = 0; i < n; i++)
    if (l[i] == v) return 1;
  return 0;
}

/* Never both shares of one peer, and the right one of each. */
static void check_unmask(const Fedc__V1__SecAggSubmitRequest *out, const uint32_t *survivors, size_t nsurv,
                         uint32_t me) {
  int own = 0;
  for (size_t i = 0; i < out->n_unmask; i++) {
    const Fedc__V1__SecAggUnmaskShare *u = out->unmask[i];
    for (size_t j = 0; j < i; j++)
      if (out->unmask[j]->owner == u->owner) abort();
    if (u->share.len != 32 || (int)u->self_seed != in_list(survivors, nsurv, u->owner)) abort();
    own += u->owner == me;
  }
  if (own != 1) abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  fix_sa_get(); /* before selecting our stream: the recording uses them all */
  done = 0;
  fix_reader r = {data, size};
  const uint8_t *f;
  size_t n;
  if (!fix_next_frame(&r, &f, &n)) return 0;
  Fedc__V1__Task *task = fedc__v1__task__unpack(NULL, n, f);
  if (!task) return 0;
  fc_sa_client *c = NULL;
  fc_sa_client_cfg cfg;
  char why[300];
  uint32_t *survivors = NULL;
  size_t nsurv = 0;
  Fedc__V1__SecAggSubmitRequest out = FEDC__V1__SEC_AGG_SUBMIT_REQUEST__INIT;
  if (!task->secagg || rt_secagg_cfg(task, FIX_SA_DIM, &cfg) != FEDC_OK) goto out;
  cfg.ca_pem = FIX_CA_PEM;
  cfg.cert_pem = FIX_C1_CERT_PEM;
  cfg.key_pem = FIX_C1_KEY_PEM;
  fix_rand_stream(1, 1); /* client 1's keys, as recorded */
  if (fc_sa_client_create(&cfg, &c, why, sizeof why) != FEDC_OK) goto out;
  if (fc_sa_client_advertise(c, &out) != FEDC_OK) goto out;
  fc_sa_submit_clear(&out);
  for (int stage = FC_SA_SHARE_KEYS; stage <= FC_SA_UNMASK; stage++) {
    if (!fix_next_frame(&r, &f, &n)) goto out;
    Fedc__V1__SecAggPollResponse *in = fedc__v1__sec_agg_poll_response__unpack(NULL, n, f);
    if (!in) goto out;
    int rc;
    switch (stage) {
    case FC_SA_SHARE_KEYS: rc = fc_sa_client_share_keys(c, in, &out); break;
    case FC_SA_MASKED: rc = fc_sa_client_receive_shares(c, in); break;
    case FC_SA_CONSISTENCY:
      rc = fc_sa_client_consistency(c, in, &out);
      if (rc == FEDC_OK) {
        nsurv = in->n_survivors;
        survivors = malloc((nsurv ? nsurv : 1) * sizeof *survivors);
        if (!survivors) abort();
        memcpy(survivors, in->survivors, nsurv * sizeof *survivors);
      }
      break;
    default:
      rc = fc_sa_client_unmask(c, in, &out);
      if (rc == FEDC_OK) check_unmask(&out, survivors, nsurv, cfg.index);
      break;
    }
    fedc__v1__sec_agg_poll_response__free_unpacked(in, NULL);
    if (rc != FEDC_OK) goto out;
    fc_sa_submit_clear(&out);
    if (stage == FC_SA_MASKED && fix_sa_masked_input(c, &cfg.params) != FEDC_OK) goto out;
  }
  if (fc_sa_client_state(c) != FC_SAC_DONE) abort();
  done = 1;
out:
  fc_sa_submit_clear(&out);
  fc_sa_client_destroy(c);
  free(survivors);
  fedc__v1__task__free_unpacked(task, NULL);
  return 0;
}

void fuzz_seed(uint8_t **data, size_t *size) {
  const fix_sa *sa = fix_sa_get();
  *data = NULL;
  *size = 0;
  fix_put_frame(data, size, sa->task[1].p, sa->task[1].n);
  for (int stage = FC_SA_SHARE_KEYS; stage <= FC_SA_UNMASK; stage++)
    fix_put_frame(data, size, sa->poll[stage][1].p, sa->poll[stage][1].n);
  /* The recorded answers must take a fresh client 1 through the whole round. */
  LLVMFuzzerTestOneInput(*data, *size);
  if (!done) abort();
}
