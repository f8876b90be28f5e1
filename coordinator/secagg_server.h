/*
 * secagg_server.h - the coordinator side of secure aggregation as an I/O-free
 * state machine (Bonawitz et al. 2017, Fig. 4 "Server", active version; Bell
 * et al. 2020 neighbour graph). The gRPC handlers feed it submissions and
 * polls under the coordinator's lock; the round engine decides when a stage
 * closes (all expected messages in, or its deadline) and calls
 * fc_sa_server_close_stage, which decides who dropped at which stage. That
 * status alone decides which share is asked of whom in the unmasking.
 *
 * Stages and who survives each (U0 = cohort):
 *   ADVERTISE   U1 = signed keys received (the certificate is the caller's
 *               TLS certificate, of the federation, chaining to its CA)
 *   SHARE_KEYS  U2 = shares received, one to every neighbour in U1
 *   MASKED      U3 = masked inputs committed to the accumulator
 *   CONSISTENCY U4 = signatures over U3 received
 *   UNMASK      U5 = unmask shares received; then reconstruct:
 *               b_v for v in U3 (self masks to remove),
 *               s_v^SK for v in U2 \ U3 (pairwise masks its neighbours in U3
 *               added for it; checked against the advertised s_v^PK)
 * Each stage needs at least t survivors, and MASKED at least min_survivors
 * (secagg.h), else the round is abandoned with the reason; nothing
 * individual is ever revealed (shares of b_v are only asked for survivors,
 * shares of s_v^SK only for the dropped, and the clients check that through
 * the signed survivor list).
 */
#ifndef FEDC_COORD_SECAGG_SERVER_H
#define FEDC_COORD_SECAGG_SERVER_H

#include <stddef.h>
#include <stdint.h>

#include "fedc/v1/fedc.pb-c.h"
#include "secagg/secagg.h"

typedef struct fc_sa_server fc_sa_server;

int fc_sa_server_create(const fc_sa_params *p, const char *const *names, fc_sa_server **out, char *why,
                        size_t whylen);
void fc_sa_server_destroy(fc_sa_server *s);
/* The stage open now (FC_SA_*), or 0 when all closed (ready to unmask) or aborted. */
int fc_sa_server_stage(const fc_sa_server *s);
const uint8_t *fc_sa_server_session(const fc_sa_server *s);
const fc_sa_params *fc_sa_server_params(const fc_sa_server *s);
/* The cohort's names in index order (names[0] is index 1). */
const char *const *fc_sa_server_names(const fc_sa_server *s);
/* Cohort index of a client name, 0 if not in the cohort. */
uint32_t fc_sa_server_index(const fc_sa_server *s, const char *name);

/* The trust advertised certificates are checked against: the federation
 * CA (PEM, copied) and the federation's name. Without it every key
 * advertisement is refused. FEDC_OK or FEDC_ERR_NOMEM. */
int fc_sa_server_set_trust(fc_sa_server *s, const char *ca_pem, const char *federation);
/* Certificates verified against that CA in earlier rounds (crypto/cert_cache.h),
 * borrowed (must outlive the session; used under the caller's lock): each
 * member's certificate is then parsed and chain-checked once per coordinator,
 * not once per round. Ignored if it trusts another CA than set_trust's. */
struct fc_cert_cache;
void fc_sa_server_use_cert_cache(fc_sa_server *s, struct fc_cert_cache *cache);

/* A submission from cohort member `index` for the open stage, made over a TLS
 * session whose peer certificate (DER) has SHA-256 caller_cert_sha256: the
 * certificate advertised with the keys must be that one. FEDC_OK, or
 * FEDC_ERR_PROTOCOL / INVALID / REJECTED, or FEDC_ERR_PERMISSION for an
 * advertised certificate of another CA, another federation or another TLS
 * session, with one line in why; a refused submission changes nothing. */
int fc_sa_server_submit(fc_sa_server *s, uint32_t index, const uint8_t caller_cert_sha256[32],
                        const Fedc__V1__SecAggSubmitRequest *m, char *why, size_t whylen);
