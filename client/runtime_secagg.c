/*
 * runtime_secagg.c - the client's side of a secure-aggregation round on the
 * wire: the quantize and mask stages of the update pipeline (pipeline.h) and
 * the exchange around them (Bonawitz et al. 2017, rounds 0-4), driving the
 * I/O-free client core (client/secagg_client*.c).
 *
 * Every exchange is ours to start (devices sit behind NAT): we submit a
 * stage's message with SecAggSubmit and poll with SecAggPoll for the next
 * stage's input; the coordinator answers WAIT (with a retry time, which we
 * clamp to 50..1000 ms) until the stage before has closed. All waiting is
 * bounded by the round's deadline plus one stage deadline per later stage.
 * Any failure of the core ends our part in the round (FEDC_ERR_REJECTED):
 * the round goes on without us and we check in again.
 *
 * Keys first (SecAggParams.keys_first, 1.18): rounds 0-1 run on a thread of
 * their own while the caller trains (rt_secagg_keys_start), since neither
 * needs the input; rt_secagg_round joins it and runs rounds 2-4. A failed
 * training cancels the thread (rt_secagg_keys_cancel): it sends nothing more,
 * and its naps and polls end at once.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "client/pipeline.h"
#include "client/runtime_int.h"
#include "client/secagg_client.h"
#include "common/clock.h"
#include "common/fileutil.h"
#include "common/log.h"
#include "crypto/cert_cache.h"
#include "crypto/keyfile.h"
#include "crypto/sa_crypto.h"
#include "crypto/sha256.h"
#include "fedc/error.h"

#define MOD "client"
#define PEM_MAX (64 * 1024)
/* Verified certificates kept across rounds: the neighbours of about 1,000
 * rounds at k ~ 30, a few hundred KiB; a session's own neighbours are kept
 * while it runs whatever the count (crypto/cert_cache.h). */
#define RT_SA_CERT_CACHE 1024

void fc_client_secagg_drop(fedc_client *c, const double drop[6], uint64_t seed, int halt) {
  memcpy(c->sa_drop, drop, sizeof c->sa_drop);
  fc_rng_seed(&c->sa_drop_rng, seed);
  c->sa_drop_halt = halt;
}

void fc_client_secagg_seeded_rounding(fedc_client *c, int on) { c->sa_seeded_rounding = on; }

static int reject(fc_status *st, const char *why);

/* Research dropout: 1 if we vanish now, before stage's message (the round is
 * lost for us; we send nothing more in it, as a device that went away). */
static int vanish(fedc_client *c, int stage, const atomic_int *cancel, fc_status *st) {
  if (!(c->sa_drop[stage] > 0) || fc_rng_uniform_double(&c->sa_drop_rng) >= c->sa_drop[stage]) return 0;
  char why[80];
  if (c->sa_drop_halt) {
    FC_WARN(MOD, "round: halted before the %s stage (research: waiting to be stopped or killed)",
            fc_sa_stage_name(stage));
    while (!rt_nap_or(c, 1000, cancel)) { /* keys first: a failed training ends the halt too */
    }
  }
  snprintf(why, sizeof why, "simulated dropout before the %s stage", fc_sa_stage_name(stage));
  FC_WARN(MOD, "%s", why);
  reject(st, why);
  return 1;
}

static int reject(fc_status *st, const char *why) {
  st->code = GRPC_STATUS_FAILED_PRECONDITION;
  st->err = FEDC_ERR_REJECTED;
  snprintf(st->detail, sizeof st->detail, "secure aggregation: %s", why);
  return FEDC_ERR_REJECTED;
}

/* Keys first: the trainer failed, so the key stages stop (rt_secagg_keys_cancel). */
static int training_failed(fc_status *st) { return reject(st, "our training failed"); }

/* Why our part ended when a nap was cut short: a stop, or (keys first) our
 * training failed. */
