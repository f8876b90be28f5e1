/*
 * shamir_decode.c - robust reconstruction of a Shamir secret from shares of
 * which some may be wrong (see fc_shamir_decode in shamir.h). SecAgg's
 * unmasking (Bonawitz et al. 2017, round 4) rebuilds each secret from the
 * shares its neighbours send; one sender with bad shares must not stop the
 * round, and must be the one named for it, never an honest sender or the
 * secret's owner.
 *
 * The m shares of one limb are a Reed-Solomon codeword (evaluations of a
 * polynomial of degree < t at the share points), so up to e = floor((m - t) / 2)
 * wrong values can be corrected and located (McEliece and Sarwate 1981).
 * Three steps, cheapest first; each candidate secret also goes through the
 * caller's check (the owner's commitment or public key):
 *
 *   1. first t   the polynomial through the first t shares (fc_shamir_combine),
 *                evaluated at the others (fc_shamir_combine_check). If its
 *                secret checks and at most e shares are off it, it is the
 *                only polynomial within the radius: done, those shares are
 *                wrong. This is the whole cost when nothing is wrong, and
 *                when the wrong shares are not among the first t (the caller
 *                puts senders already found wrong last).
 *   2. decoder   Gao's decoder (Gao 2003, "A new algorithm for decoding
 *                Reed-Solomon codes"), limb by limb: g0 = prod (x - x_i),
 *                g1 = the interpolation polynomial of all m values, extended
 *                Euclid on (g0, g1) until the remainder g has degree
 *                < (m + t) / 2 with g = u g0 + v g1; then f = g / v if v
 *                divides g and deg f < t. The result is checked directly
 *                (at most e shares off, over the 16 limbs together), so the
 *                acceptance rule does not rest on the algebra being right.
 *                O(m^2) per limb, data-dependent: it runs only when step 1
 *                found a wrong share among the first t.
 *   3. subsets   beyond the radius (e.g. m = t + 1, where one wrong share
 *                is detected but not located), t-subsets are combined against
 *                the check, within FC_SHAMIR_SUBSET_WORK. The secret of one
 *                that checks is right (the check binds it); the shares off
 *                its polynomial are named only if the search covered every
 *                subset and no other polynomial checked (then, with at
 *                least t right shares, it is the dealt one).
 *
 * Why names are sound: two different polynomials of degree < t agree in at
 * most t - 1 points, so two that each lie on at least (m + t) / 2 of the m
 * shares (they then share at least t) are the same. The dealt polynomial
 * lies on every right share; so when at most (m - t) / 2 shares are wrong, a
 * polynomial on at least (m + t) / 2 shares is the dealt one, and every share
 * off it is wrong. Steps 1 and 2 accept nothing else. Step 3 names shares
 * only if exactly one polynomial checks among all t-subsets: with at least
 * t right shares the dealt one is among them, so it is that one.
 *
 * Timing: steps 2 and 3 branch on share values (polynomial degrees, which
 * subset checks). They run only on shares already found inconsistent, for
 * secrets the coordinator reconstructs by design (the self-mask seeds of
 * survivors, the mask keys of the dropped); what the timing could tell the
 * coordinator's host, the coordinator learns anyway. Step 1 is constant time
 * like fc_shamir_combine. Everything derived from share values is wiped.
 */
#include <stdlib.h>
#include <string.h>

#include "crypto/sa_crypto.h"
#include "crypto/shamir.h"
#include "fedc/error.h"

#define LIMBS 16

static uint16_t mul(uint16_t a, uint16_t b) { return fc_gf16_mul(a, b); }

static void to_limbs(const uint8_t b[FC_SHAMIR_SECRET_LEN], uint16_t l[LIMBS]) {
  for (int k = 0; k < LIMBS; k++) l[k] = (uint16_t)((b[2 * k] << 8) | b[2 * k + 1]);
}

/* Degree of p (coefficients 0..d), -1 for the zero polynomial. */
static int pdeg(const uint16_t *p, int d) {
  while (d >= 0 && !p[d]) d--;
  return d;
}

/* a (degree da) = q b + r with b of degree db >= 0: q into q[0..da-db],
 * r left in a[0..db-1] (a[db..da] become 0). */
