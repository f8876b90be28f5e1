/*
 * coord_secagg.c - secure aggregation in the running coordinator: the glue
 * between the round engine (which decides when a stage closes), the SecAgg
 * core (coordinator/secagg_server*.c, which decides who dropped and what
 * each client sees) and the wire (SecAggSubmit / SecAggPoll, and masked
 * uploads through UploadUpdate). See coord_int.h for the calling rules.
 * The round's end (unmasking, decoding and the checks of the result) is
 * coord_sa_finish.c's.
 *
 * Parameters per instance of n clients (the cohort, or a bucket):
 *  - secagg_k and secagg_t 0 (the default), one instance: k and t from Bell
 *    et al. 2020's bounds for n (secagg/params.h, fc_sa_params_default):
 *    against a coordinator that lies about dropouts, with
 *    ceil(secagg_corrupt n) corrupt clients and max(ceil(secagg_dropout n),
 *    n - min_updates) dropped (clients sign survivor lists down to
 *    min_updates, so that many can be claimed dropped); the complete graph
 *    where nothing sparser meets the bounds (small cohorts). The bounds' t
 *    meets the floor below.
 *  - buckets, or secagg_t alone: the complete graph (buckets are small, and
 *    a bucket has no survivor floor but t to size a sparse graph by; a
 *    threshold set alone keeps the graph it was set for).
 *  - secagg_k > 0: k neighbours (>= n-1: the complete graph of the original
 *    SecAgg; an odd k is rounded up to even, as the Harary graph needs).
 *  Outside the bounds, t = secagg_t, by default a majority of a
 *  neighbourhood with the client itself: floor((k+1)/2) + 1 (Bonawitz et
 *  al. 2017 need t > n/2 against an active adversary), at most k.
 * Every t meets the floor every client insists on, 2t > k + 1 (secagg.h,
 * fc_sa_min_threshold): an operator's secagg_t below it for some instance
 * with an explicit or complete graph is refused at start (coord_sa_cfg_check).
 * min_survivors = min_updates for a single instance: the masked stage closes
 * into abandonment below it and clients refuse to unmask fewer; buckets
 * leave it 0 and the round's min_updates is checked over all buckets when
 * the masked stage closes, before any survivor list goes out.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/clock.h"
#include "common/log.h"
#include "common/rng.h"
#include "coordinator/coord_int.h"
#include "coordinator/secagg_server.h"
#include "crypto/cert_cache.h"
#include "crypto/sa_crypto.h"
#include "secagg/params.h"
#include "fedc/error.h"

#define MOD "secagg"

/* k and t for an instance of n clients, by the rule at the top of this file;
 * *from_bounds (may be NULL): 1 if Bell et al.'s bounds chose them. */
static void sa_k_t(const fc_coord_cfg *cfg, uint32_t n, int bucketed, uint32_t min_survivors, uint32_t *k_out,
                   uint32_t *t_out, int *from_bounds) {
  uint32_t k = cfg->secagg_k, t;
  if (from_bounds) *from_bounds = 0;
  if (!k && !cfg->secagg_t && !bucketed && n >= FC_SA_MIN_COHORT) {
    fc_sa_choice ch;
    fc_sa_params_default(n, cfg->secagg_corrupt, cfg->secagg_dropout, min_survivors, &ch);
    k = ch.k;
    t = ch.t;
    if (from_bounds) *from_bounds = !isnan(ch.log2_starve);
  } else {
    if (!k || k + 1 >= n) k = n ? n - 1 : 0;
    else if (k % 2) k = k + 2 >= n ? n - 1 : k + 1;
    t = cfg->secagg_t ? cfg->secagg_t : fc_sa_min_threshold(k, 0);
  }
  if (t > k) t = k;
  *k_out = k;
  *t_out = t;
}

