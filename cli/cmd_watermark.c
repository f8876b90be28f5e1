/*
 * cmd_watermark.c - `fedc watermark`: the key of the global model's watermark
 * and the test of a model file against it (coordinator/watermark.h).
 *
 *   fedc watermark keygen --out FILE
 *       a fresh 32-byte key as 64 hex digits, in a new file of mode 0600
 *       (never over an existing one): what `fedc coordinator --watermark-key`
 *       reads under the rule for every private key file.
 *   fedc watermark verify MODEL --key FILE [--threshold P] [--json]
 *       the key's trigger-set accuracy of MODEL (a float32 safetensors file
 *       of a built-in MLP, e.g. `fedc model get`'s, or a stolen copy) and the
 *       probability of reaching it by chance (watermark.h says why the
 *       binomial tail at 1/classes is exact for any model made without the
 *       key). Exit 0 if that probability is below the threshold (default
 *       1e-9: the watermark is there), 1 if not or on an error, 2 on usage.
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli/cli.h"
#include "cli/cli_common.h"
#include "common/mlp.h"
#include "common/safetensors.h"
#include "coordinator/watermark.h"
#include "crypto/sa_crypto.h"
#include "crypto/sha256.h"
#include "fedc/error.h"

#define DEFAULT_THRESHOLD 1e-9

static void usage(FILE *f) {
  fprintf(f, "Usage: fedc watermark keygen --out FILE\n"
             "       fedc watermark verify MODEL --key FILE [--threshold P] [--json]\n\n"
             "keygen: write a new watermark key (32 random bytes as 64 hex digits, mode 0600) for\n"
             "  `fedc coordinator --watermark-key FILE`. Keep it private and outside the state directory.\n"
             "verify: the trigger-set accuracy of MODEL (float32 safetensors of a built-in MLP) under the\n"
             "  key, and the probability that a model made without the key scores as high (binomial tail\n"
             "  at chance 1/classes). Exit 0 if it is below P (default 1e-9): the watermark is there;\n"
             "  1 if not, or on an error; 2 on a usage error.\n"
             "  --json  one JSON object on stdout\n");
}

/* "3.2e-17", or "10^-412.3" past what a double holds. */
static const char *p_text(double log10_p, char *buf, size_t len) {
  if (log10_p > -300) snprintf(buf, len, "%.2g", pow(10, log10_p));
  else
    snprintf(buf, len, "10^%.1f", log10_p);
  return buf;
}