static int stopped_or_cancelled(fedc_client *c, fc_status *st) {
  if (!atomic_load(&c->stop)) return training_failed(st);
  snprintf(st->detail, sizeof st->detail, "stopped");
  return FEDC_ERR_STOPPED;
}

static int submit(fedc_client *c, Fedc__V1__SecAggSubmitRequest *req, const atomic_int *cancel, fc_status *st) {
  ProtobufCMessage *m = NULL;
  int rc;
  /* A call-rate refusal that says when (RESOURCE_EXHAUSTED with a retry
   * time) is pacing: wait as told, a few times, rather than drop out. */
  for (int paced = 0;; paced++) {
    rc = fc_call_unary(c->ch, "/fedc.v1.Coordinator/SecAggSubmit", &req->base,
                       &fedc__v1__sec_agg_submit_response__descriptor, &m, 30000, st);
    if (rc == FEDC_OK || st->code != GRPC_STATUS_RESOURCE_EXHAUSTED || !st->retry_after_ms || paced == 8)
      break;
    if (rt_nap_or(c, st->retry_after_ms < 5000 ? st->retry_after_ms : 5000, cancel)) {
      rc = stopped_or_cancelled(c, st);
      break;
    }
  }
  fc_sa_submit_clear(req);
  if (m) protobuf_c_message_free_unpacked(m, NULL);
  if (rc != FEDC_OK && st->code == GRPC_STATUS_FAILED_PRECONDITION) rc = FEDC_ERR_REJECTED;
  return rc;
}

/* Poll until the input of `stage` is READY (FEDC_OK, *out set) or the round is
 * over for us (or *cancel is set: keys first, the trainer failed). */
static int poll_stage(fedc_client *c, uint64_t round, int stage, uint64_t deadline, const atomic_int *cancel,
                      Fedc__V1__SecAggPollResponse **out, fc_status *st) {
  Fedc__V1__SecAggPollRequest req = FEDC__V1__SEC_AGG_POLL_REQUEST__INIT;
  req.round = round;
  req.stage = (Fedc__V1__SecAggStage)stage;
  /* After our own message the next stage often opens within milliseconds
   * (the others were a little behind us), so the first polls come quickly
   * (10, 20, 40, 80 ms) and then at the coordinator's hint: a client that
   * waited 100 ms from the start lost up to that much per stage, and a stage
   * closes only when its last member has seen it open. */
  for (uint32_t failures = 0, waits = 0;;) {
    if (rt_ended(c, cancel)) return stopped_or_cancelled(c, st);
    if (fc_now_ms() > deadline) return reject(st, "timed out waiting for the next stage");
    ProtobufCMessage *m = NULL;
    int rc = fc_call_unary(c->ch, "/fedc.v1.Coordinator/SecAggPoll", &req.base,
                           &fedc__v1__sec_agg_poll_response__descriptor, &m, 30000, st);
    uint32_t wait = 200;
    if (rc == FEDC_OK) {
      Fedc__V1__SecAggPollResponse *r = (Fedc__V1__SecAggPollResponse *)m;
      if (r->status != FEDC__V1__SEC_AGG_POLL_RESPONSE__STATUS__WAIT) {
        *out = r;
        return FEDC_OK;
      }
      wait = r->retry_after_ms < 10 ? 10 : r->retry_after_ms > 1000 ? 1000 : r->retry_after_ms;
      if (waits < 4 && (10u << waits) < wait) wait = 10u << waits;
      waits++;
      protobuf_c_message_free_unpacked(m, NULL);
      failures = 0;
    } else if (!rt_is_transient(rc) && st->code != GRPC_STATUS_RESOURCE_EXHAUSTED) {
      return rc;
    } else {
      wait = st->retry_after_ms ? st->retry_after_ms : 200u << (failures < 4 ? failures++ : 4);
    }
    if (rt_nap_or(c, wait, cancel)) return stopped_or_cancelled(c, st);
  }
}