int coord_sa_cfg_check(const fc_coord_cfg *cfg, char *err, size_t errlen) {
  if (!cfg->engine.secagg || !cfg->secagg_t) return FEDC_OK; /* the automatic t is the floor itself */
  fc_robust_cfg r;
  coord_robust_cfg(cfg, &r);
  int bucketed = r.kind > FC_AGG_FEDAVG && cfg->secagg_bucket >= 3;
  /* t is fixed and k grows with the instance, so the largest instance this
   * configuration can run is the one to check (t is capped at k, and
   * 2k > k + 1 for every k >= 2). The engine selects max(cohort,
   * min_updates); a cohort fraction selects up to every client there is. */
  uint32_t nmax = cfg->engine.cohort_size;
  if (nmax && nmax < cfg->engine.min_updates) nmax = cfg->engine.min_updates;
  if (!nmax) nmax = cfg->engine.max_clients ? cfg->engine.max_clients : FC_SA_MAX_COHORT;
  if (nmax > FC_SA_MAX_COHORT) nmax = FC_SA_MAX_COHORT;
  uint32_t big = nmax, s = cfg->secagg_bucket;
  if (bucketed) {
    /* Buckets (coord_sa_begin): floor(n / s) of them, the larger n / nb + 1. */
    big = 0;
    for (uint32_t n = s; n <= nmax; n++) {
      uint32_t nb = n / s, size = n / nb + (n % nb != 0);
      if (size > big) big = size;
    }
  }
  uint32_t k, t;
  sa_k_t(cfg, big, bucketed, 0, &k, &t, NULL);
  if (big < FC_SA_MIN_COHORT || t >= fc_sa_min_threshold(k, 0)) return FEDC_OK;
  snprintf(err, errlen,
           "secagg_threshold %u: clients refuse a threshold with 2t <= k + 1 (a coordinator showing two survivor "
           "lists could unmask one client's input), and an instance of %u clients here has k = %u neighbours, "
           "which needs t >= %u; leave secagg_threshold 0 (automatic)%s",
           cfg->secagg_t, big, k, fc_sa_min_threshold(k, 0),
           cfg->engine.cohort_size ? "" : " or bound k with secagg_neighbors (a cohort fraction has no fixed size)");
  return FEDC_ERR_INVALID;
}

/* The parameters of one SecAgg instance over `n` of the cohort (k and t by
 * the rule at the top of this file, applied to the instance's n). */
static int sa_params_for(fc_coord *c, const fc_engine_status *es, uint32_t n, fc_sa_params *p, int *from_bounds,
                         char *why, size_t whylen) {
  memset(p, 0, sizeof *p);
  p->round = es->round;
  p->model_version = es->version;
  memcpy(p->model_sha, es->sha, 32);
  p->n = n;
  p->min_survivors = c->bagg ? 0 : c->cfg.engine.min_updates;
  sa_k_t(&c->cfg, n, c->bagg != NULL, p->min_survivors, &p->k, &p->t, from_bounds);
  /* Buckets: every input counts once in its bucket's mean (weights would
   * let one client claim the whole bucket), as the robust rules are unweighted. */
  p->max_weight = c->bagg ? 1 : c->cfg.max_example_weight;
  p->clip = c->clip;
  p->dim = fc_model_numel(&c->model->spec);
  if (c->cfg.upload_bits && c->cfg.upload_bits < 32) {
    /* Narrow ring (1.9, secagg/ring.c): b-bit inputs, weights 1, the
     * narrowest ring the cohort's sum cannot wrap in. */
    p->quant_bits = c->cfg.upload_bits;
    p->quant_range = c->cfg.secagg_range < p->clip ? c->cfg.secagg_range : 0;
    p->max_weight = 1;
    p->ring_bits = fc_sa_ring_bits(n, p->quant_bits);
    if (!p->ring_bits) {
      snprintf(why, whylen, "no ring of up to 32 bits holds the sum of %u inputs of %u bits", n, p->quant_bits);
      return FEDC_ERR_INVALID;
    }
  }
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
    p->max_weight = 1;
    p->scale = fc_sa_dp_scale(n, m, p->clip, p->dim, zu, &p->dp_sigma);
    if (!(p->scale > 0)) {
      /* Never run a DP round without its noise. */
      snprintf(why, whylen, "distributed DP: no quantization scale leaves room in 32 bits for %u inputs and their "
                            "noise (z %g, %u survivors, %llu parameters)", n, zu, m, (unsigned long long)p->dim);
      return FEDC_ERR_INVALID;
    }
    if (c->cfg.dp_adaptive_quantile > 0) {
      /* The bit +-S (sensitivity S under zero-out) with noise 2 sigma_b S / sqrt(m):
       * decoded as sum / (2 S), it is the centred count with noise sigma_b. */
      p->bit_scale = FC_DP_BIT_SCALE;
      p->dp_bit_sigma = 2.0 * sb * FC_DP_BIT_SCALE / sqrt((double)m);
    }
  }
  return fc_random_bytes(p->graph_seed, sizeof p->graph_seed);
}