static int keygen(int argc, char **argv) {
  const char *prog = "fedc watermark keygen", *out = NULL;
  static const struct option longopts[] = {{"out", required_argument, 0, 'o'}, {"help", no_argument, 0, 'h'},
                                           {0, 0, 0, 0}};
  int c;
  opterr = 0;
  optind = 1;
  while ((c = getopt_long(argc, argv, ":h", longopts, NULL)) != -1) {
    if (c == 'o') out = optarg;
    else if (c == 'h') {
      usage(stdout);
      return 0;
    } else {
      return cli_option_error(prog, c, argv, longopts);
    }
  }
  if (!out || optind != argc) {
    fprintf(stderr, "%s: --out FILE is required, and nothing else (see --help)\n", prog);
    return 2;
  }
  uint8_t key[FC_WM_KEY_LEN];
  char hex[2 * FC_WM_KEY_LEN + 2];
  int rc = 1;
  if (fc_random_bytes(key, sizeof key) != FEDC_OK) {
    fprintf(stderr, "%s: no randomness\n", prog);
    goto out;
  }
  fc_hex(key, sizeof key, hex);
  size_t n = strlen(hex);
  hex[n++] = '\n';
  /* A new file only: an existing key is never replaced (the models it
   * watermarked would lose their proof). */
  int fd = open(out, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
  if (fd < 0) {
    fprintf(stderr, "%s: cannot create %s: %s\n", prog, out, strerror(errno));
    goto out;
  }
  int ok = write(fd, hex, n) == (ssize_t)n && fsync(fd) == 0;
  ok &= close(fd) == 0;
  if (!ok) {
    fprintf(stderr, "%s: cannot write %s: %s\n", prog, out, strerror(errno));
    unlink(out);
    goto out;
  }
  fprintf(stderr, "%s: wrote %s (keep it private; the coordinator reads it with --watermark-key)\n", prog, out);
  rc = 0;
out:
  fc_wipe(key, sizeof key);
  fc_wipe(hex, sizeof hex);
  return rc;
}

static int verify(int argc, char **argv) {
  const char *prog = "fedc watermark verify", *keyfile = NULL;
  enum { O_KEY = 1, O_JSON, O_THRESHOLD };
  static const struct option longopts[] = {{"key", required_argument, 0, O_KEY},
                                           {"json", no_argument, 0, O_JSON},
                                           {"threshold", required_argument, 0, O_THRESHOLD},
                                           {"help", no_argument, 0, 'h'},
                                           {0, 0, 0, 0}};
  double threshold = DEFAULT_THRESHOLD;
  int json = 0, c;
  opterr = 0;
  optind = 1;
  while ((c = getopt_long(argc, argv, ":h", longopts, NULL)) != -1) {
    switch (c) {
    case O_KEY: keyfile = optarg; break;
    case O_JSON: json = 1; break;
    case O_THRESHOLD:
      if (cli_parse_double(prog, "--threshold", optarg, &threshold)) return 2;
      if (!(threshold > 0 && threshold <= 1)) {
        fprintf(stderr, "%s: --threshold must be in (0, 1], got '%s'\n", prog, optarg);
        return 2;
      }
      break;
    case 'h': usage(stdout); return 0;
    default: return cli_option_error(prog, c, argv, longopts);
    }
  }
  if (optind != argc - 1 || !keyfile) {
    fprintf(stderr, "%s: give one MODEL file and --key FILE (see --help)\n", prog);
    return 2;
  }
  const char *file = argv[optind];
  fc_model_spec spec;
  float *params = NULL;
  fc_mlp mlp;
  uint8_t key[FC_WM_KEY_LEN];
  char err[700] = "", why[300];
  uint32_t correct = 0, total = 0;
  double log10_p = 0;
  int rc = fc_safetensors_read(file, &spec, &params, NULL, (uint64_t)FC_MODEL_MAX_PARAMS * 4, why, sizeof why);
  if (rc != FEDC_OK) snprintf(err, sizeof err, "%s", why);
  else if ((rc = fc_mlp_from_spec(&spec, &mlp, why, sizeof why)) != FEDC_OK)
    snprintf(err, sizeof err, "%s: not a model the built-in MLP code runs: %s", file, why);
  else if ((rc = fc_wm_key_read(keyfile, key, err, sizeof err)) == FEDC_OK) {
    rc = fc_wm_check(&mlp, params, key, &correct, &total, &log10_p);
    fc_wipe(key, sizeof key);
    if (rc != FEDC_OK) snprintf(err, sizeof err, "%s: cannot run the trigger set: %s", file, fedc_strerror(rc));
  }
  free(params);
  if (rc != FEDC_OK) {
    if (json) cli_print_json(json_pack("{s:b,s:s,s:s}", "ok", 0, "file", file, "error", err));
    fprintf(stderr, "%s: %s\n", prog, err);
    return 1;
  }
  uint32_t classes = mlp.sizes[mlp.nlayers];
  int present = log10_p < log10(threshold);
  char pbuf[48], tbuf[48];
  if (json) {
    json_t *o = json_pack("{s:b,s:s,s:I,s:I,s:f,s:I,s:f,s:f,s:f,s:f,s:b}", "ok", 1, "file", file, "triggers",
                          (json_int_t)total, "correct", (json_int_t)correct, "accuracy", (double)correct / total,
                          "classes", (json_int_t)classes, "chance", 1.0 / classes, "p_value", pow(10, log10_p),
                          "log10_p_value", log10_p, "threshold", threshold, "watermarked", present);
    cli_print_json(o);
  } else {
    printf("%s: trigger-set accuracy %u/%u (%.1f%%; chance %.1f%%): probability by chance p = %s; %s (threshold "
           "%s)\n",
           file, correct, total, 100.0 * correct / total, 100.0 / classes, p_text(log10_p, pbuf, sizeof pbuf),
           present ? "the key's watermark is there" : "no watermark of this key shown", p_text(log10(threshold),
           tbuf, sizeof tbuf));
  }
  return present ? 0 : 1;
}

int cmd_watermark(int argc, char **argv) {
  if (argc >= 2 && strcmp(argv[1], "keygen") == 0) return keygen(argc - 1, argv + 1);
  if (argc >= 2 && strcmp(argv[1], "verify") == 0) return verify(argc - 1, argv + 1);
  if (argc >= 2 && (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0)) {
    usage(stdout);
    return 0;
  }
  fprintf(stderr, "fedc watermark: keygen or verify (see fedc watermark --help)\n");
  return 2;
}
