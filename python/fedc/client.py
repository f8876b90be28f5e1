"""fedc.Client: a federation client whose trainer is a Python object.

The runtime (libfedc-client, include/fedc/client.h) does the federation work:
check-in over mutual TLS, model download with SHA-256 and manifest checks,
delta, clipping, secure aggregation, upload. It calls the trainer on the
thread that runs fedc_client_run(); this module turns that call into
`trainer.train(weights, config)` with the GIL held only inside it (cffi
releases the GIL around every C call, so network waits do not hold it).

Weights reach the trainer as a dict {tensor name: float32 ndarray} shaped as
in the coordinator's safetensors model, in the model's order. They are
read-only views of the runtime's buffer (no copy), valid only until train()
or evaluate() returns: copy what you keep (Client(copy_weights=True) hands
out copies instead). What train() returns is written into the runtime's
output buffer, tensor by tensor, after its names and shapes are checked.

Federated evaluation: a trainer with evaluate_stats(weights, config) -> dict
takes the coordinator's evaluation tasks (fedc_trainer.evaluate_stats,
client.h): totals over its held-out data, which the runtime bounds and
reports (masked under secure aggregation); each accepted report arrives as
an "eval_reported" event. evaluate(weights) -> (accuracy, loss) stays what it
was: local evaluation of each new global model, nothing sent.

Errors: every library error becomes a FedcError carrying the library's
sentence (fedc_client_last_error). An exception raised by the trainer skips
that round, or that evaluation task (the runtime reports it as rejected,
with the exception's sentence; the client goes on), and is logged and
delivered as a "trainer_error" event. A ShapeError raised by train (the
model is not one it can train) ends run() with that ShapeError: every later
round would fail the same way.

Ctrl-C: run() called from the main thread runs the library on a worker
thread and waits for it, so SIGINT reaches Python at once; it calls
fedc_client_stop() (which cancels the network call in flight), waits for run
to return (after the trainer call in progress, if any) and re-raises
KeyboardInterrupt.
"""
import collections
import collections.abc
import logging
import math
import os
import threading
import time
import traceback
from dataclasses import dataclass
from typing import Optional

import numpy as np

from . import _ffi

ffi = _ffi.ffi
log = logging.getLogger("fedc")

# include/fedc/error.h; numbers never reused.
ERROR_NAMES = {
    0: "OK", 1: "INVALID", 2: "NOMEM", 3: "IO", 4: "TLS", 5: "UNAVAILABLE", 6: "PERMISSION", 7: "PROTOCOL",
    8: "VERSION", 9: "TOO_LARGE", 10: "HASH", 11: "TIMEOUT", 12: "REJECTED", 13: "STOPPED", 14: "NOT_FOUND",
    15: "EXISTS", 16: "CRYPTO", 17: "TRAINER", 18: "INTERNAL", 19: "CERT_EXPIRED", 20: "SHAPE", 21: "NONFINITE",
    22: "NORM", 23: "FORMAT", 24: "SIGNATURE",
}
ERR_STOPPED = 13
ERR_SHAPE = 20
OUTPUT_WEIGHTS, OUTPUT_DELTA = 0, 1

EVENT_KINDS = {1: "waiting", 2: "task", 3: "trained", 4: "uploaded", 5: "rejected", 6: "retry", 7: "done",
               8: "evaluated", 9: "eval_reported"}
EVENT_EVAL_REPORTED = 9


class FedcError(Exception):
    """A fedc library error: .code (include/fedc/error.h), .name ("TLS", ...) and the library's sentence."""

    def __init__(self, code, detail):
        self.code = int(code)
        self.name = ERROR_NAMES.get(self.code, "ERROR_%d" % self.code)
        self.detail = detail
        super().__init__("%s: %s" % (self.name, detail) if detail else self.name)


class ShapeError(FedcError, ValueError):
    """The model's tensors are not what the trainer can train (names, shapes)."""

    def __init__(self, detail):
        super().__init__(ERR_SHAPE, detail)


class Delta(dict):
    """Return this from train() (a dict of new - old per tensor) instead of the new weights."""


