"""PyTorch helpers: a module's state_dict <-> fedc tensors, and a ready trainer.

fedc tensors are the module's floating-point state_dict entries (parameters
and float buffers such as BatchNorm running statistics), under the same names
and shapes, in state_dict order; integer buffers (num_batches_tracked) stay
local. export_safetensors() writes exactly that as the coordinator's
--init-model, so the federation's model is the module's, name for name.
"""
import warnings

import numpy as np
import torch

from . import safetensors
from .client import ShapeError


def float_state(module):
    """{name: tensor} of the module's floating-point state_dict entries, in state_dict order."""
    return {k: v for k, v in module.state_dict().items() if v.is_floating_point()}


def to_fedc(module):
    """{name: float32 ndarray}; zero copy for float32 CPU tensors (views of the module's memory)."""
    return {k: v.detach().to("cpu", torch.float32).contiguous().numpy() for k, v in float_state(module).items()}


def check_spec(module, weights):
    """Raise ShapeError unless `weights` has exactly the module's tensor names and shapes."""
    want = float_state(module)
    missing = [k for k in want if k not in weights]
    extra = [k for k in weights if k not in want]
    if missing or extra:
        raise ShapeError("the model's tensors are not this module's: missing %s, unknown %s"
                         % (missing or "none", extra or "none"))
    for k, t in want.items():
        if tuple(weights[k].shape) != tuple(t.shape):
            raise ShapeError("tensor %s: the model has shape %s, the module %s"
                             % (k, tuple(weights[k].shape), tuple(t.shape)))


def from_fedc(module, weights):
    """Load fedc tensors into the module (after check_spec)."""
    check_spec(module, weights)
    state = float_state(module)
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # from_numpy on the runtime's read-only views
        for k, t in state.items():
            t.copy_(torch.from_numpy(np.asarray(weights[k])))


def export_safetensors(module, path):
    """Write the module's fedc tensors as a float32 safetensors file (the coordinator's --init-model)."""
    safetensors.write(path, to_fedc(module), {"format": "pt"})


class TorchTrainer:
    """A fedc trainer for a classification nn.Module on local tensors x, y.

    train(): loads the global weights, runs config["local_epochs"] epochs of SGD
    (learning_rate, momentum, batch_size and the shuffling seed from the task)
    on cross-entropy, plus FedProx's prox_mu/2 ||w - w_global||^2 over the
    parameters when the task sets prox_mu (Li et al. 2020); returns the new
    weights, len(x) and the last epoch's mean cross-entropy. evaluate(): the
    global model's accuracy and loss on eval_x/eval_y (default: the local data),
    for the local "evaluated" event.

    evaluate_stats(): federated evaluation on held-out data the trainer never
    trains on: eval_data (a torch DataLoader, a map-style Dataset of (x, y), an
    (x, y) pair of tensors, or any re-iterable of (x, y) batches), else
    eval_x/eval_y when given. Without held-out data evaluate_stats is None and
    the client takes no evaluation tasks (evaluating on the training data would
    publish a flattering number). metrics: {name: fn(outputs, targets) ->
    per-example values}, computed when the task asks for that name.
    """

    def __init__(self, module, x, y, eval_x=None, eval_y=None, loss_fn=None, eval_data=None, metrics=None,
                 eval_batch=1000):
        self.module = module
        self.x, self.y = x, y
        self.eval_x = x if eval_x is None else eval_x
        self.eval_y = y if eval_y is None else eval_y
        self.loss_fn = loss_fn or torch.nn.functional.cross_entropy
        self.metrics = dict(metrics or {})
        self.last_train_seconds = 0.0
        if eval_data is None and eval_x is not None and eval_y is not None:
            eval_data = (eval_x, eval_y)
        self.eval_data = eval_data
        self.eval_batch = eval_batch
        if eval_data is None:
            self.evaluate_stats = None  # fedc.Client: no held-out data, no evaluation tasks

    def train(self, weights, config):
        import time
        t0 = time.perf_counter()
        from_fedc(self.module, weights)
        m = self.module
        m.train()
        params = [p for p in m.parameters() if p.requires_grad]
        mu = float(config.get("prox_mu", 0.0))
        anchor = [p.detach().clone() for p in params] if mu > 0 else None
        opt = torch.optim.SGD(params, lr=config["learning_rate"] or 0.05, momentum=config["momentum"])
        n, batch = len(self.x), max(1, config["batch_size"] or 32)
        gen = torch.Generator().manual_seed(config["seed"] & 0x7FFFFFFFFFFFFFFF)
        epoch_loss = 0.0
        for _ in range(max(1, config["local_epochs"])):
            perm = torch.randperm(n, generator=gen)
            epoch_loss = 0.0
            for s in range(0, n, batch):
                idx = perm[s:s + batch]
                opt.zero_grad(set_to_none=True)
                loss = self.loss_fn(m(self.x[idx]), self.y[idx])
                epoch_loss += float(loss.detach()) * len(idx)
                if anchor is not None:
                    loss = loss + 0.5 * mu * sum(((p - a) ** 2).sum() for p, a in zip(params, anchor))
                loss.backward()
                opt.step()
        self.last_train_seconds = time.perf_counter() - t0
        return to_fedc(m), n, epoch_loss / n

    def evaluate(self, weights):
        from_fedc(self.module, weights)
        return evaluate(self.module, self.eval_x, self.eval_y, self.loss_fn)

    def evaluate_stats(self, weights, config):
        from_fedc(self.module, weights)
        wanted = {k: f for k, f in self.metrics.items() if k in config.get("metrics", ())}
        return eval_stats(self.module, self.eval_data, self.loss_fn, config.get("value_max", float("inf")),
                          wanted, self.eval_batch, int(config.get("classes", 0) or 0))


