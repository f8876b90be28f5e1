/*
 * secagg.c - session parameters, session id, neighbour graph, quantization,
 * key derivation and the signed byte strings of secure aggregation (see
 * secagg.h). Everything here is deterministic given its inputs except
 * fc_sa_quantize's rounding, whose randomness the caller seeds.
 *
 * Encodings are fixed-width big-endian, each prefixed by a NUL-terminated
 * domain tag, so no byte string of one kind can be read as another.
 */
#include "secagg/secagg.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/rng.h"
#include "crypto/sa_crypto.h"
#include "crypto/sha256.h"
#include "fedc/error.h"

const char *fc_sa_stage_name(int stage) {
  switch (stage) {
  case FC_SA_ADVERTISE: return "advertise";
  case FC_SA_SHARE_KEYS: return "shares";
  case FC_SA_MASKED: return "masked";
  case FC_SA_CONSISTENCY: return "consistency";
  case FC_SA_UNMASK: return "unmask";
  default: return "?";
  }
}

int fc_sa_drop_parse(const char *spec, double drop[6], char *why, size_t whylen) {
  double d[6] = {0};
  const char *p = spec;
  while (*p) {
    const char *colon = strchr(p, ':');
    if (!colon) break;
    int stage = 0;
    for (int s = FC_SA_ADVERTISE; s <= FC_SA_UNMASK; s++)
      if (strlen(fc_sa_stage_name(s)) == (size_t)(colon - p) && strncmp(p, fc_sa_stage_name(s), colon - p) == 0)
        stage = s;
    char *end;
    double v = strtod(colon + 1, &end);
    if (!stage || end == colon + 1 || !(v >= 0 && v <= 1) || (*end && *end != ',')) {
      snprintf(why, whylen,
               "bad dropout '%s': want STAGE:P[,STAGE:P...] with STAGE advertise|shares|masked|consistency|unmask "
               "and P in [0, 1]",
               spec);
      return FEDC_ERR_INVALID;
    }
    d[stage] = v;
    p = *end ? end + 1 : end;
  }
  if (*p) {
    snprintf(why, whylen, "bad dropout '%s': want STAGE:P[,STAGE:P...]", spec);
    return FEDC_ERR_INVALID;
  }
  memcpy(drop, d, sizeof d);
  return FEDC_OK;
}

static void put32(uint8_t *p, uint32_t v) {
  p[0] = (uint8_t)(v >> 24);
  p[1] = (uint8_t)(v >> 16);
  p[2] = (uint8_t)(v >> 8);
  p[3] = (uint8_t)v;
}

static void put64(uint8_t *p, uint64_t v) {
  put32(p, (uint32_t)(v >> 32));
  put32(p + 4, (uint32_t)v);
}