static void pdivmod(uint16_t *a, int da, const uint16_t *b, int db, uint16_t *q) {
  uint16_t inv = fc_gf16_inv(b[db]);
  for (int i = da - db; i >= 0; i--) {
    uint16_t c = mul(a[i + db], inv);
    q[i] = c;
    if (!c) continue;
    for (int j = 0; j <= db; j++) a[i + j] ^= mul(c, b[j]);
  }
}

/* Horner: p(x), p of degree < n. */
static uint16_t peval(const uint16_t *p, int n, uint16_t x) {
  uint16_t acc = 0;
  for (int i = n; i-- > 0;) acc = (uint16_t)(mul(acc, x) ^ p[i]);
  return acc;
}

typedef struct gao_ws {
  uint16_t *g0;  /* prod (x - x_i), degree m */
  uint16_t *g1;  /* LIMBS interpolation polynomials of degree < m, one after another */
  uint16_t *q;   /* scratch: g0 / (x - x_i), then quotients */
  uint16_t *r0, *r1, *v0, *v1, *f; /* Euclid (m + 1 each); f: the decoded limbs, t each */
} gao_ws;

/* Interpolation polynomials of all 16 limbs through the m points:
 * g1 = sum_i y_i w_i g0 / (x - x_i), w_i = 1 / prod_{j != i} (x_i - x_j).
 * The quotients and weights are public and shared by the limbs. */
static void gao_interpolate(const uint16_t *xs, const uint8_t (*shares)[FC_SHAMIR_SECRET_LEN], size_t m, gao_ws *w) {
  memset(w->g0, 0, (m + 1) * sizeof *w->g0);
  w->g0[0] = 1;
  for (size_t i = 0; i < m; i++) { /* multiply by (x + x_i): characteristic 2 */
    for (size_t j = i + 1; j-- > 0;) {
      w->g0[j + 1] ^= w->g0[j];
      w->g0[j] = mul(w->g0[j], xs[i]);
    }
  }
  memset(w->g1, 0, LIMBS * m * sizeof *w->g1);
  for (size_t i = 0; i < m; i++) {
    /* Synthetic division by (x + x_i): q_{j-1} = g0_j + x_i q_j. */
    w->q[m - 1] = w->g0[m];
    for (size_t j = m - 1; j > 0; j--) w->q[j - 1] = (uint16_t)(w->g0[j] ^ mul(xs[i], w->q[j]));
    uint16_t wi = fc_gf16_inv(peval(w->q, (int)m, xs[i]));
    uint16_t y[LIMBS];
    to_limbs(shares[i], y);
    for (int k = 0; k < LIMBS; k++) {
      uint16_t c = mul(y[k], wi), *g = w->g1 + (size_t)k * m;
      if (c)
        for (size_t j = 0; j < m; j++) g[j] ^= mul(c, w->q[j]);
    }
    fc_wipe(y, sizeof y);
  }
}

/* One limb: extended Euclid on (g0, g1) to a remainder of degree < (m + t) / 2,
 * then f = g / v. 1 with f[0..t-1] if v divides g and deg f < t, else 0. */
static int gao_limb(const gao_ws *w, const uint16_t *g1, size_t m, uint32_t t, uint16_t *f) {
  size_t sz = (m + 1) * sizeof *w->r0;
  uint16_t *r0 = w->r0, *r1 = w->r1, *v0 = w->v0, *v1 = w->v1, *tmp;
  memcpy(r0, w->g0, sz);
  memset(r1, 0, sz);
  memcpy(r1, g1, m * sizeof *g1);
  memset(v0, 0, sz);
  memset(v1, 0, sz);
  v1[0] = 1;
  int d0 = (int)m, d1 = pdeg(r1, (int)m - 1), dv0 = -1, dv1 = 0;
  while (d1 >= 0 && 2 * (size_t)d1 >= m + t) {
    int dq = d0 - d1;
    memset(w->q, 0, (size_t)(dq + 1) * sizeof *w->q);
    pdivmod(r0, d0, r1, d1, w->q);
    for (int i = 0; i <= dq; i++) /* v0 += q v1 */
      if (w->q[i])
        for (int j = 0; j <= dv1; j++) v0[i + j] ^= mul(w->q[i], v1[j]);
    int dv = pdeg(v0, dq + dv1 > dv0 ? dq + dv1 : dv0), dr = pdeg(r0, d1 - 1);
    tmp = r0, r0 = r1, r1 = tmp;
    tmp = v0, v0 = v1, v1 = tmp;
    d0 = d1, d1 = dr, dv0 = dv1, dv1 = dv;
  }
  memset(f, 0, t * sizeof *f);
  if (d1 < 0) return 1; /* g = 0: f = 0 */
  if (d1 < dv1 || d1 - dv1 >= (int)t) return 0;
  memset(w->q, 0, (size_t)(d1 - dv1 + 1) * sizeof *w->q);
  pdivmod(r1, d1, v1, dv1, w->q);
  if (pdeg(r1, dv1 - 1) >= 0) return 0; /* v does not divide g */
  memcpy(f, w->q, (size_t)(d1 - dv1 + 1) * sizeof *f);
  return 1;
}

