/*
 * cmd_aggregator.c - `fedc aggregator`: one aggregator of the aggregator tier
 * (issue 23; coordinator/aggr.h). Parses flags, starts the aggregator, waits
 * for SIGINT/SIGTERM, stops it (revoking its etcd lease, so the leader drops
 * it at once rather than a TTL later).
 *
 * May call: coordinator/aggr.h, cli_common.h. Called by: fedc.c.
 */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/cli.h"
#include "cli/cli_common.h"
#include "common/fileutil.h"
#include "common/log.h"
#include "coordinator/aggr.h"
#include "fedc/error.h"
#include "transport/transport.h"

static void usage(FILE *f) {
  fprintf(f,
          "usage: fedc aggregator --coordinator HOST:PORT[,HOST:PORT...] --etcd ENDPOINTS\n"
          "                       (--pki DIR --name NAME | --ca F --cert F --key F) [options]\n"
          "\n"
          "Take the uploads of the clients the leader assigns to this aggregator, check\n"
          "them as the coordinator does, and hand the leader their FedAvg partial sum.\n"
          "The leader runs with --etcd ... --aggregator-tier; this aggregator registers\n"
          "in the same etcd under its own lease (<prefix>/aggregators/NAME). Plaintext\n"
          "FedAvg only. The certificate: fedc pki issue --role aggregator --name NAME.\n"
          "\n"
          "  --listen HOST:PORT     where clients connect (default 127.0.0.1:7071; port 0: any)\n"
          "  --advertise HOST:PORT  the address clients are told (default: --listen's, bound port)\n"
          "  --coordinator LIST     the coordinator replicas (default 127.0.0.1:7070)\n"
          "  --pki DIR --name NAME  DIR/ca.crt and DIR/aggregator-NAME.{crt,key}\n"
          "  --ca/--cert/--key F    explicit TLS files (override --pki)\n"
          "  --etcd ENDPOINTS       etcd host:port[,host:port...]\n"
          "  --etcd-prefix P        key prefix of the federation (default /fedc/<federation>)\n"
          "  --etcd-lease-ttl S     seconds our registration outlives us (default 5)\n"
          "  --etcd-ca/--etcd-cert/--etcd-key F   mutual TLS to etcd (plaintext on loopback only)\n"
          "  --upload-slots N       uploads staged at once (memory N x model; default 4)\n"
          "  --threads N            threads for blocking calls (uploads are event-driven and need none;\n"
          "                         default 2, kept for older command lines)\n"
          "  --stream-idle-ms MS    an upload silent this long is cut off; the grace before the rate below (30000)\n"
          "  --min-transfer-bps N   an upload slower than this on average after the grace is cut off (default\n"
          "                         65536, the coordinator's; 0 = none)\n"
          "  --metrics-listen H:P   serve /metrics, /healthz and /readyz here (HTTP; loopback unless\n"
          "                         --metrics-public)\n"
          "  --metrics-public       let --metrics-listen be off loopback (put it on a network only Prometheus reaches)\n"
          "  --max-connections N    client connections at once (default: the fd limit - headroom)\n"
          "  --connections-per-address N   ... from one address (default 256)\n"
          "  --byzantine-add N      research (tests): add N to every model word of our masked partial sums,\n"
          "                         as a lying aggregator would (the leader must refuse the round)\n"
          "  --port-file FILE       write the bound port here once listening\n"
          "  --log LEVEL            error | warn | info | debug (default info)\n");
}

enum { O_LISTEN = 2000, O_ADV, O_ETCD, O_PREFIX, O_TTL, O_ECA, O_ECERT, O_EKEY, O_SLOTS, O_THREADS, O_PORTF, O_LOG,
       O_IDLE, O_MINBPS, O_MLISTEN, O_MPUB, O_MAXCONN, O_PERADDR, O_BYZADD };

