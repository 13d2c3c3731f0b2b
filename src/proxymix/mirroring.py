"""Forgetting mirroring: do proxy and target rank task vulnerability alike? Measured before a transfer.

A *probe* runs continual sequences under a fixed schedule (default `fixed:0.3`: it forgets partially; under no
replay every earlier task is forgotten completely by small from-scratch models, all vulnerabilities tie and any
correlation is an artifact) and records the validation-loss matrix L[t, i] and the score matrix R[t, i].

Items whose ranks are compared:
- `pairs` (default): damage to earlier task i caused by training later task j, the log loss ratio
  log(L[j+1, i] / L[j, i]), one item per (sequence, i, j) with j > i: many more items than tasks.
- `tasks`: total loss rise of task i from right after it was trained to the end, log(L[T, i] / L[i+1, i]).

Log ratios, not differences over the post-training loss: a well-learned task's loss is near 0, and dividing by
it turns measurement noise into huge, unstable "vulnerabilities" (seen in the first measurements).
- `accuracy`: accuracy drop of task i from right after training to the end, R[i+1, i] - R[T, i].

Statistics (`mirroring_stats`): Spearman and Kendall on seed means with bootstrap CIs over seeds, per sequence and
pooled; seed-to-seed agreement on each side as the noise floor; a PASS/WARN/FAIL verdict.
"""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path

import numpy as np

from proxymix import mirroring_stats as ms
from proxymix.config import ConfigError, RunConfig, to_dict
from proxymix.io import write_json

ITEMS = ("pairs", "tasks", "accuracy")


def model_key(cfg: RunConfig) -> str:
    """A short stable id of a model + tokenizer setup (what a mirroring report is about)."""
    spec = {"model": {k: v for k, v in to_dict(cfg.model).items() if not k.startswith("lora_")},
            "tokenizer": cfg.data.tokenizer, "vocab_size": cfg.data.vocab_size}
    return hashlib.sha1(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:12]


def run_probe(cfg: RunConfig, seeds: list[int], sequences: list[str], schedule: str = "fixed:0.3",
              progress: bool = False) -> dict:
    """Probe runs of `cfg` for every (sequence, seed); their loss/score matrices and cost."""
    import copy

    from proxymix.controllers.baselines import make_baseline
    from proxymix.engine import run_continual

    runs = []
    for seq in sequences:
        for seed in seeds:
            c = copy.deepcopy(cfg)
            c.seed, c.data.sequence, c.train.progress = seed, seq, progress
            t0 = time.perf_counter()
            res, run = run_continual(c, make_baseline(schedule))
            runs.append({"sequence": "-".join(res.sequence), "seed": seed, "tasks": res.tasks, "L_full": res.L_full.tolist(),
                         "R_full": res.R_full.tolist(), "train_flops": res.counters["train_flops"],
                         "eval_flops": res.counters["eval_flops"], "wall_s": time.perf_counter() - t0})
    return {"schedule": schedule, "model_key": model_key(cfg), "model": to_dict(cfg.model),
            "n_params": run.n_params, "config": to_dict(cfg), "runs": runs,
            "cost": {"flops": sum(r["train_flops"] + r["eval_flops"] for r in runs),
                     "wall_s": sum(r["wall_s"] for r in runs)}}


def probe_from_run_dirs(root: str | Path) -> dict:
    """Assemble a probe document from finished run directories below `root` (their metrics.json and config.yaml),
    so probes already run by `proxymix run` or `proxymix compare` are reused instead of recomputed."""
    from proxymix.config import load_config

    paths = sorted(Path(root).glob("**/metrics.json"))
    if not paths:
        raise ConfigError(f"{root}: no run directories (metrics.json) below it")
    runs, cfgs, schedules = [], [], set()
    for path in paths:
        m = json.loads(path.read_text())
        cfg = load_config(path.parent / "config.yaml")
        cfgs.append(cfg)
        schedules.add(m["controller"])
        runs.append({"sequence": "-".join(m["sequence"]), "seed": m["seed"], "tasks": m["tasks"],
                     "L_full": m["L_full"], "R_full": m["R_full"], "train_flops": m["flops"]["train"],
                     "eval_flops": m["flops"]["eval"], "wall_s": m["wall_s"]})
    keys = {model_key(c) for c in cfgs}
    if len(keys) > 1 or len(schedules) > 1:
        raise ConfigError(f"{root}: runs mix models or schedules ({sorted(schedules)}); point at one probe's runs")
    return {"schedule": schedules.pop(), "model_key": keys.pop(), "model": to_dict(cfgs[0].model),
            "n_params": json.loads(paths[0].read_text())["metrics"]["cost/n_params"], "config": to_dict(cfgs[0]),
            "runs": runs, "cost": {"flops": sum(r["train_flops"] + r["eval_flops"] for r in runs),
                                   "wall_s": sum(r["wall_s"] for r in runs)}}


