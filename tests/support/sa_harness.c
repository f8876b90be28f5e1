/*
 * sa_harness.c - see sa_harness.h. One round, stage by stage, the way the
 * coordinator and the runtime drive the cores, minus the sockets: each poll
 * answer and each submission is packed and unpacked, so sizes and encodings
 * are the wire's.
 */
#include "tests/support/sa_harness.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "client/secagg_client.h"
#include "common/fileutil.h"
#include "common/rng.h"
#include "coordinator/aggregate.h"
#include "coordinator/secagg_server.h"
#include "crypto/pki.h"
#include "crypto/sa_crypto.h"
#include "fedc/error.h"

static double now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec + ts.tv_nsec * 1e-9;
}

/* CPU seconds of this thread: the clients' costs, whatever else the machine runs. */
static double cpu_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
  return ts.tv_sec + ts.tv_nsec * 1e-9;
}

int sa_harness_pki(const char *dir, uint32_t n) {
  char err[300], name[32], path[600];
  snprintf(path, sizeof path, "%s/ca.crt", dir);
  struct stat st;
  if (stat(path, &st) != 0) {
    int rc = fc_pki_init(dir, "secagg-test", NULL, 0, 30, "ec", err, sizeof err);
    if (rc != FEDC_OK) {
      fprintf(stderr, "pki init: %s\n", err);
      return rc;
    }
  }
  for (uint32_t i = 1; i <= n; i++) {
    snprintf(name, sizeof name, "c%05u", i);
    snprintf(path, sizeof path, "%s/client-%s.crt", dir, name);
    if (stat(path, &st) == 0) continue;
    int rc = fc_pki_issue(dir, "client", name, NULL, 30, err, sizeof err);
    if (rc != FEDC_OK) {
      fprintf(stderr, "pki issue: %s\n", err);
      return rc;
    }
  }
  return FEDC_OK;
}

static char *slurp(const char *dir, const char *fmt, uint32_t i) {
  char path[600], rel[64];
  snprintf(rel, sizeof rel, fmt, i);
  snprintf(path, sizeof path, "%s/%s", dir, rel);
  char *buf = NULL;
  size_t len = 0;
  if (fc_read_file(path, 1 << 20, &buf, &len) != FEDC_OK) return NULL;
  return buf;
}

int sa_harness_client(const char *dir, fc_sa_client_cfg *cc, fc_sa_client **out, uint8_t cert_sha256[32], char *why,
                      size_t whylen) {
  char *cert = slurp(dir, "client-c%05u.crt", cc->index), *key = slurp(dir, "client-c%05u.key", cc->index);
  int rc = FEDC_ERR_IO;
  *out = NULL;
  snprintf(why, whylen, "no certificate or key for client %u in %s", cc->index, dir);
  cc->cert_pem = cert;
  cc->key_pem = key;
  if (cert && key && (rc = fc_sa_client_create(cc, out, why, whylen)) == FEDC_OK &&
      (rc = fc_pki_cert_sha256_pem(cert, strlen(cert), cert_sha256)) != FEDC_OK) {
    snprintf(why, whylen, "client %u: cannot hash its certificate", cc->index);
    fc_sa_client_destroy(*out);
    *out = NULL;
  }
  cc->cert_pem = cc->key_pem = NULL;
  free(cert);
  if (key) fc_wipe(key, strlen(key));
  free(key);
  return rc;
}

/* Pack and unpack: what the other side really receives. */
static ProtobufCMessage *wire(const ProtobufCMessage *m, uint64_t *bytes) {
  size_t n = protobuf_c_message_get_packed_size(m);
  uint8_t *b = malloc(n ? n : 1);
  if (!b) return NULL;
  protobuf_c_message_pack(m, b);
  if (bytes) *bytes += n;
  ProtobufCMessage *u = protobuf_c_message_unpack(m->descriptor, NULL, n, b);
  free(b);
  return u;
}

typedef struct sim_client {
  fc_sa_client *c;
  uint8_t cert_sha256[32]; /* its TLS certificate's fingerprint, as the transport would record it */
  int gone;       /* dropped out (injected) */
  int aborted;    /* aborted on its own */
  int drop_at;    /* stage before whose message it vanishes; 0 = never */
  uint64_t weight;
  uint64_t bytes;      /* submitted: stage messages and the masked input */
  uint64_t bytes_down; /* received: the stages' poll answers */
  int committed;  /* its masked input is in the sum */
  uint32_t *pre;  /* cfg->premask: its input, masked ahead of time */
} sim_client;