@dataclass
class Event:
    # waiting task trained uploaded rejected retry done evaluated eval_reported, or trainer_error (this binding)
    kind: str
    round: int = 0  # eval_reported: the round whose model was evaluated
    model_version: int = 0
    num_examples: int = 0
    loss: float = 0.0
    update_norm: float = 0.0
    clip_scale: float = 1.0
    accuracy: float = 0.0
    bytes_in: int = 0
    bytes_out: int = 0
    detail: str = ""
    correct: int = 0  # eval_reported: the totals reported (after the task's bounds), with num_examples and
    loss_sum: float = 0.0  # accuracy = correct / num_examples, loss = loss_sum / num_examples


def _tensor_specs(tensors, n):
    """[(name, shape, offset, numel)] from a fedc_tensor_info array."""
    out = []
    for i in range(n):
        t = tensors[i]
        shape = tuple(int(t.shape[d]) for d in range(t.ndim))
        out.append((ffi.string(t.name).decode("utf-8", "replace"), shape, int(t.offset), int(t.numel)))
    return out


def _views(ptr, n, specs, copy):
    flat = np.frombuffer(ffi.buffer(ptr, n * 4), dtype=np.float32)
    if copy:
        flat = flat.copy()
    else:
        flat.flags.writeable = False
    return {name: flat[off:off + numel].reshape(shape) for name, shape, off, numel in specs}


def _write_output(ptr, n, specs, result):
    """Copy the trainer's tensors into the runtime's output buffer, checking names and shapes."""
    if not isinstance(result, collections.abc.Mapping):
        raise TypeError("train() must return (dict of tensors, num_examples, loss), got %s for the tensors"
                        % type(result).__name__)
    names = [s[0] for s in specs]
    missing = [k for k in names if k not in result]
    extra = [k for k in result if k not in set(names)]
    if missing or extra:
        raise ValueError("train() returned tensors that do not match the model: missing %s, unknown %s"
                         % (missing or "none", extra or "none"))
    flat = np.frombuffer(ffi.buffer(ptr, n * 4), dtype=np.float32)
    for name, shape, off, numel in specs:
        value = result[name]
        if hasattr(value, "detach"):  # a torch.Tensor
            value = value.detach().cpu().numpy()
        arr = np.asarray(value)
        if tuple(arr.shape) != shape:
            raise ValueError("train() returned %s with shape %s; the model has %s" % (name, tuple(arr.shape), shape))
        flat[off:off + numel].reshape(shape)[...] = arr


def _count(what, value):
    """A non-negative integer from an int, a NumPy integer or an integral float; TypeError/ValueError otherwise."""
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise TypeError("evaluate_stats() returned %s = %r: must be a number" % (what, value))
    if not (math.isfinite(value) and value >= 0 and float(value) == int(value)):
        raise ValueError("evaluate_stats() returned %s = %r: must be a whole number >= 0" % (what, value))
    return int(value)


def _total(what, value):
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise TypeError("evaluate_stats() returned %s = %r: must be a number" % (what, value))
    value = float(value)
    if not (math.isfinite(value) and value >= 0):
        raise ValueError("evaluate_stats() returned %s = %r: must be finite and >= 0" % (what, value))
    return value


EVAL_KEYS = ("num_examples", "correct", "loss_sum", "metrics", "class_counts")


