/*
 * agg_tier.c - the leader's book of the aggregator tier (agg_tier.h): the
 * registry as etcd last said, the round's assignments and the partial checks.
 *
 * Why pure: the checks decide whether another process's sum enters the
 * model, so they are tested without etcd or sockets (tests/unit/test_agg_tier.c).
 * Sizes: assignments are one array searched linearly (a round's cohort, a
 * few thousand at most in this first slice); a partial's duplicate check
 * sorts its names once.
 */
#include "coordinator/agg_tier.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fedc/error.h"

typedef struct assignment {
  char client[65];
  uint32_t member; /* index into names[] (kept when the member leaves) */
  int counted;
  long group; /* fc_tier_assign_group's (-1: none) */
} assignment;

typedef struct member_stats {
  uint64_t partials_accepted, partials_refused, updates_counted, last_seen_ms;
  int receiving; /* a SubmitPartial stream of this member is being received */
} member_stats;

struct fc_tier {
  fc_tier_member members[FC_TIER_MAX_MEMBERS];
  member_stats stats[FC_TIER_MAX_MEMBERS]; /* stats[i] is members[i]'s */
  size_t nmembers;
  /* Every aggregator a client of this round was assigned to, by name (a
   * member that leaves keeps its slot here; its clients stay its own). */
  char (*names)[65];
  size_t nnames, capnames;
  uint64_t round;
  assignment *a;
  size_t na, capa;
};

int fc_tier_create(fc_tier **out) {
  fc_tier *t = calloc(1, sizeof *t);
  if (!t) return FEDC_ERR_NOMEM;
  *out = t;
  return FEDC_OK;
}

void fc_tier_destroy(fc_tier *t) {
  if (!t) return;
  free(t->names);
  free(t->a);
  free(t);
}

