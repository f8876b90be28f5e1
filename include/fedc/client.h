/*
 * fedc/client.h - the fedc client runtime, for programs that hold training
 * data on a device and take part in a federation.
 *
 * The program supplies a trainer (callbacks that train on its own data);
 * the runtime does everything else: checks in with the coordinator over
 * mutual TLS, fetches the global model when selected (verifying its
 * SHA-256), calls the trainer, computes the update (delta = trained - global),
 * clips it to the announced L2 norm, and uploads it as a chunk stream.
 * Training data never leaves the device.
 *
 * Threading: fedc_client_run() blocks the calling thread and calls the
 * trainer on that thread. fedc_client_stop() may be called from any thread
 * (or a signal-handling thread): it cancels the network call in flight, and
 * run() returns FEDC_ERR_STOPPED as soon as that call (or a running trainer
 * callback) returns and the coordinator was told this client leaves (one
 * call of at most 2 s, see fedc_client_run). All other functions must not be
 * called concurrently on the same handle.
 *
 * Ownership: strings in options are copied by fedc_client_create; the
 * trainer's ctx stays owned by the caller and must outlive the handle.
 * Buffers passed to callbacks are owned by the runtime and valid only during
 * the call.
 *
 * Global state: the library initialises gRPC (reference counted) and never
 * changes OpenBLAS threads, signal handlers or log routing.
 *
 * ABI: structs only ever grow at their end, and no field is removed or
 * reordered. Structs the runtime fills and hands to the program
 * (fedc_train_config, fedc_eval_config, fedc_event) stay readable by a
 * program built against an older header. Structs the program fills
 * (fedc_client_options, fedc_trainer) are read by the runtime at their
 * current size: a program built against an older header must be rebuilt,
 * and stays source-compatible if it fills them with fedc_client_options_init
 * and designated initializers (`fedc_trainer t = {.ctx = c, .train = f};`),
 * so fields it does not know are 0/NULL, which always means "off"
 * (positional initializers still work but warn under -Wextra when a field
 * is appended).
 */
#ifndef FEDC_CLIENT_H
#define FEDC_CLIENT_H

#include <stddef.h>
#include <stdint.h>

#include "fedc/error.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct fedc_client fedc_client;

/* One tensor of the model; parameters are one flat float32 array, tensors
 * back to back in this order (PyTorch nn.Linear layout for built-ins). */
typedef struct fedc_tensor_info {
  const char *name;
  uint32_t ndim;
  const uint64_t *shape;
  size_t offset; /* in floats */
  size_t numel;
} fedc_tensor_info;

/* ABI level of the library: 1 had fedc_train_config up to `tensors`; 2 adds
 * struct_size and prox_mu. A program that reads a field of level N checks
 * fedc_client_abi_version() >= N once at start-up (or simply calls it: a
 * library older than level 2 lacks the symbol, so the program fails to load
 * instead of reading past the end of a smaller struct). */
#define FEDC_CLIENT_ABI_VERSION 2
FEDC_API int fedc_client_abi_version(void);

/* What the coordinator asked for this round.
 *
 * ABI rule: the library allocates this struct and fills every field; callers
 * only read it, through the pointer the train callback receives (never by
 * value, never sizeof). New fields are only ever appended, after struct_size.
 * So a trainer built against an older header reads a prefix that is still
 * laid out as it expects, and a trainer built against a newer header finds
 * whether a field is there with FEDC_TRAIN_CONFIG_HAS(cfg, field) (true only
 * if the library's struct_size covers it). */
typedef struct fedc_train_config {
  uint64_t round;
  uint64_t model_version;
  float learning_rate;
  uint32_t local_epochs;
  uint32_t batch_size;
  float momentum;
  uint64_t seed;          /* per client and round */
  float clip_norm;        /* applied by the runtime, for information */
  size_t n_tensors;
  const fedc_tensor_info *tensors;
  /* ---- ABI level 2 ---- */
  size_t struct_size;     /* sizeof(fedc_train_config) in the library that filled it */
  /* A failing train may write one sentence here (NUL-terminated, at most
   * error_len bytes, "" on entry): the runtime reports it in last_error or
   * the REJECTED event, instead of a bare "trainer failed". */
  char *error;
  size_t error_len;
  /* FedProx (Li et al. 2020, eq. 2): minimise the local loss plus
   * prox_mu / 2 * ||w - w_global||^2 (gradient prox_mu * (w - w_global),
   * w_global the weights handed to train). 0 = plain FedAvg local training. */
  float prox_mu;
} fedc_train_config;

