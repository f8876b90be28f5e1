"""A fedc Python client for tests/integration/test_python.sh, test_python_eval.sh and test_fedprox.sh.

    client.py --coordinator ADDR --pki DIR --name NAME --mode MODE [--examples N] [--max-rounds R]
              [--config-out FILE] [--eval-stats N,CORRECT,LOSS_SUM [--eval-metric NAME=SUM[:EXAMPLES]]...
              [--eval-raise K] [--eval-config-out FILE] [--eval-touch FILE] [--train-gate FILE]
              [--eval-class-counts C0,C1,...]]
              [--device-state KEY=VALUE,...|raise]

Modes (NumPy trainers, deterministic so the test can compute the expected model):
  weights   returns 0.5 * w + 1 (new weights)
  delta     returns the delta -0.1 * w (fedc.Delta)
  raise     raises RuntimeError on its first call, then behaves as `weights`
  shape     refuses every model (fedc.ShapeError): run() must end with it
  wait      never expects a round (Ctrl-C test): prints "waiting" once checked in
  torch     fedc.pytorch.TorchTrainer on a tiny CNN and 64 synthetic images (--init-out writes its
            initial model as safetensors and exits)
--eval-stats gives the NumPy trainer an evaluate_stats (federated evaluation) that returns these
totals and metrics every time, except the K-th call (--eval-raise K), which raises RuntimeError;
--eval-class-counts adds these predicted-class counts ("class_counts", when the task asks for
classes); --eval-config-out appends the config each evaluate_stats saw; --eval-touch creates FILE when
evaluate_stats is called, and --train-gate makes train() of rounds after the first wait for FILE.
--device-state gives Client a device_state callable returning these keys (charging, unmetered, idle:
0/1 as bools; battery, free_storage: ints) before each check-in, or raising RuntimeError ("raise").
Prints one JSON line per event on stdout (--iterate: run() on a thread and the events read through
client.events() on the main thread, instead of the on_event callback); --config-out appends the config
each train() saw.
Exit: 0 after run() returns, 3 on fedc.ShapeError, 4 on another FedcError, 130 on Ctrl-C.
"""
import argparse
import hashlib
import json
import os
import signal
import sys
import threading
import time

import numpy as np

import fedc


class NumpyTrainer:
    def __init__(self, mode, examples, config_out):
        self.mode, self.examples, self.config_out, self.calls = mode, examples, config_out, 0

    def train(self, weights, config):
        self.calls += 1
        if self.config_out:
            with open(self.config_out, "a") as f:
                cfg = dict(config, tensors={k: list(v) for k, v in config["tensors"].items()},
                           weights_writeable=any(w.flags.writeable for w in weights.values()),
                           shapes={k: list(w.shape) for k, w in weights.items()})
                f.write(json.dumps(cfg) + "\n")
        if self.mode == "shape":
            raise fedc.ShapeError("this trainer takes a model with dense.weight [2, 2]; got %s"
                                  % {k: list(v.shape) for k, v in weights.items()})
        if self.mode == "raise" and self.calls == 1:
            raise RuntimeError("injected trainer failure")
        if self.mode == "delta":
            return fedc.Delta({k: -0.1 * w for k, w in weights.items()}), self.examples, 0.5
        return {k: 0.5 * w + 1.0 for k, w in weights.items()}, self.examples, 0.25

    def evaluate(self, weights):
        return 0.5, float(sum(float(np.abs(w).sum()) for w in weights.values()))


class EvalTrainer(NumpyTrainer):
    """NumpyTrainer with federated evaluation reporting fixed, known totals."""

    def __init__(self, mode, examples, config_out, stats, raise_at, eval_config_out, eval_touch, train_gate):
        super().__init__(mode, examples, config_out)
        self.stats, self.raise_at, self.eval_config_out, self.eval_calls = stats, raise_at, eval_config_out, 0
        self.eval_touch, self.train_gate = eval_touch, train_gate
        self.class_counts = None

    def train(self, weights, config):
        # --train-gate: rounds after the first wait for the file (another client's --eval-touch), so the
        # test orders "evaluation 1 drawn" before "round 2 published" (which would supersede it).
        if self.train_gate and config["round"] > 1:
            for _ in range(3600):  # 180 s; the test gives up first
                if os.path.exists(self.train_gate):
                    break
                time.sleep(0.05)
            else:
                raise RuntimeError("--train-gate %s never appeared" % self.train_gate)
        return super().train(weights, config)

    def evaluate_stats(self, weights, config):
        self.eval_calls += 1
        if self.eval_touch:
            open(self.eval_touch, "a").close()
        if self.eval_config_out:
            with open(self.eval_config_out, "a") as f:
                cfg = dict(config, tensors={k: list(v) for k, v in config["tensors"].items()},
                           weights_writeable=any(w.flags.writeable for w in weights.values()),
                           shapes={k: list(w.shape) for k, w in weights.items()},
                           weights_sha256=hashlib.sha256(b"".join(w.tobytes() for w in weights.values()))
                           .hexdigest())
                f.write(json.dumps(cfg) + "\n")
        if self.eval_calls == self.raise_at:
            raise RuntimeError("injected evaluation failure")
        if self.class_counts and config.get("classes"):
            return dict(self.stats, class_counts=self.class_counts)
        return self.stats