static char *read_pem(const char *path) {
  char *buf = NULL;
  size_t len = 0;
  if (!path[0] || fc_read_file(path, PEM_MAX, &buf, &len) != FEDC_OK) return NULL;
  return buf;
}

/* Our private key, under the rule for every key file (crypto/keyfile.h;
 * the channel checked the same file when it was created). */
static char *read_key_pem(const char *path) {
  char *buf = NULL, err[300];
  size_t len = 0;
  if (!path[0] || fc_key_file_read(path, PEM_MAX, &buf, &len, err, sizeof err) != FEDC_OK) return NULL;
  return buf;
}

int rt_secagg_cfg(const Fedc__V1__Task *t, uint64_t dim, fc_sa_client_cfg *cfg) {
  const Fedc__V1__SecAggParams *sp = t->secagg;
  memset(cfg, 0, sizeof *cfg);
  fc_sa_params *p = &cfg->params;
  if (sp->n_cohort < FC_SA_MIN_COHORT || sp->n_cohort > FC_SA_MAX_COHORT || sp->graph_seed.len != FC_SA_SEED_LEN ||
      t->model_sha256.len != 32)
    return FEDC_ERR_PROTOCOL;
  p->round = t->round;
  p->model_version = t->model_version;
  memcpy(p->model_sha, t->model_sha256.data, 32);
  p->n = (uint32_t)sp->n_cohort;
  p->k = sp->neighbors;
  p->t = sp->threshold;
  memcpy(p->graph_seed, sp->graph_seed.data, FC_SA_SEED_LEN);
  p->max_weight = sp->max_weight;
  p->clip = t->clip_norm;
  p->dim = dim;
  p->scale = sp->quant_scale;
  p->dp_sigma = sp->dp_sigma;
  p->bit_scale = sp->bit_scale;
  p->dp_bit_sigma = sp->dp_bit_sigma;
  p->min_survivors = sp->min_survivors;
  p->quant_bits = sp->quant_bits; /* 1.9: narrow ring; fc_sa_params_check refuses one that can wrap */
  p->ring_bits = sp->ring_bits;
  p->quant_range = sp->quant_range;
  cfg->names = (const char *const *)sp->cohort;
  cfg->index = sp->index;
  return FEDC_OK;
}

/* The training round's input: the clipped update, quantized and noised; sent
 * through UploadUpdate. */
typedef struct train_input {
  fedc_client *c;
  const Fedc__V1__Task *t;
  const float *delta;
  uint64_t examples;
  double loss, norm;
  uint64_t *bytes_out;
} train_input;

static int train_fill(void *ctx, const fc_sa_params *p, uint32_t *q, fc_status *st) {
  train_input *in = ctx;
  uint64_t seed = in->t->hyper ? in->t->hyper->seed : 0; /* research: fc_client_secagg_seeded_rounding */
  if (in->c->sa_seeded_rounding && !in->t->hyper) /* every client would share seed 0's rounding */
    return reject(st, "seeded rounding: the task carries no seed");
  if (fc_stage_quantize(in->delta, in->examples, in->c->unclipped, p, in->c->sa_seeded_rounding ? &seed : NULL, q) !=
      FEDC_OK)
    return reject(st, "cannot quantize the update");
  if (fc_stage_dp_noise(q, p) != FEDC_OK) return reject(st, "cannot draw our share of the privacy noise");
  return FEDC_OK;
}

