/*
 * cli.h - the `fedc` subcommands. main() in fedc.c only dispatches; each
 * subcommand lives in its own cmd_*.c file, parses its own flags, prints
 * --help, and returns the process exit status (0 ok, 1 failure, 2 usage).
 */
#ifndef FEDC_CLI_H
#define FEDC_CLI_H

int cmd_pki(int argc, char **argv);
int cmd_coordinator(int argc, char **argv);
int cmd_aggregator(int argc, char **argv); /* cmd_aggregator.c */
int cmd_client(int argc, char **argv);
int cmd_status(int argc, char **argv);
int cmd_rounds(int argc, char **argv);
int cmd_model(int argc, char **argv);
int cmd_round(int argc, char **argv);
int cmd_sim(int argc, char **argv);
int cmd_secagg_params(int argc, char **argv);
int cmd_dp_budget(int argc, char **argv);
int cmd_audit(int argc, char **argv);
int cmd_watermark(int argc, char **argv);
int cmd_version(int argc, char **argv);
int cmd_clients(int argc, char **argv);
int cmd_ha(int argc, char **argv); /* cmd_ha.c: `fedc ha verify` */
/* `fedc model verify` (cmd_model_verify.c); `fedc model` dispatches to it. */
int cmd_model_verify(int argc, char **argv);

#include <stddef.h>
#include <stdint.h>

#include "common/manifest.h"
/* A downloaded model checked as a client checks one (client.h): the manifest
 * is signed by a signer of the CA in ca_path, names the CA's federation, and
 * describes this model (its version too if check_version). signer gets
 * "spiffe://<fed>/signer/<name>". */
int model_manifest_check(const char *ca_path, const fc_signed *man, int check_version, uint64_t version,
                         const uint8_t *sha, const fc_model_spec *spec, uint64_t bytes, fc_manifest *out, char *signer,
                         size_t signer_len, char *err, size_t errlen);

/* An admin subcommand of one unary call (cmd_admin.c): parses the shared
 * admin options (--help prints usage), calls method with req and returns -1
 * with *resp (caller frees with protobuf_c_message_free_unpacked) and *json
 * set, or the exit status. */
#include <stdio.h>
#include <jansson.h>
#include <protobuf-c/protobuf-c.h>
int cli_admin_unary(const char *prog, int argc, char **argv, void (*usage)(FILE *), const char *method,
                    const ProtobufCMessage *req, const ProtobufCMessageDescriptor *desc, ProtobufCMessage **resp,
                    int *json);
/* A round record's anomaly statistics as JSON (cmd_clients.c). */
struct Fedc__V1__RoundAnomaly;
json_t *cli_anomaly_json(const struct Fedc__V1__RoundAnomaly *a);
/* ... and its model drift on the coordinator's reference set (cmd_clients.c). */
struct Fedc__V1__RoundDrift;
json_t *cli_drift_json(const struct Fedc__V1__RoundDrift *d);

#endif
