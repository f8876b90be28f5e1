/*
 * anomaly.c - per-round update statistics, robust outlier scores and the
 * per-identity score table (anomaly.h says what and why).
 *
 * Invariants:
 *   - `prev` (n floats) is the last scored round's aggregate, written only
 *     by round_end under the write side of prev_lock; measure reads it under
 *     the read side, so measurements of many uploads run concurrently and
 *     outside every other lock.
 *   - `ids` is sorted by identity (bsearch); entries are never removed, and
 *     their number is bounded by FC_ANOM_IDS_MAX.
 *   - The round's inputs hold only measurements (FC_ANOM_SKETCH floats
 *     each), never an update: memory is O(cohort x sketch), not O(cohort x model).
 * Cost per update: one pass over it (a multiply-add for the previous
 * aggregate and one signed add into a bucket per parameter); per round one
 * pass over the aggregate and O(cohort log cohort) for the medians.
 *
 * Why the floors on the MAD (norm: 20% of the median norm; cosines: 0.05;
 * log distance to the nearest input: 0.5): under norm clipping most honest
 * updates sit exactly at the clip norm and with i.i.d. data their cosines
 * can agree to two digits, so the MAD can be ~0 and the raw score of an
 * honest, slightly different update unbounded. The floors say how far from
 * the crowd is worth a score of 1. The norm's was 5% at first; with no
 * attacker over 300 rounds (docs/results.md) the false flags (4.2 per 1,000
 * client-rounds) were all one or two honest clients with the most skewed
 * data whose late-training norm ran at 2-3x the median while the others'
 * MAD shrank to a few percent: replayed on the logged norms, a 20% floor
 * leaves none of them and moves no attacker's first flag (sign flip and
 * noise are 10x and 100x the median norm; the 25% tried lost a label-flip
 * attacker).
 *
 * Nearest-neighbour cosines (cos_nn, anomaly.h): all pairs up to
 * FC_ANOM_NN_EXACT_MAX inputs (256^2 / 2 sketch dot products, 0.02 s on
 * this project's loaded 2-core machine; 1,024 took 0.9 s); above, a 16-bit SimHash of each sketch (signs of 16 fixed random +-1
 * projections) sorts near-copies next to each other and each input is
 * compared with a window of neighbours in that order: exact copies always
 * meet, honest inputs may miss their true nearest one, which only lowers
 * their cos_nn (one-sided: lower is never suspicious).
 */
#include "coordinator/anomaly.h"

#include <math.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "fedc/error.h"

#define NORM_FLOOR_REL 0.2
#define COS_FLOOR 0.05
#define NN_DIST_MIN 1e-3 /* 1 - cos_nn below this is a copy (sketch and float rounding) */
#define NN_LOG_FLOOR 0.5
#define SIMHASH_BITS 16
#define MAD_SCALE 1.4826 /* MAD of a normal distribution -> its standard deviation */

typedef struct anom_in {
  char id[FC_ANOM_ID_MAX];
  double norm, dot_prev;
  int has_prev;
  int group; /* not an identity's (fc_anomaly_add_group) */
  float *sketch; /* FC_ANOM_SKETCH */
} anom_in;

struct fc_anomaly {
  fc_anomaly_cfg cfg;
  size_t n;
  pthread_rwlock_t prev_lock;
  float *prev; /* n floats */
  double prev_norm;
  int has_prev;
  pthread_mutex_t mu; /* everything below */
  anom_in *in;
  size_t nin, capin;
  fc_anomaly_ident *ids;
  size_t nids, capids;
};

const char *fc_anomaly_feature_name(int f) {
  switch (f) {
  case FC_ANOM_F_NORM: return "norm";
  case FC_ANOM_F_COS_AGG: return "cos_agg";
  case FC_ANOM_F_COS_PREV: return "cos_prev";
  case FC_ANOM_F_COLLUSION: return "collusion";
  default: return "none";
  }
}

const char *fc_anomaly_policy_name(int p) {
  return p == FC_ANOM_FLAG ? "flag" : p == FC_ANOM_EXCLUDE ? "exclude" : "observe";
}

