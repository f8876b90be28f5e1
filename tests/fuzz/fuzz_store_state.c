/*
 * fuzz_store_state.c - the coordinator's state.json reader
 * (fc_store_load_state, coordinator/store.c) on any file: the state
 * directory survives crashes, disk errors and hand edits, and a restart
 * must refuse what it cannot trust rather than serve from it. Properties: no
 * crash; an accepted state satisfies the documented invariants and survives
 * save -> load unchanged.
 */
#include <stdlib.h>
#include <string.h>

#include "coordinator/store.h"
#include "fixture.h"
#include "fuzz.h"

#define FED "fed.example"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  fix_write("state.json", data, size);
  const char *dir = fix_path("");
  fc_store_state st, back;
  char err[512];
  if (fc_store_load_state(dir, FED, &st, err, sizeof err) != 0) return 0;
  if (st.next_round < 1 || (st.open_round && st.open_round >= st.next_round) || st.completed > st.version) abort();
  if (fc_store_save_state(dir, FED, &st, err, sizeof err) != 0 || fc_store_load_state(dir, FED, &back, err, sizeof err))
    abort();
  /* has_budget: a saved state always carries budget and config_rounds. */
  if (back.version != st.version || memcmp(back.sha, st.sha, sizeof st.sha) || back.next_round != st.next_round ||
      back.completed != st.completed || back.abandoned != st.abandoned || back.paused != st.paused ||
      back.budget != st.budget || back.config_rounds != st.config_rounds || back.open_round != st.open_round ||
      !back.has_budget)
    abort();
  return 0;
}

void fuzz_seed(uint8_t **data, size_t *size) {
  static const char s[] =
      "{\n  \"version\": 5,\n"
      "  \"sha256\": \"0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef\",\n"
      "  \"next_round\": 7,\n  \"completed\": 5,\n  \"abandoned\": 1,\n  \"federation\": \"" FED "\",\n"
      "  \"model_file\": \"models/v000005.safetensors\",\n  \"paused\": false,\n  \"budget\": 10,\n"
      "  \"config_rounds\": 10,\n  \"open_round\": 6\n}";
  *size = sizeof s - 1;
  *data = malloc(*size);
  memcpy(*data, s, *size);
}
