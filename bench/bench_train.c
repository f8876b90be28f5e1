/*
 * bench_train.c - speed of the built-in trainer and of the BLAS layer it
 * sits on. Prints one JSON line per result (STYLE.md, "Benchmarks"):
 *   - sgemm GFLOP/s of the linked kernels (fc_sgemm: OpenBLAS, or the
 *     portable ones in a FEDC_BLAS=reference build), of the portable kernels
 *     and of the plain-C yardstick, on the three GEMM shapes one batch-32
 *     step of the 784-200-200-10 MLP runs in layer 1;
 *   - centralised training of that MLP on Fashion-MNIST (lr 0.05, batch 32,
 *     1 epoch, same init and seed) at 1 and 2 OpenBLAS threads: examples/s,
 *     final-epoch training loss, test accuracy.
 * Usage: bench_train [fashion-mnist-dir]   (default: $FEDC_FMNIST_DIR or the
 * Debian dataset-fashion-mnist path). Not a test: nothing here asserts.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "client/data.h"
#include "common/mlp.h"
#include "common/blas.h"
#include "fedc/error.h"

#ifndef FEDC_BLAS_NAME
#define FEDC_BLAS_NAME "openblas"
#endif

static double now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

typedef void (*gemm_fn)(int, int, int, int, int, int, float, const float *, int, const float *, int, float, float *,
                        int);

/* GFLOP/s of one GEMM shape, repeated for at least min_s seconds. */
static double gemm_rate(gemm_fn f, int ta, int tb, int m, int n, int k, double min_s) {
  float *a = malloc((size_t)m * k * sizeof *a), *b = malloc((size_t)k * n * sizeof *b);
  float *c = malloc((size_t)m * n * sizeof *c);
  for (size_t i = 0; i < (size_t)m * k; i++) a[i] = (float)(i % 17) * 0.01f;
  for (size_t i = 0; i < (size_t)k * n; i++) b[i] = (float)(i % 13) * 0.01f;
  int lda = ta == FC_TRANS ? m : k, ldb = tb == FC_TRANS ? k : n;
  long reps = 0;
  double t0 = now(), t;
  do {
    f(FC_ROW_MAJOR, ta, tb, m, n, k, 1.0f, a, lda, b, ldb, 0.0f, c, n);
    reps++;
    t = now() - t0;
  } while (t < min_s);
  free(a);
  free(b);
  free(c);
  return 2.0 * m * n * (double)k * reps / t / 1e9;
}

int main(int argc, char **argv) {
  const char *dir = argc > 1 ? argv[1] : NULL;
  char err[512];
  fc_blas_set_threads(1);

  /* Layer-1 shapes of a batch-32 step: forward, weight gradient. */
  static const struct {
    const char *what;
    int ta, tb, m, n, k;
  } shapes[] = {
      {"fc1_forward", FC_NO_TRANS, FC_TRANS, 32, 200, 784},
      {"fc1_weight_grad", FC_TRANS, FC_NO_TRANS, 200, 784, 32},
      {"fc2_input_grad", FC_NO_TRANS, FC_NO_TRANS, 32, 200, 200},
  };
  for (size_t i = 0; i < sizeof shapes / sizeof *shapes; i++) {
    double fast = gemm_rate(fc_sgemm, shapes[i].ta, shapes[i].tb, shapes[i].m, shapes[i].n, shapes[i].k, 0.3);
    double port = gemm_rate(fc_port_sgemm, shapes[i].ta, shapes[i].tb, shapes[i].m, shapes[i].n, shapes[i].k, 0.3);
    double ref = gemm_rate(fc_ref_sgemm, shapes[i].ta, shapes[i].tb, shapes[i].m, shapes[i].n, shapes[i].k, 0.3);
    printf("{\"bench\":\"sgemm\",\"blas\":\"%s\",\"shape\":\"%s\",\"m\":%d,\"n\":%d,\"k\":%d,\"threads\":1,"
           "\"linked_gflops\":%.2f,\"portable_gflops\":%.2f,\"reference_gflops\":%.3f,\"speedup\":%.1f}\n",
           FEDC_BLAS_NAME, shapes[i].what, shapes[i].m, shapes[i].n, shapes[i].k, fast, port, ref, fast / ref);
    fflush(stdout);
  }

  fc_dataset train = {0}, test = {0};
  int rc = fc_fmnist_load(dir, 1, &train, err, sizeof err);
  if (!rc) rc = fc_fmnist_load(dir, 0, &test, err, sizeof err);
  if (rc) {
    fprintf(stderr, "bench_train: %s (%s); skipping the training benchmark\n", err, fedc_strerror(rc));
    fc_dataset_free(&train);
    return 0;
  }

  fc_mlp m;
  fc_mlp_parse("784-200-200-10", &m);
  size_t np = fc_mlp_nparams(&m);
  float *init = malloc(np * sizeof *init), *params = malloc(np * sizeof *params);
  fc_mlp_init(&m, 1, init);
  fc_mlp_ws *ws = fc_mlp_ws_create(&m, 32);
  fc_train_opts o;
  fc_train_opts_init(&o);
  o.lr = 0.05f;
  o.batch = 32;
  o.epochs = 1;
  o.seed = 1;
  /* A FEDC_BLAS=reference build is single-threaded. */
  int max_threads = strcmp(FEDC_BLAS_NAME, "reference") == 0 ? 1 : 2;
  for (int threads = 1; threads <= max_threads; threads++) {
    fc_blas_set_threads(threads);
    memcpy(params, init, np * sizeof *params);
    double loss = 0, acc = 0, test_loss = 0, t0 = now();
    rc = fc_mlp_train(&m, ws, params, &train, NULL, train.n, &o, &loss);
    double secs = now() - t0;
    if (!rc) rc = fc_mlp_eval(&m, ws, params, &test, NULL, 0, &acc, &test_loss);
    if (rc) {
      fprintf(stderr, "bench_train: %s\n", fedc_strerror(rc));
      break;
    }
    printf("{\"bench\":\"train_mlp\",\"blas\":\"" FEDC_BLAS_NAME "\",\"model\":\"784-200-200-10\",\"dataset\":\"fashion-mnist\",\"batch\":32,"
           "\"lr\":0.05,\"epochs\":1,\"threads\":%d,\"seconds\":%.3f,\"examples_per_s\":%.0f,"
           "\"train_loss\":%.4f,\"test_loss\":%.4f,\"test_accuracy\":%.4f}\n",
           threads, secs, train.n / secs, loss, test_loss, acc);
    fflush(stdout);
  }
  fc_mlp_ws_destroy(ws);
  free(init);
  free(params);
  fc_dataset_free(&train);
  fc_dataset_free(&test);
  return rc ? 1 : 0;
}