def _fill_eval_result(out, stats, metric_names, classes=0):
    """Check what evaluate_stats returned and write it into the runtime's fedc_eval_result.

    stats: {"num_examples": n > 0, "correct": 0..n (default 0), "loss_sum": >= 0, "metrics": {name: sum or
    (sum, examples)}}; a metric given as a bare sum covers all n examples. Metrics the task did not ask for are
    ignored (a trainer may compute a fixed set); unknown keys are an error (a misspelt "correct" would
    otherwise report 0). "class_counts" (optional; protocol 1.13): how many of the n examples the model
    predicted as each class, config["classes"] entries adding up to at most n, for the coordinator's drift
    check without a reference set; ignored when the task asks for none (classes 0)."""
    if not isinstance(stats, collections.abc.Mapping):
        raise TypeError("evaluate_stats() must return a dict with num_examples, correct, loss_sum[, metrics], "
                        "got %s" % type(stats).__name__)
    unknown = [k for k in stats if k not in EVAL_KEYS]
    if unknown:
        raise ValueError("evaluate_stats() returned unknown keys %s (known: %s)" % (unknown, ", ".join(EVAL_KEYS)))
    for k in ("num_examples", "loss_sum"):
        if k not in stats:
            raise ValueError("evaluate_stats() returned no %s" % k)
    n = _count("num_examples", stats["num_examples"])
    if n == 0:
        raise ValueError("evaluate_stats() returned num_examples 0: must be > 0")
    correct = _count("correct", stats.get("correct", 0))
    if correct > n:
        raise ValueError("evaluate_stats() returned correct %d > num_examples %d" % (correct, n))
    loss_sum = _total("loss_sum", stats["loss_sum"])
    metrics = stats.get("metrics") or {}
    if not isinstance(metrics, collections.abc.Mapping):
        raise TypeError("evaluate_stats() returned metrics as %s: must be a dict {name: sum or (sum, examples)}"
                        % type(metrics).__name__)
    filled = []
    for j, name in enumerate(metric_names):
        if name not in metrics:
            continue
        value = metrics[name]
        if isinstance(value, (tuple, list)):
            if len(value) != 2:
                raise ValueError("evaluate_stats() returned metric %s = %r: must be a sum or (sum, examples)"
                                 % (name, value))
            msum, mex = _total("metrics[%s] sum" % name, value[0]), _count("metrics[%s] examples" % name, value[1])
            if not 0 < mex <= n:
                raise ValueError("evaluate_stats() returned metric %s over %d examples: must be 1..num_examples "
                                 "(%d)" % (name, mex, n))
        else:
            msum, mex = _total("metrics[%s]" % name, value), n
        filled.append((j, msum, mex))
    counts = stats.get("class_counts")
    if counts is not None and classes:
        counts = [_count("class_counts[%d]" % i, c) for i, c in enumerate(counts)]
        if len(counts) != classes or sum(counts) > n:
            raise ValueError("evaluate_stats() returned %d class_counts adding up to %d: must be %d (config "
                             "[\"classes\"]) adding up to at most num_examples (%d)" % (len(counts), sum(counts),
                                                                                        classes, n))
    # Only after every check: the runtime reads nothing of a failed call, but
    # a half-written result is still worth never making.
    out.num_examples = n
    out.correct = correct
    out.loss_sum = loss_sum
    for j, msum, mex in filled:
        out.metrics[j].sum = msum
        out.metrics[j].examples = mex
    if counts is not None and classes:
        for i, c in enumerate(counts):
            out.class_counts[i] = c


DEVICE_KEYS = ("charging", "unmetered", "idle", "battery", "free_storage")


def _fill_device_state(state, d):
    """Check what device_state() returned and write it into the runtime's zeroed fedc_device_state.

    d: {"charging", "unmetered", "idle": bool; "battery": percent 1..100; "free_storage": bytes >= 0}; a key
    left out (or None) is not reported (0 in the struct: unknown, which meets no requirement). Unknown keys
    are an error (a misspelt "charging" would otherwise report a device that is not charging)."""
    if not isinstance(d, collections.abc.Mapping):
        raise TypeError("device_state() must return a dict, got %s" % type(d).__name__)
    unknown = [k for k in d if k not in DEVICE_KEYS]
    if unknown:
        raise ValueError("device_state() returned unknown keys %s (known: %s)" % (unknown, ", ".join(DEVICE_KEYS)))
    flags = {}
    for k in ("charging", "unmetered", "idle"):
        v = d.get(k)
        if v is not None and not isinstance(v, (bool, np.bool_)):
            raise TypeError("device_state() returned %s = %r: must be True or False" % (k, v))
        flags[k] = 1 if v else 0
    battery = d.get("battery")
    if battery is not None:
        if isinstance(battery, (bool, np.bool_)) or not isinstance(battery, (int, np.integer)) \
                or not 0 <= battery <= 100:
            raise ValueError("device_state() returned battery = %r: must be a whole percent 0..100" % (battery,))
    storage = d.get("free_storage")
    if storage is not None:
        if isinstance(storage, (bool, np.bool_)) or not isinstance(storage, (int, np.integer)) \
                or not 0 <= storage < 2 ** 64:
            raise ValueError("device_state() returned free_storage = %r: must be a whole number of bytes >= 0"
                             % (storage,))
    # Only after every check (a half-filled state is never reported).
    state.charging, state.unmetered, state.idle = flags["charging"], flags["unmetered"], flags["idle"]
    state.battery_percent = int(battery or 0)
    state.free_storage_bytes = int(storage or 0)


