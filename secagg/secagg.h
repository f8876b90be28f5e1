/*
 * secagg.h - the pieces of secure aggregation both sides need, kept once
 * below both (ARCHITECTURE.md): session parameters and the session id, the
 * neighbour graph, quantization, mask-key derivation, the signed messages,
 * and the one mask-expansion function with its PRG behind a small interface.
 *
 * Protocol: Bonawitz et al., CCS 2017, "Practical Secure Aggregation for
 * Privacy-Preserving Machine Learning" (Fig. 4, the version secure against an
 * active adversary), on the sparse neighbour graph of Bell et al., CCS 2020,
 * "Secure Single-Server Aggregation with (Poly)Logarithmic Overhead" (SecAgg+).
 * The cores that run it are client/secagg_client*.c and
 * coordinator/secagg_server*.c; neither does I/O.
 *
 * Clients are named by their index 1..n in the cohort (the order the
 * coordinator published); Shamir share points are those indices.
 */
#ifndef FEDC_SECAGG_H
#define FEDC_SECAGG_H

#include <stddef.h>
#include <stdint.h>

#include "common/rng.h"

#define FC_SA_SEED_LEN 32
#define FC_SA_SESSION_LEN 32
#define FC_SA_KEY_LEN 16 /* AES-128 mask PRG key */
#define FC_SA_MAX_COHORT 10000
#define FC_SA_MIN_COHORT 3
#define FC_DP_BIT_SCALE 65536 /* distributed DP: the adaptive-clipping bit is +-this (secagg.h, fc_sa_params) */

/* Stages, in protocol order (Bonawitz et al. 2017, rounds 0..4). */
enum fc_sa_stage {
  FC_SA_ADVERTISE = 1,   /* round 0: public keys, signed */
  FC_SA_SHARE_KEYS = 2,  /* round 1: encrypted Shamir shares of b_u and s_u^SK */
  FC_SA_MASKED = 3,      /* round 2: the masked, quantized update */
  FC_SA_CONSISTENCY = 4, /* round 3: signatures over the survivor set */
  FC_SA_UNMASK = 5,      /* round 4: shares of b_v (survivors) or s_v^SK (dropped) */
};
const char *fc_sa_stage_name(int stage);
/* Parse "advertise:0.1,shares:0.05,masked:0.1,unmask:0.05" (research
 * dropout injection: the chance a client vanishes before sending that
 * stage's message) into drop[FC_SA_*]. 0 or FEDC_ERR_INVALID with why. */
int fc_sa_drop_parse(const char *spec, double drop[6], char *why, size_t whylen);

/* Everything both sides must agree on for one round's session. */
typedef struct fc_sa_params {
  uint64_t round;
  uint64_t model_version;
  uint8_t model_sha[32];
  uint32_t n;                          /* cohort size: indices 1..n */
  uint32_t k;                          /* neighbours per client: n-1 = complete graph */
  uint32_t t;                          /* Shamir threshold: at least fc_sa_min_threshold(k, 0) */
  uint8_t graph_seed[FC_SA_SEED_LEN];  /* published by the coordinator */
  uint64_t max_weight;                 /* a client's weight is min(examples, max_weight) */
  float clip;                          /* L2 clip norm of the update */
  uint64_t dim;                        /* model parameters; the masked vector has fc_sa_entries(p) */
  /* Distributed differential privacy (the distributed discrete Gaussian of
   * Kairouz, Liu and Steinke 2021): all 0 without it. With it, max_weight is
   * 1 (uniform weights), `scale` is the quantization scale (instead of
   * fc_sa_quant_scale's, to leave room for the noise), and each client adds
   * discrete Gaussian noise of std dp_sigma (integer units) to each model
   * coordinate. bit_scale > 0 adds one coordinate after the weight: the
   * adaptive-clipping bit as +-bit_scale (+ unclipped), with noise of std
   * dp_bit_sigma. */
  double scale;
  double dp_sigma;
  uint32_t bit_scale;
  double dp_bit_sigma;
  /* The fewest masked inputs whose sum may be unmasked (0: only t). The
   * coordinator closes the masked stage into abandonment below it, and every
   * client refuses to sign (and so to unmask) a survivor list shorter than it.
   * Set to the coordinator's min_updates; under distributed DP it is the m
   * the noise was calibrated for (fc_sa_dp_scale's m_min), so no sum carrying
   * less noise than the accountant counts is ever unmasked. */
  uint32_t min_survivors;
  /* Narrow ring (protocol 1.9; secagg/ring.c), 0 and 0 without it: each
   * coordinate is quantized to an integer in [-L, L], L = 2^(quant_bits-1) - 1,
   * at scale L / clip, weights are 1 (max_weight 1), and the masked vector
   * travels mod 2^ring_bits. ring_bits >= fc_sa_ring_bits(n, quant_bits). */
  uint32_t quant_bits;
  uint32_t ring_bits;
  /* ... and the range of one coordinate: inputs are clamped into
   * [-quant_range, quant_range] (a bias the operator accepts for a finer
   * step); 0 = clip, which needs no clamp (|x_i| <= ||x|| <= clip). */
  float quant_range;
} fc_sa_params;