/* Bucketing (SHARE, Velicheti et al. 2021; Karimireddy et al. 2022, Alg. 1):
 * shuffle the cohort and cut it into floor(n / s) buckets, the first n mod
 * that one larger, so each has at least s. The shuffle is seeded from the
 * system's CSPRNG: no client can predict or choose its bucket-mates; or,
 * for research, from secagg_bucket_seed and the round (the cohort comes in
 * the engine's reproducible order). */
static int sa_shuffle(const char **names, uint32_t n, uint64_t fixed, uint64_t round) {
  uint64_t seed = fixed ^ (round * 0x9e3779b97f4a7c15ull);
  int rc = fixed ? FEDC_OK : fc_random_bytes((uint8_t *)&seed, sizeof seed);
  if (rc != FEDC_OK) return rc;
  fc_rng r;
  fc_rng_seed(&r, seed);
  for (uint32_t i = n; i > 1; i--) {
    uint32_t j = (uint32_t)fc_rng_below(&r, i);
    const char *t = names[i - 1];
    names[i - 1] = names[j];
    names[j] = t;
  }
  return FEDC_OK;
}

/* The cache of members' certificates kept across rounds (and, through the
 * tier without SecAgg, of relayed updates' signers: coord_aggpartial.c),
 * made on first use (NULL without a CA, or if it cannot be made: each session
 * then keeps its own). Under mu. Room for the largest cohort (a few KiB each); a federation larger
 * than its cohorts brings new certificates each round, and the least
 * recently used go. */
fc_cert_cache *coord_cert_cache(fc_coord *c) {
  if (!c->sa_certs && c->ca_pem) {
    size_t cap = c->cfg.engine.max_clients ? c->cfg.engine.max_clients : FC_SA_MAX_COHORT;
    if (cap > FC_SA_MAX_COHORT) cap = FC_SA_MAX_COHORT;
    if (fc_cert_cache_create(c->ca_pem, strlen(c->ca_pem), cap, &c->sa_certs, NULL, 0) != FEDC_OK) c->sa_certs = NULL;
  }
  return c->sa_certs;
}

void coord_sa_free(fc_coord *c) {
  fc_cert_cache_destroy(c->sa_certs);
  c->sa_certs = NULL;
}

