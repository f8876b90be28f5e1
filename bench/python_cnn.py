#!/usr/bin/env python3
"""python_cnn.py - a federation of PyTorch CNN clients on the Python binding (issue 22).

Fashion-MNIST, --clients client processes (examples/fmnist_cnn.py: one
fedc.Client each, torch on one thread) on a Dirichlet(--alpha) split, a real
coordinator on 127.0.0.1 over mutual TLS started from the CNN's own exported
state_dict (--init-model), --cohort clients per round, plain or --secagg.
Each published version is fetched (`fedc model get`) and evaluated on the
10,000 test images while the federation runs.

One JSON line per round on stdout: test accuracy and loss, the round's
seconds (coordinator: start to publish), and the clients' mean seconds in
trainer.train and in the binding around it (views, config, checks, copy out);
then one summary line: the first round at >= 89%, the accuracy at the last
round, the mean seconds per round, trainer and binding.

    /usr/bin/python3 bench/python_cnn.py --fedc build/fedc [--rounds 50] [--secagg]
"""
import argparse
import glob
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(REPO, "python"))
sys.path.insert(0, os.path.join(REPO, "examples"))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--fedc", required=True, help="the fedc binary (its build dir holds libfedc-client.so)")
    ap.add_argument("--rounds", type=int, default=50)
    ap.add_argument("--clients", type=int, default=20)
    ap.add_argument("--cohort", type=int, default=10)
    ap.add_argument("--alpha", type=float, default=0.5)
    ap.add_argument("--lr", type=float, default=0.1)
    ap.add_argument("--momentum", type=float, default=0.5)
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--secagg", action="store_true")
    ap.add_argument("--target", type=float, default=0.89)
    ap.add_argument("--keep", help="keep the run's files in this directory")
    a = ap.parse_args()

    import torch
    import fedc
    from fedc import datasets, pytorch as fedc_torch
    from fmnist_cnn import make_model

    torch.set_num_threads(1)
    fedc_bin = os.path.abspath(a.fedc)
    env = dict(os.environ, PYTHONPATH=os.path.join(REPO, "python"),
               FEDC_CLIENT_LIB=os.path.join(os.path.dirname(fedc_bin), "libfedc-client.so"))
    T = a.keep or tempfile.mkdtemp(prefix="fedc-pycnn.")
    os.makedirs(T, exist_ok=True)
    pki = os.path.join(T, "pki")
    run = lambda *args: subprocess.run([fedc_bin, *args], check=True, stdout=subprocess.DEVNULL)  # noqa: E731
    run("pki", "init", "--dir", pki, "--federation", "pycnn")
    run("pki", "issue", "--dir", pki, "--role", "admin", "--name", "root")
    names = ["c%02d" % i for i in range(a.clients)]
    for n in names:
        run("pki", "issue", "--dir", pki, "--role", "client", "--name", n)
    init = os.path.join(T, "init.safetensors")
    model = make_model(a.seed)
    fedc_torch.export_safetensors(model, init)

    procs = []
    port_file = os.path.join(T, "port")
    coord_args = [fedc_bin, "coordinator", "--pki", pki, "--federation", "pycnn", "--state", os.path.join(T, "state"),
                  "--listen", "127.0.0.1:0", "--port-file", port_file, "--init-model", init,
                  "--rounds", str(a.rounds), "--min-clients", str(a.clients), "--cohort", str(a.cohort),
                  "--min-updates", str(a.cohort), "--lr", str(a.lr), "--momentum", str(a.momentum),
                  "--epochs", str(a.epochs), "--batch", str(a.batch), "--seed", str(a.seed), "--poll-ms", "500",
                  "--round-timeout-ms", "1800000", "--pickup-timeout-ms", "1800000"]
    if a.secagg:
        # Stage deadlines only bound dropouts; none are injected here, and ten
        # Python clients on a shared 2-core machine finish training far apart.
        coord_args += ["--secagg", "--secagg-stage-ms", "600000"]
    clog = open(os.path.join(T, "coordinator.log"), "w")
    procs.append(subprocess.Popen(coord_args, stdout=clog, stderr=subprocess.STDOUT))
    for _ in range(200):
        if os.path.exists(port_file) and open(port_file).read().strip():
            break
        time.sleep(0.1)
    addr = "127.0.0.1:" + open(port_file).read().strip()
    for i, n in enumerate(names):
        out = open(os.path.join(T, "client-%s.log" % n), "w")
        procs.append(subprocess.Popen(
            [sys.executable, os.path.join(REPO, "examples", "fmnist_cnn.py"), "client", "--coordinator", addr,
             "--pki", pki, "--name", n, "--part", str(i), "--parts", str(a.clients), "--alpha", str(a.alpha),
             "--seed", str(a.seed), "--eval-fraction", "0"], stdout=out, stderr=subprocess.STDOUT, env=env))

    xt, yt = datasets.fashion_mnist("test")
    xt, yt = torch.from_numpy(xt), torch.from_numpy(yt)
    admin = ["--coordinator", addr, "--pki", pki, "--name", "root"]
    seen, results, start = set(), [], time.time()
    try:
        while len(results) < a.rounds:
            if procs[0].poll() is not None:
                sys.exit("python_cnn: the coordinator exited (%s)" % os.path.join(T, "coordinator.log"))
            r = subprocess.run([fedc_bin, "rounds", "--json", *admin], capture_output=True, text=True)
            rounds = [json.loads(l) for l in r.stdout.splitlines() if l.strip()] if r.returncode == 0 else []
            for rec in rounds:
                if rec["outcome"] != "completed" or rec["version"] in seen:
                    continue
                seen.add(rec["version"])
                path = os.path.join(T, "v%d.safetensors" % rec["version"])
                run("model", "get", *admin, "--version", str(rec["version"]), "--out", path, "--force")
                w, _ = fedc.safetensors.read(path)
                os.unlink(path)
                fedc_torch.from_fedc(model, w)
                acc, loss = fedc_torch.evaluate(model, xt, yt)
                tr, bd = timings(T, rec["round"])
                line = {"bench": "python_cnn", "secagg": a.secagg, "round": rec["round"],
                        "version": rec["version"], "accuracy": round(acc, 4), "loss": round(loss, 4),
                        "participants": rec["participants"], "round_s": rec["seconds"],
                        "trainer_s_mean": tr, "binding_ms_mean": bd, "elapsed_s": round(time.time() - start, 1)}
                results.append(line)
                print(json.dumps(line), flush=True)
            time.sleep(2)
    finally:
        for p in procs:
            p.send_signal(signal.SIGINT if p is not procs[0] else signal.SIGTERM)
        for p in procs:
            try:
                p.wait(30)
            except subprocess.TimeoutExpired:
                p.kill()
        if not a.keep:
            shutil.rmtree(T, ignore_errors=True)
    results.sort(key=lambda l: l["round"])
    hit = next((l["round"] for l in results if l["accuracy"] >= a.target), None)
    mean = lambda k: round(sum(l[k] for l in results if l[k] is not None) /  # noqa: E731
                           max(1, sum(1 for l in results if l[k] is not None)), 3)
    print(json.dumps({"bench": "python_cnn_summary", "secagg": a.secagg, "clients": a.clients, "cohort": a.cohort,
                      "alpha": a.alpha, "lr": a.lr, "momentum": a.momentum, "epochs": a.epochs, "batch": a.batch,
                      "rounds": len(results), "first_round_at_target": hit, "target": a.target,
                      "accuracy_last": results[-1]["accuracy"] if results else None,
                      "best": max((l["accuracy"] for l in results), default=None),
                      "round_s_mean": mean("round_s"), "trainer_s_mean": mean("trainer_s_mean"),
                      "binding_ms_mean": mean("binding_ms_mean"), "wall_s": round(time.time() - start)}), flush=True)


def timings(T, rnd):
    """Mean trainer seconds and binding milliseconds of the clients' uploads for round rnd."""
    tr, bd = [], []
    for f in glob.glob(os.path.join(T, "client-*.log")):
        for line in open(f):
            if '"event": "uploaded"' in line:
                e = json.loads(line)
                if e.get("round") == rnd and "trainer_s" in e:
                    tr.append(e["trainer_s"])
                    bd.append(e["binding_s"] * 1000)
    if not tr:
        return None, None
    return round(sum(tr) / len(tr), 3), round(sum(bd) / len(bd), 3)


if __name__ == "__main__":
    main()
