/*
 * fuzz_secagg_server.c - everything a client can submit during secure
 * aggregation, through the coordinator's core (coordinator/secagg_server*.c,
 * fc_sa_server_submit): cohort member 1 sends fuzzed messages while the
 * others send their recorded ones (fixture.c), and the core runs the round
 * as the coordinator drives it: submissions, the masked-input commits, the
 * other members' polls, stage closes, then reconstruction
 * (fc_sa_server_unmask_terms) on whatever shares were kept.
 *
 * Input: up to four frames ([u16 length][bytes], fixture.h), member 1's
 * packed SecAggSubmitRequest for advertise, share keys, consistency and
 * unmask; a missing frame is member 1 dropping out before that stage (and
 * every later one), an undecodable one a submission the transport refuses.
 * The seed is member 1's recorded part, so every stage is reached.
 *
 * Properties: no crash; a refused submission changes nothing, so the seed
 * completes the round; polls never crash on what was kept.
 */
#include <stdlib.h>
#include <string.h>

#include "crypto/sa_crypto.h"
#include "fedc/error.h"
#include "fixture.h"
#include "fuzz.h"

const long fuzz_iters = 400; /* ~3-6 ms each under ASan */

static int completed; /* the last input's round reconstructed its masks */

/* Every member polls the stage now open, as the coordinator would answer. */
static void poll_all(fc_sa_server *srv, int stage) {
  for (uint32_t i = 1; i <= FIX_SA_N; i++) {
    Fedc__V1__SecAggPollResponse resp;
    fc_sa_server_poll(srv, i, stage, &resp);
    size_t n = protobuf_c_message_get_packed_size(&resp.base);
    uint8_t *b = malloc(n ? n : 1);
    if (!b) abort();
    protobuf_c_message_pack(&resp.base, b);
    free(b);
    fc_sa_poll_clear(&resp);
  }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  const fix_sa *sa = fix_sa_get();
  completed = 0;
  fc_sa_server *srv = fix_sa_server(sa);
  char why[300];
  fix_reader r = {data, size};
  int present = 1; /* member 1 still in the protocol (sends a frame per stage) */
  for (int stage = FC_SA_ADVERTISE; stage <= FC_SA_UNMASK; stage++) {
    if (stage == FC_SA_MASKED) {
      for (uint32_t i = 1; i <= FIX_SA_N; i++)
        if ((i > 1 || present) && fc_sa_server_masked_allowed(srv, i)) fc_sa_server_masked_done(srv, i);
    } else {
      const uint8_t *f;
      size_t n;
      if (present && !fix_next_frame(&r, &f, &n)) present = 0;
      if (present) {
        Fedc__V1__SecAggSubmitRequest *m = fedc__v1__sec_agg_submit_request__unpack(NULL, n, f);
        if (m) {
          fc_sa_server_submit(srv, 1, sa->cert_sha256[1], m, why, sizeof why);
          fedc__v1__sec_agg_submit_request__free_unpacked(m, NULL);
        }
      }
      for (uint32_t i = 2; i <= FIX_SA_N; i++) {
        const fix_blob *b = &sa->submit[stage][i];
        Fedc__V1__SecAggSubmitRequest *m = fedc__v1__sec_agg_submit_request__unpack(NULL, b->n, b->p);
        if (!m) abort();
        fc_sa_server_submit(srv, i, sa->cert_sha256[i], m, why, sizeof why);
        fedc__v1__sec_agg_submit_request__free_unpacked(m, NULL);
      }
    }
    fc_sa_server_stage_complete(srv, 0);
    if (fc_sa_server_close_stage(srv, why, sizeof why) != FEDC_OK) goto out;
    if (stage < FC_SA_UNMASK) poll_all(srv, stage + 1);
  }
  fc_sa_mask_term *terms = NULL;
  size_t nterms = 0;
  if (fc_sa_server_unmask_terms(srv, &terms, &nterms, why, sizeof why) == FEDC_OK) {
    completed = 1;
    fc_wipe(terms, nterms * sizeof *terms);
    free(terms);
  }
out:
  fc_sa_server_destroy(srv);
  return 0;
}

void fuzz_seed(uint8_t **data, size_t *size) {
  const fix_sa *sa = fix_sa_get();
  *data = NULL;
  *size = 0;
  static const int stages[] = {FC_SA_ADVERTISE, FC_SA_SHARE_KEYS, FC_SA_CONSISTENCY, FC_SA_UNMASK};
  for (size_t i = 0; i < sizeof stages / sizeof *stages; i++)
    fix_put_frame(data, size, sa->submit[stages[i]][1].p, sa->submit[stages[i]][1].n);
  LLVMFuzzerTestOneInput(*data, *size);
  if (!completed) abort();
}