static void gao_free(gao_ws *w, size_t m, uint32_t t) {
  size_t sz = (m + 1) * sizeof(uint16_t);
  if (w->g1) fc_wipe(w->g1, LIMBS * m * sizeof *w->g1);
  if (w->q) fc_wipe(w->q, sz);
  if (w->r0) fc_wipe(w->r0, sz);
  if (w->r1) fc_wipe(w->r1, sz);
  if (w->v0) fc_wipe(w->v0, sz);
  if (w->v1) fc_wipe(w->v1, sz);
  if (w->f) fc_wipe(w->f, LIMBS * (size_t)t * sizeof *w->f);
  free(w->g0);
  free(w->g1);
  free(w->q);
  free(w->r0);
  free(w->r1);
  free(w->v0);
  free(w->v1);
  free(w->f);
}

/* Step 2: FEDC_OK with the secret and off[] (at most (m - t) / 2 set) when
 * every limb decodes and the union of their error positions is within the
 * radius; FEDC_ERR_REJECTED otherwise. */
static int gao_decode(const uint16_t *xs, const uint8_t (*shares)[FC_SHAMIR_SECRET_LEN], size_t m, uint32_t t,
                      uint8_t secret[FC_SHAMIR_SECRET_LEN], uint8_t *off, size_t *noff) {
  gao_ws w;
  size_t sz = (m + 1) * sizeof(uint16_t);
  memset(&w, 0, sizeof w);
  int rc = FEDC_ERR_NOMEM;
  if (!(w.g0 = malloc(sz)) || !(w.g1 = malloc(LIMBS * m * sizeof *w.g1)) || !(w.q = malloc(sz)) ||
      !(w.r0 = malloc(sz)) || !(w.r1 = malloc(sz)) || !(w.v0 = malloc(sz)) || !(w.v1 = malloc(sz)) ||
      !(w.f = malloc(LIMBS * (size_t)t * sizeof *w.f)))
    goto out;
  gao_interpolate(xs, shares, m, &w);
  rc = FEDC_ERR_REJECTED;
  for (int k = 0; k < LIMBS; k++)
    if (!gao_limb(&w, w.g1 + (size_t)k * m, m, t, w.f + (size_t)k * t)) goto out;
  /* The acceptance rule, checked directly: shares off the decoded limbs. */
  size_t count = 0;
  for (size_t i = 0; i < m; i++) {
    uint16_t y[LIMBS], diff = 0;
    to_limbs(shares[i], y);
    for (int k = 0; k < LIMBS; k++) diff |= (uint16_t)(peval(w.f + (size_t)k * t, (int)t, xs[i]) ^ y[k]);
    fc_wipe(y, sizeof y);
    off[i] = diff != 0;
    count += off[i];
  }
  if (2 * count > m - t) goto out;
  for (int k = 0; k < LIMBS; k++) {
    secret[2 * k] = (uint8_t)(w.f[(size_t)k * t] >> 8);
    secret[2 * k + 1] = (uint8_t)w.f[(size_t)k * t];
  }
  *noff = count;
  rc = FEDC_OK;
out:
  gao_free(&w, m, t);
  return rc;
}

/* C(m, t), saturating at UINT64_MAX. */
static uint64_t binomial(uint64_t m, uint64_t t) {
  if (t > m - t) t = m - t;
  uint64_t c = 1;
  for (uint64_t i = 1; i <= t; i++) {
    uint64_t num = m - t + i;
    if (c > UINT64_MAX / num) return UINT64_MAX;
    c = c * num / i; /* exact: c * num is C(m - t + i, i) * i */
  }
  return c;
}

