/*
 * cmd_sim.c - `fedc sim`: a whole federation on this machine.
 *
 * Makes a throwaway PKI, splits Fashion-MNIST into one small IDX file per
 * client (so each client process holds only its own examples), starts the
 * coordinator and N clients as separate processes on 127.0.0.1 over mutual
 * TLS, and, as an admin, follows the rounds: each new model version is
 * fetched (hash-verified) and evaluated on the 10,000-image test set. One
 * JSON line per round on stdout, progress on stderr, and in --out:
 *   rounds.csv, curve.png (gnuplot), logs/, pki/, data/, state/ (every model).
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "cli/cli.h"
#include "cli/cli_common.h"
#include "client/data.h"
#include "client/partition.h"
#include "client/trainer_mlp.h"
#include "common/blas.h"
#include "common/clock.h"
#include "common/log.h"
#include "crypto/pki.h"
#include "fedc/error.h"
#include "fedc/v1/fedc.pb-c.h"
#include "transport/tensor_stream.h"
#include "transport/transport.h"

typedef struct sim_opts {
  char out[512];
  unsigned long long clients, cohort, rounds, epochs, batch, seed, min_updates, round_timeout_ms, poll_ms;
  double lr, momentum, alpha, clip_norm;
  char partition[32];
  char model[64];
  const char *data_dir;
  int json;
} sim_opts;

static volatile sig_atomic_t g_interrupted;
static void on_signal(int sig) {
  (void)sig;
  g_interrupted = 1;
}

static int mkdirp(const char *p) { return mkdir(p, 0700) == 0 || errno == EEXIST ? 0 : -1; }

static void be32(uint8_t *p, uint32_t v) {
  p[0] = (uint8_t)(v >> 24);
  p[1] = (uint8_t)(v >> 16);
  p[2] = (uint8_t)(v >> 8);
  p[3] = (uint8_t)v;
}

/* Write examples idx[0..n) of d as uncompressed IDX (the loader reads plain files too). */
static int write_idx_part(const char *img_path, const char *lbl_path, const fc_dataset *d, const uint32_t *idx,
                          uint32_t n) {
  FILE *fi = fopen(img_path, "wb"), *fl = fopen(lbl_path, "wb");
  int rc = -1;
  if (!fi || !fl) goto out;
  uint8_t h[16];
  be32(h, 0x803);
  be32(h + 4, n);
  be32(h + 8, 28);
  be32(h + 12, d->dim / 28);
  if (d->dim != 784) {
    be32(h + 8, 1);
    be32(h + 12, d->dim);
  }
  fwrite(h, 1, 16, fi);
  be32(h, 0x801);
  be32(h + 4, n);
  fwrite(h, 1, 8, fl);
  uint8_t *row = malloc(d->dim);
  if (!row) goto out;
  for (uint32_t i = 0; i < n; i++) {
    const float *x = d->x + (size_t)idx[i] * d->dim;
    for (uint32_t j = 0; j < d->dim; j++) row[j] = (uint8_t)(x[j] * 255.0f + 0.5f);
    fwrite(row, 1, d->dim, fi);
    fputc(d->y[idx[i]], fl);
  }
  free(row);
  rc = ferror(fi) || ferror(fl) ? -1 : 0;
out:
  if (fi && fclose(fi) != 0) rc = -1;
  if (fl && fclose(fl) != 0) rc = -1;
  return rc;
}

