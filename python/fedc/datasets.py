"""Fashion-MNIST from Debian's dataset-fashion-mnist (IDX, gzipped) and a Dirichlet label-skew split,
for the examples and benchmarks (NumPy only)."""
import gzip
import os

import numpy as np

FASHION_MNIST_DIR = "/usr/share/datasets/fashion-mnist"


def _idx(path):
    with (gzip.open(path, "rb") if path.endswith(".gz") else open(path, "rb")) as f:
        data = f.read()
    ndim = data[3]
    dims = [int.from_bytes(data[4 + 4 * i:8 + 4 * i], "big") for i in range(ndim)]
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim).reshape(dims)


def fashion_mnist(split="train", data_dir=FASHION_MNIST_DIR):
    """(images float32 [N, 1, 28, 28] in [0, 1], labels int64 [N])."""
    prefix = "train" if split == "train" else "t10k"
    x = _idx(os.path.join(data_dir, "%s-images-idx3-ubyte.gz" % prefix)).astype(np.float32) / 255.0
    y = _idx(os.path.join(data_dir, "%s-labels-idx1-ubyte.gz" % prefix)).astype(np.int64)
    return x.reshape(-1, 1, 28, 28), y


def dirichlet_split(labels, clients, alpha, seed):
    """Per class, shares ~ Dirichlet(alpha) over the clients (Hsu et al. 2019); every client gets >= 1 example.
    Returns a list of index arrays."""
    rng = np.random.default_rng(seed)
    parts = [[] for _ in range(clients)]
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        rng.shuffle(idx)
        cuts = (np.cumsum(rng.dirichlet([alpha] * clients)) * len(idx)).astype(int)[:-1]
        for i, chunk in enumerate(np.split(idx, cuts)):
            parts[i].extend(chunk.tolist())
    for i in range(clients):  # an empty client would have nothing to train on
        if not parts[i]:
            donor = max(range(clients), key=lambda j: len(parts[j]))
            parts[i].append(parts[donor].pop())
    return [np.array(sorted(p), dtype=np.int64) for p in parts]
