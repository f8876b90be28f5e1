/*
 * cmd_version.c - `fedc version`: the fedc version, the wire protocol
 * version, and the gRPC core and OpenSSL versions this binary runs with.
 * Calls nothing on the network; neither library needs initialising for
 * its version string. Exit 0, or 2 on a usage error.
 */
#include <getopt.h>
#include <jansson.h>
#include <stdio.h>

#include <grpc/grpc.h>
#include <openssl/crypto.h>

#include "cli/cli.h"
#include "cli/cli_common.h"
#include "transport/transport.h"

enum { OPT_JSON = 2000 };

int cmd_version(int argc, char **argv) {
  const char *prog = "fedc version";
  int json = 0;
  static const struct option longopts[] = {
      {"json", no_argument, 0, OPT_JSON}, {"help", no_argument, 0, 'h'}, {0, 0, 0, 0}};
  opterr = 0;
  int c;
  while ((c = getopt_long(argc, argv, ":h", longopts, NULL)) != -1) {
    switch (c) {
    case OPT_JSON: json = 1; break;
    case 'h':
      printf("Usage: fedc version [--json]\n\n"
             "Print the fedc version, the wire protocol version, and the gRPC core and\n"
             "OpenSSL versions this binary runs with.\n\n"
             "Options:\n"
             "  --json                   one JSON object\n"
             "  -h, --help               this help\n");
      return 0;
    default: return cli_option_error(prog, c, argv, longopts);
    }
  }
  if (optind < argc) {
    fprintf(stderr, "%s: unexpected argument '%s'\n", prog, argv[optind]);
    return 2;
  }
  /* Neither call needs gRPC or OpenSSL initialised. */
  const char *grpc_v = grpc_version_string();
  const char *ssl_v = OpenSSL_version(OPENSSL_VERSION);
  if (json) {
    json_t *o = json_object();
    json_object_set_new(o, "fedc", json_string(FEDC_VERSION_STRING));
    json_object_set_new(o, "protocol", json_string(FC_PROTOCOL_VERSION_STRING));
    json_object_set_new(o, "grpc", json_string(grpc_v));
    json_object_set_new(o, "openssl", json_string(ssl_v));
    cli_print_json(o);
  } else {
    printf("fedc %s\nprotocol %s\ngrpc core %s\n%s\n", FEDC_VERSION_STRING, FC_PROTOCOL_VERSION_STRING, grpc_v, ssl_v);
  }
  return 0;
}