#define FEDC_TRAIN_CONFIG_HAS(cfg, field)                                                                    \
  (fedc_client_abi_version() >= 2 &&                                                                         \
   (cfg)->struct_size >= offsetof(fedc_train_config, field) + sizeof((cfg)->field))

/* What train returns: 0 on success; FEDC_TRAIN_UNTRAINABLE when this trainer
 * can never train the coordinator's model (tensor layout, input size or
 * classes not what it and its data have): permanent, fedc_client_run then
 * returns FEDC_ERR_SHAPE with cfg->error as last_error, since every later
 * round would fail the same way; anything else skips this round only (a
 * transient failure) and the client goes on. */
#define FEDC_TRAIN_UNTRAINABLE (-20)

enum fedc_train_output {
  FEDC_OUTPUT_WEIGHTS = 0, /* `out` holds the new weights (runtime computes the delta) */
  FEDC_OUTPUT_DELTA = 1,   /* `out` holds new - old already */
};

/* Federated evaluation (fedc_trainer.evaluate_stats): what an evaluation
 * task asks for. The runtime bounds what is reported as the coordinator
 * says: at most max_examples examples count (larger totals are scaled down
 * to that many, keeping the means), each example's loss and metric values
 * count in [0, value_max]. */
typedef struct fedc_eval_config {
  uint64_t round;          /* the round whose model is evaluated */
  uint64_t model_version;
  uint64_t max_examples;
  double value_max;
  size_t n_metrics;        /* named metrics asked for, in this order */
  const char *const *metric_names;
  size_t n_tensors;        /* the model's tensors, as for train */
  const fedc_tensor_info *tensors;
  char *error;             /* as in fedc_train_config */
  size_t error_len;
  size_t n_classes;        /* (added in 1.13) classes to count predictions of; 0 = none asked */
} fedc_eval_config;

typedef struct fedc_eval_metric {
  double sum;              /* over the examples it covers, of a per-example value in [0, value_max] */
  uint64_t examples;       /* examples it covers; 0 = this trainer does not compute it */
} fedc_eval_metric;

/* What evaluate_stats reports: totals over the examples it evaluated. */
typedef struct fedc_eval_result {
  uint64_t num_examples;   /* > 0 */
  uint64_t correct;        /* of them, classified right (<= num_examples) */
  double loss_sum;         /* the sum of their losses (not the mean) */
  fedc_eval_metric *metrics; /* the config's n_metrics entries, zeroed: fill those it computes */
  /* (added in 1.13) the config's n_classes entries, zeroed (NULL if 0): of the
   * examples, how many the model predicted as each class (argmax). The
   * coordinator's drift check without a reference set compares these
   * between model versions; left at zero, this client's are not counted. */
  uint64_t *class_counts;
} fedc_eval_result;

typedef struct fedc_trainer {
  void *ctx;
  /* Train from `weights` (n floats, read-only). `out` (n floats) arrives
   * holding a copy of weights; leave new weights or a delta in it and set
   * *output_kind. Set *num_examples (> 0) and *loss (mean training loss:
   * finite, in [0, 1e9]). Return 0 on success, FEDC_TRAIN_UNTRAINABLE to end
   * the run, anything else to skip this round (above). Required. */
  int (*train)(void *ctx, const fedc_train_config *cfg, const float *weights, float *out, size_t n,
               int *output_kind, uint64_t *num_examples, double *loss);
  /* Evaluate `weights` on local data. Optional (NULL). When set, the runtime
   * calls it on each new global model it downloads and reports the result as
   * a FEDC_EVENT_EVALUATED event (nothing leaves the device). */
  int (*evaluate)(void *ctx, const float *weights, size_t n, double *accuracy, double *loss);
  /* Federated evaluation (protocol 1.7). Optional (NULL: the client never
   * takes evaluation tasks). Evaluate `weights` (n floats, the model the
   * task names) on local held-out data and fill *out; return 0, or anything
   * else to skip this task (the coordinator goes on without this client's
   * results). The totals are sent to the coordinator, under secure
   * aggregation only masked (it learns the cohort's sums, never this
   * client's). Added after `evaluate`: fedc_trainer is allocated by the
   * caller and copied by fedc_client_create, so a program built against a
   * header without this field must be rebuilt against this one (SOVERSION 0:
   * the trainer struct's size is not yet frozen; fedc_train_config, which the
   * library allocates, keeps the prefix rule above). */
  int (*evaluate_stats)(void *ctx, const fedc_eval_config *cfg, const float *weights, size_t n,
                        fedc_eval_result *out);
} fedc_trainer;

