/*
 * cmd_coordinator_int.h - shared by cli/cmd_coordinator*.c only: the
 * settings of `fedc coordinator`, the option rows, where a value came from,
 * and the functions the three files call across (cmd_coordinator.c ->
 * cmd_coordinator_yaml.c -> cmd_coordinator_opts.c, one way).
 */
#ifndef FEDC_CLI_CMD_COORDINATOR_INT_H
#define FEDC_CLI_CMD_COORDINATOR_INT_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "coordinator/coordinator.h"

typedef enum { T_STR, T_U32, T_U64, T_F32, T_F64, T_INT, T_BOOL } opt_type;

/* A string option's check: NULL if `v` is fine, else what is allowed (shown
 * after the refusal). */
typedef const char *(*str_check)(const char *v);

typedef struct copt {
  const char *name;
  opt_type type;
  size_t off;      /* offset in struct settings */
  size_t size;     /* for strings */
  const char *help;
  uint64_t min, max; /* numbers: allowed range; max 0 = the type's own range */
  str_check check;   /* strings: NULL = any value that fits */
} copt;

typedef struct settings {
  fc_coord_cfg c;
  char pki[512];
  char model[128];
  char init_model[512];
  char model_key_file[512];
  uint64_t init_seed;
  char port_file[512];
  char log[16];
  char log_format[8];
  int grace_ms;
  int blas_threads;
  int exit_when_done;
  uint32_t drain_ms;
  char mode[8];        /* sync | async (engine_async.c) */
  char staleness[48];  /* const | poly[:A] | hinge[:A:B], each optionally ,fedbuff */
  char etcd[1024], etcd_prefix[256]; /* replicas on etcd (cmd_coordinator_ha.c) */
  int etcd_lease_ttl, etcd_quorum_hold;
  char etcd_ca[512], etcd_cert[512], etcd_key[512];
} settings;

/* Where an option's value came from: file == NULL and line == 0 if never set,
 * file == NULL and line != 0 for a flag. */
typedef struct origin {
  const char *file;
  size_t line;
} origin;

/* Rows of cc_options: a constant so arrays can be sized by it (no VLA). */
#define CC_NOPTS 160

/* ---- cmd_coordinator_opts.c ---- */
extern const copt cc_options[CC_NOPTS];
int cc_find_opt(const char *name);
const char *cc_origin_text(origin o, char *buf, size_t n);
const char *cc_shown(const char *v, char *buf, size_t n);
int cc_apply(settings *s, int i, const char *val, origin from);
void cc_usage(FILE *f, const settings *d);
void cc_defaults(settings *s);

/* ---- cmd_coordinator_ha.c: --etcd, one replica of several (returns the exit code) ---- */
int cc_run_replica(settings *s, const fc_model_spec *spec, const float *init, int (*write_port)(const char *, int));

/* ---- cmd_coordinator_yaml.c ---- */
int cc_load_config(settings *s, const char *path, origin *seen);

#endif