int cmd_aggregator(int argc, char **argv) {
  static const struct option opts[] = {CLI_TLS_LONGOPTS,
                                       {"listen", required_argument, 0, O_LISTEN},
                                       {"advertise", required_argument, 0, O_ADV},
                                       {"etcd", required_argument, 0, O_ETCD},
                                       {"etcd-prefix", required_argument, 0, O_PREFIX},
                                       {"etcd-lease-ttl", required_argument, 0, O_TTL},
                                       {"etcd-ca", required_argument, 0, O_ECA},
                                       {"etcd-cert", required_argument, 0, O_ECERT},
                                       {"etcd-key", required_argument, 0, O_EKEY},
                                       {"upload-slots", required_argument, 0, O_SLOTS},
                                       {"threads", required_argument, 0, O_THREADS},
                                       {"stream-idle-ms", required_argument, 0, O_IDLE},
                                       {"min-transfer-bps", required_argument, 0, O_MINBPS},
                                       {"metrics-listen", required_argument, 0, O_MLISTEN},
                                       {"metrics-public", no_argument, 0, O_MPUB},
                                       {"max-connections", required_argument, 0, O_MAXCONN},
                                       {"connections-per-address", required_argument, 0, O_PERADDR},
                                       {"byzantine-add", required_argument, 0, O_BYZADD},
                                       {"port-file", required_argument, 0, O_PORTF},
                                       {"log", required_argument, 0, O_LOG},
                                       {"help", no_argument, 0, 'h'},
                                       {0, 0, 0, 0}};
  const char *prog = "fedc aggregator";
  fc_aggr_cfg cfg;
  fc_aggr_cfg_defaults(&cfg);
  cli_tls tls;
  cli_tls_init(&tls);
  char port_file[512] = "";
  unsigned long long v;
  int c;
  opterr = 0;
  optind = 1;
  while ((c = getopt_long(argc, argv, ":h", opts, NULL)) != -1) {
    if (cli_tls_opt(&tls, c, optarg)) continue;
    int bad = 0;
    switch (c) {
    case O_LISTEN: bad = snprintf(cfg.listen, sizeof cfg.listen, "%s", optarg) >= (int)sizeof cfg.listen; break;
    case O_ADV: bad = snprintf(cfg.advertise, sizeof cfg.advertise, "%s", optarg) >= (int)sizeof cfg.advertise; break;
    case O_ETCD: bad = snprintf(cfg.etcd, sizeof cfg.etcd, "%s", optarg) >= (int)sizeof cfg.etcd; break;
    case O_PREFIX:
      bad = snprintf(cfg.etcd_prefix, sizeof cfg.etcd_prefix, "%s", optarg) >= (int)sizeof cfg.etcd_prefix;
      break;
    case O_ECA: bad = snprintf(cfg.etcd_ca, sizeof cfg.etcd_ca, "%s", optarg) >= (int)sizeof cfg.etcd_ca; break;
    case O_ECERT: bad = snprintf(cfg.etcd_cert, sizeof cfg.etcd_cert, "%s", optarg) >= (int)sizeof cfg.etcd_cert; break;
    case O_EKEY: bad = snprintf(cfg.etcd_key, sizeof cfg.etcd_key, "%s", optarg) >= (int)sizeof cfg.etcd_key; break;
    case O_PORTF: bad = snprintf(port_file, sizeof port_file, "%s", optarg) >= (int)sizeof port_file; break;
    case O_LOG: fc_log_set_level(fc_log_parse_level(optarg)); break;
    case O_TTL:
      if (cli_parse_u64(prog, "--etcd-lease-ttl", optarg, &v) || v < 1 || v > 3600) {
        fprintf(stderr, "%s: --etcd-lease-ttl must be 1..3600 seconds\n", prog);
        return 2;
      }
      cfg.etcd_lease_ttl = (int)v;
      break;
    case O_SLOTS:
      if (cli_parse_u64(prog, "--upload-slots", optarg, &v) || v < 1 || v > 1024) {
        fprintf(stderr, "%s: --upload-slots must be 1..1024\n", prog);
        return 2;
      }
      cfg.upload_slots = (int)v;
      break;
    case O_THREADS:
      if (cli_parse_u64(prog, "--threads", optarg, &v) || v < 1 || v > 1024) {
        fprintf(stderr, "%s: --threads must be 1..1024\n", prog);
        return 2;
      }
      cfg.threads = (int)v;
      break;
    case O_IDLE:
      if (cli_parse_u64(prog, "--stream-idle-ms", optarg, &v) || v < 100 || v > 3600000) {
        fprintf(stderr, "%s: --stream-idle-ms must be 100..3600000\n", prog);
        return 2;
      }
      cfg.stream_idle_ms = (int)v;
      break;
    case O_MINBPS:
      if (cli_parse_u64(prog, "--min-transfer-bps", optarg, &v) || v > (1ull << 40)) {
        fprintf(stderr, "%s: --min-transfer-bps must be 0..2^40\n", prog);
        return 2;
      }
      cfg.min_transfer_bps = v;
      break;
    case O_MLISTEN:
      bad = snprintf(cfg.metrics_listen, sizeof cfg.metrics_listen, "%s", optarg) >= (int)sizeof cfg.metrics_listen;
      break;
    case O_MPUB: cfg.metrics_public = 1; break;
    case O_BYZADD:
      if (cli_parse_u64(prog, "--byzantine-add", optarg, &v) || v > UINT32_MAX) {
        fprintf(stderr, "%s: --byzantine-add must be 0..2^32-1\n", prog);
        return 2;
      }
      cfg.byzantine_add = (uint32_t)v;
      break;
    case O_MAXCONN:
    case O_PERADDR:
      if (cli_parse_u64(prog, c == O_MAXCONN ? "--max-connections" : "--connections-per-address", optarg, &v) ||
          v > 10000000 || (c == O_PERADDR && v < 1)) {
        fprintf(stderr, "%s: %s must be %s..10000000\n", prog,
                c == O_MAXCONN ? "--max-connections" : "--connections-per-address", c == O_MAXCONN ? "0" : "1");
        return 2;
      }
      if (c == O_MAXCONN) cfg.max_connections = (int)v;
      else
        cfg.connections_per_address = (int)v;
      break;
    case 'h': usage(stdout); return 0;
    default: return cli_option_error(prog, c, argv, opts);
    }
    if (bad) {
      fprintf(stderr, "%s: %s is too long\n", prog, argv[optind - 1]);
      return 2;
    }
  }
  if (optind < argc) {
    fprintf(stderr, "%s: unexpected argument %s\n", prog, argv[optind]);
    return 2;
  }
  if (tls.insecure) {
    fprintf(stderr, "%s: --insecure-for-testing is not supported: an aggregator proves its identity to clients\n",
            prog);
    return 2;
  }
  if (!cfg.etcd[0]) {
    fprintf(stderr, "%s: --etcd is required (the aggregator registers there)\n", prog);
    return 2;
  }
  if (cli_tls_resolve(&tls, "aggregator", prog)) return 2;
  snprintf(cfg.ca, sizeof cfg.ca, "%s", tls.ca);
  snprintf(cfg.cert, sizeof cfg.cert, "%s", tls.cert);
  snprintf(cfg.key, sizeof cfg.key, "%s", tls.key);
  if (tls.coordinator[0]) snprintf(cfg.coordinator, sizeof cfg.coordinator, "%s", tls.coordinator);
  if (cli_stop_signals_install() != 0) {
    fprintf(stderr, "%s: cannot install signal handlers\n", prog);
    return 1;
  }
  fc_transport_init();
  fc_aggr *a = NULL;
  char err[600];
  int rc = fc_aggr_start(&cfg, &a, err, sizeof err);
  if (rc != FEDC_OK) {
    fprintf(stderr, "%s: %s\n", prog, err);
    fc_transport_shutdown();
    return 1;
  }
  int code = 0;
  if (port_file[0]) {
    char text[16];
    int len = snprintf(text, sizeof text, "%d\n", fc_aggr_port(a));
    if (fc_write_file_atomic(port_file, text, (size_t)len, 0644, 0) != FEDC_OK) {
      fprintf(stderr, "%s: cannot write port file %s\n", prog, port_file);
      code = 1;
    }
  }
  while (!code) {
    int sig = cli_stop_wait(-1);
    if (sig > 0) {
      FC_INFO("aggregator", "signal %d: stopping", sig);
      break;
    }
  }
  fc_aggr_stop(a);
  fc_transport_shutdown();
  return code;
}
