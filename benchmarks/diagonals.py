"""Calibration check from finished run directories: each task's score right after its own phase (R[t, t]).

    .venv/bin/python benchmarks/diagonals.py runs/cmp-proxy/runs/fixed-0.3-seq1-s*

Prints one row per task: the diagonal score in every run (min / mean), and its drop to the final row.
"""

from __future__ import annotations

import json
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np


def main(paths: list[str]) -> None:
    diag, drop = defaultdict(list), defaultdict(list)
    for p in paths:
        m = json.loads((Path(p) / "metrics.json").read_text())
        R, tasks = np.array(m["R_full"]), m["tasks"]
        for j, t in enumerate(tasks):
            diag[t].append(R[j + 1, j])  # column j is trained in phase j + 1 (safety first)
            if j < len(tasks) - 1:
                drop[t].append(R[j + 1, j] - R[-1, j])
    print(f"{len(paths)} runs")
    print("| task | diagonal (each run) | min | mean | drop to final (mean) |")
    print("|---|---|---|---|---|")
    for t in diag:
        d = diag[t]
        dr = f"{np.mean(drop[t]):.1f}" if drop[t] else "- (last)"
        print(f"| {t} | {' '.join(f'{x:.0f}' for x in d)} | {min(d):.0f} | {np.mean(d):.1f} | {dr} |")


if __name__ == "__main__":
    main(sys.argv[1:])
