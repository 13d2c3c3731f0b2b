"""Everything a run directory holds: resolved config, metrics.json, R.csv, mixture.csv, report.md, plots."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from proxymix.config import RunConfig, dump_config
from proxymix.engine import RunResult
from proxymix.io import write_csv, write_json, write_text
from proxymix.report.plots import plot_mixture, plot_r_heatmap

HEADLINE = [("avg_accuracy", "cl/avg_accuracy"), ("forgetting", "cl/forgetting"),
            ("safety", "safety/score"), ("over_refusal", "safety/over_refusal")]


def metrics_payload(res: RunResult, cfg: RunConfig, extra: dict | None = None) -> dict:
    """metrics.json: the flat metric keys (un-namespaced aliases for the headline ones), R, tasks, flops, wall_s."""
    m = dict(res.metrics)
    out = {
        "controller": res.controller,
        "seed": cfg.seed,
        "tasks": res.tasks,
        "sequence": res.sequence,
        **{k.split("/", 1)[1]: m[k] for k in ("cl/avg_accuracy", "cl/avg_incremental", "cl/forgetting",
                                                "cl/forgetting_first", "cl/bwt", "cl/fwt") if k in m},
        "safety": m.get("safety/score"),
        "over_refusal": m.get("safety/over_refusal"),
        "R": res.R.tolist(),
        "R_full": res.R_full.tolist(),
        "L_full": res.L_full.tolist(),
        "safety_by_phase": res.safety,
        "over_refusal_by_phase": res.over_refusal,
        "flops": {"train": res.counters["train_flops"], "eval": res.counters["eval_flops"],
                  "total": res.counters["train_flops"] + res.counters["eval_flops"]},
        "wall_s": res.wall_s,
        "counters": res.counters,
        "metrics": m,
    }
    if extra:
        out.update(extra)
    return out


def write_run(out: str | Path, res: RunResult, cfg: RunConfig, extra: dict | None = None) -> Path:
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    write_text(out / "config.yaml", dump_config(cfg))
    payload = metrics_payload(res, cfg, extra)
    write_json(out / "metrics.json", payload)
    write_csv(out / "R.csv", ["after"] + res.tasks,
              [[label] + [f"{v:.2f}" for v in row] for label, row in zip(_row_labels(res), res.R_full)])
    cols = ["step", "phase", "task"] + [f"w:{c}" for c in res.slot_columns]
    write_csv(out / "mixture.csv", cols, [[r[c] if not isinstance(r[c], float) else f"{r[c]:.6f}" for c in cols]
                                          for r in res.mixture])
    plot_r_heatmap(res.R_full, res.tasks, _row_labels(res), out / "R.png", title=f"R matrix: {res.controller}")
    if res.mixture:
        plot_mixture(res.mixture, res.slot_columns, out / "mixture.png", title=f"Mixture: {res.controller}")
    write_text(out / "report.md", render_report(res, cfg, payload))
    return out


def _row_labels(res: RunResult) -> list[str]:
    if res.controller == "multitask":
        return ["init"] + ["joint"] * (len(res.R_full) - 1)
    return ["init"] + res.tasks


def render_report(res: RunResult, cfg: RunConfig, payload: dict) -> str:
    m = res.metrics
    lines = [f"# proxymix run: {res.controller}", "",
             f"Sequence: {' -> '.join(res.tasks)} (seed {cfg.seed}); model: {_model_desc(cfg)}, "
             f"{m['cost/n_params']:,} parameters.", "",
             "| metric | value |", "|---|---|"]
    for label, key in HEADLINE + [("avg_incremental", "cl/avg_incremental"), ("forgetting_first", "cl/forgetting_first"),
                                  ("bwt", "cl/bwt"), ("fwt", "cl/fwt"), ("safety erosion", "safety/erosion"),
                                  ("mean replay share", "mix/mean_replay_share")]:
        if key in m and m[key] is not None:
            lines.append(f"| {label} | {m[key]:.2f} |")
    lines += [f"| train FLOPs | {payload['flops']['train']:.3g} |", f"| eval FLOPs | {payload['flops']['eval']:.3g} |",
              f"| wall time (s) | {res.wall_s:.1f} |",
              f"| train tokens/s (real tokens) | {m['perf/train_tokens_per_s']:.0f} |",
              f"| padding fraction | {m['perf/padding_fraction']:.3f} |", ""]
    lines += ["## R (score in points after each phase; rows: after training, columns: evaluated task)", "",
              "| after \\ on | " + " | ".join(res.tasks) + " |", "|---" * (len(res.tasks) + 1) + "|"]
    for label, row in zip(_row_labels(res), res.R_full):
        lines.append(f"| {label} | " + " | ".join(f"{v:.1f}" for v in row) + " |")
    if res.safety:
        lines += ["", "Safety (refusal on held-out harmful) by phase: " + ", ".join(f"{v:.1f}" for v in res.safety),
                  "", "Over-refusal (refusal on held-out benign look-alikes) by phase: "
                  + ", ".join(f"{v:.1f}" for v in res.over_refusal)]
    for note in payload.get("notes", []):
        lines += ["", note]
    lines += ["", "Metric conventions: avg_accuracy = mean of the last row of the domain R (rows from the aligned base "
              "on); forgetting = max-over-history (Chaudhry et al.); forgetting_first = first-value (Avalanche); "
              "BWT/FWT as in GEM (Lopez-Paz & Ranzato). Plots: R.png, mixture.png."]
    return "\n".join(lines) + "\n"


def _model_desc(cfg: RunConfig) -> str:
    mc = cfg.model
    if mc.path:
        return f"from {mc.path}" + (" + LoRA" if mc.lora else "")
    return f"{mc.family} {mc.n_layers}x{mc.hidden}" + (" + LoRA" if mc.lora else "")


def results_table(rows: list[dict]) -> str:
    """A markdown table of headline metrics, one row per run payload (metrics.json contents)."""
    lines = ["| controller | avg_accuracy | forgetting | safety | over_refusal | replay share |", "|---|---|---|---|---|---|"]
    for p in rows:
        mm = p["metrics"]
        safety = "-" if p.get("safety") is None else f"{p['safety']:.1f}"
        over = "-" if p.get("over_refusal") is None else f"{p['over_refusal']:.1f}"
        lines.append(f"| {p['controller']} | {p['avg_accuracy']:.1f} | {p['forgetting']:.1f} | {safety} | {over} | "
                     f"{mm.get('mix/mean_replay_share', 0.0):.2f} |")
    return "\n".join(lines)


def mean_std(values) -> str:
    a = np.asarray(values, dtype=float)
    return f"{a.mean():.1f} ± {a.std(ddof=1) if len(a) > 1 else 0.0:.1f}"
