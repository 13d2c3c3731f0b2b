"""`proxymix` command line: one subcommand, one function. `proxymix <command> --help` is the manual."""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

from proxymix.config import ConfigError, RunConfig, load_config
from proxymix.controllers import make_controller
from proxymix.data.loaders import DataError


def _config_path(path: str | None) -> str | Path | None:
    """A config file path, or the name of a config in ./configs ('quick', 'target-quick')."""
    if path is None or Path(path).exists():
        return path
    local = Path("configs") / f"{path}.yaml"
    return local if local.exists() else path


def _load(args, extra: list[str] = ()) -> RunConfig:
    overrides = list(args.overrides) + list(extra)
    if getattr(args, "seed", None) is not None:
        overrides.append(f"seed={args.seed}")
    return load_config(_config_path(args.config), overrides)


def cmd_run(args) -> int:
    """Run one continual sequence with a controller and write the run directory."""
    from proxymix.engine import run_continual
    from proxymix.report.run_report import write_run

    extra = [f"controller.name={args.controller}"] if args.controller else []
    cfg = _load(args, extra)
    controller = make_controller(cfg.controller.name)
    notes = []
    if hasattr(controller, "policy"):
        from proxymix.controllers.learned import DEFAULT_CONTROLLER
        from proxymix.mirroring import gate

        ctrl_dir = DEFAULT_CONTROLLER if cfg.controller.name == "default" else cfg.controller.name
        _, note = gate(ctrl_dir, cfg, args.force)
        print(f"proxymix: {note}", file=sys.stderr)
        notes.append(note)
        meta = controller.meta
        if meta.get("cost"):
            c = meta["cost"]
            notes.append(f"Controller `{meta.get('name')}` learned by {meta.get('kind')} on a "
                         f"{meta.get('n_params') or 0:,}-parameter model: {c['episodes']} episodes, "
                         f"{c['total_flops']:.3g} FLOPs.")
        if meta.get("cost_ratio_oracle_vs_proxy"):
            r = meta["cost_ratio_oracle_vs_proxy"]
            notes.append(f"Policy-learning cost, Oracle Target RL / proxy RL: {r['total_flops_ratio']:.1f}x FLOPs "
                         f"as run ({r['oracle_episodes']} vs {r['proxy_episodes']} episodes), "
                         f"{r['per_episode_flops_ratio']:.1f}x per episode.")
    out = Path(args.out or f"runs/{cfg.controller.name.replace(':', '-').replace('/', '_')}-s{cfg.seed}-"
                           f"{time.strftime('%Y%m%d-%H%M%S')}")
    res, run = run_continual(cfg, controller, multitask=controller is None)
    write_run(out, res, cfg, extra={"notes": notes} if notes else None)
    run.tok.save_pretrained(str(out / "tokenizer"))
    print((out / "report.md").read_text())
    print(f"run directory: {out}")
    return 0


def cmd_demo(args) -> int:
    """The built-in demo: no replay, a fixed replay ratio and the shipped learned controller on the proxy."""
    from proxymix.report.compare import run_compare

    config = _config_path(args.config)
    overrides = list(args.overrides) + ([f"seed={args.seed}"] if args.seed is not None else [])
    load_config(config, overrides)
    print("proxymix demo: proxy-scale continual runs on the built-in suite (safety, then seq1), "
          "no_replay vs fixed:0.3 vs the shipped controller", flush=True)
    run_compare(str(config), overrides, ["no_replay", "fixed:0.3", "default"], [args.seed or 0], ["seq1"],
                args.out, workers=2, threads=1)
    print((Path(args.out) / "table.md").read_text())
    print(f"run directories (report.md, R.png, mixture.png) under {Path(args.out) / 'runs'}")
    return 0


def cmd_train_controller(args) -> int:
    """Learn a controller by PPO over proxy continual runs (or on the target with --oracle)."""
    from proxymix.rl.trainer import train_controller

    cfg = _load(args)
    command = "proxymix " + " ".join(sys.argv[1:]) if args.command_line is None else args.command_line
    ctrl = train_controller(cfg, args.out, oracle=args.oracle, command=command, progress=cfg.train.progress)
    cost = ctrl.meta["cost"]
    print(f"controller written to {args.out}: {cost['episodes']} episodes, {cost['total_flops']:.3g} FLOPs, "
          f"{cost['rollout_wall_s']:.0f} s of rollouts")
    if args.oracle and args.proxy_controller:
        from proxymix.rl.trainer import record_cost_ratio

        ratio = record_cost_ratio(args.proxy_controller, args.out)
        print(f"policy-learning cost, Oracle Target RL / proxy RL: {ratio['total_flops_ratio']:.1f}x FLOPs in total, "
              f"{ratio['per_episode_flops_ratio']:.1f}x per episode")
    return 0