static pid_t spawn(char *const argv[], const char *log_path) {
  pid_t pid = fork();
  if (pid != 0) return pid;
  int fd = open(log_path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
  if (fd >= 0) {
    dup2(fd, 1);
    dup2(fd, 2);
    close(fd);
  }
  int nul = open("/dev/null", O_RDONLY);
  if (nul >= 0) dup2(nul, 0);
  sigset_t none;
  sigemptyset(&none);
  sigprocmask(SIG_SETMASK, &none, NULL);
  execv("/proc/self/exe", argv);
  _exit(127);
}

static int read_port(const char *path) {
  FILE *f = fopen(path, "r");
  int port = 0;
  if (f) {
    if (fscanf(f, "%d", &port) != 1) port = 0;
    fclose(f);
  }
  return port;
}

static void usage(FILE *f) {
  fprintf(f, "Usage: fedc sim [options]\n"
             "Run a federation of N client processes and a coordinator on 127.0.0.1 over mutual TLS\n"
             "on Fashion-MNIST; evaluate each round's global model on the 10,000-image test set.\n\n"
             "  --out DIR            output folder (default fedc-sim-out): rounds.csv, curve.png, logs/, state/\n"
             "  --clients N          client processes (default 20)\n"
             "  --cohort K           clients per round (default 5)\n"
             "  --rounds R           rounds (default 20)\n"
             "  --partition KIND     iid | dirichlet | shards (default dirichlet)\n"
             "  --alpha A            Dirichlet concentration (default 0.5)\n"
             "  --model SPEC         784-200-200-10 (default), logreg, or sizes joined by '-'\n"
             "  --epochs E           local epochs (default 1)\n"
             "  --batch B            batch size (default 32)\n"
             "  --lr X               learning rate (default 0.05)\n"
             "  --momentum X         SGD momentum (default 0)\n"
             "  --clip-norm X        L2 clip norm of updates (default 0 = off)\n"
             "  --min-updates M      updates needed per round (default: the cohort size)\n"
             "  --round-timeout-ms T round deadline (default 60000)\n"
             "  --poll-ms P          client check-in interval while waiting (default 200)\n"
             "  --seed S             seed of the split, the initial model and the cohorts (default 1)\n"
             "  --data-dir DIR       Fashion-MNIST directory (default /usr/share/datasets/fashion-mnist)\n"
             "  --json               one JSON line per round on stdout (default: also a table on stderr)\n");
}

static int parse(int argc, char **argv, sim_opts *o) {
  enum { O_OUT = 1, O_CLIENTS, O_COHORT, O_ROUNDS, O_PART, O_ALPHA, O_MODEL, O_EPOCHS, O_BATCH, O_LR, O_MOM, O_CLIP,
         O_MINUP, O_RTO, O_POLL, O_SEED, O_DATA, O_JSON };
  static const struct option lo[] = {
      {"out", 1, 0, O_OUT},         {"clients", 1, 0, O_CLIENTS},   {"cohort", 1, 0, O_COHORT},
      {"rounds", 1, 0, O_ROUNDS},   {"partition", 1, 0, O_PART},    {"alpha", 1, 0, O_ALPHA},
      {"model", 1, 0, O_MODEL},     {"epochs", 1, 0, O_EPOCHS},     {"batch", 1, 0, O_BATCH},
      {"lr", 1, 0, O_LR},           {"momentum", 1, 0, O_MOM},      {"clip-norm", 1, 0, O_CLIP},
      {"min-updates", 1, 0, O_MINUP}, {"round-timeout-ms", 1, 0, O_RTO}, {"poll-ms", 1, 0, O_POLL},
      {"seed", 1, 0, O_SEED},       {"data-dir", 1, 0, O_DATA},     {"json", 0, 0, O_JSON},
      {"help", 0, 0, 'h'},          {0, 0, 0, 0}};
  memset(o, 0, sizeof *o);
  snprintf(o->out, sizeof o->out, "fedc-sim-out");
  o->clients = 20;
  o->cohort = 5;
  o->rounds = 20;
  o->epochs = 1;
  o->batch = 32;
  o->seed = 1;
  o->round_timeout_ms = 60000;
  o->poll_ms = 200;
  o->lr = 0.05;
  o->alpha = 0.5;
  snprintf(o->partition, sizeof o->partition, "dirichlet");
  snprintf(o->model, sizeof o->model, "784-200-200-10");
  const char *p = "fedc sim";
  int opt, bad = 0;
  optind = 1;
  while (!bad && (opt = getopt_long(argc, argv, "h", lo, NULL)) != -1) {
    switch (opt) {
    case O_OUT: snprintf(o->out, sizeof o->out, "%s", optarg); break;
    case O_CLIENTS: bad = cli_parse_u64(p, "--clients", optarg, &o->clients); break;
    case O_COHORT: bad = cli_parse_u64(p, "--cohort", optarg, &o->cohort); break;
    case O_ROUNDS: bad = cli_parse_u64(p, "--rounds", optarg, &o->rounds); break;
    case O_PART: snprintf(o->partition, sizeof o->partition, "%s", optarg); break;
    case O_ALPHA: bad = cli_parse_double(p, "--alpha", optarg, &o->alpha); break;
    case O_MODEL: snprintf(o->model, sizeof o->model, "%s", optarg); break;
    case O_EPOCHS: bad = cli_parse_u64(p, "--epochs", optarg, &o->epochs); break;
    case O_BATCH: bad = cli_parse_u64(p, "--batch", optarg, &o->batch); break;
    case O_LR: bad = cli_parse_double(p, "--lr", optarg, &o->lr); break;
    case O_MOM: bad = cli_parse_double(p, "--momentum", optarg, &o->momentum); break;
    case O_CLIP: bad = cli_parse_double(p, "--clip-norm", optarg, &o->clip_norm); break;
    case O_MINUP: bad = cli_parse_u64(p, "--min-updates", optarg, &o->min_updates); break;
    case O_RTO: bad = cli_parse_u64(p, "--round-timeout-ms", optarg, &o->round_timeout_ms); break;
    case O_POLL: bad = cli_parse_u64(p, "--poll-ms", optarg, &o->poll_ms); break;
    case O_SEED: bad = cli_parse_u64(p, "--seed", optarg, &o->seed); break;
    case O_DATA: o->data_dir = optarg; break;
    case O_JSON: o->json = 1; break;
    case 'h': usage(stdout); return -1;
    default: usage(stderr); return 2;
    }
  }
  if (bad) return 2;
  if (o->clients < 1 || o->clients > 1000 || o->cohort < 1 || o->cohort > o->clients || o->rounds < 1) {
    fprintf(stderr, "fedc sim: need 1 <= --cohort <= --clients <= 1000 and --rounds >= 1\n");
    return 2;
  }
  if (fc_partition_kind_parse(o->partition) < 0) {
    fprintf(stderr, "fedc sim: unknown --partition '%s' (iid, dirichlet, shards)\n", o->partition);
    return 2;
  }
  if (!o->min_updates) o->min_updates = o->cohort;
  if (o->min_updates > o->clients) {
    /* The coordinator never starts a round with fewer live clients than that. */
    fprintf(stderr, "fedc sim: --min-updates %llu > --clients %llu: no round could ever complete\n", o->min_updates,
            o->clients);
    return 2;
  }
  return 0;
}

/* Prepare PKI and per-client data. */
static int prepare(const sim_opts *o, const fc_mlp *mlp) {
  char p[1024], err[400];
  snprintf(p, sizeof p, "%s/pki", o->out);
  if (access(p, F_OK) == 0) {
    fprintf(stderr, "fedc sim: %s exists: choose a new --out folder (nothing is overwritten)\n", o->out);
    return 2;
  }
  if (mkdirp(o->out) || (snprintf(p, sizeof p, "%s/logs", o->out), mkdirp(p)) ||
      (snprintf(p, sizeof p, "%s/data", o->out), mkdirp(p))) {
    fprintf(stderr, "fedc sim: cannot create %s: %s\n", o->out, strerror(errno));
    return 1;
  }
  fprintf(stderr, "fedc sim: throwaway PKI for %llu clients...\n", o->clients);
  snprintf(p, sizeof p, "%s/pki", o->out);
  if (fc_pki_init(p, "sim", NULL, 0, 30, "ec", err, sizeof err) != FEDC_OK ||
      fc_pki_issue(p, "admin", "sim", NULL, 30, err, sizeof err) != FEDC_OK) {
    fprintf(stderr, "fedc sim: %s\n", err);
    return 1;
  }
  for (unsigned long long i = 0; i < o->clients; i++) {
    char name[32];
    snprintf(name, sizeof name, "c%04llu", i);
    if (fc_pki_issue(p, "client", name, NULL, 30, err, sizeof err) != FEDC_OK) {
      fprintf(stderr, "fedc sim: %s\n", err);
      return 1;
    }
  }
  fprintf(stderr, "fedc sim: splitting Fashion-MNIST (%s) into %llu parts...\n", o->partition, o->clients);
  fc_dataset train;
  memset(&train, 0, sizeof train);
  if (fc_fmnist_load(o->data_dir, 1, &train, err, sizeof err) != 0) {
    fprintf(stderr, "fedc sim: %s (install Debian's dataset-fashion-mnist)\n", err);
    return 1;
  }
  if (train.dim != mlp->sizes[0] || train.classes > mlp->sizes[mlp->nlayers]) {
    fprintf(stderr, "fedc sim: model %s does not fit the data (%u features, %u classes)\n", o->model, train.dim,
            train.classes);
    fc_dataset_free(&train);
    return 2;
  }
  fc_partition_opts po;
  fc_partition_opts_init(&po);
  po.kind = fc_partition_kind_parse(o->partition);
  po.nparts = (uint32_t)o->clients;
  po.alpha = o->alpha;
  po.seed = o->seed;
  uint32_t *owner = malloc(train.n * sizeof *owner), *idx = malloc(train.n * sizeof *idx);
  int rc = 1;
  if (!owner || !idx || fc_partition_assign(train.y, train.n, train.classes, &po, owner) != 0) {
    fprintf(stderr, "fedc sim: partitioning failed\n");
    goto out;
  }
  for (uint32_t part = 0; part < o->clients; part++) {
    uint32_t n = 0;
    for (uint32_t i = 0; i < train.n; i++)
      if (owner[i] == part) idx[n++] = i;
    char img[1100], lbl[1100];
    snprintf(img, sizeof img, "%s/data/c%04u-images.idx", o->out, part);
    snprintf(lbl, sizeof lbl, "%s/data/c%04u-labels.idx", o->out, part);
    if (write_idx_part(img, lbl, &train, idx, n) != 0) {
      fprintf(stderr, "fedc sim: cannot write %s\n", img);
      goto out;
    }
  }
  rc = 0;
out:
  free(owner);
  free(idx);
  fc_dataset_free(&train);
  return rc;
}

typedef struct monitor {
  fc_channel *ch;
  fc_mlp mlp;
  fc_mlp_ws *ws;
  fc_dataset test;
  FILE *csv;
  uint64_t seen_round;
  double t0;
  uint64_t completed;
  uint64_t abandoned;
} monitor;

/* Fetch a version as admin and evaluate it on the test set. */
static int eval_version(monitor *m, uint64_t version, double *acc, double *loss, char *err, size_t errlen) {
  Fedc__V1__GetModelRequest req = FEDC__V1__GET_MODEL_REQUEST__INIT;
  req.version = version;
  fc_ccall *call = NULL;
  fc_status st;
  memset(&st, 0, sizeof st);
  int rc = fc_ccall_start(m->ch, "/fedc.v1.Admin/GetModel", FC_RPC_SERVER_STREAM, &req.base, 60000, &call, &st);
  if (rc == FEDC_OK) {
    fc_model_spec spec;
    float *w = NULL;
    uint64_t total = 0;
    rc = fc_tensor_stream_recv(call, 1ull << 32, NULL, &spec, &w, &total, NULL, &st);
    fc_ccall_destroy(call);
    if (rc == FEDC_OK) {
      if (total != fc_mlp_nparams(&m->mlp) * sizeof(float)) rc = FEDC_ERR_SHAPE;
      else
        rc = fc_mlp_eval(&m->mlp, m->ws, w, &m->test, NULL, m->test.n, acc, loss);
      free(w);
    }
  }
  if (rc != FEDC_OK) snprintf(err, errlen, "%s", st.detail[0] ? st.detail : fedc_strerror(rc));
  return rc;
}

/* Poll the round history; report each new round. Returns rounds completed. */
static int poll_rounds(monitor *m, const sim_opts *o) {
  Fedc__V1__RoundsRequest req = FEDC__V1__ROUNDS_REQUEST__INIT;
  req.limit = 1000;
  ProtobufCMessage *resp = NULL;
  fc_status st;
  if (fc_call_unary(m->ch, "/fedc.v1.Admin/Rounds", &req.base, &fedc__v1__rounds_response__descriptor, &resp, 10000,
                    &st) != FEDC_OK)
    return -1;
  Fedc__V1__RoundsResponse *r = (Fedc__V1__RoundsResponse *)resp;
  for (size_t i = 0; i < r->n_rounds; i++) {
    Fedc__V1__RoundRecord *rec = r->rounds[i];
    if (rec->round <= m->seen_round) continue;
    m->seen_round = rec->round;
    if (strcmp(rec->outcome, "completed") != 0) {
      m->abandoned++;
      fprintf(stderr, "fedc sim: round %llu abandoned: %s\n", (unsigned long long)rec->round, rec->reason);
      continue;
    }
    m->completed++;
    double acc = 0, loss = 0;
    char err[300];
    if (eval_version(m, rec->version, &acc, &loss, err, sizeof err) != FEDC_OK) {
      fprintf(stderr, "fedc sim: cannot evaluate model v%llu: %s\n", (unsigned long long)rec->version, err);
      continue;
    }
    double secs = (double)(rec->ended_unix_ms - rec->started_unix_ms) / 1000.0;
    unsigned long long bytes = (unsigned long long)(rec->bytes_in + rec->bytes_out);
    cli_print_json(json_pack("{s:I,s:I,s:I,s:f,s:f,s:f,s:i,s:I,s:f,s:f}", "round", (json_int_t)m->completed, "round_id",
                             (json_int_t)rec->round, "version", (json_int_t)rec->version, "accuracy", acc, "loss",
                             loss, "train_loss", (double)rec->mean_train_loss, "participants",
                             (int)rec->participants, "bytes", (json_int_t)bytes, "seconds", secs, "elapsed_s",
                             fc_mono_s() - m->t0));
    fprintf(m->csv, "%llu,%llu,%.6f,%.6f,%.6f,%u,%llu,%.3f\n", (unsigned long long)m->completed,
            (unsigned long long)rec->version, acc, loss, (double)rec->mean_train_loss, rec->participants, bytes,
            secs);
    fflush(m->csv);
    if (!o->json)
      fprintf(stderr, "\rfedc sim: round %llu/%llu  accuracy %.2f%%  loss %.4f  (%u clients, %.2fs)      \n",
              (unsigned long long)m->completed, o->rounds, acc * 100, loss, rec->participants, secs);
  }
  protobuf_c_message_free_unpacked(resp, NULL);
  return (int)m->completed;
}

static void plot(const sim_opts *o) {
  char cmd[4096];
  snprintf(cmd, sizeof cmd,
           "command -v gnuplot >/dev/null 2>&1 && gnuplot -e \"set terminal png size 900,500; "
           "set output '%s/curve.png'; set datafile separator ','; set key bottom right; "
           "set xlabel 'round'; set ylabel 'test accuracy'; set y2label 'test loss'; set ytics nomirror; "
           "set y2tics; set grid; plot '%s/rounds.csv' every ::1 using 1:3 with lines lw 2 title 'accuracy', "
           "'' every ::1 using 1:4 axes x1y2 with lines title 'loss'\" 2>/dev/null",
           o->out, o->out);
  if (system(cmd) != 0) fprintf(stderr, "fedc sim: gnuplot not available: no curve.png (rounds.csv is there)\n");
}

int cmd_sim(int argc, char **argv) {
  sim_opts o;
  int rc = parse(argc, argv, &o);
  if (rc) return rc < 0 ? 0 : rc;
  fc_mlp mlp;
  if (fc_mlp_parse(o.model, &mlp) != 0) {
    fprintf(stderr, "fedc sim: bad --model '%s'\n", o.model);
    return 2;
  }
  if ((rc = prepare(&o, &mlp)) != 0) return rc;
  signal(SIGINT, on_signal);
  signal(SIGTERM, on_signal);
  signal(SIGPIPE, SIG_IGN);
  fc_blas_set_threads(1);

  char pki[1024], state[1024], portf[1024], logp[1100], buf[16][64];
  snprintf(pki, sizeof pki, "%s/pki", o.out);
  snprintf(state, sizeof state, "%s/state", o.out);
  snprintf(portf, sizeof portf, "%s/coordinator.port", o.out);
  snprintf(logp, sizeof logp, "%s/logs/coordinator.log", o.out);
  snprintf(buf[0], 64, "%llu", o.rounds);
  snprintf(buf[1], 64, "%llu", o.cohort);
  snprintf(buf[2], 64, "%llu", o.min_updates);
  snprintf(buf[3], 64, "%g", o.lr);
  snprintf(buf[4], 64, "%llu", o.epochs);
  snprintf(buf[5], 64, "%llu", o.batch);
  snprintf(buf[6], 64, "%g", o.momentum);
  snprintf(buf[7], 64, "%g", o.clip_norm);
  snprintf(buf[8], 64, "%llu", o.seed);
  snprintf(buf[9], 64, "%llu", o.round_timeout_ms);
  snprintf(buf[10], 64, "%llu", o.poll_ms);
  snprintf(buf[11], 64, "%llu", o.clients);
  char *cargv[] = {"fedc", "coordinator", "--federation", "sim", "--pki", pki, "--listen", "127.0.0.1:0",
                   "--port-file", portf, "--state", state, "--model", o.model, "--init-seed", buf[8],
                   "--rounds", buf[0], "--cohort", buf[1], "--min-updates", buf[2], "--min-clients", buf[11],
                   "--lr", buf[3], "--epochs", buf[4], "--batch", buf[5], "--momentum", buf[6],
                   "--clip-norm", buf[7], "--seed", buf[8], "--round-timeout-ms", buf[9], "--pickup-timeout-ms",
                   buf[9], "--poll-ms", buf[10], "--threads", "8", NULL};
  pid_t coord = spawn(cargv, logp);
  pid_t *kids = calloc(o.clients, sizeof *kids);
  monitor m;
  memset(&m, 0, sizeof m);
  int port = 0;
  for (int i = 0; i < 300 && !port && !g_interrupted; i++) {
    usleep(100000);
    port = read_port(portf);
    if (waitpid(coord, NULL, WNOHANG) == coord) {
      coord = 0; /* reaped: its pid may be reused, never signal it later */
      port = 0;
      break;
    }
  }
  if (!port || !kids) {
    fprintf(stderr, "fedc sim: coordinator did not start: see %s\n", logp);
    rc = 1;
    goto out;
  }
  char addr[64];
  snprintf(addr, sizeof addr, "127.0.0.1:%d", port);
  fprintf(stderr, "fedc sim: coordinator on %s; starting %llu clients...\n", addr, o.clients);
  for (unsigned long long i = 0; i < o.clients && !g_interrupted; i++) {
    char name[32], data[2200], clog[1100];
    snprintf(name, sizeof name, "c%04llu", i);
    snprintf(data, sizeof data, "idx:%s/data/c%04llu-images.idx,%s/data/c%04llu-labels.idx", o.out, i, o.out, i);
    snprintf(clog, sizeof clog, "%s/logs/client-%s.log", o.out, name);
    char *av[] = {"fedc", "client", "--pki", pki, "--name", name, "--coordinator", addr, "--data", data, "--model",
                  o.model, "--max-retries", "20", NULL};
    kids[i] = spawn(av, clog);
  }
  /* Follow the rounds as admin. */
  fc_transport_init();
  fc_channel_opts co;
  fc_channel_opts_init(&co);
  char ca[1100], cert[1100], key[1100], err[400];
  snprintf(ca, sizeof ca, "%s/ca.crt", pki);
  snprintf(cert, sizeof cert, "%s/admin-sim.crt", pki);
  snprintf(key, sizeof key, "%s/admin-sim.key", pki);
  co.target = addr;
  co.tls.ca = ca;
  co.tls.cert = cert;
  co.tls.key = key;
  if (fc_channel_create(&co, &m.ch, err, sizeof err) != FEDC_OK) {
    fprintf(stderr, "fedc sim: %s\n", err);
    rc = 1;
    goto out_grpc;
  }
  if (fc_fmnist_load(o.data_dir, 0, &m.test, err, sizeof err) != 0) {
    fprintf(stderr, "fedc sim: %s\n", err);
    rc = 1;
    goto out_grpc;
  }
  m.mlp = mlp;
  m.ws = fc_mlp_ws_create(&mlp, 500);
  char csvp[1100];
  snprintf(csvp, sizeof csvp, "%s/rounds.csv", o.out);
  m.csv = fopen(csvp, "w");
  if (!m.ws || !m.csv) {
    rc = 1;
    goto out_grpc;
  }
  fprintf(m.csv, "round,version,accuracy,loss,train_loss,participants,bytes,seconds\n");
  m.t0 = fc_mono_s();
  double last_progress = 0, last_poll_ok = m.t0;
  rc = 0;
  while (!g_interrupted && m.completed < o.rounds) {
    usleep(200000);
    if (waitpid(coord, NULL, WNOHANG) == coord) {
      fprintf(stderr, "fedc sim: coordinator exited unexpectedly: see %s\n", logp);
      coord = 0;
      rc = 1;
      break;
    }
    /* Clients that exited (a permanent error, or out of retries) cannot come
     * back: with fewer alive than a round needs, the run can never finish. */
    unsigned long long alive = 0;
    for (unsigned long long i = 0; i < o.clients; i++) {
      if (kids[i] > 0 && waitpid(kids[i], NULL, WNOHANG) == kids[i]) kids[i] = 0;
      alive += kids[i] > 0;
    }
    if (alive < o.min_updates) {
      fprintf(stderr, "fedc sim: only %llu client processes left, a round needs %llu: see %s/logs/\n", alive,
              o.min_updates, o.out);
      rc = 1;
      break;
    }
    /* Give up only after a minute without one successful poll (a single slow
     * reply late in a long run is not "cannot reach"). */
    if (poll_rounds(&m, &o) >= 0) last_poll_ok = fc_mono_s();
    else if (fc_mono_s() - last_poll_ok > 60) {
      fprintf(stderr, "fedc sim: cannot reach the coordinator as admin\n");
      rc = 1;
      break;
    }
    if (o.json && fc_mono_s() - last_progress > 5) {
      fprintf(stderr, "fedc sim: %llu/%llu rounds, %.0fs\n", (unsigned long long)m.completed, o.rounds,
              fc_mono_s() - m.t0);
      last_progress = fc_mono_s();
    }
  }
  if (g_interrupted) {
    fprintf(stderr, "fedc sim: interrupted after %llu rounds\n", (unsigned long long)m.completed);
    rc = 130;
  }
  if (m.completed >= o.rounds) fprintf(stderr, "fedc sim: %llu rounds in %.1fs; results in %s (rounds.csv, curve.png)\n",
                                       (unsigned long long)m.completed, fc_mono_s() - m.t0, o.out);
out_grpc:
  if (m.csv) fclose(m.csv);
  fc_mlp_ws_destroy(m.ws);
  fc_dataset_free(&m.test);
  fc_channel_destroy(m.ch);
  fc_transport_shutdown();
out:
  for (unsigned long long i = 0; kids && i < o.clients; i++)
    if (kids[i] > 0) kill(kids[i], SIGTERM);
  if (coord > 0) kill(coord, SIGTERM);
  for (unsigned long long i = 0; kids && i < o.clients; i++)
    if (kids[i] > 0) waitpid(kids[i], NULL, 0);
  if (coord > 0) waitpid(coord, NULL, 0);
  free(kids);
  if (m.completed) plot(&o);
  return rc;
}