/* Narrow ring (secagg/ring.c), as client/pipeline.c does: only float rounding
 * of the clip can step a quantized value past L; clamped before masking. */
static void clamp_narrow(const fc_sa_params *p, uint32_t *q) {
  if (!p->quant_bits) return;
  int32_t L = (int32_t)((1u << (p->quant_bits - 1)) - 1);
  for (uint64_t j = 0; j < p->dim; j++) {
    int32_t v = (int32_t)q[j];
    q[j] = (uint32_t)(v > L ? L : v < -L ? -L : v);
  }
}

static void client_abort(sa_harness_result *res, sim_client *sc, uint32_t idx) {
  sc->aborted = 1;
  if (!res->client_aborts++)
    snprintf(res->client_why, sizeof res->client_why, "client %u: %s", idx, fc_sa_client_error(sc->c));
}

/* Submit req from client idx (after the hook) over its own TLS session
 * (its certificate's fingerprint); frees req's contents. */
static void submit(const sa_harness_cfg *cfg, fc_sa_server *srv, sim_client *sc, uint32_t idx, int stage,
                   Fedc__V1__SecAggSubmitRequest *req, sa_harness_result *res) {
  if (cfg->tamper_submit) cfg->tamper_submit(cfg->ctx, stage, idx, req);
  Fedc__V1__SecAggSubmitRequest *got = (Fedc__V1__SecAggSubmitRequest *)wire(&req->base, &sc->bytes);
  fc_sa_submit_clear(req);
  char why[256];
  if (got && fc_sa_server_submit(srv, idx, sc->cert_sha256, got, why, sizeof why) != FEDC_OK && !res->submit_refused++)
    snprintf(res->submit_why, sizeof res->submit_why, "client %u: %s", idx, why);
  if (got) protobuf_c_message_free_unpacked(&got->base, NULL);
}

static Fedc__V1__SecAggPollResponse *poll(const sa_harness_cfg *cfg, fc_sa_server *srv, uint32_t idx, int stage,
                                           uint64_t *bytes) {
  Fedc__V1__SecAggPollResponse r;
  fc_sa_server_poll(srv, idx, stage, &r);
  Fedc__V1__SecAggPollResponse *got = (Fedc__V1__SecAggPollResponse *)wire(&r.base, bytes);
  fc_sa_poll_clear(&r);
  if (got && cfg->tamper_poll) cfg->tamper_poll(cfg->ctx, stage, idx, got);
  return got;
}

/* Client idx's update: random, scaled to a random fraction of the clip norm. */
static void make_update(uint64_t seed, float clip, float *x, uint64_t dim) {
  fc_rng r;
  fc_rng_seed(&r, seed ^ 0x5eedda7aull);
  double ss = 0;
  for (uint64_t j = 0; j < dim; j++) {
    x[j] = (float)fc_rng_normal(&r);
    ss += (double)x[j] * x[j];
  }
  double f = clip / sqrt(ss) * fc_rng_uniform_double(&r);
  for (uint64_t j = 0; j < dim; j++) x[j] = (float)(x[j] * f);
}