static int train_send(void *ctx, const fc_sa_params *p, uint32_t *q, uint64_t deadline, fc_status *st) {
  train_input *in = ctx;
  fedc_client *c = in->c;
  /* Research: a client not running our code can put any weight in its
   * masked input; the mask hides it until the sum is unmasked. */
  if (c->byz.weight) q[p->dim] += c->byz.weight - (uint32_t)(in->examples < p->max_weight ? in->examples : p->max_weight);
  fc_model_spec ms;
  memset(&ms, 0, sizeof ms);
  uint64_t entries = fc_sa_entries(p);
  if (p->quant_bits) {
    /* Narrow ring (1.9): the low ring_bits of each masked word (secagg/ring.c). */
    uint64_t bytes = fc_sa_wire_bytes(p);
    uint8_t *packed = malloc(bytes);
    if (!packed) return reject(st, "out of memory for the masked input");
    fc_sa_ring_pack(q, entries, p->ring_bits, packed);
    fc_model_spec_add(&ms, "secagg.masked", 1, &bytes);
    ms.t[0].dtype = FC_DTYPE_U8;
    int rc = rt_upload_retrying(c, in->t, packed, NULL, &ms, bytes, 1, 0, in->loss, in->norm, deadline,
                                in->bytes_out, st);
    free(packed);
    return rc;
  }
  fc_model_spec_add(&ms, "secagg.masked", 1, &entries);
  ms.t[0].dtype = FC_DTYPE_U32;
  return rt_upload_retrying(c, in->t, q, NULL, &ms, entries * sizeof *q, 1, 0, in->loss, in->norm, deadline,
                            in->bytes_out, st);
}

/* One task's SecAgg session: what rounds 0-1 (the keys) and 2-4 (the input)
 * share. With keys first the keys run on a thread of their own beside
 * training (rt_secagg_keys_start), which alone touches the session, and
 * c->sa_certs, until rt_secagg_round joins it. */
struct rt_sa_session {
  fedc_client *c;
  const Fedc__V1__Task *t;
  fc_sa_client_cfg cfg;
  char *ca, *cert, *key;
  fc_sa_client *sc;
  uint64_t deadline, checked0, known0;
  atomic_int cancel; /* the trainer failed: stop waiting for a stage */
  pthread_t thread;
  int rc;       /* the keys' outcome, once the thread is joined */
  fc_status st; /* and its status */
};

static void sa_close(rt_sa_session *s) {
  if (!s) return;
  fc_sa_client_destroy(s->sc);
  free(s->ca);
  free(s->cert);
  if (s->key) {
    fc_wipe(s->key, strlen(s->key));
    free(s->key);
  }
  free(s);
}

/* The parsed form of key_pem, kept across rounds while the key file holds
 * the same bytes (parsing is most of a signature's cost); NULL if it does not
 * parse, and the session then says why at its first signature. */
static struct evp_pkey_st *sign_key(fedc_client *c, const char *key_pem) {
  uint8_t sha[32];
  if (fc_sha256(key_pem, strlen(key_pem), sha) != FEDC_OK) return NULL;
  if (c->sa_sign_key && fc_digest_equal(sha, c->sa_sign_key_sha, sizeof sha)) return c->sa_sign_key;
  fc_sign_key_free(c->sa_sign_key);
  c->sa_sign_key = NULL;
  if (fc_sign_key_load(key_pem, strlen(key_pem), &c->sa_sign_key) == FEDC_OK)
    memcpy(c->sa_sign_key_sha, sha, sizeof sha);
  return c->sa_sign_key;
}

/* The session for task t over dim entries, its keys and certificates read:
 * FEDC_OK and *out, or a rejection in st. */