def vulnerabilities(run: dict, items: str) -> tuple[np.ndarray, list[str]]:
    """Item vector and labels of one probe run (domain tasks only: safety is the aligned base, not a phase of
    the sequence whose ranking we compare)."""
    tasks = run["tasks"]
    L, R = np.asarray(run["L_full"]), np.asarray(run["R_full"])
    off = 1 if tasks[0] == "safety" else 0
    # domain view: row 0 = aligned base, row t = after domain task t; columns = domain tasks
    L, R, names = L[off:, off:], R[off:, off:], tasks[off:]
    T = len(names)
    if items == "pairs":
        D = np.full((T, T), np.nan)
        for i in range(T):
            for j in range(i + 1, T):
                D[i, j] = np.log(max(L[j + 1, i], 1e-6) / max(L[j, i], 1e-6))
        vec, labels = ms.pair_items(D)
        return vec, [f"{names[i]}<-{names[j]}" for i, j in labels]
    if items == "tasks":
        return np.array([np.log(max(L[T, i], 1e-6) / max(L[i + 1, i], 1e-6)) for i in range(T - 1)]), names[:-1]
    if items == "accuracy":
        return np.array([R[i + 1, i] - R[T, i] for i in range(T - 1)]), names[:-1]
    raise ConfigError(f"mirroring items must be one of {ITEMS}, got {items!r}")


def _matrix(probe: dict, sequence: str, items: str) -> tuple[np.ndarray, list[str]]:
    rows, labels = [], None
    for run in probe["runs"]:
        if run["sequence"] == sequence:
            vec, labels = vulnerabilities(run, items)
            rows.append(vec)
    return np.array(rows), labels


def unlearned(probe: dict, min_learned: float) -> dict[str, float]:
    """Tasks whose mean score right after their own phase (R[t, t]) is below `min_learned` points."""
    diag: dict[str, list[float]] = {}
    for run in probe["runs"]:
        R = np.asarray(run["R_full"])
        for j, name in enumerate(run["tasks"]):
            diag.setdefault(name, []).append(R[j + 1, j])
    return {name: float(np.mean(v)) for name, v in diag.items() if np.mean(v) < min_learned}


def compare(proxy: dict, target: dict, items: str = "pairs", thresholds: ms.Thresholds = ms.Thresholds(),
            n_boot: int = 1000, seed: int = 0, min_learned: float = 50.0) -> dict:
    """Per-sequence and pooled agreement, noise floors, verdict (PASS/WARN/FAIL with a reason).

    Besides the rank statistics, the gate FAILs when either side did not learn a task on its own phase (mean
    R[t, t] below `min_learned`): forgetting what was never learned is not vulnerability, so the ranks of such a
    model say nothing about how the other one forgets (the "proxy too small" breakdown).
    """
    seqs = [s for s in dict.fromkeys(r["sequence"] for r in proxy["runs"])
            if any(r["sequence"] == s for r in target["runs"])]
    if not seqs:
        raise ConfigError("proxy and target probes share no sequence")
    per_seq, pooled_p, pooled_t, labels, floors_p, floors_t = {}, [], [], [], [], []
    for s in seqs:
        P, lp = _matrix(proxy, s, items)
        Tm, lt = _matrix(target, s, items)
        if lp != lt:
            raise ConfigError(f"sequence {s}: proxy and target probes evaluated different tasks")
        st = ms.bootstrap_agreement(P, Tm, n_boot=n_boot, seed=seed)
        st["noise_floor_proxy"], st["noise_floor_target"] = ms.seed_agreement(P), ms.seed_agreement(Tm)
        per_seq[s] = st
        pooled_p.append(P)
        pooled_t.append(Tm)
        labels += [f"{s}:{x}" if len(seqs) > 1 else x for x in lp]
        floors_p.append(st["noise_floor_proxy"])
        floors_t.append(st["noise_floor_target"])
    # pool items across sequences; seeds must line up within each side
    n_p = min(len(p) for p in pooled_p)
    n_t = min(len(t) for t in pooled_t)
    P = np.concatenate([p[:n_p] for p in pooled_p], axis=1)
    Tm = np.concatenate([t[:n_t] for t in pooled_t], axis=1)
    pooled = ms.bootstrap_agreement(P, Tm, n_boot=n_boot, seed=seed)
    floor_p, floor_t = ms.seed_agreement(P), ms.seed_agreement(Tm)
    floors = [f for f in (floor_p, floor_t) if f is not None]
    noise_floor = min(floors) if floors else None
    verdict, reason = ms.verdict(pooled, thresholds, noise_floor=noise_floor)
    not_learned = {"proxy": unlearned(proxy, min_learned), "target": unlearned(target, min_learned)}
    for side, tasks in not_learned.items():
        if tasks:
            listed = ", ".join(f"{t} ({v:.0f})" for t, v in tasks.items())
            verdict, reason = "FAIL", (f"the {side} did not learn {listed} on its own phase (below {min_learned:.0f}); "
                                       "its vulnerabilities are not comparable")
            break
    return {
        "not_learned": not_learned, "min_learned": min_learned,
        "verdict": verdict, "reason": reason, "items": items, "pooled": pooled,
        "noise_floor": {"proxy": floor_p, "target": floor_t},
        "per_sequence": per_seq, "thresholds": to_dict(thresholds),
        "labels": labels,
        "proxy_vulnerability": np.nanmean(P, axis=0).tolist(),
        "target_vulnerability": np.nanmean(Tm, axis=0).tolist(),
    }


