/*
 * anomaly.h - per-round update statistics and per-identity anomaly scores
 * (anomaly.c). I/O-free: no sockets, files, threads or clocks (time comes
 * in as now_ms); thread-safe through one internal mutex.
 *
 * What it sees is what the coordinator may see: in plaintext mode each
 * committed update, always the round's aggregate. Per update, from one pass
 * over it (fc_anomaly_measure, no copy):
 *   - its L2 norm (the aggregator's check already has it);
 *   - its inner product with the previous round's aggregate (exact);
 *   - a CountSketch of it (Charikar, Chen and Farach-Colton 2002): k signed
 *     buckets, linear, so the aggregate's sketch is sketched once at the end
 *     and <S x, S A> estimates <x, A> without keeping x (exact when the model
 *     has no more than k parameters: then the sketch is x itself).
 * At the round's end (fc_anomaly_round_end) each input gets features
 *   norm, cos_agg (cosine to this round's aggregate), cos_prev (to the last)
 * and a robust outlier score: per feature |x - median| / (1.4826 MAD) (MAD
 * floored, so identical honest inputs do not make any difference infinite),
 * two-sided for the norm, one-sided (below the median only) for the
 * cosines: pointing more the way of the aggregate than others is not
 * suspicious.
 *
 * Collusion (a fourth feature): cos_nn, each input's largest cosine to
 * another input of the round (FoolsGold's signal: Fung, Yoon and Beschastnikh
 * 2020, "The Limitations of Federated Learning in Sybil Settings"), from the
 * sketches, so O(inputs^2 x sketch), never O(inputs^2 x model). Colluders
 * that send one crafted vector (ALIE: Baruch, Baruch and Goldberg 2019, "A
 * Little Is Enough", mean - z std per coordinate) sit inside the honest
 * spread in every coordinate, so the other features miss them, but they are
 * (near-)copies of each other while honest non-IID updates are not. Scored on
 * the log of the distance to the nearest input, ln max(1 - cos_nn, 1e-3),
 * one-sided (only closer than the round's median counts) with its MAD
 * floored at 0.5 (a factor e^0.5 = 1.65 in distance scores 1): a copy (1e-3)
 * among honest inputs whose nearest neighbours sit at cosine 0.5 scores
 * (ln 0.5 - ln 1e-3) / 0.5 = 11. Relative to the round's median, so honest
 * inputs that are all alike (identical data, a tiny model) score nothing:
 * it trips only while fewer than half the inputs have a near-copy.
 *
 * The input's score is the largest of its features'. Fewer than
 * FC_ANOM_MIN_INPUTS inputs: no scores (nothing to compare against).
 *
 * Per identity an exponentially weighted score across the rounds it took
 * part in, ewma = (1 - alpha) ewma + alpha min(score, FC_ANOM_SCORE_CAP),
 * starting at 0, so one odd round alone does not reach the threshold. The policy acts on the ewma:
 * observe (record only), flag (record, warn, count), exclude (flag, and not
 * selected until now + cooldown). The identity table is what `fedc clients`
 * shows and what the coordinator persists (fc_anomaly_to_json / _from_json).
 */
#ifndef FEDC_COORD_ANOMALY_H
#define FEDC_COORD_ANOMALY_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

enum { FC_ANOM_OBSERVE = 0, FC_ANOM_FLAG = 1, FC_ANOM_EXCLUDE = 2 };
const char *fc_anomaly_policy_name(int policy);
int fc_anomaly_policy_parse(const char *name); /* -1 if unknown */

#define FC_ANOM_SKETCH 1024    /* CountSketch buckets (a power of two) */
#define FC_ANOM_MIN_INPUTS 4   /* inputs a round needs before anyone is scored */
#define FC_ANOM_ID_MAX 65      /* identity, NUL included (as the engine's names) */
#define FC_ANOM_ADDR_MAX 4     /* distinct source addresses kept per identity */
#define FC_ANOM_ADDR_LEN 64
#define FC_ANOM_IDS_MAX 1000000
#define FC_ANOM_DEFAULT_THRESHOLD 5.0
/* A round's score enters the ewma capped at this: one wild round of an
 * honest non-IID client (scores of 20-30 were seen with no attacker, see
 * docs/results.md) then adds at most alpha x 10 = 3, below the threshold,
 * while an attacker scoring past the cap every round crosses 5 in its
 * second round (3, 5.1, 6.6, ...). */