int fc_anomaly_policy_parse(const char *s) {
  if (!s) return -1;
  if (!strcmp(s, "observe")) return FC_ANOM_OBSERVE;
  if (!strcmp(s, "flag")) return FC_ANOM_FLAG;
  if (!strcmp(s, "exclude")) return FC_ANOM_EXCLUDE;
  return -1;
}

void fc_anomaly_cfg_defaults(fc_anomaly_cfg *c) {
  c->policy = FC_ANOM_OBSERVE;
  c->threshold = FC_ANOM_DEFAULT_THRESHOLD;
  c->alpha = FC_ANOM_DEFAULT_ALPHA;
  c->cooldown_ms = (uint64_t)FC_ANOM_DEFAULT_COOLDOWN_S * 1000;
}

int fc_anomaly_create(const fc_anomaly_cfg *cfg, size_t n, fc_anomaly **out) {
  if (!cfg || n == 0 || cfg->policy < FC_ANOM_OBSERVE || cfg->policy > FC_ANOM_EXCLUDE || !(cfg->threshold > 0) ||
      !(cfg->alpha > 0 && cfg->alpha <= 1))
    return FEDC_ERR_INVALID;
  fc_anomaly *a = calloc(1, sizeof *a);
  if (!a) return FEDC_ERR_NOMEM;
  a->cfg = *cfg;
  a->n = n;
  if (!(a->prev = malloc(n * sizeof *a->prev))) {
    free(a);
    return FEDC_ERR_NOMEM;
  }
  pthread_rwlock_init(&a->prev_lock, NULL);
  pthread_mutex_init(&a->mu, NULL);
  *out = a;
  return FEDC_OK;
}

static void drop_inputs(fc_anomaly *a) {
  for (size_t i = 0; i < a->nin; i++) free(a->in[i].sketch);
  a->nin = 0;
}

void fc_anomaly_destroy(fc_anomaly *a) {
  if (!a) return;
  drop_inputs(a);
  free(a->in);
  free(a->ids);
  free(a->prev);
  pthread_rwlock_destroy(&a->prev_lock);
  pthread_mutex_destroy(&a->mu);
  free(a);
}

const fc_anomaly_cfg *fc_anomaly_config(const fc_anomaly *a) { return &a->cfg; }

/* murmur3's finalizer: parameter index -> bucket (low bits) and sign (top bit). */
static inline uint32_t mix32(uint32_t h) {
  h ^= h >> 16;
  h *= 0x85ebca6bu;
  h ^= h >> 13;
  h *= 0xc2b2ae35u;
  h ^= h >> 16;
  return h;
}

/* The CountSketch of x; x itself (zero-padded) when it fits. Hashing each
 * index costs more than the fold it rides along (~20 ms per 1M parameters
 * measured), so the hash is per block of FC_ANOM_SKETCH parameters: block b
 * is cyclically shifted by a hashed offset and multiplied by a hashed sign,
 * on top of a fixed per-position sign. Within a block no two parameters
 * share a bucket; across blocks the signs of a colliding pair multiply to an
 * independent +-1, so <Sx, Sy> stays an unbiased estimate of <x, y>. Two
 * contiguous runs per block: the compiler vectorizes them. */
static void sketch(const float *x, size_t n, float *s) {
  memset(s, 0, FC_ANOM_SKETCH * sizeof *s);
  if (n <= FC_ANOM_SKETCH) {
    memcpy(s, x, n * sizeof *s);
    return;
  }
  float sign[FC_ANOM_SKETCH];
  for (uint32_t k = 0; k < FC_ANOM_SKETCH; k++) sign[k] = (mix32(k * 0x9e3779b9u + 1u) >> 31) ? -1.0f : 1.0f;
  for (size_t base = 0; base < n; base += FC_ANOM_SKETCH) {
    size_t len = n - base < FC_ANOM_SKETCH ? n - base : FC_ANOM_SKETCH;
    uint32_t h = mix32((uint32_t)(base / FC_ANOM_SKETCH) * 0x85ebca6bu + 0x27d4eb2fu);
    size_t off = h & (FC_ANOM_SKETCH - 1);
    float bs = (h >> 31) ? -1.0f : 1.0f;
    const float *xb = x + base;
    size_t first = FC_ANOM_SKETCH - off < len ? FC_ANOM_SKETCH - off : len; /* positions k -> bucket off + k */
    for (size_t k = 0; k < first; k++) s[off + k] += bs * sign[k] * xb[k];
    for (size_t k = first; k < len; k++) s[k - first] += bs * sign[k] * xb[k]; /* wrapped: bucket off + k - K */
  }
}