enum fedc_event_kind {
  FEDC_EVENT_WAITING = 1,   /* checked in, not selected */
  FEDC_EVENT_TASK = 2,      /* selected for a round */
  FEDC_EVENT_TRAINED = 3,   /* trainer finished */
  FEDC_EVENT_UPLOADED = 4,  /* update accepted */
  FEDC_EVENT_REJECTED = 5,  /* update refused by the coordinator (detail says why) */
  FEDC_EVENT_RETRY = 6,     /* transient network failure; backing off */
  FEDC_EVENT_DONE = 7,      /* federation finished */
  FEDC_EVENT_EVALUATED = 8, /* trainer->evaluate ran on the new global model */
  FEDC_EVENT_EVAL_REPORTED = 9, /* an evaluation task's results were accepted: round (the model's),
                                   num_examples, correct, loss_sum, accuracy, loss as reported */
};

typedef struct fedc_event {
  int kind;
  uint64_t round;
  uint64_t model_version;
  uint64_t num_examples;
  double loss;
  double update_norm;   /* after clipping */
  double clip_scale;    /* 1 if not clipped */
  double accuracy;      /* EVALUATED: local accuracy of the global model (loss in `loss`) */
  uint64_t bytes_in, bytes_out;
  const char *detail;
  uint64_t correct;     /* EVAL_REPORTED: the totals this client reported (after the task's bounds) */
  double loss_sum;
} fedc_event;

/* Eligibility (protocol 1.8): what the device says about itself before each
 * check-in; the coordinator selects only devices that meet its federation's
 * policy (e.g. charging and on an unmetered network) and answers the others
 * "not eligible: <reason>" with a time to check in again.
 *
 * ABI rule: the library allocates this struct, zeroes it and passes it to
 * fedc_client_options.device_state to fill; fields are only ever appended,
 * so a program built against an older header fills a prefix and the rest
 * stays 0, which means "unknown" (and fails any minimum the coordinator
 * asks for, never more). */
typedef struct fedc_device_state {
  int charging;                /* 1: on external power */
  int unmetered;               /* 1: on an unmetered network (e.g. Wi-Fi, not cellular) */
  int idle;                    /* 1: not in use by its owner */
  uint32_t battery_percent;    /* 1..100 (a device without a battery: 100); 0 = unknown */
  uint64_t free_storage_bytes; /* 0 = unknown */
} fedc_device_state;