/* The split-view condition. Survivor v's self-mask seed b_v is Shamir-shared
 * among its k neighbours and v itself (k + 1 holders), its key s_v^SK among
 * the k neighbours. An honest holder sends one of the two shares, chosen by
 * the one survivor list it signed. A coordinator that shows one group a list
 * with v and a disjoint group a list without it needs t b_v-shares from the
 * first and t s_v^SK-shares from the second, all inside v's closed
 * neighbourhood of k + 1 nodes; c corrupt neighbours may send both, so it
 * needs 2t <= k + 1 + c, and then rebuilds b_v and s_v^SK and so v's input
 * (Bonawitz et al. 2017's active-adversary argument; Bell et al. 2020's
 * malicious-server condition "fewer than 2t - k corrupt neighbours", for
 * k holders of b_v). The consistency check cannot help: each group sees
 * only its own signatures. So a threshold is safe against a coordinator
 * that lies about dropouts, with up to c colluding neighbours, iff
 * 2t > k + 1 + c, i.e. t >= floor((k + 1 + c) / 2) + 1. With c = 0 this is
 * the floor every client and the coordinator insist on. */
static inline uint32_t fc_sa_min_threshold(uint32_t k, uint32_t colluders) { return (k + 1 + colluders) / 2 + 1; }

/* Entries of the masked vector: dim coordinates, the weight, and the
 * adaptive-clipping bit if bit_scale > 0. */
static inline uint64_t fc_sa_entries(const fc_sa_params *p) { return p->dim + 1 + (p->bit_scale ? 1 : 0); }
/* The quantization scale both sides use. */
double fc_sa_params_scale(const fc_sa_params *p);
/* Distributed DP: the largest scale for which the sum of n inputs plus n
 * clients' noise (to 8 standard deviations) cannot wrap 32 bits, each
 * client's noise being z * (clip * scale + sqrt(dim)) / sqrt(m_min), and the
 * per-client std that gives: noise multiplier z for any m_min survivors.
 * sqrt(dim) bounds what stochastic rounding adds to the L2 norm, so the
 * integer sensitivity is clip * scale + sqrt(dim). Returns the scale (0 if
 * none fits) and the std in *sigma. bits: also room for the bit coordinate. */
double fc_sa_dp_scale(uint32_t n, uint32_t m_min, float clip, uint64_t dim, double z, double *sigma);
/* One client's L2 sensitivity in the integer domain: clip * scale + sqrt(dim). */
double fc_sa_dp_sensitivity(float clip, double scale, uint64_t dim);

/* 0 if the parameters are usable, else FEDC_ERR_INVALID with one line in why:
 * 3 <= n <= FC_SA_MAX_COHORT, k == n-1 or (k even, 2 <= k < n-1),
 * fc_sa_min_threshold(k, 0) <= t <= k (2t > k + 1: no split view unmasks an
 * input; t - 1 colluding neighbours learn nothing), min_survivors <= n (and
 * >= 2 under distributed DP), clip > 0 finite, 1 <= max_weight and
 * n * max_weight < 2^31, 1 <= dim < 2^32 - 1. */
int fc_sa_params_check(const fc_sa_params *p, char *why, size_t whylen);

/* Session id: SHA-256 over a domain tag, every field of p and the cohort's
 * names in index order (names[0] is index 1). Every client recomputes it from
 * its task; it goes into every key derivation, signature and associated data,
 * so nothing from another round or cohort is accepted. */
int fc_sa_session_id(const fc_sa_params *p, const char *const *names, uint8_t out[FC_SA_SESSION_LEN]);

/* ---- neighbour graph (Bell et al. 2020, section 3: a random k-regular
 * Harary graph: nodes placed on a ring in an order drawn from the seed, each
 * joined to the k/2 nearest on either side) ---- */