int fc_sa_params_check(const fc_sa_params *p, char *why, size_t whylen) {
  char tmp[1];
  if (!why) {
    why = tmp;
    whylen = sizeof tmp;
  }
  if (p->n < FC_SA_MIN_COHORT || p->n > FC_SA_MAX_COHORT) {
    snprintf(why, whylen, "secure aggregation needs a cohort of %d..%d clients, not %u", FC_SA_MIN_COHORT,
             FC_SA_MAX_COHORT, p->n);
    return FEDC_ERR_INVALID;
  }
  if (!(p->k == p->n - 1 || (p->k >= 2 && p->k < p->n - 1 && p->k % 2 == 0))) {
    snprintf(why, whylen, "neighbours k=%u: must be even and below n-1=%u, or n-1 (complete graph)", p->k, p->n - 1);
    return FEDC_ERR_INVALID;
  }
  if (p->t < 2 || p->t > p->k) {
    snprintf(why, whylen, "threshold t=%u: must be in 2..k (k=%u)", p->t, p->k);
    return FEDC_ERR_INVALID;
  }
  if (p->t < fc_sa_min_threshold(p->k, 0)) {
    /* secagg.h: below it a coordinator that shows two survivor lists
     * rebuilds both secrets of one client and so its input. */
    snprintf(why, whylen,
             "threshold t=%u with k=%u neighbours: clients need 2t > k + 1 (t >= %u), else a coordinator that shows "
             "two survivor lists can unmask one client's input",
             p->t, p->k, fc_sa_min_threshold(p->k, 0));
    return FEDC_ERR_INVALID;
  }
  if (p->min_survivors > p->n) {
    snprintf(why, whylen, "at least %u masked inputs needed (min_updates) from a cohort of %u: never reachable",
             p->min_survivors, p->n);
    return FEDC_ERR_INVALID;
  }
  if (!(p->clip > 0) || !isfinite(p->clip)) {
    snprintf(why, whylen, "secure aggregation needs a finite clip norm > 0 (got %g)", (double)p->clip);
    return FEDC_ERR_INVALID;
  }
  if (p->max_weight < 1 || (double)p->n * (double)p->max_weight >= 2147483648.0) {
    snprintf(why, whylen, "max weight %llu x cohort %u must stay below 2^31",
             (unsigned long long)p->max_weight, p->n);
    return FEDC_ERR_INVALID;
  }
  if (p->dim < 1 || p->dim >= UINT32_MAX - 1) {
    snprintf(why, whylen, "model of %llu parameters: out of range for secure aggregation",
             (unsigned long long)p->dim);
    return FEDC_ERR_INVALID;
  }
  if (fc_sa_quant_scale(p->n, p->max_weight, p->clip) <= 0) {
    snprintf(why, whylen, "cohort %u x max weight %llu x clip %g leaves no room to quantize in 32 bits", p->n,
             (unsigned long long)p->max_weight, (double)p->clip);
    return FEDC_ERR_INVALID;
  }
  if (p->quant_bits || p->ring_bits) {
    /* Narrow ring (1.9, ring.c): b-bit inputs, weights 1, no DP noise (its
     * range needs the 32-bit ring's room); a ring the cohort's sum could
     * wrap in is refused: the unmasked sum would be garbage. */
    uint32_t need = fc_sa_ring_bits(p->n, p->quant_bits);
    if (p->quant_bits < 2 || p->quant_bits > 16 || p->max_weight != 1 || p->scale != 0 || p->dp_sigma != 0 ||
        p->bit_scale != 0) {
      snprintf(why, whylen, "narrow ring: %u-bit inputs need 2..16 bits, weights 1 and no distributed DP",
               p->quant_bits);
      return FEDC_ERR_INVALID;
    }
    if (!(p->quant_range >= 0 && p->quant_range <= p->clip)) {
      snprintf(why, whylen, "narrow ring: quantization range %g must be in [0, clip %g]", (double)p->quant_range,
               (double)p->clip);
      return FEDC_ERR_INVALID;
    }
    if (!need || p->ring_bits % 8 || p->ring_bits < need || p->ring_bits > 32) {
      snprintf(why, whylen, "a %u-bit ring can wrap: the sum of %u inputs of %u bits needs a ring of %u bits",
               p->ring_bits, p->n, p->quant_bits, need);
      return FEDC_ERR_INVALID;
    }
  }
  if (p->scale != 0 || p->dp_sigma != 0 || p->bit_scale != 0 || p->dp_bit_sigma != 0) {
    /* Distributed DP: the coordinator chose the scale and the noise; each
     * client checks the sum still cannot wrap (8 standard deviations of n
     * clients' noise), and that the noise is a discrete Gaussian whose sum
     * is one to within nothing a double can hold (sigma >= 10: Kairouz et al.
     * 2021's tau = 10 sum_k exp(-2 pi^2 sigma^2 k/(k+1)) underflows to 0). */
    double n = p->n, tails = 8.0 * sqrt(n);
    double span = n * ((double)p->clip * p->scale + 1.0) + tails * p->dp_sigma;
    double bspan = n * (double)p->bit_scale + tails * p->dp_bit_sigma;
    if (p->min_survivors < 2) {
      /* The noise is calibrated for min_survivors clients' shares of it. */
      snprintf(why, whylen, "distributed DP needs the survivor count its noise was calibrated for (m >= 2, got %u)",
               p->min_survivors);
      return FEDC_ERR_INVALID;
    }
    if (p->max_weight != 1) {
      snprintf(why, whylen, "distributed DP needs uniform weights (max weight 1, got %llu)",
               (unsigned long long)p->max_weight);
      return FEDC_ERR_INVALID;
    }
    if (!(p->scale > 0 && isfinite(p->scale)) || !(p->dp_sigma >= 10 && isfinite(p->dp_sigma)) ||
        !(span < 2147483647.0)) {
      snprintf(why, whylen, "distributed DP: scale %g and noise std %g (integer units) must be finite, std >= 10, "
                            "and the noisy sum of %u inputs must fit 31 bits",
               p->scale, p->dp_sigma, p->n);
      return FEDC_ERR_INVALID;
    }
    if (p->bit_scale && (!(p->dp_bit_sigma >= 10 && isfinite(p->dp_bit_sigma)) || !(bspan < 2147483647.0))) {
      snprintf(why, whylen, "distributed DP: the clipping bit's scale %u and noise std %g do not fit",
               p->bit_scale, p->dp_bit_sigma);
      return FEDC_ERR_INVALID;
    }
  }
  return FEDC_OK;
}

