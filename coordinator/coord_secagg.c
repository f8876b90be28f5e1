/*
 * coord_secagg.c - secure aggregation in the running coordinator: the glue
 * between the round engine (which decides when a stage closes), the SecAgg
 * core (coordinator/secagg_server*.c, which decides who dropped and what
 * each client sees) and the wire (SecAggSubmit / SecAggPoll, and masked
 * uploads through UploadUpdate). See coord_int.h for the calling rules.
 *
 * Parameters per round: n = the cohort; k = secagg_k neighbours (0 or
 * >= n-1: the complete graph of the original SecAgg; an odd k is rounded up
 * to even, as the Harary graph needs); t = secagg_t, by default a majority of
 * a neighbourhood with the client itself: floor((k+1)/2) + 1 (Bonawitz et
 * al. 2017 need t > n/2 against an active adversary), at most k.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/clock.h"
#include "common/log.h"
#include "coordinator/coord_int.h"
#include "coordinator/secagg_server.h"
#include "crypto/sa_crypto.h"
#include "fedc/error.h"

#define MOD "secagg"

int coord_sa_begin(fc_coord *c, char *why, size_t whylen) {
  if (!c->cfg.engine.secagg) return FEDC_OK;
  coord_sa_end(c);
  fc_engine_status es;
  fc_engine_get_status(c->engine, fc_now_ms(), &es);
  uint32_t n = es.selected;
  const char **names = malloc((n ? n : 1) * sizeof *names);
  if (!names) {
    snprintf(why, whylen, "secure aggregation: out of memory");
    return FEDC_ERR_NOMEM;
  }
  n = fc_engine_cohort(c->engine, names, n);
  fc_sa_params p;
  memset(&p, 0, sizeof p);
  p.round = es.round;
  p.model_version = es.version;
  memcpy(p.model_sha, es.sha, 32);
  p.n = n;
  uint32_t k = c->cfg.secagg_k;
  if (!k || k + 1 >= n) k = n ? n - 1 : 0;
  else if (k % 2) k = k + 2 >= n ? n - 1 : k + 1;
  uint32_t t = c->cfg.secagg_t ? c->cfg.secagg_t : (k + 1) / 2 + 1;
  if (t > k) t = k;
  p.k = k;
  p.t = t;
  p.max_weight = c->cfg.max_example_weight;
  p.clip = c->clip;
  p.dim = fc_model_numel(&c->model->spec);
  if (c->cfg.dp_noise_multiplier > 0) {
    /* Distributed discrete Gaussian (Kairouz, Liu and Steinke 2021): each
     * client adds noise of std z (C s + sqrt(dim)) / sqrt(m) in the integer
     * domain, m = min_updates, the fewest masked inputs a round publishes
     * with; any m of them carry noise multiplier z (zero-out adjacency: a
     * client's update replaced by zeros, its noise still there). More
     * survivors add more noise; below m the round is abandoned. */
    double zu, sb;
    uint32_t m = c->cfg.engine.min_updates;
    coord_dp_split(c, c->dp_round_expected, &zu, &sb);
    p.max_weight = 1;
    p.scale = fc_sa_dp_scale(n, m, p.clip, p.dim, zu, &p.dp_sigma);
    if (!(p.scale > 0)) {
      /* Never run a DP round without its noise. */
      free(names);
      snprintf(why, whylen, "distributed DP: no quantization scale leaves room in 32 bits for %u inputs and their "
                            "noise (z %g, %u survivors, %llu parameters)", n, zu, m, (unsigned long long)p.dim);
      return FEDC_ERR_INVALID;
    }
    if (c->cfg.dp_adaptive_quantile > 0) {
      /* The bit +-S (sensitivity S under zero-out) with noise 2 sigma_b S / sqrt(m):
       * decoded as sum / (2 S), it is the centred count with noise sigma_b. */
      p.bit_scale = FC_DP_BIT_SCALE;
      p.dp_bit_sigma = 2.0 * sb * FC_DP_BIT_SCALE / sqrt((double)m);
    }
  }
  int rc = fc_random_bytes(p.graph_seed, sizeof p.graph_seed);
  if (rc == FEDC_OK) rc = fc_sa_server_create(&p, names, &c->sa, why, whylen);
  free(names);
  if (rc == FEDC_OK)
    FC_INFO(MOD, "round %llu: secure aggregation over %u clients, %u neighbours each, threshold %u%s", (unsigned long long)p.round,
            n, k, t, p.dp_sigma > 0 ? "; distributed DP noise from the clients" : "");
  return rc;
}

void coord_sa_end(fc_coord *c) {
  fc_sa_server_destroy(c->sa);
  c->sa = NULL;
}