typedef struct fc_sa_graph {
  uint32_t n, k;
  uint32_t *pos;   /* pos[i-1]: ring position of index i */
  uint32_t *at;    /* at[p]: index at ring position p */
} fc_sa_graph;
int fc_sa_graph_build(uint32_t n, uint32_t k, const uint8_t seed[FC_SA_SEED_LEN], fc_sa_graph *g);
void fc_sa_graph_free(fc_sa_graph *g);
int fc_sa_graph_adjacent(const fc_sa_graph *g, uint32_t u, uint32_t v);
/* u's neighbours in ascending index order into out (room for k); returns the count. */
uint32_t fc_sa_graph_neighbors(const fc_sa_graph *g, uint32_t u, uint32_t *out);

/* ---- quantization (unbiased stochastic rounding into Z_{2^32}) ----
 * A client sends q = round_stochastic(w * x * scale) per coordinate and w as
 * one more coordinate, where x is its clipped update (||x|| <= clip, so each
 * |x_i| <= clip) and w = min(examples, max_weight). The sum of n such vectors
 * is bounded by n * (max_weight * clip * scale + 1) in absolute value; scale
 * is the largest that keeps this below 2^31, so the sum read as a signed
 * 32-bit integer never wraps. Error of the decoded average, per coordinate:
 * at most n / (scale * W) (each rounding moves by < 1), standard deviation at
 * most sqrt(n) / (2 * scale * W), with W the sum of weights. */
double fc_sa_quant_scale(uint32_t n, uint64_t max_weight, float clip);
/* out has dim + 1 entries. rng: the rounding's randomness (seeded from
 * fc_random_bytes by the pipeline; rounding needs no secrecy, only no bias). x must already be clipped (the pipeline's
 * clip stage runs first): that is what makes the sum's bound hold. */
void fc_sa_quantize(const float *x, uint64_t dim, uint64_t weight, double scale, fc_rng *rng, uint32_t *out);
/* Decode a sum of n vectors: avg[i] = signed(sum[i]) / scale / W, W = sum[dim].
 * FEDC_ERR_INVALID if W is 0 or above n * max_weight (a wrapped or broken sum). */
int fc_sa_dequantize(const uint32_t *sum, uint64_t dim, double scale, uint64_t max_total_weight, float *avg,
                     uint64_t *total_weight);

/* ---- narrow ring (protocol 1.9; secagg/ring.c) ----
 * The masked vector lives in Z_{2^w}, w = ring_bits, instead of Z_{2^32}.
 * Masks: the same expansion (fc_sa_mask_apply) mod 2^32, reduced mod 2^w by
 * keeping the low w bits of each word; since 2^w divides 2^32 the pairwise
 * masks still cancel and the self masks still come off mod 2^w, and the low
 * w bits of a uniform 32-bit word are uniform mod 2^w, so a masked entry
 * still hides its input perfectly. The sum of n inputs, each in [-L, L],
 * lies in [-nL, nL]: it cannot wrap when nL <= 2^(w-1) - 1 (read as a signed
 * w-bit number), and the weights (1 each) sum to n <= 2^w - 1. */
/* Narrowest ring (8, 16, 24 or 32 bits) in which n inputs of quant_bits bits
 * cannot wrap; 0 if none (or quant_bits outside 2..16). */
uint32_t fc_sa_ring_bits(uint32_t n, uint32_t quant_bits);
/* Bytes of the masked vector on the wire: entries x 4, or x ring_bits / 8 in a narrow ring. */
uint64_t fc_sa_wire_bytes(const fc_sa_params *p);
/* The low ring_bits of each of n words, little-endian, ring_bits / 8 bytes each. */
void fc_sa_ring_pack(const uint32_t *v, uint64_t n, uint32_t ring_bits, uint8_t *out);
/* The inverse: n words of ring_bits / 8 bytes into u32 (high bits 0). */
void fc_sa_ring_unpack(const uint8_t *in, uint64_t n, uint32_t ring_bits, uint32_t *out);
/* An unmasked sum (mod 2^32) reduced into the ring: the dim coordinates
 * sign-extended from ring_bits (so fc_sa_dequantize reads them as int32), the
 * weight (entry dim) reduced mod 2^ring_bits. No-op for ring_bits 0 or 32. */
void fc_sa_ring_reduce(uint32_t *sum, uint64_t dim, uint32_t ring_bits);