double fc_sa_params_scale(const fc_sa_params *p) {
  if (p->quant_bits >= 2 && p->quant_bits <= 16)
    return (double)((1u << (p->quant_bits - 1)) - 1) / (double)(p->quant_range > 0 ? p->quant_range : p->clip);
  return p->scale > 0 ? p->scale : fc_sa_quant_scale(p->n, p->max_weight, p->clip);
}

double fc_sa_dp_sensitivity(float clip, double scale, uint64_t dim) {
  return (double)clip * scale + sqrt((double)dim);
}

double fc_sa_dp_scale(uint32_t n, uint32_t m_min, float clip, uint64_t dim, double z, double *sigma) {
  /* n (C s + 1) + 8 sqrt(n) z (C s + sqrt(dim)) / sqrt(m_min) <= (2^31 - 1) / (1 + 1e-6), solved for s. */
  double a = 8.0 * sqrt((double)n) * z / sqrt((double)(m_min ? m_min : 1));
  double room = 2147483647.0 / (1.0 + 1e-6) - (double)n - a * sqrt((double)dim);
  double s = room / ((double)clip * ((double)n + a));
  if (!(s > 0) || !isfinite(s)) return 0;
  *sigma = z * fc_sa_dp_sensitivity(clip, s, dim) / sqrt((double)(m_min ? m_min : 1));
  return s;
}