int coord_sa_begin(fc_coord *c, char *why, size_t whylen) {
  if (!c->cfg.engine.secagg) return FEDC_OK;
  coord_sa_end(c);
  c->sa_stage_ms = fc_now_ms();
  fc_engine_status es;
  fc_engine_get_status(c->engine, fc_now_ms(), &es);
  uint32_t n = es.selected;
  const char **names = malloc((n ? n : 1) * sizeof *names);
  if (!names) {
    snprintf(why, whylen, "secure aggregation: out of memory");
    return FEDC_ERR_NOMEM;
  }
  n = fc_engine_cohort(c->engine, names, n);
  uint32_t nb = 1, s = c->cfg.secagg_bucket;
  int rc = FEDC_OK;
  if (c->bagg) {
    fc_robust_cfg rc_cfg;
    char rwhy[200];
    coord_robust_cfg(&c->cfg, &rc_cfg);
    nb = n / s;
    if (n < s) {
      snprintf(why, whylen, "secure aggregation buckets: a cohort of %u is smaller than one bucket of %u clients", n,
               s);
      rc = FEDC_ERR_REJECTED;
    } else if (fc_robust_check(&rc_cfg, nb, rwhy, sizeof rwhy)) {
      snprintf(why, whylen, "secure aggregation buckets: %u clients make %u buckets of at least %u: %s", n, nb, s,
               rwhy);
      rc = FEDC_ERR_REJECTED;
    } else {
      rc = sa_shuffle(names, n, c->cfg.secagg_bucket_seed, es.round);
    }
  }
  if (rc == FEDC_OK && (!(c->sa = calloc(nb, sizeof *c->sa)) || !(c->sa_dead = calloc(nb, sizeof *c->sa_dead)))) {
    snprintf(why, whylen, "secure aggregation: out of memory");
    rc = FEDC_ERR_NOMEM;
  }
  fc_sa_params p;
  memset(&p, 0, sizeof p);
  int from_bounds = 0;
  for (uint32_t b = 0, at = 0; rc == FEDC_OK && b < nb; b++) {
    uint32_t size = n / nb + (b < n % nb);
    rc = sa_params_for(c, &es, size, &p, &from_bounds, why, whylen);
    if (rc == FEDC_OK) rc = fc_sa_server_create(&p, names + at, &c->sa[b], why, whylen);
    if (rc == FEDC_OK) c->nsa = b + 1;
    if (rc == FEDC_OK && (rc = fc_sa_server_set_trust(c->sa[b], c->ca_pem, c->cfg.federation)) != FEDC_OK)
      snprintf(why, whylen, "secure aggregation: out of memory");
    if (rc == FEDC_OK) fc_sa_server_use_cert_cache(c->sa[b], coord_cert_cache(c));
    if (rc == FEDC_OK && nb > 1 && fc_log_get_level() <= FC_LOG_DEBUG) {
      char line[1024];
      size_t len = 0;
      for (uint32_t i = 0; i < size && len < sizeof line; i++)
        len += (size_t)snprintf(line + len, sizeof line - len, "%s%s", i ? " " : "", names[at + i]);
      FC_DEBUG(MOD, "round %llu: bucket %u: %s", (unsigned long long)p.round, b + 1, line);
    }
    at += size;
  }
  free(names);
  if (rc != FEDC_OK) {
    coord_sa_end(c);
    return rc;
  }
  if (nb == 1) {
    char graph[200] = "";
    if (!c->cfg.secagg_k && !c->cfg.secagg_t)
      snprintf(graph, sizeof graph, " (%s %g%% corrupt, %g%% dropout and min_updates %u)",
               from_bounds ? "Bell et al.'s bounds for" : "the complete graph: nothing sparser meets the bounds for",
               c->cfg.secagg_corrupt * 100, c->cfg.secagg_dropout * 100, p.min_survivors);
    FC_INFO(MOD, "round %llu: secure aggregation over %u clients, %u neighbours each, threshold %u%s%s",
            (unsigned long long)p.round, n, p.k, p.t, graph,
            p.dp_sigma > 0 ? "; distributed DP noise from the clients" : "");
  }
  else
    FC_INFO(MOD, "round %llu: secure aggregation in %u buckets of %u-%u clients (threshold %u-%u), %s over their means",
            (unsigned long long)p.round, nb, n / nb, n / nb + (n % nb != 0),
            fc_sa_server_params(c->sa[nb - 1])->t, fc_sa_server_params(c->sa[0])->t, c->cfg.aggregator);
  return FEDC_OK;
}

void coord_sa_end(fc_coord *c) {
  for (uint32_t b = 0; b < c->nsa; b++) fc_sa_server_destroy(c->sa[b]);
  free(c->sa);
  free(c->sa_dead);
  c->sa = NULL;
  c->sa_dead = NULL;
  c->nsa = 0; /* held polls of the round hear "that round is over" at the driver's next wake */
}