static int sa_open(fedc_client *c, const Fedc__V1__Task *t, uint64_t dim, rt_sa_session **out, fc_status *st) {
  rt_sa_session *s = calloc(1, sizeof *s);
  char why[300];
  if (!s) return reject(st, "out of memory");
  s->c = c;
  s->t = t;
  atomic_init(&s->cancel, 0);
  fc_sa_client_cfg *cfg = &s->cfg;
  if (rt_secagg_cfg(t, dim, cfg) != FEDC_OK) {
    sa_close(s);
    return reject(st, "the task's secure-aggregation parameters are malformed");
  }
  cfg->colluders = c->o.secagg_tolerate_colluders;
  uint64_t stage_ms = t->secagg->stage_deadline_ms ? t->secagg->stage_deadline_ms : 30000;
  if (stage_ms > 3600000) stage_ms = 3600000;
  s->deadline = t->deadline_unix_ms + 5 * stage_ms;
  /* Research (byzantine.h): keys advertised under another certificate of our name. */
  const char *cert_path = c->byz.adv_cert[0] ? c->byz.adv_cert : c->cert;
  const char *key_path = c->byz.adv_key[0] ? c->byz.adv_key : c->key;
  s->ca = read_pem(c->ca);
  s->cert = read_pem(cert_path);
  s->key = read_key_pem(key_path);
  if (!s->ca || !s->cert || !s->key) {
    sa_close(s);
    return reject(st, "needs our certificate, key and the CA certificate (not available in insecure mode)");
  }
  cfg->ca_pem = s->ca;
  cfg->cert_pem = s->cert;
  cfg->key_pem = s->key;
  cfg->sign_key = sign_key(c, s->key);
  /* Neighbours' certificates verified in earlier rounds: kept across rounds
   * (the same peers come back), dropped when the CA changes. */
  if (c->sa_certs && !fc_cert_cache_same_ca(c->sa_certs, s->ca, strlen(s->ca))) {
    fc_cert_cache_destroy(c->sa_certs);
    c->sa_certs = NULL;
  }
  if (!c->sa_certs &&
      fc_cert_cache_create(s->ca, strlen(s->ca), RT_SA_CERT_CACHE, &c->sa_certs, why, sizeof why) != FEDC_OK)
    c->sa_certs = NULL; /* the session makes its own, and says what is wrong with the CA */
  cfg->cert_cache = c->sa_certs;
  s->checked0 = c->sa_certs ? fc_cert_cache_verifications(c->sa_certs) : 0;
  s->known0 = c->sa_certs ? fc_cert_cache_hits(c->sa_certs) : 0;
  if (fc_sa_client_create(cfg, &s->sc, why, sizeof why) != FEDC_OK) {
    sa_close(s);
    return reject(st, why);
  }
  *out = s;
  return FEDC_OK;
}

/* A failed step's verdict: the core's own reason if it aborted. */
static int sa_verdict(rt_sa_session *s, int rc, fc_status *st) {
  if (s->sc && fc_sa_client_state(s->sc) == FC_SAC_ABORTED) return reject(st, fc_sa_client_error(s->sc));
  if (rc == FEDC_ERR_REJECTED && !st->detail[0]) return reject(st, "refused by the coordinator");
  return rc;
}

/* Rounds 0 and 1 (Bonawitz et al. 2017): advertise our keys; take the
 * neighbours' and send our shares of b_u and s_u^SK. Neither depends on the
 * input, so with keys first they run while we train. */
static int sa_keys(rt_sa_session *s, fc_status *st) {
  fedc_client *c = s->c;
  Fedc__V1__SecAggSubmitRequest req = FEDC__V1__SEC_AGG_SUBMIT_REQUEST__INIT;
  Fedc__V1__SecAggPollResponse *in = NULL;
  int rc;
  if (atomic_load(&s->cancel)) return training_failed(st);
  if (vanish(c, FC_SA_ADVERTISE, &s->cancel, st)) return FEDC_ERR_REJECTED;
  if ((rc = fc_sa_client_advertise(s->sc, &req)) != FEDC_OK || (rc = submit(c, &req, &s->cancel, st)) != FEDC_OK)
    goto fail;
  if ((rc = poll_stage(c, s->t->round, FC_SA_SHARE_KEYS, s->deadline, &s->cancel, &in, st)) != FEDC_OK) goto fail;
  rc = fc_sa_client_share_keys(s->sc, in, &req);
  protobuf_c_message_free_unpacked(&in->base, NULL);
  if (rc != FEDC_OK) goto fail;
  /* No shares from a client that will not train. */
  if (atomic_load(&s->cancel))
    rc = training_failed(st);
  else if (vanish(c, FC_SA_SHARE_KEYS, &s->cancel, st)) /* a halt there ends on a cancel too */
    rc = atomic_load(&s->cancel) ? training_failed(st) : FEDC_ERR_REJECTED;
  if (rc != FEDC_OK) {
    fc_sa_submit_clear(&req);
    return rc;
  }
  if ((rc = submit(c, &req, &s->cancel, st)) != FEDC_OK) goto fail;
  return FEDC_OK;
fail:
  fc_sa_submit_clear(&req);
  return sa_verdict(s, rc, st);
}

