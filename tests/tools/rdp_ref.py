#!/usr/bin/env python3
"""rdp_ref.py - an independent reference for common/dp_accountant.c, in plain
Python (math only): RDP of the Poisson-subsampled Gaussian (Mironov, Talwar,
Zhang 2019; integer and fractional orders), composed over T rounds, then
epsilon by the classic and by Balle et al. 2020's conversion, minimised over
the same orders. Prints one JSON object.
  rdp_ref.py Q SIGMA ROUNDS DELTA"""
import json, math, sys

def ladd(a, b):
    if a == -math.inf: return b
    if b == -math.inf: return a
    return max(a, b) + math.log1p(math.exp(-abs(a - b)))

def lsub(a, b):
    return a if b == -math.inf else (-math.inf if a <= b else a + math.log1p(-math.exp(b - a)))

def lerfc(x):
    r = math.erfc(x)
    if r > 1e-300: return math.log(r)
    return -math.log(math.pi) / 2 - math.log(x) - x**2 - .5 * x**-2 + .625 * x**-4 - 37 / 24 * x**-6 + 353 / 64 * x**-8

def log_a(q, s, a):
    if float(a).is_integer():
        la = -math.inf
        for k in range(int(a) + 1):  # log(comb) of the exact big integer
            la = ladd(la, math.log(math.comb(int(a), k)) + k * math.log(q) + (a - k) * math.log(1 - q) + (k * k - k) / (2 * s * s))
        return la
    a0 = a1 = -math.inf
    z0, i, coef = s * s * math.log(1 / q - 1) + .5, 0, 1.0
    while True:
        if i: coef *= (a - i + 1) / i
        lc, j = math.log(abs(coef)), a - i
        s0 = lc + i * math.log(q) + j * math.log(1 - q) + (i * i - i) / (2 * s * s) + math.log(.5) + lerfc((i - z0) / (math.sqrt(2) * s))
        s1 = lc + j * math.log(q) + i * math.log(1 - q) + (j * j - j) / (2 * s * s) + math.log(.5) + lerfc((z0 - j) / (math.sqrt(2) * s))
        a0, a1 = (ladd(a0, s0), ladd(a1, s1)) if coef > 0 else (lsub(a0, s0), lsub(a1, s1))
        i += 1
        if max(s0, s1) < -30: return ladd(a0, a1)

q, s, T, d = map(float, sys.argv[1:5])
orders = [1 + x / 10 for x in range(1, 100)] + list(range(11, 256)) + [256, 288, 320, 384, 448, 512, 576, 640, 768, 896, 960, 1024]
best, classic = (math.inf, 0), (math.inf, 0)
for a in orders:
    r = T * log_a(q, s, a) / (a - 1)
    classic = min(classic, (r - math.log(d) / (a - 1), a))
    e = 0 if d * d + math.expm1(-r) >= 0 else r + math.log1p(-1 / a) - (math.log(d) + math.log(a)) / (a - 1)
    best = min(best, (e, a))
print(json.dumps({"eps": max(0, best[0]), "order": best[1], "eps_classic": max(0, classic[0]), "order_classic": classic[1]}))