typedef struct fedc_client_options {
  const char *coordinator;       /* "host:port" */
  const char *ca, *cert, *key;   /* PEM files: federation CA, our certificate and key */
  int insecure_for_testing;      /* no TLS; refused unless coordinator is loopback */
  const char *insecure_identity; /* "client/<name>" in insecure mode */
  uint64_t max_rounds;           /* return after this many accepted updates; 0 = until DONE */
  uint32_t min_backoff_ms;       /* transient failures: jittered exponential backoff */
  uint32_t max_backoff_ms;
  uint32_t max_retries;          /* consecutive transient failures before giving up (0 = forever) */
  int call_timeout_ms;           /* per call (model streams included) */
  uint32_t chunk_bytes;          /* upload chunk size (default 1 MiB) */
  uint64_t max_model_bytes;      /* refuse larger models (default 1 GiB) */
  uint64_t num_examples_hint;    /* reported at check-in */
  /* Every model is checked before training: its manifest must be signed by
   * the federation's model-signing certificate (role signer, chained to ca)
   * and describe exactly the model received (version, SHA-256, tensors), and
   * its version must not be older than one verified before (a replay). A
   * model that fails is refused and the round skipped. 1 accepts models
   * without a manifest (a coordinator without a signing key); a manifest
   * that is present is still checked. */
  int allow_unsigned_models;
  /* Secure aggregation: every client refuses a round whose Shamir threshold t
   * lets a coordinator that lies about dropouts unmask one client's update by
   * showing two survivor lists (2t <= k + 1, k its neighbours). This raises
   * the floor: also refuse unless such a coordinator would need more than
   * this many of our neighbours colluding with it (2t > k + 1 + this).
   * 0: the base floor only. */
  uint32_t secagg_tolerate_colluders;
  void (*on_event)(void *ctx, const fedc_event *ev); /* progress; may be NULL */
  void *event_ctx;
  /* Eligibility (protocol 1.8; see fedc_device_state). Called on the run
   * thread before every check-in: fill *state and return 0, or return
   * anything else to report nothing this time. NULL: nothing is reported,
   * and the coordinator treats the device as one that meets no requirement
   * (eligible only where the federation requires nothing, its default).
   * A WAIT that says why the device is not eligible arrives as a
   * FEDC_EVENT_WAITING whose detail is "not eligible: <reason>". Appended
   * after event_ctx: fedc_client_options is allocated by the caller and
   * copied by fedc_client_create, so a program built against a header
   * without these fields must be rebuilt against this one (SOVERSION 0, as
   * for fedc_trainer.evaluate_stats); fedc_client_options_init sets them
   * NULL. */
  int (*device_state)(void *ctx, fedc_device_state *state);
  void *device_state_ctx;
} fedc_client_options;

FEDC_API void fedc_client_options_init(fedc_client_options *o);
/* Create a client handle. One rule, success or failure: *out is always
 * written (unless out is NULL) and always passed to fedc_client_destroy()
 * (which accepts NULL) when done with it.
 *   - FEDC_OK: *out is a new handle, ready for fedc_client_run().
 *   - any error (invalid options, unreadable CA/certificate/key, bad TLS
 *     material, ...): *out is still a handle, holding the reason for
 *     fedc_client_last_error(); fedc_client_run() on it returns the same
 *     error without connecting. Only when not even a handle could be
 *     allocated (FEDC_ERR_NOMEM) is *out NULL.
 *     fedc_client *c = NULL;
 *     int rc = fedc_client_create(&o, &t, &c);
 *     if (rc == FEDC_OK) rc = fedc_client_run(c);
 *     if (rc != FEDC_OK) fprintf(stderr, "%s\n", fedc_client_last_error(c));
 *     fedc_client_destroy(c); */
FEDC_API int fedc_client_create(const fedc_client_options *o, const fedc_trainer *trainer, fedc_client **out);
/* Take part in rounds until the federation is done, max_rounds updates were
 * accepted, fedc_client_stop() was called, or a permanent error (TLS,
 * permission, version, FEDC_ERR_SHAPE from an untrainable model). Returns FEDC_OK, FEDC_ERR_STOPPED or the error;
 * fedc_client_last_error() has a sentence about it.
 * The federation is done when the coordinator answers DONE (it answers every
 * client that checks in before it exits): that is the only way a client
 * tells "finished" from "coordinator restarting", so an unreachable
 * coordinator is retried max_retries times (0 = for ever) whatever happened
 * before. On any other return after the coordinator was reached, the runtime
 * tells it this client leaves (best-effort, at most 2 s), so it is neither
 * waited for nor selected again. */
FEDC_API int fedc_client_run(fedc_client *c);
FEDC_API void fedc_client_stop(fedc_client *c);
/* A sentence about the last error on c (never NULL; "" before any). For
 * c == NULL (fedc_client_create out of memory) a fixed sentence saying so. */
FEDC_API const char *fedc_client_last_error(const fedc_client *c);
FEDC_API uint64_t fedc_client_rounds_done(const fedc_client *c);
/* The tensors (names, shapes, offsets into the flat buffer) of the model the
 * runtime holds now: the one handed to the callback in progress. For the
 * evaluate callback, which has no fedc_train_config; train gets the same list
 * in cfg->tensors. Valid until the callback returns. *n = 0 and NULL before a
 * model was fetched. May be called from inside a trainer callback (the same
 * thread as run()). ABI level 2. */
FEDC_API const fedc_tensor_info *fedc_client_model_tensors(const fedc_client *c, size_t *n);
FEDC_API void fedc_client_destroy(fedc_client *c);

#ifdef __cplusplus
}
#endif
#endif
