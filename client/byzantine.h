/*
 * byzantine.h - research only: a client that attacks the federation, for
 * `fedc sim --byzantine FRACTION:KIND` (and `fedc client --byzantine`). Never
 * part of the public API (include/fedc/client.h) and never something a
 * coordinator can ask for: the attack is chosen on the client's command line.
 *
 * The attack rewrites the delta after training and before the clip stage
 * (the attacker clips like everyone else, or the coordinator would refuse it;
 * `unclipped` skips the clip, to test what refuses an input outside it):
 *   signflip   -scale x delta (scale 10 by default)
 *   gaussian   N(0, scale^2) per coordinate instead of the delta
 *   labelflip  (trains on labels y -> 9 - y: done by the data loader, not here)
 *   alie       "A Little Is Enough" (Baruch et al. 2019): mu - z sigma per
 *              coordinate, mu and sigma over the colluders' honest deltas of
 *              this round, z from their Section 4 for the cohort size n:
 *              s = floor(n/2 + 1) - f, z = Phi^-1((n - s) / n)
 *   ipm        inner-product manipulation (Xie et al. 2020): -scale x mu
 *              (scale 0.1 by default: epsilon)
 *   backdoor   a pixel-pattern backdoor (Bagdasaryan et al. 2020, "How To
 *              Backdoor Federated Learning", Section 4): a fraction
 *              FC_BACKDOOR_POISON of the attacker's examples carry the
 *              trigger and the target label (done in the data, like
 *              labelflip: fc_backdoor_poison), so every local batch mixes
 *              poisoned and clean examples; the delta is then multiplied by
 *              scale (1 by default: plain data poisoning). scale = n / eta
 *              (cohort size over the server learning rate) is their model
 *              replacement (Section 4.2, eq. 3: X = gamma (L - G) + G); the
 *              clip stage that follows keeps it to the clip norm (their
 *              constrain-and-scale, with the norm as the constraint), and
 *              `unclipped` sends it whole (a coordinator with a clip norm
 *              refuses it).
 * Colluders share their view through a directory (`dir`): each writes its
 * honest delta for the round and reads the others' for up to wait_ms; with
 * only its own, mu is its own delta and sigma its spread across coordinates.
 *
 * Secure-aggregation misbehaviour (runtime_secagg.c), for tests of what the
 * coordinator does about it: a weight that lies (weight), unmask shares with
 * a bit flipped (bad_unmask), keys advertised under another certificate of
 * the same name (adv_cert, adv_key: another CA's, another federation's).
 */
#ifndef FEDC_CLIENT_BYZANTINE_H
#define FEDC_CLIENT_BYZANTINE_H

#include <stddef.h>
#include <stdint.h>

#include "common/dataset.h"

enum { FC_BYZ_NONE, FC_BYZ_SIGNFLIP, FC_BYZ_GAUSSIAN, FC_BYZ_LABELFLIP, FC_BYZ_ALIE, FC_BYZ_IPM, FC_BYZ_BACKDOOR };

typedef struct fc_byz_cfg {
  int kind;
  double scale;      /* 0 = the kind's default */
  uint32_t cohort;   /* n for ALIE's z */
  uint32_t colluders; /* f for ALIE's z */
  char dir[512];     /* shared view of the colluders ("" = none) */
  char name[65];     /* this client's name (its file in dir) */
  uint32_t wait_ms;  /* how long to wait for the others' views */
  uint64_t seed;
  int unclipped;     /* skip the clip stage (what a client not running our pipeline can do) */
  uint32_t weight;   /* secure aggregation: claim this weight in the masked input (0 = honest) */
  int bad_unmask;    /* secure aggregation: send every unmask share with a bit flipped (tests of robust unmasking) */
  /* secure aggregation: advertise keys under this certificate, signed with
   * its key, instead of our TLS certificate ("" = honest; tests of the
   * coordinator's certificate checks) */
  char adv_cert[512], adv_key[512];
} fc_byz_cfg;

int fc_byz_parse(const char *kind); /* -1 if unknown */
const char *fc_byz_name(int kind);
/* Rewrite delta (n floats) for `round`. FEDC_OK, or an I/O or memory error
 * (the attacker then sends its honest delta). */
int fc_byz_apply(const fc_byz_cfg *cfg, uint64_t round, float *delta, size_t n);

/* The backdoor's trigger and target. The trigger is a 4 x 4 checkerboard
 * (pixels 1 and 0) one pixel in from the bottom-right corner of a square
 * image (Fashion-MNIST's corner is background in most classes, so the
 * pattern is new there: Bagdasaryan et al.'s pixel pattern, Gu et al.'s
 * BadNets square); an input that is not a square image of side >= 6 gets
 * the same 16 values in its last 16 features (all of them if fewer). The
 * target is class 0 (Fashion-MNIST: T-shirt/top). */
#define FC_BACKDOOR_TARGET 0
#define FC_BACKDOOR_POISON 0.3 /* Bagdasaryan et al. mix 20 backdoor inputs into each batch of 64 */
void fc_backdoor_stamp(float *x, uint32_t dim);
/* Poison round(fraction x n) of d's examples, chosen by seed: stamped and
 * relabelled FC_BACKDOOR_TARGET (d->classes grows to hold it). Returns how
 * many. */
uint32_t fc_backdoor_poison(fc_dataset *d, double fraction, uint64_t seed);
/* The backdoor's test set: every example of src whose label is not the
 * target, stamped, labelled the target, into *out (its own buffers; free
 * with fc_dataset_free). Accuracy on it is the backdoor success rate.
 * FEDC_OK, FEDC_ERR_NOMEM, or FEDC_ERR_INVALID (no such example). */
int fc_backdoor_testset(const fc_dataset *src, fc_dataset *out);

#endif
