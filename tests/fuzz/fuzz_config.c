/*
 * fuzz_config.c - the coordinator's YAML config loader (cc_load_config in
 * cli/cmd_coordinator_yaml.c and cc_apply in cli/cmd_coordinator_opts.c, on
 * libyaml) on any file: `fedc
 * coordinator --config FILE`. Properties: no crash; an accepted file sets
 * only values its option's row allows (the range of numbers, the check and
 * size of strings), which is what the file promises: nothing that would
 * silently change the coordinator's meaning is accepted.
 *
 * The loader and the option table live in the subcommand's own files, which
 * are compiled into this target as they are (with cli_common.c, which they
 * call): no copy of the loader, and no change to the CLI for the sake of the
 * test.
 */
#include "cli/cli_common.c"
#include "cli/cmd_coordinator_opts.c"
#include "cli/cmd_coordinator_yaml.c"

#include "fixture.h"
#include "fuzz.h"

const long fuzz_iters = 3000;

static void check_accepted(const settings *s, const origin *seen, const char *path) {
  for (size_t i = 0; i < CC_NOPTS; i++) {
    if (seen[i].file != path) continue;
    const copt *o = &cc_options[i];
    const void *p = (const char *)s + o->off;
    uint64_t hi = o->max ? o->max : o->type == T_U64 ? UINT64_MAX : o->type == T_U32 ? UINT32_MAX : 1000000000u, v;
    double d;
    switch (o->type) {
    case T_STR:
      if (strnlen(p, o->size) >= o->size || (o->check && o->check(p))) abort();
      break;
    case T_BOOL:
      if (*(const int *)p != 0 && *(const int *)p != 1) abort();
      break;
    case T_U32:
    case T_U64:
    case T_INT:
      v = o->type == T_U32 ? *(const uint32_t *)p : o->type == T_U64 ? *(const uint64_t *)p : (uint64_t)*(const int *)p;
      if (o->type == T_INT && *(const int *)p < 0) abort();
      if (v < o->min || v > hi) abort();
      break;
    case T_F32:
    case T_F64:
      /* The bound is 1e30, or the float nearest it for a float option. */
      d = o->type == T_F32 ? (double)*(const float *)p : *(const double *)p;
      if (!(d >= 0) || d > (o->type == T_F32 ? (double)(float)1e30 : 1e30)) abort();
      break;
    }
  }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  static FILE *devnull;
  if (!devnull && !(devnull = fopen("/dev/null", "w"))) abort();
  const char *path = fix_write("coordinator.yaml", data, size);
  settings s;
  origin seen[CC_NOPTS];
  cc_defaults(&s);
  memset(seen, 0, sizeof seen);
  /* The refusals are one line each on stderr: not wanted 5000 times.
   * Sanitizer reports go to fd 2 directly and still show. */
  FILE *saved = stderr;
  stderr = devnull;
  int rc = cc_load_config(&s, path, seen);
  stderr = saved;
  if (rc != 0 && rc != 2) abort();
  if (rc == 0) check_accepted(&s, seen, path);
  return 0;
}

void fuzz_seed(uint8_t **data, size_t *size) {
  static const char s[] = "# a comment\n"
                          "federation: fed.example\n"
                          "listen: \"[::1]:7070\"\n"
                          "state: /var/lib/fedc/state\n"
                          "model: 784-64-10\n"
                          "rounds: 300\n"
                          "cohort-fraction: 0.5\n"
                          "pickup_timeout_ms: 30000\n"
                          "round.timeout.ms: 120000\n"
                          "lr: 0.05\n"
                          "server_optimizer: adam\n"
                          "aggregator: trimmed_mean\n"
                          "agg-trim: 0.1\n"
                          "secagg: yes\n"
                          "secagg_neighbors: 4\n"
                          "unmask-threads: 2\n"
                          "log: 'debug'\n"
                          "log-format: json\n";
  *size = sizeof s - 1;
  *data = malloc(*size);
  memcpy(*data, s, *size);
}