int coord_sa_find(const fc_coord *c, const char *client, uint32_t *index) {
  for (uint32_t b = 0; b < c->nsa; b++) {
    uint32_t i = fc_sa_server_index(c->sa[b], client);
    if (i) {
      *index = i;
      return (int)b;
    }
  }
  *index = 0;
  return -1;
}

uint32_t coord_sa_live(const fc_coord *c) {
  uint32_t live = 0;
  for (uint32_t b = 0; b < c->nsa; b++) live += !c->sa_dead[b];
  return live;
}

/* A bucket failed a stage (its own threshold), its unmasking or its checks:
 * it is dropped alone; its members' inputs never count and nothing more is
 * asked of them. Single bucket: the round's abandon reason in out. */
int coord_sa_drop_bucket(fc_coord *c, uint32_t b, int stage, const char *why, char *out, size_t outlen) {
  c->sa_dead[b] = (uint8_t)stage;
  fc_sa_server_abort(c->sa[b], why);
  if (c->nsa == 1) {
    snprintf(out, outlen, "%s", why);
    return FEDC_ERR_REJECTED;
  }
  FC_WARN(MOD, "round %llu: bucket %u of %u dropped: %s", (unsigned long long)fc_sa_server_params(c->sa[b])->round,
          b + 1, c->nsa, why);
  return FEDC_OK;
}

/* The round goes on while the robust rule can take the buckets left. */
int coord_sa_buckets_enough(fc_coord *c, int stage, char *out, size_t outlen) {
  if (c->nsa == 1) return c->sa_dead[0] ? FEDC_ERR_REJECTED : FEDC_OK;
  fc_robust_cfg rcfg;
  char rwhy[200];
  coord_robust_cfg(&c->cfg, &rcfg);
  uint32_t live = coord_sa_live(c);
  if (!fc_robust_check(&rcfg, live, rwhy, sizeof rwhy)) return FEDC_OK;
  snprintf(out, outlen, "secure aggregation buckets: %u of %u left after the %s stage: %s", live, c->nsa,
           fc_sa_stage_name(stage), rwhy);
  return FEDC_ERR_REJECTED;
}

int coord_sa_close(fc_coord *c) {
  char why[300] = "", bwhy[300];
  uint64_t now = fc_now_ms();
  if (!c->nsa) {
    fc_engine_finalize_failed(c->engine, "secure aggregation session missing", now);
    return FC_TICK_ABANDON;
  }
  int stage = 0;
  uint32_t left = 0;
  /* Every live bucket closes its stage (so each records who was left), then
   * the rule's precondition is checked once over those still live. */
  for (uint32_t b = 0; b < c->nsa; b++) {
    if (c->sa_dead[b]) continue;
    int st = fc_sa_server_stage(c->sa[b]);
    if (!stage) stage = st;
    if (fc_sa_server_close_stage(c->sa[b], bwhy, sizeof bwhy) != FEDC_OK)
      coord_sa_drop_bucket(c, b, st ? st : stage, bwhy, why, sizeof why);
  }
  fc_metrics_sa_stage(&c->metrics, stage, (double)(now - c->sa_stage_ms) / 1000.0);
  c->sa_stage_ms = now;
  if (coord_sa_buckets_enough(c, stage, why, sizeof why) != FEDC_OK) {
    fc_engine_finalize_failed(c->engine, why, now);
    return FC_TICK_ABANDON;
  }
  uint32_t rem[5];
  coord_sa_remaining(c, rem);
  if (stage) left = rem[stage - 1];
  if (stage == FC_SA_MASKED && left < c->cfg.engine.min_updates) {
    /* Buckets (a single instance refused this in its core): before any
     * survivor list goes out, so nothing is unmasked for a short round. */
    snprintf(why, sizeof why, "secure aggregation: only %u masked inputs in the %u buckets left, fewer than "
                              "min_updates %u: nothing is unmasked", left, coord_sa_live(c), c->cfg.engine.min_updates);
    for (uint32_t b = 0; b < c->nsa; b++) fc_sa_server_abort(c->sa[b], why);
    fc_engine_finalize_failed(c->engine, why, now);
    return FC_TICK_ABANDON;
  }
  if (c->nsa == 1)
    FC_INFO(MOD, "round %llu: %s stage closed with %u clients", (unsigned long long)fc_sa_server_params(c->sa[0])->round,
            fc_sa_stage_name(stage), left);
  else
    FC_INFO(MOD, "round %llu: %s stage closed with %u clients in %u of %u buckets",
            (unsigned long long)fc_sa_server_params(c->sa[0])->round, fc_sa_stage_name(stage), left, coord_sa_live(c), c->nsa);
  return fc_engine_sa_advance(c->engine, now);
}

