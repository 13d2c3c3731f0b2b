"""Calibrate the built-in suite for a config: can every task be learned, and is it forgotten?

Runs, one after another (the machine is small; runs are never parallel):

* single-task checks (``--single``): each domain alone (``data.safety=false``), and the safety phase alone;
  the score right after training is the "diagonal" R[t, t];
* sequence checks (``--sequences``): each standard sequence with each controller in ``--controllers``
  (``multitask`` runs the joint-training reference);

and prints markdown tables: one row per run with the diagonal and final score of every task, average accuracy,
forgetting, safety score / erosion / over-refusal and wall time; then per-task vulnerability (drop from the
diagonal to the final score, averaged over the sequences where the task is not last) for each controller.

Examples::

    .venv/bin/python benchmarks/calibrate.py configs/quick.yaml --single
    .venv/bin/python benchmarks/calibrate.py configs/quick.yaml --sequences seq1 --controllers no_replay fixed:0.3 multitask
    .venv/bin/python benchmarks/calibrate.py configs/quick.yaml --sequences seq1 seq2 seq3 seq4 seq5 --json out.json
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections import defaultdict

import numpy as np
import torch

from proxymix.config import load_config
from proxymix.controllers.baselines import make_baseline
from proxymix.data.suite import DOMAINS, SAFETY
from proxymix.engine import run_continual


def one_run(config: str | None, overrides: list[str], controller: str) -> dict:
    cfg = load_config(config, ["train.progress=false", *overrides])
    t0 = time.perf_counter()
    multitask = controller == "multitask"
    res, run = run_continual(cfg, None if multitask else make_baseline(controller), multitask=multitask)
    wall = time.perf_counter() - t0
    R = res.R_full
    if multitask:
        diag = {t: float("nan") for t in res.tasks}
    else:
        # Phases train the columns in order (safety first when enabled): column j is trained in phase j + 1.
        diag = {t: float(R[j + 1, j]) for j, t in enumerate(res.tasks)}
    final = {t: float(R[-1, j]) for j, t in enumerate(res.tasks)}
    return {"controller": controller, "tasks": list(res.tasks), "sequence": list(res.sequence),
            "diag": diag, "final": final, "R_full": R.tolist(), "metrics": res.metrics, "wall_s": wall,
            "n_params": run.n_params, "overrides": overrides}


def fmt(x) -> str:
    if x is None or (isinstance(x, float) and np.isnan(x)):
        return "-"
    return f"{x:.0f}" if isinstance(x, (float, int)) else str(x)


def run_table(rows: list[dict], title: str) -> str:
    out = [f"### {title}", "",
           "| run | controller | diagonal R[t,t] (task: score) | final | avg acc | forgetting | safety | erosion "
           "| over-refusal | wall s |",
           "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        m = r["metrics"]
        diag = " ".join(f"{t}:{fmt(v)}" for t, v in r["diag"].items())
        final = " ".join(f"{t}:{fmt(v)}" for t, v in r["final"].items())
        out.append(f"| {r['name']} | {r['controller']} | {diag} | {final} | {fmt(m.get('cl/avg_accuracy'))} "
                   f"| {fmt(m.get('cl/forgetting'))} | {fmt(m.get('safety/score'))} | {fmt(m.get('safety/erosion'))} "
                   f"| {fmt(m.get('safety/over_refusal'))} | {r['wall_s']:.0f} |")
    return "\n".join(out)


def vulnerability_table(rows: list[dict]) -> str:
    """Per task and controller: mean (diagonal - final) over runs where the task is not the last one trained."""
    drops: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    for r in rows:
        if r["controller"] == "multitask":
            continue
        trained = r["tasks"]
        for t in trained[:-1]:
            drops[r["controller"]][t].append(r["diag"][t] - r["final"][t])
    if not drops:
        return ""
    tasks = [SAFETY, *DOMAINS]
    out = ["### Vulnerability: mean drop diagonal -> final (points; n = runs where the task is not last)", "",
           "| controller | " + " | ".join(tasks) + " |", "|---|" + "---|" * len(tasks)]
    for ctl, per in drops.items():
        cells = [f"{np.mean(per[t]):.0f} (n={len(per[t])})" if per.get(t) else "-" for t in tasks]
        out.append(f"| {ctl} | " + " | ".join(cells) + " |")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("config", nargs="?", default=None, help="YAML config (default: built-in defaults)")
    ap.add_argument("--single", action="store_true", help="single-task checks for every domain and safety")
    ap.add_argument("--tasks", nargs="*", default=list(DOMAINS), help="domains for --single (default: all 8)")
    ap.add_argument("--sequences", nargs="*", default=[], help="standard sequences to run (seq1..seq5)")
    ap.add_argument("--controllers", nargs="*", default=["fixed:0.3"],
                    help="controllers for the sequence runs (baseline names, or multitask)")
    ap.add_argument("--set", nargs="*", default=[], dest="overrides", help="extra dotted overrides (a.b=value)")
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads (1 avoids oversubscription on a shared small machine)")
    ap.add_argument("--json", default=None, help="also write every run (R matrices, metrics) to this JSON file")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)

    single, seq_rows = [], []
    t_start = time.perf_counter()
    if args.single:
        for task in args.tasks:
            r = one_run(args.config, [*args.overrides, f"data.sequence=[{task}]", "data.safety=false"], "no_replay")
            r["name"] = f"single:{task}"
            single.append(r)
            print(f"# single {task}: {r['diag'][task]:.0f} ({r['wall_s']:.0f}s)", file=sys.stderr, flush=True)
        # Safety alone: a one-step domain phase after it; R_full[1, 0] is read right after the safety phase.
        r = one_run(args.config, [*args.overrides, f"data.sequence=[{args.tasks[0]}]", "data.safety=true",
                                  "train.steps_per_task=1"], "no_replay")
        r["name"] = "single:safety"
        r["diag"] = {SAFETY: r["diag"][SAFETY]}
        r["final"] = {SAFETY: r["diag"][SAFETY]}
        r["metrics"] = {"safety/score": r["metrics"]["safety/base_score"],
                        "safety/over_refusal": float(r["metrics"].get("safety/over_refusal", float("nan")))}
        single.append(r)
        print(f"# single safety: {r['diag'][SAFETY]:.0f} ({r['wall_s']:.0f}s)", file=sys.stderr, flush=True)
    for seq in args.sequences:
        for ctl in args.controllers:
            r = one_run(args.config, [*args.overrides, f"data.sequence={seq}"], ctl)
            r["name"] = seq
            seq_rows.append(r)
            print(f"# {seq} {ctl}: avg {r['metrics']['cl/avg_accuracy']:.0f} ({r['wall_s']:.0f}s)",
                  file=sys.stderr, flush=True)

    n_params = (single or seq_rows)[0]["n_params"] if (single or seq_rows) else 0
    print(f"config: {args.config}  overrides: {args.overrides}  params: {n_params:,}  "
          f"total wall: {time.perf_counter() - t_start:.0f}s\n")
    if single:
        print(run_table(single, "Single-task checks (score right after training the task alone)") + "\n")
    if seq_rows:
        print(run_table(seq_rows, "Sequence runs (safety first)") + "\n")
        print(vulnerability_table(seq_rows) + "\n")
        diag_ok = [(r["name"], r["controller"], t, v) for r in seq_rows for t, v in r["diag"].items()
                   if r["controller"] != "multitask" and v < 80]
        print(f"diagonal < 80 in sequence runs: {diag_ok or 'none'}")
    if single:
        low = [(r["name"], v) for r in single for v in r["diag"].values() if v < 80]
        print(f"diagonal < 80 in single-task runs: {low or 'none'}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"config": args.config, "overrides": args.overrides, "runs": single + seq_rows}, f, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
