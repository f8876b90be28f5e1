/*
 * sa_harness.h - an in-process secure-aggregation round: n simulated clients
 * run through the real client and coordinator cores (no sockets), every
 * message packed and unpacked as on the wire, dropouts injected at every
 * stage from a seed, and hooks through which a test plays a misbehaving
 * coordinator or client. Used by tests/unit/test_secagg.c and bench/.
 */
#ifndef FEDC_TESTS_SA_HARNESS_H
#define FEDC_TESTS_SA_HARNESS_H

#include <stddef.h>
#include <stdint.h>

#include "fedc/v1/fedc.pb-c.h"
#include "secagg/secagg.h"

typedef struct sa_harness_cfg {
  uint32_t n, k, t;
  uint32_t min_survivors; /* fc_sa_params.min_survivors (0: only t) */
  uint64_t dim;
  uint64_t max_weight;
  float clip;
  uint64_t round;
  uint64_t seed;         /* drives data, dropouts and the graph seed */
  double drop[6];        /* drop[FC_SA_*]: chance a client vanishes before sending that stage's message */
  const char *pki_dir;   /* holds ca.crt and client-c%05u.{crt,key} for 1..n (sa_harness_pki) */
  int threads;           /* unmasking threads */
  const fc_prg_ops *prg; /* NULL: AES-CTR */
  /* A misbehaving coordinator: change the poll answer client `index` is about to read. */
  void (*tamper_poll)(void *ctx, int stage, uint32_t index, Fedc__V1__SecAggPollResponse *resp);
  /* A misbehaving client: change what it is about to submit. */
  void (*tamper_submit)(void *ctx, int stage, uint32_t index, Fedc__V1__SecAggSubmitRequest *req);
  void *ctx;
  uint8_t *session_out;  /* if set: receives the session id (32 bytes) before the first stage */
  /* If set: every client's (fc_sa_client_cfg.cert_cache) and the
   * coordinator's (fc_sa_server_use_cert_cache) verified certificates, as a
   * runtime keeps them across rounds. NULL: each keeps its own. */
  struct fc_cert_cache *cert_cache;
  /* As the runtime does: each client masks its input ahead of time right
   * after sending its shares (fc_sa_client_premask), then takes out the
   * masks of neighbours that sent none. 0: all masking after the shares. */
  int premask;
  uint32_t quant_bits;   /* narrow ring (secagg/ring.c): b-bit inputs (max_weight must be 1); 0 = 32-bit ring */
  uint32_t ring_bits;    /* ... its width; 0 = fc_sa_ring_bits(n, quant_bits) */
  float quant_range;     /* ... a coordinate's range (0 = clip) */
  /* A vanishing client says Leave first, as a stopped runtime does: the
   * coordinator withdraws it (fc_sa_server_withdraw) before the stage closes. */
  int withdraw;
  /* This cohort index (0: none) says Leave right after it advertised, while
   * the others still advertise: counted out of the advertise stage. */
  uint32_t leave_after_advertise;
  /* This cohort index (0: none) says Leave just before its message of stage
   * leave_then_send_stage and then sends it, and the later ones, anyway. */
  uint32_t leave_then_send;
  int leave_then_send_stage;
} sa_harness_cfg;

typedef struct sa_harness_result {
  int completed;            /* 1: the coordinator produced a sum */
  char why[256];            /* abandon reason */
  uint32_t remaining[5];
  uint32_t client_aborts;   /* clients that aborted on their own */
  char client_why[256];     /* the first client's abort reason */
  uint32_t submit_refused;  /* submissions the coordinator core refused */
  char submit_why[256];     /* the first refusal */
  int exact;                /* 1: unmasked sum == sum of the survivors' quantized vectors, bit for bit */
  double max_abs_err;       /* decoded average vs the float weighted average of the survivors */
  double err_bound;         /* n / (scale W): the documented worst case */
  double client_mask_s;     /* mean seconds one client spent masking */
  double client_stage_s[6]; /* [FC_SA_*]: CPU seconds all clients spent in the core's calls for that stage's
                             * input and message (the masked stage includes masking), summed over the clients */
  double unmask_s;          /* coordinator: reconstruction + mask removal */
  size_t unmask_terms;
  uint64_t bytes_up_per_client;   /* mean bytes a client that saw every stage submitted, masked input included */
  uint64_t bytes_down_per_client; /* and received in the stages' answers (the model download not included) */
  uint32_t blamed[8];       /* cohort indices named for bad unmask shares (fc_sa_server_bad_sent), first 8 */
  uint32_t nblamed;         /* ... how many in all */
  uint32_t unattributed;    /* secrets rebuilt past bad shares nobody could be named for */
  uint32_t withdrawn;       /* Leaves the core took (cfg.withdraw: clients that vanished after advertising) */
  uint32_t closed_waiting;  /* stages closed while still waiting for a message (fc_sa_server_stage_complete
                             * false): a real one would have run to its deadline. The advertise stage counts
                             * as the engine would: members that vanish before advertising are dropped */
  uint32_t completed_early; /* times a stage said it was complete with a member's message still to come */
} sa_harness_result;

/* Issue n client certificates (client-c00001 ...) in dir (created). */
int sa_harness_pki(const char *dir, uint32_t n);
/* The client core of cohort member cc->index with its certificate and key
 * from dir (sa_harness_pki; cc->cert_pem and key_pem are set and cleared
 * here, the key wiped), and the SHA-256 of that certificate as the transport
 * records the TLS peer's. FEDC_OK, or the core's refusal (FEDC_ERR_IO: no
 * such files) with one line in why. */
struct fc_sa_client_cfg;
struct fc_sa_client;
int sa_harness_client(const char *dir, struct fc_sa_client_cfg *cc, struct fc_sa_client **out,
                      uint8_t cert_sha256[32], char *why, size_t whylen);
int sa_harness_run(const sa_harness_cfg *cfg, sa_harness_result *res);

#endif