int sa_harness_run(const sa_harness_cfg *cfg, sa_harness_result *res) {
  memset(res, 0, sizeof *res);
  fc_sa_params p;
  memset(&p, 0, sizeof p);
  p.round = cfg->round ? cfg->round : 1;
  p.model_version = 7;
  p.n = cfg->n;
  p.k = cfg->k;
  p.t = cfg->t;
  p.min_survivors = cfg->min_survivors;
  p.max_weight = cfg->max_weight;
  p.clip = cfg->clip;
  p.dim = cfg->dim;
  p.quant_bits = cfg->quant_bits;
  p.quant_range = cfg->quant_range;
  p.ring_bits = cfg->quant_bits && !cfg->ring_bits ? fc_sa_ring_bits(cfg->n, cfg->quant_bits) : cfg->ring_bits;
  fc_rng rng;
  fc_rng_seed(&rng, cfg->seed);
  for (int i = 0; i < 32; i++) p.graph_seed[i] = (uint8_t)fc_rng_u64(&rng), p.model_sha[i] = (uint8_t)i;
  uint32_t n = cfg->n;
  char **names = calloc(n, sizeof *names);
  sim_client *cl = calloc(n, sizeof *cl);
  char *ca = slurp(cfg->pki_dir, "ca.crt", 0);
  fc_sa_server *srv = NULL;
  fc_agg *agg = NULL;
  uint32_t *expect = calloc(p.dim + 1, sizeof *expect);
  double *favg = calloc(p.dim, sizeof *favg);
  float *x = malloc(p.dim * sizeof *x); /* one client's update at a time */
  uint32_t *q = malloc((p.dim + 1) * sizeof *q), *yb = malloc((p.dim + 1) * sizeof *yb);
  uint8_t *wire = malloc((p.dim + 1) * 4); /* narrow ring: the masked vector as sent */
  double wsum = 0;
  int rc = FEDC_ERR_NOMEM;
  if (!names || !cl || !ca || !expect || !favg || !x || !q || !yb || !wire) goto out;
  for (uint32_t i = 0; i < n; i++) {
    names[i] = malloc(16);
    if (!names[i]) goto out;
    snprintf(names[i], 16, "c%05u", i + 1);
  }
  char why[256];
  if ((rc = fc_sa_server_create(&p, (const char *const *)names, &srv, why, sizeof why)) != FEDC_OK) {
    snprintf(res->why, sizeof res->why, "%s", why);
    goto out;
  }
  if ((rc = fc_sa_server_set_trust(srv, ca, "secagg-test")) != FEDC_OK) goto out;
  fc_sa_server_use_cert_cache(srv, cfg->cert_cache);
  if (cfg->session_out) memcpy(cfg->session_out, fc_sa_server_session(srv), FC_SA_SESSION_LEN);
  if ((rc = fc_agg_secagg_create(p.dim + 1, 1, 4, &agg)) != FEDC_OK) goto out;
  agg->ops->round_begin(agg);
  double scale = p.quant_bits ? fc_sa_params_scale(&p) : fc_sa_quant_scale(n, p.max_weight, p.clip);
  for (uint32_t i = 0; i < n; i++) {
    sim_client *sc = &cl[i];
    fc_sa_client_cfg cc;
    memset(&cc, 0, sizeof cc);
    cc.params = p;
    cc.names = (const char *const *)names;
    cc.index = i + 1;
    cc.prg = cfg->prg;
    cc.cert_cache = cfg->cert_cache;
    cc.ca_pem = ca;
    if ((rc = sa_harness_client(cfg->pki_dir, &cc, &sc->c, sc->cert_sha256, why, sizeof why)) != FEDC_OK) {
      snprintf(res->why, sizeof res->why, "client %u: %s", i + 1, why);
      goto out;
    }
    /* A random weight now; the data itself is made at the masked stage
     * (make_update), so the harness holds O(model) memory for any n. */
    sc->weight = 1 + fc_rng_below(&rng, p.max_weight);
    for (int s = FC_SA_ADVERTISE; s <= FC_SA_UNMASK && !sc->drop_at; s++)
      if (fc_rng_uniform_double(&rng) < cfg->drop[s]) sc->drop_at = s;
  }

  /* The advertise stage's expectation, as an engine that heard every
   * vanishing member's Leave would have it: those who will advertise, less
   * one that leaves right after (cfg.leave_after_advertise). */
  uint32_t adv_expected = 0;
  for (uint32_t i = 0; i < n; i++) adv_expected += cl[i].drop_at != FC_SA_ADVERTISE;
  uint32_t leaver = cfg->leave_after_advertise && cfg->leave_after_advertise <= n &&
                    cl[cfg->leave_after_advertise - 1].drop_at != FC_SA_ADVERTISE; /* 1 until it leaves */
  adv_expected -= leaver;

  for (int stage = FC_SA_ADVERTISE; stage <= FC_SA_UNMASK; stage++) {
    for (uint32_t i = 0; i < n; i++) {
      sim_client *sc = &cl[i];
      uint32_t idx = i + 1;
      if (sc->gone || sc->aborted) continue;
      if (sc->drop_at == stage) {
        sc->gone = 1;
        /* One that vanishes before advertising is the engine's to drop (at
         * its pick-up deadline, as adv_expected has it): no Leave here. */
        if (cfg->withdraw && stage > FC_SA_ADVERTISE) res->withdrawn += (uint32_t)fc_sa_server_withdraw(srv, idx);
        continue;
      }
      if (idx == cfg->leave_then_send && stage == cfg->leave_then_send_stage) {
        /* Leave, then send this stage's message (and the later ones) anyway. */
        res->withdrawn += (uint32_t)fc_sa_server_withdraw(srv, idx);
        if (stage == FC_SA_ADVERTISE) adv_expected--; /* the engine drops it */
      }
      Fedc__V1__SecAggSubmitRequest req = FEDC__V1__SEC_AGG_SUBMIT_REQUEST__INIT;
      Fedc__V1__SecAggPollResponse *in = NULL;
      int crc;
      double ts = 0;
      if (stage == FC_SA_ADVERTISE) {
        ts = cpu_s();
        crc = fc_sa_client_advertise(sc->c, &req);
      } else {
        if (!(in = poll(cfg, srv, idx, stage, &sc->bytes_down))) goto out;
        ts = cpu_s();
        switch (stage) {
        case FC_SA_SHARE_KEYS: crc = fc_sa_client_share_keys(sc->c, in, &req); break;
        case FC_SA_MASKED: crc = fc_sa_client_receive_shares(sc->c, in); break;
        case FC_SA_CONSISTENCY: crc = fc_sa_client_consistency(sc->c, in, &req); break;
        default: crc = fc_sa_client_unmask(sc->c, in, &req); break;
        }
        protobuf_c_message_free_unpacked(&in->base, NULL);
      }
      res->client_stage_s[stage] += cpu_s() - ts;
      if (crc != FEDC_OK) {
        client_abort(res, sc, idx);
        continue;
      }
      /* A member still to send (and not withdrawn, which the stage need not
       * wait for): the open stage must not count itself complete yet. */
      int withdrawn = idx == cfg->leave_then_send && stage >= cfg->leave_then_send_stage;
      if (!withdrawn && fc_sa_server_stage_complete(srv, stage == FC_SA_ADVERTISE ? adv_expected + leaver : 0))
        res->completed_early++;
      if (stage != FC_SA_MASKED) {
        submit(cfg, srv, sc, idx, stage, &req, res);
        if (stage == FC_SA_ADVERTISE && idx == cfg->leave_after_advertise) {
          res->withdrawn += (uint32_t)fc_sa_server_withdraw(srv, idx); /* said Leave while others train */
          sc->gone = 1;
          leaver = 0;
          continue;
        }
        if (stage == FC_SA_SHARE_KEYS && cfg->premask && !sc->aborted) {
          /* Mask ahead, as the runtime does once its shares are out. */
          if (!(sc->pre = malloc((p.dim + 1) * sizeof *sc->pre))) goto out;
          make_update(cfg->seed * 1000003u + idx, p.clip, x, p.dim);
          fc_rng qr;
          fc_rng_seed(&qr, cfg->seed * 1000003u + idx);
          fc_sa_quantize(x, p.dim, sc->weight, scale, &qr, sc->pre);
          clamp_narrow(&p, sc->pre);
          double c0 = cpu_s();
          if (fc_sa_client_premask(sc->c, sc->pre) != FEDC_OK) client_abort(res, sc, idx);
          res->client_stage_s[stage] += cpu_s() - c0;
        }
        continue;
      }
      /* Round 2: quantize, mask, "upload" through the aggregator (the same
       * quantized vector again for the plaintext reference when premasked). */
      make_update(cfg->seed * 1000003u + idx, p.clip, x, p.dim);
      fc_rng qr;
      fc_rng_seed(&qr, cfg->seed * 1000003u + idx);
      fc_sa_quantize(x, p.dim, sc->weight, scale, &qr, q);
      clamp_narrow(&p, q);
      uint32_t *y = sc->pre ? sc->pre : yb;
      if (!sc->pre) memcpy(y, q, (p.dim + 1) * sizeof *y);
      double t0 = now_s(), c0 = cpu_s();
      crc = fc_sa_client_mask(sc->c, y);
      res->client_mask_s += now_s() - t0;
      res->client_stage_s[stage] += cpu_s() - c0;
      if (crc != FEDC_OK) {
        client_abort(res, sc, idx);
        continue;
      }
      fc_agg_update *u = NULL;
      if (fc_sa_server_masked_allowed(srv, idx) && agg->ops->update_begin(agg, 1000, &u) == FEDC_OK) {
        uint64_t wire_bytes = (p.dim + 1) * sizeof *y;
        if (p.quant_bits) {
          /* Narrow ring: only the low ring_bits of each word travel; the
           * coordinator widens them back for its mod-2^32 fold. */
          wire_bytes = fc_sa_wire_bytes(&p);
          fc_sa_ring_pack(y, p.dim + 1, p.ring_bits, wire);
          fc_sa_ring_unpack(wire, p.dim + 1, p.ring_bits, y);
        }
        agg->ops->update_chunk(agg, u, 0, y, (p.dim + 1) * sizeof *y);
        agg->ops->update_commit(agg, u, 1);
        fc_sa_server_masked_done(srv, idx);
        sc->committed = 1;
        sc->bytes += wire_bytes;
        /* The plaintext reference: the quantized vectors summed mod 2^32,
         * and the float weighted sum. */
        for (uint64_t j = 0; j <= p.dim; j++) expect[j] += q[j];
        for (uint64_t j = 0; j < p.dim; j++) favg[j] += (double)x[j] * sc->weight;
        wsum += (double)sc->weight;
      }
    }
    if (!fc_sa_server_stage_complete(srv, stage == FC_SA_ADVERTISE ? adv_expected + leaver : 0)) res->closed_waiting++;
    if (fc_sa_server_close_stage(srv, why, sizeof why) != FEDC_OK) {
      snprintf(res->why, sizeof res->why, "%s", why);
      fc_sa_server_remaining(srv, res->remaining);
      rc = FEDC_OK; /* abandoned: a result, not a harness failure */
      goto out;
    }
  }
  fc_sa_server_remaining(srv, res->remaining);
  res->client_mask_s /= res->remaining[FC_SA_MASKED - 1] ? res->remaining[FC_SA_MASKED - 1] : 1;

  double t0 = now_s();
  fc_sa_mask_term *terms = NULL;
  size_t nterms = 0;
  int urc = fc_sa_server_unmask_terms(srv, &terms, &nterms, why, sizeof why);
  for (uint32_t i = 1; i <= n; i++) /* named for bad unmask shares, whether or not the secrets were rebuilt */
    if (fc_sa_server_bad_sent(srv, i) && res->nblamed++ < 8) res->blamed[res->nblamed - 1] = i;
  res->unattributed = fc_sa_server_unattributed(srv);
  if (urc != FEDC_OK) {
    snprintf(res->why, sizeof res->why, "%s", why);
    rc = FEDC_OK;
    goto out;
  }
  rc = fc_agg_secagg_unmask(agg, 0, cfg->prg, terms, nterms, cfg->threads, NULL);
  res->unmask_s = now_s() - t0;
  res->unmask_terms = nterms;
  free(terms);
  if (rc != FEDC_OK) goto out;
  res->completed = 1;

  /* Traffic of the clients that went through every stage. */
  uint64_t up = 0, down = 0, full = 0;
  for (uint32_t i = 0; i < n; i++) {
    if (cl[i].gone || cl[i].aborted) continue;
    up += cl[i].bytes;
    down += cl[i].bytes_down;
    full++;
  }
  res->bytes_up_per_client = full ? up / full : 0;
  res->bytes_down_per_client = full ? down / full : 0;
  uint32_t cnt = 0;
  uint32_t *sum = fc_agg_secagg_sum(agg, 0, &cnt);
  if (p.quant_bits) { /* the sum lives mod 2^ring_bits; the reference never wrapped */
    fc_sa_ring_reduce(sum, p.dim, p.ring_bits);
  }
  res->exact = memcmp(sum, expect, (p.dim + 1) * sizeof *sum) == 0;
  float *avg = malloc(p.dim * sizeof *avg);
  uint64_t W = 0;
  if (avg && fc_sa_dequantize(sum, p.dim, scale, (uint64_t)n * p.max_weight, avg, &W) == FEDC_OK) {
    for (uint64_t j = 0; j < p.dim; j++) {
      /* Less the float32 rounding of the decoded value (2^-24 relative, doubled
       * for margin): the bound is the quantization's. */
      double ref = favg[j] / wsum, e = fabs(avg[j] - ref) - fabs(ref) * 0x1p-23;
      if (e > res->max_abs_err) res->max_abs_err = e;
    }
    res->err_bound = (double)n / (scale * (double)W);
  } else {
    res->max_abs_err = INFINITY;
  }
  free(avg);
  rc = FEDC_OK;
out:
  for (uint32_t i = 0; cl && i < n; i++) {
    fc_sa_client_destroy(cl[i].c);
    free(cl[i].pre);
  }
  free(x);
  free(q);
  free(yb);
  free(wire);
  free(cl);
  for (uint32_t i = 0; names && i < n; i++) free(names[i]);
  free(names);
  free(ca);
  free(expect);
  free(favg);
  fc_sa_server_destroy(srv);
  if (agg) agg->ops->destroy(agg);
  return rc;
}