/* ---- key derivation (HKDF-SHA256; never a raw shared secret) ---- */
/* Pairwise mask key s_uv from X25519(s_u, s_v): info holds the round and the
 * ordered pair (min, max), salt the session id. */
int fc_sa_pair_mask_key(const uint8_t session[FC_SA_SESSION_LEN], uint64_t round, const uint8_t dh[32],
                        uint32_t u, uint32_t v, uint8_t key[FC_SA_KEY_LEN]);
/* Self-mask key from the seed b_u. */
int fc_sa_self_mask_key(const uint8_t session[FC_SA_SESSION_LEN], uint64_t round, const uint8_t seed[32],
                        uint32_t u, uint8_t key[FC_SA_KEY_LEN]);
/* Share-encryption key (AES-256-GCM) for sender -> recipient (direction-specific). */
int fc_sa_share_key(const uint8_t session[FC_SA_SESSION_LEN], uint64_t round, const uint8_t dh[32], uint32_t from,
                    uint32_t to, uint8_t key[32]);
/* Sign of u's pairwise mask with v: +1 if u < v, -1 if u > v (they cancel). */
static inline int fc_sa_pair_sign(uint32_t u, uint32_t v) { return u < v ? 1 : -1; }

/* ---- signed and authenticated byte strings ---- */
#define FC_SA_ADV_MSG_LEN (32 + FC_SA_SESSION_LEN + 4 + 32 + 32)
/* What a client signs when it advertises its keys (Bonawitz round 0). */
void fc_sa_advertise_msg(const uint8_t session[FC_SA_SESSION_LEN], uint32_t index, const uint8_t enc_pk[32],
                         const uint8_t mask_pk[32], uint8_t out[FC_SA_ADV_MSG_LEN]);
/* Digest signed in the consistency check (round 3): session and the sorted survivor list. */
int fc_sa_survivors_digest(const uint8_t session[FC_SA_SESSION_LEN], const uint32_t *survivors, size_t n,
                           uint8_t out[32]);
/* Associated data of a share ciphertext: session, sender, recipient. */
#define FC_SA_AAD_LEN (FC_SA_SESSION_LEN + 8)
void fc_sa_share_aad(const uint8_t session[FC_SA_SESSION_LEN], uint32_t from, uint32_t to, uint8_t out[FC_SA_AAD_LEN]);
/* Commitment to the self-mask seed, sent with the shares so the coordinator
 * can tell a correct reconstruction from bad shares. */
int fc_sa_seed_commitment(const uint8_t session[FC_SA_SESSION_LEN], uint32_t index, const uint8_t seed[32],
                          uint8_t out[32]);
/* The plaintext of one share message: from, to, share of b, share of s^SK. */
#define FC_SA_SHARE_PT_LEN (4 + 4 + 32 + 32)
#define FC_SA_SHARE_CT_LEN (FC_SA_SHARE_PT_LEN + 16) /* + GCM tag */

/* ---- mask expansion ----
 * The PRG behind an interface so tests can inject a fake: a keyed stream that
 * can start at any 16-byte block. AES-128-CTR with the key and the counter
 * block = block index (big-endian) is the real one. */
typedef struct fc_prg_ops {
  const char *name;
  /* Start the stream of key at byte offset 16 * block; *state owned by the PRG. */
  int (*start)(void **state, const uint8_t key[FC_SA_KEY_LEN], uint64_t block);
  int (*fill)(void *state, uint8_t *out, size_t len); /* next len bytes */
  void (*stop)(void *state);
} fc_prg_ops;
extern const fc_prg_ops fc_prg_aes_ctr;

typedef struct fc_sa_mask_term {
  uint8_t key[FC_SA_KEY_LEN];
  int32_t sign; /* +1: add PRG(key); -1: subtract it */
} fc_sa_mask_term;

/* vec[i] += sum_terms sign * PRG(key)[first + i] (mod 2^32) for i < len, where
 * PRG(key)[j] is the j-th little-endian u32 of the key's stream. The one
 * expansion both sides use: clients add their masks, the coordinator removes
 * them. Works through the vector in cache-sized blocks with the keystream
 * generated straight into a block buffer and added there, terms in batches
 * of 32 with their streams kept open. abort (may be NULL) is checked between
 * blocks: FEDC_ERR_STOPPED. */
int fc_sa_mask_apply(const fc_prg_ops *prg, uint32_t *vec, uint64_t first, size_t len, const fc_sa_mask_term *terms,
                     size_t nterms, const volatile int *abort);

#endif
