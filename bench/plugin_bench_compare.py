#!/usr/bin/env python3
"""Runs two builds of `plugin_bench` (host/examples/plugin_bench.rs) side by side and prints one
table: the median per row over the rounds, for each build, and after/before.

Usage: bench/plugin_bench_compare.py BEFORE_BIN AFTER_BIN [ROUNDS]
  BEFORE_BIN, AFTER_BIN: release builds of the example, e.g. of the base commit and of the
  current tree (each finds the plugins in its own workspace's target/plugins).
  ROUNDS (default 3): each build runs once per round, alternating, so that background load
  spreads over both.
The environment passes through: PLUGIN_BENCH_ONLY=TEXT (only the rows whose label contains it),
PLUGIN_BENCH_N=N (calls per timed run). Not a test: the numbers depend on the machine.
"""

import statistics
import subprocess
import sys


def rows(binary):
    """The timed rows of one run: label -> µs per call (or per message)."""
    out = subprocess.run([binary], check=True, capture_output=True, text=True).stdout
    result = {}
    for line in out.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) != 3:
            continue
        try:
            result[cells[0]] = float(cells[1])
        except ValueError:
            pass  # headers and section rows
    return result


def main():
    if len(sys.argv) not in (3, 4):
        sys.exit(__doc__)
    before_bin, after_bin = sys.argv[1], sys.argv[2]
    rounds = int(sys.argv[3]) if len(sys.argv) == 4 else 3
    runs = {"before": [], "after": []}
    order = []
    for r in range(rounds):
        for name, binary in (("before", before_bin), ("after", after_bin)):
            print(f"round {r + 1}: {name}", file=sys.stderr)
            result = rows(binary)
            runs[name].append(result)
            for label in result:
                if label not in order:
                    order.append(label)
    print("| call | before µs (median) | after µs (median) | after / before |")
    print("|---|---|---|---|")
    for label in order:
        cells = []
        for name in ("before", "after"):
            values = [run[label] for run in runs[name] if label in run]
            cells.append(statistics.median(values) if values else None)
        before, after = cells
        ratio = f"{after / before:.2f}" if before and after else "-"
        show = lambda v: "-" if v is None else f"{v:.2f}"
        print(f"| {label} | {show(before)} | {show(after)} | {ratio} |")


if __name__ == "__main__":
    main()