typedef struct subset_search {
  const uint16_t *xs;
  const uint8_t (*shares)[FC_SHAMIR_SECRET_LEN];
  size_t m;
  uint32_t t;
  fc_shamir_check_fn check;
  void *arg;
  uint16_t *sx;                           /* a subset's points first, then the rest */
  uint8_t (*ss)[FC_SHAMIR_SECRET_LEN];    /* ... and their shares */
  uint32_t *order;                        /* ss[j] is shares[order[j]] */
  uint8_t *on;                            /* agreement set of the first polynomial that checked */
  uint8_t *off;                           /* scratch, in subset order */
  uint8_t *in;                            /* scratch: membership of the current subset */
} subset_search;

/* Step 3. *found: 0 none checked, 1 one polynomial (on[] its shares; secret
 * set), 2 at least two. *complete: every t-subset was looked at. */
static int subsets_search(subset_search *s, uint8_t secret[FC_SHAMIR_SECRET_LEN], uint64_t *tried, int *found,
                          int *complete) {
  size_t m = s->m;
  uint32_t t = s->t;
  uint64_t total = binomial(m, t), work = 0; /* field multiplications, roughly */
  uint32_t *idx = malloc((size_t)t * sizeof *idx);
  uint8_t cand[FC_SHAMIR_SECRET_LEN];
  int rc = FEDC_OK;
  *found = 0;
  *complete = 0;
  *tried = 0;
  if (!idx) return FEDC_ERR_NOMEM;
  for (uint32_t i = 0; i < t; i++) idx[i] = i;
  for (uint64_t seen = 0; seen < total && *found < 2; seen++) {
    if (seen) { /* next t-subset in lexicographic order */
      uint32_t i = t;
      while (i-- > 0 && idx[i] == m - t + i) {}
      idx[i]++;
      for (uint32_t j = i + 1; j < t; j++) idx[j] = idx[j - 1] + 1;
    }
    if ((work += t) > FC_SHAMIR_SUBSET_WORK) goto out;
    int inside = *found == 1;
    for (uint32_t i = 0; i < t && inside; i++) inside = s->on[idx[i]];
    if (inside) continue; /* a subset of the polynomial found: the same polynomial */
    if ((work += (uint64_t)t * t + 16u * t) > FC_SHAMIR_SUBSET_WORK) goto out;
    (*tried)++;
    memset(s->in, 0, m);
    for (uint32_t i = 0; i < t; i++) s->in[idx[i]] = 1;
    size_t at = 0, noff;
    for (uint32_t i = 0; i < t; i++) s->order[at++] = idx[i];
    for (size_t j = 0; j < m; j++)
      if (!s->in[j]) s->order[at++] = (uint32_t)j;
    for (size_t j = 0; j < m; j++) {
      s->sx[j] = s->xs[s->order[j]];
      memcpy(s->ss[j], s->shares[s->order[j]], FC_SHAMIR_SECRET_LEN);
    }
    const uint8_t(*ss)[FC_SHAMIR_SECRET_LEN] = (const uint8_t(*)[FC_SHAMIR_SECRET_LEN])s->ss;
    if ((rc = fc_shamir_combine(s->sx, ss, t, t, cand)) != FEDC_OK) goto out;
    if (!s->check(s->arg, cand)) continue;
    if (++*found == 1) { /* which shares lie on it: once per polynomial found */
      if ((rc = fc_shamir_combine_check(s->sx, ss, m, t, cand, s->off, &noff)) != FEDC_OK) goto out;
      memcpy(secret, cand, sizeof cand);
      for (size_t j = 0; j < m; j++) s->on[s->order[j]] = !s->off[j];
    }
  }
  *complete = *found < 2;
out:
  fc_wipe(cand, sizeof cand);
  free(idx);
  return rc;
}