#define FC_ANOM_SCORE_CAP 10.0
#define FC_ANOM_DEFAULT_ALPHA 0.3
#define FC_ANOM_DEFAULT_COOLDOWN_S 3600

typedef struct fc_anomaly_cfg {
  int policy;           /* FC_ANOM_OBSERVE .. FC_ANOM_EXCLUDE */
  double threshold;     /* ewma at or above this is flagged (and excluded) */
  double alpha;         /* ewma weight of the newest round, (0, 1] */
  uint64_t cooldown_ms; /* exclude: not selected for this long after the flag */
} fc_anomaly_cfg;
void fc_anomaly_cfg_defaults(fc_anomaly_cfg *cfg);

/* What one pass over an update gives (fc_anomaly_measure). */
typedef struct fc_anomaly_meas {
  double norm;     /* L2 */
  double dot_prev; /* <x, previous aggregate>; 0 without one */
  int has_prev;
  float sketch[FC_ANOM_SKETCH];
} fc_anomaly_meas;

/* Which feature gave an input its score (the largest). */
enum { FC_ANOM_F_NONE = 0, FC_ANOM_F_NORM, FC_ANOM_F_COS_AGG, FC_ANOM_F_COS_PREV, FC_ANOM_F_COLLUSION };
const char *fc_anomaly_feature_name(int feature);
/* Inputs of a round compared pairwise for cos_nn; past this many each input
 * is compared with its FC_ANOM_NN_WINDOW neighbours on each side in SimHash
 * order (Charikar 2002), where near-copies sort next to each other. */
#define FC_ANOM_NN_EXACT_MAX 256
#define FC_ANOM_NN_WINDOW 32

/* One scored input of a round. */
typedef struct fc_anomaly_input {
  char id[FC_ANOM_ID_MAX];
  double norm, cos_agg, cos_prev; /* cos_prev NAN without a previous aggregate */
  double cos_nn;                  /* largest cosine to another input of the round (NAN alone) */
  double score;                   /* this round's robust score (0 with too few inputs) */
  int feature;                    /* FC_ANOM_F_*: the feature that gave the score */
  double ewma;                    /* the identity's score after this round */
  int group;                      /* fc_anomaly_add_group's: ewma = score, never flagged */
  int flagged;                    /* ewma >= threshold and the policy is flag or exclude */
  int excluded;                   /* ... and the policy is exclude */
} fc_anomaly_input;

/* A round's statistics (fc_anomaly_round_end). */
typedef struct fc_anomaly_round {
  uint64_t round;
  uint32_t inputs;
  double norm_min, norm_median, norm_max;
  double cos_agg_median, cos_prev_median; /* NAN if not known */
  double cos_nn_median, cos_nn_max;       /* nearest-neighbour cosines; NAN with fewer than 2 inputs */
  uint32_t top;       /* index of the highest score in `in` (0 when no input) */
  uint32_t nflagged;
  fc_anomaly_input *in; /* `inputs` of them, owned by the round (fc_anomaly_round_free) */
} fc_anomaly_round;
void fc_anomaly_round_free(fc_anomaly_round *r);

/* One identity's record. */
typedef struct fc_anomaly_ident {
  char id[FC_ANOM_ID_MAX];
  double ewma, last_score;
  uint64_t rounds;         /* rounds its update was scored in */
  uint64_t last_round;
  uint64_t flags;          /* rounds it was flagged in */
  uint64_t excluded_until; /* ms since the epoch, 0 = not excluded */
  uint64_t last_seen_ms;   /* last call seen from it (fc_anomaly_seen) */
  uint64_t new_addrs;      /* times it came from an address not seen before (the first excluded) */
  uint64_t concurrent;     /* times it was seen from two addresses at once */
  uint64_t refused;        /* connections refused as concurrent */
  uint64_t rate_limited;   /* calls refused for its rate */
  uint32_t naddrs;
  char addrs[FC_ANOM_ADDR_MAX][FC_ANOM_ADDR_LEN]; /* most recent first */
} fc_anomaly_ident;

