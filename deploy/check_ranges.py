#!/usr/bin/env python3
"""Range comments in a coordinator YAML file agree with the coordinator.

usage: check_ranges.py HELP_TEXT YAML...   (HELP_TEXT: `fedc coordinator --help` output)

A line `key: value   # LO .. HI ...` (optionally `LO ms .. HI hour(s)|day(s)`)
documents the option's accepted range; `fedc coordinator --help` prints the
range the code enforces, `(LO..HI)` or `(LO..HI ms, ...)`. A comment that
promises more than the coordinator accepts (e.g. threads 1 .. 1024 where the
code stops at 64) sends an operator into a refused start. Exit 1 with one line
per disagreement; a range comment on an option without a range is one too."""
import re
import sys

UNIT_MS = {None: 1, "ms": 1, "s": 1000, "second": 1000, "seconds": 1000, "minute": 60000, "minutes": 60000,
           "hour": 3600000, "hours": 3600000, "day": 86400000, "days": 86400000}

def norm(key):
    return re.sub(r"[_.]", "-", key)

help_ranges = {}
with open(sys.argv[1]) as f:
    for line in f:
        m = re.match(r"\s*--(\S+)\s.*\((-?\d+)\.\.(\d+)( ms)?[,)]", line)
        if m:
            help_ranges[m.group(1)] = (int(m.group(2)), int(m.group(3)))

problems = []
checked = 0
for path in sys.argv[2:]:
    with open(path) as f:
        for n, line in enumerate(f, 1):
            m = re.match(r"\s*([A-Za-z0-9_.-]+):[^#]*#\s*(-?\d+)\s*(ms)?\s*\.\.\s*(\d+)\s*([a-z]+)?", line)
            if not m:
                continue
            key, lo, lo_unit, hi, hi_unit = norm(m.group(1)), int(m.group(2)), m.group(3), int(m.group(4)), m.group(5)
            if hi_unit not in UNIT_MS:
                hi_unit = None  # a word after the number ("1 .. 1024 staged uploads"), not a unit
            scale_lo, scale_hi = UNIT_MS[lo_unit], UNIT_MS[hi_unit]
            if lo_unit or hi_unit:  # a duration: compare in ms, as --help prints it
                lo, hi = lo * scale_lo, hi * (scale_hi if hi_unit else scale_lo)
            want = help_ranges.get(key)
            checked += 1
            if want is None:
                problems.append(f"{path}:{n}: {key} has a range comment but `fedc coordinator --help` gives no range")
            elif (lo, hi) != want:
                problems.append(f"{path}:{n}: {key} says {lo} .. {hi}, the coordinator accepts {want[0]} .. {want[1]}")
if problems:
    print("\n".join(problems))
    sys.exit(1)
print(f"check_ranges: {checked} range comments agree with fedc coordinator --help")
