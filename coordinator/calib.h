/*
 * calib.h - cached update calibration for async mode (CA2FL: Wang, Cao, Wu,
 * Chen and Chen, "Tackling the Data Heterogeneity in Asynchronous Federated
 * Learning with Cached Update Calibration", ICLR 2024, Algorithm 1).
 *
 * The server keeps the latest update h_i of each client it has heard from
 * and their mean hbar (weighted by the clients' examples). A buffer does not
 * average its updates d_i but their differences from the cache:
 *
 *     step = hbar + mean_w(d_i - h_i)       (Algorithm 1, lines 9-13)
 *
 * so the clients not in the buffer (the stragglers, the ones whose data
 * differ) still pull through their cached updates, and a buffer of three
 * fast clients no longer drags the model toward their data alone. A client
 * not yet cached is taken at hbar (the paper starts every h_i at 0 and
 * divides by all N clients; with N unknown to the coordinator, a newcomer at
 * the mean gives step = mean_w(d_i) for a buffer of newcomers, FedBuff's).
 * hbar is fixed at the buffer's start; the buffer's updates enter the cache
 * when its version is published (fc_calib_published), not before, so a
 * buffer replayed after a failed publish subtracts the same h_i again.
 *
 * No I/O, no locks: the coordinator calls it under its own mutex
 * (coord_calib.c). Owns the cache and the buffer's staged updates.
 * May call: common/blas.h.
 */
#ifndef FEDC_COORDINATOR_CALIB_H
#define FEDC_COORDINATOR_CALIB_H

#include <stddef.h>
#include <stdint.h>

typedef struct fc_calib fc_calib;

/* n parameters; at most max_clients cached (least recently updated evicted
 * past that); up to rows updates staged per buffer (past that an update is
 * calibrated but not cached). */
int fc_calib_create(size_t n, uint32_t max_clients, uint32_t rows, fc_calib **out);
void fc_calib_free(fc_calib *k);

/* A buffer starts: staged updates are dropped (a failed publish's). */
void fc_calib_begin(fc_calib *k);
/* An accepted update x of `client` (its examples as weight): x becomes
 * x - h_client (x - hbar if not cached), the raw x staged for the cache
 * (fc_calib_stage, then fc_calib_calibrate). */
void fc_calib_apply(fc_calib *k, const char *client, uint64_t examples, float *x);
/* The two halves, for a caller that must stage only once the update has
 * counted (the buffer log's replay): the raw x kept for the cache (the same
 * client twice in a buffer: the later replaces it; past the buffer's rows
 * or out of memory: not kept), and x calibrated in place. */
void fc_calib_stage(fc_calib *k, const char *client, uint64_t examples, const float *x);
void fc_calib_calibrate(const fc_calib *k, const char *client, float *x);
/* A client excluded from the federation (the anomaly detector): its cached
 * update leaves the mean from the next buffer on, and a staged one is
 * dropped. */
void fc_calib_forget(fc_calib *k, const char *client);
/* How many clients' updates fit budget bytes with everything else the
 * cache allocates for n parameters and rows staged updates (0: none). */
uint64_t fc_calib_capacity(size_t n, uint32_t rows, uint64_t budget);
/* The buffer's weighted mean of the calibrated updates becomes the step:
 * delta += hbar. */
void fc_calib_finish(const fc_calib *k, float *delta);
/* The buffer's version is published: its staged updates replace their
 * clients' cached ones and hbar is recomputed for the next buffer. */
void fc_calib_published(fc_calib *k);

typedef struct fc_calib_info {
  uint32_t cached;     /* clients in the cache */
  uint32_t max_clients;
  uint32_t staged;     /* updates of the open buffer */
  uint64_t evicted;    /* clients evicted since start */
  uint64_t weight;     /* sum of the cached clients' examples */
} fc_calib_info;
void fc_calib_get_info(const fc_calib *k, fc_calib_info *out);

#endif