static int run_subsets(const uint16_t *xs, const uint8_t (*shares)[FC_SHAMIR_SECRET_LEN], size_t m, uint32_t t,
                       fc_shamir_check_fn check, void *arg, uint8_t secret[FC_SHAMIR_SECRET_LEN], uint8_t *bad,
                       size_t *nbad, int *found, int *complete, uint64_t *tried) {
  subset_search s = {xs, shares, m, t, check, arg, NULL, NULL, NULL, NULL, NULL, NULL};
  int rc = FEDC_ERR_NOMEM;
  if ((s.sx = malloc(m * sizeof *s.sx)) && (s.ss = malloc(m * sizeof *s.ss)) && (s.order = malloc(m * sizeof *s.order)) &&
      (s.on = calloc(m, 1)) && (s.off = malloc(m)) && (s.in = malloc(m)))
    rc = subsets_search(&s, secret, tried, found, complete);
  if (rc == FEDC_OK && *found == 1 && *complete) {
    *nbad = 0;
    for (size_t j = 0; j < m; j++) *nbad += bad[j] = !s.on[j];
  }
  if (s.ss) fc_wipe(s.ss, m * sizeof *s.ss);
  free(s.sx);
  free(s.ss);
  free(s.order);
  free(s.on);
  free(s.off);
  free(s.in);
  return rc;
}

int fc_shamir_decode(const uint16_t *xs, const uint8_t (*shares)[FC_SHAMIR_SECRET_LEN], size_t m, uint32_t t,
                     fc_shamir_check_fn check, void *arg, uint8_t secret[FC_SHAMIR_SECRET_LEN], uint8_t *bad,
                     fc_shamir_report *rep) {
  if (!xs || !shares || !secret || !rep || t < 1 || m < t || m > FC_SHAMIR_MAX_SHARES) return FEDC_ERR_INVALID;
  memset(rep, 0, sizeof *rep);
  uint8_t *off = malloc(m), first[FC_SHAMIR_SECRET_LEN], cand[FC_SHAMIR_SECRET_LEN];
  size_t noff = 0;
  int have_first = 0, found = 0, complete = 0;
  if (!off) return FEDC_ERR_NOMEM;
  /* 1. The first t, and how many of the others are off their polynomial. */
  int rc = fc_shamir_combine_check(xs, shares, m, t, first, off, &noff);
  if (rc != FEDC_OK) goto out;
  have_first = !check || check(arg, first);
  if (have_first && 2 * noff <= m - t) {
    memcpy(cand, first, sizeof cand);
    rep->by = FC_SHAMIR_BY_FIRST;
    goto accept;
  }
  rc = FEDC_ERR_REJECTED;
  if (!noff) { /* all m on one polynomial, whose secret fails the check */
    rep->agree = m > t;
    goto out;
  }
  /* 2. Gao's decoder over all m. */
  rc = gao_decode(xs, shares, m, t, cand, off, &noff);
  if (rc == FEDC_ERR_NOMEM) goto out;
  if (rc == FEDC_OK && (!check || check(arg, cand))) {
    rep->by = FC_SHAMIR_BY_DECODER;
    goto accept;
  }
  rc = FEDC_ERR_REJECTED;
  if (!check) goto out;
  /* 3. t-subsets against the check, within the work bound. */
  rc = run_subsets(xs, shares, m, t, check, arg, cand, off, &noff, &found, &complete, &rep->subsets);
  if (rc != FEDC_OK) goto out;
  if (found == 1 && complete) {
    rep->by = FC_SHAMIR_BY_SUBSETS;
    goto accept;
  }
  if (found || have_first) { /* a secret that checks; who is wrong is not decided */
    memcpy(secret, found ? cand : first, FC_SHAMIR_SECRET_LEN);
    if (bad) memset(bad, 0, m);
    rep->outcome = FC_SHAMIR_UNATTRIBUTED;
    rep->by = FC_SHAMIR_BY_SUBSETS;
    rc = FEDC_OK;
    goto out;
  }
  rc = FEDC_ERR_REJECTED;
  goto out;
accept:
  memcpy(secret, cand, FC_SHAMIR_SECRET_LEN);
  if (bad) memcpy(bad, off, m);
  rep->nbad = noff;
  rep->outcome = noff ? FC_SHAMIR_CORRECTED : FC_SHAMIR_CLEAN;
  rc = FEDC_OK;
out:
  fc_wipe(first, sizeof first);
  fc_wipe(cand, sizeof cand);
  free(off);
  return rc;
}
