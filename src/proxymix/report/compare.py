"""`proxymix compare`: every method x sequence x seed of one config, one table (mean ± std over seeds).

Methods are controller names as `proxymix run` takes them, plus `equal:<method>`: a fixed replay ratio set to the
mean replay share that <method> actually used (same sequences and seeds), so a dynamic rule is never credited
just for replaying more.
"""

from __future__ import annotations

import json
import multiprocessing as mp
from pathlib import Path

import numpy as np

from proxymix.config import ConfigError, load_config
from proxymix.io import write_json, write_text

COLUMNS = [("avg_accuracy", "avg acc"), ("forgetting", "forgetting"), ("safety", "safety"),
           ("over_refusal", "over-refusal"), ("replay_share", "replay share")]


def _job(job: dict) -> dict:
    """One run (top level, plain data in and out, for a spawn pool)."""
    import torch

    from proxymix.controllers import make_controller
    from proxymix.engine import run_continual
    from proxymix.report.run_report import metrics_payload, write_run

    torch.set_num_threads(job["threads"])
    cfg = load_config(job["config"], job["overrides"] + [f"seed={job['seed']}", f"data.sequence={job['sequence']}",
                                                         "train.progress=false"])
    cfg.controller.name = job["method"]  # so the run's config.yaml names the controller it actually ran
    ctrl = make_controller(job["method"])
    res, _ = run_continual(cfg, ctrl, multitask=ctrl is None)
    out = Path(job["out"])
    write_run(out, res, cfg)
    p = metrics_payload(res, cfg)
    return {"method": job["label"], "seed": job["seed"], "sequence": job["sequence"], "dir": str(out),
            "avg_accuracy": p["avg_accuracy"], "forgetting": p["forgetting"], "safety": p["safety"],
            "over_refusal": p["over_refusal"], "replay_share": p["metrics"]["mix/mean_replay_share"],
            "flops": p["flops"]["total"], "wall_s": p["wall_s"]}


def run_compare(config: str, overrides: list[str], methods: list[str], seeds: list[int], sequences: list[str],
                out: str | Path, workers: int = 2, threads: int = 1) -> list[dict]:
    """Run everything (resuming: finished runs in `out/results.json` are kept) and write the table."""
    out = Path(out)
    done_path = out / "results.json"
    results = json.loads(done_path.read_text()) if done_path.is_file() else []
    have = {(r["method"], r["seed"], r["sequence"]) for r in results}

    def jobs_for(method: str, label: str) -> list[dict]:
        return [{"config": config, "overrides": list(overrides), "method": method, "label": label, "seed": s,
                 "sequence": q, "threads": threads, "out": str(out / "runs" / f"{_slug(label)}-{q}-s{s}")}
                for q in sequences for s in seeds if (label, s, q) not in have]

    plain = [m for m in methods if not m.startswith("equal:")]
    equal = [m for m in methods if m.startswith("equal:")]
    for m in equal:
        if m.split(":", 1)[1] not in plain:
            raise ConfigError(f"{m}: its reference method {m.split(':', 1)[1]!r} must be in the method list")

    def run_all(jobs: list[dict]) -> None:
        if not jobs:
            return
        if workers > 1:
            with mp.get_context("spawn").Pool(workers) as pool:
                for r in pool.imap_unordered(_job, jobs):
                    results.append(r)
                    write_json(done_path, results)
                    print(f"  {r['method']} {r['sequence']} seed {r['seed']}: acc {r['avg_accuracy']:.1f}, "
                          f"forgetting {r['forgetting']:.1f}, safety {r['safety']}", flush=True)
        else:
            for j in jobs:
                results.append(_job(j))
                write_json(done_path, results)

    run_all([j for m in plain for j in jobs_for(m, m)])
    for m in equal:
        ref = m.split(":", 1)[1]
        share = float(np.mean([r["replay_share"] for r in results if r["method"] == ref]))
        run_all(jobs_for(f"fixed:{share:.3f}", m))
    # every method run into this directory so far, this call's first
    everything = list(dict.fromkeys(list(methods) + [r["method"] for r in results]))
    write_text(out / "table.md", render_table(results, everything))
    return results


def _slug(label: str) -> str:
    return "".join(c if c.isalnum() or c in "-._" else "-" for c in label)


def summarize(results: list[dict], methods: list[str]) -> dict:
    """mean and std (over seeds and sequences) of each column, per method."""
    out = {}
    for m in methods:
        rows = [r for r in results if r["method"] == m]
        if not rows:
            continue
        out[m] = {"n": len(rows), "flops": float(np.mean([r["flops"] for r in rows]))}
        for key, _ in COLUMNS:
            vals = np.array([np.nan if r[key] is None else r[key] for r in rows], dtype=float)
            out[m][key] = (float(np.nanmean(vals)), float(np.nanstd(vals, ddof=1)) if len(vals) > 1 else 0.0)
    return out


def render_table(results: list[dict], methods: list[str]) -> str:
    s = summarize(results, methods)
    head = "| method | n | " + " | ".join(label for _, label in COLUMNS) + " |"
    lines = [head, "|---" * (len(COLUMNS) + 2) + "|"]
    for m, row in s.items():
        cells = [f"{row[k][0]:.2f} ± {row[k][1]:.2f}" if k == "replay_share" else f"{row[k][0]:.1f} ± {row[k][1]:.1f}"
                 for k, _ in COLUMNS]
        lines.append(f"| {m} | {row['n']} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"