def parse_eval_stats(text, metric_args):
    n, correct, loss_sum = text.split(",")
    metrics = {}
    for m in metric_args:
        name, value = m.split("=")
        if ":" in value:
            msum, mex = value.split(":")
            metrics[name] = (float(msum), int(mex))
        else:
            metrics[name] = float(value)
    return {"num_examples": int(n), "correct": int(correct), "loss_sum": float(loss_sum), "metrics": metrics}


def torch_parts(seed):
    import torch
    torch.manual_seed(seed)
    torch.set_num_threads(1)
    model = torch.nn.Sequential(
        torch.nn.Conv2d(1, 4, 3, padding=1), torch.nn.ReLU(), torch.nn.MaxPool2d(4),
        torch.nn.Flatten(), torch.nn.Linear(4 * 7 * 7, 10))
    g = torch.Generator().manual_seed(seed + 1)
    x = torch.rand(64, 1, 28, 28, generator=g)
    y = torch.randint(0, 10, (64,), generator=g)
    return model, x, y


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--coordinator")
    ap.add_argument("--pki")
    ap.add_argument("--name")
    ap.add_argument("--mode", required=True)
    ap.add_argument("--examples", type=int, default=1)
    ap.add_argument("--max-rounds", type=int, default=0)
    ap.add_argument("--config-out")
    ap.add_argument("--init-out")
    ap.add_argument("--iterate", action="store_true")
    ap.add_argument("--eval-stats")
    ap.add_argument("--eval-metric", action="append", default=[])
    ap.add_argument("--eval-raise", type=int, default=0)
    ap.add_argument("--eval-class-counts")
    ap.add_argument("--eval-config-out")
    ap.add_argument("--eval-touch")
    ap.add_argument("--train-gate")
    ap.add_argument("--device-state")
    a = ap.parse_args()
    # A background job of a non-interactive shell starts with SIGINT ignored, and
    # Python then leaves it ignored: take it back, as an interactive run has it.
    signal.signal(signal.SIGINT, signal.default_int_handler)

    if a.mode == "torch":
        from fedc import pytorch as fedc_torch
        model, x, y = torch_parts(7)
        if a.init_out:
            fedc_torch.export_safetensors(model, a.init_out)
            return 0
        trainer = fedc_torch.TorchTrainer(model, x, y)
    elif a.eval_stats:
        trainer = EvalTrainer(a.mode, a.examples, a.config_out, parse_eval_stats(a.eval_stats, a.eval_metric),
                              a.eval_raise, a.eval_config_out, a.eval_touch, a.train_gate)
        if a.eval_class_counts:
            trainer.class_counts = [int(c) for c in a.eval_class_counts.split(",")]
    else:
        trainer = NumpyTrainer(a.mode, a.examples, a.config_out)

    device_state = None
    if a.device_state == "raise":
        def device_state():
            raise RuntimeError("injected device_state failure")
    elif a.device_state:
        fixed = {}
        for kv in a.device_state.split(","):
            k, v = kv.split("=")
            fixed[k] = bool(int(v)) if k in ("charging", "unmetered", "idle") else int(v)

        def device_state():
            return dict(fixed)

    said_waiting = set()

    def on_event(ev):
        if ev.kind == "waiting":  # once per distinct reason (a "not eligible: ..." detail, or none)
            if ev.detail in said_waiting:
                return
            said_waiting.add(ev.detail)
        print(json.dumps(ev.__dict__), flush=True)

    try:
        with fedc.Client(a.coordinator, pki=a.pki, name=a.name, trainer=trainer, max_rounds=a.max_rounds,
                         on_event=None if a.iterate else on_event, min_backoff_ms=100,
                         max_backoff_ms=1000, device_state=device_state) as client:
            if a.iterate:
                outcome = []

                def body():
                    try:
                        outcome.append(client.run())
                    except BaseException as e:
                        outcome.append(e)

                worker = threading.Thread(target=body)
                worker.start()
                for ev in client.events():
                    on_event(ev)
                worker.join()
                if isinstance(outcome[0], BaseException):
                    raise outcome[0]
                done = outcome[0]
            else:
                done = client.run()
        print(json.dumps({"kind": "run_returned", "rounds_done": done}), flush=True)
        return 0
    except fedc.ShapeError as e:
        print(json.dumps({"kind": "shape_error", "detail": str(e)}), flush=True)
        return 3
    except fedc.FedcError as e:
        print(json.dumps({"kind": "fedc_error", "code": e.code, "detail": str(e)}), flush=True)
        return 4
    except KeyboardInterrupt:
        print(json.dumps({"kind": "interrupted"}), flush=True)
        return 130


if __name__ == "__main__":
    sys.exit(main())
