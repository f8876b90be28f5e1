/*
 * params.h - safe SecAgg+ parameters: the neighbour count k and the Shamir
 * threshold t for n clients of which a fraction may be corrupt (colluding
 * with the coordinator) and a fraction may drop out.
 *
 * Bell, Bonawitz, Gascon, Lepoint, Raykova, "Secure Single-Server Aggregation
 * with (Poly)Logarithmic Overhead", CCS 2020, Section 4 (the Harary-graph
 * instantiation of SecAgg+) and its Theorems 4.x: with the graph drawn at
 * random after the adversary has chosen whom to corrupt, the protocol is
 *   secure   if (1) the honest survivors stay connected, and (2) no client has
 *            t or more corrupt neighbours (semi-honest), or, against a
 *            coordinator that may lie about who dropped (the active protocol
 *            we run), 2t - k - 1 is more than the corrupt neighbours (the
 *            paper's 2t - k, with one more holder of b_v: fedc's client keeps
 *            a share of its own seed; secagg.h, fc_sa_min_threshold);
 *   correct  if (3) every client keeps at least t surviving neighbours, so
 *            each needed secret can be rebuilt;
 * each except with a small probability. We bound them exactly (no Chernoff
 * slack) and union-bound over the clients:
 *   P(1) <= n (n - k - 1) / 2 * (B)_k / (n)_k       (a Harary graph falls apart
 *           only if k/2 consecutive ring positions are bad in two places;
 *           B = corrupt + dropped clients, (x)_k the falling factorial)
 *   P(2) <= n * P[Hyp(n, corrupt, k) >= the allowed count]
 *   P(3) <= n * P[Hyp(n, survivors, k) < t]
 * with the security budget 2^-40 split between (1) and (2) (2^-41 each) and
 * the correctness budget 2^-20. The smallest even k that admits a t wins; if
 * none below n - 1 does, the complete graph k = n - 1 (Bonawitz et al. 2017)
 * with the same conditions. The same criteria as Google's federated-compute
 * parameter finder (fcp/secagg/server/graph_parameter_finder.cc); our own
 * code.
 *
 * Whatever the threat, t also meets the floor every fedc client insists on,
 * 2t > k + 1 (fc_sa_min_threshold(k, 0)): a client refuses anything less.
 * Against a curious coordinator that floor is all the lying-coordinator
 * protection there is: it holds only while a victim has fewer than
 * 2t - k - 1 corrupt neighbours, which the semi-honest search does not bound.
 */
#ifndef FEDC_SECAGG_PARAMS_H
#define FEDC_SECAGG_PARAMS_H

#include <stddef.h>
#include <stdint.h>

enum fc_sa_threat {
  FC_SA_THREAT_MALICIOUS = 0, /* the coordinator may lie about dropouts (default; our protocol) */
  FC_SA_THREAT_HONEST = 1,    /* semi-honest: a curious coordinator that follows the protocol */
};
/* Or'd into the threat: the conditions as published for Bell et al.'s
 * protocol (b_v shared among the k neighbours only: 2t - k > corrupt
 * neighbours) and without fedc's client floor, as Google's finder computes
 * them. fedc clients refuse some of what this finds (2t <= k + 1); it exists
 * to check the bounds against the published table. */
#define FC_SA_AS_PUBLISHED 0x100

typedef struct fc_sa_choice {
  uint32_t k, t;          /* neighbours per client, Shamir threshold */
  int complete;           /* k = n - 1: every client is every other's neighbour */
  double log2_disconnect; /* log2 of the bound on P(1); -inf when impossible */
  double log2_corrupt;    /* log2 of the bound on P(2) */
  double log2_starve;     /* log2 of the bound on P(3) */
} fc_sa_choice;

#define FC_SA_SECURITY_BITS 40
#define FC_SA_CORRECTNESS_BITS 20
#define FC_SA_PARAMS_MAX_CLIENTS 1000000u

/* Find k and t for n clients (3..1,000,000), corrupt and dropout fractions
 * in [0, 1). FEDC_OK, or FEDC_ERR_INVALID with why (bad input, or no k and t
 * can meet both bounds: too many corrupt plus dropped clients). */
int fc_sa_params_find(uint32_t n, double corrupt, double dropout, int threat, fc_sa_choice *out, char *why,
                      size_t whylen);

/* The bounds of one given (k, t); 0 if all three meet their budgets. */
int fc_sa_params_bounds(uint32_t n, uint32_t k, uint32_t t, double corrupt, double dropout, int threat,
                       fc_sa_choice *out);

/* The coordinator's default k and t for an instance of n clients
 * (secagg_neighbors 0): fc_sa_params_find against a coordinator that may lie
 * about dropouts (FC_SA_THREAT_MALICIOUS: the protocol fedc runs, and the
 * security review's floor 2t > k + 1 and above), with the fractions turned
 * into client counts conservatively:
 *   corrupt  ceil(corrupt x n) clients (a fraction of a client is one);
 *   dropped  the larger of ceil(dropout x n) and n - min_survivors: clients
 *            sign survivor lists down to min_survivors (secagg.h), so a
 *            coordinator can claim that many dropped whatever the fraction
 *            says (0: no floor but t, the fraction alone).
 * Where no k below n - 1 meets the bounds (small cohorts, or too many
 * corrupt plus dropped), the complete graph k = n - 1 with its least
 * admissible t, or, if even that fails, the floor fc_sa_min_threshold(k, 0):
 * the original SecAgg's graph, as before this default existed. n >= 3.
 * Never fails; out->complete says which. */
#define FC_SA_DEFAULT_CORRUPT 0.05
#define FC_SA_DEFAULT_DROPOUT 0.10
void fc_sa_params_default(uint32_t n, double corrupt, double dropout, uint32_t min_survivors, fc_sa_choice *out);

#endif