/* Rounds 2-4: quantize -> mask ahead -> the shares addressed to us in -> the
 * masks of neighbours that sent none out -> upload; sign the survivor list;
 * send our unmask shares. */
static int sa_input(rt_sa_session *s, const rt_sa_input *input, fc_status *st) {
  fedc_client *c = s->c;
  const Fedc__V1__Task *t = s->t;
  const fc_sa_params *p = &s->cfg.params;
  fc_sa_client *sc = s->sc;
  Fedc__V1__SecAggSubmitRequest req = FEDC__V1__SEC_AGG_SUBMIT_REQUEST__INIT;
  Fedc__V1__SecAggPollResponse *in = NULL;
  uint32_t *q = NULL;
  int rc;
#define VANISH(stage)                \
  if (vanish(c, stage, NULL, st)) {  \
    rc = FEDC_ERR_REJECTED;          \
    goto out;                        \
  }
  if (!(q = malloc(fc_sa_entries(p) * sizeof *q))) {
    rc = FEDC_ERR_NOMEM;
    snprintf(st->detail, sizeof st->detail, "out of memory for the masked input");
    goto out;
  }
  if ((rc = input->fill(input->ctx, p, q, st)) != FEDC_OK) goto out;
  if ((rc = fc_sa_client_premask(sc, q)) != FEDC_OK) goto fail;
  if ((rc = poll_stage(c, t->round, FC_SA_MASKED, s->deadline, NULL, &in, st)) != FEDC_OK) goto fail;
  rc = fc_sa_client_receive_shares(sc, in);
  protobuf_c_message_free_unpacked(&in->base, NULL);
  in = NULL;
  if (rc != FEDC_OK) goto fail;
  if ((rc = fc_sa_client_mask(sc, q)) != FEDC_OK) goto fail;
  VANISH(FC_SA_MASKED);
  if ((rc = input->send(input->ctx, p, q, s->deadline, st)) != FEDC_OK) goto out;
  /* Round 3: sign the survivor list. */
  if ((rc = poll_stage(c, t->round, FC_SA_CONSISTENCY, s->deadline, NULL, &in, st)) != FEDC_OK) goto fail;
  rc = fc_sa_client_consistency(sc, in, &req);
  protobuf_c_message_free_unpacked(&in->base, NULL);
  in = NULL;
  if (rc != FEDC_OK) goto fail;
  VANISH(FC_SA_CONSISTENCY);
  if ((rc = submit(c, &req, NULL, st)) != FEDC_OK) goto fail;
  /* Round 4: verify the neighbours' signatures, send our unmask shares. */
  if ((rc = poll_stage(c, t->round, FC_SA_UNMASK, s->deadline, NULL, &in, st)) != FEDC_OK) goto fail;
  rc = fc_sa_client_unmask(sc, in, &req);
  protobuf_c_message_free_unpacked(&in->base, NULL);
  in = NULL;
  if (rc != FEDC_OK) goto fail;
  /* Research: bad unmask shares (the coordinator corrects them and names us). */
  for (size_t i = 0; c->byz.bad_unmask && i < req.n_unmask; i++)
    if (req.unmask[i]->share.len) req.unmask[i]->share.data[0] ^= 1;
  VANISH(FC_SA_UNMASK);
  if ((rc = submit(c, &req, NULL, st)) != FEDC_OK) goto fail;
#undef VANISH
  if (c->sa_certs)
    FC_INFO(MOD, "%s %llu: secure aggregation done (masked %s and unmask shares delivered; neighbours' "
                 "certificates: %llu checked, %llu verified in an earlier round)",
            t->eval ? "evaluation" : "round", (unsigned long long)(t->round & ~(1ull << 63)),
            t->eval ? "statistics" : "input",
            (unsigned long long)(fc_cert_cache_verifications(c->sa_certs) - s->checked0),
            (unsigned long long)(fc_cert_cache_hits(c->sa_certs) - s->known0));
  else
    FC_INFO(MOD, "%s %llu: secure aggregation done (masked %s and unmask shares delivered)",
            t->eval ? "evaluation" : "round", (unsigned long long)(t->round & ~(1ull << 63)),
            t->eval ? "statistics" : "input");
  rc = FEDC_OK;
  goto out;
fail:
  rc = sa_verdict(s, rc, st);
out:
  fc_sa_submit_clear(&req);
  if (in) protobuf_c_message_free_unpacked(&in->base, NULL);
  if (q) {
    fc_wipe(q, fc_sa_entries(p) * sizeof *q);
    free(q);
  }
  return rc;
}