static int name_ok(const char *s, size_t max) {
  size_t n = strnlen(s, max + 1);
  if (n == 0 || n > max) return 0;
  for (size_t i = 0; i < n; i++) {
    char ch = s[i];
    if (!((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') || ch == '-' ||
          ch == '_' || ch == '.'))
      return 0;
  }
  return 1;
}

int fc_tier_parse_member(const char *name, const char *value, size_t len, const char *federation,
                         fc_tier_member *out, char *why, size_t whylen) {
  char buf[600], want[300];
  if (!name_ok(name, 64)) {
    snprintf(why, whylen, "aggregator registry key has a bad name");
    return FEDC_ERR_INVALID;
  }
  if (len >= sizeof buf || memchr(value, 0, len)) {
    snprintf(why, whylen, "aggregator %s: registry value too long or not text", name);
    return FEDC_ERR_INVALID;
  }
  memcpy(buf, value, len);
  buf[len] = 0;
  char *sp = strchr(buf, ' ');
  if (!sp || sp == buf) {
    snprintf(why, whylen, "aggregator %s: registry value is not \"<host:port> <identity>\"", name);
    return FEDC_ERR_INVALID;
  }
  *sp = 0;
  const char *addr = buf, *id = sp + 1;
  if (strlen(addr) >= sizeof out->address || !strchr(addr, ':') || strchr(addr, ',')) {
    snprintf(why, whylen, "aggregator %s: bad address in the registry", name);
    return FEDC_ERR_INVALID;
  }
  snprintf(want, sizeof want, "spiffe://%s/aggregator/%s", federation, name);
  if (strcmp(id, want) != 0) {
    snprintf(why, whylen, "aggregator %s: registered identity is not %s", name, want);
    return FEDC_ERR_INVALID;
  }
  memset(out, 0, sizeof *out);
  snprintf(out->name, sizeof out->name, "%s", name);
  snprintf(out->address, sizeof out->address, "%s", addr);
  snprintf(out->identity, sizeof out->identity, "%s", want);
  return FEDC_OK;
}

static long member_index(const fc_tier *t, const char *name) {
  for (size_t i = 0; i < t->nmembers; i++)
    if (!strcmp(t->members[i].name, name)) return (long)i;
  return -1;
}

int fc_tier_known(const fc_tier *t, const char *name) { return member_index(t, name) >= 0; }
size_t fc_tier_member_count(const fc_tier *t) { return t->nmembers; }
const fc_tier_member *fc_tier_member_get(const fc_tier *t, size_t i) { return &t->members[i]; }

size_t fc_tier_set_members(fc_tier *t, const fc_tier_member *m, size_t n) {
  size_t left = 0;
  for (size_t i = 0; i < t->nmembers; i++) {
    int still = 0;
    for (size_t j = 0; j < n && !still; j++) still = !strcmp(t->members[i].name, m[j].name);
    left += !still;
  }
  if (n > FC_TIER_MAX_MEMBERS) n = FC_TIER_MAX_MEMBERS;
  /* A member that stays keeps its counters; a new one starts from zero. */
  member_stats keep[FC_TIER_MAX_MEMBERS]; /* 8 KiB */
  for (size_t j = 0; j < n; j++) {
    long o = member_index(t, m[j].name);
    memset(&keep[j], 0, sizeof keep[j]);
    if (o >= 0) keep[j] = t->stats[o];
  }
  memcpy(t->members, m, n * sizeof *m);
  memcpy(t->stats, keep, n * sizeof *keep);
  t->nmembers = n;
  return left;
}

static long name_slot(const fc_tier *t, const char *name) {
  for (size_t i = 0; i < t->nnames; i++)
    if (!strcmp(t->names[i], name)) return (long)i;
  return -1;
}

size_t fc_tier_load(const fc_tier *t, const char *name) {
  long s = name_slot(t, name);
  size_t k = 0;
  if (s < 0) return 0;
  for (size_t i = 0; i < t->na; i++) k += t->a[i].member == (uint32_t)s;
  return k;
}

size_t fc_tier_uncounted(const fc_tier *t, const char *name) {
  long s = name_slot(t, name);
  size_t k = 0;
  if (s < 0) return 0;
  for (size_t i = 0; i < t->na; i++) k += t->a[i].member == (uint32_t)s && !t->a[i].counted;
  return k;
}

static assignment *find(const fc_tier *t, const char *client) {
  for (size_t i = 0; i < t->na; i++)
    if (!strcmp(t->a[i].client, client)) return &t->a[i];
  return NULL;
}

int fc_tier_assign(fc_tier *t, uint64_t round, const char *client, fc_tier_member *out) {
  return fc_tier_assign_group(t, round, client, -1, out);
}

int fc_tier_assign_group(fc_tier *t, uint64_t round, const char *client, long group, fc_tier_member *out) {
  if (round != t->round) { /* a new round: the last one's assignments are done with */
    t->round = round;
    t->na = 0;
    t->nnames = 0;
  }
  assignment *a = find(t, client);
  if (a) {
    long m = member_index(t, t->names[a->member]);
    if (m < 0) { /* its aggregator left: the client's update is lost with it */
      memset(out, 0, sizeof *out);
      snprintf(out->name, sizeof out->name, "%s", t->names[a->member]);
      return FEDC_ERR_NOT_FOUND;
    }
    *out = t->members[m];
    return FEDC_OK;
  }
  if (!t->nmembers) return FEDC_ERR_NOT_FOUND;
  size_t best = 0, best_load = (size_t)-1;
  int grouped = 0;
  for (size_t i = 0; group >= 0 && i < t->na && !grouped; i++) {
    long m = t->a[i].group == group ? member_index(t, t->names[t->a[i].member]) : -1;
    if (m >= 0) best = (size_t)m, grouped = 1; /* the group's aggregator, while it is registered */
  }
  for (size_t i = 0; !grouped && i < t->nmembers; i++) {
    size_t l = fc_tier_load(t, t->members[i].name);
    if (l < best_load) best = i, best_load = l;
  }
  long s = name_slot(t, t->members[best].name);
  if (s < 0) {
    if (t->nnames == t->capnames) {
      size_t cap = t->capnames ? 2 * t->capnames : 8;
      void *p = realloc(t->names, cap * sizeof *t->names);
      if (!p) return FEDC_ERR_NOMEM;
      t->names = p;
      t->capnames = cap;
    }
    s = (long)t->nnames++;
    snprintf(t->names[s], sizeof t->names[s], "%s", t->members[best].name);
  }
  if (t->na == t->capa) {
    size_t cap = t->capa ? 2 * t->capa : 64;
    void *p = realloc(t->a, cap * sizeof *t->a);
    if (!p) return FEDC_ERR_NOMEM;
    t->a = p;
    t->capa = cap;
  }
  a = &t->a[t->na++];
  memset(a, 0, sizeof *a);
  snprintf(a->client, sizeof a->client, "%s", client);
  a->member = (uint32_t)s;
  a->group = group;
  *out = t->members[best];
  return FEDC_OK;
}

size_t fc_tier_assigned(const fc_tier *t, uint64_t round, const char *name, const char **out, size_t cap) {
  long s = name_slot(t, name);
  size_t k = 0;
  if (round != t->round || s < 0) return 0;
  for (size_t i = 0; i < t->na && k < cap; i++)
    if (t->a[i].member == (uint32_t)s && !t->a[i].counted) out[k++] = t->a[i].client;
  return k;
}

static int cmp_str(const void *x, const void *y) { return strcmp(*(const char *const *)x, *(const char *const *)y); }

/* The round's assignments sorted by client, and a client name looked up among them. */
static int cmp_assignment(const void *x, const void *y) {
  return strcmp((*(const assignment *const *)x)->client, (*(const assignment *const *)y)->client);
}

static int cmp_name_assignment(const void *key, const void *elt) {
  return strcmp((const char *)key, (*(const assignment *const *)elt)->client);
}

int fc_tier_check_partial(const fc_tier *t, const fc_tier_partial *p, const fc_tier_expect *e, char *why,
                          size_t whylen) {
  if (!fc_tier_known(t, p->aggregator)) {
    snprintf(why, whylen, "aggregator %s is not registered (no live lease under %s): partial refused", p->aggregator,
             FC_TIER_KEY);
    return FEDC_ERR_REJECTED;
  }
  if (p->round != e->round || p->version != e->version) {
    snprintf(why, whylen, "partial for round %llu version %llu; the open round is %llu on version %llu",
             (unsigned long long)p->round, (unsigned long long)p->version, (unsigned long long)e->round,
             (unsigned long long)e->version);
    return FEDC_ERR_INVALID;
  }
  if (p->n == 0 || p->n > FC_TIER_MAX_UPDATES) {
    snprintf(why, whylen, "partial names %zu updates (1..%d)", p->n, FC_TIER_MAX_UPDATES);
    return FEDC_ERR_INVALID;
  }
  if (!p->spec || !fc_model_spec_equal(p->spec, e->spec)) {
    snprintf(why, whylen, "partial sum's shape is not the model's");
    return FEDC_ERR_SHAPE;
  }
  long s = t->round == p->round ? name_slot(t, p->aggregator) : -1;
  /* Cheap checks before any per-name work, all of it O(n log n): under the
   * leader's lock, a partial naming 65,536 updates that looked each up among
   * the round's assignments one by one held it for 2.4 s at a 10,000-client
   * cohort, and a refused aggregator could resend at once (a hostile
   * review). It cannot name more clients than were assigned to it, a name
   * twice, or no name. */
  if (s < 0) {
    snprintf(why, whylen, "partial names %.64s, not a client assigned to aggregator %s in round %llu",
             p->updates[0].client ? p->updates[0].client : "(none)", p->aggregator, (unsigned long long)p->round);
    return FEDC_ERR_INVALID;
  }
  size_t assigned = fc_tier_load(t, p->aggregator);
  if (p->n > assigned) {
    snprintf(why, whylen, "partial names %zu updates; aggregator %s was assigned %zu clients in round %llu", p->n,
             p->aggregator, assigned, (unsigned long long)p->round);
    return FEDC_ERR_INVALID;
  }
  for (size_t i = 0; i < p->n; i++)
    if (!p->updates[i].client) {
      snprintf(why, whylen, "partial names (none), not a client assigned to aggregator %s in round %llu",
               p->aggregator, (unsigned long long)p->round);
      return FEDC_ERR_INVALID;
    }
  /* A few names (relay mode: one a partial) are looked up one by one, as
   * cheap as before; more through a sorted index of the assignments. */
  int indexed = p->n > 8 && t->na > 0;
  const char **names = malloc(p->n * sizeof *names);
  const assignment **idx = indexed ? malloc(t->na * sizeof *idx) : NULL;
  if (!names || (indexed && !idx)) {
    free(names);
    free(idx);
    snprintf(why, whylen, "out of memory");
    return FEDC_ERR_NOMEM;
  }
  for (size_t i = 0; i < p->n; i++) names[i] = p->updates[i].client;
  qsort(names, p->n, sizeof *names, cmp_str);
  int rc = FEDC_OK;
  for (size_t i = 1; i < p->n && rc == FEDC_OK; i++)
    if (!strcmp(names[i - 1], names[i])) {
      snprintf(why, whylen, "partial names %s twice", names[i]);
      rc = FEDC_ERR_INVALID;
    }
  free(names);
  for (size_t i = 0; indexed && i < t->na; i++) idx[i] = &t->a[i];
  if (indexed) qsort(idx, t->na, sizeof *idx, cmp_assignment);
  double sum = 0;
  for (size_t i = 0; i < p->n && rc == FEDC_OK; i++) {
    const fc_tier_update *u = &p->updates[i];
    const assignment *const *hit = indexed ? bsearch(u->client, idx, t->na, sizeof *idx, cmp_name_assignment) : NULL;
    const assignment *a = indexed ? (hit ? *hit : NULL) : find(t, u->client);
    if (!a || a->member != (uint32_t)s) {
      snprintf(why, whylen, "partial names %.64s, not a client assigned to aggregator %s in round %llu", u->client,
               p->aggregator, (unsigned long long)p->round);
      rc = FEDC_ERR_INVALID;
      break;
    }
    if (a->counted) {
      snprintf(why, whylen, "partial names %s, whose update round %llu already counted", u->client,
               (unsigned long long)p->round);
      rc = FEDC_ERR_INVALID;
      break;
    }
    char lwhy[200];
    if (fc_upload_meta_check(u->examples, u->loss, p->masked, lwhy, sizeof lwhy) != FEDC_OK) {
      snprintf(why, whylen, "partial's update of %s: %s", u->client, lwhy);
      rc = FEDC_ERR_INVALID;
      break;
    }
    double w = fc_upload_weight(&e->rules, u->examples);
    if ((u->examples == 0 && !p->masked) || u->weight != w) {
      snprintf(why, whylen, "partial gives %s weight %g for %llu examples; the rule gives %g", u->client, u->weight,
               (unsigned long long)u->examples, w);
      rc = FEDC_ERR_INVALID;
      break;
    }
    sum += w;
  }
  free(idx);
  if (rc == FEDC_OK && sum != p->total_weight) {
    snprintf(why, whylen, "partial's total weight %.17g is not the sum of its updates' weights %.17g",
             p->total_weight, sum);
    rc = FEDC_ERR_INVALID;
  }
  return rc;
}

int fc_tier_check_sum(double l2, double amax, const fc_tier_partial *p, const fc_upload_rules *r, char *why,
                      size_t whylen) {
  /* Each update was within the clip, so their weighted sum is within the
   * clip x the total weight (triangle inequality); relative 1e-4 as per update. */
  if (r->clip > 0 && l2 > r->clip * p->total_weight * (1.0 + 1e-4)) {
    snprintf(why, whylen, "partial sum's L2 norm %.6g exceeds clip %.6g x total weight %.6g", l2, r->clip,
             p->total_weight);
    return FEDC_ERR_INVALID;
  }
  if (amax > FC_AGG_MAX_WEIGHTED_ABS * (double)p->n) {
    snprintf(why, whylen, "partial sum too large: max |value| %.3g over %zu updates", amax, p->n);
    return FEDC_ERR_INVALID;
  }
  return FEDC_OK;
}

void fc_tier_mark_counted(fc_tier *t, const fc_tier_partial *p) {
  for (size_t i = 0; i < p->n; i++) {
    assignment *a = find(t, p->updates[i].client);
    if (a) a->counted = 1;
  }
  long m = member_index(t, p->aggregator);
  if (m >= 0) {
    t->stats[m].partials_accepted++;
    t->stats[m].updates_counted += p->n;
  }
}

void fc_tier_note_seen(fc_tier *t, const char *name, uint64_t now_ms) {
  long m = member_index(t, name);
  if (m >= 0) t->stats[m].last_seen_ms = now_ms;
}

int fc_tier_partial_begin(fc_tier *t, const char *name) {
  long m = member_index(t, name);
  if (m < 0) return FEDC_ERR_NOT_FOUND;
  if (t->stats[m].receiving) return FEDC_ERR_EXISTS;
  t->stats[m].receiving = 1;
  return FEDC_OK;
}

void fc_tier_partial_end(fc_tier *t, const char *name) {
  long m = member_index(t, name);
  if (m >= 0) t->stats[m].receiving = 0;
}

void fc_tier_note_refused(fc_tier *t, const char *name) {
  long m = member_index(t, name);
  if (m >= 0) t->stats[m].partials_refused++;
}

size_t fc_tier_loads(const fc_tier *t, fc_tier_load_info *out, size_t cap) {
  size_t k = 0;
  for (size_t i = 0; i < t->nmembers && k < cap; i++, k++) {
    fc_tier_load_info *o = &out[k];
    memset(o, 0, sizeof *o);
    o->m = t->members[i];
    o->round = t->round;
    o->assigned = (uint32_t)fc_tier_load(t, t->members[i].name);
    o->counted = o->assigned - (uint32_t)fc_tier_uncounted(t, t->members[i].name);
    o->partials_accepted = t->stats[i].partials_accepted;
    o->partials_refused = t->stats[i].partials_refused;
    o->updates_counted = t->stats[i].updates_counted;
    o->last_seen_ms = t->stats[i].last_seen_ms;
  }
  return k;
}
