/*
 * cli.h - the `fedc` subcommands. main() in fedc.c only dispatches; each
 * subcommand lives in its own cmd_*.c file, parses its own flags, prints
 * --help, and returns the process exit status (0 ok, 1 failure, 2 usage).
 */
#ifndef FEDC_CLI_H
#define FEDC_CLI_H

int cmd_pki(int argc, char **argv);
int cmd_coordinator(int argc, char **argv);
int cmd_client(int argc, char **argv);
int cmd_status(int argc, char **argv);
int cmd_rounds(int argc, char **argv);
int cmd_model(int argc, char **argv);
int cmd_round(int argc, char **argv);
int cmd_sim(int argc, char **argv);
int cmd_secagg_params(int argc, char **argv);
int cmd_dp_budget(int argc, char **argv);
int cmd_audit(int argc, char **argv);
int cmd_version(int argc, char **argv);

#endif