int coord_sa_close(fc_coord *c) {
  char why[300];
  uint64_t now = fc_now_ms();
  if (!c->sa) {
    fc_engine_finalize_failed(c->engine, "secure aggregation session missing", now);
    return FC_TICK_ABANDON;
  }
  int stage = fc_sa_server_stage(c->sa);
  if (fc_sa_server_close_stage(c->sa, why, sizeof why) != FEDC_OK) {
    fc_engine_finalize_failed(c->engine, why, now);
    return FC_TICK_ABANDON;
  }
  uint32_t rem[5];
  fc_sa_server_remaining(c->sa, rem);
  FC_INFO(MOD, "round %llu: %s stage closed with %u clients", (unsigned long long)fc_sa_server_params(c->sa)->round,
          fc_sa_stage_name(stage), rem[stage - 1]);
  return fc_engine_sa_advance(c->engine, now);
}

void coord_sa_check_complete(fc_coord *c) {
  if (c->sa && fc_sa_server_stage_complete(c->sa, fc_engine_expected(c->engine))) fc_engine_sa_ready(c->engine);
}

void coord_sa_task(fc_coord *c, const char *client, Fedc__V1__SecAggParams *p) {
  const fc_sa_params *sp = fc_sa_server_params(c->sa);
  p->index = fc_sa_server_index(c->sa, client);
  p->n_cohort = sp->n;
  p->cohort = (char **)fc_sa_server_names(c->sa);
  p->neighbors = sp->k;
  p->threshold = sp->t;
  p->graph_seed.data = (uint8_t *)sp->graph_seed;
  p->graph_seed.len = FC_SA_SEED_LEN;
  p->max_weight = sp->max_weight;
  p->stage_deadline_ms = c->cfg.engine.sa_stage_ms;
  p->quant_scale = sp->scale;
  p->dp_sigma = sp->dp_sigma;
  p->bit_scale = sp->bit_scale;
  p->dp_bit_sigma = sp->dp_bit_sigma;
}

int coord_sa_finish(fc_coord *c, float *delta, uint32_t *count, char *why, size_t whylen) {
  fc_sa_mask_term *terms = NULL;
  size_t nterms = 0;
  pthread_mutex_lock(&c->mu);
  if (!c->sa) {
    pthread_mutex_unlock(&c->mu);
    snprintf(why, whylen, "secure aggregation session missing");
    return FEDC_ERR_INTERNAL;
  }
  fc_sa_params p = *fc_sa_server_params(c->sa);
  int rc = fc_sa_server_unmask_terms(c->sa, &terms, &nterms, why, whylen);
  pthread_mutex_unlock(&c->mu);
  if (rc != FEDC_OK) return rc;
  uint64_t t0 = fc_now_ms();
  rc = fc_agg_secagg_unmask(c->agg, NULL, terms, nterms, c->cfg.unmask_threads > 0 ? c->cfg.unmask_threads : 2,
                            &c->sa_abort);
  fc_wipe(terms, nterms * sizeof *terms);
  free(terms);
  if (rc != FEDC_OK) {
    snprintf(why, whylen, "unmasking stopped: %s", fedc_strerror(rc));
    return rc;
  }
  const uint32_t *sum = fc_agg_secagg_sum(c->agg, count);
  uint64_t total = 0;
  rc = fc_sa_dequantize(sum, p.dim, fc_sa_params_scale(&p), (uint64_t)p.n * p.max_weight, delta, &total);
  if (rc != FEDC_OK) {
    snprintf(why, whylen, "unmasked sum is inconsistent (total weight %u): a client sent a malformed input",
             sum[p.dim]);
    return FEDC_ERR_REJECTED;
  }
  FC_INFO(MOD, "round %llu: unmasked %u inputs (%zu masks removed in %llu ms), total weight %llu",
          (unsigned long long)p.round, *count, nterms, (unsigned long long)(fc_now_ms() - t0),
          (unsigned long long)total);
  if (p.dp_sigma > 0 && *count < c->cfg.engine.min_updates) {
    snprintf(why, whylen, "%u masked inputs survived; the clients' privacy noise needs %u", *count,
             c->cfg.engine.min_updates);
    return FEDC_ERR_REJECTED;
  }
  if (p.dp_sigma > 0 && total != *count) {
    /* Each weight is 1 under DP: a sum of weights that is not the number of
     * inputs means a client lied about its weight (and would fake survivors). */
    snprintf(why, whylen, "unmasked weights sum to %llu for %u inputs (each must be 1): a client sent a malformed "
                          "input", (unsigned long long)total, *count);
    return FEDC_ERR_REJECTED;
  }
  if (p.dp_sigma > 0) {
    double delta_int = (double)p.clip * fc_sa_params_scale(&p) + sqrt((double)p.dim);
    FC_INFO(MOD, "round %llu: distributed DP: %llu survivors added noise multiplier %.4g to the sum (at least %.4g "
                 "needed, from %u survivors)",
            (unsigned long long)p.round, (unsigned long long)total, p.dp_sigma * sqrt((double)total) / delta_int,
            p.dp_sigma * sqrt((double)c->cfg.engine.min_updates) / delta_int, c->cfg.engine.min_updates);
  }
  pthread_mutex_lock(&c->mu);
  fc_engine_set_examples(c->engine, total);
  /* The noisy centred count of unclipped updates (adaptive clipping). */
  if (p.bit_scale) c->dp_sa_centred = (double)(int32_t)sum[p.dim + 1] / (2.0 * p.bit_scale);
  pthread_mutex_unlock(&c->mu);
  return FEDC_OK;
}