def _set_error(buf, size, text):
    """Write text into a C error buffer (client.h: NUL-terminated, at most size bytes), cut at a character."""
    if buf == ffi.NULL or size == 0:
        return
    data = text.encode("utf-8", "replace")[:size - 1].decode("utf-8", "ignore").encode("utf-8")
    ffi.memmove(buf, data + b"\0", len(data) + 1)


class Client:
    """One federation client. `trainer` has train(weights, config) -> (weights_or_delta, num_examples, loss),
    optionally evaluate(weights) -> (accuracy, loss) (local, each new global model) and optionally
    evaluate_stats(weights, config) -> {"num_examples", "correct", "loss_sum"[, "metrics"]} (federated
    evaluation tasks; a trainer whose evaluate_stats is None takes none).

    TLS material: ca/cert/key PEM paths, or pki=DIR and name=NAME for DIR/ca.crt, DIR/client-NAME.{crt,key}
    (the layout `fedc pki` writes). Other options are fedc_client_options fields (client.h).
    device_state: a callable returning {"charging", "unmetered", "idle": bool, "battery": percent,
    "free_storage": bytes} (keys left out are not reported), called before every check-in (eligibility, 1.8);
    an exception or a bad dict reports nothing that time, with a warning.
    """

    def __init__(self, coordinator, ca=None, cert=None, key=None, trainer=None, *, pki=None, name=None,
                 on_event=None, max_rounds=0, allow_unsigned_models=False, insecure_for_testing=False,
                 insecure_identity=None, min_backoff_ms=None, max_backoff_ms=None, max_retries=None,
                 call_timeout_ms=None, num_examples_hint=0, secagg_tolerate_colluders=0, copy_weights=False,
                 event_queue=1024, device_state=None):
        if trainer is None or not callable(getattr(trainer, "train", None)):
            raise TypeError("trainer must have a train(weights, config) method")
        if device_state is not None and not callable(device_state):
            raise TypeError("device_state must be a callable returning a dict (charging, unmetered, idle, "
                            "battery, free_storage)")
        if pki is not None:
            if name is None:
                raise TypeError("pki= needs name= (the client certificate's name)")
            ca = ca or os.path.join(pki, "ca.crt")
            cert = cert or os.path.join(pki, "client-%s.crt" % name)
            key = key or os.path.join(pki, "client-%s.key" % name)
        self._L = _ffi.lib()
        self._trainer = trainer
        self._on_event = on_event
        self._copy = copy_weights
        self._events = collections.deque(maxlen=event_queue)
        self._events_cv = threading.Condition()
        self._running = False
        self._finished = False
        self._stop_requested = False
        self._fatal = None  # a ShapeError that ended run()
        # The last train call: seconds in the whole callback and in trainer.train alone; the
        # difference is this binding's cost (views, config, checks, the copy into the runtime's buffer).
        self.last_train_timing = None
        self._h = ffi.NULL

        # The callbacks and everything they point to live as long as the handle.
        self._cb_train = ffi.callback(
            "int(void *, const fedc_train_config *, const float *, float *, size_t, int *, uint64_t *, double *)",
            self._train_cb, error=-1)
        self._cb_eval = ffi.callback("int(void *, const float *, size_t, double *, double *)", self._eval_cb,
                                     error=-1)
        self._cb_eval_stats = ffi.callback(
            "int(void *, const fedc_eval_config *, const float *, size_t, fedc_eval_result *)", self._eval_stats_cb,
            error=-1)
        self._cb_event = ffi.callback("void(void *, const fedc_event *)", self._event_cb)
        self._device_state = device_state
        self._cb_device = ffi.callback("int(void *, fedc_device_state *)", self._device_state_cb, error=-1)
        self._tr = ffi.new("fedc_trainer *")
        self._tr.train = self._cb_train
        if callable(getattr(trainer, "evaluate", None)):
            self._tr.evaluate = self._cb_eval
        # Set only for a trainer that has it: the runtime then says at
        # check-in that this client can evaluate (client.h).
        if callable(getattr(trainer, "evaluate_stats", None)):
            self._tr.evaluate_stats = self._cb_eval_stats

        o = ffi.new("fedc_client_options *")
        self._L.fedc_client_options_init(o)
        keep = []

        def cstr(s):
            b = ffi.new("char[]", os.fsencode(s))
            keep.append(b)
            return b

        o.coordinator = cstr(coordinator)
        if ca:
            o.ca = cstr(ca)
        if cert:
            o.cert = cstr(cert)
        if key:
            o.key = cstr(key)
        if insecure_identity:
            o.insecure_identity = cstr(insecure_identity)
        o.insecure_for_testing = 1 if insecure_for_testing else 0
        o.max_rounds = max_rounds
        o.allow_unsigned_models = 1 if allow_unsigned_models else 0
        o.num_examples_hint = num_examples_hint
        o.secagg_tolerate_colluders = secagg_tolerate_colluders
        if min_backoff_ms is not None:
            o.min_backoff_ms = min_backoff_ms
        if max_backoff_ms is not None:
            o.max_backoff_ms = max_backoff_ms
        if max_retries is not None:
            o.max_retries = max_retries
        if call_timeout_ms is not None:
            o.call_timeout_ms = call_timeout_ms
        o.on_event = self._cb_event
        if device_state is not None:
            o.device_state = self._cb_device
        out = ffi.new("fedc_client **")
        rc = self._L.fedc_client_create(o, self._tr, out)
        # client.h: *out is always written and always destroyed, success or not.
        if rc != 0:
            detail = ffi.string(self._L.fedc_client_last_error(out[0])).decode("utf-8", "replace")
            self._L.fedc_client_destroy(out[0])
            raise FedcError(rc, detail)
        self._h = out[0]

    # ---- the runtime's callbacks (library thread, GIL held only here) ----

    def _train_cb(self, ctx, cfg, weights, out, n, kind_p, examples_p, loss_p):
        rnd = int(cfg.round)
        t_start = time.perf_counter()
        try:
            specs = _tensor_specs(cfg.tensors, cfg.n_tensors)
            config = {
                "round": rnd, "model_version": int(cfg.model_version), "learning_rate": float(cfg.learning_rate),
                "local_epochs": int(cfg.local_epochs), "batch_size": int(cfg.batch_size),
                "momentum": float(cfg.momentum), "seed": int(cfg.seed), "clip_norm": float(cfg.clip_norm),
                "prox_mu": 0.0, "tensors": {s[0]: s[1] for s in specs},
            }
            # ABI rule (client.h): fields past `tensors` only when the library filled them.
            if _ffi.abi_version() >= 2 and cfg.struct_size >= ffi.offsetof("fedc_train_config", "prox_mu") + 4:
                config["prox_mu"] = float(cfg.prox_mu)
            w = _views(weights, n, specs, self._copy)
            t_train = time.perf_counter()
            result = self._trainer.train(w, config)
            t_train = time.perf_counter() - t_train
            if not isinstance(result, tuple) or len(result) != 3:
                raise TypeError("train() must return (weights_or_delta, num_examples, loss)")
            tensors, num_examples, loss = result
            num_examples, loss = int(num_examples), float(loss)
            if num_examples <= 0:
                raise ValueError("train() returned num_examples %d: must be > 0" % num_examples)
            if not (math.isfinite(loss) and loss >= 0):
                raise ValueError("train() returned loss %r: must be finite and >= 0" % loss)
            _write_output(out, n, specs, tensors)
            kind_p[0] = OUTPUT_DELTA if isinstance(tensors, Delta) else OUTPUT_WEIGHTS
            examples_p[0] = num_examples
            loss_p[0] = loss
            total = time.perf_counter() - t_start
            self.last_train_timing = {"round": rnd, "callback_s": total, "trainer_s": t_train,
                                      "binding_s": total - t_train}
            return 0
        except BaseException as e:  # never let an exception cross into C
            self._trainer_failed("train", rnd, e)
            return -1

    def _eval_cb(self, ctx, weights, n, acc_p, loss_p):
        try:
            count = ffi.new("size_t *")
            tensors = self._L.fedc_client_model_tensors(self._h, count)
            specs = _tensor_specs(tensors, count[0])
            acc, loss = self._trainer.evaluate(_views(weights, n, specs, self._copy))
            acc_p[0], loss_p[0] = float(acc), float(loss)
            return 0
        except BaseException as e:
            self._trainer_failed("evaluate", 0, e)
            return -1

    def _eval_stats_cb(self, ctx, cfg, weights, n, out):
        rnd = int(cfg.round)
        try:
            specs = _tensor_specs(cfg.tensors, cfg.n_tensors)
            names = [ffi.string(cfg.metric_names[j]).decode("utf-8", "replace") for j in range(cfg.n_metrics)]
            config = {
                "round": rnd, "model_version": int(cfg.model_version), "max_examples": int(cfg.max_examples),
                "value_max": float(cfg.value_max), "metrics": names, "tensors": {s[0]: s[1] for s in specs},
                "classes": int(cfg.n_classes),
            }
            stats = self._trainer.evaluate_stats(_views(weights, n, specs, self._copy), config)
            _fill_eval_result(out, stats, names, int(cfg.n_classes))
            return 0
        except BaseException as e:  # never let an exception cross into C
            detail = self._trainer_failed("evaluate_stats", rnd, e)
            _set_error(cfg.error, cfg.error_len, detail)  # the runtime's REJECTED event and log say it
            return -1

    def _device_state_cb(self, ctx, state):
        try:
            _fill_device_state(state, self._device_state())
            return 0
        except BaseException as e:  # never let an exception cross into C: report nothing this time
            log.warning("device_state() raised %s: %s; no device state reported at this check-in",
                        type(e).__name__, e)
            return -1

    def _trainer_failed(self, what, rnd, e):
        """Log and deliver a trainer_error event for an exception in a trainer callback; returns its sentence."""
        detail = "%s() raised %s: %s" % (what, type(e).__name__, e)
        if isinstance(e, ShapeError) and what == "train":
            # The model is not one this trainer can train: every round would
            # fail the same way, so end run() with the reason.
            self._fatal = e
            self._L.fedc_client_stop(self._h)
            log.error("round %d: %s; stopping", rnd, detail)
        elif what == "evaluate_stats":
            log.warning("evaluation of round %d's model: %s; task skipped\n%s", rnd, detail,
                        traceback.format_exc().rstrip())
        elif what == "evaluate":
            log.warning("local evaluation: %s\n%s", detail, traceback.format_exc().rstrip())
        else:
            log.warning("round %d: %s; round skipped\n%s", rnd, detail, traceback.format_exc().rstrip())
        self._deliver(Event("trainer_error", round=rnd, detail=detail))
        return detail

    def _event_cb(self, ctx, ev):
        try:
            kind = EVENT_KINDS.get(ev.kind)
            if kind is None:
                return
            detail = ffi.string(ev.detail).decode("utf-8", "replace") if ev.detail != ffi.NULL else ""
            event = Event(kind, int(ev.round), int(ev.model_version), int(ev.num_examples), float(ev.loss),
                          float(ev.update_norm), float(ev.clip_scale), float(ev.accuracy), int(ev.bytes_in),
                          int(ev.bytes_out), detail)
            if ev.kind == EVENT_EVAL_REPORTED:  # fields a library without evaluation lacks (it never sends 9)
                event.correct, event.loss_sum = int(ev.correct), float(ev.loss_sum)
            self._deliver(event)
        except BaseException:
            log.exception("fedc: event callback failed")

    def _deliver(self, event):
        with self._events_cv:
            self._events.append(event)
            self._events_cv.notify_all()
        if self._on_event is not None:
            try:
                self._on_event(event)
            except BaseException:
                log.exception("fedc: on_event raised; ignored")

    # ---- the API ----

    def run(self):
        """Take part in rounds until the federation is done, max_rounds were uploaded or stop() was called.
        Returns the number of accepted updates; raises FedcError (or the trainer's ShapeError)."""
        if not self._h:
            raise FedcError(1, "client is closed")
        if self._running:
            raise RuntimeError("run() is already running on this client")
        self._running, self._finished, self._fatal = True, False, None
        rc = [None]

        returned = threading.Event()  # set when the library's run has returned

        def body():
            try:
                rc[0] = self._L.fedc_client_run(self._h)  # cffi releases the GIL for the call
            finally:
                returned.set()

        try:
            if threading.current_thread() is threading.main_thread():
                worker = threading.Thread(target=body, name="fedc-client", daemon=True)
                worker.start()
                # Waited on through an Event, not Thread.join: a Ctrl-C that
                # interrupts join() can leave CPython 3.11 believing the
                # thread has ended (its tstate lock is held by the running
                # thread, and join's interrupted path releases it), and the
                # handle was then destroyed under the library's feet.
                try:
                    while not returned.wait(0.25):
                        pass
                except KeyboardInterrupt:
                    # run() must have returned before anything may destroy
                    # the handle (close(), __exit__, __del__): wait for it
                    # even if a second Ctrl-C arrives while it says Leave
                    # (at most the Leave call's 2 s), then re-raise.
                    while True:
                        try:
                            self.stop()
                            while not returned.wait(0.25):
                                pass
                            break
                        except KeyboardInterrupt:
                            continue
                    raise
            else:
                body()
        finally:
            self._running = False
            with self._events_cv:
                self._finished = True
                self._events_cv.notify_all()
        if self._fatal is not None:
            raise self._fatal
        if rc[0] == 0 or (rc[0] == ERR_STOPPED and self._stop_requested):
            return self.rounds_done
        raise FedcError(rc[0], self.last_error)

    def stop(self):
        """Make run() return soon (from any thread, a signal handler or an event callback)."""
        self._stop_requested = True
        if self._h:
            self._L.fedc_client_stop(self._h)

    def events(self, timeout=None):
        """Iterate over events as they arrive (e.g. while run() works on another thread); ends when run()
        returns and the events so far are consumed, or after `timeout` seconds without an event."""
        while True:
            with self._events_cv:
                if not self._events and not self._finished:
                    self._events_cv.wait(timeout)
                if self._events:
                    ev = self._events.popleft()
                elif self._finished or timeout is not None:
                    return
                else:
                    continue
            yield ev

    @property
    def last_error(self):
        return ffi.string(self._L.fedc_client_last_error(self._h)).decode("utf-8", "replace")

    @property
    def rounds_done(self):
        return int(self._L.fedc_client_rounds_done(self._h)) if self._h else 0

    def close(self):
        if self._running:
            raise RuntimeError("close() while run() is running: stop() it first")
        if self._h:
            self._L.fedc_client_destroy(self._h)
            self._h = ffi.NULL

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        if self._running:
            self.stop()
        else:
            self.close()

    def __del__(self):
        try:
            if self._h and not self._running:
                self.close()
        except Exception:
            pass


def abi_version():
    """The loaded library's ABI level (client.h, FEDC_CLIENT_ABI_VERSION)."""
    return _ffi.abi_version()


def strerror(code):
    return ffi.string(_ffi.lib().fedc_strerror(code)).decode()
