"""cffi ABI-mode declarations of include/fedc/client.h and the library loader.

ABI mode (ffi.dlopen) needs no compiler at install time: the declarations
below must match the header's layout exactly, field for field. fedc_train_config
is declared up to ABI level 2 (struct_size, error, error_len, prox_mu); those are read
only when the loaded library reports fedc_client_abi_version() >= 2 (see
client.h, "ABI rule"). fedc_trainer ends with evaluate_stats (federated
evaluation, protocol 1.7): the library copies the trainer struct whole, so
this declaration must be exactly the header's. fedc_event's correct and
loss_sum came with it and are read only for EVAL_REPORTED events (kind 9),
which a library without them never sends.

Where the library is found, first match wins:
  1. $FEDC_CLIENT_LIB: the path of libfedc-client.so (or a directory holding it);
  2. the repository's build tree, when this package is used from a checkout
     (<repo>/build/libfedc-client.so, next to python/);
  3. the dynamic loader's search (LD_LIBRARY_PATH, then the installed
     libfedc-client.so.0 from `cmake --install`, via ld.so.cache).
"""
import os

import cffi

CDEF = r"""
typedef struct fedc_client fedc_client;

typedef struct fedc_tensor_info {
  const char *name;
  uint32_t ndim;
  const uint64_t *shape;
  size_t offset;
  size_t numel;
} fedc_tensor_info;

typedef struct fedc_train_config {
  uint64_t round;
  uint64_t model_version;
  float learning_rate;
  uint32_t local_epochs;
  uint32_t batch_size;
  float momentum;
  uint64_t seed;
  float clip_norm;
  size_t n_tensors;
  const fedc_tensor_info *tensors;
  size_t struct_size;
  char *error;
  size_t error_len;
  float prox_mu;
} fedc_train_config;

typedef struct fedc_eval_config {
  uint64_t round;
  uint64_t model_version;
  uint64_t max_examples;
  double value_max;
  size_t n_metrics;
  const char *const *metric_names;
  size_t n_tensors;
  const fedc_tensor_info *tensors;
  char *error;
  size_t error_len;
  size_t n_classes;
} fedc_eval_config;

typedef struct fedc_eval_metric {
  double sum;
  uint64_t examples;
} fedc_eval_metric;

typedef struct fedc_eval_result {
  uint64_t num_examples;
  uint64_t correct;
  double loss_sum;
  fedc_eval_metric *metrics;
  uint64_t *class_counts;
} fedc_eval_result;

typedef struct fedc_trainer {
  void *ctx;
  int (*train)(void *ctx, const fedc_train_config *cfg, const float *weights, float *out, size_t n,
               int *output_kind, uint64_t *num_examples, double *loss);
  int (*evaluate)(void *ctx, const float *weights, size_t n, double *accuracy, double *loss);
  int (*evaluate_stats)(void *ctx, const fedc_eval_config *cfg, const float *weights, size_t n,
                        fedc_eval_result *out);
} fedc_trainer;

typedef struct fedc_event {
  int kind;
  uint64_t round;
  uint64_t model_version;
  uint64_t num_examples;
  double loss;
  double update_norm;
  double clip_scale;
  double accuracy;
  uint64_t bytes_in, bytes_out;
  const char *detail;
  uint64_t correct;
  double loss_sum;
} fedc_event;

typedef struct fedc_device_state {
  int charging;
  int unmetered;
  int idle;
  uint32_t battery_percent;
  uint64_t free_storage_bytes;
} fedc_device_state;

typedef struct fedc_client_options {
  const char *coordinator;
  const char *ca, *cert, *key;
  int insecure_for_testing;
  const char *insecure_identity;
  uint64_t max_rounds;
  uint32_t min_backoff_ms;
  uint32_t max_backoff_ms;
  uint32_t max_retries;
  int call_timeout_ms;
  uint32_t chunk_bytes;
  uint64_t max_model_bytes;
  uint64_t num_examples_hint;
  int allow_unsigned_models;
  uint32_t secagg_tolerate_colluders;
  void (*on_event)(void *ctx, const fedc_event *ev);
  void *event_ctx;
  /* eligibility (1.8): the library's options_init and create read the whole
   * struct, so the layout must match client.h even where Python leaves it NULL */
  int (*device_state)(void *ctx, fedc_device_state *state);
  void *device_state_ctx;
} fedc_client_options;

const char *fedc_strerror(int err);
void fedc_client_options_init(fedc_client_options *o);
int fedc_client_create(const fedc_client_options *o, const fedc_trainer *trainer, fedc_client **out);
int fedc_client_run(fedc_client *c);
void fedc_client_stop(fedc_client *c);
const char *fedc_client_last_error(const fedc_client *c);
uint64_t fedc_client_rounds_done(const fedc_client *c);
void fedc_client_destroy(fedc_client *c);
int fedc_client_abi_version(void);
const fedc_tensor_info *fedc_client_model_tensors(const fedc_client *c, size_t *n);
"""

ffi = cffi.FFI()
ffi.cdef(CDEF)

LIB_NAME = "libfedc-client.so"


def find_library():
    """The path (or soname) that will be loaded, by the order in the module doc."""
    env = os.environ.get("FEDC_CLIENT_LIB")
    if env:
        path = os.path.join(env, LIB_NAME) if os.path.isdir(env) else env
        if not os.path.exists(path):
            raise OSError("FEDC_CLIENT_LIB=%s: no such file" % env)
        return path
    repo = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    build = os.path.join(repo, "build", LIB_NAME)
    if os.path.exists(build):
        return build
    return LIB_NAME + ".0"


_lib = None
_abi = None


def lib():
    """The loaded library (loaded on first use, so importing fedc never fails for want of it)."""
    global _lib, _abi
    if _lib is None:
        path = find_library()
        try:
            loaded = ffi.dlopen(path)
        except OSError as e:
            raise OSError(
                "cannot load the fedc client library (%s): %s; set FEDC_CLIENT_LIB to its path, build it "
                "(cmake --build build) or install it (cmake --install)" % (path, e)) from None
        try:
            _abi = int(loaded.fedc_client_abi_version())
        except AttributeError:  # a library from before ABI level 2
            _abi = 1
        _lib = loaded
    return _lib


def abi_version():
    lib()
    return _abi