/* Masked input: may `index` upload now? Then "it was committed". */
int fc_sa_server_masked_allowed(const fc_sa_server *s, uint32_t index);
void fc_sa_server_masked_done(fc_sa_server *s, uint32_t index);
/* Member `index` said Leave (authenticated by its TLS session): from now on
 * no stage waits for a message of it. A withdrawn member is what a silent
 * dropout is when the stage closes (Bonawitz et al. 2017: not in the next
 * U_i; after sharing, its pairwise masks are rebuilt from the survivors'
 * shares), so the set of who dropped, the threshold and the dropout budget
 * are unchanged; only the wait for the stage's deadline goes. A message it
 * still sends while the stage is open is taken as before. Before it
 * advertised (the engine dropped it), a later advertisement of it does not
 * count either. 1 the first time, for a member still in the protocol (it
 * advertised, and no close dropped it since); else 0. */
int fc_sa_server_withdraw(fc_sa_server *s, uint32_t index);
/* Everyone still in the protocol (and not withdrawn) has sent what the open
 * stage wants. expected_advertise: how many of the cohort are still expected
 * to advertise. */
int fc_sa_server_stage_complete(const fc_sa_server *s, uint32_t expected_advertise);
/* Close the open stage: FEDC_OK and the next stage opens (or, after UNMASK,
 * reconstruction is ready), or FEDC_ERR_REJECTED with the reason: abandon. */
int fc_sa_server_close_stage(fc_sa_server *s, char *why, size_t whylen);

/* The answer to a poll for `stage` from `index`. Pointers in *out refer to
 * the server's memory: pack it before the next call into the server, then
 * release with fc_sa_poll_clear. */
void fc_sa_server_poll(fc_sa_server *s, uint32_t index, int stage, Fedc__V1__SecAggPollResponse *out);
void fc_sa_poll_clear(Fedc__V1__SecAggPollResponse *m);
/* When a WAIT answer should tell its caller to poll again (ms), at now_ms
 * (any monotonic clock; the core keeps no clock of its own). A poll waits
 * for the next stage, which opens when the last expected message of the open
 * one arrives, so what a waiting client loses is the time between that
 * message and its next poll: FC_SA_POLL_MS while many messages are still
 * due, FC_SA_POLL_TAIL_MS once at most max(2, expected / 8) are, for
 * FC_SA_POLL_TAIL_FOR_MS from the first poll that saw the stage's tail (a
 * member that never sends, and the stage waits for its deadline, must not
 * keep the cohort polling fast). expected_advertise as for
 * fc_sa_server_stage_complete. */
#define FC_SA_POLL_MS 100u
#define FC_SA_POLL_TAIL_MS 20u
#define FC_SA_POLL_TAIL_FOR_MS 500u
uint32_t fc_sa_server_wait_hint(fc_sa_server *s, uint32_t expected_advertise, uint64_t now_ms);
/* Abort: every later poll answers ABORTED with this reason. */
void fc_sa_server_abort(fc_sa_server *s, const char *why);

/* After UNMASK closed: reconstruct the secrets (Shamir, correcting bad
 * shares where they can be told apart) and list the masks to remove from the
 * sum of U3's inputs. *terms malloc'd (caller wipes and frees).
 * FEDC_ERR_REJECTED with the reason if a secret cannot be rebuilt to pass
 * its check. */
int fc_sa_server_unmask_terms(fc_sa_server *s, fc_sa_mask_term **terms, size_t *nterms, char *why, size_t whylen);

/* After fc_sa_server_unmask_terms (successful or not): for how many secrets
 * member `index`'s unmask share was named wrong, i.e. off the polynomial the
 * other shares of the secret decode to (see fc_shamir_decode for when that
 * is decided); 0 for a member never named. The share's sender is named,
 * never the secret's owner. */
uint32_t fc_sa_server_bad_sent(const fc_sa_server *s, uint32_t index);
/* Secrets rebuilt past bad shares whose senders could not be told apart. */
uint32_t fc_sa_server_unattributed(const fc_sa_server *s);

/* How many clients were left after each stage (advertise..unmask); 0 for a
 * stage not closed yet. */
void fc_sa_server_remaining(const fc_sa_server *s, uint32_t out[5]);

#endif
