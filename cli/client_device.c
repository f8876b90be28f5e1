/*
 * client_device.c - what `fedc client` reports about its device at every
 * check-in (eligibility, protocol 1.8; client.h fedc_device_state).
 *
 * Two sources, so a device owner can script it: fixed flags (--charging,
 * --unmetered, --idle, --battery PERCENT, --free-storage BYTES), and a file
 * (--device-state FILE) that a script keeps current (e.g. from
 * /sys/class/power_supply), re-read before every check-in, one "key=value"
 * per line:
 *     charging=1
 *     unmetered=1
 *     idle=0
 *     battery=83
 *     free_storage=12000000000
 * Keys the file sets override the flags; '#' starts a comment. A file that
 * cannot be read or has a bad line is reported as nothing this time (the
 * coordinator treats the device as one that meets no requirement) with a
 * warning naming the line, never a crash or a stale value. Without any
 * flag or file nothing is reported at all (as before 1.8).
 */
#include "cli/client_device.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/log.h"

#define MOD "client"

static int parse_u64(const char *s, unsigned long long max, unsigned long long *out) {
  if (!s || !*s || *s == '-') return -1;
  char *end;
  errno = 0;
  unsigned long long v = strtoull(s, &end, 10);
  while (*end == ' ' || *end == '\t' || *end == '\r' || *end == '\n') end++;
  if (errno || *end || v > max) return -1;
  *out = v;
  return 0;
}

/* key=value into d; 0, or -1 for an unknown key or bad value. */
static int set_key(fedc_device_state *d, const char *key, const char *val) {
  unsigned long long v;
  if (!strcmp(key, "charging") || !strcmp(key, "unmetered") || !strcmp(key, "idle")) {
    if (parse_u64(val, 1, &v)) return -1;
    if (key[0] == 'c') d->charging = (int)v;
    else if (key[0] == 'u') d->unmetered = (int)v;
    else d->idle = (int)v;
    return 0;
  }
  if (!strcmp(key, "battery")) {
    if (parse_u64(val, 100, &v)) return -1;
    d->battery_percent = (uint32_t)v;
    return 0;
  }
  if (!strcmp(key, "free_storage") || !strcmp(key, "free-storage")) {
    if (parse_u64(val, UINT64_MAX, &v)) return -1;
    d->free_storage_bytes = v;
    return 0;
  }
  return -1;
}

int cli_device_option(cli_device *d, const char *name, const char *arg) {
  d->given = 1;
  if (!strcmp(name, "device-state")) {
    d->file = arg;
    return 0;
  }
  if (!arg) return set_key(&d->fixed, name, "1"); /* a switch */
  if (set_key(&d->fixed, name, arg) != 0) {
    fprintf(stderr, "fedc client: --%s: bad value '%s' (%s)\n", name, arg,
            !strcmp(name, "battery") ? "a percentage 0..100" : "a number of bytes");
    return 1;
  }
  return 0;
}

int cli_device_state(void *ctx, fedc_device_state *out) {
  const cli_device *d = ctx;
  fedc_device_state s = d->fixed;
  if (d->file) {
    FILE *f = fopen(d->file, "r");
    if (!f) {
      FC_WARN(MOD, "--device-state %s: %s: reporting no device state", d->file, strerror(errno));
      return -1;
    }
    char line[256];
    int n = 0, bad = 0;
    while (!bad && fgets(line, sizeof line, f)) {
      n++;
      char *hash = strchr(line, '#');
      if (hash) *hash = '\0';
      char *k = line;
      while (*k == ' ' || *k == '\t') k++;
      if (!*k || *k == '\n' || *k == '\r') continue;
      char *eq = strchr(k, '=');
      if (!eq) {
        bad = n;
        break;
      }
      *eq = '\0';
      for (char *t = eq - 1; t >= k && (*t == ' ' || *t == '\t'); t--) *t = '\0';
      char *v = eq + 1;
      while (*v == ' ' || *v == '\t') v++;
      if (set_key(&s, k, v) != 0) bad = n;
    }
    fclose(f);
    if (bad) {
      FC_WARN(MOD, "--device-state %s:%d: not key=value with a known key (charging, unmetered, idle, battery, "
                   "free_storage) and a valid value: reporting no device state", d->file, bad);
      return -1;
    }
  }
  *out = s;
  return 0;
}
