#!/usr/bin/env python3
"""Fail if the .c files of a folder call each other in a circle.

For each folder given (default: coordinator client), every external function a
file defines is looked up in the other files of that folder; a file using it
depends on the file defining it. Any strongly connected set of two or more
files is a circle: printed with the functions on each arrow, exit 1.
Comments and strings are ignored; static functions are private by definition.

    scripts/check-call-cycles.py [DIR ...]
"""
import glob
import os
import re
import sys


def strip(s):
    s = re.sub(r'/\*.*?\*/', ' ', s, flags=re.S)
    s = re.sub(r'//[^\n]*', ' ', s)
    return re.sub(r'"(\\.|[^"\\])*"', '""', s)


def graph(folder):
    src = {f: strip(open(f).read()) for f in sorted(glob.glob(os.path.join(folder, '*.c')))}
    defs = {}
    for f, s in src.items():
        for m in re.finditer(r'^(?!static\b)[A-Za-z_][\w \*]*?\b(\w+)\([^;{]*?\)\s*\{', s, flags=re.M):
            defs.setdefault(m.group(1), f)
    edges = {f: {} for f in src}
    for f, s in src.items():
        used = set(re.findall(r'\b\w+\b', s))
        for name, g in defs.items():
            if g != f and name in used:
                edges[f].setdefault(g, []).append(name)
    return edges


def circles(edges):
    index, low, stack, on, out, n = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = n[0]
        n[0] += 1
        stack.append(v)
        on.add(v)
        for w in edges[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    sys.setrecursionlimit(10000)
    for v in edges:
        if v not in index:
            visit(v)
    return out


def main():
    root = os.path.join(os.path.dirname(os.path.abspath(__file__)), '..')
    folders = sys.argv[1:] or ['coordinator', 'client']
    bad = 0
    for d in folders:
        path = d if os.path.isabs(d) else os.path.join(root, d)
        edges = graph(path)
        for comp in circles(edges):
            bad = 1
            print('%s: files call each other in a circle: %s' % (d, ' '.join(os.path.basename(x) for x in comp)))
            for a in comp:
                for b in comp:
                    if b in edges[a]:
                        print('  %s -> %s: %s' % (os.path.basename(a), os.path.basename(b),
                                                  ', '.join(sorted(edges[a][b])[:6])))
        if not bad:
            print('%s: %d files, no circle' % (d, len(edges)))
    return bad


if __name__ == '__main__':
    sys.exit(main())