/* From the engine's count for the whole cohort. Everyone selected is in
 * some bucket: a bucket expects all its members. Under c->mu. */
static uint32_t sa_want_advertise(const fc_coord *c, uint32_t b, uint32_t expected) {
  return c->nsa == 1 ? expected : expected ? fc_sa_server_params(c->sa[b])->n : 0;
}

uint32_t coord_sa_want_advertise(const fc_coord *c, uint32_t b) {
  return sa_want_advertise(c, b, fc_engine_expected(c->engine));
}

void coord_sa_check_complete(fc_coord *c) {
  if (!c->nsa) return;
  uint32_t expected = fc_engine_expected(c->engine);
  for (uint32_t b = 0; b < c->nsa; b++) {
    if (c->sa_dead[b]) continue;
    if (!fc_sa_server_stage_complete(c->sa[b], sa_want_advertise(c, b, expected))) return;
  }
  if (coord_sa_live(c)) {
    fc_engine_sa_ready(c->engine);
    /* Wake the driver to close the stage now rather than at its next 50 ms
     * tick: each of a round's five stages waited for it. Signalled without
     * its mutex (we hold c->mu): a wake-up lost to a driver not yet waiting
     * costs that one tick, as before. */
    pthread_cond_signal(&c->stop_cv);
  }
}

void coord_sa_task(fc_coord *c, const char *client, Fedc__V1__SecAggParams *p) {
  uint32_t idx;
  int b = coord_sa_find(c, client, &idx);
  const fc_sa_server *s = c->sa[b < 0 ? 0 : b];
  const fc_sa_params *sp = fc_sa_server_params(s);
  p->index = idx;
  p->n_cohort = sp->n;
  p->cohort = (char **)fc_sa_server_names(s);
  p->neighbors = sp->k;
  p->threshold = sp->t;
  p->graph_seed.data = (uint8_t *)sp->graph_seed;
  p->graph_seed.len = FC_SA_SEED_LEN;
  p->max_weight = sp->max_weight;
  p->stage_deadline_ms = c->cfg.engine.sa_stage_ms;
  p->keys_first = c->cfg.engine.sa_keys_first != 0;
  p->quant_scale = sp->scale;
  p->dp_sigma = sp->dp_sigma;
  p->bit_scale = sp->bit_scale;
  p->dp_bit_sigma = sp->dp_bit_sigma;
  p->min_survivors = sp->min_survivors;
  p->quant_bits = sp->quant_bits;
  p->ring_bits = sp->ring_bits;
  p->quant_range = sp->quant_range;
}

int coord_sa_masked_begin(fc_coord *c, const char *client, fc_model_spec *spec, uint32_t *bucket, char *why,
                          size_t whylen) {
  uint32_t idx;
  int b = coord_sa_find(c, client, &idx);
  if (!c->nsa) {
    snprintf(why, whylen, "no secure-aggregation round is running");
    return FEDC_ERR_REJECTED;
  }
  if (b < 0 || !fc_sa_server_masked_allowed(c->sa[b], idx)) {
    snprintf(why, whylen, "masked input not expected from %s now (stage %s)", client,
             fc_sa_stage_name(fc_sa_server_stage(c->sa[b < 0 ? 0 : b])));
    return FEDC_ERR_REJECTED;
  }
  *bucket = (uint32_t)b;
  return coord_sa_masked_spec(c, (uint32_t)b, spec);
}