typedef struct fc_anomaly fc_anomaly;

/* n: parameters per update. */
int fc_anomaly_create(const fc_anomaly_cfg *cfg, size_t n, fc_anomaly **out);
void fc_anomaly_destroy(fc_anomaly *a);
const fc_anomaly_cfg *fc_anomaly_config(const fc_anomaly *a);

/* One pass over an update x (n floats, finite; norm from the aggregator's
 * check): its inner product with the previous aggregate and its sketch.
 * Reads only x and the previous aggregate: callable from any thread,
 * concurrently, outside the caller's locks. */
void fc_anomaly_measure(fc_anomaly *a, const float *x, double norm, fc_anomaly_meas *m);
/* Forget the inputs of the last round (a round started). */
void fc_anomaly_round_begin(fc_anomaly *a);
/* A committed update of identity id: its measurement joins the round
 * (copied: m may be freed after). FEDC_ERR_NOMEM, FEDC_ERR_TOO_LARGE past
 * FC_ANOM_IDS_MAX inputs. */
int fc_anomaly_add(fc_anomaly *a, const char *id, const fc_anomaly_meas *m);
/* The same for an input that is not one identity's (a secure-aggregation
 * bucket's unmasked mean, labelled e.g. "bucket 3"): scored with the others,
 * never flagged, no identity record. */
int fc_anomaly_add_group(fc_anomaly *a, const char *label, const fc_anomaly_meas *m);
/* The round's aggregate (n floats, the combined update before any DP noise
 * or server step): scores every input, updates each identity's ewma, applies
 * the policy at now_ms, and keeps the aggregate as the next round's
 * "previous". *out (caller frees with fc_anomaly_round_free) holds the
 * statistics; with no input it has inputs 0. */
int fc_anomaly_round_end(fc_anomaly *a, const float *aggregate, uint64_t round, uint64_t now_ms, fc_anomaly_round *out);
/* The round was abandoned: its inputs are dropped, scores unchanged. */
void fc_anomaly_round_abandon(fc_anomaly *a);

/* Identity misuse: a call from id at source address addr (NULL: unknown) at
 * now_ms; concurrent: another connection of id from another address is open.
 * Returns a bit set: 1 = address not seen before for a known identity, 2 =
 * seen from several addresses at once. Records unknown identities too
 * (bounded by FC_ANOM_IDS_MAX; past it the call is not recorded). */
enum { FC_ANOM_NEW_ADDR = 1, FC_ANOM_CONCURRENT = 2 };
int fc_anomaly_seen(fc_anomaly *a, const char *id, const char *addr, int concurrent, uint64_t now_ms);
/* A concurrent connection of id was refused. */
void fc_anomaly_refused(fc_anomaly *a, const char *id);
/* A call of id was refused for its rate. */
void fc_anomaly_rate_limited(fc_anomaly *a, const char *id);

/* Identities excluded at now_ms: calls fn for each (under the module's lock:
 * fn must not call back into it). Returns how many. */
uint32_t fc_anomaly_excluded(fc_anomaly *a, uint64_t now_ms, void (*fn)(void *, const char *, uint64_t), void *arg);
/* Copy of the identity table, sorted by identity (caller frees *out). */
int fc_anomaly_idents(fc_anomaly *a, fc_anomaly_ident **out, size_t *n);
/* One identity's ewma (0 if unknown). */
double fc_anomaly_score(fc_anomaly *a, const char *id);

/* Persisted state: the identity table and the previous aggregate's norm are
 * not enough to rebuild cos_prev, so only the table is kept (cos_prev
 * resumes one round after a restart). New reference from _to_json;
 * _from_json replaces the table, FEDC_ERR_FORMAT with a line in err. */
json_t *fc_anomaly_to_json(fc_anomaly *a);
int fc_anomaly_from_json(fc_anomaly *a, const json_t *o, char *err, size_t errlen);

/* Pure helpers, exposed for tests: median of v (n values, reordered);
 * robust z-scores |v - med| / max(1.4826 MAD, floor) into z (one_sided:
 * only values below the median score). */
double fc_anomaly_median(double *v, size_t n);
void fc_anomaly_robust_z(const double *v, size_t n, double floor, int one_sided, double *z);

#endif