def cmd_mirror_check(args) -> int:
    """Probe proxy and target (or reuse saved probes), compare vulnerability ranks, write the verdict."""
    import json

    from proxymix.io import write_json
    from proxymix.mirroring import compare, probe_from_run_dirs, register_report, run_probe, write_report

    out = Path(args.out)

    def probe(path: str, name: str, extra: list[str]) -> dict:
        if Path(path).is_dir():
            return probe_from_run_dirs(path)
        if path.endswith(".json"):
            if not Path(path).is_file():
                raise ConfigError(f"probe file not found: {path}")
            try:
                return json.loads(Path(path).read_text())
            except json.JSONDecodeError as exc:
                raise ConfigError(f"{path}: invalid JSON ({exc.msg}, line {exc.lineno})") from None
        cfg = load_config(_config_path(path), extra)
        print(f"probing {name}: {len(args.sequences)} sequence(s) x {len(args.seeds)} seed(s)", file=sys.stderr)
        doc = run_probe(cfg, args.seeds, args.sequences, args.probe, progress=cfg.train.progress)
        write_json(out / f"probe_{name}.json", doc)
        return doc

    proxy = probe(args.proxy, "proxy", [])
    target = probe(args.target, "target", list(args.target_set))
    result = compare(proxy, target, items=args.items)
    doc_path = write_report(out, proxy, target, result)
    if args.controller:
        register_report(args.controller, doc_path, target["model_key"])
    p = result["pooled"]
    print(f"{result['verdict']}: {result['reason']}")
    print(f"spearman {p['spearman']:.3f} CI {p['spearman_ci']}, kendall {p['kendall']:.3f} CI {p['kendall_ci']}, "
          f"{p['n_items']} items; noise floor proxy {result['noise_floor']['proxy']}, "
          f"target {result['noise_floor']['target']}")
    print(f"report: {doc_path}")
    return 0


def cmd_compare(args) -> int:
    """Every method x sequence x seed of one config; a table with mean ± std over seeds."""
    from proxymix.report.compare import run_compare

    config = _config_path(args.config)
    cfg = load_config(config, args.overrides)  # validate before spawning workers
    for m in args.methods:
        if "=" in m:
            raise ConfigError(f"--methods: {m!r} looks like a config override; put overrides before --methods")
        make_controller(m.removeprefix("equal:"))
    seq = cfg.data.sequence
    sequences = args.sequences or [seq if isinstance(seq, str) else "[" + ", ".join(seq) + "]"]
    run_compare(str(config), args.overrides, args.methods, args.seeds, sequences, args.out, args.workers,
                args.threads)
    print((Path(args.out) / "table.md").read_text())
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="proxymix", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)

    r = sub.add_parser("run", help="one continual run with a controller (baseline name or controller directory)")
    r.add_argument("--config", required=True, help="YAML config file (or a shipped one: quick, target-quick)")
    r.add_argument("--controller", help="no_replay, fixed:R, uniform, loss_prop[:R], exp3, multitask, or a directory")
    r.add_argument("--out", help="run directory (default runs/<controller>-s<seed>-<time>)")
    r.add_argument("--seed", type=int, help="the one seed (data, init, sampling)")
    r.add_argument("--force", action="store_true", help="transfer even if the mirroring check FAILED (noted)")
    r.add_argument("overrides", nargs="*", help="dotted config overrides, e.g. train.lr=1e-3")
    r.set_defaults(func=cmd_run)

    m = sub.add_parser("mirror-check", help="do proxy and target rank task vulnerability alike? PASS/WARN/FAIL")
    m.add_argument("--proxy", required=True, help="proxy config YAML (probes are run), a probe JSON, or a "
                   "directory of finished probe runs to reuse")
    m.add_argument("--target", required=True, help="target config YAML, probe JSON or run directory")
    m.add_argument("--out", required=True)
    m.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    m.add_argument("--sequences", nargs="+", default=["seq1"])
    m.add_argument("--probe", default="fixed:0.3", help="probe schedule (partial forgetting; default fixed:0.3)")
    m.add_argument("--items", choices=("pairs", "tasks", "accuracy"), default="pairs")
    m.add_argument("--controller", help="register the report with this controller directory for `run`'s gate")
    m.add_argument("--target-set", nargs="*", default=[], metavar="KEY=VALUE",
                   help="overrides for the target probes only (e.g. shorter phases)")
    m.set_defaults(func=cmd_mirror_check)

    t = sub.add_parser("train-controller", help="learn a replay controller by RL on the proxy (or --oracle: target)")
    t.add_argument("--config", required=True, help="run config with an `rl:` section")
    t.add_argument("--out", required=True, help="controller directory (resumes from its checkpoint)")
    t.add_argument("--oracle", action="store_true", help="label this run Oracle Target RL (episodes on this model)")
    t.add_argument("--proxy-controller", help="with --oracle: a proxy controller directory; the cost ratio is "
                   "recorded in both controller.json files")
    t.add_argument("--seed", type=int)
    t.add_argument("overrides", nargs="*")
    t.set_defaults(func=cmd_train_controller, command_line=None)

    c = sub.add_parser("compare", help="every method x sequence x seed of one config, one table")
    c.add_argument("--config", required=True)
    c.add_argument("--out", required=True, help="output directory (resumes: finished runs are kept)")
    c.add_argument("--methods", nargs="+", required=True,
                   help="controller names or directories; equal:<method> = fixed ratio at <method>'s replay share")
    c.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    c.add_argument("--sequences", nargs="+", default=None,
                   help="standard sequence names (default: the config's data.sequence)")
    c.add_argument("--workers", type=int, default=2)
    c.add_argument("--threads", type=int, default=1, help="torch threads per worker")
    c.add_argument("overrides", nargs="*")
    c.set_defaults(func=cmd_compare)

    d = sub.add_parser("demo", help="the main job on the built-in suite, small models, CPU")
    d.add_argument("--config", default="quick")
    d.add_argument("--out", default="runs/demo")
    d.add_argument("--seed", type=int)
    d.add_argument("overrides", nargs="*")
    d.set_defaults(func=cmd_demo)
    return p


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (ConfigError, DataError, FileNotFoundError) as exc:
        print(f"proxymix: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("proxymix: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
