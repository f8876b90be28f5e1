/*
 * client_device.h - `fedc client`'s device state for eligibility (protocol
 * 1.8): the --charging/--unmetered/--idle/--battery/--free-storage flags and
 * the --device-state FILE a device owner's script keeps current. Internal
 * to the CLI (cmd_client.c).
 */
#ifndef FEDC_CLI_CLIENT_DEVICE_H
#define FEDC_CLI_CLIENT_DEVICE_H

#include "fedc/client.h"

typedef struct cli_device {
  int given;               /* any device flag or a file: the state is reported */
  fedc_device_state fixed; /* from the flags */
  const char *file;        /* re-read before every check-in; its keys override the flags */
} cli_device;

/* One option ("charging", "unmetered", "idle", "battery", "free-storage",
 * "device-state") with its argument (NULL for the switches): 0, or 1 after
 * printing a one-line error. */
int cli_device_option(cli_device *d, const char *name, const char *arg);
/* fedc_client_options.device_state, ctx a cli_device. */
int cli_device_state(void *ctx, fedc_device_state *out);

#endif
