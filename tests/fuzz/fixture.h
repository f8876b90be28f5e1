/*
 * fixture.h - what several fuzz targets share (tests/fuzz/fixture.c):
 *
 *   - frames: the input format of the targets that feed a sequence of
 *     messages, [u16 little-endian length][bytes] each (a short last frame
 *     is cut to what is left);
 *   - a per-process scratch directory for targets whose decoder reads a path;
 *   - deterministic randomness: OpenSSL's RAND replaced by streams the target
 *     selects and resets, so key generation, nonces and ECDSA signatures are
 *     the same in every run, and a recorded message over those keys stays
 *     valid input for every later run (and every process and build, with
 *     the fixed PKI of fixture_pki.h);
 *   - a recorded secure-aggregation round (n = 4 on the SecAgg+ ring graph
 *     with k = 2 neighbours each, so "not a neighbour" is reachable; t = 2;
 *     federation "fuzz") through the real client and server cores: what
 *     each client polled and submitted at every stage, so a target can
 *     replace one party's messages with fuzzed bytes and still reach every
 *     later stage.
 * Test code only: never linked into fedc.
 */
#ifndef FEDC_FUZZ_FIXTURE_H
#define FEDC_FUZZ_FIXTURE_H

#include <stddef.h>
#include <stdint.h>

#include "client/secagg_client.h"
#include "coordinator/secagg_server.h"
#include "fedc/v1/fedc.pb-c.h"
#include "secagg/secagg.h"

/* ---- frames ---- */
typedef struct fix_reader {
  const uint8_t *p;
  size_t left;
} fix_reader;
/* The next frame; 0 when the input is used up. */
int fix_next_frame(fix_reader *r, const uint8_t **frame, size_t *len);
/* Append one frame to a malloc'd buffer (grown as needed). */
void fix_put_frame(uint8_t **buf, size_t *len, const void *frame, size_t n);
/* Pack a message and append it as a frame. */
void fix_put_msg(uint8_t **buf, size_t *len, const ProtobufCMessage *m);

/* ---- scratch files ---- */
/* "<per-process directory>/<name>" (the directory is made on first use and
 * removed with its files at exit). */
const char *fix_path(const char *name);
/* Write data to fix_path(name); returns the path. Aborts if it cannot. */
const char *fix_write(const char *name, const void *data, size_t size);

/* ---- deterministic randomness ---- */
/* Select stream `id` (0..7) for every later RAND_bytes / RAND_priv_bytes,
 * restarting it if `reset`. The first call installs the method. */
void fix_rand_stream(int id, int reset);

/* ---- secure aggregation ---- */
#define FIX_SA_N 4
#define FIX_SA_DIM 4

typedef struct fix_blob {
  uint8_t *p;
  size_t n;
} fix_blob;

typedef struct fix_sa {
  fc_sa_params params;
  const char *names[FIX_SA_N];
  const char *cert[FIX_SA_N + 1], *key[FIX_SA_N + 1]; /* by index 1..n */
  uint8_t cert_sha256[FIX_SA_N + 1][32];              /* each client's TLS certificate, as the transport records it */
  fix_blob task[FIX_SA_N + 1];                        /* packed Task each client was given */
  fix_blob poll[FC_SA_UNMASK + 1][FIX_SA_N + 1];      /* packed SecAggPollResponse [stage][index] */
  fix_blob submit[FC_SA_UNMASK + 1][FIX_SA_N + 1];    /* packed SecAggSubmitRequest [stage][index] */
} fix_sa;

/* A server core for the recorded round's session, trusting the fixture's CA
 * (federation "fuzz"); aborts if it cannot be made. */
fc_sa_server *fix_sa_server(const fix_sa *sa);
/* The recorded round (made on first use; aborts if the cores do not
 * complete it or it does not replay identically). */
const fix_sa *fix_sa_get(void);
/* Client `index`'s masked input, as the runtime makes it (runtime_secagg.c):
 * quantize a zero update of FIX_SA_DIM parameters with 1 example, add the
 * distributed-DP noise the parameters ask for, mask. FEDC_OK or the first
 * stage's error. */
int fix_sa_masked_input(fc_sa_client *c, const fc_sa_params *p);

#endif