static void *keys_thread(void *arg) {
  rt_sa_session *s = arg;
  memset(&s->st, 0, sizeof s->st);
  s->rc = sa_keys(s, &s->st);
  return NULL;
}

rt_sa_session *rt_secagg_keys_start(fedc_client *c, const Fedc__V1__Task *t) {
  rt_sa_session *s = NULL;
  fc_status st;
  memset(&st, 0, sizeof st);
  if (sa_open(c, t, c->model_bytes / sizeof(float), &s, &st) != FEDC_OK) {
    FC_WARN(MOD, "round %llu: keys first: %s; the exchange runs after training", (unsigned long long)t->round,
            st.detail);
    return NULL;
  }
  if (pthread_create(&s->thread, NULL, keys_thread, s) != 0) {
    FC_WARN(MOD, "round %llu: keys first: no thread for the key stages; the exchange runs after training",
            (unsigned long long)t->round);
    sa_close(s);
    return NULL;
  }
  return s;
}

/* Join the keys' thread: its outcome, with its status in st. */
static int keys_join(rt_sa_session *s, fc_status *st) {
  pthread_join(s->thread, NULL);
  if (s->rc != FEDC_OK) *st = s->st;
  return s->rc;
}

void rt_secagg_keys_cancel(rt_sa_session *s) {
  if (!s) return;
  rt_cancel(s->c, &s->cancel); /* a nap of the thread's (rt_nap_or) ends now */
  fc_status st;
  memset(&st, 0, sizeof st);
  if (keys_join(s, &st) == FEDC_OK)
    FC_INFO(MOD, "round %llu: keys first: our keys and shares went out before we dropped out; the coordinator "
                 "rebuilds our masks", (unsigned long long)s->t->round);
  else
    FC_INFO(MOD, "round %llu: keys first: the key stages stopped (%s)", (unsigned long long)s->t->round, st.detail);
  sa_close(s);
}

int rt_secagg_round(fedc_client *c, const Fedc__V1__Task *t, rt_sa_session *early, const float *delta,
                    uint64_t examples, double loss, double norm, uint64_t *bytes_out, fc_status *st) {
  train_input ti = {c, t, delta, examples, loss, norm, bytes_out};
  rt_sa_input in = {c->model_bytes / sizeof(float), train_fill, train_send, &ti};
  if (!early) return rt_secagg_exchange(c, t, &in, st);
  int rc = keys_join(early, st);
  if (rc == FEDC_OK) rc = sa_input(early, &in, st);
  sa_close(early);
  return rc;
}

int rt_secagg_exchange(fedc_client *c, const Fedc__V1__Task *t, const rt_sa_input *input, fc_status *st) {
  rt_sa_session *s = NULL;
  int rc = sa_open(c, t, input->dim, &s, st);
  if (rc != FEDC_OK) return rc;
  if ((rc = sa_keys(s, st)) == FEDC_OK) rc = sa_input(s, input, st);
  sa_close(s);
  return rc;
}