def write_report(out: str | Path, proxy: dict, target: dict, result: dict) -> Path:
    """mirroring.json (statistics, CIs, verdict, per-item vulnerabilities, costs) and the rank plot."""
    out = Path(out)
    doc = {
        "verdict": result["verdict"], "reason": result["reason"],
        "proxy": {"model_key": proxy["model_key"], "model": proxy["model"], "n_params": proxy["n_params"],
                  "schedule": proxy["schedule"], "cost": proxy["cost"]},
        "target": {"model_key": target["model_key"], "model": target["model"], "n_params": target["n_params"],
                   "schedule": target["schedule"], "cost": target["cost"]},
        **{k: v for k, v in result.items() if k not in ("verdict", "reason")},
    }
    write_json(out / "mirroring.json", doc)
    ms.plot_ranks(np.array(result["proxy_vulnerability"]), np.array(result["target_vulnerability"]),
                  result["labels"], out / "mirroring.png",
                  title=f"Vulnerability ranks ({result['items']}): {result['verdict']}")
    return out / "mirroring.json"


# ------------------------------------------------------------------------------------------------ the gate
def find_report(controller_dir: str | Path, target_cfg: RunConfig) -> dict | None:
    """The mirroring report registered with a controller for this target model, if any."""
    path = Path(controller_dir) / "mirroring" / f"{model_key(target_cfg)}.json"
    return json.loads(path.read_text()) if path.is_file() else None


def register_report(controller_dir: str | Path, doc_path: Path, target_key: str) -> Path:
    """Copy a mirroring.json next to the controller, keyed by the target model, for the run-time gate."""
    dest = Path(controller_dir) / "mirroring" / f"{target_key}.json"
    write_json(dest, json.loads(doc_path.read_text()))
    return dest


def gate(controller_dir: str | Path, target_cfg: RunConfig, force: bool) -> tuple[str, str]:
    """Decide whether a controller may drive this target: ('ok'|'forced'|'unchecked', note).

    Refuses (ConfigError) a FAIL verdict unless `force`; a missing report is allowed with a note, because the
    check needs target probes the user may not have run yet.
    """
    report = find_report(controller_dir, target_cfg)
    if report is None:
        return "unchecked", ("No forgetting-mirroring report for this controller and target model: the transfer is "
                             "unchecked (run `proxymix mirror-check ... --controller DIR`).")
    v, reason = report["verdict"], report["reason"]
    if v == "FAIL":
        if not force:
            raise ConfigError(f"forgetting-mirroring check FAILED for this controller and target ({reason}); "
                              "refusing the transfer (use --force to override)")
        return "forced", f"Mirroring verdict FAIL ({reason}); transfer FORCED with --force."
    return "ok", f"Mirroring verdict {v}: {reason}"