int fc_sa_session_id(const fc_sa_params *p, const char *const *names, uint8_t out[FC_SA_SESSION_LEN]) {
  static const char tag[] = "fedc/secagg/v1/session";
  uint8_t buf[8 * 4 + 32 + 4 * 3 + FC_SA_SEED_LEN + 4 + 8 * 3 + 4 + 4 + 12];
  uint8_t *q = buf;
  put64(q, p->round), q += 8;
  put64(q, p->model_version), q += 8;
  memcpy(q, p->model_sha, 32), q += 32;
  put32(q, p->n), q += 4;
  put32(q, p->k), q += 4;
  put32(q, p->t), q += 4;
  memcpy(q, p->graph_seed, FC_SA_SEED_LEN), q += FC_SA_SEED_LEN;
  put64(q, p->max_weight), q += 8;
  uint32_t clip_bits;
  memcpy(&clip_bits, &p->clip, 4);
  put32(q, clip_bits), q += 4;
  put64(q, p->dim), q += 8;
  if (p->scale != 0 || p->dp_sigma != 0 || p->bit_scale != 0) {
    /* Distributed DP (protocol 1.3): its parameters too. Without it the id is
     * what 1.2 computes. */
    uint64_t bits;
    memcpy(&bits, &p->scale, 8);
    put64(q, bits), q += 8;
    memcpy(&bits, &p->dp_sigma, 8);
    put64(q, bits), q += 8;
    memcpy(&bits, &p->dp_bit_sigma, 8);
    put64(q, bits), q += 8;
    put32(q, p->bit_scale), q += 4;
  }
  /* Protocol 1.5: the survivor floor, so a client and the coordinator that
   * disagree on it share no session. 0 (none) keeps the 1.4 id. */
  if (p->min_survivors) put32(q, p->min_survivors), q += 4;
  /* Protocol 1.9: the narrow ring. Without it the 1.5 id. */
  if (p->quant_bits || p->ring_bits) {
    uint32_t range_bits;
    memcpy(&range_bits, &p->quant_range, 4);
    put32(q, p->quant_bits), q += 4;
    put32(q, p->ring_bits), q += 4;
    put32(q, range_bits), q += 4;
  }
  fc_sha256_ctx c;
  int rc = fc_sha256_init(&c);
  if (rc != FEDC_OK) return rc;
  rc = fc_sha256_update(&c, tag, sizeof tag);
  if (rc == FEDC_OK) rc = fc_sha256_update(&c, buf, (size_t)(q - buf));
  for (uint32_t i = 0; rc == FEDC_OK && i < p->n; i++) {
    /* Length-prefixed so ("ab","c") and ("a","bc") differ. */
    size_t len = strlen(names[i]);
    uint8_t l4[4];
    put32(l4, (uint32_t)len);
    rc = fc_sha256_update(&c, l4, 4);
    if (rc == FEDC_OK) rc = fc_sha256_update(&c, names[i], len);
  }
  if (rc != FEDC_OK) {
    fc_sha256_free(&c);
    return rc;
  }
  return fc_sha256_final(&c, out);
}

/* ---- neighbour graph ---- */

int fc_sa_graph_build(uint32_t n, uint32_t k, const uint8_t seed[FC_SA_SEED_LEN], fc_sa_graph *g) {
  memset(g, 0, sizeof *g);
  if (n < 2 || k < 1 || k > n - 1 || (k != n - 1 && k % 2)) return FEDC_ERR_INVALID;
  g->pos = malloc(n * sizeof *g->pos);
  g->at = malloc(n * sizeof *g->at);
  if (!g->pos || !g->at) {
    fc_sa_graph_free(g);
    return FEDC_ERR_NOMEM;
  }
  /* The ring order: a Fisher-Yates shuffle driven by the published seed. The
   * seed is public, so a non-cryptographic generator seeded from its hash is
   * enough; it only has to be the same on every client. */
  uint8_t h[32];
  if (fc_sha256(seed, FC_SA_SEED_LEN, h) != FEDC_OK) {
    fc_sa_graph_free(g);
    return FEDC_ERR_CRYPTO;
  }
  uint64_t s64 = 0;
  for (int i = 0; i < 8; i++) s64 = s64 << 8 | h[i];
  fc_rng rng;
  fc_rng_seed(&rng, s64);
  for (uint32_t i = 0; i < n; i++) g->at[i] = i + 1;
  fc_rng_shuffle_u32(&rng, g->at, n);
  for (uint32_t p = 0; p < n; p++) g->pos[g->at[p] - 1] = p;
  g->n = n;
  g->k = k;
  return FEDC_OK;
}

void fc_sa_graph_free(fc_sa_graph *g) {
  free(g->pos);
  free(g->at);
  memset(g, 0, sizeof *g);
}

int fc_sa_graph_adjacent(const fc_sa_graph *g, uint32_t u, uint32_t v) {
  if (u < 1 || v < 1 || u > g->n || v > g->n || u == v) return 0;
  if (g->k == g->n - 1) return 1;
  uint32_t pu = g->pos[u - 1], pv = g->pos[v - 1];
  uint32_t d = pu > pv ? pu - pv : pv - pu;
  if (d > g->n - d) d = g->n - d;
  return d <= g->k / 2;
}

static int cmp_u32(const void *a, const void *b) {
  uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
  return x < y ? -1 : x > y;
}

