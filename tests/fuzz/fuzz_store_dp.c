/*
 * fuzz_store_dp.c - the coordinator's dp.json reader (fc_store_read_dp,
 * coordinator/store.c) on any file: the privacy budget already spent is
 * read back at every start, so a damaged file must be refused, never read
 * as less spent than it says. The first input byte picks the number of
 * orders expected (1..8: the reader's paths are the same for the
 * accountant's few hundred, and short inputs fuzz faster); the rest is the
 * file. Properties: no crash; accepted values are non-negative (RDP) and a
 * finite norm (clip), and survive write -> read bit for bit.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "coordinator/store.h"
#include "fixture.h"
#include "fuzz.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (size < 1) return 0;
  size_t n = 1 + (data[0] & 7);
  fix_write("dp.json", data + 1, size - 1);
  const char *dir = fix_path("");
  double rdp[8], back[8], clip, clip2;
  uint64_t rounds, rounds2;
  char err[512];
  if (fc_store_read_dp(dir, rdp, n, &rounds, &clip, err, sizeof err) != 0) return 0;
  for (size_t i = 0; i < n; i++)
    if (!(rdp[i] >= 0)) abort();
  if (!(clip >= 0) || !isfinite(clip)) abort();
  /* Only finite values can be written back (JSON has no infinity). */
  for (size_t i = 0; i < n; i++)
    if (!isfinite(rdp[i])) return 0;
  if (fc_store_write_dp(dir, rdp, n, rounds, 1.0, 1e-5, clip, err, sizeof err) != 0 ||
      fc_store_read_dp(dir, back, n, &rounds2, &clip2, err, sizeof err) != 0)
    abort();
  if (memcmp(back, rdp, n * sizeof *rdp) != 0 || rounds2 != rounds || memcmp(&clip2, &clip, sizeof clip) != 0) abort();
  return 0;
}

void fuzz_seed(uint8_t **data, size_t *size) {
  static const char s[] = "\x03{\"orders\":4,\"rounds\":12,\"epsilon\":1.5,\"delta\":1e-05,\"clip\":0.75,"
                          "\"rdp\":[0.0125,0.5,3,1.0000000000000002]}";
  *size = sizeof s - 1;
  *data = malloc(*size);
  memcpy(*data, s, *size);
}