void fc_anomaly_measure(fc_anomaly *a, const float *x, double norm, fc_anomaly_meas *m) {
  m->norm = norm;
  m->dot_prev = 0;
  pthread_rwlock_rdlock(&a->prev_lock);
  m->has_prev = a->has_prev;
  if (a->has_prev) {
    double dot = 0;
    for (size_t i = 0; i < a->n; i++) dot += (double)x[i] * a->prev[i];
    m->dot_prev = dot;
  }
  pthread_rwlock_unlock(&a->prev_lock);
  sketch(x, a->n, m->sketch);
}

void fc_anomaly_round_begin(fc_anomaly *a) {
  pthread_mutex_lock(&a->mu);
  drop_inputs(a);
  pthread_mutex_unlock(&a->mu);
}

void fc_anomaly_round_abandon(fc_anomaly *a) { fc_anomaly_round_begin(a); }

static int add_input(fc_anomaly *a, const char *id, const fc_anomaly_meas *m, int group);

int fc_anomaly_add(fc_anomaly *a, const char *id, const fc_anomaly_meas *m) { return add_input(a, id, m, 0); }

int fc_anomaly_add_group(fc_anomaly *a, const char *label, const fc_anomaly_meas *m) {
  return add_input(a, label, m, 1);
}

static int add_input(fc_anomaly *a, const char *id, const fc_anomaly_meas *m, int group) {
  int rc = FEDC_OK;
  pthread_mutex_lock(&a->mu);
  if (a->nin >= FC_ANOM_IDS_MAX) {
    rc = FEDC_ERR_TOO_LARGE;
    goto out;
  }
  if (a->nin == a->capin) {
    size_t cap = a->capin ? a->capin * 2 : 16;
    anom_in *p = realloc(a->in, cap * sizeof *p);
    if (!p) {
      rc = FEDC_ERR_NOMEM;
      goto out;
    }
    a->in = p;
    a->capin = cap;
  }
  anom_in *in = &a->in[a->nin];
  if (!(in->sketch = malloc(FC_ANOM_SKETCH * sizeof *in->sketch))) {
    rc = FEDC_ERR_NOMEM;
    goto out;
  }
  memcpy(in->sketch, m->sketch, FC_ANOM_SKETCH * sizeof *in->sketch);
  snprintf(in->id, sizeof in->id, "%s", id);
  in->norm = m->norm;
  in->dot_prev = m->dot_prev;
  in->has_prev = m->has_prev;
  in->group = group;
  a->nin++;
out:
  pthread_mutex_unlock(&a->mu);
  return rc;
}

static int cmp_double(const void *x, const void *y) {
  double a = *(const double *)x, b = *(const double *)y;
  return a < b ? -1 : a > b;
}