uint32_t fc_sa_graph_neighbors(const fc_sa_graph *g, uint32_t u, uint32_t *out) {
  if (u < 1 || u > g->n) return 0;
  uint32_t c = 0;
  if (g->k == g->n - 1) {
    for (uint32_t v = 1; v <= g->n; v++)
      if (v != u) out[c++] = v;
    return c;
  }
  uint32_t p = g->pos[u - 1];
  for (uint32_t d = 1; d <= g->k / 2; d++) {
    out[c++] = g->at[(p + d) % g->n];
    out[c++] = g->at[(p + g->n - d) % g->n];
  }
  qsort(out, c, sizeof *out, cmp_u32);
  return c;
}

/* ---- quantization ---- */

double fc_sa_quant_scale(uint32_t n, uint64_t max_weight, float clip) {
  /* n * (max_weight * clip * scale + 1) <= 2^31 - 1 */
  double room = 2147483647.0 / (double)n - 1.0;
  double span = (double)max_weight * (double)clip;
  if (!(room > 0) || !(span > 0)) return 0;
  return room / span;
}


/* Per entry: v = x * weight * scale, floor(v) plus one with probability
 * v - floor(v), one u64 of rng per entry. v is first held to +-(2^31 - 1):
 * clipped inputs never come near (fc_sa_quant_scale keeps the wide ring's
 * |v| under 2^31 / n), but an input the clip left alone (research) or a narrow
 * ring's range far below the clip (quant_range, chosen by the coordinator)
 * could, and a held value keeps its sign where a wrapped one would not (the
 * narrow ring's clamp, client/pipeline.c, then works on it), and keeps the
 * conversion below defined. The floor is a truncation moved down for
 * negative non-integers, exact in that range; floor() itself is a libm call
 * per entry on baseline x86-64, which made this loop 1.4x slower. NaN never
 * gets here (fc_stage_delta refuses a non-finite update) and would become 0. */
void fc_sa_quantize(const float *x, uint64_t dim, uint64_t weight, double scale, fc_rng *rng, uint32_t *out) {
  const double lim = 2147483647.0;
  double m = (double)weight * scale;
  fc_rng r = *rng;
  for (uint64_t i = 0; i < dim; i++) {
    double v = (double)x[i] * m;
    v = v > lim ? lim : v < -lim ? -lim : v == v ? v : 0;
    int64_t f = (int64_t)v;
    f -= (double)f > v;
    double u = fc_rng_next_double(&r);
    out[i] = (uint32_t)(f + (u < v - (double)f)); /* two's complement: mod 2^32 */
  }
  *rng = r;
  fc_wipe(&r, sizeof r);
  out[dim] = (uint32_t)weight;
}

int fc_sa_dequantize(const uint32_t *sum, uint64_t dim, double scale, uint64_t max_total_weight, float *avg,
                     uint64_t *total_weight) {
  uint64_t w = sum[dim];
  if (w == 0 || w > max_total_weight || !(scale > 0)) return FEDC_ERR_INVALID;
  double inv = 1.0 / (scale * (double)w);
  for (uint64_t i = 0; i < dim; i++) avg[i] = (float)((double)(int32_t)sum[i] * inv);
  *total_weight = w;
  return FEDC_OK;
}

/* ---- key derivation ---- */

static int derive(const uint8_t session[FC_SA_SESSION_LEN], const char *tag, uint64_t round, uint32_t a, uint32_t b,
                  const uint8_t *ikm, size_t ikm_len, uint8_t *out, size_t out_len) {
  uint8_t info[48 + 8 + 8];
  size_t tl = strlen(tag) + 1;
  if (tl > 48) return FEDC_ERR_INTERNAL;
  memcpy(info, tag, tl);
  put64(info + tl, round);
  put32(info + tl + 8, a);
  put32(info + tl + 12, b);
  return fc_hkdf_sha256(session, FC_SA_SESSION_LEN, ikm, ikm_len, info, tl + 16, out, out_len);
}

