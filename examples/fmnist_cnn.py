#!/usr/bin/env python3
"""A small CNN trained by a fedc federation on Fashion-MNIST, with the Python binding.

The coordinator's model is this module's own state_dict, exported as the
coordinator's --init-model, so each client trains the nn.Module in a few lines
(fedc.pytorch.TorchTrainer) and the published versions load back into it.

    # once: a PKI and the initial model
    fedc pki init --dir pki --federation cnn
    fedc pki issue --dir pki --role admin --name root
    for i in 0 1; do fedc pki issue --dir pki --role client --name c$i; done
    /usr/bin/python3 examples/fmnist_cnn.py export --out cnn.safetensors
    # the coordinator, on that model (add --eval-every 5 --eval-cohort 2 for federated evaluation
    # on the clients' held-out data, in fedc rounds)
    fedc coordinator --pki pki --federation cnn --init-model cnn.safetensors --rounds 20 \\
        --min-clients 2 --cohort 2 --lr 0.1 --momentum 0.5      # the settings of docs/results.md
    # each client on its Dirichlet(0.5) share of the training set (another terminal each)
    /usr/bin/python3 examples/fmnist_cnn.py client --pki pki --name c0 --part 0 --parts 2
    /usr/bin/python3 examples/fmnist_cnn.py client --pki pki --name c1 --part 1 --parts 2
    # the accuracy of a published version on the 10,000 test images
    fedc model get --pki pki --name root --out v20.safetensors
    /usr/bin/python3 examples/fmnist_cnn.py evaluate v20.safetensors

Run from the repository with PYTHONPATH=python (or after
`/usr/bin/python3 -m pip install --no-index --no-build-isolation ./python`).
Data: Debian's dataset-fashion-mnist (/usr/share/datasets/fashion-mnist).
"""
import argparse
import json
import os
import sys

import numpy as np
import torch
from torch import nn

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "python"))
import fedc  # noqa: E402
from fedc import datasets, pytorch as fedc_torch  # noqa: E402


class FmnistCNN(nn.Module):
    """conv 3x3 16 - pool - conv 3x3 32 - pool - fc 128 - fc 10: 207k parameters."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 16, 3, padding=1)
        self.conv2 = nn.Conv2d(16, 32, 3, padding=1)
        self.fc1 = nn.Linear(32 * 7 * 7, 128)
        self.fc2 = nn.Linear(128, 10)

    def forward(self, x):
        x = torch.max_pool2d(torch.relu(self.conv1(x)), 2)
        x = torch.max_pool2d(torch.relu(self.conv2(x)), 2)
        return self.fc2(torch.relu(self.fc1(x.flatten(1))))


def make_model(seed=1):
    torch.manual_seed(seed)
    return FmnistCNN()


def client_data(part, parts, alpha, seed, data_dir, eval_fraction=0.0):
    """This client's share of the training set: (x, y) it trains on and (x, y) it holds out for federated
    evaluation (eval_fraction of its share, drawn by seed and part: the same rows on every run; None if 0)."""
    x, y = datasets.fashion_mnist("train", data_dir)
    idx = datasets.dirichlet_split(y, parts, alpha, seed)[part]
    held = int(len(idx) * eval_fraction)
    if held == 0:
        return (torch.from_numpy(x[idx]), torch.from_numpy(y[idx])), None
    perm = np.random.default_rng([seed, part]).permutation(len(idx))
    train, test = np.sort(idx[perm[held:]]), np.sort(idx[perm[:held]])
    return (torch.from_numpy(x[train]), torch.from_numpy(y[train])), (torch.from_numpy(x[test]),
                                                                       torch.from_numpy(y[test]))


def cmd_export(a):
    fedc_torch.export_safetensors(make_model(a.seed), a.out)
    print("wrote %s" % a.out)


def cmd_client(a):
    torch.set_num_threads(a.threads)
    (x, y), held = client_data(a.part, a.parts, a.alpha, a.seed, a.data_dir, a.eval_fraction)
    # Federated evaluation (coordinator --eval-every) on the held-out rows, never trained on.
    trainer = fedc_torch.TorchTrainer(make_model(a.seed), x, y, eval_data=held)

    client = None

    def on_event(ev):
        if ev.kind in ("uploaded", "rejected", "trainer_error", "done"):
            line = {"client": a.name, "event": ev.kind, "round": ev.round, "loss": ev.loss, "detail": ev.detail}
            if ev.kind == "uploaded":  # seconds in the trainer and in the binding around it
                line.update(client.last_train_timing or {})
            print(json.dumps(line), flush=True)
        elif ev.kind == "eval_reported":  # round: whose model; the totals this client sent
            print(json.dumps({"client": a.name, "event": ev.kind, "round": ev.round, "examples": ev.num_examples,
                              "correct": ev.correct, "loss_sum": ev.loss_sum}), flush=True)

    client = fedc.Client(a.coordinator, pki=a.pki, name=a.name, trainer=trainer, on_event=on_event,
                         num_examples_hint=len(x))
    try:
        client.run()
    except KeyboardInterrupt:
        pass
    finally:
        client.close()


def cmd_evaluate(a):
    x, y = datasets.fashion_mnist("test", a.data_dir)
    model = make_model()
    weights, _ = fedc.safetensors.read(a.model)
    fedc_torch.from_fedc(model, weights)
    acc, loss = fedc_torch.evaluate(model, torch.from_numpy(x), torch.from_numpy(y))
    print(json.dumps({"model": a.model, "accuracy": acc, "loss": loss}))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    e = sub.add_parser("export", help="write the initial model as safetensors (the coordinator's --init-model)")
    e.add_argument("--out", required=True)
    e.add_argument("--seed", type=int, default=1)
    c = sub.add_parser("client", help="train as one client of the federation")
    c.add_argument("--coordinator", default="127.0.0.1:7070")
    c.add_argument("--pki", required=True)
    c.add_argument("--name", required=True)
    c.add_argument("--part", type=int, required=True)
    c.add_argument("--parts", type=int, required=True)
    c.add_argument("--alpha", type=float, default=0.5, help="Dirichlet concentration of the label skew")
    c.add_argument("--seed", type=int, default=1, help="seed of the split (the same for every client)")
    c.add_argument("--threads", type=int, default=1, help="torch threads")
    c.add_argument("--eval-fraction", type=float, default=0.1,
                   help="held out of this client's share for federated evaluation, never trained on (0: none, "
                        "and no evaluation tasks)")
    v = sub.add_parser("evaluate", help="test accuracy of a model file")
    v.add_argument("model")
    for p in (c, v):
        p.add_argument("--data-dir", default=datasets.FASHION_MNIST_DIR)
    a = ap.parse_args()
    {"export": cmd_export, "client": cmd_client, "evaluate": cmd_evaluate}[a.cmd](a)


if __name__ == "__main__":
    main()