double fc_anomaly_median(double *v, size_t n) {
  if (!n) return NAN;
  qsort(v, n, sizeof *v, cmp_double);
  return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

void fc_anomaly_robust_z(const double *v, size_t n, double floor, int one_sided, double *z) {
  double *t = malloc((n ? n : 1) * sizeof *t);
  if (!t) { /* no scores rather than wrong ones */
    for (size_t i = 0; i < n; i++) z[i] = 0;
    return;
  }
  memcpy(t, v, n * sizeof *t);
  double med = fc_anomaly_median(t, n);
  for (size_t i = 0; i < n; i++) t[i] = fabs(v[i] - med);
  double scale = MAD_SCALE * fc_anomaly_median(t, n);
  if (!(scale >= floor)) scale = floor;
  for (size_t i = 0; i < n; i++) {
    double d = one_sided ? med - v[i] : fabs(v[i] - med);
    z[i] = d > 0 ? d / scale : 0;
  }
  free(t);
}

static double dotf(const float *x, const float *y, size_t n) {
  double s = 0;
  for (size_t i = 0; i < n; i++) s += (double)x[i] * y[i];
  return s;
}

static int cmp_ident(const void *k, const void *e) { return strcmp(k, ((const fc_anomaly_ident *)e)->id); }

static fc_anomaly_ident *find_ident(fc_anomaly *a, const char *id) {
  return a->nids ? bsearch(id, a->ids, a->nids, sizeof *a->ids, cmp_ident) : NULL;
}

/* The record of id, created if new; NULL when the table is full or out of memory. */
static fc_anomaly_ident *get_ident(fc_anomaly *a, const char *id) {
  fc_anomaly_ident *r = find_ident(a, id);
  if (r || a->nids >= FC_ANOM_IDS_MAX) return r;
  if (a->nids == a->capids) {
    size_t cap = a->capids ? a->capids * 2 : 16;
    fc_anomaly_ident *p = realloc(a->ids, cap * sizeof *p);
    if (!p) return NULL;
    a->ids = p;
    a->capids = cap;
  }
  size_t at = 0;
  while (at < a->nids && strcmp(a->ids[at].id, id) < 0) at++; /* O(ids), once per identity */
  memmove(&a->ids[at + 1], &a->ids[at], (a->nids - at) * sizeof *a->ids);
  memset(&a->ids[at], 0, sizeof *a->ids);
  snprintf(a->ids[at].id, sizeof a->ids[at].id, "%s", id);
  a->nids++;
  return &a->ids[at];
}

/* <x, y> over one sketch in eight float lanes (the compiler vectorizes it;
 * dotf's double running sum it cannot reorder): the pairs are the round's
 * O(inputs^2) cost. 128 terms per lane: relative error ~1e-6, far below
 * what a cosine is compared at. */
static double dot_sketch(const float *x, const float *y) {
  float lane[8] = {0};
  for (size_t j = 0; j < FC_ANOM_SKETCH; j += 8)
    for (size_t t = 0; t < 8; t++) lane[t] += x[j + t] * y[j + t];
  double s = 0;
  for (size_t t = 0; t < 8; t++) s += lane[t];
  return s;
}

/* nx, ny: sqrt(dot_sketch(x, x)) and of y, so that a copy's cosine is 1 to
 * rounding. */
static double cosine(const anom_in *x, double nx, const anom_in *y, double ny) {
  if (!(nx > 0 && ny > 0)) return 0;
  double c = dot_sketch(x->sketch, y->sketch) / (nx * ny);
  return c > 1 ? 1 : c < -1 ? -1 : c;
}

typedef struct nn_key {
  uint32_t code, idx;
} nn_key;

static int cmp_key(const void *x, const void *y) {
  const nn_key *a = x, *b = y;
  return a->code != b->code ? (a->code < b->code ? -1 : 1) : (a->idx < b->idx ? -1 : a->idx > b->idx);
}

/* cnn[i] = the largest cosine of input i to another input (NAN when k < 2);
 * sx: k doubles of scratch (the sketches' norms). FEDC_ERR_NOMEM only above
 * the exact limit. */
static int nearest_cosines(const anom_in *in, size_t k, double *sx, double *cnn) {
  for (size_t i = 0; i < k; i++) {
    cnn[i] = k < 2 ? NAN : -1;
    sx[i] = sqrt(dot_sketch(in[i].sketch, in[i].sketch));
  }
  if (k < 2) return FEDC_OK;
  if (k <= FC_ANOM_NN_EXACT_MAX) {
    for (size_t i = 0; i < k; i++)
      for (size_t j = i + 1; j < k; j++) {
        double c = cosine(&in[i], sx[i], &in[j], sx[j]);
        if (c > cnn[i]) cnn[i] = c;
        if (c > cnn[j]) cnn[j] = c;
      }
    return FEDC_OK;
  }
  nn_key *key = malloc(k * sizeof *key);
  if (!key) return FEDC_ERR_NOMEM;
  uint32_t plane[FC_ANOM_SKETCH]; /* bit b of plane[j]: the sign of coordinate j in projection b */
  for (uint32_t j = 0; j < FC_ANOM_SKETCH; j++) plane[j] = mix32(j * 0x27d4eb2fu + 0x165667b1u);
  for (size_t i = 0; i < k; i++) {
    double acc[SIMHASH_BITS] = {0};
    for (uint32_t j = 0; j < FC_ANOM_SKETCH; j++)
      for (int b = 0; b < SIMHASH_BITS; b++) acc[b] += (plane[j] >> b & 1) ? in[i].sketch[j] : -in[i].sketch[j];
    uint32_t code = 0;
    for (int b = 0; b < SIMHASH_BITS; b++) code |= (uint32_t)(acc[b] >= 0) << b;
    key[i] = (nn_key){code, (uint32_t)i};
  }
  qsort(key, k, sizeof *key, cmp_key);
  for (size_t p = 0; p < k; p++)
    for (size_t q = p + 1; q < k && q <= p + FC_ANOM_NN_WINDOW; q++) {
      uint32_t i = key[p].idx, j = key[q].idx;
      double c = cosine(&in[i], sx[i], &in[j], sx[j]);
      if (c > cnn[i]) cnn[i] = c;
      if (c > cnn[j]) cnn[j] = c;
    }
  free(key);
  return FEDC_OK;
}

static double median_of(const double *v, size_t n, double *tmp) {
  size_t k = 0;
  for (size_t i = 0; i < n; i++)
    if (!isnan(v[i])) tmp[k++] = v[i];
  return fc_anomaly_median(tmp, k);
}

int fc_anomaly_round_end(fc_anomaly *a, const float *agg, uint64_t round, uint64_t now_ms, fc_anomaly_round *out) {
  memset(out, 0, sizeof *out);
  out->round = round;
  out->cos_agg_median = out->cos_prev_median = out->cos_nn_median = out->cos_nn_max = NAN;
  float *sa = malloc(FC_ANOM_SKETCH * sizeof *sa);
  double *f = NULL;
  int *feat = NULL;
  int rc = FEDC_ERR_NOMEM;
  pthread_mutex_lock(&a->mu);
  size_t k = a->nin;
  if (!sa || (k && !(f = malloc(9 * k * sizeof *f))) || (k && !(out->in = calloc(k, sizeof *out->in)))) goto out;
  sketch(agg, a->n, sa);
  double sa_norm = sqrt(dotf(sa, sa, FC_ANOM_SKETCH));
  double *norm = f, *cagg = f + k, *cprev = f + 2 * k, *z = f + 3 * k, *zt = f + 4 * k, *tmp = f + 5 * k;
  double *sx = f + 6 * k, *cnn = f + 7 * k, *lnd = f + 8 * k;
  if (k && !(feat = calloc(k, sizeof *feat))) goto out;
  pthread_rwlock_rdlock(&a->prev_lock);
  double prev_norm = a->prev_norm;
  pthread_rwlock_unlock(&a->prev_lock);
  int have_prev = 0;
  for (size_t i = 0; i < k; i++) {
    const anom_in *in = &a->in[i];
    sx[i] = sqrt(dotf(in->sketch, in->sketch, FC_ANOM_SKETCH));
    norm[i] = in->norm;
    cagg[i] = sx[i] > 0 && sa_norm > 0 ? dotf(in->sketch, sa, FC_ANOM_SKETCH) / (sx[i] * sa_norm) : 0;
    if (cagg[i] > 1) cagg[i] = 1;
    if (cagg[i] < -1) cagg[i] = -1;
    cprev[i] = NAN;
    if (in->has_prev && prev_norm > 0) {
      cprev[i] = in->norm > 0 ? in->dot_prev / (in->norm * prev_norm) : 0;
      have_prev = 1;
    }
  }
  if (nearest_cosines(a->in, k, sx, cnn) != FEDC_OK) goto out;
  out->inputs = (uint32_t)k;
  if (k >= 2) {
    out->cos_nn_median = median_of(cnn, k, tmp);
    out->cos_nn_max = tmp[k - 1]; /* median_of sorted the copy */
  }
  if (k) {
    memcpy(tmp, norm, k * sizeof *tmp);
    qsort(tmp, k, sizeof *tmp, cmp_double);
    out->norm_min = tmp[0];
    out->norm_max = tmp[k - 1];
    out->norm_median = fc_anomaly_median(tmp, k);
    out->cos_agg_median = median_of(cagg, k, tmp);
    if (have_prev) out->cos_prev_median = median_of(cprev, k, tmp);
  }
  for (size_t i = 0; i < k; i++) z[i] = 0;
  if (k >= FC_ANOM_MIN_INPUTS) {
    /* The score is the largest of the features' robust z-scores; feat
     * remembers which one (audited with a flag). */
#define TAKE(F)                                 \
  for (size_t i = 0; i < k; i++)                \
    if (zt[i] > z[i]) z[i] = zt[i], feat[i] = (F)
    fc_anomaly_robust_z(norm, k, NORM_FLOOR_REL * out->norm_median + 1e-12, 0, zt);
    TAKE(FC_ANOM_F_NORM);
    fc_anomaly_robust_z(cagg, k, COS_FLOOR, 1, zt);
    TAKE(FC_ANOM_F_COS_AGG);
    /* Collusion: closer to another input than the round's median, on the
     * log of the distance (anomaly.h). */
    for (size_t i = 0; i < k; i++) lnd[i] = log(1 - cnn[i] > NN_DIST_MIN ? 1 - cnn[i] : NN_DIST_MIN);
    fc_anomaly_robust_z(lnd, k, NN_LOG_FLOOR, 1, zt);
    TAKE(FC_ANOM_F_COLLUSION);
    if (have_prev) {
      size_t m = 0; /* inputs measured against a previous aggregate (all, except right after it appeared) */
      for (size_t i = 0; i < k; i++)
        if (!isnan(cprev[i])) tmp[m++] = cprev[i];
      if (m >= FC_ANOM_MIN_INPUTS) {
        double med = fc_anomaly_median(tmp, m);
        for (size_t i = 0; i < k; i++)
          if (isnan(cprev[i])) cprev[i] = med; /* no evidence either way */
        fc_anomaly_robust_z(cprev, k, COS_FLOOR, 1, zt);
        TAKE(FC_ANOM_F_COS_PREV);
      }
    }
#undef TAKE
  }
  for (size_t i = 0; i < k; i++) {
    fc_anomaly_input *o = &out->in[i];
    snprintf(o->id, sizeof o->id, "%s", a->in[i].id);
    o->norm = norm[i];
    o->cos_agg = cagg[i];
    o->cos_prev = a->in[i].has_prev && prev_norm > 0 ? (a->in[i].norm > 0 ? a->in[i].dot_prev / (a->in[i].norm * prev_norm) : 0) : NAN;
    o->cos_nn = cnn[i];
    o->score = z[i];
    o->feature = feat[i];
    o->group = a->in[i].group;
    fc_anomaly_ident *r = o->group ? NULL : get_ident(a, o->id);
    double ewma = r ? r->ewma : 0;
    if (k >= FC_ANOM_MIN_INPUTS)
      ewma = (1 - a->cfg.alpha) * ewma + a->cfg.alpha * (z[i] < FC_ANOM_SCORE_CAP ? z[i] : FC_ANOM_SCORE_CAP);
    if (o->group) ewma = z[i];
    o->ewma = ewma;
    o->flagged = !o->group && a->cfg.policy != FC_ANOM_OBSERVE && ewma >= a->cfg.threshold;
    o->excluded = o->flagged && a->cfg.policy == FC_ANOM_EXCLUDE;
    if (r) {
      r->ewma = ewma;
      r->last_score = z[i];
      r->rounds++;
      r->last_round = round;
      if (o->flagged) r->flags++;
      if (o->excluded) r->excluded_until = now_ms + a->cfg.cooldown_ms;
    }
    out->nflagged += (uint32_t)o->flagged;
    if (z[i] > out->in[out->top].score) out->top = (uint32_t)i;
  }
  drop_inputs(a);
  /* This aggregate is the next round's "previous". */
  pthread_rwlock_wrlock(&a->prev_lock);
  memcpy(a->prev, agg, a->n * sizeof *a->prev);
  double pn = 0;
  for (size_t i = 0; i < a->n; i++) pn += (double)agg[i] * agg[i];
  a->prev_norm = sqrt(pn);
  a->has_prev = 1;
  pthread_rwlock_unlock(&a->prev_lock);
  rc = FEDC_OK;
out:
  pthread_mutex_unlock(&a->mu);
  if (rc != FEDC_OK) fc_anomaly_round_free(out);
  free(sa);
  free(f);
  free(feat);
  return rc;
}

void fc_anomaly_round_free(fc_anomaly_round *r) {
  free(r->in);
  r->in = NULL;
  r->inputs = 0;
}

int fc_anomaly_seen(fc_anomaly *a, const char *id, const char *addr, int concurrent, uint64_t now_ms) {
  int bits = 0;
  pthread_mutex_lock(&a->mu);
  fc_anomaly_ident *r = get_ident(a, id);
  if (!r) goto out;
  r->last_seen_ms = now_ms;
  if (concurrent) {
    r->concurrent++;
    bits |= FC_ANOM_CONCURRENT;
  }
  if (addr && *addr) {
    uint32_t at = 0;
    while (at < r->naddrs && strcmp(r->addrs[at], addr)) at++;
    if (at == r->naddrs) { /* new: most recent first, the oldest falls off */
      if (r->naddrs) {
        r->new_addrs++;
        bits |= FC_ANOM_NEW_ADDR;
      }
      if (r->naddrs < FC_ANOM_ADDR_MAX) r->naddrs++;
      at = r->naddrs - 1;
    }
    char keep[FC_ANOM_ADDR_LEN];
    snprintf(keep, sizeof keep, "%s", addr);
    memmove(r->addrs[1], r->addrs[0], at * sizeof r->addrs[0]);
    memcpy(r->addrs[0], keep, sizeof keep);
  }
out:
  pthread_mutex_unlock(&a->mu);
  return bits;
}

void fc_anomaly_refused(fc_anomaly *a, const char *id) {
  pthread_mutex_lock(&a->mu);
  fc_anomaly_ident *r = get_ident(a, id);
  if (r) r->refused++;
  pthread_mutex_unlock(&a->mu);
}

void fc_anomaly_rate_limited(fc_anomaly *a, const char *id) {
  pthread_mutex_lock(&a->mu);
  fc_anomaly_ident *r = get_ident(a, id);
  if (r) r->rate_limited++;
  pthread_mutex_unlock(&a->mu);
}

uint32_t fc_anomaly_excluded(fc_anomaly *a, uint64_t now_ms, void (*fn)(void *, const char *, uint64_t), void *arg) {
  uint32_t k = 0;
  pthread_mutex_lock(&a->mu);
  for (size_t i = 0; i < a->nids; i++)
    if (a->ids[i].excluded_until > now_ms) {
      k++;
      if (fn) fn(arg, a->ids[i].id, a->ids[i].excluded_until);
    }
  pthread_mutex_unlock(&a->mu);
  return k;
}

int fc_anomaly_idents(fc_anomaly *a, fc_anomaly_ident **out, size_t *n) {
  int rc = FEDC_OK;
  pthread_mutex_lock(&a->mu);
  fc_anomaly_ident *p = malloc((a->nids ? a->nids : 1) * sizeof *p);
  if (!p) {
    rc = FEDC_ERR_NOMEM;
  } else {
    if (a->nids) memcpy(p, a->ids, a->nids * sizeof *p);
    *out = p;
    *n = a->nids;
  }
  pthread_mutex_unlock(&a->mu);
  return rc;
}

double fc_anomaly_score(fc_anomaly *a, const char *id) {
  pthread_mutex_lock(&a->mu);
  fc_anomaly_ident *r = find_ident(a, id);
  double s = r ? r->ewma : 0;
  pthread_mutex_unlock(&a->mu);
  return s;
}

/* ---- persisted form: {"identities": [{"id", "ewma", "last_score", "rounds",
 * "last_round", "flags", "excluded_until", "last_seen", "new_addrs",
 * "concurrent", "refused", "rate_limited", "addrs": [...]}, ...]} ---- */

static json_int_t jint(uint64_t v) { return v > INT64_MAX ? INT64_MAX : (json_int_t)v; }

json_t *fc_anomaly_to_json(fc_anomaly *a) {
  json_t *arr = json_array(), *o = NULL;
  if (!arr) return NULL;
  pthread_mutex_lock(&a->mu);
  for (size_t i = 0; i < a->nids; i++) {
    const fc_anomaly_ident *r = &a->ids[i];
    json_t *ad = json_array();
    for (uint32_t j = 0; ad && j < r->naddrs; j++) json_array_append_new(ad, json_string(r->addrs[j]));
    json_t *e = json_pack("{s:s,s:f,s:f,s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:o*}", "id", r->id, "ewma", r->ewma,
                          "last_score", r->last_score, "rounds", jint(r->rounds), "last_round", jint(r->last_round),
                          "flags", jint(r->flags), "excluded_until", jint(r->excluded_until), "last_seen",
                          jint(r->last_seen_ms), "new_addrs", jint(r->new_addrs), "concurrent", jint(r->concurrent),
                          "refused", jint(r->refused), "rate_limited", jint(r->rate_limited), "addrs", ad);
    if (!e || json_array_append_new(arr, e)) {
      json_decref(arr);
      arr = NULL;
      break;
    }
  }
  pthread_mutex_unlock(&a->mu);
  if (arr) o = json_pack("{s:i,s:o}", "format", 1, "identities", arr);
  return o;
}

static int juint(const json_t *o, const char *k, uint64_t *v) {
  json_t *x = json_object_get(o, k);
  if (!x) {
    *v = 0;
    return 1;
  }
  if (!json_is_integer(x) || json_integer_value(x) < 0) return 0;
  *v = (uint64_t)json_integer_value(x);
  return 1;
}

int fc_anomaly_from_json(fc_anomaly *a, const json_t *o, char *err, size_t errlen) {
  const json_t *arr = json_object_get(o, "identities");
  if (!json_is_array(arr) || json_array_size(arr) > FC_ANOM_IDS_MAX) {
    snprintf(err, errlen, "no identities array (or more than %d)", FC_ANOM_IDS_MAX);
    return FEDC_ERR_FORMAT;
  }
  size_t n = json_array_size(arr);
  fc_anomaly_ident *ids = calloc(n ? n : 1, sizeof *ids);
  if (!ids) return FEDC_ERR_NOMEM;
  for (size_t i = 0; i < n; i++) {
    const json_t *e = json_array_get(arr, i);
    fc_anomaly_ident *r = &ids[i];
    const char *id = json_string_value(json_object_get(e, "id"));
    const json_t *ew = json_object_get(e, "ewma");
    double ewma = json_is_number(ew) ? json_number_value(ew) : -1;
    if (!id || !*id || strlen(id) >= FC_ANOM_ID_MAX || !(ewma >= 0 && ewma < 1e300) ||
        !juint(e, "rounds", &r->rounds) || !juint(e, "last_round", &r->last_round) || !juint(e, "flags", &r->flags) ||
        !juint(e, "excluded_until", &r->excluded_until) || !juint(e, "last_seen", &r->last_seen_ms) ||
        !juint(e, "new_addrs", &r->new_addrs) || !juint(e, "concurrent", &r->concurrent) ||
        !juint(e, "refused", &r->refused) || !juint(e, "rate_limited", &r->rate_limited) || (i && strcmp(ids[i - 1].id, id) >= 0)) {
      snprintf(err, errlen, "identity record %zu is malformed (or out of order)", i);
      free(ids);
      return FEDC_ERR_FORMAT;
    }
    snprintf(r->id, sizeof r->id, "%s", id);
    r->ewma = ewma;
    r->last_score = json_number_value(json_object_get(e, "last_score"));
    const json_t *ad = json_object_get(e, "addrs");
    for (size_t j = 0; j < json_array_size(ad) && r->naddrs < FC_ANOM_ADDR_MAX; j++) {
      const char *s = json_string_value(json_array_get(ad, j));
      if (s) snprintf(r->addrs[r->naddrs++], FC_ANOM_ADDR_LEN, "%s", s);
    }
  }
  pthread_mutex_lock(&a->mu);
  free(a->ids);
  a->ids = ids;
  a->nids = a->capids = n ? n : 1;
  a->nids = n;
  pthread_mutex_unlock(&a->mu);
  return FEDC_OK;
}