int fc_sa_pair_mask_key(const uint8_t session[FC_SA_SESSION_LEN], uint64_t round, const uint8_t dh[32], uint32_t u,
                        uint32_t v, uint8_t key[FC_SA_KEY_LEN]) {
  uint32_t lo = u < v ? u : v, hi = u < v ? v : u;
  return derive(session, "fedc/secagg/v1/pair-mask", round, lo, hi, dh, 32, key, FC_SA_KEY_LEN);
}

int fc_sa_self_mask_key(const uint8_t session[FC_SA_SESSION_LEN], uint64_t round, const uint8_t seed[32], uint32_t u,
                        uint8_t key[FC_SA_KEY_LEN]) {
  return derive(session, "fedc/secagg/v1/self-mask", round, u, 0, seed, 32, key, FC_SA_KEY_LEN);
}

int fc_sa_share_key(const uint8_t session[FC_SA_SESSION_LEN], uint64_t round, const uint8_t dh[32], uint32_t from,
                    uint32_t to, uint8_t key[32]) {
  return derive(session, "fedc/secagg/v1/share", round, from, to, dh, 32, key, 32);
}

/* ---- signed and authenticated byte strings ---- */

void fc_sa_advertise_msg(const uint8_t session[FC_SA_SESSION_LEN], uint32_t index, const uint8_t enc_pk[32],
                         const uint8_t mask_pk[32], uint8_t out[FC_SA_ADV_MSG_LEN]) {
  static const char tag[32] = "fedc/secagg/v1/advertise";
  memcpy(out, tag, 32);
  memcpy(out + 32, session, FC_SA_SESSION_LEN);
  put32(out + 32 + FC_SA_SESSION_LEN, index);
  memcpy(out + 36 + FC_SA_SESSION_LEN, enc_pk, 32);
  memcpy(out + 68 + FC_SA_SESSION_LEN, mask_pk, 32);
}

int fc_sa_survivors_digest(const uint8_t session[FC_SA_SESSION_LEN], const uint32_t *survivors, size_t n,
                           uint8_t out[32]) {
  static const char tag[] = "fedc/secagg/v1/survivors";
  fc_sha256_ctx c;
  int rc = fc_sha256_init(&c);
  if (rc != FEDC_OK) return rc;
  uint8_t b[4];
  rc = fc_sha256_update(&c, tag, sizeof tag);
  if (rc == FEDC_OK) rc = fc_sha256_update(&c, session, FC_SA_SESSION_LEN);
  put32(b, (uint32_t)n);
  if (rc == FEDC_OK) rc = fc_sha256_update(&c, b, 4);
  for (size_t i = 0; rc == FEDC_OK && i < n; i++) {
    put32(b, survivors[i]);
    rc = fc_sha256_update(&c, b, 4);
  }
  if (rc != FEDC_OK) {
    fc_sha256_free(&c);
    return rc;
  }
  return fc_sha256_final(&c, out);
}

void fc_sa_share_aad(const uint8_t session[FC_SA_SESSION_LEN], uint32_t from, uint32_t to, uint8_t out[FC_SA_AAD_LEN]) {
  memcpy(out, session, FC_SA_SESSION_LEN);
  put32(out + FC_SA_SESSION_LEN, from);
  put32(out + FC_SA_SESSION_LEN + 4, to);
}

int fc_sa_seed_commitment(const uint8_t session[FC_SA_SESSION_LEN], uint32_t index, const uint8_t seed[32],
                          uint8_t out[32]) {
  static const char tag[] = "fedc/secagg/v1/seed-commitment";
  uint8_t buf[sizeof tag + FC_SA_SESSION_LEN + 4 + 32];
  memcpy(buf, tag, sizeof tag);
  memcpy(buf + sizeof tag, session, FC_SA_SESSION_LEN);
  put32(buf + sizeof tag + FC_SA_SESSION_LEN, index);
  memcpy(buf + sizeof tag + FC_SA_SESSION_LEN + 4, seed, 32);
  int rc = fc_sha256(buf, sizeof buf, out);
  fc_wipe(buf, sizeof buf);
  return rc;
}