int coord_sa_masked_spec(const fc_coord *c, uint32_t b, fc_model_spec *spec) {
  if (b >= c->nsa) return FEDC_ERR_NOT_FOUND;
  memset(spec, 0, sizeof *spec);
  const fc_sa_params *p = fc_sa_server_params(c->sa[b]);
  uint64_t shape = p->quant_bits ? fc_sa_wire_bytes(p) : fc_sa_entries(p);
  fc_model_spec_add(spec, "secagg.masked", 1, &shape);
  spec->t[0].dtype = p->quant_bits ? FC_DTYPE_U8 : FC_DTYPE_U32; /* 1.9: narrow ring, ring_bits/8 bytes a word */
  return FEDC_OK;
}

int coord_sa_expects(const fc_coord *c, const char *client, uint32_t *bucket) {
  uint32_t idx;
  int b = coord_sa_find(c, client, &idx);
  if (b < 0 || c->sa_dead[b] || !fc_sa_server_masked_allowed(c->sa[b], idx)) return 0;
  *bucket = (uint32_t)b;
  return 1;
}

int coord_sa_partial_check(const fc_coord *c, uint32_t b, const char *const *clients, size_t n, char *why,
                           size_t whylen) {
  if (b >= c->nsa || c->sa_dead[b]) {
    snprintf(why, whylen, "masked partial for secure-aggregation instance %u: %s", b,
             b >= c->nsa ? "no such instance this round" : "that bucket was dropped");
    return FEDC_ERR_INVALID;
  }
  for (size_t i = 0; i < n; i++) {
    uint32_t at, idx;
    if (coord_sa_expects(c, clients[i], &at) && at == b) continue;
    int f = coord_sa_find(c, clients[i], &idx); /* only to say why */
    snprintf(why, whylen, "masked partial for instance %u names %s, %s", b, clients[i],
             f < 0 ? "not in this round's secure aggregation" : f != (int)b ? "a member of another instance"
                                                                : "whose masked input is not expected now");
    return FEDC_ERR_INVALID;
  }
  return FEDC_OK;
}

void coord_sa_masked_done(fc_coord *c, const char *client) {
  uint32_t idx;
  int b = coord_sa_find(c, client, &idx);
  if (b < 0) return;
  fc_sa_server_masked_done(c->sa[b], idx);
  coord_sa_check_complete(c);
}

void coord_sa_remaining(fc_coord *c, uint32_t out[5]) {
  memset(out, 0, 5 * sizeof *out);
  for (uint32_t b = 0; b < c->nsa; b++) {
    uint32_t r[5];
    fc_sa_server_remaining(c->sa[b], r);
    /* A dropped bucket's members count up to the stage before it failed. */
    int upto = c->sa_dead[b] && c->nsa > 1 ? c->sa_dead[b] - 1 : 5;
    for (int i = 0; i < upto; i++) out[i] += r[i];
  }
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
  case FEDC_ERR_PERMISSION: return GRPC_STATUS_PERMISSION_DENIED; /* keys under a certificate not the caller's own */
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
  uint32_t idx;
  int b = coord_sa_find(c, peer->name, &idx);
  if (!c->nsa) {
    rc = FEDC_ERR_REJECTED;
    snprintf(why, sizeof why, "no secure-aggregation round is running");
  } else if (b < 0) {
    rc = FEDC_ERR_REJECTED;
    snprintf(why, sizeof why, "%s is not in this round's cohort", peer->name);
  } else if (req->stage == FEDC__V1__SEC_AGG_STAGE__SA_ADVERTISE && !fc_engine_in_round(c->engine, peer->name)) {
    /* It left, or missed its pick-up: the advertise stage no longer waits
     * for it, so its keys must not count for a member still training. */
    rc = FEDC_ERR_REJECTED;
    snprintf(why, sizeof why, "%s is no longer in this round's cohort", peer->name);
  } else if ((rc = fc_sa_server_submit(c->sa[b], idx, peer->cert_sha256, req, why, sizeof why)) == FEDC_OK) {
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