int coord_sa_masked_begin(fc_coord *c, const char *client, fc_model_spec *spec, char *why, size_t whylen) {
  if (!c->sa) {
    snprintf(why, whylen, "no secure-aggregation round is running");
    return FEDC_ERR_REJECTED;
  }
  uint32_t idx = fc_sa_server_index(c->sa, client);
  if (!fc_sa_server_masked_allowed(c->sa, idx)) {
    snprintf(why, whylen, "masked input not expected from %s now (stage %s)", client,
             fc_sa_stage_name(fc_sa_server_stage(c->sa)));
    return FEDC_ERR_REJECTED;
  }
  memset(spec, 0, sizeof *spec);
  uint64_t shape = fc_sa_entries(fc_sa_server_params(c->sa));
  fc_model_spec_add(spec, "secagg.masked", 1, &shape);
  spec->t[0].dtype = FC_DTYPE_U32;
  return FEDC_OK;
}

void coord_sa_masked_done(fc_coord *c, const char *client) {
  if (!c->sa) return;
  fc_sa_server_masked_done(c->sa, fc_sa_server_index(c->sa, client));
  coord_sa_check_complete(c);
}

void coord_sa_remaining(fc_coord *c, uint32_t out[5]) {
  if (c->sa) fc_sa_server_remaining(c->sa, out);
  else memset(out, 0, 5 * sizeof *out);
}

size_t coord_sa_submit_limit(const fc_coord_cfg *cfg) {
  uint64_t k = cfg->secagg_k ? cfg->secagg_k + 1 : cfg->engine.cohort_size ? cfg->engine.cohort_size : FC_SA_MAX_COHORT;
  /* keys + a certificate, or one share (~150 bytes packed) / unmask share per neighbour */
  return 32 * 1024 + (size_t)(k + 2) * 192;
}

/* ---- the service ---- */

static grpc_status_code sa_status(int err) {
  switch (err) {
  case FEDC_ERR_REJECTED: return GRPC_STATUS_FAILED_PRECONDITION;
  case FEDC_ERR_NOMEM: return GRPC_STATUS_RESOURCE_EXHAUSTED;
  default: return GRPC_STATUS_INVALID_ARGUMENT;
  }
}

void coord_h_secagg_submit(fc_scall *call, void *ctx) {
  fc_coord *c = ctx;
  const fc_peer *peer = fc_scall_peer(call);
  const Fedc__V1__SecAggSubmitRequest *req = (const Fedc__V1__SecAggSubmitRequest *)fc_scall_request(call);
  char why[300] = "";
  int rc;
  pthread_mutex_lock(&c->mu);
  uint32_t idx = c->sa ? fc_sa_server_index(c->sa, peer->name) : 0;
  if (!c->sa) {
    rc = FEDC_ERR_REJECTED;
    snprintf(why, sizeof why, "no secure-aggregation round is running");
  } else if (!idx) {
    rc = FEDC_ERR_REJECTED;
    snprintf(why, sizeof why, "%s is not in this round's cohort", peer->name);
  } else if ((rc = fc_sa_server_submit(c->sa, idx, req, why, sizeof why)) == FEDC_OK) {
    coord_sa_check_complete(c);
  }
  pthread_mutex_unlock(&c->mu);
  if (rc != FEDC_OK) {
    FC_WARN(MOD, "%s stage message from %s refused: %s", fc_sa_stage_name((int)req->stage), peer->name, why);
    fc_scall_finish(call, sa_status(rc), why, NULL);
    return;
  }
  Fedc__V1__SecAggSubmitResponse resp = FEDC__V1__SEC_AGG_SUBMIT_RESPONSE__INIT;
  resp.accepted = 1;
  resp.detail = "accepted";
  fc_scall_finish(call, GRPC_STATUS_OK, NULL, &resp.base);
}

void coord_h_secagg_poll(fc_scall *call, void *ctx) {
  fc_coord *c = ctx;
  const fc_peer *peer = fc_scall_peer(call);
  const Fedc__V1__SecAggPollRequest *req = (const Fedc__V1__SecAggPollRequest *)fc_scall_request(call);
  Fedc__V1__SecAggPollResponse resp;
  pthread_mutex_lock(&c->mu);
  if (!c->sa || fc_sa_server_params(c->sa)->round != req->round) {
    Fedc__V1__SecAggPollResponse z = FEDC__V1__SEC_AGG_POLL_RESPONSE__INIT;
    resp = z;
    resp.status = FEDC__V1__SEC_AGG_POLL_RESPONSE__STATUS__ABORTED;
    resp.reason = (char *)"that round is over";
  } else {
    fc_sa_server_poll(c->sa, fc_sa_server_index(c->sa, peer->name), (int)req->stage, &resp);
  }
  /* Packed under the lock: the answer points into the session. */
  fc_scall_finish(call, GRPC_STATUS_OK, NULL, &resp.base);
  if (c->sa) fc_sa_poll_clear(&resp);
  pthread_mutex_unlock(&c->mu);
}
