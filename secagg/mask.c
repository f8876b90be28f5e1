/*
 * mask.c - the one mask expansion of secure aggregation (secagg.h), used by
 * clients to add their masks and by the coordinator to remove them, and the
 * AES-128-CTR PRG behind the fc_prg_ops interface.
 *
 * Cost model: a mask is one keystream over the whole vector, so the work is
 * (terms x vector bytes) of keystream plus one add per entry per term. To run
 * at keystream speed the vector is processed in blocks that stay in cache
 * (FC_MASK_BLOCK entries = 32 KiB): for each block, each term's keystream for
 * that block is generated into a buffer of the same size and added at once.
 * Terms go in batches of 32 whose CTR contexts stay open across blocks
 * (opening one costs about as much as 4 KiB of keystream), as FCP's
 * "batches of 32 keys". Modulus 2^32 is a power of two: the keystream words
 * are used as they are, no rejection sampling.
 */
#include <stdlib.h>
#include <string.h>

#include "crypto/sa_crypto.h"
#include "fedc/error.h"
#include "secagg/secagg.h"

#define FC_MASK_BLOCK 8192 /* u32 entries per block: 32 KiB */
#define FC_MASK_BATCH 32

/* ---- AES-128-CTR PRG: counter block = block index, big-endian ---- */

static int aes_start(void **state, const uint8_t key[FC_SA_KEY_LEN], uint64_t block) {
  fc_ctr *c = calloc(1, sizeof *c);
  if (!c) return FEDC_ERR_NOMEM;
  uint8_t iv[16] = {0};
  for (int i = 0; i < 8; i++) iv[15 - i] = (uint8_t)(block >> (8 * i));
  int rc = fc_ctr_init(c, key, iv);
  if (rc != FEDC_OK) {
    free(c);
    return rc;
  }
  *state = c;
  return FEDC_OK;
}

static int aes_fill(void *state, uint8_t *out, size_t len) { return fc_ctr_keystream(state, out, len); }

static void aes_stop(void *state) {
  if (!state) return;
  fc_ctr_free(state);
  free(state);
}

const fc_prg_ops fc_prg_aes_ctr = {"aes-128-ctr", aes_start, aes_fill, aes_stop};

/* ---- expansion ---- */

/* The adds, vectorised (restrict: v and ks never overlap; GCC's -O2 alone
 * does not vectorise a loop that needs an alias check; clang vectorises at
 * -O2 and has no optimize attribute). */
#if defined(__GNUC__) && !defined(__clang__)
#define VECTORIZE __attribute__((optimize("tree-vectorize")))
#else
#define VECTORIZE
#endif
VECTORIZE static void add_words(uint32_t *restrict v, const uint32_t *restrict ks,
                                                                 size_t m) {
  for (size_t i = 0; i < m; i++) v[i] += ks[i];
}
VECTORIZE static void sub_words(uint32_t *restrict v, const uint32_t *restrict ks,
                                                                 size_t m) {
  for (size_t i = 0; i < m; i++) v[i] -= ks[i];
}

int fc_sa_mask_apply(const fc_prg_ops *prg, uint32_t *vec, uint64_t first, size_t len, const fc_sa_mask_term *terms,
                     size_t nterms, const volatile int *abort) {
  if (!len || !nterms) return FEDC_OK;
  if (!prg) prg = &fc_prg_aes_ctr;
  uint32_t *ks = malloc(FC_MASK_BLOCK * sizeof *ks);
  void *st[FC_MASK_BATCH] = {0};
  int rc = ks ? FEDC_OK : FEDC_ERR_NOMEM;
  /* The stream is read from entry `first`: start at its 16-byte block and
   * skip the entries before it inside that block. */
  uint64_t block = first / 4;
  size_t skip = (size_t)(first % 4);
  for (size_t b0 = 0; rc == FEDC_OK && b0 < nterms; b0 += FC_MASK_BATCH) {
    size_t nb = nterms - b0 < FC_MASK_BATCH ? nterms - b0 : FC_MASK_BATCH;
    for (size_t j = 0; rc == FEDC_OK && j < nb; j++) {
      rc = prg->start(&st[j], terms[b0 + j].key, block);
      if (rc == FEDC_OK && skip) rc = prg->fill(st[j], (uint8_t *)ks, skip * 4);
    }
    for (size_t off = 0; rc == FEDC_OK && off < len; off += FC_MASK_BLOCK) {
      if (abort && *abort) {
        rc = FEDC_ERR_STOPPED;
        break;
      }
      size_t m = len - off < FC_MASK_BLOCK ? len - off : FC_MASK_BLOCK;
      uint32_t *v = vec + off;
      for (size_t j = 0; rc == FEDC_OK && j < nb; j++) {
        if ((rc = prg->fill(st[j], (uint8_t *)ks, m * 4)) != FEDC_OK) break;
        /* Keystream words are read little-endian (memcpy on the LE hosts we
         * build for; a big-endian port would byte-swap here). */
        if (terms[b0 + j].sign > 0) add_words(v, ks, m);
        else
          sub_words(v, ks, m);
      }
    }
    for (size_t j = 0; j < nb; j++) {
      prg->stop(st[j]);
      st[j] = NULL;
    }
  }
  if (ks) {
    fc_wipe(ks, FC_MASK_BLOCK * sizeof *ks); /* the last block of a mask is a secret */
    free(ks);
  }
  return rc;
}
