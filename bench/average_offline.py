#!/usr/bin/python3
"""average_offline.py - the model average (--model-average) replayed offline on a finished run.

Evaluates every model version kept in a coordinator's state directory (a `fedc sim --keep-versions 0` run of the
built-in MLP, plaintext models) on the Fashion-MNIST test set, and the moving average of the versions for each
BETA, as the coordinator would keep it (a_0 = x_0, a_t = b a_{t-1} + (1 - b) x_t with b = min(BETA, (1+t)/(10+t))).
Since the average never feeds back into training, one run gives the curve with and without it on the same
trajectory. Prints, per version on stderr, the accuracy of the version and of each average; on stdout one JSON
line: for the version itself ("raw") and each BETA, the first version whose accuracy reaches TARGET, the MiB
uploaded (rounds.jsonl bytes_in) and the seconds since the first round's start at that version.

    /usr/bin/python3 bench/average_offline.py STATE_DIR [TARGET [BETA,BETA,...]]
    e.g. bench/average_offline.py run/state 0.83 0.7,0.9
"""
import gzip, json, struct, sys, glob, os
import numpy as np
D = '/usr/share/datasets/fashion-mnist/'
def idx(p):
    with gzip.open(p) as f: b = f.read()
    nd = b[3]; dims = struct.unpack('>' + 'I'*nd, b[4:4+4*nd])
    return np.frombuffer(b, np.uint8, offset=4+4*nd).reshape(dims)
X = idx(D + 't10k-images-idx3-ubyte.gz').reshape(10000, 784).astype(np.float32) / 255.0
Y = idx(D + 't10k-labels-idx1-ubyte.gz').astype(np.int64)
def load(p):
    with open(p, 'rb') as f: b = f.read()
    n = struct.unpack('<Q', b[:8])[0]; h = json.loads(b[8:8+n]); base = 8 + n
    out = {}
    for k, v in h.items():
        if k == '__metadata__': continue
        s, e = v['data_offsets']
        out[k] = np.frombuffer(b, np.float32, offset=base+s, count=(e-s)//4).reshape(v['shape'])
    return out
def acc(w):
    h = X
    i = 1
    while f'fc{i}.weight' in w:
        h = h @ w[f'fc{i}.weight'].T + w[f'fc{i}.bias']
        if f'fc{i+1}.weight' in w: h = np.maximum(h, 0)
        i += 1
    return float((h.argmax(1) == Y).mean())
state = sys.argv[1]; target = float(sys.argv[2]) if len(sys.argv) > 2 else 0.83
betas = [float(x) for x in (sys.argv[3] if len(sys.argv) > 3 else '0.5,0.7,0.8,0.9').split(',')]
recs = {}
for line in open(os.path.join(state, 'rounds.jsonl')):
    r = json.loads(line)
    if r.get('outcome') == 'completed' and r.get('version'): recs[r['version']] = r
cum_b = 0; cumb = {}; tend = {}; t0 = None
for line in open(os.path.join(state, 'rounds.jsonl')):
    r = json.loads(line); cum_b += r.get('bytes_in', 0) or 0
    t0 = r['started_unix_ms'] if t0 is None else t0
    tend[r.get('version')] = (r['ended_unix_ms'] - t0) / 1000
    if r.get('outcome') == 'completed' and r.get('version'): cumb[r['version']] = cum_b
files = sorted(glob.glob(os.path.join(state, 'models', 'v*.safetensors')))
files = [f for f in files if '.opt.' not in f]
ema = {b: None for b in betas}
first = {'raw': None, **{b: None for b in betas}}
rows = []
for f in files:
    v = int(os.path.basename(f)[1:7])
    if v == 0: 
        w = load(f)
        for b in betas: ema[b] = {k: a.astype(np.float64) for k, a in w.items()}
        continue
    w = load(f); a = acc(w); row = [v, a]
    if a >= target and first['raw'] is None: first['raw'] = v
    for b in betas:
        bt = min(b, (1 + v) / (10 + v))
        for k in w: ema[b][k] = bt * ema[b][k] + (1 - bt) * w[k]
        ea = acc({k: x.astype(np.float32) for k, x in ema[b].items()}); row.append(ea)
        if ea >= target and first[b] is None: first[b] = v
    rows.append(row)
    print(' '.join(f'{x:.4f}' if isinstance(x, float) else str(x) for x in row), file=sys.stderr)
res = {}
for key, v in first.items():
    res[str(key)] = None if v is None else {'version': v, 'mib': round(cumb.get(v, 0) / 2**20, 1), 's': round(tend.get(v, 0), 1)}
print(json.dumps(res))