def _batches(data, batch):
    """(x, y) batches of a DataLoader, a map-style Dataset, an (x, y) pair of tensors or an iterable of batches."""
    if isinstance(data, torch.utils.data.DataLoader):
        return data
    if isinstance(data, torch.utils.data.Dataset):
        return torch.utils.data.DataLoader(data, batch_size=batch)
    if isinstance(data, tuple) and len(data) == 2 and all(torch.is_tensor(t) for t in data):
        x, y = data
        if len(x) != len(y):
            raise ValueError("held-out data: %d inputs but %d targets" % (len(x), len(y)))
        return ((x[s:s + batch], y[s:s + batch]) for s in range(0, len(x), batch))
    return data


def eval_stats(module, data, loss_fn=None, value_max=float("inf"), metrics=None, batch=1000, classes=0):
    """Federated evaluation totals of a classifier over held-out data (see TorchTrainer.evaluate_stats):
    {"num_examples", "correct", "loss_sum", "metrics": {name: sum}}. Each example's loss and metric values
    count clamped into [0, value_max] (the task's bound; NaN or inf count as value_max), which the runtime
    can only enforce on the sums. With classes > 0 (the task's config["classes"], protocol 1.13) also
    "class_counts": how many examples the model predicted as each class 0..classes-1, for the coordinator's
    drift check without a reference set; a prediction past the last class (a model with more outputs than
    the task names) is counted in none, so the counts add up to at most num_examples."""
    loss_fn = loss_fn or torch.nn.functional.cross_entropy
    metrics = metrics or {}
    device = next(module.parameters(), torch.empty(0)).device

    def bounded(v):
        v = torch.nan_to_num(v.detach().double().reshape(-1), nan=value_max, posinf=value_max, neginf=0.0)
        return float(v.clamp(0.0, value_max).sum())

    module.eval()
    n, correct, loss_sum = 0, 0, 0.0
    sums = {k: 0.0 for k in metrics}
    counts = torch.zeros(max(classes, 0), dtype=torch.long)
    with torch.no_grad():
        for x, y in _batches(data, batch):
            x, y = x.to(device), y.to(device)
            out = module(x)
            n += len(y)
            pred = out.argmax(1)
            correct += int((pred == y).sum())
            if classes > 0:
                pred = pred[pred < classes].cpu()
                counts += torch.bincount(pred, minlength=classes)[:classes]
            loss_sum += bounded(loss_fn(out, y, reduction="none"))
            for k, fn in metrics.items():
                sums[k] += bounded(torch.as_tensor(fn(out, y)))
    if n == 0:
        raise ValueError("the held-out data is empty")
    res = {"num_examples": n, "correct": correct, "loss_sum": loss_sum, "metrics": sums}
    if classes > 0:
        res["class_counts"] = [int(c) for c in counts]
    return res


def evaluate(module, x, y, loss_fn=None, batch=1000):
    """(accuracy, mean loss) of a classifier on x, y."""
    loss_fn = loss_fn or torch.nn.functional.cross_entropy
    module.eval()
    correct, total = 0, 0.0
    with torch.no_grad():
        for s in range(0, len(x), batch):
            out = module(x[s:s + batch])
            total += float(loss_fn(out, y[s:s + batch], reduction="sum"))
            correct += int((out.argmax(1) == y[s:s + batch]).sum())
    return correct / len(x), total / len(x)
